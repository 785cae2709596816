"""Every parameter of ``vo_node`` and ``loop_closure_node``, described once, without ROS.

Each node's table has two groups:

* the pipeline's own parameters, generated from the fields of its config dataclass
  (:class:`~mp_slam_ros.vision.odometry.VOConfig` for :data:`VO_NODE_PARAMETERS`,
  :class:`~mp_slam_ros.loop.config.LoopClosureConfig` for :data:`LC_NODE_PARAMETERS`): defaults
  come from the dataclass and descriptions from the ``Attributes`` sections of its docstring (for
  VO also of :class:`~mp_slam_ros.vision.features.FeatureOptions`, which documents the feature
  fields), so adding a field to the config adds a ROS parameter with no second list to update;
* the node's own parameters (topics, frames, QoS, processing model, timers, diagnostics).  The
  VO input topic defaults are those of :class:`~mp_slam_ros.io.rosbag.BagTopics`, so a bag written
  by ``mp-slam`` plays straight into the node; the loop-closure keyframe topics default to the
  names ``vo_node`` publishes its keyframes on (:data:`KEYFRAME_TOPICS`).

The nodes declare every spec with a ``ParameterDescriptor`` built from it; this module also
checks parameter files before a launch (:func:`check_parameter_file`) and renders the README
tables (:func:`markdown_table`).  ``python -m mp_slam_ros.ros.parameters [--node NAME] --yaml``
prints a complete parameter file with the defaults (``config/vo.yaml`` and
``config/loop_closure.yaml`` are that output).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..io.rosbag import BagTopics
from ..loop.config import LoopClosureConfig
from ..solver.loss import LOSSES
from ..vision.features import FeatureOptions
from ..vision.odometry import VOConfig
from ..vision.types import MODES

__all__ = [
    "KEYFRAME_TOPICS",
    "LC_CONFIG_PARAMETERS",
    "LC_NODE_NAME",
    "LC_NODE_PARAMETERS",
    "NODE_NAME",
    "NODE_NAMES",
    "PARAMETER_TYPES",
    "RELIABILITIES",
    "VO_CONFIG_PARAMETERS",
    "VO_NODE_PARAMETERS",
    "ParameterSpec",
    "check_parameter_file",
    "default_values",
    "lc_config_from_parameters",
    "markdown_table",
    "node_parameter_file_yaml",
    "node_parameters",
    "parameter_file_yaml",
    "rigid_transform_problem",
    "section_applies",
    "spec",
    "vo_config_from_parameters",
]

#: Name of the visual-odometry node (kept as ``NODE_NAME`` for the existing callers).
NODE_NAME = "vo_node"
#: Name of the loop-closure node.
LC_NODE_NAME = "loop_closure_node"
#: Every node with a parameter table here.
NODE_NAMES = (NODE_NAME, LC_NODE_NAME)

#: The (relative) topics ``vo_node`` publishes each keyframe on and ``loop_closure_node`` reads:
#: pose (PoseStamped), cloud (PointCloud2), camera_info (CameraInfo), all with one stamp.
KEYFRAME_TOPICS = ("keyframe/pose", "keyframe/cloud", "keyframe/camera_info")

#: ROS 2 parameter types used here (rcl_interfaces/ParameterType names, lower case).
PARAMETER_TYPES = ("bool", "int", "double", "string", "double_array", "string_array")

#: ``input_reliability`` values (the QoS reliability of the input subscriptions).
RELIABILITIES = ("best_effort", "reliable")


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter: what the node declares and what files and launch arguments are checked against.

    ``read_only`` parameters are fixed once the node runs (topics, QoS, everything the visual
    odometry was built with); the others may be changed with ``ros2 param set``.  ``choices`` and
    ``value_range`` (inclusive) constrain the value beyond its type; ``length`` fixes an array's
    size.
    """

    name: str
    type: str
    default: Any
    description: str
    unit: str = ""
    read_only: bool = True
    choices: tuple[str, ...] = ()
    value_range: tuple[float, float] | None = None
    length: int | None = None
    group: str = "node"

    def __post_init__(self) -> None:
        if self.type not in PARAMETER_TYPES:
            raise ValueError(f"parameter {self.name!r}: type {self.type!r} is not one of {PARAMETER_TYPES}")
        problem = self.problem(self.default)
        if problem:
            raise ValueError(f"parameter {self.name!r}: bad default: {problem}")

    @property
    def full_description(self) -> str:
        """The description with unit and constraints, as the ParameterDescriptor carries it."""
        text = self.description
        if self.unit:
            text += f" [{self.unit}]"
        return text

    @property
    def constraints(self) -> str:
        """Human-readable constraints (ParameterDescriptor.additional_constraints)."""
        parts = []
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.value_range is not None:
            parts.append(f"in [{_fmt(self.value_range[0])}, {_fmt(self.value_range[1])}]")
        if self.length is not None:
            parts.append(f"exactly {self.length} values")
        return "; ".join(parts)

    def type_problem(self, value: Any) -> str | None:
        """Why ``value`` cannot be this parameter's ROS type, or None.

        As in ROS 2 (static typing), an integer is not accepted for a double parameter: a params
        file value ``1`` declares an INTEGER and the node would refuse it; write ``1.0``.
        """
        ok = _TYPE_CHECKS[self.type](value)
        if ok:
            return None
        hint = ""
        if self.type == "double" and _is_int(value):
            hint = f" (write {value}.0: ROS 2 reads {value} as an integer)"
        elif self.type == "double_array" and isinstance(value, (list, tuple)) and any(_is_int(v) for v in value):
            hint = " (write every element with a decimal point: ROS 2 reads 1 as an integer)"
        return f"must be {self.type}, got {type(value).__name__} {value!r}{hint}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable (type, choices, range, length), or None."""
        bad = self.type_problem(value)
        if bad:
            return bad
        if self.choices and value not in self.choices:
            return f"must be one of {list(self.choices)}, got {value!r}"
        if self.value_range is not None and not self.value_range[0] <= value <= self.value_range[1]:
            return f"must be in [{_fmt(self.value_range[0])}, {_fmt(self.value_range[1])}], got {value!r}"
        if self.length is not None and len(value) != self.length:
            return f"must have exactly {self.length} values, got {len(value)}"
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_double(value: Any) -> bool:
    return isinstance(value, float)


