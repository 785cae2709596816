"""The VisualOdometry pipeline on synthetic sequences with exact ground truth, and on real EuRoC."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from mp_slam_ros.eval.metrics import absolute_trajectory_error
from mp_slam_ros.io.trajectory import Trajectory, read_tum
from mp_slam_ros.replay import load_replay_config, replay
from mp_slam_ros.sim.sequence import make_sequence
from mp_slam_ros.vision.odometry import VisualOdometry, VOConfig
from mp_slam_ros.vision.types import Frame, Sequence

# Small images keep rendering and tracking fast; the geometry is the same as at 640x480.
W, H = 320, 240


def vo_for(seq: Sequence, **overrides) -> VisualOdometry:
    config = VOConfig(mode=seq.mode, T_base_camera=tuple(seq.T_base_camera.reshape(-1)), **overrides)
    return VisualOdometry(seq.camera, config, seq.right_camera, seq.T_left_right)


def run(vo: VisualOdometry, frames: list[Frame]):
    results = [vo.process(f) for f in frames]
    stamps = np.array([r.stamp_ns for r in results], dtype=np.int64)
    est = Trajectory(stamps, np.array([r.T_odom_base for r in results]))
    return results, est


@pytest.fixture(scope="module")
def stereo_room():
    seq = make_sequence("two_lap_room", "stereo", width=W, height=H, duration_s=6.0)
    return seq, list(seq.frames())


@pytest.fixture(scope="module")
def stereo_run(stereo_room):
    seq, frames = stereo_room
    vo = vo_for(seq)
    results, est = run(vo, frames)
    return vo, results, est


def test_stereo_vo_follows_the_synthetic_room(stereo_room, stereo_run) -> None:
    seq, frames = stereo_room
    vo, results, est = stereo_run
    gt = seq.ground_truth
    assert [r.status for r in results] == ["tracking"] * len(frames)
    ate = absolute_trajectory_error(est, gt)
    assert ate.num_pairs == len(frames)
    # The target is 1 % of the path length without loop closure; 6 s of the room is a
    # short stretch, so ask for a good deal better.
    assert ate.rmse < 0.005 * gt.path_length, (ate.rmse, gt.path_length)
    # Keyframes: at most the 10 Hz cap, and at least one every keyframe_max_interval.
    n_kf = sum(r.is_keyframe for r in results)
    assert 6.0 / vo.config.keyframe_max_interval <= n_kf <= 6.0 * 10 + 1
    stamps = np.array([r.stamp_ns for r in results if r.is_keyframe])
    assert np.diff(stamps).min() >= vo.config.keyframe_min_interval * 1e9 - 1
    assert vo.stats.fp16_fallbacks == 0
    # odom is where base_link started: the first pose is the identity.
    np.testing.assert_allclose(results[0].T_odom_base, np.eye(4), atol=1e-12)


def test_keyframes_carry_consistent_points_pixels_and_descriptors(stereo_run) -> None:
    vo, results, _ = stereo_run
    keyframes = [r.keyframe for r in results if r.keyframe is not None]
    cam = vo.camera
    for kf in keyframes[1:]:
        assert kf.num_features >= 50
        assert kf.descriptors.shape == (kf.num_features, 32) and kf.descriptors.any(axis=1).all()
        assert np.unique(kf.landmark_ids).size == kf.num_features
        X = kf.points.astype(np.float64)
        assert (X[:, 2] > 0).all()
        u = cam.fx * X[:, 0] / X[:, 2] + cam.cx
        v = cam.fy * X[:, 1] / X[:, 2] + cam.cy
        err = np.hypot(u - kf.pixels[:, 0], v - kf.pixels[:, 1])
        assert err.max() <= vo.config.ba_outlier_threshold + 1e-3
        assert np.median(err) < 1.0
        # The keyframe pose and the reported odometry of that frame are the same thing.
        result = next(r for r in results if r.keyframe is kf)
        np.testing.assert_array_equal(result.T_odom_base, kf.T_odom_base)
        np.testing.assert_allclose(kf.T_odom_camera, kf.T_odom_base @ kf.T_base_camera)


def test_rgbd_vo_follows_the_synthetic_room() -> None:
    seq = make_sequence("two_lap_room", "rgbd", width=W, height=H, duration_s=5.0)
    vo = vo_for(seq)
    results, est = run(vo, list(seq.frames()))
    assert all(r.status == "tracking" for r in results)
    ate = absolute_trajectory_error(est, seq.ground_truth)
    assert ate.rmse < 0.005 * seq.ground_truth.path_length, ate.rmse


def test_blank_and_blurred_frames_lose_tracking_and_reinitialise(stereo_room) -> None:
    """A covered lens (blank frames) then a blurred stretch: no crash, the loss is reported, the
    pose is bridged at constant velocity, and tracking restarts as a new segment."""
    seq, frames = stereo_room
    frames = [Frame(f.stamp_ns, f.image.copy(), right=f.right.copy()) for f in frames]
    for f in frames[40:48]:
        f.image[:] = 0
        f.right[:] = 0
    for f in frames[48:50]:
        f.image[:] = cv2.GaussianBlur(f.image, (0, 0), 12)
        f.right[:] = cv2.GaussianBlur(f.right, (0, 0), 12)
    vo = vo_for(seq)
    results, est = run(vo, frames)
    statuses = [r.status for r in results]
    assert statuses[:40] == ["tracking"] * 40
    assert statuses[40] == "lost" and all(s == "lost" for s in statuses[40:48])
    # It may restart on a blurred frame and lose track again when the sharp ones return (the
    # appearance jumps); either way it ends tracking, with one segment per restart.
    restarts = [i for i, s in enumerate(statuses) if s == "reinitialized"]
    assert restarts and restarts[0] >= 48 and restarts[-1] <= 53, statuses[40:56]
    assert all(s == "tracking" for s in statuses[restarts[-1] + 1 :])
    segments = [r.segment for r in results]
    assert segments[39] == 0 and segments[-1] == len(restarts) == vo.stats.reinitializations
    assert np.all(np.diff(segments) >= 0)
    assert vo.stats.tracking_losses == len(restarts) <= 2
    # The trajectory keeps going: the bridged guesses and the new segment stay near the truth.
    gt = seq.ground_truth
    ate = absolute_trajectory_error(est, gt)
    assert ate.max < 0.15, ate.max
    # Before the loss, nothing was corrupted: the first segment alone is as good as a clean run.
    first = absolute_trajectory_error(est.slice(0, 40), gt)
    assert first.rmse < 0.02


def test_mixed_precision_matches_fp64_on_the_room(stereo_room, stereo_run) -> None:
    seq, frames = stereo_room
    _, _, est_mixed = stereo_run
    _, est64 = run(vo_for(seq, precision="fp64"), frames)
    ate_mixed = absolute_trajectory_error(est_mixed, seq.ground_truth).rmse
    ate64 = absolute_trajectory_error(est64, seq.ground_truth).rmse
    # Closed-loop VO amplifies any perturbation of a window solve through the next frames'
    # feature decisions (measured on this stretch: fp32 3.6 -> 4.3 mm, mixed 3.9 mm, fp16 4.0 mm
    # against fp64's 3.6 mm), so one short run cannot resolve the issue's 5 % target; that is
    # measured over the whole two-lap sequence in benchmarks/bench_vo.py. Here: mixed is not
    # materially worse than fp64, and it never fell back.
    assert ate_mixed <= 1.25 * ate64, (ate_mixed, ate64)


def test_euroc_snippet_stereo_vo(shared_data: Path, tmp_path: Path) -> None:
    from mp_slam_ros.io.euroc import read_euroc

    seq = read_euroc(shared_data / "seq" / "euroc_V1_01_easy_micro")
    report = replay(seq, tmp_path, progress=False, write_bag=False, plots=False)
    assert report.frames == 95 and report.statuses["tracking"] == 95
    assert report.keyframes >= 9
    assert report.accuracy["ate_rmse_m"] < 0.05
    assert report.accuracy["ate_pairs"] == 95


def test_replay_writes_everything_and_survives_an_interrupt(tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    from mp_slam_ros.io.rosbag import write_sequence_bag

    seq = make_sequence("straight", "stereo", width=W, height=H, duration_s=2.0)
    bag = write_sequence_bag(tmp_path / "input_bag", seq, storage="mcap")
    from mp_slam_ros.replay import open_sequence

    from_bag = open_sequence(bag, mode="stereo")
    assert len(from_bag) == len(seq)
    out = tmp_path / "out"
    report = replay(from_bag, out, config=VOConfig(T_base_camera=tuple(seq.T_base_camera.reshape(-1))), progress=False)
    assert report.frames == len(seq) and not report.interrupted
    for name in ("odometry.tum", "keyframes.tum", "report.json", "trajectory.png", "ate_over_time.png"):
        assert (out / name).is_file(), name
    odo = read_tum(out / "odometry.tum")
    assert len(odo) == len(seq)
    data = json.loads((out / "report.json").read_text())
    assert data["frames"] == len(seq) and data["accuracy"]["ate_rmse_m"] < 0.02
    assert set(data["latency"]) >= {"track", "pnp", "ba", "total"}
    with AnyReader([out / "odometry_bag"]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/odom"] == len(seq) and counts["/tf"] == len(seq) and counts["/path"] >= 1

    # Ctrl-C after 10 frames: the report says so and the files hold exactly those frames.
    seen = []

    def interrupt(result) -> None:
        seen.append(result)
        if len(seen) == 10:
            raise KeyboardInterrupt

    out2 = tmp_path / "interrupted"
    report = replay(from_bag, out2, progress=False, on_result=interrupt)
    assert report.interrupted and report.frames == 10
    assert len(read_tum(out2 / "odometry.tum")) == 10
    assert json.loads((out2 / "report.json").read_text())["interrupted"] is True
    with AnyReader([out2 / "odometry_bag"]) as reader:
        assert {c.topic: c.msgcount for c in reader.connections}["/odom"] == 10


def test_replay_config_files(tmp_path: Path) -> None:
    ros_layout = tmp_path / "vo.yaml"
    ros_layout.write_text(
        "vo_node:\n  ros__parameters:\n    max_features: 150\n    left_image_topic: /left\n    publish_tf: false\n"
    )
    config, topics = load_replay_config(ros_layout, mode="rgbd")
    assert config.max_features == 150 and config.mode == "rgbd" and topics.left_image == "/left"
    flat = tmp_path / "flat.yaml"
    flat.write_text("precision: fp32\nwindow_size: 20\n")
    config, _ = load_replay_config(flat)
    assert config.precision == "fp32" and config.window_size == 20
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_featurs: 10\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown parameter 'max_featurs'"):
        load_replay_config(bad)


def test_mode_mismatch_and_bad_frames_are_clear_errors(stereo_room) -> None:
    seq, frames = stereo_room
    with pytest.raises(ValueError, match="mode"):
        replay(seq, "unused", config=VOConfig(mode="rgbd"), progress=False)
    vo = vo_for(seq)
    vo.process(frames[0])
    with pytest.raises(ValueError, match="stamps must increase"):
        vo.process(frames[0])
    with pytest.raises(ValueError, match="needs a right image"):
        vo.process(replace(frames[1], right=None))
    with pytest.raises(ValueError, match="image is 10x10"):
        vo.process(Frame(frames[2].stamp_ns, np.zeros((10, 10), np.uint8), right=np.zeros((10, 10), np.uint8)))
