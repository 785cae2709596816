"""The synthetic room, renderer, paths and sequences: exact geometry, sensor models, texture quality."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from mp_slam_ros.sim import (
    T_BASE_CAMERA,
    default_camera,
    get_path,
    make_scene,
    make_sequence,
    render_frame,
    scene_info,
)
from mp_slam_ros.sim.render import render_depth
from mp_slam_ros.sim.scene import REPEAT_PERIOD_M
from mp_slam_ros.solver import lie

pytest.importorskip("mp_slam_ros.io.trajectory")


@pytest.fixture(scope="module")
def scene():
    return make_scene("unique")


def camera_pose(x: float, y: float, z: float, yaw: float, pitch: float = 0.0) -> np.ndarray:
    """T_world_camera of a base at (x, y, z) with that yaw / pitch, camera on the default mount."""
    T = np.eye(4)
    T[:3, :3] = lie.rpy_to_rotation(0.0, pitch, yaw)[0]
    T[:3, 3] = (x, y, z)
    return T @ T_BASE_CAMERA


def rotation_angles(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lie.so3_log(np.einsum("nji,njk->nik", Ra, Rb)), axis=1)


# A view of the y = -4 wall, 2.5 m away, with no box, floor or ceiling in a 70 x 55 deg view.
WALL_VIEW = (0.1, -1.5, 1.5, -0.5 * math.pi)


def test_base_camera_mount():
    R = T_BASE_CAMERA[:3, :3]
    np.testing.assert_array_equal(R[:, 2], [1.0, 0.0, 0.0])  # camera z = base x
    np.testing.assert_array_equal(R[:, 0], [0.0, -1.0, 0.0])  # camera x = -base y
    np.testing.assert_array_equal(R[:, 1], [0.0, 0.0, -1.0])  # camera y = -base z
    np.testing.assert_array_equal(T_BASE_CAMERA[:3, 3], 0.0)
    seq = make_sequence("straight", "stereo", 160, 120, duration_s=0.5)
    T_wc = seq.ground_truth.poses @ seq.T_base_camera
    np.testing.assert_allclose(T_wc[:, :3, 2], seq.ground_truth.poses[:, :3, 0])


def test_depth_of_wall_is_exact(scene):
    cam = default_camera(160, 120)
    _, depth = render_frame(scene, cam, camera_pose(*WALL_VIEW))
    np.testing.assert_allclose(depth, 2.5, atol=1e-4)


def test_back_projection_lands_on_surface(scene):
    cam = default_camera(160, 120)
    path = get_path("two_lap_room")
    v, u = np.mgrid[0 : cam.height, 0 : cam.width]
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones(u.shape)], axis=-1).reshape(-1, 3)
    for t in np.linspace(0.0, path.duration_s, 7):
        T = path.poses(t)[0] @ T_BASE_CAMERA
        _, depth = render_frame(scene, cam, T)
        assert np.all(depth > 0)
        points = (rays * depth.reshape(-1, 1).astype(np.float64)) @ T[:3, :3].T + T[:3, 3]
        # float32 depth rounds at ~3e-7 relative: 1e-5 m is exact for our purpose.
        assert scene.distance_to_surfaces(points).max() < 1e-5


def _subpixel_peak(resp: np.ndarray) -> tuple[float, float]:
    _, _, _, (x, y) = cv2.minMaxLoc(resp)
    dx = dy = 0.0
    if 0 < x < resp.shape[1] - 1:
        l, c, r = resp[y, x - 1], resp[y, x], resp[y, x + 1]
        dx = 0.5 * (l - r) / (l - 2 * c + r)
    if 0 < y < resp.shape[0] - 1:
        l, c, r = resp[y - 1, x], resp[y, x], resp[y + 1, x]
        dy = 0.5 * (l - r) / (l - 2 * c + r)
    return x + dx, y + dy


def test_stereo_disparity(scene):
    seq = make_sequence("straight", "stereo", 320, 240, duration_s=0.0)
    cam, b = seq.camera, seq.T_left_right[0, 3]
    assert seq.right_camera == cam and b == pytest.approx(0.11)
    np.testing.assert_array_equal(seq.T_left_right[:3, :3], np.eye(3))

    # Fronto-parallel wall: the whole right image is the left one shifted by fx b / z.
    T = camera_pose(*WALL_VIEW)
    left, depth = render_frame(scene, cam, T)
    right, _ = render_frame(scene, cam, T @ seq.T_left_right)
    (sx, sy), _ = cv2.phaseCorrelate(left.astype(np.float64), right.astype(np.float64))
    assert abs(-sx - cam.fx * b / 2.5) < 0.5 and abs(sy) < 0.5

    # A general view: patches on smooth surfaces re-appear at u - fx b / z on the same row.
    path = get_path("two_lap_room")
    T = path.poses(5.0)[0] @ T_BASE_CAMERA
    left, depth = render_frame(scene, cam, T)
    right, _ = render_frame(scene, cam, T @ seq.T_left_right)
    half, margin = 8, 25
    errors = []
    for v in range(margin, cam.height - margin, 30):
        for u in range(margin + 20, cam.width - margin, 30):
            patch_depth = depth[v - half : v + half + 1, u - half : u + half + 1]
            patch = left[v - half : v + half + 1, u - half : u + half + 1]
            if np.ptp(patch_depth) > 0.1 * depth[v, u] or patch.std() < 10:
                continue
            disparity = cam.fx * b / depth[v, u]
            x0 = math.floor(u - disparity + 0.5) - half - 8
            strip = right[v - half - 3 : v + half + 4, x0 : x0 + 2 * half + 17]
            px, py = _subpixel_peak(cv2.matchTemplate(strip, patch, cv2.TM_CCOEFF_NORMED))
            errors.append(np.hypot(x0 + px + half - (u - disparity), py - 3))
    assert len(errors) > 20
    assert np.median(errors) < 0.2 and np.mean(np.array(errors) < 0.5) > 0.9


def test_sequences_are_deterministic():
    kw = dict(width=160, height=120, duration_s=0.2)
    a, b = list(make_sequence("straight", "stereo", **kw)), list(make_sequence("straight", "stereo", **kw))
    c = list(make_sequence("straight", "stereo", seed=1, **kw))
    assert len(a) == len(b) == 5
    for fa, fb, fc in zip(a, b, c, strict=True):
        assert fa.stamp_ns == fb.stamp_ns == fc.stamp_ns
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.right, fb.right)
        assert np.any(fa.image != fc.image)
        # Only the noise differs between seeds.
        assert np.abs(fa.image.astype(int) - fc.image.astype(int)).mean() < 4.0
    d1, d2 = (list(make_sequence("straight", "rgbd", **kw)) for _ in range(2))
    np.testing.assert_array_equal(d1[-1].depth, d2[-1].depth)
    np.testing.assert_array_equal(d1[-1].image, d2[-1].image)


def test_rgbd_depth_noise_model(scene):
    seq = make_sequence("straight", "rgbd", 320, 240, duration_s=0.1)
    assert seq.mode == "rgbd" and seq.name == "room_straight_rgbd" and seq.right_camera is None
    T_wc = seq.ground_truth.poses @ seq.T_base_camera
    normalised = []
    for i, frame in enumerate(seq):
        assert frame.depth.dtype == np.float32 and frame.image.dtype == np.uint8
        exact = render_depth(scene, seq.camera, T_wc[i])
        valid = frame.depth > 0
        assert 0.9 < valid.mean() < 0.999  # a few dropouts
        mm = frame.depth[valid].astype(np.float64) * 1000.0
        np.testing.assert_allclose(mm, np.round(mm), atol=1e-2)
        assert np.all(exact[valid] <= 8.0)
        normalised.append((frame.depth[valid] - exact[valid]) / exact[valid] ** 2)
    assert np.std(np.concatenate(normalised)) == pytest.approx(1.5e-3, rel=0.15)


@pytest.mark.parametrize("name", ["two_lap_room", "figure_eight", "straight"])
def test_paths_are_smooth(name):
    traj = get_path(name).trajectory(rate_hz=20.0)
    dt = np.diff(traj.stamps_ns) * 1e-9
    np.testing.assert_allclose(dt, 0.05, atol=1e-9)
    speed = np.linalg.norm(np.diff(traj.positions, axis=0), axis=1) / dt
    rate = rotation_angles(traj.poses[:-1, :3, :3], traj.poses[1:, :3, :3]) / dt
    assert speed.min() > 0.5 and speed.max() < 1.0
    assert np.degrees(rate.max()) < 45.0
    # No jumps: the speed changes little between frames (bounded acceleration).
    assert np.abs(np.diff(speed)).max() / 0.05 < 0.5


def test_two_laps_close_the_loop():
    path = get_path("two_lap_room")
    assert path.duration_s == pytest.approx(2 * path.lap_period_s)
    t = np.linspace(0.0, path.lap_period_s, 400)
    lap1, lap2 = path.poses(t), path.poses(t + path.lap_period_s)
    offset = np.linalg.norm(lap2[:, :3, 3] - lap1[:, :3, 3], axis=1)
    angle = np.degrees(rotation_angles(lap1[:, :3, :3], lap2[:, :3, :3]))
    assert offset[0] > 0.01 and offset.max() < 0.1  # a revisit, not a replay
    assert angle.max() < 5.0


@pytest.mark.parametrize("name", ["two_lap_room", "figure_eight", "straight"])
def test_camera_keeps_clear_of_surfaces(scene, name):
    traj = get_path(name).trajectory(rate_hz=20.0)
    assert scene.distance_to_surfaces(traj.positions).min() > 1.0
    cam = default_camera(64, 48)
    central = []
    for T in traj.poses @ T_BASE_CAMERA:
        depth = render_depth(scene, cam, T)
        assert depth.min() > 0.8
        central.append(depth[22:26, 30:34].min())
    assert min(central) > 1.0  # never facing a surface closer than 1 m


def test_texture_gives_many_spread_corners(scene):
    cam = default_camera(640, 480)
    path = get_path("two_lap_room")
    for t in np.linspace(0.0, path.duration_s, 6, endpoint=False) + 1.3:
        img, _ = render_frame(scene, cam, path.poses(t)[0] @ T_BASE_CAMERA)
        corners = cv2.goodFeaturesToTrack(img, 2000, 0.01, 10).reshape(-1, 2)
        assert len(corners) >= 300
        cells = np.histogram2d(corners[:, 0], corners[:, 1], bins=4, range=[[0, 640], [0, 480]])[0]
        assert np.sum(cells >= 5) >= 14


def _orb_matches(orb, matcher, a, b) -> int:
    pairs = matcher.knnMatch(a, b, k=2)
    return sum(1 for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance)


def test_places_look_distinct_and_revisits_alike(scene):
    cam = default_camera(640, 480)
    path = get_path("two_lap_room")
    orb = cv2.ORB_create(1000)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def describe(t: float) -> np.ndarray:
        img, _ = render_frame(scene, cam, path.poses(t)[0] @ T_BASE_CAMERA)
        return orb.detectAndCompute(img, None)[1]

    for t in (2.0, 9.0):
        here, revisit = describe(t), describe(t + path.lap_period_s)
        across = describe(t + 0.5 * path.lap_period_s)
        same = _orb_matches(orb, matcher, here, revisit)
        other = _orb_matches(orb, matcher, here, across)
        assert same > 300 and other < 60 and same > 8 * other


def test_repeated_texture_makes_places_alike(scene):
    cam = default_camera(160, 120)
    a = camera_pose(-1.3, -2.5, 1.3, -0.5 * math.pi)
    b = camera_pose(-1.3 + REPEAT_PERIOD_M, -2.5, 1.3, -0.5 * math.pi)
    repeated = make_scene("repeated")
    ra, rb = render_frame(repeated, cam, a)[0], render_frame(repeated, cam, b)[0]
    ua, ub = render_frame(scene, cam, a)[0], render_frame(scene, cam, b)[0]
    assert np.abs(ra.astype(int) - rb.astype(int)).mean() < 0.5
    assert np.abs(ua.astype(int) - ub.astype(int)).mean() > 15.0


def test_sequence_metadata_and_info():
    seq = make_sequence()
    info = scene_info()
    assert seq.name == "room_two_laps_stereo" and seq.mode == "stereo"
    assert len(seq) == len(seq.ground_truth) == 786
    assert seq.camera.fx == pytest.approx(460.8) and seq.camera.cx == pytest.approx(319.5)
    assert info.room_size_m == (10.0, 8.0, 3.0)
    assert info.path_lengths_m["two_lap_room"] == pytest.approx(seq.ground_truth.path_length, rel=1e-3)
    assert 25.0 < info.path_lengths_m["two_lap_room"] < 30.0
    first = next(iter(seq))
    assert first.stamp_ns == seq.ground_truth.stamps_ns[0]
    assert first.image.shape == first.right.shape == (480, 640)
    assert make_sequence(texture="repeated", mode="rgbd").name == "room_two_laps_rgbd_repeated"
