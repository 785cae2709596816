#!/usr/bin/env python3
"""Which layout of the bundle-adjustment Jacobian lets fp16 storage speed up the CGNR products?

For the problem-49-7776 BAL Jacobian (initial state) and the 50-keyframe synthetic window (fixed poses 0
and 49), this times one J x + Jᵀ y pair, as the CG loop runs it, for every layout of
:mod:`mp_slam_ros.solver.block_products` (and a few measured-only variants below) × storage {fp64, fp32,
fp16}, against the generic ``kernels.block_matvec`` / ``block_rmatvec`` the solver uses today. Also timed:
J x and Jᵀ y alone, the fused Jᵀ(J x) kernel, and the index work alone (gathering x and scattering Jᵀ y
without touching J), which no storage precision can speed up.

Timing: the kernels are called from a compiled loop (no Python dispatch per call, as inside
``pcg_normal``); the best of many ~2 ms batches after a warm-up, with the precisions and kernels of one
layout sampled in turn (the machine is shared: slower batches are interrupted ones). The compiled code
of each layout is checked for ``vcvtph2ps`` (fp16 widening) and its vector width.

Writes benchmarks/results/ba_kernels.md and ba_kernels.json (``--quick``: ba_kernels_quick.*).

    python benchmarks/bench_ba_kernels.py            # ~1.5 min on 2 shared cores, after the first compile
    python benchmarks/bench_ba_kernels.py --quick    # K = 16 layouts only, fewer samples
    python benchmarks/bench_ba_kernels.py --from-json benchmarks/results/ba_kernels.json   # re-render only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The numba kernel cache is the one mp_slam_ros chooses (imported through common), shared with the CLI and tests.
import numba  # noqa: E402
import numpy as np  # noqa: E402
from common import (  # noqa: E402
    RESULTS_DIR,
    data_origin,
    log,
    machine_info,
    machine_line,
    resolve_data_dir,
    write_outputs,
)
from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

from mp_slam_ros.ba.problem import BalBundleAdjustmentProblem  # noqa: E402
from mp_slam_ros.ba.synthetic import make_window  # noqa: E402
from mp_slam_ros.io.bal import read_bal  # noqa: E402
from mp_slam_ros.solver import block_products as bp  # noqa: E402
from mp_slam_ros.solver import kernels  # noqa: E402
from mp_slam_ros.solver.block_products import (  # noqa: E402
    _at,
    _gather,
    _scatter,
    _tile_contrib,
    _tile_matvec,
    _tile_matvec_shared0,
)
from mp_slam_ros.solver.half import FP16_BACKEND  # noqa: E402
from mp_slam_ros.solver.kernels import load  # noqa: E402
from mp_slam_ros.solver.linear import StoredJacobian  # noqa: E402
from mp_slam_ros.solver.precision import Precision  # noqa: E402

BAL_FILE = "minisam/problem-49-7776-pre.txt"
PRECISIONS = (Precision.FP64, Precision.FP32, Precision.FP16)
FM = bp._FASTMATH
GENERIC = "generic (kernels.block_*)"


# ---------------------------------------------------------------------------------------------
# Measured-only variants of the chunked layout (same packed arrays as bp "chunked").
# ---------------------------------------------------------------------------------------------
@njit(nogil=True, fastmath=FM)
def scratch_matvec(values, cols, ntiles, x, out, dims):
    """chunked, but each chunk is first widened into an fp32 scratch in one loop (then the products)."""
    RD = len(dims[0])
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    E = RD * CD
    xg = np.empty(CD * K, dtype=out.dtype)
    buf = np.empty(E * K, dtype=out.dtype)
    for t in range(ntiles):
        for q in range(E * K):
            buf[q] = load(values, _at(t * E * K, 0, 0, q))
        _gather(cols, t * 2 * K, K, x, xg, 0, dims)
        _tile_matvec(buf, 0, K, xg, out, t * RD * K, K, dims)
    return out


@njit(nogil=True, fastmath=FM)
def scratch_rmatvec(values, cols, ntiles, y, out, dims):
    RD = len(dims[0])
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    E = RD * CD
    ct = np.empty(CD * K, dtype=out.dtype)
    buf = np.empty(E * K, dtype=out.dtype)
    out[:] = 0
    for t in range(ntiles):
        for q in range(E * K):
            buf[q] = load(values, _at(t * E * K, 0, 0, q))
        _tile_contrib(buf, 0, K, y, t * RD * K, K, ct, 0, dims)
        _scatter(cols, t * 2 * K, K, ct, out, 0, dims)
    return out


@intrinsic
def hw_gather16(typingctx, cols, cpos, x, c, xg, gpos):
    """xg[gpos + l] = x[cols[cpos + l] + c] for l < 16 with one llvm.masked.gather (vgatherdps): LLVM's cost
    model never picks hardware gathers for the x loads by itself, so this forces them."""
    if not (isinstance(cols, types.Array) and cols.dtype == types.int32):
        return None

    def codegen(context, builder, sig, args):
        cols_a = context.make_array(sig.args[0])(context, builder, args[0])
        x_a = context.make_array(sig.args[2])(context, builder, args[2])
        xg_a = context.make_array(sig.args[4])(context, builder, args[4])
        i64 = ir.IntType(64)
        ety = context.get_data_type(sig.args[2].dtype)
        vi32 = ir.VectorType(ir.IntType(32), 16)
        vi64 = ir.VectorType(i64, 16)
        cp = builder.gep(cols_a.data, [builder.sext(args[1], i64) if args[1].type != i64 else args[1]])
        cvec = builder.load(builder.bitcast(cp, vi32.as_pointer()), align=4)
        idx = builder.sext(cvec, vi64)
        cval = args[3] if args[3].type == i64 else builder.sext(args[3], i64)
        splat = builder.insert_element(ir.Constant(vi64, ir.Undefined), cval, ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, ir.Constant(vi64, ir.Undefined), ir.Constant(vi32, [0] * 16))
        idx = builder.add(idx, splat)
        size = context.get_abi_sizeof(ety)
        base = builder.ptrtoint(x_a.data, i64)
        bsplat = builder.insert_element(ir.Constant(vi64, ir.Undefined), base, ir.Constant(ir.IntType(32), 0))
        bsplat = builder.shuffle_vector(bsplat, ir.Constant(vi64, ir.Undefined), ir.Constant(vi32, [0] * 16))
        addr = builder.add(bsplat, builder.mul(idx, ir.Constant(vi64, [size] * 16)))
        pty = ir.PointerType(ety)
        vp = ir.VectorType(pty, 16)
        ptrs = builder.inttoptr(addr, vp)
        vf = ir.VectorType(ety, 16)
        suffix = {4: "f32", 8: "f64"}[size]
        fnty = ir.FunctionType(vf, [vp, ir.IntType(32), ir.VectorType(ir.IntType(1), 16), vf])
        mod = builder.module
        name = f"llvm.masked.gather.v16{suffix}.v16p0"
        fn = mod.globals.get(name) or ir.Function(mod, fnty, name)
        mask = ir.Constant(ir.VectorType(ir.IntType(1), 16), [1] * 16)
        val = builder.call(fn, [ptrs, ir.Constant(ir.IntType(32), size), mask, ir.Constant(vf, ir.Undefined)])
        gp = builder.gep(xg_a.data, [args[5] if args[5].type == i64 else builder.sext(args[5], i64)])
        builder.store(val, builder.bitcast(gp, vf.as_pointer()), align=size)
        return context.get_dummy_value()

    return types.void(cols, cpos, x, c, xg, gpos), codegen


@njit(nogil=True, fastmath=FM)
def hwgather_matvec(values, cols, ntiles, x, out, dims):
    """chunked (K = 16) with x gathered by vgatherdps, one instruction per column and chunk."""
    RD = len(dims[0])
    W0 = len(dims[1])
    W1 = len(dims[2])
    K = len(dims[3])
    CD = W0 + W1
    xg = np.empty(CD * K, dtype=out.dtype)
    for t in range(ntiles):
        cb = t * 2 * K
        for c in range(W0):
            hw_gather16(cols, cb, x, c, xg, c * K)
        for c in range(W1):
            hw_gather16(cols, cb + K, x, c, xg, (W0 + c) * K)
        _tile_matvec(values, t * RD * CD * K, K, xg, out, t * RD * K, K, dims)
    return out


@njit(nogil=True, fastmath=FM)
def grouped_hwgather_matvec(values, cols, ntiles, x, out, dims):
    """grouped (K = 16) with the point columns gathered by vgatherdps."""
    RD = len(dims[0])
    W0 = len(dims[1])
    W1 = len(dims[2])
    K = len(dims[3])
    CD = W0 + W1
    xg = np.empty(CD * K, dtype=out.dtype)
    for t in range(ntiles):
        cb = t * (K + 1)
        for c in range(W1):
            hw_gather16(cols, cb + 1, x, c, xg, (W0 + c) * K)
        _tile_matvec_shared0(values, t * RD * CD * K, K, cols[cb], x, xg, out, t * RD * K, K, dims)
    return out


@njit(nogil=True)
def index_only_chunked(cols, ntiles, x, w, dims):
    """The precision-independent part of a chunked pair: gather x, scatter into w; J is not read."""
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    xg = np.empty(CD * K, dtype=x.dtype)
    w[:] = 0
    for t in range(ntiles):
        _gather(cols, t * 2 * K, K, x, xg, 0, dims)
        _scatter(cols, t * 2 * K, K, xg, w, 0, dims)
    return w


@njit(nogil=True)
def index_only_grouped(cols, ntiles, x, w, dims):
    """The same for grouped: only the point slot is gathered and scattered per observation."""
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    xg = np.empty(CD * K, dtype=x.dtype)
    w[:] = 0
    for t in range(ntiles):
        _gather(cols, t * (K + 1), 1, x, xg, 1, dims)
        _scatter(cols, t * (K + 1), 1, xg, w, 1, dims)
    return w


# ---------------------------------------------------------------------------------------------
# Timing loops: the kernels (numba dispatchers) are arguments, so each call is a direct call of
# compiled code, as in pcg_normal.
# ---------------------------------------------------------------------------------------------
@njit(nogil=True)
def _repeat(mv, rv, nv, values, cols, ntiles, x, q, w, dims, reps, mode):
    """mode 0: J x, 1: Jᵀ y, 2: the pair, 3: the fused kernel (one compiled loop per layout, not per mode)."""
    for _ in range(reps):
        if mode == 0 or mode == 2:
            mv(values, cols, ntiles, x, q, dims)
        if mode == 1 or mode == 2:
            rv(values, cols, ntiles, q, w, dims)
        if mode == 3:
            nv(values, cols, ntiles, x, w, dims)
    return w


@njit(nogil=True)
def _repeat_index(f, cols, ntiles, x, w, dims, reps):
    for _ in range(reps):
        f(cols, ntiles, x, w, dims)
    return w


@njit(nogil=True)
def _repeat_generic(values, col_start, offs, widths, rdim, cdim, x, q, w, reps, which):
    """which 0: J x, 1: Jᵀ y, 2: the pair, with today's kernels."""
    for _ in range(reps):
        if which != 1:
            kernels.block_matvec(values, col_start, offs, widths, rdim, cdim, x, q)
        if which != 0:
            kernels.block_rmatvec(values, col_start, offs, widths, rdim, cdim, q, w)
    return w


