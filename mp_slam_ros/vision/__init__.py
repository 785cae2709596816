"""The visual front end and the ROS-free visual-odometry pipeline.

Data flows one way: image -> front end (features, tracking, stereo / depth, PnP) -> window BA
(:mod:`mp_slam_ros.ba.window`) -> keyframe (handed to loop closure).
"""
