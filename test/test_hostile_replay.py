"""Hostile input for replay, bags and the VO runner: each case ends in a clear error naming the
input and the field, or in a logged and counted recovery, and never damages earlier outputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mp_slam_ros.cli import main
from mp_slam_ros.io.ros_messages import camera_to_camera_info, numpy_to_image, rosbags_factory
from mp_slam_ros.io.rosbag import humble_typestore, write_sequence_bag
from mp_slam_ros.replay import load_replay_config, replay
from mp_slam_ros.ros.vo_core import VORunner
from mp_slam_ros.sim.sequence import make_sequence
from mp_slam_ros.vision.odometry import VOConfig
from mp_slam_ros.vision.types import Frame, Sequence

W, H = 160, 120
OUTPUTS = ("odometry.tum", "keyframes.tum", "report.json", "odometry_bag")


@pytest.fixture(scope="module")
def room() -> Sequence:
    # 21 frames of 160x120 along a straight line: initialises at the first frame.
    return make_sequence("straight", "stereo", width=W, height=H, rate_hz=10.0, duration_s=2.0)


@pytest.fixture(scope="module")
def earlier(room, tmp_path_factory) -> Path:
    """A good run's output directory, copied by each test that checks it survives."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    replay(room, out, progress=False, plots=False)
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def with_frames(seq: Sequence, change) -> Sequence:
    frames = list(seq.frames())
    return dataclasses.replace(seq, frames=lambda: iter([change(i, f) for i, f in enumerate(frames)]))


