"""Trajectory container, TUM / EuRoC / KITTI readers and writers, stamp association."""

from __future__ import annotations

import numpy as np
import pytest

from mp_slam_ros.io.errors import InputFormatError
from mp_slam_ros.io.trajectory import (
    Trajectory,
    associate,
    read_euroc_groundtruth,
    read_kitti,
    read_trajectory,
    read_tum,
    write_euroc_groundtruth,
    write_kitti,
    write_tum,
)
from mp_slam_ros.solver.lie import so3_exp


def _random_traj(n: int, seed: int = 0, t0: int = 1_403_715_273_262_142_976) -> Trajectory:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = so3_exp(rng.normal(size=(n, 3)))
    poses[:, :3, 3] = rng.normal(scale=5.0, size=(n, 3))
    stamps = t0 + np.cumsum(rng.integers(1, 50_000_000, size=n))
    return Trajectory(stamps, poses)


def _line_traj(n: int, step_ns: int = 100_000_000) -> Trajectory:
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n, dtype=float)
    return Trajectory(np.arange(n, dtype=np.int64) * step_ns, poses)


# ---------------------------------------------------------------------- container
def test_trajectory_validation():
    with pytest.raises(ValueError, match="strictly increasing"):
        Trajectory(np.array([0, 5, 5]), np.tile(np.eye(4), (3, 1, 1)))
    with pytest.raises(ValueError, match="shape"):
        Trajectory(np.array([0, 1]), np.tile(np.eye(4), (3, 1, 1)))
    bad = np.tile(np.eye(4), (2, 1, 1))
    bad[1, :3, :3] *= 1.01
    with pytest.raises(ValueError, match="pose 1 is not a rigid"):
        Trajectory(np.array([0, 1]), bad)
    reflection = np.tile(np.eye(4), (1, 1, 1))
    reflection[0, 2, 2] = -1.0
    with pytest.raises(ValueError, match="rigid"):
        Trajectory(np.array([0]), reflection)
    with pytest.raises(ValueError, match="integer"):
        Trajectory(np.array([0.5]), np.eye(4)[None])
    t = _line_traj(3)
    assert t.stamps_ns.dtype == np.int64 and t.poses.dtype == np.float64
    with pytest.raises(ValueError):
        t.poses[0, 0, 3] = 1.0  # read-only


def test_trajectory_properties_and_views():
    t = _line_traj(11)
    assert len(t) == 11
    np.testing.assert_array_equal(t.positions[:, 0], np.arange(11.0))
    np.testing.assert_allclose(t.stamps_s, np.arange(11) * 0.1)
    assert t.path_length == pytest.approx(10.0)
    np.testing.assert_allclose(t.distances, np.arange(11.0))
    assert t.duration_s == pytest.approx(1.0)
    s = t.slice(2, 8, 2)
    np.testing.assert_array_equal(s.stamps_ns, t.stamps_ns[2:8:2])
    assert len(t.select(np.array([0, 5, 10]))) == 3
    b = t.between(200_000_000, 500_000_000)
    np.testing.assert_array_equal(b.positions[:, 0], [2.0, 3.0, 4.0, 5.0])
    with pytest.raises(ValueError):
        t.slice(0, 5, -1)
    assert len(Trajectory.empty()) == 0 and Trajectory.empty().path_length == 0.0


def test_transformed_applies_left_and_right():
    t = _random_traj(5)
    A = np.eye(4)
    A[:3, :3] = so3_exp(np.array([[0.1, -0.2, 0.3]]))[0]
    A[:3, 3] = [1.0, 2.0, 3.0]
    B = np.eye(4)
    B[:3, :3] = so3_exp(np.array([[-0.4, 0.0, 0.2]]))[0]
    B[:3, 3] = [0.1, 0.0, -0.05]
    u = t.transformed(T_left=A, T_right=B)
    for k in range(len(t)):
        np.testing.assert_allclose(u.poses[k], A @ t.poses[k] @ B, atol=1e-14)
    np.testing.assert_array_equal(u.stamps_ns, t.stamps_ns)
    back = t.transformed(T_right=B).transformed(T_right=np.linalg.inv(B))
    np.testing.assert_allclose(back.poses, t.poses, atol=1e-13)
    with pytest.raises(ValueError, match="4x4"):
        t.transformed(T_left=np.eye(3))


