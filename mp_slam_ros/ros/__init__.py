"""ROS 2 shells around the ROS-free pipeline.

Only the node modules (``vo_node``, ``loop_closure_node``) import rclpy; :mod:`.parameters`,
:mod:`.vo_core` and :mod:`.loop_closure_core` do not, so parameter files, launch arguments and
the nodes' processing logic can be checked and tested on a machine without ROS 2.  Importing
this package must stay free of rclpy for the same reason.
"""
