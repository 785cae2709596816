"""Offline replay without ROS: a sequence (rosbag2 or EuRoC folder) through the VO pipeline.

This is the second shell around :class:`~mp_slam_ros.vision.odometry.VisualOdometry` (the first
is the rclpy node): the same pipeline, fed frame by frame from a file instead of topics, every
frame processed. :func:`replay` writes into ``out_dir``:

* ``odometry.tum`` — base_link in odom for every frame (TUM: ``t x y z qx qy qz qw``);
* ``keyframes.tum`` — the keyframes' poses after window BA;
* ``odometry_bag/`` — a rosbag2 with ``/odom`` (nav_msgs/Odometry), ``/tf`` (odom -> base_link)
  and ``/path`` (nav_msgs/Path of the keyframes) that RViz or Foxglove open;
* ``report.json`` — frame rate, per-stage latency, keyframes, tracking losses, fp16 fallbacks
  and, with ground truth, ATE (SE(3) Umeyama) and RPE;
* ``trajectory.png`` and ``ate_over_time.png`` with ground truth.

Both trajectory files are written line by line and the bag is closed on any exception, so an
interrupted run (Ctrl-C) keeps everything up to the last processed frame; ``report.json`` then
says ``"interrupted": true``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .io.files import atomic_write_text
from .io.trajectory import Trajectory, tum_line
from .vision.odometry import STATUSES, FrameResult, VisualOdometry, VOConfig
from .vision.types import Sequence

__all__ = ["ReplayReport", "load_replay_config", "open_sequence", "replay"]

log = logging.getLogger(__name__)

# The whole keyframe path goes into the bag every this many keyframes (and at the end): every
# keyframe would make the bag grow with the square of the path length.
_PATH_EVERY = 10


def open_sequence(
    path: str | os.PathLike, mode: str = "stereo", topics: Any = None, **kwargs: Any
) -> Sequence:
    """A :class:`Sequence` from an EuRoC-style folder or a rosbag2 (sqlite3 or mcap), by content.

    A folder with ``mav0/`` (or one that is ``mav0``) is EuRoC; anything else is tried as a bag.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.is_dir() and ((p / "mav0").is_dir() or p.name == "mav0"):
        from .io.euroc import read_euroc

        return read_euroc(p, mode=mode)
    from .io.rosbag import BagTopics, read_bag_sequence

    return read_bag_sequence(p, mode=mode, topics=topics or BagTopics(), **kwargs)