def _is_array(value: Any, item: typing.Callable[[Any], bool]) -> bool:
    # rclpy hands arrays back as array.array / numpy arrays; YAML as lists.
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        return False
    return all(item(v) for v in value)


_TYPE_CHECKS: dict[str, typing.Callable[[Any], bool]] = {
    "bool": lambda v: isinstance(v, bool),
    "int": _is_int,
    "double": _is_double,
    "string": lambda v: isinstance(v, str),
    "double_array": lambda v: _is_array(v, _is_double),
    "string_array": lambda v: _is_array(v, lambda s: isinstance(s, str)),
}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Group (a): the VOConfig fields
# ---------------------------------------------------------------------------------------------


def _docstring_attributes(cls: type) -> dict[str, str]:
    """``{name: description}`` from the Google-style ``Attributes:`` section of ``cls.__doc__``.

    An entry may name several fields (``grid_cols, grid_rows: ...``); continuation lines are
    indented deeper than the entry.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    out: dict[str, str] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return out
    entry_indent: int | None = None
    names: list[str] = []
    text: list[str] = []

    def flush() -> None:
        description = " ".join(text).strip()
        description = re.sub(r"``(.*?)``", r"\1", description)
        description = re.sub(r":\w+:`~?([^`]*)`", r"\1", description)
        for name in names:
            out[name] = description

    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent:
            break  # the section ended
        match = re.match(r"([\w, ]+):(\s|$)(.*)", line.strip()) if indent == entry_indent else None
        if match:
            flush()
            names = [n.strip() for n in match.group(1).split(",") if n.strip()]
            text = [match.group(3)]
        else:
            text.append(line.strip())
    flush()
    return out


def _vo_descriptions() -> dict[str, str]:
    # VOConfig documents its own fields; the feature fields it only refers to FeatureOptions for.
    descriptions = _docstring_attributes(FeatureOptions)
    descriptions.update(_docstring_attributes(VOConfig))
    return descriptions


#: Units of the VOConfig fields; counts and ratios have none.  The docstring states the rule
#: ("pixels, metres and seconds unless the name says otherwise"), this makes it explicit per
#: field for the ParameterDescriptor and the README.
_VO_UNITS: dict[str, str] = {
    "min_distance": "px",
    "klt_window": "px",
    "fb_threshold": "px",
    "stereo_max_row_error": "px",
    "min_disparity": "px",
    "min_depth": "m",
    "max_depth": "m",
    "ba_loss_scale": "px",
    "ba_outlier_threshold": "px",
    "pnp_reprojection_error": "px",
    "keyframe_parallax": "px",
    "keyframe_max_interval": "s",
    "keyframe_min_interval": "s",
    "max_bridge_time": "s",
    "rgbd_virtual_baseline": "m",
    "T_base_camera": "row-major 4x4, translation in m",
}

#: Choices the VOConfig validates; repeated here so the descriptor and file checks show them.
_VO_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": tuple(MODES),
    "linear_solver": ("cgnr", "schur"),
}

_PY_TO_ROS = {bool: "bool", int: "int", float: "double", str: "string"}


def _ros_type(owner: str, name: str, annotation: Any) -> str:
    if annotation in _PY_TO_ROS:
        return _PY_TO_ROS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list) and args and args[0] in (float, str):
        return "double_array" if args[0] is float else "string_array"
    raise TypeError(f"{owner}.{name}: no ROS parameter type for annotation {annotation!r}")


def _config_specs(cls: type, descriptions: Mapping[str, str], units: Mapping[str, str],
                  choices: Mapping[str, tuple[str, ...]], lengths: Mapping[str, int], group: str
                  ) -> tuple[ParameterSpec, ...]:
    """One read-only spec per field of the config dataclass ``cls`` (the pipeline is built once)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        ros_type = _ros_type(cls.__name__, f.name, hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if ros_type.endswith("_array"):
            default = list(default)
        elif ros_type == "double":
            default = float(default)
        specs.append(ParameterSpec(
            name=f.name, type=ros_type, default=default, description=descriptions.get(f.name, ""),
            unit=units.get(f.name, ""), read_only=True, choices=choices.get(f.name, ()),
            length=lengths.get(f.name), group=group,
        ))  # fmt: skip
    return tuple(specs)


def _vo_specs() -> tuple[ParameterSpec, ...]:
    return _config_specs(VOConfig, _vo_descriptions(), _VO_UNITS, _VO_CHOICES, {"T_base_camera": 16}, "vo")


VO_CONFIG_PARAMETERS: tuple[ParameterSpec, ...] = _vo_specs()

# ---------------------------------------------------------------------------------------------
# Group (b): the node's own parameters
# ---------------------------------------------------------------------------------------------

_BAG = BagTopics()

_NODE_SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec("left_image_topic", "string", _BAG.left_image, "Stereo: left image (sensor_msgs/Image)."),
    ParameterSpec("right_image_topic", "string", _BAG.right_image, "Stereo: right image (sensor_msgs/Image)."),
    ParameterSpec("left_info_topic", "string", _BAG.left_info, "Stereo: left camera_info (sensor_msgs/CameraInfo)."),
    ParameterSpec("right_info_topic", "string", _BAG.right_info,
                  "Stereo: right camera_info; its P gives the baseline (P[0,3] = -fx * B)."),
    ParameterSpec("rgb_image_topic", "string", _BAG.rgb_image, "RGB-D: colour image (sensor_msgs/Image)."),
    ParameterSpec("depth_image_topic", "string", _BAG.depth_image,
                  "RGB-D: depth registered to the colour image (16UC1 mm or 32FC1 m)."),
    ParameterSpec("rgb_info_topic", "string", _BAG.rgb_info, "RGB-D: colour camera_info (sensor_msgs/CameraInfo)."),
    ParameterSpec("odom_frame", "string", "odom", "Frame of the odometry (header.frame_id of odom and TF parent).",
                  read_only=False),
    ParameterSpec("base_frame", "string", "base_link", "Robot body frame (child_frame_id of odom and TF child).",
                  read_only=False),
    ParameterSpec("camera_frame", "string", "camera",
                  "Frame of the keyframe cloud and camera_info (the rectified left / colour camera).",
                  read_only=False),
    ParameterSpec("publish_tf", "bool", True, "Broadcast the odom -> base_frame transform on /tf.", read_only=False),
    ParameterSpec("process_every_frame", "bool", False,
                  "true: queue and process every synchronised frame in order (bag replay; frames are dropped "
                  "only beyond backlog_size). false: process only the newest frame and drop older ones when "
                  "processing falls behind (live cameras).", read_only=False),
    ParameterSpec("backlog_size", "int", 200,
                  "Frames held for processing when process_every_frame is true; the oldest is dropped (and "
                  "counted) beyond this.", unit="frames", value_range=(1, 100000)),
    ParameterSpec("input_reliability", "string", "best_effort",
                  "QoS reliability of the input subscriptions (sensor-data profile otherwise). best_effort "
                  "matches every publisher; reliable only reliable ones, but loses nothing on the way.",
                  choices=RELIABILITIES),
    ParameterSpec("sync_slop", "double", 0.005,
                  "Largest stamp difference of the messages of one synchronised set (images and camera_info).",
                  unit="s", value_range=(1e-6, 10.0)),
    ParameterSpec("queue_size", "int", 10, "Depth of each input subscription and of the synchroniser's queue.",
                  unit="messages", value_range=(1, 10000)),
    ParameterSpec("rectified", "bool", False,
                  "true: the images are already rectified; camera_info P is the camera and D is ignored. "
                  "false: K and D describe raw images, which the odometry rectifies (using R of both "
                  "camera_info messages for a stereo pair)."),
    ParameterSpec("diagnostics_period", "double", 1.0, "Period of the /diagnostics status.", unit="s",
                  value_range=(0.01, 3600.0)),
)