def test_from_positions_quaternions_is_xyzw():
    s = np.sqrt(0.5)
    t = Trajectory.from_positions_quaternions([10, 20], [[1, 2, 3], [0, 0, 0]], [[0, 0, s, s], [0, 0, 0, 2.0]])
    # 90 degrees about z: x axis -> y axis
    np.testing.assert_allclose(t.poses[0, :3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(t.poses[1, :3, :3], np.eye(3), atol=1e-15)  # normalised
    np.testing.assert_allclose(t.quaternions_xyzw[0], [0, 0, s, s], atol=1e-15)
    with pytest.raises(ValueError, match="zero"):
        Trajectory.from_positions_quaternions([0], [[0, 0, 0]], [[0, 0, 0, 0]])


# ---------------------------------------------------------------------- TUM
def test_tum_round_trip_keeps_ns_stamps(tmp_path):
    t = _random_traj(50, seed=3)
    path = tmp_path / "t.txt"
    write_tum(path, t, header="estimate\nsecond line")
    text = path.read_text()
    assert text.startswith("# estimate\n# second line\n# timestamp")
    u = read_tum(path)
    np.testing.assert_array_equal(u.stamps_ns, t.stamps_ns)
    np.testing.assert_allclose(u.poses, t.poses, atol=1e-14)
    assert read_trajectory(path).stamps_ns[0] == t.stamps_ns[0]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_tum_parsing_details(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(
        "# comment\n\n"
        "1311868164.363181 1 2 3 0 0 0 1\n"
        "1.311868164400e+09 1 2 3 0 0 0 1\n"
        "1311868164.5 4 5 6 0 0 0 1\n"
        "1311868164.5 7 8 9 0 0 0 1\n"
    )
    t = read_tum(path)
    np.testing.assert_array_equal(t.stamps_ns, [1311868164363181000, 1311868164400000000, 1311868164500000000])
    np.testing.assert_array_equal(t.positions[-1], [7, 8, 9])  # the last row of a repeated stamp wins
    np.testing.assert_array_equal(read_tum(path, duplicates="first").positions[-1], [4, 5, 6])
    with pytest.raises(InputFormatError) as err:
        read_tum(path, duplicates="error")
    assert err.value.line == 6 and err.value.field == "timestamp"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("1.0 1 2 3 0 0 0", "qw"),
        ("1.0 1 2 x 0 0 0 1", "tz"),
        ("abc 1 2 3 0 0 0 1", "timestamp"),
        ("1.0 1 2 3 0 0 0 0", "qx"),
        ("1.0 1 2 nan 0 0 0 1", "tz"),
    ],
)
def test_tum_bad_lines(tmp_path, line, field):
    path = tmp_path / "bad.txt"
    path.write_text("# header\n0.5 0 0 0 0 0 0 1\n" + line + "\n")
    with pytest.raises(InputFormatError) as err:
        read_tum(path)
    assert err.value.path == str(path)
    assert err.value.line == 3
    assert err.value.field == field
    assert f"{path}:3" in str(err.value)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        read_tum(tmp_path / "nope.txt")


# ---------------------------------------------------------------------- EuRoC csv and KITTI
def test_euroc_groundtruth_round_trip_and_quaternion_order(tmp_path):
    path = tmp_path / "gt.csv"
    s = np.sqrt(0.5)
    # q = (w, x, y, z) = (s, 0, 0, s): 90 deg about z; extra columns (v, biases) are ignored
    path.write_text(
        "#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z [], v...\n"
        f"1403715273262142976, 1, 2, 3, {s}, 0, 0, {s}, 9, 9, 9\n"
    )
    t = read_euroc_groundtruth(path)
    assert t.stamps_ns[0] == 1403715273262142976
    np.testing.assert_allclose(t.poses[0, :3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    u = _random_traj(20, seed=5)
    write_euroc_groundtruth(tmp_path / "w.csv", u)
    v = read_euroc_groundtruth(tmp_path / "w.csv")
    np.testing.assert_array_equal(v.stamps_ns, u.stamps_ns)
    np.testing.assert_allclose(v.poses, u.poses, atol=1e-14)
    assert read_trajectory(tmp_path / "w.csv").stamps_ns[-1] == u.stamps_ns[-1]
    path.write_text("#header\n1,0,0,0,1,0,0,0\n2,0,0,0,1,0,zero,0\n")
    with pytest.raises(InputFormatError) as err:
        read_euroc_groundtruth(path)
    assert (err.value.line, err.value.field) == (3, "q_y")
    path.write_text("1,0,0,0,1,0\n")
    with pytest.raises(InputFormatError) as err:
        read_euroc_groundtruth(path)
    assert (err.value.line, err.value.field) == (1, "q_y")


def test_kitti_round_trip_and_errors(tmp_path):
    t = _random_traj(10, seed=7, t0=0)
    write_kitti(tmp_path / "p.txt", t, tmp_path / "times.txt")
    u = read_kitti(tmp_path / "p.txt", tmp_path / "times.txt")
    np.testing.assert_array_equal(u.stamps_ns, t.stamps_ns)
    np.testing.assert_allclose(u.poses, t.poses, atol=1e-14)
    np.testing.assert_array_equal(read_kitti(tmp_path / "p.txt").stamps_ns, np.arange(10) * 1_000_000_000)
    assert len(read_trajectory(tmp_path / "p.txt")) == 10
    (tmp_path / "short.txt").write_text("0.0\n0.1\n")
    with pytest.raises(InputFormatError, match="2 stamps for 10 poses"):
        read_kitti(tmp_path / "p.txt", tmp_path / "short.txt")
    lines = (tmp_path / "p.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]
    (tmp_path / "bad.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError) as err:
        read_kitti(tmp_path / "bad.txt")
    assert (err.value.line, err.value.field) == (5, "T23")
    lines = (tmp_path / "p.txt").read_text().splitlines()
    lines[2] = "2 " + lines[2].split(" ", 1)[1]  # not a rotation
    (tmp_path / "bad.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError) as err:
        read_kitti(tmp_path / "bad.txt")
    assert (err.value.line, err.value.field) == (3, "rotation")


# ---------------------------------------------------------------------- association
def test_associate_greedy_one_to_one():
    a = np.array([0, 100, 200, 300])
    b = np.array([5, 95, 96, 290, 1000])
    ia, ib = associate(a, b, 10)
    np.testing.assert_array_equal(ia, [0, 1, 3])
    np.testing.assert_array_equal(ib, [0, 2, 3])  # 100 takes the closer 96; 200 has no partner
    ia, ib = associate(a, b, 5)  # |dt| <= max_dt: 300/290 drops out
    np.testing.assert_array_equal(ia, [0, 1])
    ia, ib = associate(a, b, 4)
    np.testing.assert_array_equal(ia, [1])
    ia, ib = associate(a, b - 100, 10, offset_ns=100)
    np.testing.assert_array_equal(ia, [0, 1, 3])
    ia, ib = associate(_line_traj(5), _line_traj(5), 0)
    np.testing.assert_array_equal(ia, np.arange(5))
    assert associate(np.array([], dtype=np.int64), b, 10)[0].size == 0
    # every stamp used once even when several are in range
    ia, ib = associate(np.array([0, 1, 2]), np.array([1]), 10)
    np.testing.assert_array_equal(ia, [1])
    np.testing.assert_array_equal(ib, [0])


# ---------------------------------------------------------------------- real files
def test_real_trajectory_files(shared_data):
    d = shared_data / "traj" / "evo"
    gt = read_tum(d / "fr2_desk_groundtruth.txt")
    assert len(gt) == 20957 - 1  # one repeated stamp (1311868229.5760), the last row kept
    est = read_tum(d / "fr2_desk_ORB.txt")
    assert len(est) == 2893
    ia, ib = associate(est, gt, 20_000_000)
    assert ia.size == 2223  # TUM evaluate_ate.py, evo doc/performance.md
    assert np.all(np.diff(ib) > 0)
    kitti = read_kitti(d / "KITTI_00_gt.txt", d / "KITTI_00_gt_times.txt")
    assert len(kitti) == 4541
    assert kitti.stamps_ns[1] == 103_735_900
    assert 3700 < kitti.path_length < 3750  # KITTI 00 is about 3.7 km
    v102 = read_euroc_groundtruth(d / "V102_groundtruth.csv")
    assert len(v102) == 16702 and v102.stamps_ns[0] == 1403715524907143168
    gt_dir = shared_data / "seq" / "euroc_V1_01_easy_micro" / "groundtruth_openvins"
    csv = read_euroc_groundtruth(gt_dir / "V1_01_easy.csv")
    txt = read_tum(gt_dir / "V1_01_easy.txt")
    assert len(csv) == len(txt) == 2895
    ia, ib = associate(csv, txt, 10_000)  # the txt keeps stamps to 10 us
    assert ia.size == 2895
    np.testing.assert_allclose(csv.poses[ia], txt.poses[ib], atol=2e-6)