def interleaved_times(calls: dict[str, Any], samples: int, target: float = 2e-3) -> dict[str, list[float]]:
    """Seconds per call of each of `calls` (name -> call(reps)), sampled round-robin: batches of about
    `target` seconds, one per call in turn, so that all see the same load from other processes on the
    shared cores and their ratios stay stable while absolute times drift."""
    reps = {}
    for name, call in calls.items():
        call(1)  # warm-up (and compilation of the timing loop)
        t = time.perf_counter()
        call(3)
        reps[name] = max(1, int(target / max((time.perf_counter() - t) / 3, 1e-7)))
    out: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            t = time.perf_counter()
            call(reps[name])
            out[name].append((time.perf_counter() - t) / reps[name])
    return out


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios (a cross-check of the best-batch ratio)."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


# ---------------------------------------------------------------------------------------------
# Assembly: which instructions widen fp16, and how wide.
# ---------------------------------------------------------------------------------------------
def asm_summary(disp, args: tuple, fastmath: Any) -> dict[str, Any]:
    """Compile an uncached clone of `disp` for `args` (numba does not disassemble cached code)."""
    clone = numba.njit(nogil=True, fastmath=fastmath)(disp.py_func)
    clone(*args)
    asm = clone.inspect_asm(clone.signatures[0])
    ops = re.findall(r"^\s+(v[a-z0-9]+)\s+([^\n]*)", asm, re.M)

    def dest_width(operands: str) -> str:
        return operands.rsplit(",", 1)[-1].strip().lstrip("%")[:3]

    cvt = Counter(dest_width(o) for op, o in ops if op == "vcvtph2ps")
    arith = Counter(dest_width(o) for op, o in ops if op.startswith(("vfmadd", "vmul", "vadd")))
    return {
        "vcvtph2ps": dict(cvt),
        "vcvtph2ps_vector": cvt.get("zmm", 0) + cvt.get("ymm", 0),
        "gathers": sum(1 for op, _ in ops if "gather" in op),
        "fma": sum(1 for op, _ in ops if op.startswith("vfmadd")),
        "arith_by_width": dict(arith),
    }


