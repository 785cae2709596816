"""Far-initialised BAL problems: the driving generator and perturb_bal (mp_slam_ros.ba.synthetic).

The BAL camera model is checked against an independent implementation (scipy rotations) and, when gtsam is
installed, against GTSAM's reading of the written file. Tests on the shared BAL files use the `shared_data`
fixture and are skipped (with the reason printed) when ../shared/data is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mp_slam_ros.ba.problem import BalBundleAdjustmentProblem
from mp_slam_ros.ba.synthetic import (
    KITTI_IMAGE_SIZE,
    KITTI_PRINCIPAL_POINT,
    bal_depths,
    bal_residuals,
    make_driving_bal,
    perturb_bal,
    rms_reprojection_error,
)
from mp_slam_ros.io.bal import BalProblem, read_bal, write_bal

# The problems bench_ba_far.py runs: (num_cameras, num_points, seed)
BENCH_DRIVES = [(20, 1500, 3), (40, 3000, 0), (40, 3000, 1), (60, 5000, 2)]
LADYBUG_1800 = "ba/rootba_test_data/bal-ladybug-problem-49-7776-pre-shrink-1800.txt"
DUBROVNIK_3_7 = "ba/gtsam/dubrovnik-3-7-pre.txt"


def reference_residuals(bal: BalProblem, cameras: np.ndarray, points: np.ndarray) -> np.ndarray:
    """BAL reprojection residuals written out independently: P = R X + t, p = -P/P_z, r = f d(p) p - obs."""
    R = Rotation.from_rotvec(cameras[:, :3]).as_matrix()
    P = np.einsum("nij,nj->ni", R[bal.camera_index], points[bal.point_index]) + cameras[bal.camera_index, 3:6]
    p = -P[:, :2] / P[:, 2:3]
    r2 = (p**2).sum(axis=1)
    cam = cameras[bal.camera_index]
    d = 1.0 + cam[:, 7] * r2 + cam[:, 8] * r2**2
    return cam[:, 6:7] * d[:, None] * p - bal.observations


def reference_depth(bal: BalProblem, cameras: np.ndarray, points: np.ndarray) -> np.ndarray:
    """-P_z per observation (BAL cameras look down -z)."""
    R = Rotation.from_rotvec(cameras[:, :3]).as_matrix()
    P = np.einsum("nij,nj->ni", R[bal.camera_index], points[bal.point_index]) + cameras[bal.camera_index, 3:6]
    return -P[:, 2]


def our_cost(bal: BalProblem) -> float:
    problem = BalBundleAdjustmentProblem(bal)
    return float(problem.cost(problem.initial_state()))


@pytest.fixture(scope="module")
def drive():
    return make_driving_bal(40, 3000, seed=0)


# ---------------------------------------------------------------------------------------------
# make_driving_bal
# ---------------------------------------------------------------------------------------------
def test_driving_is_deterministic_for_a_seed(drive) -> None:
    again = make_driving_bal(40, 3000, seed=0)
    for name in ("camera_index", "point_index", "observations", "cameras", "points"):
        assert np.array_equal(getattr(drive.bal, name), getattr(again.bal, name)), name
    assert np.array_equal(drive.true_cameras, again.true_cameras)
    assert np.array_equal(drive.true_points, again.true_points)
    assert drive.stats == again.stats
    other = make_driving_bal(40, 3000, seed=1)
    assert not np.array_equal(other.true_points, drive.true_points)
    assert other.bal.num_observations != drive.bal.num_observations or not np.array_equal(
        other.bal.observations, drive.bal.observations
    )


@pytest.mark.parametrize(("num_cameras", "num_points", "seed"), BENCH_DRIVES)
def test_driving_initial_rms_above_100_px(num_cameras: int, num_points: int, seed: int) -> None:
    """Every driving problem of the benchmark is far-initialised; the RMS and cost stats are the model's."""
    d = make_driving_bal(num_cameras, num_points, seed=seed)
    bal = d.bal
    assert bal.num_cameras == num_cameras and bal.num_points == num_points
    r = reference_residuals(bal, bal.cameras, bal.points)
    rms = float(np.sqrt(np.mean((r**2).sum(axis=1))))
    assert rms > 100.0
    assert d.initial_rms_px == pytest.approx(rms, rel=1e-9)
    assert rms_reprojection_error(bal) == pytest.approx(rms, rel=1e-9)
    # the solver's cost is 0.5 Σ|r|² of the same residuals
    assert our_cost(bal) == pytest.approx(0.5 * float((r**2).sum()), rel=1e-9)
    assert d.stats["initial_cost"] == pytest.approx(our_cost(bal), rel=1e-9)
    # a few dozen cameras, a few thousand points, tracks of a handful of frames
    assert 3.0 < d.stats["mean_track_length"] < 9.0


