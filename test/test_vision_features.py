"""Front-end building blocks: detection, KLT, stereo matching, depth lookup, ORB, rectification."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from mp_slam_ros.vision.features import (
    FeatureOptions,
    depth_lookup,
    detect_features,
    orb_descriptors,
    stereo_match,
    track_features,
)
from mp_slam_ros.vision.odometry import VOConfig
from mp_slam_ros.vision.rectify import Rectifier
from mp_slam_ros.vision.types import PinholeCamera


def textured_image(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """Smooth random texture with corners at several scales (blurred noise plus rectangles)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    for _ in range(60):
        x, y = rng.integers(0, w - 20), rng.integers(0, h - 20)
        cv2.rectangle(img, (int(x), int(y)), (int(x + rng.integers(5, 20)), int(y + rng.integers(5, 20))),
                      float(rng.uniform(0, 255)), -1)  # fmt: skip
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    M = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])
    return cv2.warpAffine(img, M, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_detection_spreads_over_the_grid_and_keeps_away_from_existing() -> None:
    img = textured_image()
    opts = FeatureOptions(max_features=96, grid_cols=4, grid_rows=3, min_distance=8, border=10)
    pts = detect_features(img, np.zeros((0, 2), np.float32), opts)
    assert 60 <= len(pts) <= 96
    cell = (pts[:, 1] * 3 // 240).astype(int) * 4 + (pts[:, 0] * 4 // 320).astype(int)
    counts = np.bincount(cell, minlength=12)
    assert counts.max() <= 8, counts  # 96 / 12 cells
    assert np.count_nonzero(counts) >= 10, counts
    assert pts[:, 0].min() >= 10 and pts[:, 0].max() <= 310
    again = detect_features(img, pts, opts)
    d = np.linalg.norm(again[:, None, :] - pts[None, :, :], axis=2)
    assert d.size == 0 or d.min() >= opts.min_distance - 1
    # A full budget asks for nothing.
    assert len(detect_features(img, np.zeros((96, 2), np.float32) + 100, opts)) == 0


def test_klt_recovers_a_known_shift_and_rejects_occluded_tracks() -> None:
    img = textured_image()
    moved = shifted(img, 3.5, -2.25)
    opts = FeatureOptions()
    pts = detect_features(img, np.zeros((0, 2), np.float32), opts)
    new, good = track_features(img, moved, pts, opts)
    assert good.mean() > 0.9
    err = np.linalg.norm(new[good] - pts[good] - [3.5, -2.25], axis=1)
    assert np.median(err) < 0.05 and np.percentile(err, 95) < 0.3, (np.median(err), np.percentile(err, 95))
    # Paint over the right half of the second image: the forward-backward check drops those tracks.
    covered = moved.copy()
    covered[:, 160:] = 128
    _, good_cov = track_features(img, covered, pts, opts)
    right = pts[:, 0] > 175
    assert good_cov[right].mean() < 0.1
    assert good_cov[pts[:, 0] < 140].mean() > 0.9


def test_stereo_match_gives_the_disparity_and_rejects_bad_rows() -> None:
    img = textured_image(seed=1)
    disparity = 12.0
    right = shifted(img, -disparity, 0.0)
    opts = FeatureOptions(min_depth=0.5, max_depth=30.0)
    pts = detect_features(img, np.zeros((0, 2), np.float32), opts)
    pts = pts[pts[:, 0] > 40]
    ru = stereo_match(img, right, pts, opts, fx=300.0, baseline=0.1)
    ok = np.isfinite(ru)
    assert ok.mean() > 0.9
    err = np.abs(pts[ok, 0] - ru[ok] - disparity)
    assert np.median(err) < 0.05 and np.percentile(err, 95) < 0.3
    # A vertical offset larger than the row tolerance is not a rectified match.
    off_row = shifted(img, -disparity, 3.0)
    assert np.isfinite(stereo_match(img, off_row, pts, opts, fx=300.0, baseline=0.1)).mean() < 0.05
    # Disparity 12 px at fx 300, b 0.1 is 2.5 m: outside a 3-30 m depth range, so rejected.
    far_only = FeatureOptions(min_depth=3.0, max_depth=30.0)
    assert not np.isfinite(stereo_match(img, right, pts, far_only, fx=300.0, baseline=0.1)).any()


def test_depth_lookup_takes_valid_depth_and_refuses_edges() -> None:
    depth = np.full((100, 100), 2.0, dtype=np.float32)
    depth[:, 50:] = 4.0  # a depth edge at column 50
    depth[10:20, 10:20] = 0.0  # a hole
    opts = FeatureOptions(min_depth=0.3, max_depth=3.5)
    pts = np.array([[30, 50], [50, 50], [49.6, 50], [15, 15], [80, 80]], dtype=np.float32)
    z = depth_lookup(depth, pts, opts)
    assert z[0] == 2.0
    assert math.isnan(z[1]) and math.isnan(z[2])  # on the edge
    assert math.isnan(z[3])  # in the hole
    assert math.isnan(z[4])  # 4 m is beyond max_depth


def test_orb_descriptors_report_which_points_survive_the_border() -> None:
    img = textured_image()
    pts = np.array([[5, 5], [100, 100], [200, 120], [318, 200]], dtype=np.float32)
    desc, idx = orb_descriptors(img, pts)
    assert desc.dtype == np.uint8 and desc.shape == (2, 32)
    assert idx.tolist() == [1, 2]
    # The same place gives the same descriptor; a different place a different one.
    d2, _ = orb_descriptors(img, pts[1:3])
    assert np.array_equal(d2, desc)
    assert np.unpackbits(desc[0] ^ desc[1]).sum() > 40


def test_rectifier_passes_a_rectified_pair_through() -> None:
    cam = PinholeCamera(320, 240, 300.0, 300.0, 160.0, 120.0)
    T = np.eye(4)
    T[0, 3] = 0.12
    r = Rectifier(cam, cam, T)
    assert r.passthrough and r.rectified.baseline == pytest.approx(0.12)
    img = textured_image()
    assert r.left(img) is img
    T[0, 3] = -0.12
    with pytest.raises(ValueError, match="right camera must lie at \\+x"):
        Rectifier(cam, cam, T)


def test_rectified_euroc_pair_has_aligned_rows(shared_data: Path) -> None:
    """On the real EuRoC pair, matches after rectification lie on the same row (sub-pixel)."""
    from mp_slam_ros.io.euroc import read_euroc

    seq = read_euroc(shared_data / "seq" / "euroc_V1_01_easy_micro")
    frame = next(iter(seq))
    r = Rectifier(seq.camera, seq.right_camera, seq.T_left_right)
    assert not r.passthrough
    assert r.rectified.baseline == pytest.approx(0.1101, abs=5e-4)
    left, right = r.left(frame.image), r.right(frame.right)
    orb = cv2.ORB_create(1500)
    kl, dl = orb.detectAndCompute(left, None)
    kr, dr = orb.detectAndCompute(right, None)
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(dl, dr)
    dy = np.array([kl[m.queryIdx].pt[1] - kr[m.trainIdx].pt[1] for m in matches])
    dx = np.array([kl[m.queryIdx].pt[0] - kr[m.trainIdx].pt[0] for m in matches])
    good = (dx > 0) & (np.abs(dy) < 5)
    assert good.sum() > 50
    assert np.median(np.abs(dy[good])) < 0.5
    # Without rectification the raw rows disagree by more (distortion and the rig's rotation).
    kl0, dl0 = orb.detectAndCompute(frame.image, None)
    kr0, dr0 = orb.detectAndCompute(frame.right, None)
    m0 = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(dl0, dr0)
    dy0 = np.array([kl0[m.queryIdx].pt[1] - kr0[m.trainIdx].pt[1] for m in m0])
    assert np.median(np.abs(dy0[np.abs(dy0) < 5])) > np.median(np.abs(dy[good]))


def test_vo_config_validates_and_maps() -> None:
    cfg = VOConfig.from_mapping({"max_features": 200, "precision": "fp32", "T_base_camera": np.eye(4).tolist()})
    assert cfg.max_features == 200 and cfg.feature_options().max_features == 200
    assert cfg.window_options().max_keyframes == 50
    with pytest.raises(ValueError, match="unknown VO parameter"):
        VOConfig.from_mapping({"max_feature": 200}, source="my.yaml")
    with pytest.raises(ValueError, match="not a rigid transform"):
        VOConfig(T_base_camera=tuple(range(16)))
    with pytest.raises(ValueError, match="mode"):
        VOConfig(mode="mono")
    with pytest.raises(ValueError, match="klt_window"):
        VOConfig(klt_window=20)
