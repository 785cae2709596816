"""Offline replay without ROS: a sequence (rosbag2 or EuRoC folder) through VO and loop closure.

This is the second shell around :class:`~mp_slam_ros.vision.odometry.VisualOdometry` and
:class:`~mp_slam_ros.loop.pipeline.LoopClosure` (the first is the pair of rclpy nodes that
``slam.launch.py`` starts): the same pipelines, fed frame by frame from a file instead of
topics, every frame processed, every keyframe handed to loop closure as it is made.
:func:`replay` writes into ``out_dir``:

* ``odometry.tum`` — base_link in odom for every frame (TUM: ``t x y z qx qy qz qw``);
* ``keyframes.tum`` — the keyframes' poses after window BA;
* ``odometry_bag/`` — a rosbag2 with ``/odom`` (nav_msgs/Odometry), ``/tf`` (odom -> base_link)
  and ``/path`` (nav_msgs/Path of the keyframes) that RViz or Foxglove open;
* with loop closure: ``slam.tum`` (base_link in map for every frame, corrected with the final
  map), ``slam_live.tum`` (with the ``map -> odom`` known at each frame, what a live TF
  consumer saw) and ``keyframes_slam.tum``; the bag also gets ``map -> odom`` after every loop;
* ``report.json`` — the camera extrinsic used and where it came from (a warning when it was only
  assumed), frame rate, per-stage latency, keyframes, tracking losses, fp16 fallbacks,
  the loop closure's statistics and loops and, with ground truth, ATE (SE(3) Umeyama) of every
  trajectory and RPE;
* ``trajectory.png`` and ``ate_over_time.png`` with ground truth.

Every output is written into a hidden staging directory in ``out_dir`` and moved over the
previous run's when the run ends, ``report.json`` last.  An interrupted run (Ctrl-C) keeps
everything up to the last processed frame and ``report.json`` says ``"interrupted": true``; a
run that fails (an exception, a sequence the odometry never initialises on) leaves the previous
outputs byte for byte as they were.  Frames before the odometry initialises have no pose and
are not written; what the reader dropped (repeated stamps, images without a partner) is in
``report.json`` under ``input`` and among the warnings.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .io.files import atomic_write_text
from .io.trajectory import Trajectory, tum_line
from .loop.config import LoopClosureConfig
from .vision.odometry import STATUSES, FrameResult, VisualOdometry, VOConfig
from .vision.types import Sequence

__all__ = [
    "NotInitializedError",
    "ReplayReport",
    "config_sets_base_camera",
    "load_replay_config",
    "load_slam_config",
    "open_sequence",
    "replay",
]

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


_VO_NODE = "vo_node"
_LC_NODE = "loop_closure_node"


def _node_sections(data: Any, source: str) -> dict[str, dict[str, Any]]:
    """Parameters per node from a YAML file: flat (every key for both nodes) or the ROS params-file
    layout (``node: ros__parameters:``), where ``/**`` applies to both nodes and a node's own
    section only to it; later sections win, as in ROS."""
    out: dict[str, dict[str, Any]] = {_VO_NODE: {}, _LC_NODE: {}}
    if data is None:
        return out
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of parameters, got {type(data).__name__}")
    ros_layout = any(isinstance(v, dict) and "ros__parameters" in v for v in data.values())
    if not ros_layout:
        return {_VO_NODE: dict(data), _LC_NODE: dict(data)}
    from .ros.parameters import section_applies

    for key, section in data.items():
        if not (isinstance(section, dict) and "ros__parameters" in section):
            raise ValueError(f"{source}: section {key!r} has no ros__parameters")
        for node in out:
            if section_applies(str(key), node):
                out[node].update(section["ros__parameters"] or {})
    return out


def load_slam_config(
    path: str | os.PathLike | None, mode: str | None = None
) -> tuple[VOConfig, LoopClosureConfig, Any]:
    """VO and loop-closure configs and bag topics from a parameter YAML (the nodes' files work as they are).

    VOConfig and LoopClosureConfig keys set the pipelines (``precision`` is in both: a ``/**``
    section or a flat file sets both); ``<name>_topic`` keys set
    :class:`~mp_slam_ros.io.rosbag.BagTopics` fields; the nodes' other parameters (frames, QoS,
    rates, ...) mean nothing offline and are ignored; anything else is an error naming the file
    and key. ``mode`` overrides the file's mode.
    """
    import dataclasses

    import yaml

    from .io.rosbag import BagTopics

    data: Any = None
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: not valid YAML: {exc}") from None
    sections = _node_sections(data, source)
    vo_keys = {f.name for f in dataclasses.fields(VOConfig)}
    lc_keys = {f.name for f in dataclasses.fields(LoopClosureConfig)}
    from .ros import parameters

    node_keys = {spec.name for spec in parameters.VO_NODE_PARAMETERS}
    node_keys |= {spec.name for spec in getattr(parameters, "LC_NODE_PARAMETERS", ())}
    topics = BagTopics()
    vo_values: dict[str, Any] = {}
    lc_values: dict[str, Any] = {}
    for node, values in sections.items():
        for key, value in values.items():
            if node == _VO_NODE and key in vo_keys:
                vo_values[key] = value
            elif node == _LC_NODE and key in lc_keys:
                lc_values[key] = value
            elif node == _VO_NODE and key.endswith("_topic") and hasattr(topics, key[: -len("_topic")]):
                topics = dataclasses.replace(topics, **{key[: -len("_topic")]: str(value)})
            elif key in node_keys or key in vo_keys or key in lc_keys or key == "use_sim_time":
                log.debug("%s: %s is not a %s parameter used offline", source, key, node)
            else:
                raise ValueError(f"{source}: unknown parameter {key!r}")
    if mode is not None:
        vo_values["mode"] = mode
    vo = VOConfig.from_mapping(vo_values, source=source)
    return vo, LoopClosureConfig.from_mapping(lc_values, source=source), topics


def load_replay_config(path: str | os.PathLike | None, mode: str | None = None) -> tuple[VOConfig, Any]:
    """VO config and bag topics from a parameter YAML (see :func:`load_slam_config`)."""
    vo, _, topics = load_slam_config(path, mode)
    return vo, topics


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
    # numba compile time (VO and loop closure), a stage of its own: processing_time_s, frames/s and
    # the latencies exclude it, so a cold kernel cache does not show up as a slow pipeline.
    compile_time_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    tracking_losses: int = 0
    reinitializations: int = 0
    segments: int = 1
    fp16_fallbacks: int = 0
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    keyframe_time: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)
    # With loop closure: its statistics, the accepted loops and the ATE of each trajectory.
    loop_closure: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    # The camera extrinsic used (base_frame, camera_frame, source, T_base_camera) and the
    # warnings raised once per run (an extrinsic only assumed), repeated in text().
    extrinsic: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # False when the odometry never initialised (no poses written; see replay's allow_no_init);
    # frames_before_init counts the frames processed before it did, which have no pose.
    initialized: bool = True
    frames_before_init: int = 0
    # What the reader dropped or repaired (Sequence.input_counts), e.g. repeated image stamps.
    input: dict[str, int] = field(default_factory=dict)

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
        lines.append(f"  JIT compile: {self.compile_time_s:.2f} s (excluded from frames/s and the latencies below)")
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
                    f"drift {acc['rpe_drift_percent']:.2f} % of distance travelled, rotation rmse "
                    f"{acc['rpe_rotation_rmse_deg']:.2f} deg"
                )
        lc = self.loop_closure
        if lc:
            st = lc["statistics"]
            rejected = {k: v for k, v in st["loops_rejected"].items() if v}
            lines.append(
                f"  loop closure: {st['loops_accepted']} loops accepted, rejected {rejected or 'none'}; "
                f"{st['pgo_runs']} PGO runs, mean {1e3 * st['total_pgo_time_s'] / max(st['pgo_runs'], 1):.1f} ms, "
                f"max {1e3 * st['max_pgo_time_s']:.1f} ms, {st['preconditioner_factorizations']} IC factorisations, "
                f"fp16 fallbacks {st['fp16_fallbacks']}"
            )
            for name, a in lc.get("accuracy", {}).items():
                lines.append(f"  ATE {name:<22}: rmse {a['ate_rmse_m']:.5f} m, mean {a['ate_mean_m']:.5f} m")
            if "ate_ratio" in lc:
                lines.append(f"  ATE with / without loop closure: {lc['ate_ratio']:.3g}")
        if not self.initialized:
            lines.append(f"  NEVER INITIALISED: no poses in the outputs ({self.frames} frames processed)")
        elif self.frames_before_init:
            lines.append(f"  {self.frames_before_init} frames before initialisation (no pose, not written)")
        if self.interrupted:
            lines.append("  INTERRUPTED: outputs hold the frames processed so far")
        ext = self.extrinsic
        if ext:
            camera = ext["camera_frame"] or "(no frame_id)"
            lines.append(f"  frames: odometry of {ext['base_frame']!r}, camera {camera!r}, "
                         f"T_base_camera from {ext['source'] or 'the sequence'}")
        lines += [f"  WARNING: {w}" for w in self.warnings]
        return "\n".join(lines)


def _accuracy(
    estimate: Trajectory,
    reference: Trajectory,
    out_dir: Path,
    name: str,
    plots: bool,
    slam: dict[str, Trajectory] | None = None,
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

        aligned = {f"VO ({name})": estimate.transformed(T_left=ate.T_align)}
        errors = {f"VO ({name})": ate}
        if slam and "slam" in slam:
            slam_ate = absolute_trajectory_error(slam["slam"], reference, align="se3")
            aligned["VO + loop closure"] = slam["slam"].transformed(T_left=slam_ate.T_align)
            errors["VO + loop closure"] = slam_ate
        plot_trajectory(out_dir / "trajectory.png", aligned, reference, title=name)
        plot_errors_over_time(out_dir / "ate_over_time.png", errors, title=f"{name}: ATE over time")
    return acc


def _write_slam_outputs(
    lc: Any, stamps: np.ndarray, odom: np.ndarray, live_map: list[np.ndarray], out: Path, name: str
) -> dict[str, Trajectory]:
    """The loop-corrected trajectories: ``slam.tum`` (every frame, final map), ``slam_live.tum``
    (every frame with the map -> odom known at that frame) and ``keyframes_slam.tum``."""
    from .io.trajectory import write_tum
    from .solver import lie

    _, kf_stamps, kf_map = lc.corrected_poses()
    kf_odom = lc.odometry_poses()
    # Each frame moves with the correction of the newest keyframe at or before it (the first
    # keyframe's before it), which is the final-map version of what map -> odom does live.
    ref = np.clip(np.searchsorted(kf_stamps, stamps, side="right") - 1, 0, max(len(kf_stamps) - 1, 0))
    if len(kf_stamps):
        correction = kf_map @ lie.inverse_transform(kf_odom)
        final = correction[ref] @ odom
    else:
        final = odom.copy()
    trajectories = {
        "slam": Trajectory(stamps, final),
        "slam_live": Trajectory(stamps[: len(live_map)], np.asarray(live_map).reshape(-1, 4, 4)),
        "keyframes_slam": Trajectory(kf_stamps, kf_map),
    }
    for key, traj in trajectories.items():
        header = f"{name}: base_link in map, mp_slam_ros visual odometry + loop closure ({key})"
        write_tum(out / f"{key}.tum", traj, header=header)
    return trajectories


def _slam_accuracy(
    odometry: Trajectory, slam: dict[str, Trajectory], reference: Trajectory
) -> dict[str, dict[str, float]]:
    """ATE (SE(3)-aligned) of the odometry and of each loop-corrected trajectory."""
    from .eval.metrics import absolute_trajectory_error

    out = {}
    for key, traj in {"odometry": odometry, **slam}.items():
        a = absolute_trajectory_error(traj, reference, align="se3")
        out[key] = {"ate_rmse_m": a.rmse, "ate_mean_m": a.mean, "ate_max_m": a.max, "pairs": a.num_pairs}
    return out


def _extrinsic_warnings(sequence: Sequence, source: str) -> list[str]:
    """The "camera frame used as base frame" warning, logged here once, for the report too."""
    from .io.frames import EXTRINSIC_ASSUMED, missing_extrinsic_warning

    if source != EXTRINSIC_ASSUMED:
        return []
    where = f"the input {sequence.name!r}" if sequence.name else "the input"
    message = missing_extrinsic_warning(sequence.base_frame, sequence.camera_frame, where)
    if message is None:
        return []
    log.warning("%s", message)
    return [message]


def config_sets_base_camera(path: str | os.PathLike | None) -> bool:
    """Whether the parameter YAML at ``path`` sets vo_node's ``T_base_camera`` (flat, ``/**`` or
    ``vo_node`` section): only then does the file's extrinsic win over the sequence's."""
    if path is None:
        return False
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    return "T_base_camera" in _node_sections(data, str(path))[_VO_NODE]


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
    loop_closure: LoopClosureConfig | None = None,
    vocabulary: Any = None,
    base_camera_source: str | None = None,
    allow_no_init: bool = False,
) -> ReplayReport:
    """Run the VO pipeline (and loop closure) over ``sequence`` and write the outputs of the module doc.

    ``config`` defaults to ``VOConfig(mode=sequence.mode, T_base_camera=sequence.T_base_camera)``;
    its mode must match the sequence's. ``precision`` overrides ``config.precision`` and
    ``loop_closure.precision``. With ``loop_closure`` (a config), every keyframe goes through
    :class:`~mp_slam_ros.loop.pipeline.LoopClosure` as it is made, as the two nodes run live;
    ``vocabulary`` overrides the loop closure's vocabulary.

    ``base_camera_source`` says where ``config.T_base_camera`` came from (default: the
    sequence's ``T_base_camera_source`` without a config, "config" with one).  When it is
    :data:`~mp_slam_ros.io.frames.EXTRINSIC_ASSUMED` and the images are not in the sequence's
    base frame, the odometry is the camera's pose under the base frame's name: that is logged
    once as a warning and repeated in the report.

    Frames before the odometry first initialises have no pose and are not written (the report
    counts them in ``frames_before_init``).  A run that never initialises raises
    :class:`NotInitializedError` and leaves ``out_dir`` as it was, unless ``allow_no_init``: then the
    outputs are written without poses and the report says ``"initialized": false``.  Every output
    is built in a hidden staging directory in ``out_dir`` and moved into place when the run ends
    (completed or interrupted), so a run that fails leaves the previous run's outputs untouched.
    """
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer))
                                   or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
    if config is None:
        config = VOConfig(mode=sequence.mode, T_base_camera=tuple(sequence.T_base_camera.reshape(-1)))
        base_camera_source = base_camera_source or sequence.T_base_camera_source or "the sequence"
    if config.mode != sequence.mode:
        raise ValueError(
            f"the config's mode is {config.mode!r} but the sequence {sequence.name!r} is {sequence.mode!r}"
        )
    warnings = _extrinsic_warnings(sequence, base_camera_source or "config")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vo = VisualOdometry(
        sequence.camera, config, sequence.right_camera, sequence.T_left_right, precision=precision
    )
    name = sequence.name or "sequence"
    report = ReplayReport(name, sequence.mode, vo.precision.name)
    report.extrinsic = {
        "base_frame": sequence.base_frame,
        "camera_frame": sequence.camera_frame,
        "source": base_camera_source or "config",
        "T_base_camera": config.T_base_camera_matrix.tolist(),
    }
    report.warnings = warnings + list(sequence.input_warnings)
    report.input = dict(sequence.input_counts)
    lc = None
    if loop_closure is not None:
        from .loop.pipeline import LoopClosure

        lc = LoopClosure(loop_closure, vocabulary, precision=precision)
    live_map: list[np.ndarray] = []  # map -> base_link as a live TF consumer saw it, per frame
    stage_times: dict[str, list[float]] = {}
    kf_times: list[float] = []
    stamps: list[int] = []
    poses: list[np.ndarray] = []
    kf_path: list[tuple[int, np.ndarray]] = []
    total = sequence.num_frames if max_frames is None else min(sequence.num_frames, max_frames)
    report.outputs = {"odometry": "odometry.tum", "keyframes": "keyframes.tum"}

    from tqdm import tqdm

    # Everything is written into a staging directory and moved over the previous run's outputs
    # only when this run ends (completed or interrupted): a failure must not destroy them.
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".replay-", suffix=".tmp"))
    bag = None
    if write_bag:
        from .io.rosbag import OutputBagWriter

        bag = OutputBagWriter(staging / "odometry_bag", storage=storage)
        report.outputs["bag"] = "odometry_bag"
    t_wall = time.perf_counter()
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, desc=name)
    odo_file: TextIO
    kf_file: TextIO
    before_init = 0
    try:
        with open(staging / "odometry.tum", "w") as odo_file, open(staging / "keyframes.tum", "w") as kf_file:
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
                report.statuses[result.status] = report.statuses.get(result.status, 0) + 1
                for stage, seconds in result.timings.items():
                    stage_times.setdefault(stage, []).append(seconds)
                if result.status == "initializing":
                    # No map yet, so no pose: the identity the odometry reports would look like
                    # a trajectory standing still.  Counted, not written.
                    before_init += 1
                    if on_result is not None:
                        on_result(result)
                    bar.update(1)
                    continue
                stamps.append(result.stamp_ns)
                poses.append(result.T_odom_base)
                odo_file.write(_tum_line(result.stamp_ns, result.T_odom_base))
                odo_file.flush()
                if bag is not None:
                    bag.write_odometry(result.stamp_ns, result.T_odom_base)
                    bag.write_tf(result.stamp_ns, result.T_odom_base, "odom", "base_link")
                if result.keyframe is not None and lc is not None:
                    lc_result = lc.add_keyframe(result.keyframe)
                    if bag is not None and lc_result.optimized:
                        bag.write_tf(result.stamp_ns, lc_result.T_map_odom, "map", "odom")
                if lc is not None:
                    live_map.append(lc.T_map_odom @ result.T_odom_base)
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
    except BaseException:
        bar.close()
        if bag is not None:
            bag.__exit__(None, None, None)
        shutil.rmtree(staging, ignore_errors=True)  # the previous run's outputs stay as they were
        raise
    finally:
        bar.close()
        if bag is not None:
            if kf_path and len(kf_path) % _PATH_EVERY and staging.exists():
                bag.write_path(kf_path[-1][0], "odom", kf_path)
            bag.__exit__(None, None, None)

    try:
        return _finish_replay(report, sequence, vo, lc, out, staging, name, plots, stamps, poses, live_map,
                              stage_times, kf_times, before_init, t_wall, allow_no_init)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # empty after a commit; a failed run's partial outputs


class NotInitializedError(ValueError):
    """A replay whose visual odometry never initialised: it has no trajectory to write."""


def _commit(staging: Path, out: Path) -> None:
    """Move every output from ``staging`` over ``out``'s, ``report.json`` last (it describes the rest)."""
    entries = sorted(staging.iterdir(), key=lambda p: p.name == "report.json")
    for src in entries:
        dst = out / src.name
        if src.is_dir() and (dst.is_dir() and not dst.is_symlink()):
            # A directory cannot be renamed over a non-empty one: move the old one aside first.
            old = staging / f".old-{src.name}"
            os.replace(dst, old)
            os.replace(src, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(src, dst)


def _finish_replay(
    report: ReplayReport, sequence: Sequence, vo: VisualOdometry, lc: Any, out: Path, staging: Path, name: str,
    plots: bool, stamps: list[int], poses: list[np.ndarray], live_map: list[np.ndarray],
    stage_times: dict[str, list[float]], kf_times: list[float], before_init: int, t_wall: float,
    allow_no_init: bool,
) -> ReplayReport:
    """Statistics, the loop-corrected trajectories, accuracy and ``report.json``, then the commit."""
    report.frames = vo.stats.frames
    report.frames_before_init = before_init
    report.initialized = bool(stamps)
    if not stamps and report.frames and not report.interrupted:
        why = (f"{sequence.name or 'sequence'}: the visual odometry never initialised in {report.frames} frames "
               f"(no frame had min_init_features={vo.config.min_init_features} features with depth: blank, "
               "uniform or noise images, no valid depth, or a wrong calibration?)")
        if not allow_no_init:
            raise NotInitializedError(f"{why}; nothing written")
        log.warning("%s; writing outputs without poses", why)
        report.warnings.append(why)
        with open(staging / "odometry.tum", "a") as fh:
            fh.write(f"# never initialised: no poses ({report.frames} frames processed)\n")
    elif before_init:
        message = (f"{before_init} frame(s) before the visual odometry initialised have no pose and are not in "
                   "the outputs")
        log.warning("%s", message)
        report.warnings.append(message)
    report.frames = vo.stats.frames
    report.keyframes = vo.stats.keyframes
    report.processing_time_s = vo.stats.total_time
    report.compile_time_s = vo.stats.compile_time + (lc.stats.compile_time_s if lc is not None else 0.0)
    report.wall_time_s = time.perf_counter() - t_wall
    report.tracking_losses = vo.stats.tracking_losses
    report.reinitializations = vo.stats.reinitializations
    report.segments = vo.segment + 1
    report.fp16_fallbacks = vo.stats.fp16_fallbacks
    report.latency = {stage: _percentiles(v) for stage, v in stage_times.items()}
    report.keyframe_time = _percentiles(kf_times)
    for status in STATUSES:
        report.statuses.setdefault(status, 0)

    slam: dict[str, Trajectory] = {}
    if lc is not None and stamps:
        slam = _write_slam_outputs(lc, np.asarray(stamps, dtype=np.int64), np.asarray(poses), live_map, staging,
                                   name)
        report.outputs.update(slam="slam.tum", slam_live="slam_live.tum", keyframes_slam="keyframes_slam.tum")
        report.loop_closure = {
            "statistics": lc.stats.as_dict(),
            "precision": lc.precision.name,
            "loops": [
                {"query_id": e.query_id, "match_id": e.match_id, "inliers": e.inliers, "matches": e.matches}
                for e in lc.loops
            ],
        }
    if sequence.ground_truth is not None and len(stamps) >= 3:
        estimate = Trajectory(np.asarray(stamps, dtype=np.int64), np.asarray(poses))
        try:
            report.accuracy = _accuracy(estimate, sequence.ground_truth, staging, name, plots, slam)
            if plots:
                report.outputs.update(trajectory_plot="trajectory.png", error_plot="ate_over_time.png")
            if slam:
                report.loop_closure["accuracy"] = acc = _slam_accuracy(estimate, slam, sequence.ground_truth)
                report.loop_closure["ate_ratio"] = acc["slam"]["ate_rmse_m"] / acc["odometry"]["ate_rmse_m"]
        except ValueError as exc:
            log.warning("no accuracy against the ground truth: %s", exc)
    atomic_write_text(staging / "report.json", json.dumps(report.as_dict(), indent=2, default=float) + "\n")
    _commit(staging, out)
    return report
