"""Launch the full SLAM: vo_node (visual odometry) and loop_closure_node, wired together.

    ros2 launch mp_slam_ros slam.launch.py precision:=mixed mode:=stereo profile:=embedded
    ros2 launch mp_slam_ros slam.launch.py mode:=rgbd use_sim_time:=true params_file:=/path/to/my_slam.yaml

This file includes ``vo.launch.py`` and ``loop_closure.launch.py`` and hands each its arguments, so
a node starts here exactly as it does alone.  Both nodes share ``namespace``, ``precision``,
``profile``, ``use_sim_time`` and ``params_file`` (key its sections ``/**/vo_node:`` and
``/**/loop_closure_node:``; a ``/**:`` section reaches both).  The keyframe topic arguments rename
vo_node's output and loop_closure_node's input together, so the two always meet.

TF: with ``publish_tf`` (default true) vo_node broadcasts ``odom -> base_link`` and
loop_closure_node ``map -> odom``; ``base_link -> camera`` belongs to the robot description.
"""

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

PACKAGE = 'mp_slam_ros'
PRECISIONS = ('fp64', 'fp32', 'mixed', 'fp16')
MODES = ('stereo', 'rgbd')
PROFILES = ('desktop', 'embedded')
BOOLEANS = ('true', 'false')
# The per-node launch files (share/mp_slam_ros/launch/) and the arguments each takes.
VO_LAUNCH = 'vo.launch.py'
LC_LAUNCH = 'loop_closure.launch.py'
VO_ARGUMENTS = ('precision', 'profile', 'use_sim_time', 'namespace', 'publish_tf', 'params_file', 'mode',
                'left_image_topic', 'right_image_topic', 'left_info_topic', 'right_info_topic', 'rgb_image_topic',
                'depth_image_topic', 'rgb_info_topic', 'keyframe_pose_topic', 'keyframe_cloud_topic',
                'keyframe_info_topic')
LC_ARGUMENTS = ('precision', 'profile', 'use_sim_time', 'namespace', 'publish_tf', 'params_file',
                'keyframe_pose_topic', 'keyframe_cloud_topic', 'keyframe_info_topic')


def _include(launch_file: str, arguments: tuple) -> IncludeLaunchDescription:
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), 'launch', launch_file])),
        launch_arguments={name: LaunchConfiguration(name) for name in arguments}.items(),
    )


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument('precision', default_value='mixed', choices=list(PRECISIONS),
                              description='Precision preset of the optimisations, applied to every node '
                                          '(config/precision_<preset>.yaml).'),
        DeclareLaunchArgument('profile', default_value='desktop', choices=list(PROFILES),
                              description='Deployment profile (config/profile_<profile>.yaml), applied '
                                          'before the other arguments.'),
        DeclareLaunchArgument('mode', default_value='stereo', choices=list(MODES),
                              description='Input: stereo pair or RGB-D.'),
        DeclareLaunchArgument('use_sim_time', default_value='false', choices=list(BOOLEANS),
                              description='Follow /clock (bag replay with --clock).'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the nodes and of their relative topics (odom, keyframe/*).'),
        DeclareLaunchArgument('publish_tf', default_value='true', choices=list(BOOLEANS),
                              description='Broadcast each node\'s transform: odom -> base_link (vo_node), '
                                          'map -> odom (loop_closure_node).'),
        DeclareLaunchArgument('params_file', default_value='',
                              description='Optional params file (sections per node), applied last.'),
        DeclareLaunchArgument('left_image_topic', default_value='/cam0/image_raw',
                              description='Stereo: left image (sensor_msgs/Image).'),
        DeclareLaunchArgument('right_image_topic', default_value='/cam1/image_raw',
                              description='Stereo: right image (sensor_msgs/Image).'),
        DeclareLaunchArgument('left_info_topic', default_value='/cam0/camera_info',
                              description='Stereo: left camera_info.'),
        DeclareLaunchArgument('right_info_topic', default_value='/cam1/camera_info',
                              description='Stereo: right camera_info (its P gives the baseline).'),
        DeclareLaunchArgument('rgb_image_topic', default_value='/camera/color/image_raw',
                              description='RGB-D: colour image (sensor_msgs/Image).'),
        DeclareLaunchArgument('depth_image_topic', default_value='/camera/aligned_depth_to_color/image_raw',
                              description='RGB-D: depth registered to the colour image.'),
        DeclareLaunchArgument('rgb_info_topic', default_value='/camera/color/camera_info',
                              description='RGB-D: colour camera_info.'),
        DeclareLaunchArgument('keyframe_pose_topic', default_value='keyframe/pose',
                              description='Keyframe poses from vo_node to loop_closure_node.'),
        DeclareLaunchArgument('keyframe_cloud_topic', default_value='keyframe/cloud',
                              description='Keyframe feature clouds from vo_node to loop_closure_node.'),
        DeclareLaunchArgument('keyframe_info_topic', default_value='keyframe/camera_info',
                              description='Keyframe camera_info from vo_node to loop_closure_node.'),
        _include(VO_LAUNCH, VO_ARGUMENTS),
        _include(LC_LAUNCH, LC_ARGUMENTS),
    ])
