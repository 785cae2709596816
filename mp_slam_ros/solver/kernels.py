"""numba kernels for sparse products and triangular solves at any storage precision.

Every kernel is generic over the storage type of the matrix values: float64, float32, or 16-bit
integers holding fp16 bit patterns (see :mod:`half`). Values are widened with :func:`load` and accumulated
in the type of the output vector, so fp16 storage accumulates in fp32 and nothing here names a
dtype: the caller's :class:`PrecisionConfig` decides by the arrays it passes in.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from .half import _half_bits_to_float_hw, _half_bits_to_float_lut_signed
from .jit import jit


def load(values, k):  # pragma: no cover - replaced by the overload inside kernels
    return values[k]


@overload(load, inline="always")
def _load_overload(values, k):
    # fp16 bit patterns: uint16 widens in hardware (F16C / aarch64), int16 through the table.
    if values.dtype == types.uint16:
        return lambda values, k: _half_bits_to_float_hw(values[k])
    if values.dtype == types.int16:
        return lambda values, k: _half_bits_to_float_lut_signed(values[k])
    return lambda values, k: values[k]


def acc_zero(out):  # pragma: no cover - replaced by the overload inside kernels
    return out.dtype.type(0)


@overload(acc_zero, inline="always")
def _acc_zero_overload(out):
    if out.dtype == types.float32:
        return lambda out: np.float32(0.0)
    return lambda out: 0.0


@jit(nogil=True)
def widen_stored(values):
    """Stored values (any storage type) widened to fp32, through the same path as the kernels."""
    out = np.empty(values.shape[0], dtype=np.float32)
    for k in range(values.shape[0]):
        out[k] = load(values, k)
    return out


# ---------------------------------------------------------------------------------------------
# Block-row Jacobian: y = J x and y = J^T x without forming J^T J.
# Every residual block has rdim rows and the same cdim columns, split into slots (e.g. pose i,
# pose j). values holds each block row-major and contiguous, so the fp16 -> fp32 widening of a
# whole block is one vectorisable loop before the small dense products. col_start[rb, s] is the
# first column of slot s in x, or -1 when that variable is held fixed.
# ---------------------------------------------------------------------------------------------
@jit(nogil=True)
def block_matvec(values, col_start, slot_offset, slot_width, rdim, cdim, x, out):
    nrb = col_start.shape[0]
    nslots = col_start.shape[1]
    bsize = rdim * cdim
    buf = np.empty(bsize, dtype=out.dtype)
    for rb in range(nrb):
        base = rb * bsize
        for q in range(bsize):
            buf[q] = load(values, base + q)
        for r in range(rdim):
            acc = acc_zero(out)
            for s in range(nslots):
                c0 = col_start[rb, s]
                if c0 < 0:
                    continue
                off = r * cdim + slot_offset[s]
                for c in range(slot_width[s]):
                    acc += buf[off + c] * x[c0 + c]
            out[rb * rdim + r] = acc
    return out


@jit(nogil=True)
def block_rmatvec(values, col_start, slot_offset, slot_width, rdim, cdim, y, out):
    nrb = col_start.shape[0]
    nslots = col_start.shape[1]
    bsize = rdim * cdim
    buf = np.empty(bsize, dtype=out.dtype)
    out[:] = 0
    for rb in range(nrb):
        base = rb * bsize
        for q in range(bsize):
            buf[q] = load(values, base + q)
        y0 = rb * rdim
        for s in range(nslots):
            c0 = col_start[rb, s]
            if c0 < 0:
                continue
            off = slot_offset[s]
            for c in range(slot_width[s]):
                acc = acc_zero(out)
                for r in range(rdim):
                    acc += buf[r * cdim + off + c] * y[y0 + r]
                out[c0 + c] += acc
    return out


@jit(nogil=True)
def block_column_sumsq(values, col_start, slot_offset, slot_width, rdim, cdim, out):
    """out[c] = sum of squares of column c of the block-row J, accumulated in the type of out."""
    nrb = col_start.shape[0]
    bsize = rdim * cdim
    out[:] = 0
    for rb in range(nrb):
        base = rb * bsize
        for s in range(col_start.shape[1]):
            c0 = col_start[rb, s]
            if c0 < 0:
                continue
            for c in range(slot_width[s]):
                acc = acc_zero(out)
                for r in range(rdim):
                    v = load(values, base + r * cdim + slot_offset[s] + c)
                    acc += v * v
                out[c0 + c] += acc
    return out


@jit(nogil=True)
def scale_block_columns(values, col_start, slot_offset, slot_width, rdim, cdim, column_scale, out):
    """out = J S^-1 in block-row layout (fp64 or fp32 out); slots of fixed variables are zeroed,
    as they are never read and must not trip a storage range check."""
    nrb = col_start.shape[0]
    bsize = rdim * cdim
    for rb in range(nrb):
        base = rb * bsize
        for s in range(col_start.shape[1]):
            c0 = col_start[rb, s]
            for r in range(rdim):
                k = base + r * cdim + slot_offset[s]
                for c in range(slot_width[s]):
                    out[k + c] = values[k + c] / column_scale[c0 + c] if c0 >= 0 else 0.0
    return out


# ---------------------------------------------------------------------------------------------
# Dense helpers of the block factorisation (inlined into the per-block-size factor below).
# ---------------------------------------------------------------------------------------------
@jit(nogil=True, inline="always")
def _chol_inplace(a, bs):
    """Dense Cholesky of a (bs, bs) block in place; False if the block is not positive definite."""
    for j in range(bs):
        s = a[j, j]
        for k in range(j):
            s -= a[j, k] * a[j, k]
        if not (s > 0.0) or not np.isfinite(s):
            return False
        d = np.sqrt(s)
        a[j, j] = d
        for i in range(j + 1, bs):
            s = a[i, j]
            for k in range(j):
                s -= a[i, k] * a[j, k]
            a[i, j] = s / d
        for i in range(j):
            a[i, j] = 0.0
    return True


@jit(nogil=True, inline="always")
def _lower_tri_inverse(lmat, bs, out):
    for j in range(bs):
        for i in range(bs):
            out[i, j] = 0.0
        out[j, j] = 1.0 / lmat[j, j]
        for i in range(j + 1, bs):
            s = 0.0
            for k in range(j, i):
                s -= lmat[i, k] * out[k, j]
            out[i, j] = s / lmat[i, i]


# ---------------------------------------------------------------------------------------------
# Krylov loops. Whole loops are compiled so that small problems do not pay Python overhead per
# iteration. Status codes: 0 converged, 1 iteration cap, 2 breakdown (non-positive curvature,
# i.e. the stored matrix is not positive definite any more), 3 non-finite values, 4 stagnated
# (round-off floor reached; the best iterate is returned).
# ---------------------------------------------------------------------------------------------
CG_CONVERGED, CG_MAX_ITERATIONS, CG_BREAKDOWN, CG_NON_FINITE, CG_STAGNATED = 0, 1, 2, 3, 4


@jit(nogil=True)
def _dot(a, b):
    acc = acc_zero(a)
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


# ---------------------------------------------------------------------------------------------
# Block triangular solves, the CG loop and the block factorisation, specialised per block size.
# The block size reaches the kernels as the length of a tuple argument (`shape`, see block_shape):
# numba types a tuple by its length, so len(shape) is a compile-time constant, the 3x3 / 6x6 block
# loops unroll and the fp16 widening vectorises, and every block size is an ordinary signature
# that numba caches on disk. Measured 1.4-2.6x faster triangular solves and factorisations than
# with a run-time block size (benchmarks/README.md).
# The factor L is stored as BSR: strictly lower blocks (lindptr, lindices, lvalues) and the
# inverses of the diagonal blocks (dinv), all flat and row-major within a block.
# ---------------------------------------------------------------------------------------------
@jit(nogil=True)
def block_ic_solve(lindptr, lindices, lvalues, dinv, r, out, shape):
    """Solve (L L^T) z = r into out; `shape` is a tuple of block-size length (see block_shape)."""
    BS = len(shape)
    BB = BS * BS
    nrows = lindptr.shape[0] - 1
    buf = np.empty(BB, dtype=out.dtype)
    work = np.empty(BS, dtype=out.dtype)
    # Forward: L y = r. work accumulates r_i - sum_k L_ik y_k; columns outermost so the
    # BS updates of each step are independent (no serial dependency chain).
    for ib in range(nrows):
        r0 = ib * BS
        for a in range(BS):
            work[a] = r[r0 + a]
        for kb in range(lindptr[ib], lindptr[ib + 1]):
            c0 = lindices[kb] * BS
            base = kb * BB
            for q in range(BB):
                buf[q] = load(lvalues, base + q)
            for c in range(BS):
                yc = out[c0 + c]
                for a in range(BS):
                    work[a] -= buf[a * BS + c] * yc
        dbase = ib * BB
        for q in range(BB):
            buf[q] = load(dinv, dbase + q)
        for a in range(BS):
            acc = acc_zero(out)
            for c in range(BS):
                acc += buf[a * BS + c] * work[c]
            out[r0 + a] = acc
    # Backward: L^T z = y in place. Row ib of L scatters into earlier rows once z_ib is known.
    for ib in range(nrows - 1, -1, -1):
        r0 = ib * BS
        dbase = ib * BB
        for q in range(BB):
            buf[q] = load(dinv, dbase + q)
        for a in range(BS):
            work[a] = 0
        for c in range(BS):
            oc = out[r0 + c]
            for a in range(BS):
                work[a] += buf[c * BS + a] * oc
        for a in range(BS):
            out[r0 + a] = work[a]
        for kb in range(lindptr[ib], lindptr[ib + 1]):
            c0 = lindices[kb] * BS
            base = kb * BB
            for q in range(BB):
                buf[q] = load(lvalues, base + q)
            for c in range(BS):
                acc = acc_zero(out)
                for a in range(BS):
                    acc += buf[a * BS + c] * work[a]
                out[c0 + c] -= acc
    return out

@jit(nogil=True)
def apply_block_preconditioner(lindptr, lindices, lvalues, dinv, perm, r, out, shape):
    """out = P^T (L L^T)^-1 P r, with the block permutation perm (new position -> old block)."""
    BS = len(shape)
    nb = perm.shape[0]
    pr = np.empty_like(r)
    pz = np.empty_like(r)
    for a in range(nb):
        src = perm[a] * BS
        for c in range(BS):
            pr[a * BS + c] = r[src + c]
    block_ic_solve(lindptr, lindices, lvalues, dinv, pr, pz, shape)
    for a in range(nb):
        dst = perm[a] * BS
        for c in range(BS):
            out[dst + c] = pz[a * BS + c]
    return out

# ---------------------------------------------------------------------------------------------
# Block-Jacobi preconditioner of J^T J + D for CGNR: one dense block per variable (a 6x6 pose,
# a 9x9 BAL camera, a 3x3 point), rebuilt every LM iteration because D changes. Each block
# M_v = L L^T is stored as G = L^-1 and applied as z = G^T (G r): the product form stays
# symmetric positive definite however G is rounded (a rounded dense inverse need not), and
# |G| ~ 1/sqrt(lambda_min) keeps far more headroom in fp16 than the inverse's 1/lambda_min.
# Even so, BAL camera blocks (f, k1, k2 nearly collinear) reach |G| ~ 1e5 > fp16's 65504, so each
# block is stored as G_v / m_v with m_v = max |G_v| and applied with the fp32 factor m_v^2.
# Variables are read off the Jacobian's slots: ptr[v] is the first column of variable v;
# columns no slot covers become 1x1 blocks.
# ---------------------------------------------------------------------------------------------
@jit(nogil=True, inline="always")
def _max_width(ptr):
    w = 1
    for v in range(ptr.shape[0] - 1):
        w = max(w, ptr[v + 1] - ptr[v])
    return w


@jit(nogil=True)
def variable_partition(col_start, slot_width, ncols):
    """(ptr (nv+1,), offsets (nv+1,)): variable column ranges and their offsets in flat w x w storage."""
    width_at = np.zeros(ncols, dtype=np.int64)
    for rb in range(col_start.shape[0]):
        for s in range(col_start.shape[1]):
            c0 = col_start[rb, s]
            if c0 >= 0:
                width_at[c0] = slot_width[s]
    ptr = np.empty(ncols + 1, dtype=np.int64)
    offsets = np.empty(ncols + 1, dtype=np.int64)
    nv = 0
    c = 0
    off = 0
    while c < ncols:
        w = max(width_at[c], 1)
        ptr[nv] = c
        offsets[nv] = off
        off += w * w
        c += w
        nv += 1
    ptr[nv] = ncols
    offsets[nv] = off
    return ptr[: nv + 1].copy(), offsets[: nv + 1].copy()


@jit(nogil=True)
def block_jacobi_factor(values, col_start, slot_offset, slot_width, rdim, cdim, column_scale, damping, ptr, offsets):
    """G_v = chol(D_s^-1 (J^T J)_vv D_s^-1 + diag(damping))^-1 per variable, from fp64 block-row J.

    Returns (g (offsets[-1],) fp64, number of blocks that needed a diagonal shift). A block that is
    not numerically positive definite (a variable no residual constrains, no damping) is shifted
    by a growing multiple of its largest diagonal entry until it is.
    """
    nv = ptr.shape[0] - 1
    ncols = ptr[nv]
    var_of = np.empty(ncols, dtype=np.int64)
    for v in range(nv):
        for c in range(ptr[v], ptr[v + 1]):
            var_of[c] = v
    gram = np.zeros(offsets[nv])
    for rb in range(col_start.shape[0]):
        for s in range(col_start.shape[1]):
            c0 = col_start[rb, s]
            if c0 < 0:
                continue
            w = slot_width[s]
            so = slot_offset[s]
            base = offsets[var_of[c0]]
            for a in range(w):
                for b in range(a + 1):
                    acc = 0.0
                    for r in range(rdim):
                        acc += values[rb, r, so + a] * values[rb, r, so + b]
                    gram[base + a * w + b] += acc / (column_scale[c0 + a] * column_scale[c0 + b])
    g = np.zeros(offsets[nv])
    shifted = 0
    wmax = _max_width(ptr)
    block = np.empty((wmax, wmax))
    work = np.empty((wmax, wmax))
    inv = np.empty((wmax, wmax))
    for v in range(nv):
        c0 = ptr[v]
        w = ptr[v + 1] - c0
        base = offsets[v]
        peak = 0.0
        for a in range(w):
            for b in range(a + 1):
                block[a, b] = gram[base + a * w + b]
                block[b, a] = block[a, b]
            block[a, a] += damping[c0 + a]
            peak = max(peak, block[a, a])
        shift = 0.0
        work[:w, :w] = block[:w, :w]
        while not _chol_inplace(work, w):
            shift = 1e-10 if shift == 0.0 else shift * 100.0
            work[:w, :w] = block[:w, :w]
            bump = shift * max(peak, 1.0)
            if not bump < 1e10:  # non-finite entries: the identity; CG then reports the non-finite values
                work[:w, :w] = 0.0
                bump = 1.0
            for a in range(w):
                work[a, a] += bump
        if shift > 0.0:
            shifted += 1
        _lower_tri_inverse(work, w, inv)
        for a in range(w):
            for b in range(w):
                g[base + a * w + b] = inv[a, b]
    return g, shifted


@jit(nogil=True)
def apply_block_jacobi(ptr, offsets, g, gscale, r, out):
    """out = gscale_v G^T (G r) per variable block v, accumulating in the type of `out`."""
    work = np.empty(_max_width(ptr), dtype=out.dtype)
    for v in range(ptr.shape[0] - 1):
        c0 = ptr[v]
        w = ptr[v + 1] - c0
        base = offsets[v]
        for a in range(w):
            acc = acc_zero(out)
            for b in range(a + 1):
                acc += load(g, base + a * w + b) * r[c0 + b]
            work[a] = acc
        sv = gscale[v]
        for b in range(w):
            acc = acc_zero(out)
            for a in range(b, w):
                acc += load(g, base + a * w + b) * work[a]
            out[c0 + b] = sv * acc
    return out


PRE_NONE, PRE_BLOCK_IC, PRE_BLOCK_JACOBI = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# The CGNR operator w = J^T (J p), for either storage of J (chosen at typing time by the operand
# tuple, so pcg_normal is one cached kernel per storage):
#   block rows, 6-tuple (values, col_start, slot_offset, slot_width, rdim, cdim): the generic
#     kernels above, through the row vector q;
#   packed, 4-tuple (values, cols, num_tiles, dims): block_products' grouped layout for two-slot
#     bundle-adjustment Jacobians, fused (each chunk of J read once, no q).
# ---------------------------------------------------------------------------------------------
def normal_product(op, p, q, w):  # pragma: no cover - replaced by the overload inside kernels
    raise NotImplementedError


def operator_rows(op):  # pragma: no cover - replaced by the overload inside kernels
    raise NotImplementedError


def _is_packed(op) -> bool:
    return len(op.types) == 4


@overload(normal_product, inline="always")
def _normal_product_overload(op, p, q, w):
    if _is_packed(op):
        from .block_products import grouped_normal  # imported late: block_products imports this module

        def packed(op, p, q, w):
            grouped_normal(op[0], op[1], op[2], p, w, op[3])

        return packed

    def rows(op, p, q, w):
        block_matvec(op[0], op[1], op[2], op[3], op[4], op[5], p, q)
        block_rmatvec(op[0], op[1], op[2], op[3], op[4], op[5], q, w)

    return rows


@overload(operator_rows, inline="always")
def _operator_rows_overload(op):
    if _is_packed(op):
        return lambda op: 0
    return lambda op: op[1].shape[0] * op[4]


@jit(nogil=True, inline="always")
def _precondition(kind, ptr, index, values, diag, perm, r, out, shape):
    if kind == PRE_BLOCK_IC:
        apply_block_preconditioner(ptr, index, values, diag, perm, r, out, shape)
    elif kind == PRE_BLOCK_JACOBI:
        apply_block_jacobi(ptr, index, values, diag, r, out)
    else:
        out[:] = r


@jit(nogil=True)
def pcg_normal(
    op, ncols,
    pre_kind, pre_ptr, pre_index, pre_values, pre_diag, pre_perm,
    rhs, damping, x, tol, q_tol, max_iter, shape,
):  # fmt: skip
    """Preconditioned CG on (J^T J + diag(damping)) x = rhs, with J^T J applied as J^T (J p).

    J^T J is never formed; `op` is J in either storage of normal_product. `rhs` is the
    (negative) gradient, computed by the caller at the residual precision: the low-precision J
    only enters the operator, so it changes how fast the nonlinear iteration converges but not
    where it converges (iterative refinement).
    Computing J^T r inside with an fp16 J instead would move the optimum by the fp16 rounding.
    The preconditioner M ~ J^T J + diag(damping) is chosen by `pre_kind` (PRE_NONE, PRE_BLOCK_IC:
    a block incomplete-Cholesky factor, (pre_ptr, pre_index, pre_values) its strictly lower BSR
    blocks, pre_diag the inverses of its diagonal blocks, pre_perm its ordering; PRE_BLOCK_JACOBI:
    pre_ptr / pre_index the variable partition and offsets, pre_values the blocks G_v, pre_diag
    their scales).
    Stops when |rhs - A x| < tol |rhs|, or, for truncated-Newton steps, when the quadratic
    model's decrease stalls: i (Q_i - Q_{i-1}) / Q_i < q_tol (Nash and Sofer's rule, as Ceres
    uses it). In finite precision the residual can grow once it is at round-off level, so the
    best iterate is kept and returned when that happens.
    """
    m = operator_rows(op)
    s = rhs.copy()
    z = np.empty(ncols, dtype=rhs.dtype)
    w = np.empty(ncols, dtype=rhs.dtype)
    q = np.empty(m, dtype=rhs.dtype)
    best = np.zeros(ncols, dtype=rhs.dtype)
    x[:] = 0
    snorm0 = np.sqrt(_dot(s, s))
    if snorm0 == 0:
        return 0, CG_CONVERGED, 0.0
    if not np.isfinite(snorm0):
        return 0, CG_NON_FINITE, np.inf
    _precondition(pre_kind, pre_ptr, pre_index, pre_values, pre_diag, pre_perm, s, z, shape)
    p = z.copy()
    gamma = _dot(s, z)
    rel = 1.0
    # The iterate with the smallest residual, kept only to recover from round-off blow-up. It starts
    # empty (not at x = 0): a zero step is never returned once CG has taken a step.
    best_rel = np.inf
    model = 0.0
    for it in range(max_iter):
        normal_product(op, p, q, w)
        for k in range(ncols):
            w[k] += damping[k] * p[k]
        delta = _dot(p, w)
        if not np.isfinite(delta):
            x[:] = best
            return it, CG_NON_FINITE, best_rel
        if delta <= 0:
            x[:] = best
            return it, CG_BREAKDOWN, best_rel
        alpha = gamma / delta
        # Each CG step lowers the quadratic model by alpha * gamma / 2 (model starts at 0 for x=0).
        previous_model = model
        model -= 0.5 * alpha * gamma
        for k in range(ncols):
            x[k] += alpha * p[k]
            s[k] -= alpha * w[k]
        rel = np.sqrt(_dot(s, s)) / snorm0
        if not np.isfinite(rel):
            x[:] = best
            return it + 1, (CG_STAGNATED if it > 0 else CG_NON_FINITE), best_rel
        if rel < best_rel:
            best_rel = rel
            best[:] = x
        elif rel > 1e3 * best_rel:
            # Round-off has taken over: the residual grows instead of levelling off.
            x[:] = best
            return it + 1, CG_STAGNATED, best_rel
        if rel <= tol:
            return it + 1, CG_CONVERGED, rel
        if q_tol > 0 and model < 0 and (it + 1) * (model - previous_model) / model < q_tol:
            return it + 1, CG_CONVERGED, rel
        _precondition(pre_kind, pre_ptr, pre_index, pre_values, pre_diag, pre_perm, s, z, shape)
        gamma_new = _dot(s, z)
        if not (gamma_new > 0):
            x[:] = best
            return it + 1, (CG_BREAKDOWN if np.isfinite(gamma_new) else CG_NON_FINITE), best_rel
        beta = gamma_new / gamma
        gamma = gamma_new
        for k in range(ncols):
            p[k] = z[k] + beta * p[k]
    return max_iter, CG_MAX_ITERATIONS, rel

@jit(nogil=True)
def block_factor(indptr, indices, blocks, shift, shape):
    """Block incomplete Cholesky of A + shift*diag(A) on the pattern given (its lower block triangle,
    sorted BSR, fill blocks included as zeros).

    Returns (ok, lower_blocks, dinv) where lower_blocks holds L_ij for every strictly lower
    block of A's pattern (same order) and dinv holds L_ii^-1. ok is False on breakdown (a
    non-positive pivot), in which case the caller retries with a larger shift.
    """
    BS = len(shape)
    nrows = indptr.shape[0] - 1
    nnzb = indices.shape[0]
    lower = np.zeros((nnzb, BS, BS))
    dinv = np.zeros((nrows, BS, BS))
    diag_pos = np.full(nrows, -1, dtype=np.int64)
    for ib in range(nrows):
        for kb in range(indptr[ib], indptr[ib + 1]):
            if indices[kb] == ib:
                diag_pos[ib] = kb
    tmp = np.zeros((BS, BS))
    for ib in range(nrows):
        if diag_pos[ib] < 0:
            return False, lower, dinv
        for kb in range(indptr[ib], indptr[ib + 1]):
            k = indices[kb]
            if k >= ib:
                continue
            # L_ik = (A_ik - sum_{j<k} L_ij L_kj^T) L_kk^-T, over j in both rows' patterns.
            tmp[:, :] = blocks[kb]
            p = indptr[ib]
            q = indptr[k]
            while p < kb and q < indptr[k + 1] and indices[q] < k:
                jp = indices[p]
                jq = indices[q]
                if jp == jq:
                    for a in range(BS):
                        for b in range(BS):
                            s = 0.0
                            for c in range(BS):
                                s += lower[p, a, c] * lower[q, b, c]
                            tmp[a, b] -= s
                    p += 1
                    q += 1
                elif jp < jq:
                    p += 1
                else:
                    q += 1
            # Right-multiply by L_kk^-T: row a of L_ik = dinv_k @ tmp[a].
            for a in range(BS):
                for b in range(BS):
                    s = 0.0
                    for c in range(b + 1):
                        s += tmp[a, c] * dinv[k, b, c]
                    lower[kb, a, b] = s
        d = diag_pos[ib]
        tmp[:, :] = blocks[d]
        for a in range(BS):
            tmp[a, a] += shift * blocks[d, a, a]
        for kb in range(indptr[ib], d):
            for a in range(BS):
                for b in range(BS):
                    s = 0.0
                    for c in range(BS):
                        s += lower[kb, a, c] * lower[kb, b, c]
                    tmp[a, b] -= s
        if not _chol_inplace(tmp, BS):
            return False, lower, dinv
        _lower_tri_inverse(tmp, BS, dinv[ib])
    return True, lower, dinv



def block_shape(block_size: int) -> tuple:
    """The tuple that carries a block size into the kernels as a compile-time constant."""
    return (0,) * int(block_size)


# ---------------------------------------------------------------------------------------------
# Symbolic block factorisation with a level-of-fill limit (ILU(p)/IC(p) of Saad, ch. 10.3).
# fill_level 0 keeps the pattern of A (IC(0)); a large fill_level gives the complete Cholesky
# pattern. Works on the lower block triangle in the elimination order, rows sorted.
# ---------------------------------------------------------------------------------------------
@jit(inline="always")
def _heap_push(heap, hsize, value):
    """Push onto the binary min-heap heap[:hsize]; returns the new size."""
    heap[hsize] = value
    c = hsize
    while c > 0:
        parent = (c - 1) // 2
        if heap[parent] <= heap[c]:
            break
        heap[parent], heap[c] = heap[c], heap[parent]
        c = parent
    return hsize + 1


@jit
def symbolic_fill(indptr, indices, fill_level):
    n = indptr.shape[0] - 1
    big = np.int64(1) << 40
    cap = max(indices.shape[0] * 2, 16)
    out_cols = np.empty(cap, dtype=np.int64)
    out_lev = np.empty(cap, dtype=np.int64)
    out_ptr = np.zeros(n + 1, dtype=np.int64)
    # Column lists of L built so far, as linked lists over the output entries.
    col_head = np.full(n, -1, dtype=np.int64)
    nxt = np.empty(cap, dtype=np.int64)
    entry_row = np.empty(cap, dtype=np.int64)
    lev = np.full(n, big, dtype=np.int64)
    in_heap = np.zeros(n, dtype=np.bool_)
    heap = np.empty(n, dtype=np.int64)
    touched = np.empty(n, dtype=np.int64)
    nnz = 0
    for i in range(n):
        hsize = 0
        ntouched = 0
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            if j < i and not in_heap[j]:
                lev[j] = 0
                in_heap[j] = True
                touched[ntouched] = j
                ntouched += 1
                hsize = _heap_push(heap, hsize, j)
        row_start = nnz
        while hsize > 0:
            k = heap[0]
            hsize -= 1
            heap[0] = heap[hsize]
            c = 0
            while True:
                left = 2 * c + 1
                if left >= hsize:
                    break
                small = left
                if left + 1 < hsize and heap[left + 1] < heap[left]:
                    small = left + 1
                if heap[c] <= heap[small]:
                    break
                heap[c], heap[small] = heap[small], heap[c]
                c = small
            lik = lev[k]
            # Entry (i, k) is final now: store it and register it in column k.
            if nnz + 2 >= cap:
                cap *= 2
                out_cols = _grow(out_cols, cap)
                out_lev = _grow(out_lev, cap)
                nxt = _grow(nxt, cap)
                entry_row = _grow(entry_row, cap)
            out_cols[nnz] = k
            out_lev[nnz] = lik
            nnz += 1
            # Fill at (i, r) for every r in (k, i) with (r, k) in L.
            e = col_head[k]
            while e >= 0:
                r = entry_row[e]
                if r < i:
                    new = lik + out_lev[e] + 1
                    if new <= fill_level and new < lev[r]:
                        lev[r] = new
                        if not in_heap[r]:
                            in_heap[r] = True
                            touched[ntouched] = r
                            ntouched += 1
                            hsize = _heap_push(heap, hsize, r)
                e = nxt[e]
        # Register row i's entries in their columns, then the diagonal.
        for e in range(row_start, nnz):
            k = out_cols[e]
            entry_row[e] = i
            nxt[e] = col_head[k]
            col_head[k] = e
        if nnz + 1 >= cap:
            cap *= 2
            out_cols = _grow(out_cols, cap)
            out_lev = _grow(out_lev, cap)
            nxt = _grow(nxt, cap)
            entry_row = _grow(entry_row, cap)
        out_cols[nnz] = i
        out_lev[nnz] = 0
        entry_row[nnz] = i
        nxt[nnz] = -1
        nnz += 1
        out_ptr[i + 1] = nnz
        for t in range(ntouched):
            lev[touched[t]] = big
            in_heap[touched[t]] = False
    return out_ptr, out_cols[:nnz].copy()


@jit
def _grow(a, cap):
    b = np.empty(cap, dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


@jit(nogil=True)
def dot64(a, b):
    """Dot product accumulated in fp64, single-threaded.

    The driver's bookkeeping dots are tiny; a threaded BLAS call for them wakes worker threads
    that then fight the solver for the cores (measured: milliseconds per call on 2 loaded cores).
    """
    acc = 0.0
    for k in range(a.shape[0]):
        acc += np.float64(a[k]) * np.float64(b[k])
    return acc