#: Every parameter vo_node declares: the VOConfig fields, then the node's own.
VO_NODE_PARAMETERS: tuple[ParameterSpec, ...] = VO_CONFIG_PARAMETERS + _NODE_SPECS

# ---------------------------------------------------------------------------------------------
# loop_closure_node: the LoopClosureConfig fields, then the node's own
# ---------------------------------------------------------------------------------------------

#: Units of the LoopClosureConfig fields (the docstring says "as the names say"; explicit here for
#: the ParameterDescriptor and the README).  Counts and ratios have none.
_LC_UNITS: dict[str, str] = {
    "exclude_recent_keyframes": "keyframes",
    "exclude_recent_seconds": "s",
    "match_max_distance": "bits",
    "pnp_reprojection_error": "px",
    "max_consistency_translation": "m",
    "max_consistency_rotation_deg": "deg",
    "loop_translation_sigma": "m",
    "loop_rotation_sigma_deg": "deg",
    "odometry_translation_sigma": "m",
    "odometry_rotation_sigma_deg": "deg",
    "min_keyframes_between_loops": "keyframes",
    "map_voxel_size": "m",
}

_LC_CHOICES: dict[str, tuple[str, ...]] = {"robust_loss": tuple(LOSSES)}

LC_CONFIG_PARAMETERS: tuple[ParameterSpec, ...] = _config_specs(
    LoopClosureConfig, _docstring_attributes(LoopClosureConfig), _LC_UNITS, _LC_CHOICES, {}, "loop_closure")