def test_driving_min_initial_rms_is_enforced() -> None:
    """Without stereo mismatches and with a near-perfect VO the start is close: the generator refuses it."""
    quiet = {
        "disparity_outlier_fraction": 0.0,
        "disparity_sigma": 0.1,
        "vo_rotation_sigma_rad": 1e-4,
        "vo_translation_sigma_m": 1e-3,
    }
    with pytest.raises(RuntimeError, match="not above 100"):
        make_driving_bal(20, 1500, seed=0, **quiet)
    d = make_driving_bal(20, 1500, seed=0, min_initial_rms_px=None, **quiet)
    assert d.initial_rms_px < 100.0


def test_no_observation_behind_its_initial_camera(drive) -> None:
    bal = drive.bal
    depth = reference_depth(bal, bal.cameras, bal.points)
    assert np.all(depth > 0.0)
    assert np.allclose(bal_depths(bal), depth, rtol=1e-12, atol=1e-9)
    # ... because some were removed: points triangulated too near end up behind later cameras
    assert drive.stats["removed_behind"] > 0
    assert drive.stats["observations"] == bal.num_observations


def test_ground_truth_reprojects_to_the_observations_within_noise(drive) -> None:
    bal = drive.bal
    r = reference_residuals(bal, drive.true_cameras, drive.true_points)
    sigma = drive.pixel_sigma
    per_coordinate = float(np.sqrt(np.mean(r**2)))
    assert per_coordinate == pytest.approx(sigma, rel=0.05)
    assert np.abs(r).max() < 6.0 * sigma
    assert np.abs(r.mean(axis=0)).max() < 0.05 * sigma  # unbiased
    assert our_cost(drive.truth) == pytest.approx(drive.stats["truth_cost"], rel=1e-9)
    assert np.allclose(bal_residuals(bal, drive.true_cameras, drive.true_points), r, atol=1e-9)
    # every true point is in front of every camera that sees it
    assert np.all(reference_depth(bal, drive.true_cameras, drive.true_points) > 1.0)


def test_observations_lie_in_the_kitti_image(drive) -> None:
    """BAL pixels are (u - cx, cy - v): x right, y up, principal point 0."""
    width, height = KITTI_IMAGE_SIZE
    cx, cy = KITTI_PRINCIPAL_POINT
    u = drive.bal.observations[:, 0] + cx
    v = cy - drive.bal.observations[:, 1]
    slack = 6.0 * drive.pixel_sigma
    assert u.min() > -slack and u.max() < width + slack
    assert v.min() > -slack and v.max() < height + slack
    # the road is below the horizon: a good share of the points is in the lower half of the image
    assert np.mean(v > cy) > 0.2


