"""Exact fp64 LM step for bundle adjustment by eliminating the points (Schur complement).

For a :class:`~.jacobian.BlockJacobian` whose blocks touch one camera and one point (the BA
problems of :mod:`mp_slam_ros.ba.problem`), the damped normal equations

    (J^T J + diag(d)) dx = -g

split into cameras c and points p as [[U, W], [W^T, V]] [dx_c; dx_p] = -[g_c; g_p], with V
block diagonal (one pw x pw block per point). :func:`solve_schur` forms the reduced camera
system S = U - W V^-1 W^T (dense), factors it by Cholesky and back-substitutes the points:

    S dx_c = -g_c + W V^-1 g_p,    dx_p = V^-1 (-g_p - W^T dx_c).

No Python loop runs per observation: three numba kernels accumulate U, V and W = A^T B per
observation, then S and the right-hand side point by point (only the upper block triangle of S),
then the back-substitution; V^-1 is batched numpy and S is factored by LAPACK.
Columns of x that no free slot touches only see their damping: dx = -g / d there.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from .jacobian import BlockJacobian
from .jit import jit
from .linear import LinearSolveResult

__all__ = ["solve_schur"]


@jit(nogil=True)
def _accumulate(values, cam_id, pt_id, w_id, coff, cw, poff, pw, U, V, W):
    """U[c] += A^T A, V[p] += B^T B (upper triangles) and W[w_id] = A^T B for every block."""
    rdim = values.shape[1]
    for b in range(values.shape[0]):
        c = cam_id[b]
        p = pt_id[b]
        if c >= 0:
            for i in range(cw):
                for j in range(i, cw):
                    acc = 0.0
                    for r in range(rdim):
                        acc += np.float64(values[b, r, coff + i]) * np.float64(values[b, r, coff + j])
                    U[c, i, j] += acc
        if p >= 0:
            for i in range(pw):
                for j in range(i, pw):
                    acc = 0.0
                    for r in range(rdim):
                        acc += np.float64(values[b, r, poff + i]) * np.float64(values[b, r, poff + j])
                    V[p, i, j] += acc
        k = w_id[b]
        if k >= 0:
            for i in range(cw):
                for j in range(pw):
                    acc = 0.0
                    for r in range(rdim):
                        acc += np.float64(values[b, r, coff + i]) * np.float64(values[b, r, poff + j])
                    W[k, i, j] = acc


@jit(nogil=True)
def _reduce(W, w_cam, ptr, order, Vinv, Vg, S, rhs):
    """S -= W V^-1 W^T (upper block triangle only) and rhs += W V^-1 g_p, point by point."""
    cw = W.shape[1]
    pw = W.shape[2]
    Y = np.empty((W.shape[0], cw, pw))
    Wt = np.ascontiguousarray(W.transpose(0, 2, 1))
    for p in range(ptr.shape[0] - 1):
        for a in range(ptr[p], ptr[p + 1]):
            ka = order[a]
            ci = w_cam[ka] * cw
            for i in range(cw):
                acc = 0.0
                for k in range(pw):
                    y = 0.0
                    for m in range(pw):
                        y += W[ka, i, m] * Vinv[p, m, k]
                    Y[ka, i, k] = y
                    acc += W[ka, i, k] * Vg[p, k]
                rhs[ci + i] += acc
    for p in range(ptr.shape[0] - 1):
        for a in range(ptr[p], ptr[p + 1]):
            ka = order[a]
            ci = w_cam[ka] * cw
            Ya = Y[ka]
            for bb in range(ptr[p], ptr[p + 1]):
                kb = order[bb]
                cj = w_cam[kb] * cw
                if cj < ci:
                    continue
                Wb = Wt[kb]
                for i in range(cw):
                    row = S[ci + i, cj : cj + cw]
                    for k in range(pw):
                        y = Ya[i, k]
                        Wk = Wb[k]
                        for j in range(cw):  # contiguous in j: vectorises
                            row[j] -= y * Wk[j]


@jit(nogil=True)
def _back_substitute(W, w_cam, ptr, order, dx_c, g_p):
    """t_p = -g_p - sum W^T dx_c over the point's observations."""
    cw = W.shape[1]
    pw = W.shape[2]
    t = -g_p
    for p in range(ptr.shape[0] - 1):
        for a in range(ptr[p], ptr[p + 1]):
            ka = order[a]
            c = w_cam[ka]
            for j in range(pw):
                acc = 0.0
                for i in range(cw):
                    acc += W[ka, i, j] * dx_c[c, i]
                t[p, j] -= acc
    return t


def _failed(n: int, status: str) -> LinearSolveResult:
    return LinearSolveResult(np.zeros(n), 1, status, np.inf)


