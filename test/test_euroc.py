"""EuRoC ASL folders: the shared V1_01_easy snippet, write/read round trips, error messages."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mp_slam_ros.io.errors import InputFormatError
from mp_slam_ros.io.euroc import find_groundtruth, read_camera_yaml, read_euroc, write_euroc
from mp_slam_ros.io.trajectory import Trajectory, associate
from mp_slam_ros.solver.lie import so3_exp
from mp_slam_ros.vision.types import Frame, PinholeCamera, Sequence

T0 = 1_403_715_273_262_142_976


def _pose(rotvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = so3_exp(np.asarray(rotvec, dtype=float)[None])[0]
    T[:3, 3] = t
    return T


# ---------------------------------------------------------------------- shared snippet
@pytest.fixture(scope="module")
def micro(shared_data):
    return read_euroc(shared_data / "seq" / "euroc_V1_01_easy_micro")


def test_micro_calibration(micro, shared_data):
    seq = micro
    assert seq.mode == "stereo" and seq.num_frames == len(seq) == 95
    assert seq.name == "euroc_V1_01_easy_micro"
    cam = seq.camera
    assert (cam.width, cam.height) == (752, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (458.654, 457.296, 367.215, 248.375)
    assert cam.distortion_model == "plumb_bob"
    assert cam.distortion == (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05)
    right = seq.right_camera
    assert (right.fx, right.fy, right.cx, right.cy) == (457.587, 456.134, 379.999, 255.238)
    assert right.distortion == (-0.28368365, 0.07451284, -0.00010473, -3.55590700e-05)
    _, T_BS0 = read_camera_yaml(shared_data / "seq" / "euroc_V1_01_easy_micro" / "mav0" / "cam0" / "sensor.yaml")
    np.testing.assert_array_equal(seq.T_base_camera, T_BS0)
    assert seq.T_base_camera[0, 3] == -0.0216401454975
    baseline = seq.T_left_right[:3, 3]
    assert np.linalg.norm(baseline) == pytest.approx(0.110, abs=1e-3)
    assert baseline[0] == pytest.approx(0.110, abs=1e-3)  # right camera along +x of the left one
    np.testing.assert_allclose(seq.T_left_right[:3, :3].T @ seq.T_left_right[:3, :3], np.eye(3), atol=1e-8)


def test_micro_frames_and_ground_truth(micro, shared_data):
    seq = micro
    stamps = []
    for k, frame in enumerate(seq):
        stamps.append(frame.stamp_ns)
        if k < 2:  # decode only a couple of images; the rest are checked by count
            assert frame.image.shape == frame.right.shape == (480, 752)
            assert frame.image.dtype == np.uint8 and frame.depth is None
            assert 20 < frame.image.mean() < 235
    assert len(stamps) == 95 and stamps[0] == T0 and stamps[-1] == 1_403_715_277_962_142_976
    assert np.all(np.diff(stamps) == pytest.approx(50_000_000, abs=1_000))
    # cam1/data.csv lists 4 more stamps than cam0; only the common ones are frames.
    gt = seq.ground_truth
    assert isinstance(gt, Trajectory) and len(gt) == 2895
    assert find_groundtruth(shared_data / "seq" / "euroc_V1_01_easy_micro").name == "V1_01_easy.csv"
    ia, ib = associate(np.asarray(stamps), gt, max_dt_ns=256)
    assert ia.size == 95
    assert np.abs(np.asarray(stamps)[ia] - gt.stamps_ns[ib]).max() <= 256
    # GT is the body pose: first row of the openvins csv
    np.testing.assert_allclose(gt.positions[0], [0.878895, 2.1834, 0.948427])
    seq2 = read_euroc(shared_data / "seq" / "euroc_V1_01_easy_micro" / "mav0", ground_truth=False)
    assert seq2.ground_truth is None and seq2.num_frames == 95


# ---------------------------------------------------------------------- round trips
def _camera() -> PinholeCamera:
    return PinholeCamera(32, 24, 30.5, 31.25, 15.75, 11.5, (-0.28, 0.074, 1e-05, -3.5e-05), "plumb_bob")


def _gt(n: int) -> Trajectory:
    poses = np.stack([_pose([0.0, 0.0, 0.1 * k], [0.1 * k, -0.2 * k, 1.0]) for k in range(n)])
    return Trajectory(T0 + np.arange(n, dtype=np.int64) * 50_000_000 + 7, poses)


def _stereo_sequence(n: int = 4) -> Sequence:
    rng = np.random.default_rng(0)
    frames = [
        Frame(
            T0 + k * 50_000_000,
            rng.integers(0, 256, (24, 32), dtype=np.uint8),
            right=rng.integers(0, 256, (24, 32), dtype=np.uint8),
        )
        for k in range(n)
    ]
    right = PinholeCamera(32, 24, 30.0, 30.0, 16.0, 12.0, (), "plumb_bob")
    return Sequence(
        mode="stereo",
        camera=_camera(),
        frames=lambda: iter(frames),
        num_frames=n,
        right_camera=right,
        T_left_right=_pose([0.01, -0.02, 0.005], [0.11, 0.001, -0.002]),
        T_base_camera=_pose([1.2, -0.3, 0.4], [-0.02, -0.06, 0.01]),
        ground_truth=_gt(n),
        name="syn",
    )


def test_stereo_round_trip(tmp_path):
    seq = _stereo_sequence()
    out = write_euroc(tmp_path / "syn", seq)
    assert out == tmp_path / "syn"
    assert (out / "mav0" / "cam0" / "sensor.yaml").read_text().startswith("%YAML:1.0\n")
    back = read_euroc(out)
    assert back.mode == "stereo" and back.num_frames == 4 and back.name == "syn"
    assert back.camera == seq.camera and back.right_camera == seq.right_camera
    np.testing.assert_array_equal(back.T_base_camera, seq.T_base_camera)
    np.testing.assert_allclose(back.T_left_right, seq.T_left_right, atol=1e-14)
    for a, b in zip(seq, back, strict=True):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.right, b.right)
    np.testing.assert_array_equal(back.ground_truth.stamps_ns, seq.ground_truth.stamps_ns)
    np.testing.assert_allclose(back.ground_truth.poses, seq.ground_truth.poses, atol=1e-14)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp folder renamed away
    # frames are re-iterable
    assert sum(1 for _ in back) == 4


def test_rgbd_round_trip_exact_millimetres(tmp_path):
    rng = np.random.default_rng(1)
    mm = rng.integers(0, 65536, (3, 24, 32)).astype(np.uint16)
    depth = (mm / 1000.0).astype(np.float32)
    depth[0, 0, 0] = np.nan  # no depth -> 0
    frames = [Frame(T0 + k, rng.integers(0, 256, (24, 32), dtype=np.uint8), depth=depth[k]) for k in range(3)]
    seq = Sequence(
        mode="rgbd",
        camera=_camera(),
        frames=lambda: iter(frames),
        num_frames=3,
        T_base_camera=_pose([0.1, 0.2, 0.3], [0.0, 0.0, 0.1]),
    )
    out = write_euroc(tmp_path / "rgbd", seq, progress=True)
    assert not (out / "mav0" / "cam1").exists()
    assert not (out / "mav0" / "state_groundtruth_estimate0").exists()
    raw = cv2.imread(str(out / "mav0" / "depth0" / "data" / f"{T0 + 1}.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, mm[1])
    for mode in ("rgbd", None):
        back = read_euroc(out, mode=mode)
        assert back.mode == "rgbd" and back.ground_truth is None and back.right_camera is None
        got = list(back)
        assert [f.stamp_ns for f in got] == [T0, T0 + 1, T0 + 2]
        for k, f in enumerate(got):
            np.testing.assert_array_equal(f.image, frames[k].image)
            assert f.depth.dtype == np.float32 and f.right is None
            expect = depth[k].copy()
            expect[np.isnan(expect)] = 0.0
            np.testing.assert_array_equal(f.depth, expect)
            expect_mm = mm[k].copy()
            expect_mm[np.isnan(depth[k])] = 0
            np.testing.assert_array_equal(np.rint(f.depth.astype(np.float64) * 1000).astype(np.uint16), expect_mm)
    with pytest.raises(FileNotFoundError, match="cam1"):
        read_euroc(out, mode="stereo")


def test_write_refuses_to_overwrite(tmp_path):
    seq = _stereo_sequence(2)
    write_euroc(tmp_path / "s", seq)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_euroc(tmp_path / "s", seq)
    (tmp_path / "s" / "marker").write_text("old")
    write_euroc(tmp_path / "s", _stereo_sequence(3), overwrite=True)
    assert not (tmp_path / "s" / "marker").exists()
    assert read_euroc(tmp_path / "s").num_frames == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


# ---------------------------------------------------------------------- errors
def test_broken_csv_line(tmp_path):
    out = write_euroc(tmp_path / "s", _stereo_sequence(3))
    csv = out / "mav0" / "cam1" / "data.csv"
    lines = csv.read_text().splitlines()
    lines[2] = "14037152733x2142976," + lines[2].split(",")[1]
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError) as err:
        read_euroc(out)
    assert err.value.path == str(csv) and err.value.line == 3 and err.value.field == "timestamp"
    assert f"{csv}:3: field 'timestamp'" in str(err.value)
    lines[2] = lines[2].split(",")[0].replace("x", "0")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError) as err:
        read_euroc(out)
    assert (err.value.line, err.value.field) == (3, "filename")


def test_missing_image_and_files(tmp_path):
    out = write_euroc(tmp_path / "s", _stereo_sequence(3))
    img = out / "mav0" / "cam0" / "data" / f"{T0 + 50_000_000}.png"
    img.unlink()
    with pytest.raises(FileNotFoundError) as err:
        read_euroc(out)
    assert err.value.filename == str(img) and str(img) in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_euroc(tmp_path / "nowhere")
    (out / "mav0" / "cam1" / "sensor.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=r"cam1/sensor\.yaml"):
        read_euroc(out, ground_truth=False)
    other = write_euroc(tmp_path / "t", _stereo_sequence(2))
    with pytest.raises(FileNotFoundError, match=r"gt\.csv"):
        read_euroc(other, ground_truth=tmp_path / "gt.csv")
    (other / "mav0" / "cam0" / "data.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"cam0/data\.csv"):
        read_euroc(other)


def test_bad_sensor_yaml(tmp_path):
    out = write_euroc(tmp_path / "s", _stereo_sequence(2))
    yml = out / "mav0" / "cam0" / "sensor.yaml"
    text = yml.read_text()
    yml.write_text(text.replace("intrinsics: [", "intrinsics: [1.0, "))
    with pytest.raises(InputFormatError) as err:
        read_euroc(out)
    assert err.value.path == str(yml) and err.value.field == "intrinsics"
    yml.write_text(text.replace("radial-tangential", "fov"))
    with pytest.raises(InputFormatError, match="distortion_model"):
        read_euroc(out)
