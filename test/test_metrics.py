"""ATE / RPE / Umeyama against synthetic truths and evo's stored results; plots."""

from __future__ import annotations

import io
import json
import zipfile

import matplotlib.image
import numpy as np
import pytest

from mp_slam_ros.eval import absolute_trajectory_error, relative_pose_error, umeyama_alignment
from mp_slam_ros.eval.plots import plot_errors_over_time, plot_trajectory
from mp_slam_ros.io.trajectory import Trajectory, read_kitti, read_tum
from mp_slam_ros.solver.lie import so3_exp


def _pose(rotvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = so3_exp(np.asarray(rotvec, dtype=float)[None])[0]
    T[:3, 3] = t
    return T


def _wiggly(n: int = 200, seed: int = 1) -> Trajectory:
    """A smooth 3-D trajectory with turning orientation, 10 Hz."""
    rng = np.random.default_rng(seed)
    s = np.linspace(0.0, 6.0, n)
    xyz = np.stack((10 * np.cos(s), 6 * np.sin(1.3 * s), 0.5 * s + 0.1 * rng.normal(size=n)), axis=1)
    rv = np.stack((0.1 * np.sin(s), 0.2 * np.cos(2 * s), s), axis=1)
    poses = np.stack([_pose(r, p) for r, p in zip(rv, xyz, strict=True)])
    return Trajectory(np.arange(n, dtype=np.int64) * 100_000_000 + 1_000_000_000_000, poses)


def _sim3_apply(traj: Trajectory, R, t, s) -> Trajectory:
    poses = traj.poses.copy()
    poses[:, :3, :3] = R @ poses[:, :3, :3]
    poses[:, :3, 3] = s * traj.positions @ R.T + t
    return Trajectory(traj.stamps_ns.copy(), poses)


# ---------------------------------------------------------------------- Umeyama
@pytest.mark.parametrize("with_scale", [False, True])
def test_umeyama_recovers_transform(with_scale):
    rng = np.random.default_rng(4)
    src = rng.normal(size=(50, 3)) * [3.0, 2.0, 1.0]
    R = so3_exp(np.array([[0.3, -1.2, 2.0]]))[0]
    t = np.array([4.0, -2.0, 0.5])
    s = 2.5 if with_scale else 1.0
    dst = s * src @ R.T + t
    R_est, t_est, s_est = umeyama_alignment(src, dst, with_scale=with_scale)
    np.testing.assert_allclose(R_est, R, atol=1e-10)
    np.testing.assert_allclose(t_est, t, atol=1e-10)
    assert s_est == pytest.approx(s, abs=1e-10)
    assert np.linalg.det(R_est) == pytest.approx(1.0)


def test_umeyama_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        umeyama_alignment(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        line = np.outer(np.arange(5.0), [1.0, 2.0, 3.0])
        umeyama_alignment(line, line)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        umeyama_alignment(np.zeros((5, 3)), np.zeros((4, 3)))


# ---------------------------------------------------------------------- ATE synthetic
def test_ate_zero_after_alignment_and_result_fields():
    ref = _wiggly()
    R = so3_exp(np.array([[0.2, 0.4, -0.9]]))[0]
    t = np.array([1.0, -3.0, 2.0])
    est = _sim3_apply(ref, R, t, 1.0)
    res = absolute_trajectory_error(est, ref, align="se3")
    assert res.num_pairs == len(ref)
    assert res.rmse < 1e-10 and res.max < 1e-10
    np.testing.assert_allclose(res.T_align[:3, :3], R.T, atol=1e-10)
    assert res.align == "se3" and res.scale == 1.0
    np.testing.assert_array_equal(res.stamps_ns, est.stamps_ns)
    assert absolute_trajectory_error(est, ref, align="none").rmse > 1.0

    scaled = _sim3_apply(ref, R, t, 0.3)  # monocular-style unknown scale
    assert absolute_trajectory_error(scaled, ref, align="se3").rmse > 0.5
    sim = absolute_trajectory_error(scaled, ref, align="sim3")
    assert sim.rmse < 1e-10
    assert sim.scale == pytest.approx(1 / 0.3, rel=1e-10)
    np.testing.assert_allclose(np.linalg.det(sim.T_align[:3, :3]), sim.scale**3, rtol=1e-10)
    with pytest.raises(ValueError, match="align"):
        absolute_trajectory_error(est, ref, align="bogus")


def test_ate_known_offset_and_association():
    ref = _wiggly()
    # A constant 5 cm offset along world z cannot be aligned away with align="none".
    est = ref.transformed(T_left=_pose([0, 0, 0], [0.0, 0.0, 0.05]))
    res = absolute_trajectory_error(est, ref, align="none")
    assert res.rmse == pytest.approx(0.05, abs=1e-12) and res.std == pytest.approx(0.0, abs=1e-12)
    # Shifted stamps: within max_dt they still pair up, beyond it there is nothing to compare.
    shifted = Trajectory(est.stamps_ns + 3_000_000, est.poses)
    assert absolute_trajectory_error(shifted, ref, align="none", max_dt_ns=5_000_000).num_pairs == len(ref)
    with pytest.raises(ValueError, match="stamp pairs"):
        absolute_trajectory_error(shifted, ref, max_dt_ns=1_000_000)
    # Only every second estimate pose: half the pairs.
    assert absolute_trajectory_error(est.slice(0, None, 2), ref, align="none").num_pairs == 100


# ---------------------------------------------------------------------- RPE synthetic
def test_rpe_zero_for_rigidly_moved_estimate():
    ref = _wiggly()
    est = ref.transformed(T_left=_pose([0.3, -0.2, 1.0], [5.0, 1.0, -2.0]))
    for unit, delta in (("frames", 1), ("frames", 7), ("m", 2.0)):
        r = relative_pose_error(est, ref, delta=delta, delta_unit=unit)
        assert r.num_pairs > 10
        assert r.rmse < 1e-10 and r.rot_rmse_deg < 1e-5 and r.drift_percent < 1e-8


def test_rpe_injected_drift():
    n = 101
    ref_poses = np.tile(np.eye(4), (n, 1, 1))
    ref_poses[:, 0, 3] = np.arange(n) * 0.5  # 0.5 m a frame along x
    stamps = np.arange(n, dtype=np.int64) * 50_000_000
    ref = Trajectory(stamps, ref_poses)
    est_poses = ref_poses.copy()
    est_poses[:, 0, 3] *= 1.02  # 2 % scale drift
    est = Trajectory(stamps, est_poses)
    r = relative_pose_error(est, ref, delta=10, delta_unit="frames")
    assert r.num_pairs == 10
    np.testing.assert_allclose(r.errors, 0.1, rtol=1e-12)  # 2 % of 5 m
    np.testing.assert_allclose(r.segment_lengths, 5.0, rtol=1e-12)
    assert r.drift_percent == pytest.approx(2.0, rel=1e-12)
    assert r.rmse == pytest.approx(0.1, rel=1e-12)
    assert r.rot_rmse_deg == pytest.approx(0.0, abs=1e-12)
    r_all = relative_pose_error(est, ref, delta=10, delta_unit="frames", all_pairs=True)
    assert r_all.num_pairs == n - 10 and r_all.drift_percent == pytest.approx(2.0, rel=1e-12)
    r_m = relative_pose_error(est, ref, delta=5.0, delta_unit="m")  # pairs chosen on the estimate path
    assert r_m.num_pairs > 5 and r_m.drift_percent == pytest.approx(2.0, rel=1e-12)
    # Yaw drift of 0.01 deg a frame: 0.1 deg over 10 frames.
    yaw = np.radians(0.01) * np.arange(n)
    est_poses = ref_poses.copy()
    est_poses[:, :3, :3] = so3_exp(np.stack((0 * yaw, 0 * yaw, yaw), axis=1))
    r = relative_pose_error(Trajectory(stamps, est_poses), ref, delta=10)
    np.testing.assert_allclose(r.rot_errors_deg, 0.1, rtol=1e-9)
    with pytest.raises(ValueError, match="no pose pairs"):
        relative_pose_error(est, ref, delta=1000.0, delta_unit="m")
    with pytest.raises(ValueError, match="delta_unit"):
        relative_pose_error(est, ref, delta=1, delta_unit="s")


# ---------------------------------------------------------------------- evo oracles
def _evo_result(path):
    with zipfile.ZipFile(path) as zf:
        stats = json.loads(zf.read("stats.json"))
        info = json.loads(zf.read("info.json"))
        errors = np.load(io.BytesIO(zf.read("error_array.npz")))
    return stats, info, errors


def _check_stats(res, stats, errors, rtol):
    for key in ("rmse", "mean", "median", "std", "max", "min"):
        assert getattr(res, key) == pytest.approx(stats[key], rel=rtol), key
    assert float(np.sum(res.errors**2)) == pytest.approx(stats["sse"], rel=rtol)
    assert res.errors.shape == errors.shape
    np.testing.assert_allclose(res.errors, errors, rtol=1e-8, atol=1e-10)


@pytest.fixture(scope="module")
def kitti00(shared_data):
    d = shared_data / "traj" / "evo"
    gt = read_kitti(d / "KITTI_00_gt.txt", d / "KITTI_00_gt_times.txt")
    est = read_kitti(d / "KITTI_00_ORB.txt", d / "KITTI_00_gt_times.txt")
    return est, gt, d / "res_files"


def test_ate_matches_evo_kitti00(kitti00):
    est, gt, res_dir = kitti00
    stats, info, errors = _evo_result(res_dir / "orb_ape.zip")
    assert "SE(3) Umeyama" in info["title"]
    res = absolute_trajectory_error(est, gt, align="se3")
    assert res.num_pairs == 4541
    _check_stats(res, stats, errors, rtol=1e-9)
    assert res.rmse == pytest.approx(1.30344971, abs=5e-9)  # SOURCES.md section 7


def test_rpe_matches_evo_kitti00(kitti00):
    est, gt, res_dir = kitti00
    stats, info, errors = _evo_result(res_dir / "orb_rpe.zip")
    assert "delta = 10.0 (m) using consecutive pairs" in info["title"]
    res = relative_pose_error(est, gt, delta=10.0, delta_unit="m")
    assert res.num_pairs == errors.size == 353
    _check_stats(res, stats, errors, rtol=1e-9)
    assert 0.1 < res.drift_percent < 5.0 and res.rot_rmse_deg > 0.0


def test_ate_matches_tum_fr2_desk(shared_data):
    d = shared_data / "traj" / "evo"
    res = absolute_trajectory_error(read_tum(d / "fr2_desk_ORB.txt"), read_tum(d / "fr2_desk_groundtruth.txt"))
    # TUM evaluate_ate.py (evo doc/performance.md): 2223 pairs, rmse 0.008144 m (4 digits given).
    assert res.num_pairs == 2223
    assert res.rmse == pytest.approx(0.008144, abs=5e-7)


# ---------------------------------------------------------------------- plots
def test_plots_write_pngs(tmp_path):
    ref = _wiggly()
    est = ref.transformed(T_left=_pose([0, 0, 0.05], [0.2, -0.1, 0.0]))
    same = ref.slice()
    ates = {
        "shifted": absolute_trajectory_error(est, ref, align="none"),
        "same": absolute_trajectory_error(same, ref, align="none"),
    }
    traj_png = tmp_path / "traj.png"
    err_png = tmp_path / "err.png"
    plot_trajectory(traj_png, {"shifted": est, "same": same}, ref, title="top view")
    plot_errors_over_time(err_png, ates, title="ATE")
    plot_trajectory(tmp_path / "noref.png", {"shifted": est}, None, title="")
    for png in (traj_png, err_png, tmp_path / "noref.png"):
        assert png.stat().st_size > 10_000
        img = matplotlib.image.imread(png)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
        assert img[..., :3].std() > 0.01  # not blank
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.png", "noref.png", "traj.png"]
