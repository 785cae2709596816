"""Launch vo_node, the mixed-precision visual odometry.

    ros2 launch mp_slam_ros vo.launch.py precision:=mixed mode:=stereo
    ros2 launch mp_slam_ros vo.launch.py mode:=rgbd use_sim_time:=true params_file:=/path/to/my_vo.yaml

Parameters are applied in this order, later ones winning: the node's declared defaults, the
launch arguments (precision preset file, mode, publish_tf, use_sim_time), then ``params_file``,
so a user file can override anything.  ``config/vo.yaml`` lists every parameter with its
default and is the template for such a file; key its section ``/**:`` (or ``/**/vo_node:``) so it
also applies under a ``namespace``.  For bag replay add
``process_every_frame: true`` to the params file and play the bag with ``--clock``.
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
# The precision presets installed under share/mp_slam_ros/config/.
PRECISION_FILE = 'precision_{}.yaml'
BOOLEANS = ('true', 'false')


def _as_bool(text: str) -> bool:
    return text.strip().lower() in ('true', '1', 'yes', 'on')


def _config_file(name: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), 'config', name)


def _node(context, *args, **kwargs):
    precision = LaunchConfiguration('precision').perform(context)
    mode = LaunchConfiguration('mode').perform(context)
    params_file = LaunchConfiguration('params_file').perform(context).strip()
    overrides = {
        'precision': _config_file(PRECISION_FILE.format(precision)),
        'mode': mode,
        'publish_tf': _as_bool(LaunchConfiguration('publish_tf').perform(context)),
        'use_sim_time': _as_bool(LaunchConfiguration('use_sim_time').perform(context)),
    }
    parameters = [overrides]
    if params_file:
        path = os.path.abspath(os.path.expanduser(params_file))
        if not os.path.isfile(path):
            raise RuntimeError(f'vo.launch.py: params_file {params_file!r} does not exist')
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
                              description='Precision preset of the window bundle adjustment '
                                          '(config/precision_<preset>.yaml).'),
        DeclareLaunchArgument('mode', default_value='stereo', choices=list(MODES),
                              description='Input: stereo pair or RGB-D.'),
        DeclareLaunchArgument('use_sim_time', default_value='false', choices=list(BOOLEANS),
                              description='Follow /clock (bag replay with --clock).'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node and of its relative topics (odom, keyframe/*).'),
        DeclareLaunchArgument('publish_tf', default_value='true', choices=list(BOOLEANS),
                              description='Broadcast odom -> base_link on /tf.'),
        DeclareLaunchArgument('params_file', default_value='',
                              description='Optional vo_node params file, applied last (overrides the above).'),
        OpaqueFunction(function=_node),
    ])