_IDENTITY16 = [1.0 if i % 5 == 0 else 0.0 for i in range(16)]

_LC_NODE_SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec("keyframe_pose_topic", "string", KEYFRAME_TOPICS[0],
                  "Keyframe pose (geometry_msgs/PoseStamped, base_link in odom), as vo_node publishes it."),
    ParameterSpec("keyframe_cloud_topic", "string", KEYFRAME_TOPICS[1],
                  "Keyframe features (sensor_msgs/PointCloud2, layout in mp_slam_ros.io.ros_messages)."),
    ParameterSpec("keyframe_info_topic", "string", KEYFRAME_TOPICS[2],
                  "Keyframe camera (sensor_msgs/CameraInfo; p holds the intrinsics of the cloud's u v)."),
    ParameterSpec("T_base_camera", "double_array", _IDENTITY16,
                  "Pose of the keyframe camera in base_link; must equal vo_node's T_base_camera (a '/**' "
                  "section of a params file sets both).", unit="row-major 4x4, translation in m", length=16),
    ParameterSpec("map_frame", "string", "map", "Frame of the corrected path, the landmark map and the TF parent.",
                  read_only=False),
    ParameterSpec("odom_frame", "string", "odom",
                  "Odometry frame: the keyframe poses' frame and the child of the map -> odom transform.",
                  read_only=False),
    ParameterSpec("publish_tf", "bool", True, "Broadcast the map -> odom transform on /tf.", read_only=False),
    ParameterSpec("tf_rate", "double", 20.0, "Rate of the map -> odom broadcast.", unit="Hz",
                  read_only=False, value_range=(0.1, 1000.0)),
    ParameterSpec("tf_future_tolerance", "double", 0.1,
                  "map -> odom is stamped this far after the latest keyframe (or the clock, when later), so "
                  "lookups of the newest odometry do not extrapolate.", unit="s", read_only=False,
                  value_range=(0.0, 10.0)),
    ParameterSpec("path_topic", "string", "path", "Corrected keyframe poses (nav_msgs/Path in map_frame)."),
    ParameterSpec("map_topic", "string", "map_cloud",
                  "Landmark map (sensor_msgs/PointCloud2, x y z float32 in map_frame)."),
    ParameterSpec("map_publish_period", "double", 2.0,
                  "Period of the landmark map (published only when it changed).", unit="s", read_only=False,
                  value_range=(0.01, 3600.0)),
    ParameterSpec("diagnostics_period", "double", 1.0, "Period of the /diagnostics status.", unit="s",
                  read_only=False, value_range=(0.01, 3600.0)),
    ParameterSpec("map_file", "string", "",
                  "Map location (a directory: pose graph + keyframe database) of the ~/save_map and ~/load_map "
                  "services and of load_map_on_start; '~' is expanded. Empty: the services refuse.",
                  read_only=False),
    ParameterSpec("load_map_on_start", "bool", False,
                  "Load map_file at start-up; a missing or corrupt map stops the node with the file named."),
    # 1000 keyframes hold 100 s of keyframes at 10 Hz: far more than the slowest PGO a profile allows
    # (20 LM iterations at 10,000 keyframes), so a cold start or a long PGO loses nothing.
    ParameterSpec("backlog_size", "int", 1000,
                  "Complete keyframe sets held for processing; the oldest is dropped beyond this, with a "
                  "warning in the log and WARN in the diagnostics.",
                  unit="keyframes", value_range=(1, 100000)),
    ParameterSpec("input_reliability", "string", "reliable",
                  "QoS reliability of the keyframe subscriptions. reliable (vo_node publishes reliably) loses "
                  "no keyframe; best_effort also matches best-effort publishers.", choices=RELIABILITIES),
    ParameterSpec("queue_size", "int", 100,
                  "Depth of each keyframe subscription, and keyframe stamps waiting for their other messages.",
                  unit="messages", value_range=(1, 10000)),
)