def test_tracks_are_runs_of_consecutive_frames(drive) -> None:
    bal = drive.bal
    n = bal.num_cameras
    assert np.array_equal(np.unique(bal.camera_index), np.arange(n))
    order = np.lexsort((bal.camera_index, bal.point_index))
    cams, pts = bal.camera_index[order], bal.point_index[order]
    starts = np.r_[0, np.nonzero(np.diff(pts))[0] + 1]
    lengths = np.diff(np.r_[starts, pts.size])
    assert np.array_equal(pts[starts], np.arange(bal.num_points))  # every point observed
    assert lengths.max() <= 15
    # consecutive frames inside a track, starting at the stereo frame (removal only cuts a track's end
    # short, since the first observation is in front by construction)
    same_track = pts[1:] == pts[:-1]
    assert np.all(np.diff(cams)[same_track] == 1)
    assert np.array_equal(cams[starts], drive.first_camera)
    assert np.mean(lengths >= 2) > 0.97


def test_initial_poses_drift_from_the_truth(drive) -> None:
    """Camera 0 is the VO's origin (exact); later cameras drift away, in rotation more at the end of the drive."""
    true_c = -np.einsum(
        "nji,nj->ni", Rotation.from_rotvec(drive.true_cameras[:, :3]).as_matrix(), drive.true_cameras[:, 3:6]
    )
    init = drive.bal.cameras
    init_c = -np.einsum("nji,nj->ni", Rotation.from_rotvec(init[:, :3]).as_matrix(), init[:, 3:6])
    err = np.linalg.norm(init_c - true_c, axis=1)
    assert err[0] < 1e-9
    assert np.allclose(init[:, 6], drive.true_cameras[:, 6]) and np.all(init[:, 7:] == 0.0)
    # the rotation error is a random walk: it grows like sqrt(frames) (0.3 deg per frame per axis here)
    rot_err = (Rotation.from_rotvec(drive.true_cameras[:, :3]).inv() * Rotation.from_rotvec(init[:, :3])).magnitude()
    assert rot_err[0] < 1e-12
    assert rot_err[-5:].mean() > 2.0 * rot_err[1:6].mean()
    assert drive.stats["drift_deg"] == pytest.approx(np.degrees(rot_err[-1]), rel=1e-6)
    assert drive.stats["drift_m"] == pytest.approx(err[-1], rel=1e-6)
    # ~1 m between frames, mostly forward
    steps = np.linalg.norm(np.diff(true_c, axis=0), axis=1)
    assert 0.9 < steps.mean() < 1.1
    assert np.linalg.norm(true_c[-1] - true_c[0]) > 0.9 * steps.sum()


def test_far_points_are_badly_off_in_depth(drive) -> None:
    """Stereo depth error grows with depth (dz = z^2 dd / (f b)): far points are off by much more."""
    first = drive.first_camera
    bal = drive.bal
    idx = np.nonzero(bal.camera_index == first[bal.point_index])[0]
    idx = idx[np.argsort(bal.point_index[idx])]
    z_true = reference_depth(bal, drive.true_cameras, drive.true_points)[idx]
    # the initial point's depth in the VO's frame of its first camera is what stereo gave
    z_init = reference_depth(bal, bal.cameras, bal.points)[idx]
    rel = np.abs(z_init / z_true - 1.0)
    near, far = z_true < 15.0, z_true > 60.0
    assert near.sum() > 100 and far.sum() > 50
    assert np.median(rel[far]) > 5.0 * np.median(rel[near])
    assert np.median(rel[far]) > 0.05
    assert drive.stats["depth_off_25pct_points"] == int(np.count_nonzero(rel > 0.25))
    # far features move slowly in the image and are tracked longer (slow_track_depth_m)
    views = np.bincount(bal.point_index, minlength=bal.num_points)
    assert views[far].mean() > 1.5 * views[near].mean()


def test_initial_error_gate_removes_only_wild_observations() -> None:
    gate = 2000.0
    d = make_driving_bal(20, 1500, seed=3, max_initial_error_px=gate, min_initial_rms_px=None)
    full = make_driving_bal(20, 1500, seed=3)
    assert np.array_equal(d.true_points, full.true_points)  # same draw, fewer observations
    err = np.linalg.norm(reference_residuals(d.bal, d.bal.cameras, d.bal.points), axis=1)
    first = d.first_camera[d.bal.point_index] == d.bal.camera_index
    assert np.all(err[~first] <= gate)
    assert d.stats["removed_gated"] > 0
    assert d.bal.num_observations == full.bal.num_observations - d.stats["removed_gated"]
    assert d.initial_rms_px < full.initial_rms_px