def cli(capsys, bag: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["replay", str(bag), "--out", str(out), "--no-progress", "--no-loop-closure", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


rng = np.random.default_rng(0)

# ---------------------------------------------------------------------------------------------
# Images and depth the odometry never initialises on: a clear non-zero exit, earlier outputs kept.
# ---------------------------------------------------------------------------------------------

BLANK_IMAGES = {
    "black": lambda i, f: dataclasses.replace(f, image=np.zeros_like(f.image), right=np.zeros_like(f.right)),
    "white": lambda i, f: dataclasses.replace(f, image=np.full_like(f.image, 255), right=np.full_like(f.right, 255)),
    "noise": lambda i, f: dataclasses.replace(f, image=rng.integers(0, 256, f.image.shape, np.uint8),
                                              right=rng.integers(0, 256, f.right.shape, np.uint8)),
}


@pytest.mark.parametrize("kind", sorted(BLANK_IMAGES))
def test_images_that_never_initialise_are_an_error_and_keep_earlier_outputs(kind, room, earlier, tmp_path, capsys):
    bag = write_sequence_bag(tmp_path / kind, with_frames(room, BLANK_IMAGES[kind]))
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    before = snapshot(out)
    code, _, err = cli(capsys, bag, out)
    assert code == 2
    assert "never initialised in 21 frames" in err and kind in err and "Traceback" not in err
    assert snapshot(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.parametrize("depth", [np.nan, 0.0, np.inf, -1.0])
def test_rgbd_depth_without_a_single_valid_value_is_reported_not_a_trajectory(depth, tmp_path, capsys):
    seq = make_sequence("straight", "rgbd", width=W, height=H, rate_hz=10.0, duration_s=0.5)
    bad = with_frames(seq, lambda i, f: dataclasses.replace(f, depth=np.full_like(f.depth, depth)))
    bag = write_sequence_bag(tmp_path / "bag", bad, depth_encoding="32FC1")
    code, stdout, err = cli(capsys, bag, tmp_path / "out", "--mode", "rgbd")
    assert code == 2 and "never initialised in 6 frames" in err
    assert not (tmp_path / "out" / "odometry.tum").exists()
    # Asked to accept it: exit 0, the report says so and the trajectory file holds no pose.
    code, stdout, err = cli(capsys, bag, tmp_path / "out", "--mode", "rgbd", "--allow-no-init")
    assert code == 0 and "NEVER INITIALISED" in stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["initialized"] is False and report["frames"] == 6 and report["keyframes"] == 0
    lines = (tmp_path / "out" / "odometry.tum").read_text().splitlines()
    assert all(line.startswith("#") for line in lines) and "never initialised" in lines[-1]


def test_frames_before_initialisation_are_counted_not_written(room, tmp_path):
    # Three black frames, then the room: the first three have no pose.
    black = with_frames(room, lambda i, f: BLANK_IMAGES["black"](i, f) if i < 3 else f)
    report = replay(black, tmp_path, progress=False, plots=False, write_bag=False)
    assert report.frames == 21 and report.frames_before_init == 3 and report.initialized
    assert any("3 frame(s) before the visual odometry initialised" in w for w in report.warnings)
    poses = [ln for ln in (tmp_path / "odometry.tum").read_text().splitlines() if not ln.startswith("#")]
    assert len(poses) == 18


# ---------------------------------------------------------------------------------------------
# Calibration: implausible or non-finite values are errors naming bag, topic and field.
# ---------------------------------------------------------------------------------------------


def _bad_baseline(seq: Sequence) -> Sequence:
    T = seq.T_left_right.copy()
    T[0, 3] = 1e9
    return dataclasses.replace(seq, T_left_right=T)


CALIBRATION = {
    "baseline 1e9 m": (_bad_baseline, "/cam1/camera_info", "field 'p': baseline 1e+09 m is outside"),
    "NaN cx": (lambda s: dataclasses.replace(s, camera=dataclasses.replace(s.camera, cx=float("nan"))),
               "/cam0/camera_info", "field 'k': k[2] is nan"),
    "NaN distortion": (lambda s: dataclasses.replace(
        s, right_camera=dataclasses.replace(s.right_camera, distortion=(0.1, float("nan"), 0.0, 0.0, 0.0))),
        "/cam1/camera_info", "field 'd': d[1] is nan"),
    "inf fx": (lambda s: dataclasses.replace(s, camera=dataclasses.replace(s.camera, fx=float("inf"))),
               "/cam0/camera_info", "field 'k': k[0] is inf"),
}


@pytest.mark.parametrize("case", sorted(CALIBRATION))
def test_bad_calibration_names_bag_topic_and_field(case, room, earlier, tmp_path, capsys):
    change, topic, words = CALIBRATION[case]
    short = dataclasses.replace(room, num_frames=3, frames=lambda: iter(list(room.frames())[:3]))
    bag = write_sequence_bag(tmp_path / "calib", change(short))
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    before = snapshot(out)
    code, _, err = cli(capsys, bag, out)
    assert code == 2 and "Traceback" not in err
    assert f"{bag}: topic '{topic}'" in err and words in err
    assert snapshot(out) == before


def test_image_size_change_mid_bag_names_the_message(room, tmp_path, capsys):
    bad = with_frames(room, lambda i, f: dataclasses.replace(f, image=np.zeros((60, 80), np.uint8))
                      if i == 2 else f)
    bag = write_sequence_bag(tmp_path / "resized", bad)
    code, _, err = cli(capsys, bag, tmp_path / "out")
    assert code == 2
    assert f"{bag}: topic '/cam0/image_raw': message 3 (stamp" in err and "image is 80x60" in err
    assert not (tmp_path / "out" / "odometry.tum").exists()


# ---------------------------------------------------------------------------------------------
# Stamps: no pair is an error; repeated or unpaired stamps are dropped, logged and counted.
# ---------------------------------------------------------------------------------------------


def _write_stereo(path: Path, seq: Sequence, left_stamps: list[int], right_stamps: list[int]) -> Path:
    """A stereo bag with the room's images and calibration but the given image stamps."""
    from rosbags.rosbag2 import Writer

    factory = rosbags_factory(humble_typestore())
    ts = factory.typestore
    frames = list(seq.frames())
    baseline = float(seq.T_left_right[0, 3])
    with Writer(path, version=8) as w:
        conns = {t: w.add_connection(t, m, typestore=ts) for t, m in (
            ("/cam0/image_raw", "sensor_msgs/msg/Image"), ("/cam1/image_raw", "sensor_msgs/msg/Image"),
            ("/cam0/camera_info", "sensor_msgs/msg/CameraInfo"), ("/cam1/camera_info", "sensor_msgs/msg/CameraInfo"))}

        def put(topic, msgtype, msg, s):
            w.write(conns[topic], s, ts.serialize_cdr(msg, msgtype))

        s0 = left_stamps[0]
        put("/cam0/camera_info", "sensor_msgs/msg/CameraInfo", camera_to_camera_info(factory, seq.camera, s0, "l"), s0)
        put("/cam1/camera_info", "sensor_msgs/msg/CameraInfo",
            camera_to_camera_info(factory, seq.right_camera, s0, "r", baseline), s0)
        for f, sl, sr in zip(frames, left_stamps, right_stamps, strict=False):
            put("/cam0/image_raw", "sensor_msgs/msg/Image", numpy_to_image(factory, f.image, "mono8", sl, "l"), sl)
            put("/cam1/image_raw", "sensor_msgs/msg/Image", numpy_to_image(factory, f.right, "mono8", sr, "r"), sr)
    return path


def test_stamps_that_never_match_are_an_error(room, tmp_path, capsys):
    left = [room_stamp(room, i) for i in range(5)]
    right = [s + 40_000_000 for s in left]  # 40 ms off: beyond the 10 ms tolerance
    bag = _write_stereo(tmp_path / "apart", room, left, right)
    code, _, err = cli(capsys, bag, tmp_path / "out")
    assert code == 2
    assert f"{bag}: topic '/cam0/image_raw': 0 image pairs" in err and "40 ms apart" in err


@pytest.mark.parametrize("pattern", ["duplicates", "all equal"])
def test_repeated_stamps_are_dropped_with_a_warning_and_a_count(pattern, room, tmp_path, capsys, caplog):
    base = [room_stamp(room, i) for i in range(6)]
    stamps = [base[0], base[0], base[1], base[1], base[2], base[3]] if pattern == "duplicates" else [base[0]] * 6
    bag = _write_stereo(tmp_path / "dup", room, stamps, stamps)
    dropped = 6 - len(set(stamps))
    with caplog.at_level(logging.WARNING):
        code, stdout, _ = cli(capsys, bag, tmp_path / "out", "--allow-no-init")
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["input"]["duplicate_stamps_a"] == report["input"]["duplicate_stamps_b"] == dropped
    assert report["frames"] == len(set(stamps))
    message = f"{dropped} image(s) dropped: their header.stamp repeats an earlier image's"
    assert message in caplog.text and any(message in w for w in report["warnings"]) and message in stdout


def test_unpaired_images_are_counted(room, tmp_path, caplog, capsys):
    left = [room_stamp(room, i) for i in range(6)]
    right = [*left[:4], left[4] + 30_000_000, left[5] + 30_000_000]  # the last two have no partner
    bag = _write_stereo(tmp_path / "unpaired", room, left, right)
    with caplog.at_level(logging.WARNING):
        assert cli(capsys, bag, tmp_path / "out")[0] == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["frames"] == 4 and report["input"]["unpaired_a"] == report["input"]["unpaired_b"] == 2
    assert "2 image(s) dropped: no partner image within the sync tolerance 10 ms" in caplog.text


def room_stamp(seq: Sequence, i: int) -> int:
    return int(next(iter(seq.frames())).stamp_ns) + i * 100_000_000  # 10 Hz


# ---------------------------------------------------------------------------------------------
# A run that fails mid-way keeps the earlier outputs byte for byte; bad arguments are refused.
# ---------------------------------------------------------------------------------------------


def test_failure_mid_run_leaves_earlier_outputs_byte_identical(room, earlier, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)
    before = snapshot(out)

    def frames():
        for i, f in enumerate(room.frames()):
            if i == 5:
                raise ValueError("bag.db3: topic '/cam0/image_raw': cannot read message 6")
            yield f

    with pytest.raises(ValueError, match="cannot read message 6"):
        replay(dataclasses.replace(room, frames=frames), out, progress=False, plots=False)
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in earlier.iterdir())


def test_interrupted_run_replaces_outputs_and_says_so(room, earlier, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(earlier, out)

    def stop(result):
        if result.stamp_ns == room_stamp(room, 4):
            raise KeyboardInterrupt

    report = replay(room, out, progress=False, plots=False, on_result=stop)
    assert report.interrupted and json.loads((out / "report.json").read_text())["interrupted"] is True
    assert len([ln for ln in (out / "odometry.tum").read_text().splitlines() if not ln.startswith("#")]) == 5


@pytest.mark.parametrize("value", ["-1", "0", "many"])
def test_max_frames_must_be_positive(value, room, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["replay", str(tmp_path), "--out", str(tmp_path / "out"), "--max-frames", value])
    assert exc.value.code == 2 and "--max-frames" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_frames must be a positive integer"):
        replay(room, tmp_path / "out", max_frames=int(value) if value != "many" else value, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------------------------------------
# VO config: wrong types and ranges name the file and the key.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "words"), [
    ("max_features: lots", "max_features: expected an integer, got str 'lots'"),
    ("window_size: -3", "window_size: must not be negative, got -3"),
    ("window_size: 2", "window_size: must exceed window_fixed_keyframes (2), got 2"),
    ("keyframe_parallax: .nan", "keyframe_parallax: must be finite and not negative, got nan"),
    ("min_depth: yes", "min_depth: expected a number, got bool True"),
    ("precision: 16", "precision: expected a string, got int 16"),
])
def test_vo_config_values_name_file_and_key(text, words, tmp_path):
    path = tmp_path / "vo.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError) as exc:
        load_replay_config(path)
    assert str(exc.value) == f"{path}: {words}"


# ---------------------------------------------------------------------------------------------
# VORunner: missing messages and sets that are not one instant are rejected and counted.
# ---------------------------------------------------------------------------------------------


def _messages(seq: Sequence, frame: Frame, right_delay_ns: int = 0) -> list:
    factory = rosbags_factory(humble_typestore())
    s = int(frame.stamp_ns)
    return [
        numpy_to_image(factory, frame.image, "mono8", s, "l"),
        numpy_to_image(factory, frame.right, "mono8", s + right_delay_ns, "r"),
        camera_to_camera_info(factory, seq.camera, s, "l"),
        camera_to_camera_info(factory, seq.right_camera, s, "r", float(seq.T_left_right[0, 3])),
    ]


@pytest.mark.parametrize(("part", "name"), [(0, "left_image_topic"), (1, "right_image_topic"),
                                            (3, "right_info_topic")])
def test_vo_runner_rejects_a_set_with_a_missing_message(part, name, room):
    runner = VORunner(VOConfig(mode="stereo"), rectified=True)
    msgs = _messages(room, next(iter(room.frames())))
    msgs[part] = None
    with pytest.raises(ValueError, match=f"^{name}: message rejected: no message"):
        runner.step(msgs)
    assert runner.rejected == 1 and runner.vo is None


def test_vo_runner_rejects_a_set_beyond_sync_slop(room):
    frames = list(room.frames())[:2]
    runner = VORunner(VOConfig(mode="stereo"), rectified=True)
    with pytest.raises(ValueError, match=r"^right_image_topic: stamp \d+ ns is \+0.2000 s .* beyond sync_slop "
                                         r"0.005 s: set rejected"):
        runner.step(_messages(room, frames[0], right_delay_ns=200_000_000))
    assert runner.rejected == 1 and runner.vo is None
    # A wider slop accepts it, and the next good set runs as usual.
    assert VORunner(VOConfig(mode="stereo"), rectified=True, sync_slop=0.5).step(
        _messages(room, frames[0], right_delay_ns=200_000_000)) is not None
    assert runner.step(_messages(room, frames[1])).result.status == "tracking"


@pytest.mark.parametrize(("field", "value", "words"), [
    ("fx", float("inf"), "field 'k': k[0] is inf"),
    ("cx", float("nan"), "field 'k': k[2] is nan"),
])
def test_vo_runner_names_a_non_finite_calibration(field, value, words, room):
    seq = dataclasses.replace(room, camera=dataclasses.replace(room.camera, **{field: value}))
    runner = VORunner(VOConfig(mode="stereo"), rectified=False)
    with pytest.raises(ValueError) as exc:
        runner.step(_messages(seq, next(iter(room.frames()))))
    assert str(exc.value).startswith("left_info_topic: ") and words in str(exc.value) and runner.rejected == 1


def test_vo_runner_rejects_an_implausible_baseline(room):
    runner = VORunner(VOConfig(mode="stereo"), rectified=True)
    msgs = _messages(_bad_baseline(room), next(iter(room.frames())))
    with pytest.raises(ValueError, match=r"^right_info_topic: field 'p': baseline 1e\+09 m is outside"):
        runner.step(msgs)
    assert runner.rejected == 1


def test_a_duck_typed_message_without_header_is_rejected():
    runner = VORunner(VOConfig(mode="stereo"), rectified=True)
    with pytest.raises(ValueError, match=r"^left_image_topic: message rejected"):
        runner.step([SimpleNamespace(), None, None, None])
    assert runner.rejected == 1
