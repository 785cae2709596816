"""numba kernels for sparse products and triangular solves at any storage precision.

Every kernel is generic over the storage type of the matrix values: float64, float32, or uint16
holding fp16 bit patterns (see :mod:`half`). Values are widened with :func:`load` and accumulated
in the type of the output vector, so fp16 storage accumulates in fp32 and nothing here names a
dtype: the caller's :class:`PrecisionConfig` decides by the arrays it passes in.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from .half import half_to_float


def load(values, k):  # pragma: no cover - replaced by the overload inside kernels
    return values[k]


@overload(load, inline="always")
def _load_overload(values, k):
    if values.dtype == types.uint16:
        return lambda values, k: half_to_float(values[k])
    return lambda values, k: values[k]


def acc_zero(out):  # pragma: no cover - replaced by the overload inside kernels
    return out.dtype.type(0)


@overload(acc_zero, inline="always")
def _acc_zero_overload(out):
    if out.dtype == types.float32:
        return lambda out: np.float32(0.0)
    return lambda out: 0.0


# ---------------------------------------------------------------------------------------------
# Block-row Jacobian: y = J x and y = J^T x without forming J^T J.
# Every residual block has rdim rows and the same cdim columns, split into slots (e.g. pose i,
# pose j). values holds each block row-major and contiguous, so the fp16 -> fp32 widening of a
# whole block is one vectorisable loop before the small dense products. col_start[rb, s] is the
# first column of slot s in x, or -1 when that variable is held fixed.
# ---------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
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


# ---------------------------------------------------------------------------------------------
# Block triangular solves with a block incomplete-Cholesky factor L.
# The strictly lower blocks of L are in BSR (lindptr, lindices, lvalues); the inverses of the
# diagonal blocks are in dinv (n_blocks * bs * bs,). Solves (L L^T) z = r.
# ---------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def block_ic_solve(lindptr, lindices, lvalues, dinv, bs, r, out, work):
    nrows = lindptr.shape[0] - 1
    bb = bs * bs
    # Forward: L y = r, y stored in work.
    for ib in range(nrows):
        r0 = ib * bs
        for a in range(bs):
            work[a] = r[r0 + a]
        for kb in range(lindptr[ib], lindptr[ib + 1]):
            c0 = lindices[kb] * bs
            base = kb * bb
            for a in range(bs):
                acc = acc_zero(out)
                for c in range(bs):
                    acc += load(lvalues, base + a * bs + c) * out[c0 + c]
                work[a] -= acc
        dbase = ib * bb
        for a in range(bs):
            acc = acc_zero(out)
            for c in range(a + 1):
                acc += load(dinv, dbase + a * bs + c) * work[c]
            out[r0 + a] = acc
    # Backward: L^T z = y, in place in out. Row ib of L scatters into earlier rows once z_ib is known.
    for ib in range(nrows - 1, -1, -1):
        r0 = ib * bs
        dbase = ib * bb
        for a in range(bs):
            acc = acc_zero(out)
            for c in range(a, bs):
                acc += load(dinv, dbase + c * bs + a) * out[r0 + c]
            work[a] = acc
        for a in range(bs):
            out[r0 + a] = work[a]
        for kb in range(lindptr[ib], lindptr[ib + 1]):
            c0 = lindices[kb] * bs
            base = kb * bb
            for c in range(bs):
                acc = acc_zero(out)
                for a in range(bs):
                    acc += load(lvalues, base + a * bs + c) * work[a]
                out[c0 + c] -= acc
    return out


# ---------------------------------------------------------------------------------------------
# Block IC(0) factorisation in fp64 on the lower block triangle of a symmetric BSR matrix.
# ---------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
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


@njit(cache=True, nogil=True)
def block_ic0_factor(indptr, indices, blocks, bs, shift):
    """Block IC(0) of A + shift*diag(A), A given by its lower block triangle in sorted BSR.

    Returns (ok, lower_blocks, dinv) where lower_blocks holds L_ij for every strictly lower
    block of A's pattern (same order) and dinv holds L_ii^-1. ok is False on breakdown (a
    non-positive pivot), in which case the caller retries with a larger shift.
    """
    nrows = indptr.shape[0] - 1
    nnzb = indices.shape[0]
    lower = np.zeros((nnzb, bs, bs))
    dinv = np.zeros((nrows, bs, bs))
    diag_pos = np.full(nrows, -1, dtype=np.int64)
    for ib in range(nrows):
        for kb in range(indptr[ib], indptr[ib + 1]):
            if indices[kb] == ib:
                diag_pos[ib] = kb
    tmp = np.zeros((bs, bs))
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
                    for a in range(bs):
                        for b in range(bs):
                            s = 0.0
                            for c in range(bs):
                                s += lower[p, a, c] * lower[q, b, c]
                            tmp[a, b] -= s
                    p += 1
                    q += 1
                elif jp < jq:
                    p += 1
                else:
                    q += 1
            # Right-multiply by L_kk^-T: row a of L_ik = dinv_k @ tmp[a].
            for a in range(bs):
                for b in range(bs):
                    s = 0.0
                    for c in range(b + 1):
                        s += tmp[a, c] * dinv[k, b, c]
                    lower[kb, a, b] = s
        d = diag_pos[ib]
        tmp[:, :] = blocks[d]
        for a in range(bs):
            tmp[a, a] += shift * blocks[d, a, a]
        for kb in range(indptr[ib], d):
            for a in range(bs):
                for b in range(bs):
                    s = 0.0
                    for c in range(bs):
                        s += lower[kb, a, c] * lower[kb, b, c]
                    tmp[a, b] -= s
        if not _chol_inplace(tmp, bs):
            return False, lower, dinv
        _lower_tri_inverse(tmp, bs, dinv[ib])
    return True, lower, dinv


# ---------------------------------------------------------------------------------------------
# Krylov loops. Whole loops are compiled so that small problems do not pay Python overhead per
# iteration. Status codes: 0 converged, 1 iteration cap, 2 breakdown (non-positive curvature,
# i.e. the stored matrix is not positive definite any more), 3 non-finite values.
# ---------------------------------------------------------------------------------------------
CG_CONVERGED, CG_MAX_ITERATIONS, CG_BREAKDOWN, CG_NON_FINITE = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _dot(a, b):
    acc = acc_zero(a)
    for k in range(a.shape[0]):
        acc += a[k] * b[k]
    return acc


@njit(cache=True, nogil=True)
def pcgls(
    values,
    col_start,
    slot_offset,
    slot_width,
    rdim,
    cdim,
    ncols,
    lindptr,
    lindices,
    lvalues,
    dinv,
    bs,
    precondition,
    b,
    damping,
    x,
    tol,
    q_tol,
    max_iter,
):
    """Preconditioned CGLS (CGNR): min |J x - b|^2 + damping |x|^2 without forming J^T J.

    The preconditioner M ~ J^T J + damping I is a block incomplete-Cholesky factor applied by two
    triangular solves. Stops when the normal-equation residual |J^T(b - J x) - damping x| falls
    below tol |J^T b|, or, for truncated-Newton steps, when the quadratic model's decrease has
    stalled: i (Q_i - Q_{i-1}) / Q_i < q_tol (Nash and Sofer's rule, as Ceres uses it).
    """
    m = b.shape[0]
    r = b.copy()
    s = np.empty(ncols, dtype=b.dtype)
    z = np.empty(ncols, dtype=b.dtype)
    q = np.empty(m, dtype=b.dtype)
    work = np.empty(max(bs, 1), dtype=b.dtype)
    x[:] = 0
    block_rmatvec(values, col_start, slot_offset, slot_width, rdim, cdim, r, s)
    snorm0 = np.sqrt(_dot(s, s))
    if snorm0 == 0:
        return 0, CG_CONVERGED, 0.0
    if not np.isfinite(snorm0):
        return 0, CG_NON_FINITE, np.inf
    if precondition:
        block_ic_solve(lindptr, lindices, lvalues, dinv, bs, s, z, work)
    else:
        z[:] = s
    p = z.copy()
    gamma = _dot(s, z)
    rel = 1.0
    model = 0.0
    for it in range(max_iter):
        block_matvec(values, col_start, slot_offset, slot_width, rdim, cdim, p, q)
        delta = _dot(q, q) + damping * _dot(p, p)
        if not np.isfinite(delta):
            return it, CG_NON_FINITE, rel
        if delta <= 0:
            return it, CG_BREAKDOWN, rel
        alpha = gamma / delta
        # Each CG step lowers the quadratic model by alpha * gamma / 2 (model starts at 0 for x=0).
        previous_model = model
        model -= 0.5 * alpha * gamma
        for k in range(ncols):
            x[k] += alpha * p[k]
        for k in range(m):
            r[k] -= alpha * q[k]
        block_rmatvec(values, col_start, slot_offset, slot_width, rdim, cdim, r, s)
        for k in range(ncols):
            s[k] -= damping * x[k]
        rel = np.sqrt(_dot(s, s)) / snorm0
        if not np.isfinite(rel):
            return it + 1, CG_NON_FINITE, rel
        if rel <= tol:
            return it + 1, CG_CONVERGED, rel
        if q_tol > 0 and model < 0 and (it + 1) * (model - previous_model) / model < q_tol:
            return it + 1, CG_CONVERGED, rel
        if precondition:
            block_ic_solve(lindptr, lindices, lvalues, dinv, bs, s, z, work)
        else:
            z[:] = s
        gamma_new = _dot(s, z)
        if not (gamma_new > 0):
            return it + 1, (CG_BREAKDOWN if np.isfinite(gamma_new) else CG_NON_FINITE), rel
        beta = gamma_new / gamma
        gamma = gamma_new
        for k in range(ncols):
            p[k] = z[k] + beta * p[k]
    return max_iter, CG_MAX_ITERATIONS, rel
