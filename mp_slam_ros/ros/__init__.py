"""ROS 2 shells around the ROS-free pipeline.

Only the node modules (``vo_node``) import rclpy; :mod:`.parameters` and :mod:`.vo_core` do not,
so parameter files, launch arguments and the node's processing logic can be checked and tested
on a machine without ROS 2.  Importing this package must stay free of rclpy for the same reason.
"""
