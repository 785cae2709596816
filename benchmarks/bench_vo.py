#!/usr/bin/env python3
"""Visual-odometry benchmark: accuracy and speed of the whole pipeline, per precision preset.

a. **Synthetic two-lap room** (``mp_slam_ros.sim``, 640x480 stereo at 20 Hz, 786 frames, 27.7 m, and
   the same path in RGB-D): ATE (SE(3)-aligned, % of the path length), RPE drift and time per
   keyframe, without loop closure, for fp64, fp32, mixed and fp16.
b. **EuRoC V1_01 snippet** (the shared data's 95 real stereo frames, 752x480, raw images rectified by the
   pipeline): ATE, drift, frames per second on one core and the per-stage latency, per preset.

The synthetic frames are rendered once into an EuRoC-style folder under ``build/bench_data/`` (lossless
PNG) and read back for every run, so rendering does not count and every preset sees the same pixels.
Everything runs in one process, one run at a time, with BLAS and numba on one thread ("one core").

Writes ``benchmarks/results/vo.json`` (every report), ``vo.md`` (tables, also printed) and ``vo_room.png``
(top view of the room runs against the ground truth).

Run from the repository root::

    python benchmarks/bench_vo.py            # ~6 min on 2 cores
    python benchmarks/bench_vo.py --quick    # 10 s of the room, fp64 and mixed only
"""

from __future__ import annotations

import os

# One core, as the target says; set before numpy / numba load.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    REPO_ROOT,
    add_output_args,
    log,
    machine_info,
    machine_line,
    resolve_data_dir,
    write_outputs,
)

PRESETS = ("fp64", "fp32", "mixed", "fp16")
EUROC = "euroc_V1_01_easy_micro"


def room_folder(mode: str, duration: float | None, cache: Path) -> Path:
    """The rendered room sequence as an EuRoC folder (rendered on first use)."""
    from mp_slam_ros.io.euroc import write_euroc
    from mp_slam_ros.sim.sequence import make_sequence

    tag = "full" if duration is None else f"{duration:g}s"
    folder = cache / f"room_two_laps_{mode}_{tag}"
    if not (folder / "mav0").is_dir():
        log(f"rendering the two-lap room ({mode}, {tag}) into {folder.name}/ (once)")
        sequence = make_sequence("two_lap_room", mode, duration_s=duration)
        write_euroc(folder, sequence, progress=sys.stderr.isatty(), overwrite=True)
    return folder


def run_one(folder: Path, mode: str, preset: str, name: str) -> dict[str, Any]:
    from mp_slam_ros.io.euroc import read_euroc
    from mp_slam_ros.replay import replay

    seq = read_euroc(folder, mode=mode)
    seq.name = name
    with tempfile.TemporaryDirectory() as tmp:
        report = replay(seq, tmp, precision=preset, progress=False, write_bag=False, plots=False)
        from mp_slam_ros.io.trajectory import read_tum

        estimate = read_tum(Path(tmp) / "odometry.tum")
    record = report.as_dict()
    record["positions"] = estimate.positions[:, :2].round(4).tolist()  # for the plot
    acc = report.accuracy
    log(
        f"{name:>24} {preset:>5}: ATE {acc.get('ate_rmse_m', float('nan')):.4f} m "
        f"({acc.get('ate_rmse_percent_of_path', float('nan')):.3f} %), {report.fps:.1f} frames/s, "
        f"{report.keyframes} keyframes, ba {report.latency.get('ba', {}).get('mean_ms', float('nan')):.1f} ms, "
        f"losses {report.tracking_losses}, fallbacks {report.fp16_fallbacks}"
    )
    return record


