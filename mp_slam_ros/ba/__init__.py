"""Bundle adjustment: BAL problems and visual-odometry reprojection windows on the shared solver."""

from mp_slam_ros.ba.problem import (
    LOSSES,
    BalBundleAdjustmentProblem,
    BalState,
    ReprojectionProblem,
    WindowState,
    optimize_bal,
)

__all__ = [
    "LOSSES",
    "BalBundleAdjustmentProblem",
    "BalState",
    "ReprojectionProblem",
    "WindowState",
    "optimize_bal",
]
