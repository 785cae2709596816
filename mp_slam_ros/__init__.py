"""mp_slam_ros: mixed-precision SLAM back ends (pose-graph optimisation, bundle adjustment, VO)."""

import os as _os

# numba keys its kernel cache by the source file's path.  colcon's --symlink-install reaches this
# package through a symlink in its build directory (build/, build-ros/, ...), which would give each
# build its own copy of every kernel to compile; the real path gives them all the one the CLI uses.
__path__[:] = list(dict.fromkeys(_os.path.realpath(p) for p in __path__))

# One BLAS thread unless the user chose otherwise, set before numpy loads its BLAS (it reads the
# variables once). The solver's dense calls are small (a reduced camera system of a few hundred
# rows, 3x3 to 9x9 blocks), and a threaded OpenBLAS makes each call wait for a worker thread. When
# the other cores are busy, as on a robot running VO, loop closure and ROS, that wait is a time
# slice per call: a 40-camera Schur solve took 0.25 s per LM iteration with two BLAS threads on a
# busy 2-core machine, and 0.03 s with one. Imported after numpy, the package leaves BLAS alone.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
if "numpy" not in __import__("sys").modules and not any(v in _os.environ for v in BLAS_THREAD_VARIABLES):
    _os.environ["OPENBLAS_NUM_THREADS"] = "1"
    _os.environ["MKL_NUM_THREADS"] = "1"

# Then, before any kernel module imports numba: choose the shared on-disk kernel cache.
from . import numba_cache as _numba_cache  # noqa: E402, F401
