"""Chordal initialisation of a pose graph (Carlone et al., ICRA 2015).

Rotations first: relax R_j = R_i Z_ij to a linear least-squares problem over unconstrained
d x d matrices, solve it once, and project each result back onto SO(d). Translations then follow
from another linear problem with the rotations held. Both are sparse Laplacian-like systems
solved directly in fp64; together they cost a fraction of one nonlinear iteration and put the
rotations near the optimum, which keeps the static preconditioner valid for the whole solve.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..solver import lie
from ..solver.linear import solve_direct
from .graph import PoseGraph


def _anchor(graph: PoseGraph) -> np.ndarray:
    fixed = graph.fixed.copy()
    if not fixed.any() and graph.num_poses:
        fixed[0] = True
    return fixed


def _edge_weights(graph: PoseGraph) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic rotation and translation weights from each edge's information (its mean diagonal)."""
    info = graph.information
    diag = np.diagonal(info, axis1=1, axis2=2)
    if graph.dim == 2:
        w_rot, w_trans = diag[:, 2], diag[:, :2].mean(axis=1)
    else:
        w_rot, w_trans = diag[:, :3].mean(axis=1), diag[:, 3:].mean(axis=1)
    floor = 1e-12 * max(float(w_rot.max(initial=0.0)), float(w_trans.max(initial=0.0)), 1e-300)
    return np.maximum(w_rot, floor), np.maximum(w_trans, floor)


def _solve_blocks(
    graph: PoseGraph,
    fixed: np.ndarray,
    coef_i: np.ndarray,
    rhs_edge: np.ndarray,
    known: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Least squares over X (n, d, c) for the edge equations X_j - coef_i[e] @ X_i = rhs_edge[e].

    Poses marked `fixed` keep `known`. Every edge is weighted by sqrt(weights[e]).
    """
    n, d = graph.num_poses, coef_i.shape[1]
    free = np.nonzero(~fixed)[0]
    var = np.full(n, -1, dtype=np.int64)
    var[free] = np.arange(free.size)
    m = graph.num_edges
    ei, ej = graph.edge_i, graph.edge_j
    sw = np.sqrt(weights)
    rows_e = np.arange(m)[:, None, None] * d + np.arange(d)[None, :, None]  # (m, d, 1)
    rhs = rhs_edge * sw[:, None, None]
    # The fixed poses' terms move to the right-hand side.
    rhs = rhs - np.where(fixed[ej][:, None, None], known[ej], 0.0) * sw[:, None, None]
    rhs = rhs + np.where(fixed[ei][:, None, None], coef_i @ known[ei], 0.0) * sw[:, None, None]
    cols = np.arange(d)[None, None, :]
    parts_r, parts_c, parts_v = [], [], []
    okj = var[ej] >= 0
    rj = np.broadcast_to(rows_e, (m, d, d))[okj]
    cj = (var[ej][:, None, None] * d + cols + 0 * rows_e)[okj]
    vj = np.broadcast_to(np.eye(d), (m, d, d))[okj] * sw[okj][:, None, None]
    oki = var[ei] >= 0
    ri = np.broadcast_to(rows_e, (m, d, d))[oki]
    ci = (var[ei][:, None, None] * d + cols + 0 * rows_e)[oki]
    vi = -coef_i[oki] * sw[oki][:, None, None]
    parts_r += [rj.ravel(), ri.ravel()]
    parts_c += [cj.ravel(), ci.ravel()]
    parts_v += [vj.ravel(), vi.ravel()]
    a = sp.csr_matrix(
        (np.concatenate(parts_v), (np.concatenate(parts_r), np.concatenate(parts_c))), shape=(m * d, free.size * d)
    )
    normal = (a.T @ a).tocsr()
    b = np.asarray(a.T @ rhs.reshape(m * d, -1))
    x = solve_direct(normal, b, block_size=d).x
    out = known.copy()
    out[free] = x.reshape(free.size, d, -1)
    return out


def chordal_initialization(graph: PoseGraph) -> PoseGraph:
    """A new initial guess from the measurements alone (the current poses are ignored except the anchor)."""
    if graph.num_edges == 0:
        return graph
    fixed = _anchor(graph)
    w_rot, w_trans = _edge_weights(graph)
    # R_j^T = Z^T R_i^T: solve for the transposes so that each unknown multiplies from the left.
    zt = np.swapaxes(graph.meas_rotations, 1, 2)
    known_t = np.swapaxes(graph.rotations, 1, 2)
    relaxed = _solve_blocks(graph, fixed, zt, np.zeros_like(zt), known_t, w_rot)
    rotations = lie.project_to_rotation(np.swapaxes(relaxed, 1, 2))
    rotations[fixed] = graph.rotations[fixed]
    # t_j - t_i = R_i t_ij with the rotations held.
    d = graph.dim
    ident = np.broadcast_to(np.eye(d), (graph.num_edges, d, d))
    rhs = np.einsum("eab,eb->ea", rotations[graph.edge_i], graph.meas_translations)[:, :, None]
    trans = _solve_blocks(graph, fixed, ident, rhs, graph.translations[:, :, None], w_trans)[:, :, 0]
    return graph.with_poses(rotations, trans)
