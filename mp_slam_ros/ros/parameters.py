"""Every parameter of ``vo_node``, described once, without ROS.

Two groups make up :data:`VO_NODE_PARAMETERS`:

* the visual odometry's own parameters, generated from the fields of
  :class:`~mp_slam_ros.vision.odometry.VOConfig`: defaults come from the dataclass and
  descriptions from the ``Attributes`` sections of its docstring (and of
  :class:`~mp_slam_ros.vision.features.FeatureOptions`, which documents the feature fields), so
  adding a field to ``VOConfig`` adds a ROS parameter with no second list to update;
* the node's own parameters (topics, frames, QoS, processing model, diagnostics); the topic
  defaults are those of :class:`~mp_slam_ros.io.rosbag.BagTopics`, so a bag written by
  ``mp-slam`` plays straight into the node.

The node declares every spec with a ``ParameterDescriptor`` built from it; this module also
checks parameter files before a launch (:func:`check_parameter_file`) and renders the README
table (:func:`markdown_table`).  ``python -m mp_slam_ros.ros.parameters --yaml`` prints a
complete parameter file with the defaults (``config/vo.yaml`` is that output).
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
from ..vision.features import FeatureOptions
from ..vision.odometry import VOConfig
from ..vision.types import MODES

__all__ = [
    "NODE_NAME",
    "PARAMETER_TYPES",
    "RELIABILITIES",
    "VO_CONFIG_PARAMETERS",
    "VO_NODE_PARAMETERS",
    "ParameterSpec",
    "check_parameter_file",
    "default_values",
    "markdown_table",
    "parameter_file_yaml",
    "spec",
    "vo_config_from_parameters",
]

NODE_NAME = "vo_node"

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


def _ros_type(name: str, annotation: Any) -> str:
    if annotation in _PY_TO_ROS:
        return _PY_TO_ROS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list) and args and args[0] in (float, str):
        return "double_array" if args[0] is float else "string_array"
    raise TypeError(f"VOConfig.{name}: no ROS parameter type for annotation {annotation!r}")


def _vo_specs() -> tuple[ParameterSpec, ...]:
    hints = typing.get_type_hints(VOConfig)
    descriptions = _vo_descriptions()
    specs = []
    for f in dataclasses.fields(VOConfig):
        ros_type = _ros_type(f.name, hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if ros_type.endswith("_array"):
            default = list(default)
        elif ros_type == "double":
            default = float(default)
        specs.append(ParameterSpec(
            name=f.name, type=ros_type, default=default, description=descriptions.get(f.name, ""),
            unit=_VO_UNITS.get(f.name, ""), read_only=True, choices=_VO_CHOICES.get(f.name, ()),
            length=16 if f.name == "T_base_camera" else None, group="vo",
        ))  # fmt: skip
    return tuple(specs)


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

_BY_NAME: dict[str, ParameterSpec] = {s.name: s for s in VO_NODE_PARAMETERS}
if len(_BY_NAME) != len(VO_NODE_PARAMETERS):
    raise RuntimeError("vo_node parameters: a node parameter has the name of a VOConfig field")


def spec(name: str) -> ParameterSpec:
    """The spec of one parameter (KeyError with the known names if there is none)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"vo_node has no parameter {name!r}; known: {sorted(_BY_NAME)}") from None


def default_values(specs: Sequence[ParameterSpec] = VO_NODE_PARAMETERS) -> dict[str, Any]:
    """``{name: default}`` (arrays as lists)."""
    return {s.name: list(s.default) if isinstance(s.default, list) else s.default for s in specs}


# ---------------------------------------------------------------------------------------------
# Conversions and checks
# ---------------------------------------------------------------------------------------------


def vo_config_from_parameters(values: Mapping[str, Any]) -> VOConfig:
    """The :class:`VOConfig` from parameter values (other keys, e.g. topic names, are ignored).

    Missing fields take the dataclass defaults.  Raises ``ValueError`` naming the parameter for a
    value of the wrong type or one ``VOConfig`` rejects.
    """
    picked: dict[str, Any] = {}
    for s in VO_CONFIG_PARAMETERS:
        if s.name not in values:
            continue
        value = values[s.name]
        if s.type.endswith("_array") and _TYPE_CHECKS[s.type](value):
            value = [float(v) if s.type == "double_array" else v for v in value]
        problem = s.problem(value)
        if problem:
            raise ValueError(f"vo_node parameter '{s.name}' {problem}")
        picked[s.name] = value
    return VOConfig.from_mapping(picked, source="vo_node parameters")


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


def _section_applies(key: str, node_name: str) -> bool:
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
    yaml_dict: Any, node_name: str = NODE_NAME, specs: Sequence[ParameterSpec] = VO_NODE_PARAMETERS
) -> list[str]:
    """Problems of a ROS 2 params file (already ``yaml.safe_load``-ed) for ``node_name``; empty if fine.

    The layout is ``{node_key: {ros__parameters: {...}}}``; ``node_key`` may be the node name,
    a namespaced name or a wildcard (``/**``).  Sections of other nodes are ignored, but a file
    with no section for the node is a problem.  Reports unknown parameters, values of the wrong
    type (including ``1`` for a double), values outside the choices or range, and values the
    ``VOConfig`` rejects.  ``use_sim_time`` is accepted (rclpy declares it).
    """
    if not isinstance(yaml_dict, Mapping):
        return [f"a params file must be a mapping of node names, got {type(yaml_dict).__name__}"]
    by_name = {s.name: s for s in specs}
    problems: list[str] = []
    merged: dict[str, Any] = {}
    sections = 0
    precision_block_reported = False
    for key, section in yaml_dict.items():
        key = str(key)
        if not _section_applies(key, node_name):
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
                    problems.append(f"{key}: 'precision' is a block here (a precision preset file?); vo_node takes "
                                    "'precision: <fp64|fp32|mixed|fp16 or the preset file's path>'")
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
    if not problems:
        try:
            vo_config_from_parameters(merged)
        except ValueError as err:
            problems.append(str(err))
    return problems


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_default(s: ParameterSpec) -> str:
    value = s.default
    if isinstance(value, list):
        if s.name == "T_base_camera" and value == [float(v) for v in (1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1)]:
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


def parameter_file_yaml(specs: Sequence[ParameterSpec] = VO_NODE_PARAMETERS, node_key: str = "/**") -> str:
    """A complete ROS 2 params file with every parameter at its default, each with its description."""
    lines = [
        "# Every vo_node parameter with its default, generated by `python -m mp_slam_ros.ros.parameters --yaml`",
        "# (regenerate after changing a default). Not loaded by vo.launch.py: copy the keys you change into",
        "# your own file and pass it as params_file:=... (applied last).",
        f"{node_key}:",
        "  ros__parameters:",
    ]
    for s in specs:
        comment = s.full_description
        if s.constraints:
            comment += f" ({s.constraints})"
        lines.append(f"    # {comment}")
        lines.append(f"    {s.name}: {_yaml_scalar(s.default)}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the parameter table or a defaults params file; check params files."""
    parser = argparse.ArgumentParser(prog="python -m mp_slam_ros.ros.parameters", description=main.__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the README parameter table")
    parser.add_argument("--yaml", action="store_true", help="print a params file with every default")
    parser.add_argument("--check", nargs="*", default=[], metavar="FILE", help="check params files for vo_node")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(), end="")
    if args.yaml:
        print(parameter_file_yaml(), end="")
    status = 0
    for path in args.check:
        import yaml

        with open(path) as f:
            problems = check_parameter_file(yaml.safe_load(f))
        for problem in problems:
            print(f"{path}: {problem}")
        status = status or int(bool(problems))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
