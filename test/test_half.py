"""Tests for real half-precision storage: mp_slam_ros.solver.half and the fp16 kernel paths.

fp16 values live in uint16 arrays (IEEE binary16 bit patterns) and kernels widen them to fp32,
either with the hardware conversion (``f16c``) or with a 65,536-entry table (``lut``). The two
paths must give numpy's values, and kernels built on either must give the same products.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import mp_slam_ros
from mp_slam_ros.solver import kernels
from mp_slam_ros.solver.half import (
    FP16_BACKEND,
    HALF_MAX,
    HALF_STORAGE,
    HALF_TINY,
    cpu_has_fp16_conversion,
    from_half_bits,
    to_half_bits,
    widen_half_bits,
)
from mp_slam_ros.solver.linear import PrecisionOverflow, store_values
from mp_slam_ros.solver.precision import Precision

ALL_BITS = np.arange(65536, dtype=np.uint16)
NUMPY_WIDE = ALL_BITS.view(np.float16).astype(np.float32)
NAN_MASK = np.isnan(NUMPY_WIDE)

# Unit roundoffs: fp16 has an 11-bit significand, fp32 a 24-bit one.
U16 = 2.0**-11
U32 = 2.0**-24

PACKAGE_PARENT = Path(mp_slam_ros.__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT = 240  # seconds; a cold numba compile of the kernels takes a few seconds


# ---------------------------------------------------------------------------------------------
# Conversions against numpy, all 65,536 patterns
# ---------------------------------------------------------------------------------------------
def test_numpy_reference_has_the_expected_nans():
    # 2 signs x 1023 non-zero mantissas with an all-ones exponent.
    assert int(NAN_MASK.sum()) == 2046


def test_widen_half_bits_matches_numpy_for_every_pattern():
    wide = widen_half_bits(ALL_BITS)
    assert wide.dtype == np.float32 and wide.shape == (65536,)
    # NaN exactly where numpy has NaN, with the same sign bit.
    np.testing.assert_array_equal(np.isnan(wide), NAN_MASK)
    np.testing.assert_array_equal(np.signbit(wide[NAN_MASK]), np.signbit(NUMPY_WIDE[NAN_MASK]))
    # Every other value bit for bit: signed zeros, subnormals, infinities, the largest finite.
    np.testing.assert_array_equal(wide.view(np.uint32)[~NAN_MASK], NUMPY_WIDE.view(np.uint32)[~NAN_MASK])
    if FP16_BACKEND == "lut":
        # The table is built with numpy, so even NaN payloads match (documented in half.py).
        # The hardware path quiets signalling NaNs, so payloads are only compared here.
        np.testing.assert_array_equal(wide.view(np.uint32), NUMPY_WIDE.view(np.uint32))


def test_from_half_bits_matches_numpy_for_every_pattern():
    wide = from_half_bits(ALL_BITS)
    np.testing.assert_array_equal(wide.view(np.uint32), NUMPY_WIDE.view(np.uint32))


@pytest.mark.parametrize("wide_dtype", [np.float32, np.float64])
def test_to_half_bits_inverts_widening_for_every_pattern(wide_dtype):
    with np.errstate(invalid="ignore"):  # numpy warns when it narrows NaN payloads
        bits = to_half_bits(NUMPY_WIDE.astype(wide_dtype))
    assert bits.dtype == HALF_STORAGE and bits.shape == (65536,)
    bits = bits.view(np.uint16)
    np.testing.assert_array_equal(bits[~NAN_MASK], ALL_BITS[~NAN_MASK])
    # A NaN stays a NaN (all-ones exponent, non-zero mantissa) with its sign.
    nan_bits = bits[NAN_MASK]
    assert np.all((nan_bits & 0x7C00) == 0x7C00) and np.all((nan_bits & 0x03FF) != 0)
    np.testing.assert_array_equal(nan_bits >> 15, ALL_BITS[NAN_MASK] >> 15)


def test_to_half_bits_rounds_to_nearest_even():
    one = 0x3C00  # bits of 1.0
    # 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties go to the even significand (1.0).
    # 1 + 3*2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: ties go to 1 + 2^-9 (even).
    values = np.array(
        [1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-11 + 2.0**-20, 1.0 + 2.0**-11 - 2.0**-20, -(1.0 + 2.0**-11)]
    )
    expected = np.array([one, one + 2, one + 1, one, 0x8000 | one], dtype=np.uint16)
    np.testing.assert_array_equal(to_half_bits(values).view(np.uint16), expected)


def test_to_half_bits_matches_numpy_on_random_values():
    rng = np.random.default_rng(7)
    # Exponents from deep subnormal to beyond the fp16 range (those become inf, as in numpy).
    values = rng.standard_normal(200_000) * np.exp2(rng.uniform(-30, 17, 200_000))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(to_half_bits(values).view(np.uint16), values.astype(np.float16).view(np.uint16))


# ---------------------------------------------------------------------------------------------
# Backend selection
# ---------------------------------------------------------------------------------------------
def test_backend_in_use_matches_the_cpu_or_the_override():
    assert FP16_BACKEND in ("f16c", "lut")
    backend = FP16_BACKEND
    forced = os.environ.get("MP_SLAM_FP16_BACKEND", "").strip().lower()
    if forced:
        assert backend == forced
    else:
        assert backend == ("f16c" if cpu_has_fp16_conversion() else "lut")


def _subprocess_env(cache_dir: Path, backend: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MP_SLAM_FP16_BACKEND", None)
    if backend is not None:
        env["MP_SLAM_FP16_BACKEND"] = backend
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH")) if p)
    return env


# Run in a subprocess with whatever backend the environment selects. Computes fp16 block products
# on a fixed problem and the widened table (unless "matvec-only"), and reports whether the uint16
# build of block_matvec was compiled in that process (not loaded from the cache) and, if so,
# whether its LLVM IR holds the hardware conversion (`fpext half`).
_KERNEL_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import numpy as np
    from mp_slam_ros.solver import half, kernels

    def problem():
        rng = np.random.default_rng(3)
        nb, rdim, widths, ncols = 50, 3, (3, 3), 60
        cdim = sum(widths)
        values = half.to_half_bits(rng.uniform(-1.0, 1.0, nb * rdim * cdim))
        col_start = rng.integers(0, ncols // 3, size=(nb, 2)) * 3
        col_start[::7, 1] = -1
        x = rng.uniform(-1.0, 1.0, ncols).astype(np.float32)
        y = rng.uniform(-1.0, 1.0, nb * rdim).astype(np.float32)
        args = (values, col_start, np.array([0, 3]), np.array(widths), rdim, cdim)
        return args, x, y, nb * rdim, ncols

    def products(full=True):
        args, x, y, m, n = problem()
        out = {"jx": kernels.block_matvec(*args, x, np.empty(m, np.float32))}
        if full:
            out["jty"] = kernels.block_rmatvec(*args, y, np.empty(n, np.float32))
            out["wide"] = half.widen_half_bits(np.arange(65536, dtype=np.uint16))
        return out

    if __name__ == "__main__":
        out_path, mode = sys.argv[1], sys.argv[2]
        arrays = products(full=(mode == "full"))
        storage = str(half.HALF_STORAGE)  # uint16 (hardware widening) or int16 (table)
        sig = [s for s in kernels.block_matvec.signatures if str(s[0].dtype) == storage][0]
        hits = int(kernels.block_matvec.stats.cache_hits.get(sig, 0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ir = kernels.block_matvec.inspect_llvm(sig) if hits == 0 else ""
        np.savez(out_path, **arrays)
        print(json.dumps({"backend": half.FP16_BACKEND, "cache_hits": hits, "ir_has_half": "fpext half" in ir}))
    """
)


