"""mp_slam_ros: mixed-precision SLAM back ends (pose-graph optimisation, bundle adjustment, VO)."""

import os as _os

# numba keys its kernel cache by the source file's path.  colcon's --symlink-install reaches this
# package through a symlink in its build directory (build/, build-ros/, ...), which would give each
# build its own copy of every kernel to compile; the real path gives them all the one the CLI uses.
__path__[:] = list(dict.fromkeys(_os.path.realpath(p) for p in __path__))

# Then, before any kernel module imports numba: choose the shared on-disk kernel cache.
from . import numba_cache as _numba_cache  # noqa: E402, F401
