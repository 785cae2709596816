"""Launch loop_closure_node alone (vo_node, or a bag of its keyframes, provides the input).

    ros2 launch mp_slam_ros loop_closure.launch.py precision:=mixed
    ros2 launch mp_slam_ros loop_closure.launch.py profile:=embedded namespace:=robot1 params_file:=my_lc.yaml

Parameters are applied in this order, later ones winning: the node's declared defaults, the
deployment profile (``config/profile_<profile>.yaml``), the launch arguments (precision preset
file, publish_tf, use_sim_time, keyframe topics), then ``params_file``.  ``config/loop_closure.yaml``
lists every parameter with its default and is the template for such a file.

The node owns ``map -> odom`` (``publish_tf``); ``odom -> base_link`` is vo_node's.  The argument
set is the loop-closure part of ``slam.launch.py``'s (test/test_launch_config.py keeps them equal).
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = 'mp_slam_ros'
EXECUTABLE = 'loop_closure_node'
NODE_NAME = 'loop_closure_node'
PRECISIONS = ('fp64', 'fp32', 'mixed', 'fp16')
PROFILES = ('desktop', 'embedded')
# The precision presets and deployment profiles installed under share/mp_slam_ros/config/.
PRECISION_FILE = 'precision_{}.yaml'
PROFILE_FILE = 'profile_{}.yaml'
BOOLEANS = ('true', 'false')
# Launch arguments that set the loop_closure_node parameter of the same name.
KEYFRAME_TOPICS = ('keyframe_pose_topic', 'keyframe_cloud_topic', 'keyframe_info_topic')


def _as_bool(text: str) -> bool:
    return text.strip().lower() in ('true', '1', 'yes', 'on')


def _config_file(name: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), 'config', name)


def _node(context, *args, **kwargs):
    precision = LaunchConfiguration('precision').perform(context)
    profile = LaunchConfiguration('profile').perform(context)
    params_file = LaunchConfiguration('params_file').perform(context).strip()
    overrides = {
        'precision': _config_file(PRECISION_FILE.format(precision)),
        'publish_tf': _as_bool(LaunchConfiguration('publish_tf').perform(context)),
        'use_sim_time': _as_bool(LaunchConfiguration('use_sim_time').perform(context)),
    }
    topics = {name: LaunchConfiguration(name).perform(context) for name in KEYFRAME_TOPICS}
    parameters = [_config_file(PROFILE_FILE.format(profile)), overrides, topics]
    if params_file:
        path = os.path.abspath(os.path.expanduser(params_file))
        if not os.path.isfile(path):
            raise RuntimeError(f'loop_closure.launch.py: params_file {params_file!r} does not exist')
        parameters.append(path)
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=LaunchConfiguration('namespace').perform(context),
            parameters=parameters,
            output='screen',
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument('precision', default_value='mixed', choices=list(PRECISIONS),
                              description='Precision preset of the optimisations, applied to every node '
                                          '(config/precision_<preset>.yaml).'),
        DeclareLaunchArgument('profile', default_value='desktop', choices=list(PROFILES),
                              description='Deployment profile (config/profile_<profile>.yaml), applied '
                                          'before the other arguments.'),
        DeclareLaunchArgument('use_sim_time', default_value='false', choices=list(BOOLEANS),
                              description='Follow /clock (bag replay with --clock).'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the nodes and of their relative topics (odom, keyframe/*).'),
        DeclareLaunchArgument('publish_tf', default_value='true', choices=list(BOOLEANS),
                              description='Broadcast each node\'s transform: odom -> base_link (vo_node), '
                                          'map -> odom (loop_closure_node).'),
        DeclareLaunchArgument('params_file', default_value='',
                              description='Optional params file (sections per node), applied last.'),
        DeclareLaunchArgument('keyframe_pose_topic', default_value='keyframe/pose',
                              description='Keyframe poses from vo_node to loop_closure_node.'),
        DeclareLaunchArgument('keyframe_cloud_topic', default_value='keyframe/cloud',
                              description='Keyframe feature clouds from vo_node to loop_closure_node.'),
        DeclareLaunchArgument('keyframe_info_topic', default_value='keyframe/camera_info',
                              description='Keyframe camera_info from vo_node to loop_closure_node.'),
        OpaqueFunction(function=_node),
    ])