#: Every parameter loop_closure_node declares: the LoopClosureConfig fields, then the node's own.
LC_NODE_PARAMETERS: tuple[ParameterSpec, ...] = LC_CONFIG_PARAMETERS + _LC_NODE_SPECS

_BY_NAME: dict[str, ParameterSpec] = {s.name: s for s in VO_NODE_PARAMETERS}
if len(_BY_NAME) != len(VO_NODE_PARAMETERS):
    raise RuntimeError("vo_node parameters: a node parameter has the name of a VOConfig field")
_LC_BY_NAME: dict[str, ParameterSpec] = {s.name: s for s in LC_NODE_PARAMETERS}
if len(_LC_BY_NAME) != len(LC_NODE_PARAMETERS):
    raise RuntimeError("loop_closure_node parameters: a node parameter has the name of a LoopClosureConfig field")

_TABLES: dict[str, tuple[ParameterSpec, ...]] = {NODE_NAME: VO_NODE_PARAMETERS, LC_NODE_NAME: LC_NODE_PARAMETERS}


def node_parameters(node_name: str) -> tuple[ParameterSpec, ...]:
    """The parameter table of a node by name (a namespaced ``/ns/vo_node`` works too)."""
    base = node_name.strip("/").split("/")[-1]
    try:
        return _TABLES[base]
    except KeyError:
        raise ValueError(f"no parameter table for node {node_name!r}; known nodes: {list(_TABLES)}") from None