def markdown(results: dict) -> str:
    lines = [machine_line(results["machine"], with_gtsam=False), ""]
    for key, title in (
        ("room_stereo", "VO: synthetic two-lap room, stereo 640x480, {frames} frames, {path:.1f} m (no loop closure)"),
        ("room_rgbd", "VO: synthetic two-lap room, RGB-D 640x480, {frames} frames, {path:.1f} m (no loop closure)"),
        ("euroc", "VO: EuRoC V1_01 snippet, stereo 752x480, {frames} real frames"),
    ):
        runs = results.get(key)
        if not runs:
            continue
        ref = runs.get("fp64", {}).get("accuracy", {}).get("ate_rmse_m")
        first = next(iter(runs.values()))
        title = title.format(frames=first["frames"], path=first.get("accuracy", {}).get("path_length_m", float("nan")))
        lines += [
            f"## {title}",
            "",
            "| precision | ATE rmse (m) | ATE % of path | vs fp64 | RPE drift (%) | frames/s | ms / frame p90 "
            "| ms / keyframe | BA ms (mean) | keyframes | losses | fp16 fallbacks |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for preset, r in runs.items():
            acc = r.get("accuracy", {})
            ate = acc.get("ate_rmse_m")
            vs = f"{100 * (ate - ref) / ref:+.1f} %" if ate is not None and ref else "—"
            drift = acc.get("rpe_drift_percent")
            lines.append(
                f"| {preset} | {ate:.4f} | {acc.get('ate_rmse_percent_of_path', float('nan')):.3f} | {vs} | "
                f"{'—' if drift is None else f'{drift:.2f}'} | {r['fps']:.1f} | "
                f"{r['latency']['total']['p90_ms']:.1f} | "
                f"{r['keyframe_time'].get('mean_ms', float('nan')):.1f} | "
                f"{r['latency'].get('ba', {}).get('mean_ms', float('nan')):.1f} | {r['keyframes']} | "
                f"{r['tracking_losses']} | {r['fp16_fallbacks']} |"
            )
        lines.append("")
        euroc_mixed = runs.get("mixed") if key == "euroc" else None
        if euroc_mixed:
            stages = ", ".join(
                f"{k} {v['mean_ms']:.2f}" for k, v in euroc_mixed["latency"].items() if v.get("count") and k != "total"
            )
            lines += [f"Per-stage mean latency at mixed (ms; keyframe-only stages averaged over keyframes): {stages}."]
            lines.append("")
            path = euroc_mixed["accuracy"].get("path_length_m")
            if path is not None:
                lines += [
                    f"The snippet is the first 4.75 s of V1_01, where the drone has not taken off yet: the ground "
                    f"truth moves {100 * path:.1f} cm in all, so drift per distance travelled is not meaningful "
                    "there and no RPE is computed; the ATE is the useful number.",
                    "",
                ]
    return "\n".join(lines)


def plot_room(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from common import save_figure

    runs = results.get("room_stereo") or {}
    if not runs or "ground_truth_xy" not in results:
        raise ValueError("no room runs")
    fig, ax = plt.subplots(figsize=(7, 6))
    gt = np.array(results["ground_truth_xy"])
    ax.plot(gt[:, 0], gt[:, 1], "k--", lw=1.2, label="ground truth")
    for preset, r in runs.items():
        p = np.array(r["positions"])
        ax.plot(p[:, 0], p[:, 1], lw=1, label=f"{preset}: ATE {r['accuracy']['ate_rmse_m'] * 100:.1f} cm")
    ax.set_aspect("equal")
    ax.set_xlabel("x in odom (m)")
    ax.set_ylabel("y in odom (m)")
    ax.set_title("Two-lap room, stereo VO without loop closure (odom frame, unaligned)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s of the room, fp64 and mixed only")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets")
    ap.add_argument("--data", help="shared data directory (default ../shared/data)")
    ap.add_argument("--no-rgbd", action="store_true", help="skip the RGB-D room runs")
    add_output_args(ap, "vo", "vo_quick")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.from_json:
        return rerender(args.from_json, args)
    presets = ["fp64", "mixed"] if args.quick else [p for p in args.presets.split(",") if p]
    duration = 10.0 if args.quick else None
    cache = REPO_ROOT / "build" / "bench_data"
    results: dict[str, Any] = {"machine": machine_info(), "presets": presets, "duration_s": duration}

    import numpy as np

    from mp_slam_ros.sim.trajectories import two_lap_room

    gt = two_lap_room(duration_s=duration)
    results["ground_truth_xy"] = np.round((np.linalg.inv(gt.poses[0]) @ gt.poses)[:, :2, 3], 4).tolist()
    modes = ["stereo"] if args.no_rgbd or args.quick else ["stereo", "rgbd"]
    for mode in modes:
        folder = room_folder(mode, duration, cache)
        results[f"room_{mode}"] = {p: run_one(folder, mode, p, f"room_two_laps_{mode}") for p in presets}
    try:
        seq_dir, _ = resolve_data_dir(args.data, "seq", lambda p: (p / EUROC).is_dir(), f"{EUROC}/mav0")
        results["euroc"] = {p: run_one(seq_dir / EUROC, "stereo", p, EUROC) for p in presets}
    except SystemExit as err:
        log(f"EuRoC runs skipped: {err}")
    stem = args.name or ("vo_quick" if args.quick else "vo")
    out_dir = Path(args.out_dir) if args.out_dir else REPO_ROOT / "benchmarks" / "results"
    plots = [] if args.no_plot else [("_room", plot_room)]
    write_outputs(results, out_dir, stem, markdown(results), plots)
    return 0


def rerender(path: str, args: argparse.Namespace) -> int:
    """--from-json: the tables and plot of an earlier run, nothing re-run."""
    import json

    results = json.loads(Path(path).read_text())
    stem = args.name or Path(path).stem
    out_dir = Path(args.out_dir) if args.out_dir else Path(path).parent
    plots = [] if args.no_plot else [("_room", plot_room)]
    write_outputs(results, out_dir, stem, markdown(results), plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
