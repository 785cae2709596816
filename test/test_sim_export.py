"""Synthetic sequences written as EuRoC folders, rosbag2 (sqlite3, mcap) and TUM read back exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mp_slam_ros.cli import main
from mp_slam_ros.io.trajectory import read_tum
from mp_slam_ros.replay import open_sequence
from mp_slam_ros.sim.export import export_sequence
from mp_slam_ros.sim.sequence import make_sequence


@pytest.mark.parametrize("mode", ["stereo", "rgbd"])
def test_every_format_reads_back_the_same_frames(tmp_path: Path, mode: str) -> None:
    seq = make_sequence("straight", mode, width=160, height=120, duration_s=0.4)
    written = export_sequence(seq, tmp_path)
    assert set(written) == {"euroc", "sqlite3", "mcap", "tum"}
    frames = list(seq.frames())
    for fmt in ("euroc", "sqlite3", "mcap"):
        back = open_sequence(written[fmt], mode=mode)
        assert back.mode == mode and len(back) == len(seq)
        assert back.camera.intrinsics == pytest.approx(seq.camera.intrinsics)
        got = list(back.frames())
        assert [f.stamp_ns for f in got] == [f.stamp_ns for f in frames]
        for a, b in zip(frames, got, strict=True):
            assert np.array_equal(a.image, b.image)
            if mode == "stereo":
                assert np.array_equal(a.right, b.right)
            else:
                assert np.array_equal(a.depth, b.depth)  # the simulator already rounds depth to mm
        np.testing.assert_allclose(back.ground_truth.poses, seq.ground_truth.poses, atol=1e-9)
        # The extrinsic travels too (EuRoC T_BS, the bags' /tf_static), so ground truth stays base_link's.
        np.testing.assert_allclose(back.T_base_camera, seq.T_base_camera, atol=1e-9)
        if fmt != "euroc":
            assert back.camera_frame.endswith("_optical_frame") and back.T_base_camera_source.startswith("/tf_static")
        if mode == "stereo":
            np.testing.assert_allclose(back.T_left_right, seq.T_left_right, atol=1e-9)
    gt = read_tum(written["tum"])
    assert np.array_equal(gt.stamps_ns, seq.ground_truth.stamps_ns)
    np.testing.assert_allclose(gt.poses, seq.ground_truth.poses, atol=1e-8)


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    seq = make_sequence("straight", "stereo", width=160, height=120, duration_s=0.1)
    with pytest.raises(ValueError, match="unknown export format"):
        export_sequence(seq, tmp_path, formats=["euroc", "rosbag1"])


def test_synth_and_replay_from_the_command_line(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--trajectory", "straight", "--duration", "1.5", "--width", "320", "--height", "240",
                 "--formats", "sqlite3", "--out", str(tmp_path), "--no-progress"]) == 0  # fmt: skip
    bag = tmp_path / "room_straight_stereo_sqlite3"
    assert bag.is_dir()
    out = tmp_path / "replay"
    assert main(["replay", str(bag), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "ATE (SE(3)-aligned)" in text and (out / "report.json").is_file()
    # A topic the bag does not have: a plain error naming it, exit code 2, no traceback.
    assert main(["replay", str(bag), "--out", str(out), "--topic", "left_image=/nope", "--no-progress"]) == 2
    assert "/nope" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