def spec(name: str, node_name: str = NODE_NAME) -> ParameterSpec:
    """The spec of one parameter of ``node_name`` (KeyError with the known names if there is none)."""
    by_name = _LC_BY_NAME if node_parameters(node_name) is LC_NODE_PARAMETERS else _BY_NAME
    try:
        return by_name[name]
    except KeyError:
        base = node_name.strip("/").split("/")[-1]
        raise KeyError(f"{base} has no parameter {name!r}; known: {sorted(by_name)}") from None


def default_values(specs: Sequence[ParameterSpec] = VO_NODE_PARAMETERS) -> dict[str, Any]:
    """``{name: default}`` (arrays as lists)."""
    return {s.name: list(s.default) if isinstance(s.default, list) else s.default for s in specs}


# ---------------------------------------------------------------------------------------------
# Conversions and checks
# ---------------------------------------------------------------------------------------------


def _picked(specs: Sequence[ParameterSpec], values: Mapping[str, Any], node_name: str) -> dict[str, Any]:
    """The values of ``specs`` present in ``values``, arrays as lists, each checked against its spec."""
    picked: dict[str, Any] = {}
    for s in specs:
        if s.name not in values:
            continue
        value = values[s.name]
        if s.type.endswith("_array") and _TYPE_CHECKS[s.type](value):
            value = [float(v) if s.type == "double_array" else v for v in value]
        problem = s.problem(value)
        if problem:
            raise ValueError(f"{node_name} parameter '{s.name}' {problem}")
        picked[s.name] = value
    return picked


def vo_config_from_parameters(values: Mapping[str, Any]) -> VOConfig:
    """The :class:`VOConfig` from parameter values (other keys, e.g. topic names, are ignored).

    Missing fields take the dataclass defaults.  Raises ``ValueError`` naming the parameter for a
    value of the wrong type or one ``VOConfig`` rejects.
    """
    picked = _picked(VO_CONFIG_PARAMETERS, values, NODE_NAME)
    return VOConfig.from_mapping(picked, source="vo_node parameters")


def lc_config_from_parameters(values: Mapping[str, Any]) -> LoopClosureConfig:
    """The :class:`LoopClosureConfig` from parameter values (other keys, e.g. topic names, are ignored).

    Missing fields take the dataclass defaults.  Raises ``ValueError`` naming the parameter for a
    value of the wrong type or one ``LoopClosureConfig`` rejects.
    """
    picked = _picked(LC_CONFIG_PARAMETERS, values, LC_NODE_NAME)
    return LoopClosureConfig.from_mapping(picked, source="loop_closure_node parameters")


def rigid_transform_problem(values: Sequence[float]) -> str | None:
    """Why 16 row-major values are not a rigid transform (orthonormal rotation, last row 0 0 0 1), or None."""
    if len(values) != 16:
        return f"must have exactly 16 values, got {len(values)}"
    T = [[float(values[4 * r + c]) for c in range(4)] for r in range(4)]
    if max(abs(a - b) for a, b in zip(T[3], (0.0, 0.0, 0.0, 1.0), strict=True)) > 1e-9:
        return "is not a rigid transform: the last row must be 0 0 0 1"
    for i in range(3):
        for j in range(3):
            dot = sum(T[k][i] * T[k][j] for k in range(3))
            if abs(dot - (1.0 if i == j else 0.0)) > 1e-6:
                return "is not a rigid transform: the rotation part is not orthonormal"
    return None


def _validate_vo(values: Mapping[str, Any]) -> None:
    vo_config_from_parameters(values)


def _validate_lc(values: Mapping[str, Any]) -> None:
    lc_config_from_parameters(values)
    if "T_base_camera" in values:
        problem = rigid_transform_problem(list(values["T_base_camera"]))
        if problem:
            raise ValueError(f"loop_closure_node parameter 'T_base_camera' {problem}")