# ---------------------------------------------------------------------------------------------
# Problems and configurations
# ---------------------------------------------------------------------------------------------
def load_problems(ba_dir: Path) -> dict[str, Any]:
    bal = BalBundleAdjustmentProblem(read_bal(ba_dir / BAL_FILE))
    _, jb = bal.linearize(bal.initial_state(), np.dtype(np.float64))
    prob, state = make_window(50, seed=0).problem(fixed_poses=(0, 49))
    _, jw = prob.linearize(state, np.dtype(np.float64))
    return {"problem-49-7776": jb, "window-50": jw}


def configs(quick: bool) -> list[tuple[str, str, int]]:
    """(label, packing kind, chunk); label names the kernels too."""
    out = [("blocks", "blocks", 1), ("soa", "soa", 16), ("chunked", "chunked", 16)]
    out += [("chunked-scratch", "chunked", 16), ("chunked-hwgather", "chunked", 16), ("grouped", "grouped", 16)]
    out += [("grouped-hwgather", "grouped", 16)]
    if not quick:
        out += [("chunked", "chunked", 8), ("chunked", "chunked", 32), ("soa", "soa", 32), ("grouped", "grouped", 32)]
    return out


def kernels_of(label: str, kind: str) -> tuple:
    mv, rv, nv = bp.kernels_for(kind)
    if label == "chunked-scratch":
        return scratch_matvec, scratch_rmatvec, None
    if label == "chunked-hwgather":
        return hwgather_matvec, rv, None
    if label == "grouped-hwgather":
        return grouped_hwgather_matvec, rv, None
    return mv, rv, nv


