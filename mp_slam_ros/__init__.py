"""mp_slam_ros: mixed-precision SLAM back ends (pose-graph optimisation, bundle adjustment, VO)."""

# First, before any kernel module imports numba: choose the shared on-disk kernel cache.
from . import numba_cache as _numba_cache  # noqa: F401
