"""Readers and writers for the data formats the solver consumes."""

from __future__ import annotations

from typing import Any

from mp_slam_ros.io.errors import InputFormatError

# The g2o module imports mp_slam_ros.pgo.graph, which itself imports io.errors; loading the
# readers lazily keeps `import mp_slam_ros.pgo` from hitting a half-initialised module cycle.
_LAZY = {
    "read_pose_graph": "mp_slam_ros.io.g2o",
    "write_g2o": "mp_slam_ros.io.g2o",
}

__all__ = ["InputFormatError", "read_pose_graph", "write_g2o"]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
