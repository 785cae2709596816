"""Pose-graph optimisation: data structures and graph utilities."""

from mp_slam_ros.pgo.graph import (
    PoseGraph,
    information_condition_numbers,
    odometry_chain_initialization,
    project_information_psd,
)

__all__ = [
    "PoseGraph",
    "information_condition_numbers",
    "odometry_chain_initialization",
    "project_information_psd",
]