def measure_problem(name: str, jac, quick: bool, samples: int, want_asm: bool) -> tuple[list[dict], list[dict]]:
    # Disassembling means compiling an uncached copy (~5 s per kernel), so only the layouts themselves.
    asm_configs = {("grouped", 16)} if quick else {("blocks", 1), ("soa", 16), ("chunked", 16), ("grouped", 16)}
    rows: list[dict] = []
    asm_rows: list[dict] = []
    rng = np.random.default_rng(0)
    stored = {p.value: StoredJacobian.store(jac, p) for p in PRECISIONS}
    xs = {p.value: rng.standard_normal(jac.num_columns).astype(p.compute_dtype) for p in PRECISIONS}
    nrows = jac.shape[0]

    def row(label: str, kind: str, chunk: int, prec: str, t: dict, extra: dict) -> dict:
        # Best batch: on the shared cores, slower batches are the ones another process interrupted.
        best = {k: min(v) * 1e6 for k, v in t.items()}
        med = {k: statistics.median(v) * 1e6 for k, v in t.items()}
        normal = f"normal/{prec}" in t
        return {
            "problem": name, "layout": label, "kind": kind, "chunk": chunk, "storage": prec,
            "pair_us": best[f"pair/{prec}"], "matvec_us": best[f"mv/{prec}"], "rmatvec_us": best[f"rv/{prec}"],
            "normal_us": best.get(f"normal/{prec}"), "index_only_us": best.get("index"),
            "pair_vs_fp32": best[f"pair/{prec}"] / best["pair/fp32"],
            "normal_vs_fp32": best[f"normal/{prec}"] / best["normal/fp32"] if normal else None,
            "pair_median_us": med[f"pair/{prec}"],
            "pair_vs_fp32_median_of_rounds": median_ratio(t[f"pair/{prec}"], t["pair/fp32"]),
            "pair_samples_us": [v * 1e6 for v in t[f"pair/{prec}"]],
            **extra,
        }  # fmt: skip

    # The generic kernels of today's pcg_normal, on StoredJacobian's arrays.
    calls: dict[str, Any] = {}
    ref_w = {}
    for prec, st in stored.items():
        gargs = (st.values, st.col_start, st.slot_offsets, st.slot_widths, st.rdim, st.cdim)
        q = np.empty(nrows, xs[prec].dtype)
        w = np.empty(jac.num_columns, xs[prec].dtype)
        ref_w[prec] = kernels.block_rmatvec(*gargs, kernels.block_matvec(*gargs, xs[prec], q.copy()), w.copy())
        for mode, key in ((2, "pair"), (0, "mv"), (1, "rv")):
            calls[f"{key}/{prec}"] = partial(_repeat_generic, *gargs, xs[prec], q, w, which=mode)
        if want_asm and prec == "fp16":
            for kname, f, a in (("matvec", kernels.block_matvec, (*gargs, xs[prec], q)),
                                ("rmatvec", kernels.block_rmatvec, (*gargs, q, w))):  # fmt: skip
                asm_rows.append({"layout": "generic", "kernel": kname, **asm_summary(f, a, False)})
    t = interleaved_times(calls, samples)
    for prec, st in stored.items():
        extra = {
            "value_bytes": int(st.values.nbytes), "index_bytes": int(st.col_start.nbytes),
            "observations": int(st.col_start.shape[0]), "padded_observations": int(st.col_start.shape[0]),
        }  # fmt: skip
        rows.append(row(GENERIC, "generic", 1, prec, t, extra))
    log(f"{name} generic: pair fp32 {rows[-2]['pair_us']:.1f} us, fp16 {rows[-1]['pair_us']:.1f} us")

    for label, kind, chunk in configs(quick):
        mv, rv, nv = kernels_of(label, kind)
        # Layouts without a fused kernel pass mv in its place; mode 3 is then never run.
        fns = (mv, rv, mv if nv is None else nv)
        calls = {}
        extras = {}
        for prec, st in stored.items():
            packed = bp.pack_stored(st, kind, chunk)
            lay = packed.layout
            dims = lay.dims
            args = packed.args
            x = xs[prec]
            q = np.empty(lay.num_row_slots, x.dtype)
            w = np.empty(lay.num_columns, x.dtype)
            # The pair must reproduce the generic kernels (same storage, same vector precision).
            got = rv(*args, mv(*args, x, q, dims), w.copy(), dims)
            err = float(np.max(np.abs(got - ref_w[prec])) / max(np.max(np.abs(ref_w[prec])), 1e-300))
            if not err < (1e-12 if prec == "fp64" else 1e-4):
                raise AssertionError(f"{name} {label}/{chunk} {prec}: pair differs from generic by {err:.2e}")
            for mode, key in ((2, "pair"), (0, "mv"), (1, "rv"), (3, "normal")):
                if key != "normal" or nv is not None:
                    calls[f"{key}/{prec}"] = partial(_repeat, *fns, *args, x, q, w, dims, mode=mode)
            if label in ("chunked", "grouped") and prec == "fp32":
                f = index_only_chunked if kind == "chunked" else index_only_grouped
                calls["index"] = partial(_repeat_index, f, packed.cols, lay.num_tiles, x, w, dims)
            extras[prec] = {
                "value_bytes": int(packed.values.nbytes), "index_bytes": int(packed.cols.nbytes),
                "observations": lay.num_blocks, "padded_observations": lay.num_padded,
                "max_rel_diff_vs_generic": err,
            }  # fmt: skip
            if want_asm and prec == "fp16" and (label, chunk) in asm_configs:
                for kname, f, a in (("matvec", mv, (*args, x, q, dims)), ("rmatvec", rv, (*args, q, w, dims))):
                    asm_rows.append({"layout": f"{label}/{chunk}", "kernel": kname, **asm_summary(f, a, FM)})
        t = interleaved_times(calls, samples)
        for prec in stored:
            rows.append(row(label, kind, chunk, prec, t, extras[prec]))
        log(f"{name} {label}/{chunk}: pair fp32 {rows[-2]['pair_us']:.1f} us, fp16 {rows[-1]['pair_us']:.1f} us")

    gen = {r["storage"]: r for r in rows if r["kind"] == "generic"}
    for r in rows:
        r["GB_per_s"] = 2 * r["value_bytes"] / (r["pair_us"] * 1e-6) / 1e9
        r["speedup_vs_generic"] = gen[r["storage"]]["pair_us"] / r["pair_us"]
    return rows, asm_rows


