"""Pose-graph container and graph-level utilities (no file parsing here)."""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

import numpy as np

from mp_slam_ros.io.errors import InputFormatError

__all__ = [
    "PoseGraph",
    "information_condition_numbers",
    "odometry_chain_initialization",
    "project_information_psd",
]


@dataclass(frozen=True, eq=False)
class PoseGraph:
    """A pose graph with float64 numpy storage.

    Index ``i`` in every per-pose array refers to vertex ``ids[i]``; ``edge_i``/``edge_j`` are
    indices into ``ids`` (not raw ids). Measurements are ``Z_ij = T_i^-1 T_j`` and poses are
    ``world_T_pose``. Information matrices use the tangent order ``(x, y, theta)`` in 2D and
    ``(wx, wy, wz, x, y, z)`` in 3D (rotation first, like GTSAM).

    ``fixed`` only reflects FIX lines of the source file; when none is set the solver decides
    which pose to anchor. Instances are immutable: use ``dataclasses.replace`` or
    :meth:`with_poses` to derive updated graphs.
    """

    dim: int
    ids: np.ndarray
    rotations: np.ndarray
    translations: np.ndarray
    fixed: np.ndarray
    edge_i: np.ndarray
    edge_j: np.ndarray
    meas_rotations: np.ndarray
    meas_translations: np.ndarray
    information: np.ndarray
    has_initial_guess: bool = True
    source: str | None = None

    def __post_init__(self) -> None:
        if self.dim not in (2, 3):
            raise ValueError(f"PoseGraph.dim must be 2 or 3, got {self.dim!r}")
        d, k = self.dim, self.tangent_dim
        coerce = {
            "ids": np.int64,
            "rotations": np.float64,
            "translations": np.float64,
            "fixed": np.bool_,
            "edge_i": np.int64,
            "edge_j": np.int64,
            "meas_rotations": np.float64,
            "meas_translations": np.float64,
            "information": np.float64,
        }
        for name, dtype in coerce.items():
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=dtype))
        n, m = self.ids.shape[0], self.edge_i.shape[0]
        expected = {
            "ids": (n,),
            "rotations": (n, d, d),
            "translations": (n, d),
            "fixed": (n,),
            "edge_i": (m,),
            "edge_j": (m,),
            "meas_rotations": (m, d, d),
            "meas_translations": (m, d),
            "information": (m, k, k),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"PoseGraph.{name} has shape {getattr(self, name).shape}, expected {shape}")
        for name in ("edge_i", "edge_j"):
            idx = getattr(self, name)
            if m and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"PoseGraph.{name} holds indices outside [0, {n})")
        if n > 1:
            sorted_ids = np.sort(self.ids)
            if np.any(sorted_ids[1:] == sorted_ids[:-1]):
                raise ValueError("PoseGraph.ids must be unique")
        object.__setattr__(self, "has_initial_guess", bool(self.has_initial_guess))

    @property
    def num_poses(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_i.shape[0])

    @property
    def tangent_dim(self) -> int:
        """Size of one information matrix: 3 in 2D, 6 in 3D."""
        return 3 if self.dim == 2 else 6

    def with_poses(self, rotations: np.ndarray, translations: np.ndarray) -> PoseGraph:
        """A copy of this graph holding a new pose estimate."""
        return dataclasses.replace(self, rotations=rotations, translations=translations)


