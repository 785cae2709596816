"""Geometric verification of a loop candidate: descriptor matches, then PnP-RANSAC both ways.

Appearance alone proposes places; geometry decides. The candidate keyframe's 3D points (its
camera frame) are matched by descriptor to the query keyframe's pixels and PnP-RANSAC gives the
query camera's pose relative to the candidate's. A loop is accepted only when

* at least ``min_matches`` descriptors pass the Hamming-distance and ratio tests,
* PnP finds at least ``min_inliers`` inliers within ``pnp_reprojection_error`` pixels,
  and at least ``min_inlier_ratio`` of the matches are inliers,
* the reverse problem (the query's 3D points into the candidate's image) gives the same relative
  pose within ``max_consistency_translation`` and ``max_consistency_rotation_deg``.

The reverse check costs one more PnP and is what rejects the wrong-but-plausible poses that a
repeated texture produces: the pattern repeats on the wall, but the depths behind it do not
agree from both sides. The defaults live in :class:`~mp_slam_ros.loop.config.LoopClosureConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..solver import lie
from ..vision.types import Keyframe
from .config import LoopClosureConfig

__all__ = ["REJECTION_REASONS", "VerificationResult", "match_descriptors", "verify_loop"]

#: Why a candidate was rejected, as counted in the statistics and diagnostics.
REJECTION_REASONS = ("few_matches", "pnp_failed", "few_inliers", "low_inlier_ratio", "inconsistent")


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of :func:`verify_loop`. ``T_match_query`` is the query keyframe's ``base_link`` in the
    candidate's ``base_link`` (the loop edge's measurement); None when rejected before PnP."""

    accepted: bool
    reason: str  # "" when accepted, else one of REJECTION_REASONS
    matches: int
    inliers: int
    T_match_query: np.ndarray | None = None
    translation_disagreement: float = math.nan  # metres between the two PnP directions
    rotation_disagreement_deg: float = math.nan


def match_descriptors(
    query: np.ndarray, train: np.ndarray, max_distance: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one Hamming matches (query index, train index) passing the distance and ratio tests."""
    if len(query) < 2 or len(train) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(np.ascontiguousarray(query), np.ascontiguousarray(train), k=2)
    qi, ti, dist = [], [], []
    for pair in pairs:
        if len(pair) < 2:
            continue
        best, second = pair
        if best.distance <= max_distance and best.distance < ratio * second.distance:
            qi.append(best.queryIdx)
            ti.append(best.trainIdx)
            dist.append(best.distance)
    if not qi:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    q, t, d = np.asarray(qi), np.asarray(ti), np.asarray(dist)
    # Two query features claiming one train feature: keep the closer, as a repeated texture makes
    # many features look alike and a duplicate would count twice towards the inliers.
    order = np.lexsort((d, t))
    keep = order[np.concatenate([[True], t[order][1:] != t[order][:-1]])]
    keep.sort()
    return q[keep].astype(np.int64), t[keep].astype(np.int64)


def _pnp(
    points: np.ndarray, pixels: np.ndarray, K: np.ndarray, config: LoopClosureConfig
) -> tuple[np.ndarray | None, np.ndarray]:
    """Pose of the camera that sees `points` at `pixels` (T_camera_points), and the inlier indices."""
    if len(points) < 6:
        return None, np.zeros(0, dtype=np.int64)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        points.astype(np.float64), pixels.astype(np.float64), K, None,
        iterationsCount=config.pnp_iterations, reprojectionError=config.pnp_reprojection_error,
        confidence=0.999, flags=cv2.SOLVEPNP_EPNP,
    )  # fmt: skip
    if not ok or inliers is None or len(inliers) < 6:
        return None, np.zeros(0, dtype=np.int64)
    inliers = inliers.reshape(-1)
    X, u = points.astype(np.float64), pixels.astype(np.float64)
    rvec, tvec = cv2.solvePnPRefineLM(X[inliers], u[inliers], K, None, rvec, tvec)
    # Inliers again at the refined pose: RANSAC's set comes from a minimal-sample pose.
    projected, _ = cv2.projectPoints(X, rvec, tvec, K, None)
    err = np.linalg.norm(projected.reshape(-1, 2) - u, axis=1)
    depth = (cv2.Rodrigues(rvec)[0] @ X.T + tvec.reshape(3, 1))[2]
    inliers = np.nonzero((err <= config.pnp_reprojection_error) & (depth > 0))[0]
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.reshape(3)
    return T, inliers


def _camera_matrix(keyframe: Keyframe) -> np.ndarray:
    if keyframe.camera is None:
        raise ValueError(f"keyframe {keyframe.keyframe_id} carries no camera intrinsics; loop closure needs them")
    return keyframe.camera.K


def verify_loop(query: Keyframe, candidate: Keyframe, config: LoopClosureConfig) -> VerificationResult:
    """Check that `query` sees the place `candidate` saw and measure their relative pose."""
    qi, ci = match_descriptors(query.descriptors, candidate.descriptors, config.match_max_distance, config.match_ratio)
    n = len(qi)
    if n < config.min_matches:
        return VerificationResult(False, "few_matches", n, 0)
    # Forward: the candidate's points seen by the query camera.
    T_q_c, inliers = _pnp(candidate.points[ci], query.pixels[qi], _camera_matrix(query), config)
    if T_q_c is None:
        return VerificationResult(False, "pnp_failed", n, 0)
    k = len(inliers)
    if k < config.min_inliers:
        return VerificationResult(False, "few_inliers", n, k)
    if k < config.min_inlier_ratio * n:
        return VerificationResult(False, "low_inlier_ratio", n, k)
    # Reverse: the query's points seen by the candidate camera, over the forward inliers.
    T_c_q, back = _pnp(query.points[qi[inliers]], candidate.pixels[ci[inliers]], _camera_matrix(candidate), config)
    if T_c_q is None or len(back) < config.min_inliers:
        return VerificationResult(False, "inconsistent", n, k)
    loop = T_q_c @ T_c_q  # identity when both directions agree
    dt = float(np.linalg.norm(loop[:3, 3]))
    cos = np.clip((np.trace(loop[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    dr = math.degrees(math.acos(cos))
    T_cam_c_cam_q = lie.inverse_transform(T_q_c)
    T_match_query = candidate.T_base_camera @ T_cam_c_cam_q @ lie.inverse_transform(query.T_base_camera)
    if dt > config.max_consistency_translation or dr > config.max_consistency_rotation_deg:
        return VerificationResult(False, "inconsistent", n, k, T_match_query, dt, dr)
    return VerificationResult(True, "", n, k, T_match_query, dt, dr)