def _parameter_section(data: Any, source: str) -> dict[str, Any]:
    """The parameters of a YAML file: flat, or ROS params-file layout (``node: ros__parameters:``)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of parameters, got {type(data).__name__}")
    sections = [v["ros__parameters"] for v in data.values() if isinstance(v, dict) and "ros__parameters" in v]
    if sections:
        merged: dict[str, Any] = {}
        for section in sections:  # e.g. '/**' and 'vo_node' in one file: later ones win, as in ROS
            merged.update(section or {})
        return merged
    return dict(data)


def load_replay_config(path: str | os.PathLike | None, mode: str | None = None) -> tuple[VOConfig, Any]:
    """VO config and bag topics from a parameter YAML (the VO node's own file works as it is).

    VOConfig keys set the pipeline; ``<name>_topic`` keys set :class:`~mp_slam_ros.io.rosbag.BagTopics`
    fields; the node's other parameters (frames, QoS, ...) mean nothing offline and are ignored;
    anything else is an error naming the file and key. ``mode`` overrides the file's mode.
    """
    import dataclasses

    import yaml

    from .io.rosbag import BagTopics

    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not valid YAML: {exc}") from None
        values = _parameter_section(data, source)
    vo_keys = {f.name for f in dataclasses.fields(VOConfig)}
    topics = BagTopics()
    node_keys: set[str] = set()
    try:
        from .ros.parameters import VO_NODE_PARAMETERS

        node_keys = {spec.name for spec in VO_NODE_PARAMETERS}
    except ImportError:  # pragma: no cover - the parameter table ships with the package
        pass
    vo_values: dict[str, Any] = {}
    for key, value in values.items():
        if key in vo_keys:
            vo_values[key] = value
        elif key.endswith("_topic") and hasattr(topics, key[: -len("_topic")]):
            topics = dataclasses.replace(topics, **{key[: -len("_topic")]: str(value)})
        elif key in node_keys or key == "use_sim_time":
            log.debug("%s: %s is a node parameter; not used offline", source, key)
        else:
            raise ValueError(f"{source}: unknown parameter {key!r}")
    if mode is not None:
        vo_values["mode"] = mode
    return VOConfig.from_mapping(vo_values, source=source), topics


def _tum_line(stamp_ns: int, T: np.ndarray) -> str:
    from .solver import lie

    return tum_line(stamp_ns, T[:3, 3], lie.rotation_to_quaternion(T[None, :3, :3])[0])


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1e3
    if a.size == 0:
        return {"count": 0}
    return {
        "count": int(a.size),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "max_ms": float(a.max()),
    }


@dataclass
class ReplayReport:
    """What a replay did (also written to ``report.json``)."""

    sequence: str
    mode: str
    precision: str
    frames: int = 0
    keyframes: int = 0
    wall_time_s: float = 0.0
    processing_time_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    tracking_losses: int = 0
    reinitializations: int = 0
    segments: int = 1
    fp16_fallbacks: int = 0
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    keyframe_time: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Frames per second of pipeline processing (reading and writing files excluded)."""
        return self.frames / self.processing_time_s if self.processing_time_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["fps"] = self.fps
        return d

    def text(self) -> str:
        lines = [
            f"{self.sequence}: {self.frames} frames, {self.keyframes} keyframes, {self.mode}, "
            f"precision {self.precision}",
            f"  processing: {self.fps:.1f} frames/s ({self.processing_time_s:.2f} s; wall {self.wall_time_s:.2f} s)",
            f"  tracking: {self.statuses}; losses {self.tracking_losses}, re-initialisations "
            f"{self.reinitializations}, fp16 fallbacks {self.fp16_fallbacks}",
        ]
        for stage, stats in self.latency.items():
            if stats.get("count"):
                lines.append(
                    f"  {stage:>8}: mean {stats['mean_ms']:7.2f} ms  p90 {stats['p90_ms']:7.2f} ms  "
                    f"(n={stats['count']})"
                )
        acc = self.accuracy
        if acc:
            lines.append(
                f"  ATE (SE(3)-aligned) rmse {acc['ate_rmse_m']:.4f} m, mean {acc['ate_mean_m']:.4f} m over "
                f"{acc['path_length_m']:.2f} m ({acc['ate_rmse_percent_of_path']:.3f} % of the path)"
            )
            if "rpe_drift_percent" in acc:
                lines.append(
                    f"  RPE over {acc['rpe_delta_m']:.2f} m: translation rmse {acc['rpe_rmse_m']:.4f} m, "
                    f"drift {acc['rpe_drift_percent']:.2f} % of distance travelled"
                )
        if self.interrupted:
            lines.append("  INTERRUPTED: outputs hold the frames processed so far")
        return "\n".join(lines)


def _accuracy(
    estimate: Trajectory, reference: Trajectory, out_dir: Path, name: str, plots: bool
) -> dict[str, Any]:
    from .eval.metrics import absolute_trajectory_error, relative_pose_error

    ate = absolute_trajectory_error(estimate, reference, align="se3")
    ref_matched = reference.between(int(estimate.stamps_ns[0]), int(estimate.stamps_ns[-1]))
    path = ref_matched.path_length if len(ref_matched) > 1 else 0.0
    acc: dict[str, Any] = {
        "ate_rmse_m": ate.rmse,
        "ate_mean_m": ate.mean,
        "ate_max_m": ate.max,
        "ate_pairs": ate.num_pairs,
        "path_length_m": path,
        "ate_rmse_percent_of_path": 100.0 * ate.rmse / path if path > 0 else float("nan"),
    }
    # Drift over segments of a tenth of the path (at least 0.1 m): short enough to have many
    # segments on a short sequence, long enough to be dominated by drift, not noise.
    delta = max(0.1, path / 10.0)
    if path > 2 * delta:
        try:
            rpe = relative_pose_error(
                estimate, reference, delta=delta, delta_unit="m", all_pairs=True, pairs_on="reference"
            )
            acc.update(
                rpe_delta_m=delta,
                rpe_rmse_m=rpe.rmse,
                rpe_pairs=rpe.num_pairs,
                rpe_drift_percent=rpe.drift_percent,
                rpe_rotation_rmse_deg=rpe.rot_rmse_deg,
            )
        except ValueError as exc:  # too few pairs on a very short sequence
            log.info("RPE skipped: %s", exc)
    if plots:
        from .eval.plots import plot_errors_over_time, plot_trajectory

        aligned = estimate.transformed(T_left=ate.T_align)
        plot_trajectory(out_dir / "trajectory.png", {f"VO ({name})": aligned}, reference, title=name)
        plot_errors_over_time(
            out_dir / "ate_over_time.png", {f"VO ({name})": ate}, title=f"{name}: ATE over time"
        )
    return acc


def replay(
    sequence: Sequence,
    out_dir: str | os.PathLike,
    config: VOConfig | None = None,
    precision: str | None = None,
    progress: bool = True,
    write_bag: bool = True,
    storage: str = "sqlite3",
    plots: bool = True,
    max_frames: int | None = None,
    on_result: Callable[[FrameResult], None] | None = None,
) -> ReplayReport:
    """Run the VO pipeline over ``sequence`` and write the outputs of the module doc.

    ``config`` defaults to ``VOConfig(mode=sequence.mode, T_base_camera=sequence.T_base_camera)``;
    its mode must match the sequence's. ``precision`` overrides ``config.precision``.
    """
    config = config or VOConfig(mode=sequence.mode, T_base_camera=tuple(sequence.T_base_camera.reshape(-1)))
    if config.mode != sequence.mode:
        raise ValueError(
            f"the config's mode is {config.mode!r} but the sequence {sequence.name!r} is {sequence.mode!r}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vo = VisualOdometry(
        sequence.camera, config, sequence.right_camera, sequence.T_left_right, precision=precision
    )
    name = sequence.name or "sequence"
    report = ReplayReport(name, sequence.mode, vo.precision.name)
    stage_times: dict[str, list[float]] = {}
    kf_times: list[float] = []
    stamps: list[int] = []
    poses: list[np.ndarray] = []
    kf_path: list[tuple[int, np.ndarray]] = []
    total = sequence.num_frames if max_frames is None else min(sequence.num_frames, max_frames)
    report.outputs = {"odometry": "odometry.tum", "keyframes": "keyframes.tum"}

    from tqdm import tqdm

    bag = None
    if write_bag:
        from .io.rosbag import OutputBagWriter

        bag_path = out / "odometry_bag"
        if bag_path.exists():
            import shutil

            shutil.rmtree(bag_path)  # a previous run's output: replaced, like the other files
        bag = OutputBagWriter(bag_path, storage=storage)
        report.outputs["bag"] = "odometry_bag"
    t_wall = time.perf_counter()
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, desc=name)
    odo_file: TextIO
    kf_file: TextIO
    try:
        with open(out / "odometry.tum", "w") as odo_file, open(out / "keyframes.tum", "w") as kf_file:
            header = (
                f"# {name}: base_link in odom, mp_slam_ros visual odometry, precision {vo.precision.name}\n"
            )
            odo_file.write(header)
            kf_file.write(header.replace("visual odometry", "visual odometry keyframes"))
            if bag is not None:
                bag.__enter__()
            for i, frame in enumerate(sequence.frames()):
                if i >= total:
                    break
                result = vo.process(frame)
                stamps.append(result.stamp_ns)
                poses.append(result.T_odom_base)
                report.statuses[result.status] = report.statuses.get(result.status, 0) + 1
                for stage, seconds in result.timings.items():
                    stage_times.setdefault(stage, []).append(seconds)
                odo_file.write(_tum_line(result.stamp_ns, result.T_odom_base))
                odo_file.flush()
                if bag is not None:
                    bag.write_odometry(result.stamp_ns, result.T_odom_base)
                    bag.write_tf(result.stamp_ns, result.T_odom_base, "odom", "base_link")
                if result.keyframe is not None:
                    kf_times.append(result.timings["total"])
                    kf = result.keyframe
                    kf_path.append((kf.stamp_ns, kf.T_odom_base))
                    kf_file.write(_tum_line(kf.stamp_ns, kf.T_odom_base))
                    kf_file.flush()
                    if bag is not None and len(kf_path) % _PATH_EVERY == 0:
                        bag.write_path(kf.stamp_ns, "odom", kf_path)
                if on_result is not None:
                    on_result(result)
                bar.update(1)
                if i % 10 == 0:
                    bar.set_postfix(
                        fps=f"{vo.stats.frames / max(vo.stats.total_time, 1e-9):.1f}", kf=vo.stats.keyframes
                    )
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("replay interrupted after %d frames; outputs hold those frames", len(stamps))
    finally:
        bar.close()
        if bag is not None:
            if kf_path and len(kf_path) % _PATH_EVERY:
                bag.write_path(kf_path[-1][0], "odom", kf_path)
            bag.__exit__(None, None, None)

    report.frames = vo.stats.frames
    report.keyframes = vo.stats.keyframes
    report.processing_time_s = vo.stats.total_time
    report.wall_time_s = time.perf_counter() - t_wall
    report.tracking_losses = vo.stats.tracking_losses
    report.reinitializations = vo.stats.reinitializations
    report.segments = vo.segment + 1
    report.fp16_fallbacks = vo.stats.fp16_fallbacks
    report.latency = {stage: _percentiles(v) for stage, v in stage_times.items()}
    report.keyframe_time = _percentiles(kf_times)
    for status in STATUSES:
        report.statuses.setdefault(status, 0)

    if sequence.ground_truth is not None and len(stamps) >= 3:
        estimate = Trajectory(np.asarray(stamps, dtype=np.int64), np.asarray(poses))
        try:
            report.accuracy = _accuracy(estimate, sequence.ground_truth, out, name, plots)
            if plots:
                report.outputs.update(trajectory_plot="trajectory.png", error_plot="ate_over_time.png")
        except ValueError as exc:
            log.warning("no accuracy against the ground truth: %s", exc)
    atomic_write_text(out / "report.json", json.dumps(report.as_dict(), indent=2, default=float) + "\n")
    return report
