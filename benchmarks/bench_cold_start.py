"""Cold start: how long a fresh process takes to its first result, with and without the kernel cache.

Target (issue "field-ready"): after the set-up command (``make venv``, which runs ``mp-slam warmup
--install-seed``), the first ``mp-slam pgo`` of sphere2500, replay's first frame, and a node's first
processed frame each come within 5 s of the process start, as root and as an unprivileged user of a
read-only install.  Every figure is the wall time of a new process from spawn, import included.

Scenarios:

* ``warm``: the per-user cache ``make venv`` filled;
* ``cold``: an empty cache and no seed (what every first run cost before: numba compiles in the run);
* ``other user``: an unprivileged user (uid 65534) with a fresh, writable home and the install
  read-only to it: its empty cache is seeded from the install's copy;
* ``no writable cache``: the same user without any writable directory: kernels compile in memory.

The node rows start ``vo_node`` / ``loop_closure_node`` (needs a sourced ROS 2) and time the spawn to
"compiling kernels ... done" (subscribed, ready) and, for vo_node, to its first odometry when a bag
plays as soon as it listens.  Run: ``python benchmarks/bench_cold_start.py`` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common

TARGET_S = 5.0
NOBODY = 65534
SCENARIOS = ("warm", "cold", "other user", "no writable cache")


def _env(scenario: str, tmp: Path) -> tuple[dict[str, str], list[str]]:
    """Environment and command prefix of a scenario."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(common.REPO_ROOT), env.get("PYTHONPATH", "")]))
    prefix: list[str] = []
    if scenario == "cold":
        # A cache directory the user names is never seeded: an empty one compiles everything.
        env["NUMBA_CACHE_DIR"] = str(tmp / "empty_cache")
        env.pop("MP_SLAM_KERNEL_SEED", None)
        shutil.rmtree(tmp / "empty_cache", ignore_errors=True)
    elif scenario in ("other user", "no writable cache"):
        home = tmp / "home_nobody"
        shutil.rmtree(home, ignore_errors=True)
        if scenario == "other user":
            home.mkdir()
            os.chown(home, NOBODY, NOBODY)
            env["HOME"] = str(home)
        else:
            env["HOME"] = "/nonexistent"
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return env, prefix


def _measured(row: dict, key: str, measure: Callable[..., dict], *args: Any) -> None:
    """``row.update(measure(*args))``; a failure is recorded, not fatal, so a long run keeps its numbers."""
    try:
        row.update(measure(*args))
    except Exception as err:
        row.setdefault("errors", {})[key] = f"{type(err).__name__}: {str(err)[-500:]}"
        common.log(f"  {key} failed: {type(err).__name__}: {str(err)[-300:]}")


def _cli(name: str, cmd: list[str], env: dict[str, str], prefix: list[str], cwd: Path) -> dict:
    wall, text = _run(cmd, env, prefix, cwd)
    return {f"{name}_s": wall, f"{name}_compile_s": _compile_note(text)}