def _compose(ra: np.ndarray, ta: np.ndarray, rb: np.ndarray, tb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return ra @ rb, ra @ tb + ta


def _inverse(r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rt = r.T
    return rt, -(rt @ t)


def _reorthonormalize(r: np.ndarray) -> np.ndarray:
    """Nearest rotations to a stack of chained products, whose round-off drifts with depth."""
    if r.shape[-1] == 2:
        theta = np.arctan2(r[:, 1, 0], r[:, 0, 0])
        c, s = np.cos(theta), np.sin(theta)
        return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], axis=1)
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def odometry_chain_initialization(graph: PoseGraph) -> PoseGraph:
    """Initial guess from chaining odometry, with pose index 0 at the identity.

    Pose ``k`` is preferably reached from pose ``k-1`` through an edge between consecutive
    indices (either direction). Where that odometry link is missing, a spanning tree over all
    edges fills the gap (0-1 BFS from pose 0: odometry edges cost 0, others 1), so a pose after
    a gap is reached through a single loop closure and the chain resumes from it. The chained
    rotations are projected back onto SO(d) at the end, so long chains do not carry round-off drift.

    Raises :class:`InputFormatError` (a ``ValueError``) naming the first pose id that no edge
    path connects to pose 0.
    """
    n, d = graph.num_poses, graph.dim
    rotations = np.tile(np.eye(d), (n, 1, 1))
    translations = np.zeros((n, d))
    if n == 0:
        return dataclasses.replace(
            graph, rotations=rotations, translations=translations, has_initial_guess=False
        )

    # Adjacency in CSR form; each half-edge remembers whether it follows the measurement direction.
    ei, ej = graph.edge_i, graph.edge_j
    m = ei.shape[0]
    src = np.concatenate([ei, ej])
    dst = np.concatenate([ej, ei])
    edge_of = np.concatenate([np.arange(m), np.arange(m)])
    forward = np.concatenate([np.ones(m, bool), np.zeros(m, bool)])
    order = np.argsort(src, kind="stable")
    starts = np.searchsorted(src[order], np.arange(n + 1))
    dst_l, edge_l, fwd_l = dst[order].tolist(), edge_of[order].tolist(), forward[order].tolist()
    starts_l = starts.tolist()

    inf = n + 1
    dist = [inf] * n
    parent_edge = [-1] * n
    parent_fwd = [True] * n
    dist[0] = 0
    queue: deque[int] = deque([0])
    while queue:
        u = queue.popleft()
        du = dist[u]
        for h in range(starts_l[u], starts_l[u + 1]):
            v = dst_l[h]
            w = 0 if abs(v - u) == 1 else 1
            if du + w < dist[v]:
                dist[v] = du + w
                parent_edge[v] = edge_l[h]
                parent_fwd[v] = fwd_l[h]
                if w == 0:
                    queue.appendleft(v)
                else:
                    queue.append(v)

    unreachable = [k for k in range(n) if dist[k] == inf]
    if unreachable:
        first = int(graph.ids[unreachable[0]])
        raise InputFormatError(
            graph.source,
            reason=(
                f"pose id {first} is not connected to pose id {int(graph.ids[0])} by any edge "
                f"({len(unreachable)} unreachable pose(s)); cannot build an odometry initial guess"
            ),
        )

    children: list[list[int]] = [[] for _ in range(n)]
    for v in range(1, n):
        e = parent_edge[v]
        p = int(ei[e]) if parent_fwd[v] else int(ej[e])
        children[p].append(v)
    # Traverse the tree from the root so every parent is placed before its children.
    stack = [0]
    while stack:
        p = stack.pop()
        for v in children[p]:
            e = parent_edge[v]
            rz, tz = graph.meas_rotations[e], graph.meas_translations[e]
            if not parent_fwd[v]:
                rz, tz = _inverse(rz, tz)
            rotations[v], translations[v] = _compose(rotations[p], translations[p], rz, tz)
            stack.append(v)
    rotations = _reorthonormalize(rotations)

    return dataclasses.replace(graph, rotations=rotations, translations=translations, has_initial_guess=False)


def project_information_psd(graph: PoseGraph, min_eig_ratio: float = 1e-12) -> tuple[PoseGraph, int]:
    """Project every information matrix onto the PSD cone with a relative eigenvalue floor.

    Each matrix is symmetrised and its eigenvalues below ``min_eig_ratio * max_eig`` (negative
    ones included) are raised to that floor. Matrices that change by no more than round-off keep
    their original bits. Returns the new graph and the number of edges whose matrix changed.

    Raises ``ValueError`` when a matrix has no positive eigenvalue, since no floor relative to its
    scale exists and silently zeroing the edge would drop a measurement.
    """
    info = graph.information
    if info.shape[0] == 0:
        return graph, 0
    sym = 0.5 * (info + np.swapaxes(info, 1, 2))
    eigval, eigvec = np.linalg.eigh(sym)
    max_eig = eigval[:, -1]
    bad = np.nonzero(~(max_eig > 0))[0]
    if bad.size:
        e = int(bad[0])
        vi, vj = int(graph.ids[graph.edge_i[e]]), int(graph.ids[graph.edge_j[e]])
        raise ValueError(
            f"information matrix of edge {vi}->{vj} "
            f"(edge #{e}) has no positive eigenvalue ({bad.size} such edge(s)); cannot project to PSD"
        )
    floor = min_eig_ratio * max_eig
    clipped = np.maximum(eigval, floor[:, None])
    projected = np.einsum("mij,mj,mkj->mik", eigvec, clipped, eigvec)
    projected = 0.5 * (projected + np.swapaxes(projected, 1, 2))
    # Unclipped matrices come back from eigh with rounding noise; keep those bit-exact.
    scale = np.linalg.norm(info.reshape(info.shape[0], -1), axis=1)
    delta = np.linalg.norm((projected - info).reshape(info.shape[0], -1), axis=1)
    changed = delta > 64.0 * np.finfo(np.float64).eps * scale
    new_info = np.where(changed[:, None, None], projected, info)
    return dataclasses.replace(graph, information=new_info), int(np.count_nonzero(changed))


def information_condition_numbers(graph: PoseGraph) -> np.ndarray:
    """2-norm condition number of each (symmetrised) information matrix; ``inf`` if singular.

    Uses ``max|lambda| / min|lambda|``, which is also meaningful for indefinite matrices.
    """
    info = graph.information
    if info.shape[0] == 0:
        return np.zeros(0)
    sym = 0.5 * (info + np.swapaxes(info, 1, 2))
    mags = np.abs(np.linalg.eigvalsh(sym))
    lo, hi = mags.min(axis=1), mags.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where(lo > 0, hi / np.where(lo > 0, lo, 1.0), np.inf)
    return cond
