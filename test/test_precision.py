"""Tests for mp_slam_ros.solver.precision: presets, the config/precision_*.yaml files, validation.

The mixed-precision recipe fixes which stage may be rounded to what: fp32 residuals and
Jacobians, fp16 storage of the (scaled) matrix and of the incomplete-Cholesky factor, fp32 CG
vectors, fp64 update. These tests pin that table, that every shipped YAML file says the same as
its preset, and that a bad file is rejected with a message that names the file and the key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mp_slam_ros.solver.precision import (
    PRESET_NAMES,
    Precision,
    PrecisionConfig,
    load_precision,
)

P16, P32, P64 = Precision.FP16, Precision.FP32, Precision.FP64
STAGES = ("residual", "matrix_storage", "preconditioner", "cg_vectors")

# (residual, matrix_storage, preconditioner, cg_vectors, scaled) per preset.
EXPECTED_PRESETS = {
    "fp64": (P64, P64, P64, P64, True),
    "fp32": (P32, P32, P32, P32, True),
    "mixed": (P32, P16, P16, P32, True),
    # The naive preset has the same stages as the recipe but stores its matrices unscaled.
    "fp16": (P32, P16, P16, P32, False),
}


def _write_params(path: Path, block: dict[str, object]) -> Path:
    """A ROS 2 parameter file with `block` as its `precision:` mapping."""
    lines = ["/**:", "  ros__parameters:", "    precision:"]
    lines += [f"      {key}: {value}" for key, value in block.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------
def test_preset_names_are_the_expected_four():
    assert set(PRESET_NAMES) == set(EXPECTED_PRESETS)


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_preset_stages(name):
    config = PrecisionConfig.preset(name)
    *stages, scaled = EXPECTED_PRESETS[name]
    assert tuple(getattr(config, s) for s in STAGES) == tuple(stages)
    assert config.name == name
    assert config.scaled is scaled
    # Stages are real Precision members, not bare strings that only compare equal.
    assert all(isinstance(getattr(config, s), Precision) for s in STAGES)


def test_mixed_preset_is_the_recipe():
    mixed = PrecisionConfig.preset("mixed")
    assert mixed.residual is P32
    assert mixed.matrix_storage is P16
    assert mixed.preconditioner is P16
    assert mixed.cg_vectors is P32
    assert mixed.scaled, "the recipe scales matrices before fp16 storage"
    assert mixed.as_dict() == {
        "residual": "fp32",
        "matrix_storage": "fp16",
        "preconditioner": "fp16",
        "cg_vectors": "fp32",
        "name": "mixed",
    }


def test_default_config_is_fp64():
    assert PrecisionConfig() == PrecisionConfig.preset("fp64")


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_as_dict_round_trips_through_from_mapping(name):
    config = PrecisionConfig.preset(name)
    again = PrecisionConfig.from_mapping(config.as_dict())
    assert again == config
    assert again.scaled is config.scaled


def test_unknown_preset_name_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="turbo") as info:
        PrecisionConfig.preset("turbo")
    # The message lists what would have been accepted.
    for name in PRESET_NAMES:
        assert name in str(info.value)


# ---------------------------------------------------------------------------------------------
# The shipped YAML files
# ---------------------------------------------------------------------------------------------
def test_every_preset_has_a_yaml_file(repo_root):
    files = sorted((repo_root / "config").glob("precision_*.yaml"))
    names = {f.stem.removeprefix("precision_") for f in files}
    assert names == set(PRESET_NAMES)


@pytest.mark.parametrize("name", sorted(EXPECTED_PRESETS))
def test_yaml_file_equals_its_preset(repo_root, name):
    path = repo_root / "config" / f"precision_{name}.yaml"
    preset = PrecisionConfig.preset(name)
    from_file = PrecisionConfig.from_yaml(path)
    assert from_file == preset
    assert from_file.scaled is preset.scaled
    # str and Path both work, and load_precision accepts the name or the path.
    assert PrecisionConfig.from_yaml(str(path)) == preset
    assert load_precision(name) == preset
    assert load_precision(path) == preset
    assert load_precision(str(path)) == preset


def test_yaml_override_makes_a_custom_config(tmp_path):
    path = _write_params(tmp_path / "p.yaml", {"preset": "mixed", "matrix_storage": "fp32"})
    config = PrecisionConfig.from_yaml(path)
    assert config.name == "custom"
    assert (config.residual, config.matrix_storage, config.preconditioner, config.cg_vectors) == (
        P32,
        P32,
        P16,
        P32,
    )
    assert config.scaled


def test_yaml_spelling_out_a_preset_keeps_its_name(tmp_path):
    # Naming the fp16 preset keeps it unscaled even though the stages equal `mixed`.
    block = {"preset": "fp16", "residual": "fp32", "matrix_storage": "fp16"}
    config = PrecisionConfig.from_yaml(_write_params(tmp_path / "p.yaml", block))
    assert config == PrecisionConfig.preset("fp16")
    assert not config.scaled


def test_yaml_without_precision_block_names_the_file(tmp_path):
    path = tmp_path / "no_block.yaml"
    path.write_text("/**:\n  ros__parameters:\n    other: 1\n")
    with pytest.raises(ValueError, match=r"no_block\.yaml"):
        PrecisionConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # Values that are precisions but not allowed for the stage.
        ("residual", "fp16"),
        ("cg_vectors", "fp16"),
        # Values that are not precisions at all.
        ("matrix_storage", "fp8"),
        ("preconditioner", "16"),
    ],
)
def test_invalid_stage_value_names_file_and_key(tmp_path, key, value):
    path = _write_params(tmp_path / "bad_value.yaml", {"preset": "mixed", key: value})
    with pytest.raises(ValueError) as info:
        PrecisionConfig.from_yaml(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert value in message


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write_params(tmp_path / "bad_key.yaml", {"preset": "mixed", "matrx_storage": "fp16"})
    with pytest.raises(ValueError) as info:
        PrecisionConfig.from_yaml(path)
    assert str(path) in str(info.value)
    assert "matrx_storage" in str(info.value)


def test_unknown_key_in_mapping_names_the_source():
    with pytest.raises(ValueError, match=r"launch\.yaml.*update"):
        PrecisionConfig.from_mapping({"update": "fp32"}, source="launch.yaml")


def test_unknown_preset_in_yaml_names_the_file(tmp_path):
    path = _write_params(tmp_path / "bad_preset.yaml", {"preset": "turbo"})
    with pytest.raises(ValueError) as info:
        PrecisionConfig.from_yaml(path)
    assert "turbo" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_preset_in_yaml_raises_value_error(tmp_path):
    # The part of the behaviour that holds today: it is a ValueError that names the preset.
    path = _write_params(tmp_path / "bad_preset.yaml", {"preset": "turbo"})
    with pytest.raises(ValueError, match="turbo"):
        PrecisionConfig.from_yaml(path)


def test_load_precision_unknown_name_is_an_error():
    # An unknown name is taken for a file path; that must still fail, naming what was asked for.
    with pytest.raises((ValueError, OSError), match="turbo"):
        load_precision("turbo")


# ---------------------------------------------------------------------------------------------
# with_stage and Precision
# ---------------------------------------------------------------------------------------------
def test_with_stage_changes_one_stage_and_keeps_the_rest():
    mixed = PrecisionConfig.preset("mixed")
    wider = mixed.with_stage("matrix_storage", P32)
    assert wider.matrix_storage is P32
    assert (wider.residual, wider.preconditioner, wider.cg_vectors) == (P32, P16, P32)
    assert wider.name == "mixed" and wider.scaled
    # Frozen: the original is untouched.
    assert mixed.matrix_storage is P16
    with pytest.raises(AttributeError):
        mixed.matrix_storage = P32  # type: ignore[misc]


def test_with_stage_keeps_the_naive_preset_unscaled():
    # The fallback widens a stage; it must not silently switch the scaling on or off.
    naive = PrecisionConfig.preset("fp16").with_stage("preconditioner", P32)
    assert naive.preconditioner is P32 and not naive.scaled


def test_with_stage_rejects_unknown_stage():
    with pytest.raises(ValueError, match="update"):
        PrecisionConfig.preset("mixed").with_stage("update", P64)


def test_with_stage_rejects_disallowed_precision():
    with pytest.raises(ValueError, match="cg_vectors"):
        PrecisionConfig.preset("mixed").with_stage("cg_vectors", P16)


def test_constructor_validates_and_coerces_strings():
    config = PrecisionConfig(residual="fp32", matrix_storage="fp16", preconditioner="fp32", cg_vectors="fp32")
    assert config.matrix_storage is P16
    with pytest.raises(ValueError, match="residual"):
        PrecisionConfig(residual="fp16")


def test_precision_higher_chain():
    assert P16.higher() is P32
    assert P32.higher() is P64
    assert P64.higher() is P64, "fp64 has nothing wider: higher() is a fixed point"


@pytest.mark.parametrize(
    ("precision", "dtype", "bits", "compute"),
    [
        (P16, np.float16, 16, np.float32),
        (P32, np.float32, 32, np.float32),
        (P64, np.float64, 64, np.float64),
    ],
)
def test_precision_dtypes(precision, dtype, bits, compute):
    assert precision.dtype == np.dtype(dtype)
    assert precision.bits == bits == 8 * precision.dtype.itemsize
    assert precision.compute_dtype == np.dtype(compute)
    assert Precision(precision.value) is precision
