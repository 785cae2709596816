"""Trajectory evaluation: ATE / RPE metrics (evo-compatible) and plots."""

from __future__ import annotations

from mp_slam_ros.eval.metrics import (
    DEFAULT_MAX_DT_NS,
    AteResult,
    RpeResult,
    absolute_trajectory_error,
    relative_pose_error,
    umeyama_alignment,
)

__all__ = [
    "DEFAULT_MAX_DT_NS",
    "AteResult",
    "RpeResult",
    "absolute_trajectory_error",
    "relative_pose_error",
    "umeyama_alignment",
]
