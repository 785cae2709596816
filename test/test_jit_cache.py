"""The shared numba kernel cache (mp_slam_ros.numba_cache), the compile clock (solver.jit) and `mp-slam warmup`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mp_slam_ros.numba_cache import SUBDIR, candidate_dirs, is_writable_dir, resolve_cache_dir
from mp_slam_ros.solver import jit as jit_module

SUBPROCESS_TIMEOUT = 300  # seconds; the warm-up test compiles a few kernels cold on a busy machine
WARNING_TEXT = "no writable numba cache directory"


def _unwritable(tmp_path: Path) -> Path:
    """A directory path nobody can create, root included: its parent is a regular file."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    return blocker / "sub"


def _env(**overrides: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)  # the one-warning test counts what the default filter shows
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# -- where the cache lives ---------------------------------------------------------------------
def test_numba_cache_dir_set_by_the_user_is_honoured(tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "mine"), "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)}
    path, tried = resolve_cache_dir(env)
    assert path == (tmp_path / "mine").resolve()
    assert tried == [tmp_path / "mine"]  # only the user's choice: never silently elsewhere


def test_xdg_cache_home_comes_first_then_home(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert candidate_dirs(env) == [tmp_path / "xdg" / SUBDIR, tmp_path / "home" / ".cache" / SUBDIR]
    path, _ = resolve_cache_dir(env)
    assert path == (tmp_path / "xdg" / SUBDIR).resolve()
    assert path.is_dir()


def test_fallback_to_home_cache(tmp_path):
    home = tmp_path / "home"
    assert resolve_cache_dir({"HOME": str(home)})[0] == (home / ".cache" / SUBDIR).resolve()
    # A relative XDG_CACHE_HOME is invalid (XDG spec) and skipped.
    assert candidate_dirs({"XDG_CACHE_HOME": "rel/cache", "HOME": str(home)}) == [home / ".cache" / SUBDIR]
    # An unusable XDG_CACHE_HOME falls through to ~/.cache.
    env = {"XDG_CACHE_HOME": str(_unwritable(tmp_path)), "HOME": str(home)}
    assert resolve_cache_dir(env)[0] == (home / ".cache" / SUBDIR).resolve()


def test_nothing_writable_resolves_to_none(tmp_path):
    bad = _unwritable(tmp_path)
    assert not is_writable_dir(bad)
    path, tried = resolve_cache_dir({"XDG_CACHE_HOME": str(bad), "HOME": str(bad / "home")})
    assert path is None
    assert tried == [bad / SUBDIR, bad / "home" / ".cache" / SUBDIR]
    assert resolve_cache_dir({"NUMBA_CACHE_DIR": str(bad)})[0] is None


def test_unwritable_cache_compiles_in_memory_and_warns_once(tmp_path, repo_root):
    """Read-only install, no writable home: importing and running kernels works, with one warning."""
    bad = _unwritable(tmp_path)
    script = (
        "import numpy as np\n"
        "import mp_slam_ros.cli\n"
        "from mp_slam_ros.pgo import problem\n"
        "from mp_slam_ros.ba import problem as ba_problem\n"
        "from mp_slam_ros.loop import vocabulary\n"
        "from mp_slam_ros.solver import jit, kernels, lie\n"
        "R, t = lie.se3_exp(np.zeros((1, 6)))\n"
        "print('enabled', jit.CACHE_ENABLED, 'dir', jit.CACHE_DIR, 'compiles', jit.compile_count())\n"
    )
    # numba's own fallback for cache=True is the source tree's __pycache__ (and it raises where that
    # is read-only, as in an installed package): in memory means no index file appears there either.
    in_tree_before = sorted(str(p) for p in (repo_root / "mp_slam_ros").rglob("*.nbi"))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo_root,
        env=_env(NUMBA_CACHE_DIR=None, XDG_CACHE_HOME=str(bad / "xdg"), HOME=str(bad / "home")),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "enabled False dir None" in proc.stdout
    assert "compiles 0" not in proc.stdout  # the kernel really was compiled, in memory
    assert proc.stderr.count(WARNING_TEXT) == 1, proc.stderr
    assert str(bad / "xdg" / SUBDIR) in proc.stderr  # it says where it tried
    assert not list(tmp_path.rglob("*.nbi")), "nothing may be cached anywhere under the test directory"
    assert sorted(str(p) for p in (repo_root / "mp_slam_ros").rglob("*.nbi")) == in_tree_before


def test_import_sets_numba_cache_dir_before_numba_reads_it(tmp_path, repo_root):
    xdg = tmp_path / "xdg"
    script = (
        "import os, mp_slam_ros, numba\n"
        "from numba.core import config\n"
        "print(os.environ['NUMBA_CACHE_DIR'] == config.CACHE_DIR, config.CACHE_DIR)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo_root,
        env=_env(NUMBA_CACHE_DIR=None, XDG_CACHE_HOME=str(xdg), HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", str((xdg / SUBDIR).resolve())]


# -- compile time as a stage of its own --------------------------------------------------------
def test_compile_seconds_counts_a_fresh_compile_and_clock_excludes_it():
    # A function no cache can hold: built here, so numba must compile it in this process.
    @jit_module.jit(cache=False)
    def fresh(x):
        acc = 0.0
        for i in range(x.shape[0]):
            acc += np.sin(x[i]) * np.cos(x[i]) + np.sqrt(abs(x[i]))
        return acc

    seconds0, count0, thread0 = (
        jit_module.compile_seconds(),
        jit_module.compile_count(),
        jit_module.thread_compile_seconds(),
    )
    wall0, clock0 = time.perf_counter(), jit_module.clock()
    fresh(np.arange(10.0))
    wall, clocked = time.perf_counter() - wall0, jit_module.clock() - clock0
    compiled = jit_module.compile_seconds() - seconds0
    assert compiled > 0.0
    assert jit_module.compile_count() == count0 + 1
    assert jit_module.thread_compile_seconds() - thread0 == pytest.approx(compiled)
    # The two clocks are read one after the other, so a preemption between the reads shows up; the
    # compile itself takes a tenth of a second or more, which is what must be left out.
    assert clocked == pytest.approx(wall - compiled, abs=2e-3)
    assert compiled > 0.02

    # Called again: already compiled, nothing counted.
    seconds1 = jit_module.compile_seconds()
    fresh(np.arange(10.0))
    assert jit_module.compile_seconds() == seconds1


def test_compile_in_another_thread_is_not_taken_off_this_threads_clock():
    @jit_module.jit(cache=False)
    def other(x):
        return x * 2.0 + 1.0

    before = jit_module.thread_compile_seconds()
    total_before = jit_module.compile_seconds()
    worker = threading.Thread(target=other, args=(np.ones(3),))
    worker.start()
    worker.join()
    assert jit_module.compile_seconds() > total_before
    assert jit_module.thread_compile_seconds() == before


def test_solver_summary_reports_compile_time_separately():
    from mp_slam_ros.pgo.problem import optimize_pose_graph
    from mp_slam_ros.pgo.synthetic import make_loop_pose_graph
    from mp_slam_ros.solver.lm import SolverOptions

    graph = make_loop_pose_graph(num_poses=30, laps=2.0, seed=3).graph
    _, summary = optimize_pose_graph(graph, "fp64", SolverOptions(max_iterations=2))
    assert summary.compile_time >= 0.0
    assert "compile_time" in summary.to_dict()
    assert f"(excl. {summary.compile_time:.1f} s JIT compile)" in summary.report()
    stages = sum(v for k, v in summary.stage_times.items() if k != "total")
    assert stages <= summary.stage_times["total"] * 1.001 + 1e-4


# -- mp-slam warmup ----------------------------------------------------------------------------
def _warmup(cache: Path, repo_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        # The loop stage only: a cold compile of the solver stages takes tens of seconds.
        [sys.executable, "-m", "mp_slam_ros.cli", "warmup", "--precision", "fp32", "--stage", "loop"],
        cwd=repo_root,
        env=_env(NUMBA_CACHE_DIR=str(cache)),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )  # fmt: skip


def test_warmup_fills_the_cache_and_a_second_run_only_loads(tmp_path, repo_root):
    cache = tmp_path / "numba_cache"
    first = _warmup(cache, repo_root)
    assert first.returncode == 0, first.stderr
    assert f"kernel cache: {cache.resolve()}" in first.stdout
    assert "compiling kernels: loop ..." in first.stdout
    assert "pgo" not in first.stdout  # --stage limits it
    assert " 0 kernel compilations" not in first.stdout
    assert list(cache.rglob("*.nbi")), "the warm-up left no index files in the cache"

    second = _warmup(cache, repo_root)
    assert second.returncode == 0, second.stderr
    assert ": 0 kernel compilations (0.0 s)" in second.stdout, second.stdout


def test_warm_up_runs_each_stage_per_precision_and_reports_progress(monkeypatch):
    from mp_slam_ros import warmup

    calls: list[tuple[str, str | None]] = []
    for name in warmup.PER_PRECISION_STAGES:
        monkeypatch.setitem(warmup.PER_PRECISION_STAGES, name, lambda cfg, name=name: calls.append((name, cfg.name)))
    for name in warmup.SHARED_STAGES:
        monkeypatch.setitem(warmup.SHARED_STAGES, name, lambda cfg, name=name: calls.append((name, cfg)))
    events: list[tuple[str, float | None]] = []
    total = warmup.warm_up(["fp64", "mixed"], lambda label, s: events.append((label, s)), stages=["pgo", "ba", "loop"])
    assert calls == [("pgo", "fp64"), ("ba", "fp64"), ("pgo", "mixed"), ("ba", "mixed"), ("loop", None)]
    labels = ["pgo fp64", "ba fp64", "pgo mixed", "ba mixed", "loop"]
    assert [label for label, _ in events] == [label for label in labels for _ in range(2)]
    assert [s is None for _, s in events] == [True, False] * len(labels)  # start, then the seconds
    assert total >= 0.0


def test_warm_up_rejects_unknown_names():
    from mp_slam_ros.warmup import warm_up

    with pytest.raises(ValueError, match="unknown warm-up stage"):
        warm_up(["fp64"], stages=["nope"])
    with pytest.raises(ValueError, match="neither a preset"):
        warm_up(["fp8"])


def test_an_empty_cache_is_seeded_once_from_the_install_and_the_kernels_load(tmp_path, repo_root):
    """Another user of the same install: the kernels the installer compiled load from the seed."""
    seed, cache = tmp_path / "seed", tmp_path / "user_cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(seed), "PYTHONPATH": str(repo_root)}
    code = ("from mp_slam_ros.warmup import warm_up\nfrom mp_slam_ros.solver.jit import compile_count\n"
            "warm_up(['fp64'], stages=['loop'])\nprint(compile_count())")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert int(first.stdout.split()[-1]) > 0  # compiled into the seed
    env.update(NUMBA_CACHE_DIR=str(cache), MP_SLAM_KERNEL_SEED=str(seed))
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert int(second.stdout.split()[-1]) == 0, "the seeded cache should have been loaded, not compiled"
    assert (cache / ".seeded-from").is_file()
    assert {p.name for p in seed.rglob("*.nbi")} <= {p.name for p in cache.rglob("*.nbi")}