def test_gtsam_reads_the_written_problem_with_the_same_model(drive, tmp_path: Path) -> None:
    """GTSAM's readBal + GeneralSFMFactor<Cal3Bundler> at the start: its error equals our cost (no observation
    is behind its camera, so GTSAM zeroes none)."""
    gtsam = pytest.importorskip("gtsam")
    path = tmp_path / "drive.txt"
    write_bal(drive.bal, path)
    assert np.array_equal(read_bal(path).points, drive.bal.points)
    data = gtsam.SfmData.FromBalFile(str(path))
    graph = data.generalSfmFactors()
    initial = gtsam.initialCamerasAndPointsEstimate(data)
    assert graph.error(initial) == pytest.approx(our_cost(drive.bal), rel=1e-9)


# ---------------------------------------------------------------------------------------------
# perturb_bal
# ---------------------------------------------------------------------------------------------
def check_perturbed(source: BalProblem, out: BalProblem, target: float) -> None:
    r = reference_residuals(out, out.cameras, out.points)
    rms = float(np.sqrt(np.mean((r**2).sum(axis=1))))
    assert rms > target
    assert rms < 3.0 * target  # just above, not anywhere above
    assert np.array_equal(out.observations, source.observations)
    assert np.array_equal(out.camera_index, source.camera_index)
    assert np.array_equal(out.point_index, source.point_index)
    assert np.array_equal(out.cameras[:, 6:], source.cameras[:, 6:])  # f, k1, k2 kept
    assert not np.array_equal(out.cameras[:, :6], source.cameras[:, :6])
    assert not np.array_equal(out.points, source.points)
    # no point crosses the camera it was first observed from
    first = np.full(source.num_points, -1)
    first[source.point_index[::-1]] = source.camera_index[::-1]
    k = np.nonzero(source.camera_index == first[source.point_index])[0]
    d0 = reference_depth(source, source.cameras, source.points)[k]
    d1 = reference_depth(out, out.cameras, out.points)[k]
    assert np.array_equal(np.sign(d0), np.sign(d1))


def test_perturb_bal_reaches_its_target_from_the_truth(drive) -> None:
    truth = drive.truth
    assert rms_reprojection_error(truth) < 1.0
    out = perturb_bal(truth, 100.0, seed=0)
    check_perturbed(truth, out, 100.0)
    again = perturb_bal(truth, 100.0, seed=0)
    assert np.array_equal(out.cameras, again.cameras) and np.array_equal(out.points, again.points)
    other = perturb_bal(truth, 100.0, seed=1)
    assert not np.array_equal(out.points, other.points)
    assert rms_reprojection_error(other) > 100.0
    # a start already above the target comes back unchanged
    same = perturb_bal(out, 50.0, seed=3)
    assert np.array_equal(same.cameras, out.cameras) and np.array_equal(same.points, out.points)
    assert same.cameras is not out.cameras
    with pytest.raises(ValueError, match="positive"):
        perturb_bal(truth, 0.0, seed=0)


@pytest.mark.parametrize("name", [LADYBUG_1800, DUBROVNIK_3_7])
def test_perturb_shared_bal_reaches_its_target(shared_data: Path, name: str) -> None:
    source = read_bal(shared_data / name)
    assert rms_reprojection_error(source) < 30.0  # the published starts are close
    out = perturb_bal(source, 150.0, seed=0)
    check_perturbed(source, out, 150.0)
    assert 0.5 * out.num_observations * rms_reprojection_error(out) ** 2 == pytest.approx(our_cost(out), rel=1e-9)