def _write_script(tmp: Path) -> Path:
    script = tmp / "fp16_kernels.py"
    script.write_text(_KERNEL_SCRIPT)
    return script


def _run_kernel_script(tmp: Path, cache_dir: Path, backend: str | None, mode: str) -> tuple[dict, dict]:
    out = tmp / f"{mode}_{backend}.npz"
    proc = subprocess.run(
        [sys.executable, str(_write_script(tmp)), str(out), mode],
        env=_subprocess_env(cache_dir, backend),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as data:
        arrays = {k: data[k] for k in data.files}
    return info, arrays


def _in_process_products(tmp: Path) -> dict:
    """The same products computed here, with this process's (default) backend."""
    namespace: dict = {"__name__": "fp16_kernels"}
    exec(compile(_KERNEL_SCRIPT, str(_write_script(tmp)), "exec"), namespace)
    return namespace["products"]()


def test_forced_lut_backend_matches_default_backend(tmp_path):
    """MP_SLAM_FP16_BACKEND=lut with a fresh NUMBA_CACHE_DIR: the table path is really compiled
    in, and gives bit-identical widening (NaNs aside) and bit-identical kernel products."""
    info, lut = _run_kernel_script(tmp_path, tmp_path / "numba_cache", "lut", "full")
    assert info["backend"] == "lut"
    assert info["cache_hits"] == 0, "a fresh cache directory cannot hold a compiled kernel"
    assert not info["ir_has_half"], "the LUT build must not contain the hardware half conversion"
    default = _in_process_products(tmp_path)
    # LUT widening equals numpy bit for bit, NaN payloads included, and the default path (NaNs aside).
    np.testing.assert_array_equal(lut["wide"].view(np.uint32), NUMPY_WIDE.view(np.uint32))
    np.testing.assert_array_equal(lut["wide"].view(np.uint32)[~NAN_MASK], default["wide"].view(np.uint32)[~NAN_MASK])
    # Widening is exact either way and the accumulation order is fixed, so products are identical.
    assert np.all(np.isfinite(lut["jx"])) and np.any(lut["jx"] != 0)
    np.testing.assert_array_equal(lut["jx"], default["jx"])
    np.testing.assert_array_equal(lut["jty"], default["jty"])


@pytest.mark.skipif(not cpu_has_fp16_conversion(), reason="the default backend is already lut on this CPU")
def test_forced_lut_backend_is_honoured_with_a_warm_cache(tmp_path):
    cache = tmp_path / "numba_cache"
    warm, _ = _run_kernel_script(tmp_path, cache, "f16c", "matvec-only")
    if not (warm["backend"] == "f16c" and warm["cache_hits"] == 0 and warm["ir_has_half"]):
        pytest.fail(f"could not warm the cache with an f16c build: {warm}")
    info, _ = _run_kernel_script(tmp_path, cache, "lut", "matvec-only")
    assert info["backend"] == "lut"
    assert info["cache_hits"] == 0, "the LUT process loaded the f16c build of block_matvec from the cache"


def test_invalid_backend_override_is_rejected(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import mp_slam_ros.solver.half"],
        env=_subprocess_env(tmp_path, "avx512"),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    assert proc.returncode != 0
    assert "MP_SLAM_FP16_BACKEND" in proc.stderr and "avx512" in proc.stderr


# ---------------------------------------------------------------------------------------------
# fp16 matrix-vector products against fp64, with a stated error bound
# ---------------------------------------------------------------------------------------------
# Error bound. Let a_ij in [-1, 1] with |a_ij| >= 2^-14 (normal fp16 range) and x_j exact in fp32.
#  1. Storage: a^_ij = fl16(a_ij) = a_ij (1 + d_ij), |d_ij| <= u16 = 2^-11 (round to nearest).
#  2. The kernel widens a^_ij to fp32 exactly, forms each product a^_ij x_j in fp32 and adds the
#     products in fp32. An output entry with n products sees at most n roundings per term (one
#     product, at most n - 1 additions, in whatever order the blocks are visited), so by the
#     standard summation bound (Higham, Accuracy and Stability, 3.1 and 3.5)
#         |fl32(sum a^_ij x_j) - sum a^_ij x_j| <= g_n sum |a^_ij x_j|,   g_n = n u32 / (1 - n u32),
#     with u32 = 2^-24.
#  3. |sum (a^_ij - a_ij) x_j| <= u16 sum |a_ij x_j| and sum |a^_ij x_j| <= (1 + u16) sum |a_ij x_j|.
# Together:
#         |y16 - y64| <= (u16 + g_n (1 + u16)) sum_j |a_ij x_j|
#                      = (2^-11 + n 2^-24) sum_j |a_ij x_j| + O(n 2^-35) sum_j |a_ij x_j|.
# The reference y64 is an fp64 product (its own error is below n 2^-53, 2^29 times smaller).
# The asserted bound is the rigorous one; it exceeds the first-order (2^-11 + n 2^-24) by a
# relative n 2^-35, far below anything a wrong kernel would produce.
def _bound_factor(n: np.ndarray) -> np.ndarray:
    g = n * U32 / (1.0 - n * U32)
    return U16 + g * (1.0 + U16)


def _random_block_problem(seed: int, nb: int = 400, rdim: int = 3, widths=(3, 3), nvars: int = 60):
    rng = np.random.default_rng(seed)
    cdim = sum(widths)
    values = rng.uniform(-1.0, 1.0, (nb, rdim, cdim))
    # Keep every value a normal fp16 number, where rounding is relative (2^-11).
    values = np.where(np.abs(values) < 2.0**-10, 0.5, values)
    bs = widths[0]
    col_start = np.stack([rng.integers(0, nvars, nb) * bs, rng.integers(0, nvars, nb) * bs], axis=1).astype(np.int64)
    col_start[rng.random(nb) < 0.1, 1] = -1  # some slots belong to fixed variables
    ncols = nvars * bs
    dense = np.zeros((nb * rdim, ncols))
    for b in range(nb):
        for s, off in enumerate((0, widths[0])):
            c0 = col_start[b, s]
            if c0 >= 0:
                dense[b * rdim : (b + 1) * rdim, c0 : c0 + widths[s]] += values[b, :, off : off + widths[s]]
    # Structural count of products per row / per column (a repeated column counts twice).
    slot_used = (col_start >= 0).astype(int) * np.array(widths)
    n_row = np.repeat(slot_used.sum(axis=1), rdim).astype(float)
    n_col = np.zeros(ncols)
    for s, w in enumerate(widths):
        ok = col_start[:, s] >= 0
        for c in range(w):
            np.add.at(n_col, col_start[ok, s] + c, rdim)
    offsets = np.array([0, widths[0]], dtype=np.int64)
    return values, col_start, offsets, np.array(widths, dtype=np.int64), rdim, cdim, dense, n_row, n_col, rng


def _abs_products(x_abs: np.ndarray, values, col_start, offsets, widths, rdim) -> np.ndarray:
    """sum_j |a_ij x_j| per row, one term per stored value (as the kernel forms them)."""
    out = np.zeros(values.shape[0] * rdim)
    for b in range(values.shape[0]):
        for s in range(col_start.shape[1]):
            c0 = col_start[b, s]
            if c0 < 0:
                continue
            w = widths[s]
            out[b * rdim : (b + 1) * rdim] += np.abs(values[b, :, offsets[s] : offsets[s] + w]) @ x_abs[c0 : c0 + w]
    return out


def test_fp16_block_matvec_error_bound():
    values, col_start, offsets, widths, rdim, cdim, dense, n_row, _, rng = _random_block_problem(11)
    x = rng.uniform(-1.0, 1.0, dense.shape[1]).astype(np.float32)  # exact in fp32 and fp64
    bits = to_half_bits(values.reshape(-1))
    y16 = kernels.block_matvec(bits, col_start, offsets, widths, rdim, cdim, x, np.empty(dense.shape[0], np.float32))
    y64 = dense @ x.astype(np.float64)
    scale = _abs_products(np.abs(x.astype(np.float64)), values, col_start, offsets, widths, rdim)
    err = np.abs(y16.astype(np.float64) - y64)
    bound = _bound_factor(n_row) * scale
    assert np.all(err <= bound), f"worst err/bound = {np.max(err / bound):.3f}"
    # Not vacuous: the fp16 rounding is really there (a kernel reading fp32 or fp64 values would
    # stay below n 2^-24 ~ 2^-20 relative here), and the bound is not orders of magnitude loose.
    rel = err / scale
    assert np.max(err) > 0
    assert np.max(rel) > 2.0**-16
    assert np.max(err / bound) > 0.05


def test_fp16_block_rmatvec_error_bound():
    values, col_start, offsets, widths, rdim, cdim, dense, _, n_col, rng = _random_block_problem(12)
    y = rng.uniform(-1.0, 1.0, dense.shape[0]).astype(np.float32)
    bits = to_half_bits(values.reshape(-1))
    out = np.full(dense.shape[1], np.nan, dtype=np.float32)  # the kernel must overwrite everything
    z16 = kernels.block_rmatvec(bits, col_start, offsets, widths, rdim, cdim, y, out)
    z64 = dense.T @ y.astype(np.float64)
    # sum_i |a_ij y_i| with one term per stored value (a column hit by both slots of a block has
    # two terms, summed separately by the kernel).
    scale = np.zeros(dense.shape[1])
    for s, off in enumerate(offsets):
        ok = col_start[:, s] >= 0
        contrib = np.einsum("brc,br->bc", np.abs(values[ok, :, off : off + widths[s]]), np.abs(y.reshape(-1, rdim)[ok]))
        for c in range(widths[s]):
            np.add.at(scale, col_start[ok, s] + c, contrib[:, c])
    err = np.abs(z16.astype(np.float64) - z64)
    touched = n_col > 0
    bound = _bound_factor(n_col) * scale
    assert np.all(err[touched] <= bound[touched]), f"worst err/bound = {np.max(err[touched] / bound[touched]):.3f}"
    assert np.all(z16[~touched] == 0)
    assert np.max(err) > 0
    assert np.max(err[touched] / scale[touched]) > 2.0**-16


def test_fp16_products_equal_fp32_products_of_the_rounded_values():
    # The same kernel on fp32 values that are the fp16-rounded ones: widening is exact, so the
    # two storage types must give bit-identical products.
    values, col_start, offsets, widths, rdim, cdim, dense, _, _, rng = _random_block_problem(13)
    bits = to_half_bits(values.reshape(-1))
    as32 = from_half_bits(bits)
    x = rng.uniform(-1.0, 1.0, dense.shape[1]).astype(np.float32)
    m = dense.shape[0]
    a = kernels.block_matvec(bits, col_start, offsets, widths, rdim, cdim, x, np.empty(m, np.float32))
    b = kernels.block_matvec(as32, col_start, offsets, widths, rdim, cdim, x, np.empty(m, np.float32))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# store_values
# ---------------------------------------------------------------------------------------------
def test_store_values_fp16_accepts_the_largest_half():
    values = np.array([HALF_MAX, -HALF_MAX, HALF_TINY, 0.0, 1.0 / 3.0])
    stored = store_values(values, Precision.FP16, "matrix_storage")
    assert stored.dtype == HALF_STORAGE
    np.testing.assert_array_equal(stored.view(np.uint16), values.astype(np.float16).view(np.uint16))
    assert from_half_bits(stored)[0] == 65504.0


@pytest.mark.parametrize("peak", [65504.5, 65520.0, 1e5, -7e4, 1e300])
def test_store_values_fp16_overflow_raises(peak):
    values = np.array([0.5, peak, -0.25])
    with pytest.raises(PrecisionOverflow) as info:
        store_values(values, Precision.FP16, "matrix_storage")
    err = info.value
    assert isinstance(err, ArithmeticError)
    assert err.stage == "matrix_storage" and err.precision is Precision.FP16
    assert "65504" in str(err)


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.FP32, Precision.FP64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_store_values_non_finite_raises(precision, bad):
    values = np.array([1.0, bad, 2.0])
    with pytest.raises(PrecisionOverflow, match="non-finite") as info:
        store_values(values, precision, "preconditioner")
    assert info.value.stage == "preconditioner" and info.value.precision is precision


def test_store_values_fp32_overflow_raises():
    with np.errstate(over="ignore"), pytest.raises(PrecisionOverflow, match="overflow"):
        store_values(np.array([1.0, 1e39]), Precision.FP32, "matrix_storage")


def test_store_values_wider_types_keep_dtype():
    values = np.linspace(-1e5, 1e5, 7)
    assert store_values(values, Precision.FP32, "matrix_storage").dtype == np.float32
    stored64 = store_values(values, Precision.FP64, "matrix_storage")
    assert stored64.dtype == np.float64
    np.testing.assert_array_equal(stored64, values)