# Cross-field checks beyond each value's own spec: what the pipeline's config would refuse at start-up.
_VALIDATORS: dict[str, typing.Callable[[Mapping[str, Any]], None]] = {
    NODE_NAME: _validate_vo,
    LC_NODE_NAME: _validate_lc,
}


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    # A nested mapping in a params file declares dotted names (a: {b: 1} is parameter a.b).
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def section_applies(key: str, node_name: str) -> bool:
    """Whether a params-file node key (``/**``, ``vo_node``, ``/ns/vo_node``, ``/**/vo_*``) selects the node.

    The node's namespace is not known here, so any namespace part is accepted; only the last
    token (the node name, possibly a wildcard) has to match.
    """
    last = key.strip("/").split("/")[-1] if key.strip("/") else ""
    base = node_name.strip("/").split("/")[-1]
    if last in ("**", "*"):
        return True
    pattern = "^" + re.escape(last).replace(r"\*", "[^/]*") + "$"
    return re.match(pattern, base) is not None


def check_parameter_file(
    yaml_dict: Any, node_name: str = NODE_NAME, specs: Sequence[ParameterSpec] | None = None
) -> list[str]:
    """Problems of a ROS 2 params file (already ``yaml.safe_load``-ed) for ``node_name``; empty if fine.

    The layout is ``{node_key: {ros__parameters: {...}}}``; ``node_key`` may be the node name,
    a namespaced name or a wildcard (``/**``).  Sections of other nodes are ignored, but a file
    with no section for the node is a problem.  Reports unknown parameters, values of the wrong
    type (including ``1`` for a double), values outside the choices or range, and values the
    node's config (``VOConfig``, ``LoopClosureConfig``) rejects.  ``use_sim_time`` is accepted
    (rclpy declares it).  ``specs`` defaults to the table of ``node_name`` (:func:`node_parameters`).
    """
    if specs is None:
        specs = node_parameters(node_name)
    if not isinstance(yaml_dict, Mapping):
        return [f"a params file must be a mapping of node names, got {type(yaml_dict).__name__}"]
    base_name = node_name.strip("/").split("/")[-1]
    by_name = {s.name: s for s in specs}
    problems: list[str] = []
    merged: dict[str, Any] = {}
    sections = 0
    precision_block_reported = False
    for key, section in yaml_dict.items():
        key = str(key)
        if not section_applies(key, node_name):
            continue
        sections += 1
        if not isinstance(section, Mapping) or "ros__parameters" not in section:
            problems.append(f"{key}: expected a 'ros__parameters' mapping under the node name")
            continue
        extra = sorted(str(k) for k in section if k != "ros__parameters")
        if extra:
            problems.append(f"{key}: keys beside 'ros__parameters' are ignored by ROS: {extra}")
        params = section["ros__parameters"]
        if params is None:
            continue
        if not isinstance(params, Mapping):
            problems.append(f"{key}: 'ros__parameters' must be a mapping, got {type(params).__name__}")
            continue
        for name, value in _flatten(params).items():
            if name == "use_sim_time":
                if not isinstance(value, bool):
                    problems.append(f"{key}: 'use_sim_time' must be bool, got {type(value).__name__} {value!r}")
                continue
            s = by_name.get(name)
            if s is None and name.startswith("precision.") and "precision" in by_name:
                if not precision_block_reported:
                    problems.append(f"{key}: 'precision' is a block here (a precision preset file?); {base_name} "
                                    "takes 'precision: <fp64|fp32|mixed|fp16 or the preset file's path>'")
                    precision_block_reported = True
                continue
            if s is None:
                close = difflib.get_close_matches(name, list(by_name), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"{key}: unknown parameter '{name}'{hint}")
                continue
            problem = s.problem(value)
            if problem:
                problems.append(f"{key}: '{name}' {problem}")
            else:
                merged[name] = value
    if sections == 0:
        problems.append(f"no section applies to node '{node_name}' (keys: {sorted(map(str, yaml_dict))}); "
                        f"use '{node_name}:' or '/**:' with 'ros__parameters:' under it")
    validate = _VALIDATORS.get(base_name) if base_name in _TABLES and specs is _TABLES[base_name] else None
    if not problems and validate is not None:
        try:
            validate(merged)
        except ValueError as err:
            problems.append(str(err))
    return problems


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_default(s: ParameterSpec) -> str:
    value = s.default
    if isinstance(value, list):
        if s.name == "T_base_camera" and value == _IDENTITY16:
            return "identity"
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{_fmt(value)}`"


def markdown_table(specs: Sequence[ParameterSpec] = VO_NODE_PARAMETERS) -> str:
    """A Markdown table of the parameters (name, type, default, unit, description) for the README."""
    rows = ["| Parameter | Type | Default | Unit | Description |", "|---|---|---|---|---|"]
    for s in specs:
        description = s.description
        if s.constraints:
            description += f" ({s.constraints})"
        if not s.read_only:
            description += " Can be changed at run time."
        rows.append(f"| `{s.name}` | {s.type} | {_md_default(s)} | {_md_cell(s.unit)} | {_md_cell(description)} |")
    return "\n".join(rows) + "\n"


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


#: Header of each node's generated params file.
_FILE_HEADERS = {
    NODE_NAME: (
        "# Every vo_node parameter with its default, generated by `python -m mp_slam_ros.ros.parameters --yaml`",
        "# (regenerate after changing a default). Not loaded by vo.launch.py: copy the keys you change into",
        "# your own file and pass it as params_file:=... (applied last).",
    ),
    LC_NODE_NAME: (
        "# Every loop_closure_node parameter with its default, generated by",
        "# `python -m mp_slam_ros.ros.parameters --node loop_closure_node --yaml` (regenerate after changing a",
        "# default). Not loaded by loop_closure.launch.py or slam.launch.py: copy the keys you change into your",
        "# own file and pass it as params_file:=... (applied last). The section names the node, so the same file",
        "# given to slam.launch.py does not reach vo_node.",
    ),
}


def parameter_file_yaml(specs: Sequence[ParameterSpec] = VO_NODE_PARAMETERS, node_key: str = "/**",
                        node_name: str = NODE_NAME) -> str:
    """A complete ROS 2 params file with every parameter at its default, each with its description."""
    header = _FILE_HEADERS.get(node_name, (f"# Every {node_name} parameter with its default.",))
    lines = [*header, f"{node_key}:", "  ros__parameters:"]
    for s in specs:
        comment = s.full_description
        if s.constraints:
            comment += f" ({s.constraints})"
        lines.append(f"    # {comment}")
        lines.append(f"    {s.name}: {_yaml_scalar(s.default)}")
    return "\n".join(lines) + "\n"


#: Section key of each node's generated params file.  vo.yaml keeps its historical ``/**``; the
#: loop-closure file names its node so that, passed to slam.launch.py, it does not reach vo_node.
_FILE_KEYS = {NODE_NAME: "/**", LC_NODE_NAME: f"/**/{LC_NODE_NAME}"}


def node_parameter_file_yaml(node_name: str) -> str:
    """The generated params file of ``node_name`` (``config/vo.yaml``, ``config/loop_closure.yaml``)."""
    return parameter_file_yaml(node_parameters(node_name), _FILE_KEYS[node_name], node_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Print a node's parameter table or a defaults params file; check params files for that node."""
    parser = argparse.ArgumentParser(prog="python -m mp_slam_ros.ros.parameters", description=main.__doc__)
    parser.add_argument("--node", choices=NODE_NAMES, default=NODE_NAME,
                        help=f"the node whose parameters are meant (default {NODE_NAME})")
    parser.add_argument("--markdown", action="store_true", help="print the README parameter table")
    parser.add_argument("--yaml", action="store_true", help="print a params file with every default")
    parser.add_argument("--check", nargs="*", default=[], metavar="FILE", help="check params files for the node")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(node_parameters(args.node)), end="")
    if args.yaml:
        print(node_parameter_file_yaml(args.node), end="")
    status = 0
    for path in args.check:
        import yaml

        with open(path) as f:
            problems = check_parameter_file(yaml.safe_load(f), node_name=args.node)
        for problem in problems:
            print(f"{path}: {problem}")
        status = status or int(bool(problems))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