def _run(cmd: list[str], env: dict[str, str], prefix: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(prefix + cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall, proc.stdout + proc.stderr


def _compile_note(text: str) -> float | None:
    m = re.search(r"excl\. ([0-9.]+) s JIT compile", text) or re.search(r"JIT compile: ([0-9.]+) s", text)
    return float(m.group(1)) if m else None


def _measure_node(node: str, env: dict[str, str], prefix: list[str], bag: Path | None, tmp: Path) -> dict:
    ros_log = tmp / f"ros_log_{node}"
    ros_log.mkdir(exist_ok=True)
    os.chmod(ros_log, 0o777)  # the unprivileged scenarios log here too (their HOME may be unwritable)
    env = {**env, "ROS_DOMAIN_ID": env.get("ROS_DOMAIN_ID", "78"), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
           "PYTHONUNBUFFERED": "1", "RCUTILS_COLORIZED_OUTPUT": "0", "ROS_LOG_DIR": str(ros_log)}
    log_path = tmp / f"{node}.log"
    start = time.perf_counter()
    with open(log_path, "w") as out:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", f"mp_slam_ros.ros.{node}"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    result: dict = {}
    try:
        while "compiling kernels ... done" not in log_path.read_text():
            if proc.poll() is not None or time.perf_counter() - start > 600:
                raise RuntimeError(f"{node} did not come up:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        result["ready_s"] = time.perf_counter() - start
        if bag is not None:
            echo = subprocess.Popen(["ros2", "topic", "echo", "--once", "--no-daemon", "/odom",
                                     "nav_msgs/msg/Odometry"], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            time.sleep(1.0)  # the echo subscribes
            play = subprocess.Popen(["ros2", "bag", "play", str(bag)], env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            play_start = time.perf_counter() - start
            echo.wait(timeout=300)
            result["first_frame_s"] = time.perf_counter() - start
            result["first_frame_after_play_s"] = result["first_frame_s"] - play_start
            play.terminate()
            play.wait()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return result


def run(args: argparse.Namespace) -> dict:
    pgo_dir, _ = common.resolve_data_dir(args.data, "pgo", lambda p: (p / "se-sync").is_dir(),
                                         "se-sync/sphere2500.g2o")
    graph = pgo_dir / "se-sync" / "sphere2500.g2o"
    tmp = Path(tempfile.mkdtemp(prefix="mp_slam_cold_"))
    os.chmod(tmp, 0o755)
    env, _ = _env("warm", tmp)
    common.log("rendering a 2 s stereo bag (640x480) for the replay and node rows")
    subprocess.run([sys.executable, "-m", "mp_slam_ros.cli", "synth", "--duration", "2", "--formats", "mcap",
                    "--out", str(tmp / "seq"), "--no-progress"], env=env, check=True, capture_output=True)
    bag = next((tmp / "seq").glob("*_mcap"))
    os.system(f"chmod -R a+rX {tmp}")
    outputs = tmp / "out"  # writable by the unprivileged scenarios too
    outputs.mkdir()
    os.chmod(outputs, 0o1777)
    have_ros = shutil.which("ros2") is not None and _importable("rclpy")
    can_switch_user = os.geteuid() == 0 and shutil.which("setpriv") is not None
    rows = []
    for scenario in SCENARIOS:
        if scenario in ("other user", "no writable cache") and not can_switch_user:
            common.log(f"{scenario}: skipped (needs root and setpriv to run as uid {NOBODY})")
            continue
        env, prefix = _env(scenario, tmp)
        row: dict = {"scenario": scenario}
        if graph.is_file():
            common.log(f"{scenario}: mp-slam pgo sphere2500")
            _measured(row, "pgo", _cli, "pgo", [sys.executable, "-m", "mp_slam_ros.cli", "pgo", str(graph),
                                                "--precision", "mixed", "--quiet"], env, prefix, tmp)
        common.log(f"{scenario}: replay, first frame")
        out = outputs / f"replay_{scenario.replace(' ', '_')}"
        _measured(row, "replay", _cli, "replay_first_frame", [
            sys.executable, "-m", "mp_slam_ros.cli", "replay", str(bag), "--out", str(out), "--max-frames", "1",
            "--no-bag", "--no-progress", "--allow-no-init"], env, prefix, tmp)
        if have_ros:
            for node, node_bag in (("vo_node", bag), ("loop_closure_node", None)):
                env, prefix = _env(scenario, tmp)  # a fresh cache again: each node row starts as the scenario says
                common.log(f"{scenario}: {node}")
                _measured(row, node, lambda *a: {a[0]: _measure_node(*a)}, node, env, prefix, node_bag, outputs)
        rows.append(row)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"machine": common.machine_info(), "target_s": TARGET_S, "rows": rows, "ros": have_ros}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def markdown(results: dict) -> str:
    def cell(v: float | None) -> str:
        if v is None:
            return "-"
        mark = "" if v <= results["target_s"] else " ✗"
        return f"{v:.1f}{mark}"

    lines = [
        f"Wall time [s] of a new process to its first result (target ≤ {results['target_s']:.0f} s; ✗ misses it). "
        f"{common.machine_line(results['machine'], with_gtsam=False)}",
        "",
        "| scenario | `mp-slam pgo` sphere2500 (JIT compile in it) | replay, first frame (JIT compile) "
        "| vo_node ready | vo_node first odometry after play | loop_closure_node ready |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        vo, lc = r.get("vo_node", {}), r.get("loop_closure_node", {})

        def comp(v: float | None) -> str:
            return f" ({v:.1f})" if v else ""

        lines.append(
            f"| {r['scenario']} | {cell(r.get('pgo_s'))}{comp(r.get('pgo_compile_s'))} "
            f"| {cell(r.get('replay_first_frame_s'))}{comp(r.get('replay_first_frame_compile_s'))} "
            f"| {cell(vo.get('ready_s'))} | {cell(vo.get('first_frame_after_play_s'))} | {cell(lc.get('ready_s'))} |"
        )
    for r in results["rows"]:
        for key, error in r.get("errors", {}).items():
            lines.append(f"\n{r['scenario']}, {key}: failed: {error.splitlines()[0][:200]}")
    if not results["ros"]:
        lines.append("\nNode columns: not measured (no sourced ROS 2).")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="shared data directory (default ../shared/data)")
    common.add_output_args(ap, "cold_start")
    args = ap.parse_args()
    out_dir = Path(args.out_dir) if args.out_dir else common.RESULTS_DIR
    stem = args.name or "cold_start"
    if args.from_json:
        import json

        results = json.loads(Path(args.from_json).read_text())
    else:
        results = run(args)
    common.write_outputs(results, out_dir, stem, markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
