"""ament_python-style setup for mp_slam_ros.

Works both under colcon (ROS 2 workspace or a plain venv with
colcon-common-extensions) and with a plain ``pip install -e .``.
"""

import os
from glob import glob

from setuptools import find_packages, setup

package_name = 'mp_slam_ros'

# Paths in data_files must be relative to this file's directory; colcon and
# pip both run setup.py with that as the working directory, but make it
# explicit so `python path/to/setup.py ...` behaves the same.
_HERE = os.path.dirname(os.path.abspath(__file__))


def _share_files(subdir, pattern):
    """Relative paths of files matching ``subdir/pattern`` (sorted).

    Tolerates a missing or empty directory (returns []).
    """
    matches = glob(os.path.join(_HERE, subdir, pattern))
    return sorted(
        os.path.relpath(p, _HERE) for p in matches if os.path.isfile(p)
    )


data_files = [
    ('share/ament_index/resource_index/packages',
        ['resource/' + package_name]),
    ('share/' + package_name, ['package.xml']),
]
for _subdir, _pattern in (('launch', '*.launch.py'), ('config', '*.yaml')):
    _files = _share_files(_subdir, _pattern)
    if _files:
        data_files.append((os.path.join('share', package_name, _subdir), _files))

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    # The bundled ORB vocabulary of loop closure (mp_slam_ros.loop.vocabulary.default_vocabulary).
    package_data={'mp_slam_ros.loop': ['data/*.npz']},
    data_files=data_files,
    # Compatible ranges.  The floors are the oldest versions tested (requirements/oldest.in, `make
    # test-oldest`), set by what ROS 2 Jazzy's platform ships; the exact versions of a normal run are in
    # requirements/lock.txt.  Upper bounds only where a release is known to break.
    install_requires=[
        'numpy>=1.26.4,<3',
        'scipy>=1.11.4',
        'numba>=0.59.1',
        'PyYAML>=6.0.1',
        'matplotlib>=3.6.3',
        'tqdm>=4.64.1',
        # The vision front end (rosdep: python3-opencv).
        'opencv-python-headless>=4.6.0.66',
        # rosbag2 (sqlite3 and mcap) reading and writing without a ROS install.
        'rosbags>=0.11.0',
    ],
    extras_require={
        # mpmath: 100-digit references for the Lie-group series expansions in test_lie.py.
        # pytest 9 removed the py.path hook arguments launch_testing's plugin (Jazzy) still declares.
        'test': ['pytest>=7.4.4,<9', 'mpmath>=1.3.0'],
        # Benchmark-only reference implementation (not needed at run time).
        'bench': ['gtsam'],
        # Cross-check of the ATE/RPE metrics against evo (benchmark-only).
        'eval': ['evo'],
    },
    zip_safe=True,
    maintainer='mp_slam_ros maintainers',
    maintainer_email='maintainers@example.org',
    description='Mixed-precision visual SLAM solver core and ROS 2 nodes',
    license='Apache-2.0',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'mp-slam = mp_slam_ros.cli:main',
            # ROS 2 nodes (need rclpy; `ros2 run mp_slam_ros vo_node`).
            'vo_node = mp_slam_ros.ros.vo_node:main',
            'loop_closure_node = mp_slam_ros.ros.loop_closure_node:main',
        ],
    },
)
