"""The launch files and config/ without ROS: arguments, referenced files, parameter keys, installation.

The launch files are read with ``ast`` (launch_ros is not needed); only the ``ros``-marked test at
the end imports them, and it skips with the reason where launch_ros is not installed.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml

from mp_slam_ros.loop.config import LoopClosureConfig
from mp_slam_ros.ros import parameters as P
from mp_slam_ros.solver.precision import PRESET_NAMES, load_precision
from mp_slam_ros.vision.odometry import VOConfig

LAUNCH_FILES = ("vo.launch.py", "loop_closure.launch.py", "slam.launch.py")
NODE_LAUNCH = {"vo.launch.py": P.NODE_NAME, "loop_closure.launch.py": P.LC_NODE_NAME}


@dataclass(frozen=True)
class Argument:
    name: str
    default: str | None
    choices: tuple[str, ...] | None
    description: str


def _constants(tree: ast.Module) -> dict[str, Any]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def _value(node: ast.AST, constants: dict[str, Any]) -> Any:
    """A literal, a module constant, or ``list(CONSTANT)``."""
    if isinstance(node, ast.Name):
        return constants[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("list", "tuple"):
        return tuple(_value(node.args[0], constants))
    value = ast.literal_eval(node)
    return tuple(value) if isinstance(value, list) else value


def _called(node: ast.Call) -> str | None:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


@dataclass
class LaunchFile:
    name: str
    tree: ast.Module
    constants: dict[str, Any]
    arguments: dict[str, Argument]

    def calls(self, func_name: str) -> list[ast.Call]:
        return [n for n in ast.walk(self.tree) if isinstance(n, ast.Call) and _called(n) == func_name]

    def dict_keys(self, variable: str) -> set[str]:
        node = next(n.value for n in ast.walk(self.tree) if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == variable for t in n.targets))
        return {k.value for k in node.keys}

    def string_literals(self) -> set[str]:
        return {n.value for n in ast.walk(self.tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _parse(repo_root: Path, name: str) -> LaunchFile:
    path = repo_root / "launch" / name
    tree = ast.parse(path.read_text(), filename=str(path))
    constants = _constants(tree)
    arguments = {}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and _called(n) == "DeclareLaunchArgument"):
        assert call.args and isinstance(call.args[0], ast.Constant), f"{name}: argument names must be literals"
        kw = {k.arg: _value(k.value, constants) for k in call.keywords}
        arg = Argument(call.args[0].value, kw.get("default_value"), kw.get("choices"), kw.get("description", ""))
        assert arg.name not in arguments, f"{name}: argument {arg.name!r} declared twice"
        arguments[arg.name] = arg
    return LaunchFile(name, tree, constants, arguments)


@pytest.fixture(scope="module")
def launch_files(repo_root) -> dict[str, LaunchFile]:
    return {name: _parse(repo_root, name) for name in LAUNCH_FILES}


def _config_files(repo_root: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in (repo_root / "config").glob(pattern))


# ---------------------------------------------------------------------------------------------
# Launch arguments
# ---------------------------------------------------------------------------------------------


def test_launch_files_have_a_launch_description_and_declare_what_they_use(launch_files):
    for lf in launch_files.values():
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in lf.tree.body)
        used = {c.args[0].value for c in lf.calls("LaunchConfiguration")
                if c.args and isinstance(c.args[0], ast.Constant)}
        assert used <= set(lf.arguments), f"{lf.name}: undeclared launch configurations {used - set(lf.arguments)}"
        for arg in lf.arguments.values():
            assert arg.default is not None, f"{lf.name}: {arg.name} needs a default"
            assert arg.description.strip(), f"{lf.name}: {arg.name} has no description"
            if arg.choices is not None:
                assert arg.default in arg.choices, f"{lf.name}: default of {arg.name} is not a choice"


def test_precision_and_profile_choices_match_the_config_files(launch_files, repo_root):
    presets = tuple(f[len("precision_"):-len(".yaml")] for f in _config_files(repo_root, "precision_*.yaml"))
    profiles = tuple(f[len("profile_"):-len(".yaml")] for f in _config_files(repo_root, "profile_*.yaml"))
    assert sorted(presets) == sorted(PRESET_NAMES)
    assert sorted(profiles) == ["desktop", "embedded"]
    for lf in launch_files.values():
        assert sorted(lf.arguments["precision"].choices) == sorted(presets), lf.name
        assert lf.arguments["precision"].choices == PRESET_NAMES, f"{lf.name}: keep the presets' order"
        assert sorted(lf.arguments["profile"].choices) == sorted(profiles), lf.name
        assert lf.arguments["precision"].default == VOConfig().precision == LoopClosureConfig().precision


def test_referenced_config_and_launch_files_exist(launch_files, repo_root):
    for lf in launch_files.values():
        c = lf.constants
        for template, choices in (("PRECISION_FILE", "PRECISIONS"), ("PROFILE_FILE", "PROFILES")):
            if template in c:
                for value in c[choices]:
                    assert (repo_root / "config" / c[template].format(value)).is_file(), (lf.name, value)
        for literal in lf.string_literals():
            if literal.endswith(".yaml") and "{" not in literal and "/" not in literal:
                assert (repo_root / "config" / literal).is_file(), (lf.name, literal)
            if literal.endswith(".launch.py"):
                assert (repo_root / "launch" / literal).is_file(), (lf.name, literal)
    # The node launch files both read a preset and a profile; slam.launch.py includes them.
    for name in NODE_LAUNCH:
        assert {"PRECISION_FILE", "PROFILE_FILE"} <= set(launch_files[name].constants), name
    slam = launch_files["slam.launch.py"].constants
    assert (slam["VO_LAUNCH"], slam["LC_LAUNCH"]) == ("vo.launch.py", "loop_closure.launch.py")


def test_arguments_are_consistent_across_the_three_files(launch_files):
    vo, lc, slam = (launch_files[n] for n in LAUNCH_FILES)
    assert set(slam.arguments) == set(vo.arguments) | set(lc.arguments)
    # slam.launch.py hands each included file exactly the arguments that file declares.
    assert set(slam.constants["VO_ARGUMENTS"]) == set(vo.arguments)
    assert set(slam.constants["LC_ARGUMENTS"]) == set(lc.arguments)
    assert len(slam.constants["VO_ARGUMENTS"]) == len(set(slam.constants["VO_ARGUMENTS"]))
    for name, arg in slam.arguments.items():
        for other in (vo, lc):
            if name in other.arguments:
                assert other.arguments[name] == arg, f"{name} differs between slam.launch.py and {other.name}"
    common = {"precision", "profile", "use_sim_time", "namespace", "publish_tf", "params_file",
              "keyframe_pose_topic", "keyframe_cloud_topic", "keyframe_info_topic"}
    assert common <= set(vo.arguments) & set(lc.arguments)
    assert "mode" in vo.arguments and "mode" not in lc.arguments
    shared_constants = ("PACKAGE", "PRECISIONS", "PROFILES", "BOOLEANS", "PRECISION_FILE", "PROFILE_FILE", "MODES")
    for name in shared_constants:
        values = {repr(lf.constants[name]) for lf in launch_files.values() if name in lf.constants}
        assert len(values) == 1, f"{name} differs between the launch files: {values}"


def test_argument_defaults_are_the_node_parameter_defaults(launch_files):
    vo, lc = launch_files["vo.launch.py"], launch_files["loop_closure.launch.py"]
    for name in vo.constants["INPUT_TOPICS"]:
        assert vo.arguments[name].default == P.spec(name).default, name
    for name in lc.constants["KEYFRAME_TOPICS"]:
        assert lc.arguments[name].default == P.spec(name, P.LC_NODE_NAME).default, name
    # vo.launch.py remaps vo_node's published names; its defaults leave them as they are.
    for argument, published in vo.constants["KEYFRAME_TOPICS"].items():
        assert vo.arguments[argument].default == published
    assert set(vo.constants["KEYFRAME_TOPICS"].values()) == set(P.KEYFRAME_TOPICS)
    assert vo.arguments["mode"].default == VOConfig().mode and vo.constants["MODES"] == ("stereo", "rgbd")
    for lf, node in ((vo, P.NODE_NAME), (lc, P.LC_NODE_NAME)):
        assert lf.arguments["publish_tf"].default == str(P.spec("publish_tf", node).default).lower()
        assert (lf.constants["EXECUTABLE"], lf.constants["NODE_NAME"]) == (node, node)


def test_launch_overrides_and_topics_are_node_parameters(launch_files):
    for name, node in NODE_LAUNCH.items():
        lf = launch_files[name]
        declared = {s.name for s in P.node_parameters(node)}
        overrides = lf.dict_keys("overrides")
        assert {"precision", "publish_tf", "use_sim_time"} <= overrides
        assert overrides - {"use_sim_time"} <= declared, name
        topics = lf.constants["INPUT_TOPICS"] if node == P.NODE_NAME else lf.constants["KEYFRAME_TOPICS"]
        assert set(topics) <= declared, name
        assert set(topics) <= set(lf.arguments), name


# ---------------------------------------------------------------------------------------------
# config/*.yaml
# ---------------------------------------------------------------------------------------------


def _targets(doc: dict) -> set[str]:
    """The nodes a params file's sections name (wildcard-only sections name none)."""
    out = set()
    for key in doc:
        last = str(key).strip("/").split("/")[-1]
        if last not in ("**", "*", ""):
            out |= {n for n in P.NODE_NAMES if P.section_applies(str(key), n)}
    return out


