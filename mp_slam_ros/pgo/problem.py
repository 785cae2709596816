"""Pose-graph optimisation (SE(2) and SE(3) between factors) on the shared solver.

Residual of edge (i, j) with measurement Z: e = Log(Z^-1 Ti^-1 Tj), whitened by the square root
of the edge information, so the cost 0.5 sum e^T Omega e is the quantity GTSAM reports as
``graph.error``. The gauge is fixed by holding the poses marked fixed, or pose 0 when none is.

A robust loss (:mod:`mp_slam_ros.solver.loss`) may be put on a subset of the edges, typically
the loop closures, whose errors are not Gaussian: a false loop then pulls with a force that
fades with its residual instead of growing with it. Odometry edges stay least squares.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..solver import lie
from ..solver.jacobian import BlockJacobian
from ..solver.jit import clock, thread_compile_seconds
from ..solver.kernels import dot64
from ..solver.lm import PreconditionerCache, SolverOptions, SolverSummary, solve
from ..solver.loss import loss_parameters, robust_weights
from ..solver.precision import PrecisionConfig
from .graph import PoseGraph, project_information_psd
from .initialization import chordal_initialization


@dataclass(frozen=True)
class PoseState:
    rotations: np.ndarray  # (n, d, d) fp64
    translations: np.ndarray  # (n, d) fp64


def information_sqrt(information: np.ndarray) -> np.ndarray:
    """W with W^T W = Omega for each (PSD) information matrix, via its eigen-decomposition."""
    sym = 0.5 * (information + np.swapaxes(information, 1, 2))
    eigval, eigvec = np.linalg.eigh(sym)
    return np.sqrt(np.clip(eigval, 0.0, None))[:, :, None] * np.swapaxes(eigvec, 1, 2)


class PoseGraphProblem:
    """A :class:`PoseGraph` as a least-squares problem for :func:`mp_slam_ros.solver.lm.solve`."""

    def __init__(
        self,
        graph: PoseGraph,
        fixed: np.ndarray | None = None,
        loss: str = "trivial",
        loss_scale: float = 1.0,
        robust_edges: np.ndarray | None = None,
    ) -> None:
        """`robust_edges` (bool per edge) selects the edges the loss applies to; None means all."""
        self.graph, self.num_projected_edges = project_information_psd(graph)
        self.dim = graph.dim
        self.k = 3 if graph.dim == 2 else 6
        n = graph.num_poses
        if fixed is None:
            fixed = graph.fixed.copy() if graph.fixed.any() else np.zeros(n, dtype=bool)
            if not fixed.any() and n:
                fixed[0] = True
        self.fixed = np.asarray(fixed, dtype=bool)
        self.free = np.nonzero(~self.fixed)[0]
        self.var_of_pose = np.full(n, -1, dtype=np.int64)
        self.var_of_pose[self.free] = np.arange(self.free.size)
        self.sqrt_info = information_sqrt(self.graph.information)
        m = graph.num_edges
        self.loss = loss
        self._loss_kind, self._loss_b = loss_parameters(loss, loss_scale)
        if robust_edges is None:
            robust_edges = np.ones(m, dtype=bool)
        self.robust_edges = np.asarray(robust_edges, dtype=bool)
        if self.robust_edges.shape != (m,):
            raise ValueError(f"robust_edges must have shape ({m},), got {self.robust_edges.shape}")
        self._buffers = (np.empty((m, self.k)), np.empty((m, self.k, self.k)), np.empty((m, self.k, self.k)))
        self._build_pattern()

    @property
    def has_completion_block(self) -> bool:
        """Whether residuals end with the cost-completion block (c, 0, ...) of a robust loss."""
        return self._loss_kind != 0 and bool(self.robust_edges.any())

    def _whitened_errors(self, state: PoseState) -> np.ndarray:
        """W e per edge (m, k), before any loss: e = Log(Z^-1 Ti^-1 Tj)."""
        g = self.graph
        rij, tij = lie.between(
            state.rotations[g.edge_i], state.translations[g.edge_i],
            state.rotations[g.edge_j], state.translations[g.edge_j],
        )  # fmt: skip
        re, te = lie.between(g.meas_rotations, g.meas_translations, rij, tij)
        e = lie.se2_log(re, te) if self.dim == 2 else lie.se3_log(re, te)
        return np.einsum("eab,eb->ea", self.sqrt_info, e)

    def edge_weights(self, state: PoseState) -> np.ndarray:
        """rho'(s) of every edge at `state`: 1 for least-squares edges, near 0 for rejected outliers."""
        weights = np.ones(self.graph.num_edges)
        if self.has_completion_block:
            mask = self.robust_edges
            r = self._whitened_errors(state)[mask]
            weights[mask] = robust_weights(np.einsum("ea,ea->e", r, r), self._loss_kind, self._loss_b)[0]
        return weights

    def _robustify(self, r: np.ndarray, jac_values: np.ndarray | None) -> np.ndarray:
        """Ceres' corrector on the robust edges (scales r and J in place); returns r plus the completion block."""
        if not self.has_completion_block:
            return r
        mask = self.robust_edges
        rm = r[mask]
        rho1, deficit = robust_weights(np.einsum("ea,ea->e", rm, rm), self._loss_kind, self._loss_b)
        scale = np.sqrt(rho1)
        r[mask] = rm * scale[:, None]
        if jac_values is not None:
            jac_values[mask] *= scale[:, None, None]
        completion = np.zeros((1, self.k))
        completion[0, 0] = np.sqrt(float(np.sum(deficit)))
        return np.concatenate([r, completion])

    # -- LeastSquaresProblem protocol ------------------------------------------------------
    @property
    def num_parameters(self) -> int:
        return int(self.free.size * self.k)

    @property
    def block_size(self) -> int:
        return self.k

    def initial_state(self) -> PoseState:
        return PoseState(self.graph.rotations.copy(), self.graph.translations.copy())

    def residuals(self, state: PoseState, dtype: np.dtype) -> np.ndarray:
        r = self._robustify(self._whitened_errors(state), None)
        return r.reshape(-1).astype(dtype, copy=False)

    def linearize(self, state: PoseState, dtype: np.dtype) -> tuple[np.ndarray, BlockJacobian]:
        g = self.graph
        i, j = g.edge_i, g.edge_j
        # Reused output buffers: fresh 10 MB arrays per call cost as much as the kernel itself.
        e, ji, jj = lie.between_error(
            state.rotations[i], state.translations[i], state.rotations[j], state.translations[j],
            g.meas_rotations, g.meas_translations, out=self._buffers,
        )  # fmt: skip
        w = self.sqrt_info
        extra = 1 if self.has_completion_block else 0
        values = np.zeros((g.num_edges + extra, self.k, 2 * self.k))
        np.matmul(w, ji, out=values[: g.num_edges, :, : self.k])
        np.matmul(w, jj, out=values[: g.num_edges, :, self.k :])
        r = self._robustify(np.einsum("eab,eb->ea", w, e), values[: g.num_edges])
        col_start = self._col_start
        if extra:
            col_start = np.concatenate([col_start, np.full((1, 2), -1, dtype=np.int64)])
        jac = BlockJacobian(values.astype(dtype, copy=False), col_start, (self.k, self.k), self.num_parameters)
        return r.reshape(-1).astype(dtype, copy=False), jac

    def retract(self, state: PoseState, delta: np.ndarray) -> PoseState:
        rot = state.rotations.copy()
        trans = state.translations.copy()
        step = np.asarray(delta, dtype=np.float64).reshape(-1, self.k)
        r_new, t_new = lie.retract(rot[self.free], trans[self.free], step)
        rot[self.free] = r_new
        trans[self.free] = t_new
        return PoseState(rot, trans)

    # -- helpers ---------------------------------------------------------------------------
    def cost(self, state: PoseState) -> float:
        r = self.residuals(state, np.dtype(np.float64))
        return 0.5 * dot64(r, r)

    def to_graph(self, state: PoseState) -> PoseGraph:
        return replace(self.graph, rotations=state.rotations, translations=state.translations)

    def _build_pattern(self) -> None:
        """Column of each edge's two pose blocks in the tangent vector (-1 where the pose is fixed)."""
        g = self.graph
        vi = self.var_of_pose[g.edge_i]
        vj = self.var_of_pose[g.edge_j]
        self._col_start = np.stack(
            [np.where(vi >= 0, vi * self.k, -1), np.where(vj >= 0, vj * self.k, -1)], axis=1
        )


