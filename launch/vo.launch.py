"""Launch vo_node, the mixed-precision visual odometry.

    ros2 launch mp_slam_ros vo.launch.py precision:=mixed mode:=stereo
    ros2 launch mp_slam_ros vo.launch.py mode:=rgbd profile:=embedded use_sim_time:=true params_file:=my_vo.yaml

Parameters are applied in this order, later ones winning: the node's declared defaults, the
deployment profile (``config/profile_<profile>.yaml``), the launch arguments (precision preset
file, mode, publish_tf, use_sim_time, input topics), then ``params_file``, so a user file can
override anything.  ``config/vo.yaml`` lists every parameter with its default and is the template
for such a file; key its section ``/**:`` (or ``/**/vo_node:``) so it also applies under a
``namespace``.  For bag replay add ``process_every_frame: true`` to the params file and play the
bag with ``--clock``.

The keyframe topics are remapped from vo_node's ``keyframe/*`` names; ``slam.launch.py`` passes the
same arguments to loop_closure_node, so the two always meet.  The argument set is shared with
``loop_closure.launch.py`` and ``slam.launch.py`` (test/test_launch_config.py keeps them equal).
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = 'mp_slam_ros'
EXECUTABLE = 'vo_node'
NODE_NAME = 'vo_node'
PRECISIONS = ('fp64', 'fp32', 'mixed', 'fp16')
MODES = ('stereo', 'rgbd')
PROFILES = ('desktop', 'embedded')
# The precision presets and deployment profiles installed under share/mp_slam_ros/config/.
PRECISION_FILE = 'precision_{}.yaml'
PROFILE_FILE = 'profile_{}.yaml'
BOOLEANS = ('true', 'false')
# Launch arguments that set the vo_node parameter of the same name.
INPUT_TOPICS = ('left_image_topic', 'right_image_topic', 'left_info_topic', 'right_info_topic',
                'rgb_image_topic', 'depth_image_topic', 'rgb_info_topic')
# Launch argument -> the (relative) name vo_node publishes on, which the argument remaps.
KEYFRAME_TOPICS = {
    'keyframe_pose_topic': 'keyframe/pose',
    'keyframe_cloud_topic': 'keyframe/cloud',
    'keyframe_info_topic': 'keyframe/camera_info',
}


def _as_bool(text: str) -> bool:
    return text.strip().lower() in ('true', '1', 'yes', 'on')


def _config_file(name: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), 'config', name)


def _node(context, *args, **kwargs):
    precision = LaunchConfiguration('precision').perform(context)
    mode = LaunchConfiguration('mode').perform(context)
    profile = LaunchConfiguration('profile').perform(context)
    params_file = LaunchConfiguration('params_file').perform(context).strip()
    overrides = {
        'precision': _config_file(PRECISION_FILE.format(precision)),
        'mode': mode,
        'publish_tf': _as_bool(LaunchConfiguration('publish_tf').perform(context)),
        'use_sim_time': _as_bool(LaunchConfiguration('use_sim_time').perform(context)),
    }
    topics = {name: LaunchConfiguration(name).perform(context) for name in INPUT_TOPICS}
    parameters = [_config_file(PROFILE_FILE.format(profile)), overrides, topics]
    if params_file:
        path = os.path.abspath(os.path.expanduser(params_file))
        if not os.path.isfile(path):
            raise RuntimeError(f'vo.launch.py: params_file {params_file!r} does not exist')
        parameters.append(path)
    remappings = []
    for argument, published in KEYFRAME_TOPICS.items():
        topic = LaunchConfiguration(argument).perform(context)
        if topic != published:
            remappings.append((published, topic))
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=LaunchConfiguration('namespace').perform(context),
            parameters=parameters,
            remappings=remappings,
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
        OpaqueFunction(function=_node),
    ])