def measure_lut(name: str, jac, samples: int) -> dict[str, Any]:
    """grouped/16 at fp16 with uint16 bits (F16C widening) vs the same bits as int16 (the table path, used
    on CPUs without F16C), interleaved."""
    st = StoredJacobian.store(jac, Precision.FP16)
    x = np.random.default_rng(0).standard_normal(jac.num_columns).astype(np.float32)
    calls = {}
    for label, dt in (("f16c (uint16)", np.uint16), ("lut (int16)", np.int16)):
        if label.startswith("f16c") and FP16_BACKEND != "f16c":
            continue
        pk = bp.pack(st.values.view(dt), st.col_start, st.rdim, tuple(st.slot_widths), st.num_columns, "grouped", 16)
        q = np.empty(pk.layout.num_row_slots, np.float32)
        w = np.empty(jac.num_columns, np.float32)
        fns = bp.kernels_for("grouped")
        calls[label] = partial(_repeat, *fns, *pk.args, x, q, w, pk.layout.dims, mode=2)
    t = interleaved_times(calls, samples)
    out = {"problem": name, **{k: min(v) * 1e6 for k, v in t.items()}}
    log(f"{name} grouped/16 fp16 widening: " + ", ".join(f"{k} {v:.1f} us" for k, v in out.items() if k != "problem"))
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def render(results: dict) -> str:
    rows = results["rows"]
    m = results["machine"]
    out = ["## Bundle-adjustment CG products by Jacobian layout and storage precision", ""]
    out.append(machine_line(m, with_gtsam=False))
    out.append(
        f"fp16 widening backend: {results['fp16_backend']}; LLVM target {results['llvm_cpu']}; caches "
        f"{results['caches']}. Times: best of {results['samples']} batches of ~2 ms per kernel, the precisions "
        "and kernels of a layout sampled in turn, kernels called from a compiled loop (as in `pcg_normal`), single "
        "thread; other agents share the 2 cores, so slower batches are interrupted ones (medians and every pair "
        "sample are in the JSON)."
    )
    out.append("")
    out.append(
        "One CG product pair = J x then Jᵀ(J x). GB/s = 2 x (bytes of the stored values) / pair time. "
        "fp16/fp32 = pair time ratio of the same layout (target ≤ 0.59). Fused = `*_normal`, Jᵀ(J x) reading each "
        "chunk once. Index only = gathering x and scattering Jᵀ y per observation without reading J (fp32 vectors)."
    )
    for prob in results["problems"]:
        pr = [r for r in rows if r["problem"] == prob]
        first = pr[0]
        out += ["", f"### {prob}: {first['observations']} observations", ""]
        out.append(
            "| layout | K | pair fp64 [µs] | pair fp32 [µs] | pair fp16 [µs] | **fp16/fp32** | GB/s fp32 | GB/s fp16 "
            "| speed-up vs generic (fp16) | J x fp32 / fp16 [µs] | Jᵀy fp32 / fp16 [µs] | fused fp32 / fp16 [µs] "
            "| fused fp16/fp32 | index only [µs] |"
        )
        out.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        seen = []
        for r in pr:
            key = (r["layout"], r["chunk"])
            if key in seen:
                continue
            seen.append(key)
            g = {p: next(x for x in pr if (x["layout"], x["chunk"]) == key and x["storage"] == p) for p in
                 ("fp64", "fp32", "fp16")}  # fmt: skip
            idx = g["fp32"]["index_only_us"]
            fused = f"{_f(g['fp32']['normal_us'])} / {_f(g['fp16']['normal_us'])}" if g["fp32"]["normal_us"] else "-"
            out.append(
                f"| {r['layout']} | {r['chunk']} | {_f(g['fp64']['pair_us'])} | {_f(g['fp32']['pair_us'])} | "
                f"{_f(g['fp16']['pair_us'])} | **{_f(g['fp16']['pair_vs_fp32'], 2)}** | {_f(g['fp32']['GB_per_s'])} | "
                f"{_f(g['fp16']['GB_per_s'])} | {_f(g['fp16']['speedup_vs_generic'])} | "
                f"{_f(g['fp32']['matvec_us'])} / {_f(g['fp16']['matvec_us'])} | "
                f"{_f(g['fp32']['rmatvec_us'])} / {_f(g['fp16']['rmatvec_us'])} | {fused} | "
                f"{_f(g['fp16'].get('normal_vs_fp32'), 2)} | {_f(idx)} |"
            )
    if results["asm"]:
        out += ["", "### fp16 widening in the compiled code (fp16 storage, window-50 signature)", ""]
        out.append(
            "Counts of instructions in the disassembly; the destination register tells the width (zmm = 16 fp32 "
            "lanes, xmm = scalar or 4 lanes, as in the scalar fallback loop LLVM keeps for its runtime alias checks)."
        )
        out += ["", "| layout | kernel | vcvtph2ps by width | vector vcvtph2ps | gathers | FMA | arithmetic by width |"]
        out.append("|---|---|---|--:|--:|--:|---|")
        for a in results["asm"]:
            out.append(
                f"| {a['layout']} | {a['kernel']} | {a['vcvtph2ps']} | {a['vcvtph2ps_vector']} | {a['gathers']} | "
                f"{a['fma']} | {a['arith_by_width']} |"
            )
    if results.get("lut"):
        out += ["", "### fp16 widening path (grouped, K = 16, pair at fp16 storage)", ""]
        keys = [k for k in results["lut"][0] if k != "problem"]
        out.append("| problem | " + " | ".join(f"{k} [µs]" for k in keys) + " |")
        out.append("|---|" + "--:|" * len(keys))
        for r in results["lut"]:
            out.append(f"| {r['problem']} | " + " | ".join(_f(r[k]) for k in keys) + " |")
    out += ["", "### Why", "", why(results)]
    return "\n".join(out)


