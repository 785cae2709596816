"""One value that says the floating-point precision of every solver stage.

The mixed-precision recipe only works if every stage agrees on what it may round, so precision is
never chosen inside a kernel: a :class:`PrecisionConfig` is built once (from a preset or a YAML
file shared with the launch files) and passed down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np


class Precision(str, Enum):
    FP16 = "fp16"
    FP32 = "fp32"
    FP64 = "fp64"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype({"fp16": np.float16, "fp32": np.float32, "fp64": np.float64}[self.value])

    @property
    def bits(self) -> int:
        return {"fp16": 16, "fp32": 32, "fp64": 64}[self.value]

    def higher(self) -> Precision:
        """The next wider precision: what a stage falls back to when this one overflows."""
        return {Precision.FP16: Precision.FP32, Precision.FP32: Precision.FP64}.get(self, Precision.FP64)

    @property
    def compute_dtype(self) -> np.dtype:
        """Arithmetic type for a stage stored at this precision: fp16 storage accumulates in fp32."""
        return np.dtype(np.float64) if self is Precision.FP64 else np.dtype(np.float32)


# Stages and the precisions each may take; the state update is always fp64 and so is not a field.
_ALLOWED: dict[str, tuple[Precision, ...]] = {
    "residual": (Precision.FP32, Precision.FP64),
    "matrix_storage": (Precision.FP16, Precision.FP32, Precision.FP64),
    "preconditioner": (Precision.FP16, Precision.FP32, Precision.FP64),
    "cg_vectors": (Precision.FP32, Precision.FP64),
}

PRESET_NAMES = ("fp64", "fp32", "mixed", "fp16")


@dataclass(frozen=True)
class PrecisionConfig:
    """Precision of each stage of a nonlinear least-squares solve.

    Attributes:
        residual: evaluation of residuals and Jacobians (fp32 or fp64).
        matrix_storage: storage of J (CGNR) or H (PCG) and their matrix-vector products. fp16 is
            stored as real half-precision bit patterns and accumulated in fp32.
        preconditioner: storage of the preconditioner and its application: the incomplete-Cholesky
            factor and its triangular solves (pcg-ic), or the block-Jacobi blocks (cgnr).
        cg_vectors: the Krylov vectors and scalars of CG.
        name: the preset name, or "custom".

    The 6-DoF state update is always carried out in fp64.
    """

    residual: Precision = Precision.FP64
    matrix_storage: Precision = Precision.FP64
    preconditioner: Precision = Precision.FP64
    cg_vectors: Precision = Precision.FP64
    name: str = "fp64"

    def __post_init__(self) -> None:
        for stage, allowed in _ALLOWED.items():
            value = Precision(getattr(self, stage))
            object.__setattr__(self, stage, value)
            if value not in allowed:
                names = ", ".join(p.value for p in allowed)
                raise ValueError(f"precision of stage '{stage}' must be one of {names}, got '{value.value}'")

    @classmethod
    def preset(cls, name: str) -> PrecisionConfig:
        """`fp64`, `fp32`, `mixed` (the recipe) or `fp16` (naive: every stage that can be fp16 is)."""
        p16, p32, p64 = Precision.FP16, Precision.FP32, Precision.FP64
        table = {
            "fp64": (p64, p64, p64, p64),
            "fp32": (p32, p32, p32, p32),
            "mixed": (p32, p16, p16, p32),
            # Residuals and CG vectors cannot be fp16 here; the naive preset still shows what
            # half-precision matrices without the recipe's scaling do.
            "fp16": (p32, p16, p16, p32),
        }
        if name not in table:
            raise ValueError(f"unknown precision preset '{name}'; choose one of {', '.join(PRESET_NAMES)}")
        residual, storage, precond, vectors = table[name]
        return cls(residual, storage, precond, vectors, name=name)

    @property
    def scaled(self) -> bool:
        """Whether matrices are scaled before they are stored; only the naive fp16 preset skips it."""
        return self.name != "fp16"

    def with_stage(self, stage: str, precision: Precision) -> PrecisionConfig:
        """A copy with one stage changed (used by the automatic fallback)."""
        if stage not in _ALLOWED:
            raise ValueError(f"unknown stage '{stage}'")
        return replace(self, **{stage: precision}, name=self.name)

    def as_dict(self) -> dict[str, str]:
        d = asdict(self)
        return {k: (v.value if isinstance(v, Precision) else v) for k, v in d.items()}

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], source: str = "<mapping>") -> PrecisionConfig:
        """Build from a mapping such as the `precision:` block of a parameter file.

        A `preset` key starts from that preset; the stage keys then override it.
        """
        unknown = set(mapping) - set(_ALLOWED) - {"preset", "name"}
        if unknown:
            raise ValueError(f"{source}: unknown precision key(s): {', '.join(sorted(unknown))}")
        try:
            base = cls.preset(str(mapping.get("preset", "fp64")))
        except ValueError as err:
            raise ValueError(f"{source}: key 'preset': {err}") from None
        overrides = {}
        for key in _ALLOWED:
            if key in mapping:
                try:
                    overrides[key] = Precision(str(mapping[key]))
                except ValueError:
                    names = ", ".join(p.value for p in _ALLOWED[key])
                    raise ValueError(f"{source}: key '{key}': '{mapping[key]}' is not one of {names}") from None
        try:
            config = replace(base, **overrides)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        # A file that spells out a preset's own stages is still that preset (and so keeps its scaling).
        same = all(getattr(config, k) == getattr(base, k) for k in _ALLOWED)
        return replace(config, name=mapping.get("name", base.name if same else "custom"))

    @classmethod
    def from_yaml(cls, path: str | Path) -> PrecisionConfig:
        """Load the `precision` block of a ROS 2 parameter file (`/**: ros__parameters: precision:`)."""
        import yaml

        path = Path(path)
        try:
            with path.open(encoding="utf-8") as f:
                doc = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            # A raw ParserError reads "in '<unicode string>'" and escapes callers that expect ValueError.
            raise ValueError(f"{path}: {yaml_error_location(err)}") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not a UTF-8 text file ({err.reason})") from None
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
        block = _find_precision_block(doc)
        if block is None:
            raise ValueError(f"{path}: no 'precision' block under '<node>: ros__parameters:'")
        return cls.from_mapping(block, source=str(path))


def yaml_error_location(err: Exception) -> str:
    """'line L, column C: problem' of a yaml error (1-based, from its problem_mark), for messages
    that name the file themselves."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"line {mark.line + 1}, column {mark.column + 1}: invalid YAML: {problem}"


