"""Feature detection, KLT tracking, stereo matching, depth lookup and ORB descriptors.

Stateless building blocks on numpy arrays; :class:`~mp_slam_ros.vision.odometry.VisualOdometry`
holds the state. Points are float32 (N, 2) pixel arrays, as OpenCV takes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "FeatureOptions",
    "depth_lookup",
    "detect_features",
    "orb_descriptors",
    "stereo_match",
    "track_features",
]


@dataclass(frozen=True)
class FeatureOptions:
    """Options of the feature front end (pixels unless stated).

    Attributes:
        max_features: features kept per frame; new ones are detected at keyframes to refill.
        grid_cols, grid_rows: detection grid; each cell gets at most its share of
            ``max_features`` so features spread over the image (a textured corner would
            otherwise take them all and PnP would be ill-conditioned).
        min_distance: minimum spacing of detected corners, and of a new corner from a tracked one.
        quality_level: Shi-Tomasi quality relative to the best corner of the frame.
        klt_window: KLT window side.
        klt_levels: pyramid levels above the base image.
        klt_max_iterations, klt_epsilon: KLT stopping criteria.
        fb_threshold: forward-backward check; a track whose backward track lands farther than
            this from where it started is dropped.
        stereo_max_row_error: a rectified stereo match may leave its row by at most this much.
        min_disparity: matches with less disparity are too far for a useful depth.
        min_depth, max_depth: accepted depth range in metres (stereo and RGB-D).
        border: features closer than this to the image edge are not detected (ORB needs 16 px).
    """

    max_features: int = 300
    grid_cols: int = 8
    grid_rows: int = 6
    min_distance: int = 12
    quality_level: float = 0.01
    klt_window: int = 21
    klt_levels: int = 3
    klt_max_iterations: int = 30
    klt_epsilon: float = 0.01
    fb_threshold: float = 1.0
    stereo_max_row_error: float = 1.5
    min_disparity: float = 1.0
    min_depth: float = 0.1
    max_depth: float = 20.0
    border: int = 20

    def __post_init__(self) -> None:
        if self.max_features < 8:
            raise ValueError(f"max_features must be at least 8, got {self.max_features}")
        if self.grid_cols < 1 or self.grid_rows < 1:
            raise ValueError("grid_cols and grid_rows must be at least 1")
        if self.klt_window < 5 or self.klt_window % 2 == 0:
            raise ValueError(f"klt_window must be odd and at least 5, got {self.klt_window}")
        if not 0.0 < self.min_depth < self.max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")


def _lk(prev: np.ndarray, nxt: np.ndarray, pts: np.ndarray, guess: np.ndarray | None, options: FeatureOptions):
    # OpenCV's Python binding cannot take prebuilt pyramids (a list of levels is not an
    # InputArray there), so each call builds its own; measured cost is in the VO benchmark.
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, options.klt_max_iterations, options.klt_epsilon)
    flags = 0
    out = None
    if guess is not None:
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW
        out = guess.astype(np.float32).copy()
    p, status, _ = cv2.calcOpticalFlowPyrLK(
        prev, nxt, pts, out, winSize=(options.klt_window, options.klt_window),
        maxLevel=options.klt_levels, criteria=criteria, flags=flags,
    )  # fmt: skip
    return p.reshape(-1, 2), status.reshape(-1).astype(bool)


def _inside(pts: np.ndarray, shape: tuple[int, ...], margin: float = 0.0) -> np.ndarray:
    h, w = shape[:2]
    x, y = pts[:, 0], pts[:, 1]
    return (x >= margin) & (y >= margin) & (x <= w - 1 - margin) & (y <= h - 1 - margin)


def track_features(
    prev: np.ndarray,
    nxt: np.ndarray,
    pts: np.ndarray,
    options: FeatureOptions,
    guess: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Track ``pts`` from ``prev`` to ``nxt`` with pyramidal KLT and a forward-backward check.

    Returns the tracked positions (N, 2) float32 and a mask of the good tracks.
    """
    pts = np.ascontiguousarray(pts, dtype=np.float32).reshape(-1, 2)
    if pts.shape[0] == 0:
        return pts.copy(), np.zeros(0, dtype=bool)
    fwd, ok = _lk(prev, nxt, pts, guess, options)
    back, ok_back = _lk(nxt, prev, fwd, pts, options)
    err = np.linalg.norm(back - pts, axis=1)
    good = ok & ok_back & (err < options.fb_threshold) & _inside(fwd, nxt.shape)
    return fwd, good