def why(results: dict) -> str:
    rows = results["rows"]

    def get(prob: str, layout: str, chunk: int, storage: str = "fp16") -> dict:
        key = (prob, layout, chunk, storage)
        return next(r for r in rows if (r["problem"], r["layout"], r["chunk"], r["storage"]) == key)

    bal, win = results["problems"]
    tiled = [r for r in rows if r["kind"] != "generic" and r["storage"] == "fp16"]
    best = min(tiled, key=lambda r: r["pair_vs_fp32"])
    g16, g32 = get(bal, "grouped", 16), get(bal, "grouped", 16, "fp32")
    c16, c32 = get(bal, "chunked", 16), get(bal, "chunked", 16, "fp32")
    gen16, gen32 = get(bal, GENERIC, 1), get(bal, GENERIC, 1, "fp32")
    w16, w32 = get(win, "grouped", 16), get(win, "grouped", 16, "fp32")
    ti, tv = g32["index_only_us"], g32["pair_us"] - g32["index_only_us"]
    hw16, sc16 = get(bal, "chunked-hwgather", 16), get(bal, "chunked-scratch", 16)
    text = [
        f"**Result.** The best fp16/fp32 ratio of a J x + Jᵀ y pair is {best['pair_vs_fp32']:.2f} "
        f"({best['problem']}, {best['layout']}, K = {best['chunk']}); the 0.59 target is not reached on this CPU. "
        f"The layout matters far more than the precision: grouped K = 16 runs the pair in {_f(g32['pair_us'])} µs "
        f"(fp32) / {_f(g16['pair_us'])} µs (fp16) on {bal}, against {_f(gen32['pair_us'])} / {_f(gen16['pair_us'])} "
        f"µs for today's generic kernels ({g16['speedup_vs_generic']:.0f}x at fp16).",
        "",
        f"**Why the generic kernels do not care about fp16** (ratio {gen16['pair_vs_fp32']:.2f}): they widen a "
        "block with vectors but multiply one scalar at a time, with run-time slot widths and a branch per slot, "
        f"so they stream {gen16['GB_per_s']:.1f} GB/s of fp16 values, nowhere near a memory limit. Compile-time "
        "widths alone (blocks) halve the time. Vectorising across the observations of a tile (soa, chunked) needs "
        "two more things, found in the disassembly: unsigned indices (numba wraps negative signed indices, "
        "`i < 0 → i + n`, and that select made LLVM load the values with gathers: 2x slower, measured while "
        "developing), and K >= 16 "
        "(an 8-iteration loop is fully unrolled before the loop vectoriser runs, and the SLP vectoriser cannot "
        "prove numba's arrays do not alias: chunked K = 8 stays scalar).",
        "",
        f"**What limits the ratio: index work.** With the arithmetic in zmm registers and `vcvtph2ps` widening "
        "straight from memory, each observation still costs a gather of x into the tile and a scatter of Jᵀ y "
        "with scalar read-modify-writes, and that does not depend on the storage precision. chunked K = 16 "
        f"spends {_f(c32['index_only_us'])} µs of its {_f(c32['pair_us'])} µs fp32 pair on it (12 columns per "
        f"observation; ratio {c16['pair_vs_fp32']:.2f}). grouped puts one camera per chunk, so only the 3 point "
        f"columns are gathered and scattered per observation ({_f(ti)} µs), the camera's x is loop-invariant and its "
        "Jᵀ y terms are summed in vector lanes. With t_i = "
        f"{_f(ti)} µs fixed and t_v = {_f(tv)} µs of value work at fp32, even an exact halving of t_v gives "
        f"(t_i + t_v/2) / (t_i + t_v) = {(ti + tv / 2) / (ti + tv):.2f}; measured: {g16['pair_vs_fp32']:.2f}, with "
        f"the value part going {_f(tv)} → {_f(g16['pair_us'] - ti)} µs (x{(g16['pair_us'] - ti) / tv:.2f}; J x alone "
        f"{_f(g32['matvec_us'])} → {_f(g16['matvec_us'])} µs). The fp32 values ({g32['value_bytes'] / 1e6:.1f} MB) "
        f"come from L3 at {g32['GB_per_s']:.0f} GB/s within the pair; fp16's {g16['value_bytes'] / 1e6:.1f} MB do "
        "not fit the 1 MB L2 either, so both stream from L3, which on this CPU is fast enough that the "
        "precision-independent index work is a third or more of the pair.",
        "",
        f"**{win}** ({w32['value_bytes'] / 1e3:.0f} kB at fp32, L2-resident): fp16/fp32 = "
        f"{w16['pair_vs_fp32']:.2f}. No memory level is the limit; the kernel is bound by instructions.",
        "",
        f"**Variants.** Forcing hardware gathers of x (`vgatherdps` through an LLVM intrinsic; LLVM's cost model "
        f"never emits them here by itself): chunked-hwgather {_f(hw16['pair_us'])} µs at fp16 vs chunked "
        f"{_f(c16['pair_us'])}, i.e. no faster than scalar loads on this CPU. Widening a chunk into an fp32 scratch "
        f"before the products (chunked-scratch, {_f(sc16['pair_us'])} µs) adds a store and a load per value. The "
        f"fused Jᵀ(J x) kernel reads each chunk once: grouped {_f(g32['normal_us'])} / {_f(g16['normal_us'])} µs "
        f"(fp32 / fp16) against the pair's {_f(g32['pair_us'])} / {_f(g16['pair_us'])}. K = 32 pads more "
        "observations (each camera group is padded to whole chunks) without vectorising better. A 0.59 ratio "
        "would need a Jacobian streamed from DRAM at fp32 (well beyond the 32 MB L3), or index work far below the "
        "value work.",
        "",
        "**Noise.** The machine is shared; between runs of this script the fp16/fp32 ratios moved by up to about "
        "±0.08 (mostly through the fp32 times, whose 3 MB stream suffers first when others use L3). The JSON keeps "
        "every pair sample and, as a cross-check, the median of the per-round ratios.",
    ]
    return "\n".join(text)


