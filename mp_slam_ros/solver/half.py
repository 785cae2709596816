"""Real half-precision storage for numba kernels.

numba has no float16 arrays, so fp16 values live in 16-bit integer arrays holding IEEE binary16
bit patterns (exactly what ``np.float16(...).view(np.uint16)`` gives). Kernels widen them to fp32
on load. Two widening paths exist, told apart by the storage type (:data:`HALF_STORAGE`):

* ``f16c`` (uint16 storage): an LLVM ``bitcast i16 -> half; fpext half -> float``. On x86 with F16C (and on
  aarch64, where the conversion is part of the base ISA) this compiles to one hardware
  instruction and vectorises (``vcvtph2ps``) in element loops.
* ``lut`` (int16 storage): a 65,536-entry float32 table. On an x86 CPU without F16C the intrinsic would compile
  into a call to a soft-float helper that numba does not link, which crashes the process, so the
  table is the fallback there.

The path is chosen once per process from the host CPU's features, or forced with the
``MP_SLAM_FP16_BACKEND`` environment variable (``f16c`` or ``lut``) before import.
"""

from __future__ import annotations

import os
import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

HALF_MAX = float(np.finfo(np.float16).max)  # 65504
HALF_TINY = float(np.finfo(np.float16).tiny)  # smallest normal, 6.1e-5


def cpu_has_fp16_conversion() -> bool:
    """Whether the host CPU converts half<->single in hardware (F16C on x86, base ISA on aarch64)."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    if machine in ("x86_64", "amd64", "i386", "i686"):
        try:
            import llvmlite.binding as llvm

            return bool(llvm.get_host_cpu_features().get("f16c", False))
        except Exception:
            return False
    return False


def _select_backend() -> str:
    forced = os.environ.get("MP_SLAM_FP16_BACKEND", "").strip().lower()
    if forced in ("f16c", "lut"):
        if forced == "f16c" and not cpu_has_fp16_conversion():
            raise RuntimeError("MP_SLAM_FP16_BACKEND=f16c, but this CPU has no hardware fp16 conversion")
        return forced
    if forced:
        raise ValueError(f"MP_SLAM_FP16_BACKEND must be 'f16c' or 'lut', got '{forced}'")
    return "f16c" if cpu_has_fp16_conversion() else "lut"


FP16_BACKEND: str = _select_backend()

# The table is built with numpy, so the fallback matches numpy bit for bit, NaN payloads included.
_HALF_TABLE = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)


@intrinsic
def _half_bits_to_float_hw(typingctx, bits):
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(bits), codegen


# The backend travels with the storage type: uint16 bit patterns widen in hardware, int16 ones
# through the table. numba compiles (and caches on disk) one kernel per argument type, so a cached
# hardware kernel can never be picked up by a process that must use the table, or the reverse.
HALF_STORAGE = np.dtype(np.uint16) if FP16_BACKEND == "f16c" else np.dtype(np.int16)


@njit(inline="always")
def _half_bits_to_float_lut_signed(bits):
    return _HALF_TABLE[np.uint16(bits)]


def to_half_bits(values: np.ndarray) -> np.ndarray:
    """Round to fp16 (round-to-nearest-even, as numpy does); the bit patterns in HALF_STORAGE."""
    return np.ascontiguousarray(values, dtype=np.float16).view(HALF_STORAGE)


def from_half_bits(bits: np.ndarray) -> np.ndarray:
    """Widen fp16 bit patterns (uint16 or int16) to fp32 in numpy (reference path, not for hot loops)."""
    return np.asarray(bits).view(np.float16).astype(np.float32)


def widen_half_bits(bits: np.ndarray) -> np.ndarray:
    """Widen with the kernel path of this process's backend (to test it against numpy)."""
    from .kernels import widen_stored

    return widen_stored(np.ascontiguousarray(bits).view(HALF_STORAGE))