def _find_precision_block(doc: dict[str, Any]) -> dict[str, Any] | None:
    if "precision" in doc and isinstance(doc["precision"], dict):
        return doc["precision"]
    for value in doc.values():
        if isinstance(value, dict):
            params = value.get("ros__parameters", {})
            if isinstance(params, dict) and isinstance(params.get("precision"), dict):
                return params["precision"]
    return None


def config_dir() -> Path:
    """The package's `config/` directory: the source tree, or share/ of an installed package."""
    here = Path(__file__).resolve().parents[2] / "config"
    if here.is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("mp_slam_ros")) / "config"
    except Exception:
        import sys

        return Path(sys.prefix) / "share" / "mp_slam_ros" / "config"


def load_precision(name_or_path: str | Path) -> PrecisionConfig:
    """A preset name (`mixed`), its YAML in `config/`, or any parameter file path."""
    text = str(name_or_path)
    if text in PRESET_NAMES:
        candidate = config_dir() / f"precision_{text}.yaml"
        return PrecisionConfig.from_yaml(candidate) if candidate.is_file() else PrecisionConfig.preset(text)
    if not Path(text).is_file():
        raise ValueError(f"precision '{text}' is neither a preset ({', '.join(PRESET_NAMES)}) nor a YAML file")
    return PrecisionConfig.from_yaml(text)
