"""The package caps BLAS at one thread when it is imported before numpy, and respects a user's choice.

Measured on a busy 2-core machine: a 40-camera Schur solve took 0.25 s per LM iteration with two
OpenBLAS threads and 0.03 s with one (see mp_slam_ros/__init__.py).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

PROBE = """
import os, sys
import mp_slam_ros
import numpy
print(os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS"))
"""


def _run(code: str, **env: str) -> str:
    from mp_slam_ros import BLAS_THREAD_VARIABLES

    clean = {k: v for k, v in os.environ.items() if k not in BLAS_THREAD_VARIABLES}
    clean.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_one_blas_thread_by_default() -> None:
    assert _run(PROBE) == "1 1"


@pytest.mark.parametrize("variable", ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"])
def test_a_users_choice_is_kept(variable: str) -> None:
    out = _run(PROBE, **{variable: "2"})
    expected = "2 None" if variable == "OPENBLAS_NUM_THREADS" else "None None"
    assert out == expected


def test_numpy_imported_first_is_left_alone() -> None:
    assert _run("import numpy, os\nimport mp_slam_ros\nprint(os.environ.get('OPENBLAS_NUM_THREADS'))") == "None"


def test_openblas_really_runs_one_thread() -> None:
    """Where numpy bundles scipy-openblas, ask the library itself."""
    import numpy

    libs = glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "libscipy_openblas*.so"))
    if not libs:
        pytest.skip("this numpy does not bundle scipy-openblas; the environment variable is what the test can check")
    code = (
        "import ctypes, mp_slam_ros, numpy\n"
        f"lib = ctypes.CDLL({libs[0]!r})\n"
        "print(lib.scipy_openblas_get_num_threads64_())"
    )
    assert _run(code) == "1"