def cache_sizes() -> str:
    out = []
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        try:
            level = (d / "level").read_text().strip()
            kind = (d / "type").read_text().strip()
            size = (d / "size").read_text().strip()
        except OSError:
            continue
        if kind != "Instruction":
            out.append(f"L{level} {size}")
    return ", ".join(out) or "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="shared data (default $MP_SLAM_SHARED_DATA or ../shared/data)")
    ap.add_argument("--quick", action="store_true", help="K = 16 layouts only, 7 samples per timing")
    ap.add_argument("--samples", type=int, default=None, help="batches per timing (default 21, quick 7)")
    ap.add_argument("--no-asm", action="store_true", help="skip the disassembly check")
    ap.add_argument("--out-dir", default=str(RESULTS_DIR))
    ap.add_argument("--from-json", metavar="FILE", help="re-render the markdown of an earlier JSON, run nothing")
    args = ap.parse_args()
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        stem = "ba_kernels_quick" if results["quick"] else "ba_kernels"
        write_outputs(results, Path(args.out_dir), stem, render(results))
        return 0
    samples = args.samples or (7 if args.quick else 21)
    ba_dir, origin = resolve_data_dir(args.data, "ba", lambda c: (c / BAL_FILE).is_file(), BAL_FILE)
    import llvmlite.binding as llvm

    machine = machine_info()
    log(f"data: {ba_dir} ({origin}); NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(in memory)')}")
    problems = load_problems(ba_dir)
    rows: list[dict] = []
    asm: list[dict] = []
    t0 = time.perf_counter()
    for name, jac in problems.items():
        r, a = measure_problem(name, jac, args.quick, samples, want_asm=not args.no_asm and name == "window-50")
        rows += r
        asm += a
    lut = [measure_lut(name, jac, samples) for name, jac in problems.items()]
    results = {
        "machine": machine,
        "fp16_backend": FP16_BACKEND,
        "llvm_cpu": llvm.get_host_cpu_name(),
        "caches": cache_sizes(),
        "data": data_origin(origin),
        "quick": args.quick,
        "samples": samples,
        "problems": list(problems),
        "rows": rows,
        "asm": asm,
        "lut": lut,
        "elapsed_s": time.perf_counter() - t0,
    }
    write_outputs(results, Path(args.out_dir), "ba_kernels_quick" if args.quick else "ba_kernels", render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