def test_every_config_key_is_a_declared_parameter_of_its_node(repo_root):
    files = _config_files(repo_root, "*.yaml")
    # Files whose one wildcard section serves one node.
    wildcard_owner = {"vo.yaml": P.NODE_NAME}
    checked = set()
    for name in files:
        doc = yaml.safe_load((repo_root / "config" / name).read_text())
        if name.startswith("precision_"):
            # Presets are loaded by path (precision:=...), never as params files.
            assert load_precision(repo_root / "config" / name).name == name[len("precision_"):-len(".yaml")]
            continue
        nodes = _targets(doc) or {wildcard_owner.get(name)}
        assert None not in nodes, f"{name}: no section names a node; add it to wildcard_owner or name the node"
        for node in nodes:
            assert P.check_parameter_file(doc, node_name=node) == [], (name, node)
            checked.add(name)
    assert {"vo.yaml", "loop_closure.yaml", "profile_desktop.yaml", "profile_embedded.yaml"} <= checked


def test_config_loop_closure_yaml_is_the_generated_file(repo_root):
    text = (repo_root / "config" / "loop_closure.yaml").read_text()
    assert text == P.node_parameter_file_yaml(P.LC_NODE_NAME), (
        "regenerate with `python -m mp_slam_ros.ros.parameters --node loop_closure_node --yaml "
        "> config/loop_closure.yaml`")
    params = yaml.safe_load(text)["/**/loop_closure_node"]["ros__parameters"]
    assert list(params) == [s.name for s in P.LC_NODE_PARAMETERS]