def solve_schur(
    jac: BlockJacobian,
    gradient: np.ndarray,
    damping_diag: np.ndarray,
    camera_slot: int = 0,
    point_slot: int = 1,
) -> LinearSolveResult:
    """Solve (J^T J + diag(damping_diag)) dx = -gradient exactly in fp64 by point elimination.

    `camera_slot` / `point_slot` name the slots of `jac` holding the cameras and the eliminated
    points (a col_start of -1 marks a fixed variable; blocks with both slots fixed contribute
    nothing). Camera and point columns may be interleaved anywhere in x; they are read from the
    slots' col_start. Any other slot must be fixed in every block.

    Returns status "direct"; "non_finite" if the inputs or the reduced system are not finite;
    "breakdown" if a point block V_p, the reduced camera matrix S or a damping-only column is not
    positive definite (then J^T J + D is not either). `relative_residual` is 0 on success, as for
    :func:`~.linear.solve_direct`.
    """
    n = int(jac.num_columns)
    g = np.asarray(gradient, dtype=np.float64).reshape(-1)
    d = np.broadcast_to(np.asarray(damping_diag, dtype=np.float64), (n,))
    if g.shape[0] != n:
        raise ValueError(f"gradient has {g.shape[0]} entries, the Jacobian {n} columns")
    n_slots = jac.col_start.shape[1]
    if camera_slot == point_slot or not (0 <= camera_slot < n_slots and 0 <= point_slot < n_slots):
        raise ValueError(f"camera_slot {camera_slot} and point_slot {point_slot} must be distinct slots of {n_slots}")
    for s in range(n_slots):
        if s not in (camera_slot, point_slot) and np.any(jac.col_start[:, s] >= 0):
            raise ValueError(f"slot {s} is neither the camera nor the point slot and has free variables")
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(d))):
        return _failed(n, "non_finite")

    offsets = jac.slot_offsets
    cw, pw = int(jac.slot_widths[camera_slot]), int(jac.slot_widths[point_slot])
    coff, poff = int(offsets[camera_slot]), int(offsets[point_slot])
    cs = jac.col_start[:, camera_slot]
    ps = jac.col_start[:, point_slot]
    free_c = cs >= 0
    free_p = ps >= 0

    # Variables from the slots' column starts; block -> camera / point index.
    cam_starts, cam_inv = np.unique(cs[free_c], return_inverse=True)
    pt_starts, pt_inv = np.unique(ps[free_p], return_inverse=True)
    nc, npt = cam_starts.shape[0], pt_starts.shape[0]
    cam_id = np.full(cs.shape[0], -1, dtype=np.int64)
    cam_id[free_c] = cam_inv
    pt_id = np.full(ps.shape[0], -1, dtype=np.int64)
    pt_id[free_p] = pt_inv
    cam_cols = cam_starts[:, None] + np.arange(cw)[None, :]
    pt_cols = pt_starts[:, None] + np.arange(pw)[None, :]
    covered = np.concatenate([cam_cols.ravel(), pt_cols.ravel()])
    if covered.size and covered.max() >= n:
        raise ValueError("a slot's columns run past num_columns")
    cover = np.bincount(covered, minlength=n)
    if cover.size and cover.max() > 1:
        raise ValueError("camera / point slots overlap in x: the columns do not split into variables")
    other = np.flatnonzero(cover == 0)

    # Per-observation products, accumulated in fp64: U, V (upper triangles), W = A^T B.
    both = free_c & free_p
    n_w = int(np.count_nonzero(both))
    w_id = np.full(cs.shape[0], -1, dtype=np.int64)
    w_id[both] = np.arange(n_w)
    U = np.zeros((nc, cw, cw))
    V = np.zeros((npt, pw, pw))
    W = np.empty((n_w, cw, pw))
    values = np.ascontiguousarray(jac.values)
    _accumulate(values, cam_id, pt_id, w_id, coff, cw, poff, pw, U, V, W)
    U += np.triu(U, 1).transpose(0, 2, 1)
    V += np.triu(V, 1).transpose(0, 2, 1)
    V[:, np.arange(pw), np.arange(pw)] += d[pt_cols]
    g_c, g_p = g[cam_cols], g[pt_cols]
    if not (np.all(np.isfinite(U)) and np.all(np.isfinite(V)) and np.all(np.isfinite(W))):
        return _failed(n, "non_finite")
    try:
        np.linalg.cholesky(V)  # every V_p must be positive definite
    except np.linalg.LinAlgError:
        return _failed(n, "breakdown")
    Vinv = np.linalg.inv(V)
    Vinv = np.ascontiguousarray(0.5 * (Vinv + Vinv.transpose(0, 2, 1)))

    # Reduced camera system S = U + D_c - W V^-1 W^T, rhs = -g_c + W V^-1 g_p (observations by point).
    w_cam = np.ascontiguousarray(cam_id[both])
    w_pt = pt_id[both]
    order = np.argsort(w_pt, kind="stable")
    ptr = np.zeros(npt + 1, dtype=np.int64)
    np.cumsum(np.bincount(w_pt, minlength=npt), out=ptr[1:])
    Vg = np.einsum("pij,pj->pi", Vinv, g_p)
    S = np.zeros((nc * cw, nc * cw))
    S.reshape(nc, cw, nc, cw)[np.arange(nc), :, np.arange(nc), :] = U
    S[np.arange(nc * cw), np.arange(nc * cw)] += d[cam_cols].ravel()
    rhs = -g_c.reshape(-1)
    _reduce(W, w_cam, ptr, order, Vinv, Vg, S, rhs)
    if not (np.all(np.isfinite(S)) and np.all(np.isfinite(rhs))):
        return _failed(n, "non_finite")

    S = np.triu(S)
    S += np.triu(S, 1).T  # _reduce fills the upper block triangle only
    try:
        factor = sla.cho_factor(S, lower=False, overwrite_a=True, check_finite=False)
    except np.linalg.LinAlgError:
        return _failed(n, "breakdown")
    dx_c = sla.cho_solve(factor, rhs, check_finite=False).reshape(nc, cw)

    # Back-substitution: dx_p = V^-1 (-g_p - W^T dx_c).
    t = _back_substitute(W, w_cam, ptr, order, np.ascontiguousarray(dx_c), np.ascontiguousarray(g_p))
    dx_p = np.einsum("pij,pj->pi", Vinv, t)

    x = np.zeros(n)
    x[cam_cols] = dx_c
    x[pt_cols] = dx_p
    if other.size:
        d_other = d[other]
        if np.any(d_other <= 0):
            return _failed(n, "breakdown")
        x[other] = -g[other] / d_other
    if not np.all(np.isfinite(x)):
        return _failed(n, "non_finite")
    return LinearSolveResult(x, 1, "direct", 0.0)