def detect_features(image: np.ndarray, existing: np.ndarray, options: FeatureOptions) -> np.ndarray:
    """New Shi-Tomasi corners, spread over the grid, away from the ``existing`` features.

    Each cell is topped up to its share of ``max_features`` counting the existing features in it.
    Returns (M, 2) float32 pixels.
    """
    h, w = image.shape[:2]
    need = options.max_features - existing.shape[0]
    if need <= 0:
        return np.zeros((0, 2), dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.uint8)
    b = options.border
    mask[b : h - b, b : w - b] = 255
    for x, y in existing.astype(np.int32):
        cv2.circle(mask, (int(x), int(y)), options.min_distance, 0, -1)
    corners = cv2.goodFeaturesToTrack(
        image, maxCorners=3 * options.max_features, qualityLevel=options.quality_level,
        minDistance=options.min_distance, mask=mask, blockSize=3,
    )  # fmt: skip
    if corners is None:
        return np.zeros((0, 2), dtype=np.float32)
    corners = corners.reshape(-1, 2)  # strongest first
    cols, rows = options.grid_cols, options.grid_rows
    per_cell = int(np.ceil(options.max_features / (cols * rows)))

    def cell_of(p: np.ndarray) -> np.ndarray:
        cx = np.clip((p[:, 0] * cols / w).astype(np.int64), 0, cols - 1)
        cy = np.clip((p[:, 1] * rows / h).astype(np.int64), 0, rows - 1)
        return cy * cols + cx

    count = np.bincount(cell_of(existing), minlength=cols * rows) if existing.size else np.zeros(cols * rows, int)
    cells = cell_of(corners)
    # Rank of each corner within its cell, strongest first (corners are sorted by strength).
    order = np.argsort(cells, kind="stable")
    starts = np.searchsorted(cells[order], np.arange(cols * rows))
    rank = np.empty(cells.size, dtype=np.int64)
    rank[order] = np.arange(cells.size) - starts[cells[order]]
    keep = rank < np.maximum(per_cell - count[cells], 0)
    chosen = corners[keep]
    return np.ascontiguousarray(chosen[:need], dtype=np.float32)


def stereo_match(
    left: np.ndarray,
    right: np.ndarray,
    pts: np.ndarray,
    options: FeatureOptions,
    fx: float,
    baseline: float,
    disparity_guess: np.ndarray | None = None,
) -> np.ndarray:
    """Right-image column of each left feature in a rectified pair (NaN where unmatched).

    KLT from left to right (started at the guessed disparity when known) with the backward check;
    a match must stay on its row and give a depth within the configured range.
    """
    pts = np.ascontiguousarray(pts, dtype=np.float32).reshape(-1, 2)
    out = np.full(pts.shape[0], np.nan)
    if pts.shape[0] == 0:
        return out
    guess = pts.copy()
    if disparity_guess is not None:
        d = np.where(np.isfinite(disparity_guess), disparity_guess, 0.0)
        guess[:, 0] -= d.astype(np.float32)
    matched, good = track_features(left, right, pts, options, guess=guess)
    disparity = pts[:, 0] - matched[:, 0]
    good &= np.abs(matched[:, 1] - pts[:, 1]) <= options.stereo_max_row_error
    good &= disparity >= options.min_disparity
    with np.errstate(divide="ignore"):
        depth = fx * baseline / np.maximum(disparity, 1e-9)
    good &= (depth >= options.min_depth) & (depth <= options.max_depth)
    out[good] = matched[good, 0]
    return out


def depth_lookup(depth: np.ndarray, pts: np.ndarray, options: FeatureOptions) -> np.ndarray:
    """Depth (metres) at each feature from a registered depth image, NaN where unusable.

    Takes the 3x3 neighbourhood's median of valid depths, and rejects it where the neighbourhood
    spans a depth edge (a feature on an occluding contour has no single depth).
    """
    pts = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
    h, w = depth.shape
    u = np.clip(np.rint(pts[:, 0]).astype(np.int64), 1, w - 2)
    v = np.clip(np.rint(pts[:, 1]).astype(np.int64), 1, h - 2)
    du, dv = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2))
    patch = depth[v[:, None] + dv.reshape(-1), u[:, None] + du.reshape(-1)].astype(np.float64)
    patch[~np.isfinite(patch) | (patch <= 0.0)] = np.nan
    valid = np.count_nonzero(~np.isnan(patch), axis=1)
    out = np.full(pts.shape[0], np.nan)
    ok = valid >= 5
    if ok.any():
        med = np.nanmedian(patch[ok], axis=1)
        spread = np.nanmax(patch[ok], axis=1) - np.nanmin(patch[ok], axis=1)
        med[spread > 0.05 * med + 0.02] = np.nan
        out[ok] = med
    out[(out < options.min_depth) | (out > options.max_depth)] = np.nan
    return out


_ORB: cv2.ORB | None = None


def orb_descriptors(image: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ORB descriptors at given pixels: (descriptors (K, 32) uint8, indices (K,) of the kept points).

    ORB drops points too close to the border for its 31-px patch; ``indices`` say which survived.
    The descriptors are upright (angle 0, OpenCV does not re-orient given keypoints): a robot's
    camera barely rolls, and upright descriptors are more distinctive than rotated ones.
    """
    global _ORB
    if _ORB is None:
        _ORB = cv2.ORB_create(edgeThreshold=19, patchSize=31)
    pts = np.asarray(pts, dtype=np.float32).reshape(-1, 2)
    if pts.shape[0] == 0:
        return np.zeros((0, 32), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    keypoints = [cv2.KeyPoint(float(x), float(y), 31.0, 0.0, 0.0, 0, i) for i, (x, y) in enumerate(pts)]
    kept, desc = _ORB.compute(image, keypoints)
    if desc is None or not kept:
        return np.zeros((0, 32), dtype=np.uint8), np.zeros(0, dtype=np.int64)
    return desc, np.array([k.class_id for k in kept], dtype=np.int64)
