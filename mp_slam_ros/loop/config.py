"""Every tunable of the loop closure, flat, so it maps one to one onto ROS parameters."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..solver.loss import LOSSES

__all__ = ["LoopClosureConfig"]


@dataclass(frozen=True)
class LoopClosureConfig:
    """Parameters of :class:`~mp_slam_ros.loop.pipeline.LoopClosure`.

    Units are pixels, metres, seconds and degrees as the names say. The defaults are tuned on the
    synthetic two-lap room and checked on the EuRoC snippet (README, loop-closure section).

    Attributes:
        precision: a precision preset name (fp64, fp32, mixed, fp16) or a precision YAML path;
            used by the pose-graph optimisation.
        vocabulary_file: a binary ORB vocabulary (``.npz`` written by ``mp-slam vocabulary``);
            empty selects the vocabulary shipped with the package.
        exclude_recent_keyframes: the newest keyframes never considered as loop candidates
            (they are still in the odometry window and would match trivially).
        exclude_recent_seconds: likewise, keyframes younger than this many seconds.
        num_candidates: best-scoring database keyframes that go on to geometric verification.
        min_bow_score: lowest bag-of-words similarity (L1 score in [0, 1]) of a candidate.
        min_score_ratio: a candidate must score at least this fraction of the query's best
            candidate, which adapts the threshold to how distinctive the place is.
        match_max_distance: largest Hamming distance (bits of 256) of a descriptor match.
        match_ratio: Lowe's ratio test on the two nearest descriptors.
        min_matches: fewer descriptor matches than this rejects a candidate before PnP.
        pnp_reprojection_error: PnP-RANSAC inlier threshold in pixels.
        pnp_iterations: PnP-RANSAC iterations.
        min_inliers: fewer PnP inliers than this rejects a loop.
        min_inlier_ratio: fewer inliers than this fraction of the matches rejects a loop.
        max_consistency_translation: the loop pose is estimated in both directions (query points
            into the candidate image and back); a larger translation disagreement rejects it.
        max_consistency_rotation_deg: the same check on the rotation.
        loop_translation_sigma: standard deviation of a loop edge's translation (per axis).
        loop_rotation_sigma_deg: standard deviation of a loop edge's rotation (per axis).
        odometry_translation_sigma: standard deviation of the translation of one odometry edge
            (between consecutive keyframes).
        odometry_rotation_sigma_deg: standard deviation of the rotation of one odometry edge.
        robust_loss: loss on loop edges: cauchy, huber or trivial (odometry edges are always
            least squares).
        robust_loss_scale: scale of that loss on the whitened loop residual.
        outlier_weight: after a pose-graph optimisation, a loop edge whose loss weight rho'(s)
            fell below this is removed from the graph and counted as rejected.
        min_keyframes_between_loops: after an accepted loop, this many keyframes pass before the
            next detection (consecutive keyframes see the same place; one loop is enough).
        pgo_max_iterations: Levenberg-Marquardt iterations per pose-graph optimisation.
        refactor_growth: the static incomplete-Cholesky preconditioner is re-factored when the
            graph has grown by more than this fraction since the last factorisation.
        map_voxel_size: the landmark map keeps one point per voxel of this size.
    """

    precision: str = "mixed"
    vocabulary_file: str = ""
    exclude_recent_keyframes: int = 50
    exclude_recent_seconds: float = 10.0
    num_candidates: int = 3
    min_bow_score: float = 0.03
    min_score_ratio: float = 0.6
    match_max_distance: int = 64
    match_ratio: float = 0.8
    min_matches: int = 30
    pnp_reprojection_error: float = 2.0
    pnp_iterations: int = 300
    min_inliers: int = 40
    min_inlier_ratio: float = 0.4
    max_consistency_translation: float = 0.05
    max_consistency_rotation_deg: float = 1.0
    loop_translation_sigma: float = 0.01
    loop_rotation_sigma_deg: float = 0.3
    odometry_translation_sigma: float = 0.01
    odometry_rotation_sigma_deg: float = 0.3
    robust_loss: str = "cauchy"
    robust_loss_scale: float = 3.0
    outlier_weight: float = 0.05
    min_keyframes_between_loops: int = 3
    pgo_max_iterations: int = 20
    refactor_growth: float = 0.25
    map_voxel_size: float = 0.05

    def __post_init__(self) -> None:
        if self.robust_loss not in LOSSES:
            raise ValueError(f"robust_loss must be one of {', '.join(LOSSES)}, got {self.robust_loss!r}")
        positive = (
            "exclude_recent_seconds", "pnp_reprojection_error", "loop_translation_sigma",
            "loop_rotation_sigma_deg", "odometry_translation_sigma", "odometry_rotation_sigma_deg",
            "robust_loss_scale", "map_voxel_size", "max_consistency_translation",
            "max_consistency_rotation_deg",
        )  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("exclude_recent_keyframes", "min_keyframes_between_loops", "refactor_growth"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        for name in ("num_candidates", "min_matches", "min_inliers", "pnp_iterations", "pgo_max_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("min_bow_score", "min_score_ratio", "min_inlier_ratio", "outlier_weight", "match_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0 < self.match_max_distance <= 256:
            raise ValueError(f"match_max_distance must be in (0, 256], got {self.match_max_distance!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> LoopClosureConfig:
        """A config from a flat mapping (a YAML section, ROS parameters); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown loop-closure parameter(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(values))
        except TypeError as exc:
            raise ValueError(f"{source}: {exc}") from None