INITIALIZATIONS = ("chordal", "given")


def optimize_pose_graph(
    graph: PoseGraph,
    precision: PrecisionConfig | str = "mixed",
    options: SolverOptions | None = None,
    initialization: str = "chordal",
    *,
    loss: str = "trivial",
    loss_scale: float = 1.0,
    robust_edges: np.ndarray | None = None,
    preconditioner_cache: PreconditionerCache | None = None,
) -> tuple[PoseGraph, SolverSummary]:
    """Optimise a pose graph. Returns the optimised graph and the solver summary.

    `precision` is a :class:`PrecisionConfig` or a preset name (fp64, fp32, mixed, fp16).
    `initialization` "chordal" (default) re-initialises from the measurements before the
    nonlinear solve; its time is part of the summary's total. "given" starts from the graph's
    poses as they are. Chordal initialisation matters beyond the starting cost: the static
    preconditioner is factored at the first linearisation and stays good only if that point
    is already close to the optimum.

    `loss` / `loss_scale` put a robust loss on the edges selected by `robust_edges` (all when
    None), see :class:`PoseGraphProblem`. `preconditioner_cache` keeps the static preconditioner
    across the solves of a graph that grows between them (incremental loop closure).
    """
    if isinstance(precision, str):
        from ..solver.precision import load_precision

        precision = load_precision(precision)
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"initialization must be one of {', '.join(INITIALIZATIONS)}, got '{initialization}'")
    if graph.num_edges == 0:
        # Nothing constrains the poses: the normal equations are all zero and the preconditioner
        # breaks down with a message that names neither the graph nor the cause.
        raise ValueError(f"{graph.source or 'pose graph'}: graph has no edges: nothing to optimise")
    compile_start = thread_compile_seconds()
    start = clock()  # pauses while numba compiles: compile time is reported on its own
    if initialization == "chordal":
        graph = chordal_initialization(graph)
    init_time = clock() - start
    problem = PoseGraphProblem(graph, loss=loss, loss_scale=loss_scale, robust_edges=robust_edges)
    state, summary = solve(
        problem, problem.initial_state(), options or SolverOptions(), precision, preconditioner_cache
    )
    summary.stage_times["initialization"] = init_time
    summary.stage_times["total"] += init_time
    summary.compile_time = thread_compile_seconds() - compile_start
    summary.projected_information_edges = problem.num_projected_edges
    return problem.to_graph(state), summary
