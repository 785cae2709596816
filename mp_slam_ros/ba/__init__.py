"""Bundle adjustment: BAL problems and visual-odometry reprojection windows on the shared solver."""

from mp_slam_ros.ba.problem import (
    LOSSES,
    BalBundleAdjustmentProblem,
    BalState,
    ReprojectionProblem,
    WindowState,
    optimize_bal,
)
from mp_slam_ros.ba.window import SlideOut, SlidingWindowBundleAdjuster, WindowOptions

__all__ = [
    "LOSSES",
    "BalBundleAdjustmentProblem",
    "BalState",
    "ReprojectionProblem",
    "SlideOut",
    "SlidingWindowBundleAdjuster",
    "WindowOptions",
    "WindowState",
    "optimize_bal",
]