def _profile(repo_root: Path, name: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((repo_root / "config" / f"profile_{name}.yaml").read_text())
    out = {}
    for key, section in doc.items():
        (node,) = _targets({key: section})
        out[node] = section["ros__parameters"]
    return out


def test_profiles_have_a_section_per_node_and_desktop_is_the_defaults(repo_root):
    desktop, embedded = _profile(repo_root, "desktop"), _profile(repo_root, "embedded")
    assert set(desktop) == set(embedded) == set(P.NODE_NAMES)
    for node, params in desktop.items():
        defaults = P.default_values(P.node_parameters(node))
        for key, value in params.items():
            assert value == defaults[key], f"profile_desktop.yaml: {node}.{key} = {value!r}, default {defaults[key]!r}"
        # Desktop names every key embedded changes (except the precision, which the launch argument owns).
        assert set(embedded[node]) - {"precision"} == set(params), node


def test_embedded_profile_is_lighter(repo_root):
    desktop, embedded = _profile(repo_root, "desktop"), _profile(repo_root, "embedded")
    vo_d, vo_e = desktop[P.NODE_NAME], embedded[P.NODE_NAME]
    lc_d, lc_e = desktop[P.LC_NODE_NAME], embedded[P.LC_NODE_NAME]
    assert vo_e["window_size"] < vo_d["window_size"] and vo_e["max_features"] < vo_d["max_features"]
    assert vo_e["ba_max_iterations"] < vo_d["ba_max_iterations"]
    assert vo_e["precision"] == lc_e["precision"] == "mixed"
    assert lc_e["tf_rate"] < lc_d["tf_rate"] and lc_e["map_publish_period"] > lc_d["map_publish_period"]
    assert lc_e["pgo_max_iterations"] < lc_d["pgo_max_iterations"]
    # The VO config they give is valid as a whole (window vs fixed keyframes, features vs init).
    merged = {**P.default_values(), **vo_e}
    P.vo_config_from_parameters(merged)
    P.lc_config_from_parameters({**P.default_values(P.LC_NODE_PARAMETERS), **lc_e})


def test_parameters_cli_covers_both_nodes(repo_root, tmp_path, capsys):
    assert P.main(["--node", "loop_closure_node", "--yaml"]) == 0
    assert capsys.readouterr().out == (repo_root / "config" / "loop_closure.yaml").read_text()
    assert P.main(["--node", "loop_closure_node", "--markdown"]) == 0
    assert capsys.readouterr().out == P.markdown_table(P.LC_NODE_PARAMETERS)
    assert P.main(["--yaml"]) == 0
    assert capsys.readouterr().out == (repo_root / "config" / "vo.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**/loop_closure_node:\n  ros__parameters:\n    tf_rate: 20\n")
    assert P.main(["--node", "loop_closure_node", "--check", str(bad)]) == 1
    assert "'tf_rate' must be double" in capsys.readouterr().out
    profile = str(repo_root / "config" / "profile_embedded.yaml")
    assert P.main(["--node", "vo_node", "--check", profile]) == 0
    assert P.main(["--node", "loop_closure_node", "--check", profile]) == 0


# ---------------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------------


def test_setup_installs_launch_and_config_files_and_both_nodes(repo_root):
    calls = []
    with mock.patch("setuptools.setup", side_effect=lambda **kw: calls.append(kw)):
        runpy.run_path(str(repo_root / "setup.py"), run_name="__main__")
    (kwargs,) = calls
    installed = {f: dest for dest, files in kwargs["data_files"] for f in files}
    for name in LAUNCH_FILES:
        assert installed.get(f"launch/{name}") == "share/mp_slam_ros/launch", name
    for name in _config_files(repo_root, "*.yaml"):
        assert installed.get(f"config/{name}") == "share/mp_slam_ros/config", name
    scripts = {s.split("=")[0].strip(): s.split("=")[1].strip() for s in kwargs["entry_points"]["console_scripts"]}
    assert scripts["vo_node"] == "mp_slam_ros.ros.vo_node:main"
    assert scripts["loop_closure_node"] == "mp_slam_ros.ros.loop_closure_node:main"


# ---------------------------------------------------------------------------------------------
# With ROS 2's launch (skipped where launch_ros is not installed)
# ---------------------------------------------------------------------------------------------


def _load_launch_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.ros
def test_launch_descriptions_build(repo_root, launch_files):
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (needs a ROS 2 environment)")
    from launch import LaunchDescription

    for name in LAUNCH_FILES:
        module = _load_launch_module(repo_root / "launch" / name)
        description = module.generate_launch_description()
        assert isinstance(description, LaunchDescription), name
        declared = {a.name for a in description.entities if type(a).__name__ == "DeclareLaunchArgument"}
        assert declared == set(launch_files[name].arguments), name


def test_readme_profile_table_matches_the_profiles(repo_root):
    text = (repo_root / "README.md").read_text()
    section = text[text.index("### Profiles"):text.index("### Topics, TF and services of `loop_closure_node`")]
    desktop, embedded = _profile(repo_root, "desktop"), _profile(repo_root, "embedded")
    node = None
    rows = 0
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[1].startswith("`"):
            continue
        node = cells[0].strip("`") or node
        name = cells[1].split("`")[1]
        if node == "both":
            continue
        rows += 1
        assert str(desktop[node][name]) == cells[2], (node, name)
        assert str(embedded[node][name]) == cells[3], (node, name)
    assert rows == sum(len(v) for v in desktop.values())
