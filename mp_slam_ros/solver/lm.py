"""Levenberg–Marquardt / Gauss–Newton driver: options in, summary out (in the manner of Ceres).

The driver knows nothing of poses or cameras. A problem supplies residuals and a sparse
Jacobian at a requested precision and a retraction that applies an fp64 tangent step; the driver
picks the linear solver, scales, stores at the configured precision, falls back when a stage
overflows, and records what it did per iteration.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from .jacobian import BlockJacobian
from .jit import clock, thread_compile_seconds
from .kernels import dot64
from .linear import (
    FULL_FILL,
    BlockIncompleteCholesky,
    BlockJacobiPreconditioner,
    BlockSparseMatrix,
    LinearSolveResult,
    PrecisionOverflow,
    StoredJacobian,
    scale_from_norms,
    scaled_damping,
    solve_cgnr,
    solve_direct,
)
from .precision import Precision, PrecisionConfig
from .schur import solve_schur

log = logging.getLogger(__name__)

LINEAR_SOLVERS = ("pcg-ic", "cgnr", "cholesky", "schur")
CGNR_PRECONDITIONERS = ("block_jacobi", "none")
# A step on a factor from an earlier linearisation is abandoned (refactor, solve again) after this
# many times ic_refactor_cg_iterations CG iterations.
ABANDON_FACTOR = 3
MIN_CG_CHUNK = 100  # fewest CG iterations between progress reports unless the time budget ends sooner


class LeastSquaresProblem(Protocol):
    """What the driver needs from a problem. `State` is whatever the problem keeps (fp64)."""

    @property
    def num_parameters(self) -> int: ...

    @property
    def block_size(self) -> int:
        """Size of a variable block (6 for an SE(3) pose); 1 when there is no block structure."""
        ...

    def linearize(self, state: Any, dtype: np.dtype) -> tuple[np.ndarray, BlockJacobian]:
        """Whitened residuals r (m,) and Jacobian J (m, n) at `state`, in `dtype` or wider."""
        ...

    def residuals(self, state: Any, dtype: np.dtype) -> np.ndarray:
        """Whitened residuals only (for trial steps)."""
        ...

    def retract(self, state: Any, delta: np.ndarray) -> Any:
        """The state moved by an fp64 tangent step; never modifies `state` in place."""
        ...


@dataclass
class SolverOptions:
    """Options of :func:`solve` (names and defaults follow Ceres where they overlap)."""

    algorithm: str = "levenberg_marquardt"  # or "gauss_newton"
    # pcg-ic (CGNR + static block incomplete Cholesky) | cgnr | cholesky (fp64) | schur (fp64, bundle
    # adjustment only: points eliminated, dense Cholesky of the reduced camera system)
    linear_solver: str = "pcg-ic"
    # Preconditioner of the cgnr solver (pcg-ic has its static incomplete Cholesky): block_jacobi,
    # one dense block per variable of J^T J + D, rebuilt every iteration (Ceres' JACOBI for CGNR),
    # or none (column scaling only).
    cgnr_preconditioner: str = "block_jacobi"
    max_iterations: int = 50
    # Wall-clock budget of the solve (Ceres' name): checked after every LM iteration and between
    # the CG chunks of a long linear solve (see progress_interval_seconds), so a solve overruns it
    # by about one chunk plus what cannot be interrupted (one factorisation, one linearisation);
    # the best state is returned (NO_CONVERGENCE, the message says time limit).
    max_solver_time_in_seconds: float = math.inf
    # A CG solve is run in chunks of about this many seconds (sized from the measured time per CG
    # iteration); between chunks it reports progress (printed when verbose, logged at INFO
    # otherwise) and checks the time budget. Solves shorter than a chunk are not split.
    progress_interval_seconds: float = 2.0
    function_tolerance: float = 1e-6  # stop when |cost change| / cost < this
    gradient_tolerance: float = 1e-10  # stop when max |J^T r| (scaled) < this
    parameter_tolerance: float = 1e-8  # stop when |dx| < tol * (|x| + tol)
    initial_damping: float = 1e-4  # lambda of Marquardt's damping lambda * diag(J^T J)
    min_damping: float = 1e-12
    max_damping: float = 1e12
    min_diagonal: float = 1e-6  # diag(J^T J) is clamped to [min, max] in the damping term
    max_diagonal: float = 1e32
    cg_tolerance: float = 1e-6  # relative normal-equation residual of the inner solve
    cg_q_tolerance: float = 1e-2  # truncated-Newton stop on the model decrease (Ceres' eta); 0 = off
    # With fp16 J each step solves a perturbed system. The true normal-equation residual it leaves,
    # |J^T J dx + D dx + g| / |g| with the residual-precision J, is checked after every fp16 step; when
    # it exceeds the limit on `fp16_bad_step_patience` consecutive steps, fp16 is too coarse for this
    # problem's conditioning (the refinement no longer contracts) and J falls back to fp32, loudly.
    # Single steps above 1 happen on healthy problems (measured up to ~3 on sphere2500), so a run of
    # them is required.
    fp16_step_residual_limit: float = 1.0
    fp16_bad_step_patience: int = 3
    cg_max_iterations: int = 500
    ic_refactor_each_iteration: bool = False  # the recipe factors the preconditioner once per problem
    # ... but a factor from a linearisation far from the current one stops paying for itself: when a
    # step needs more CG iterations than this, the next step refactors (0 = never). Counted in the
    # summary's preconditioner_factorizations.
    ic_refactor_cg_iterations: int = 40
    # Level of fill of the static preconditioner: 0 = IC(0), k = IC(k), FULL_FILL = every fill block,
    # i.e. the complete factor of the first linearisation, which later iterations only approximate.
    # FULL_FILL is the default because with minimum-degree ordering its fill is small and it cuts CG
    # iterations ~15x against IC(0) on the shared pose graphs (see benchmarks/README.md).
    ic_fill_level: int = FULL_FILL
    ic_ordering: str = "mmd"  # natural | mmd (minimum degree: less fill, faster triangular solves)
    # Ceres' use_inner_iterations: for a problem that offers `inner_iteration(state) -> (state,
    # moved)` (bundle adjustment: each point re-solved for the current cameras), it runs on the
    # start and after every accepted step. It never raises the cost; far from the solution it
    # fixes what one joint step cannot (a badly triangulated point near a camera).
    inner_iterations: bool = True
    # ... until a pass lowers the cost by less than this fraction (Ceres' inner_iteration_tolerance):
    # near the solution a pass costs a residual evaluation per point and buys nothing.
    inner_iteration_tolerance: float = 1e-3
    verbose: bool = False
    callback: Callable[[IterationReport], None] | None = None

    def __post_init__(self) -> None:
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(
                f"linear_solver must be one of {', '.join(LINEAR_SOLVERS)}, got '{self.linear_solver}'"
            )
        if self.cgnr_preconditioner not in CGNR_PRECONDITIONERS:
            raise ValueError(
                f"cgnr_preconditioner must be one of {', '.join(CGNR_PRECONDITIONERS)}, "
                f"got '{self.cgnr_preconditioner}'"
            )
        if self.algorithm not in ("levenberg_marquardt", "gauss_newton"):
            raise ValueError(f"algorithm must be levenberg_marquardt or gauss_newton, got '{self.algorithm}'")
        if self.max_iterations < 0:
            raise ValueError(f"max_iterations must be >= 0, got {self.max_iterations}")
        if not self.max_solver_time_in_seconds > 0:  # also rejects NaN
            raise ValueError(f"max_solver_time_in_seconds must be > 0, got {self.max_solver_time_in_seconds}")
        if not self.inner_iteration_tolerance >= 0:
            raise ValueError(f"inner_iteration_tolerance must be >= 0, got {self.inner_iteration_tolerance}")
        if not self.progress_interval_seconds > 0:
            raise ValueError(f"progress_interval_seconds must be > 0, got {self.progress_interval_seconds}")


@dataclass
class IterationReport:
    iteration: int
    cost: float  # 0.5 |r|^2 after the iteration
    cost_change: float
    gradient_max_norm: float
    step_norm: float
    damping: float
    cg_iterations: int
    linear_status: str
    step_accepted: bool
    iteration_time: float
    total_time: float


@dataclass
class FallbackEvent:
    iteration: int
    stage: str
    from_precision: str
    to_precision: str
    reason: str


@dataclass
class SolverSummary:
    """What happened in a solve: per-iteration reports, stage times, fallbacks, why it stopped."""

    precision: dict[str, str]
    linear_solver: str
    algorithm: str
    num_parameters: int
    num_residuals: int
    initial_cost: float = math.nan
    final_cost: float = math.nan
    iterations: list[IterationReport] = field(default_factory=list)
    termination: str = "NO_CONVERGENCE"  # CONVERGENCE | NO_CONVERGENCE | FAILURE
    message: str = ""
    stage_times: dict[str, float] = field(
        default_factory=lambda: {
            "residual_jacobian": 0.0,
            "gradient_and_scaling": 0.0,
            "preconditioner": 0.0,
            "linear_solve": 0.0,
            "update": 0.0,
            "initialization": 0.0,
            "inner_iterations": 0.0,
            "total": 0.0,
        }
    )
    fallbacks: list[FallbackEvent] = field(default_factory=list)
    projected_information_edges: int = 0  # edges whose information matrix was projected to PSD
    preconditioner_factorizations: int = 0
    # Why the static preconditioner was (re)factored, one entry per factorisation, or that a cached
    # factor from an earlier solve of the growing problem was reused (see PreconditionerCache).
    preconditioner_events: list[str] = field(default_factory=list)
    preconditioner_reused: bool = False
    preconditioner_shift: float = 0.0
    total_cg_iterations: int = 0
    # Seconds numba spent compiling kernels during the solve. Stage, iteration and total times
    # exclude it: a first solve in a process with a cold cache would otherwise report the compile.
    compile_time: float = 0.0
    # Reprojection problems: observations whose point is at or behind its camera (no projection),
    # at the initial and at the final state. They get a constant residual and a zero Jacobian.
    invalid_observations_initial: int = 0
    invalid_observations: int = 0
    # SolverOptions.inner_iterations: how many passes ran, and the blocks (points) they moved.
    inner_iteration_passes: int = 0
    inner_iteration_moves: int = 0

    @property
    def num_iterations(self) -> int:
        return len(self.iterations)

    @property
    def num_fallbacks(self) -> int:
        return len(self.fallbacks)

    def iteration_table(self) -> str:
        head = f"{'iter':>4} {'cost':>14} {'cost_change':>12} {'|gradient|':>10} {'|step|':>10} "
        head += f"{'lambda':>9} {'cg_it':>5} {'linear':>14} {'ok':>3} {'iter_time':>9} {'total':>9}"
        lines = [head]
        for it in self.iterations:
            lines.append(
                f"{it.iteration:>4} {it.cost:>14.6e} {it.cost_change:>12.4e} {it.gradient_max_norm:>10.3e} "
                f"{it.step_norm:>10.3e} {it.damping:>9.2e} {it.cg_iterations:>5} {it.linear_status:>14} "
                f"{'yes' if it.step_accepted else 'no':>3} {it.iteration_time:>9.4f} {it.total_time:>9.4f}"
            )
        return "\n".join(lines)

    def report(self) -> str:
        p = self.precision
        t = self.stage_times
        lines = [
            f"Solver summary ({self.algorithm}, linear solver {self.linear_solver})",
            f"  precision      : {p['name']} (residual {p['residual']}, matrix {p['matrix_storage']}, "
            f"preconditioner {p['preconditioner']}, CG vectors {p['cg_vectors']}, update fp64)",
            f"  problem        : {self.num_parameters} parameters, {self.num_residuals} residuals",
            f"  cost           : {self.initial_cost:.10e} -> {self.final_cost:.10e}",
            f"  iterations     : {self.num_iterations} ({sum(i.step_accepted for i in self.iterations)} accepted), "
            f"{self.total_cg_iterations} CG iterations",
            f"  time [s]       : total {t['total']:.4f} (excl. {self.compile_time:.1f} s JIT compile) "
            f"= residual+Jacobian {t['residual_jacobian']:.4f}, "
            f"gradient+scaling {t['gradient_and_scaling']:.4f}, preconditioner {t['preconditioner']:.4f}, "
            f"linear solve {t['linear_solve']:.4f}, update {t['update']:.4f}, "
            f"initialisation {t['initialization']:.4f}"
            + (f", inner iterations {t['inner_iterations']:.4f}" if self.inner_iteration_passes else ""),
            f"  preconditioner : {self.preconditioner_factorizations} factorisation(s), "
            f"diagonal shift {self.preconditioner_shift:g}"
            + (f" ({'; '.join(self.preconditioner_events)})" if self.preconditioner_events else ""),
            f"  fp16 fallbacks : {self.num_fallbacks}",
            f"  PSD projection : {self.projected_information_edges} information matrices changed",
        ]
        if self.inner_iteration_passes:
            lines.append(
                f"  inner iter.    : {self.inner_iteration_passes} passes moved {self.inner_iteration_moves} "
                "blocks (points re-solved for the current cameras)"
            )
        if self.invalid_observations_initial or self.invalid_observations:
            lines.append(
                f"  cheirality     : {self.invalid_observations_initial} -> {self.invalid_observations} "
                "observations with the point at or behind the camera (constant residual, zero Jacobian)"
            )
        for ev in self.fallbacks:
            lines.append(
                f"    iteration {ev.iteration}: {ev.stage} {ev.from_precision} -> {ev.to_precision}: {ev.reason}"
            )
        lines.append(f"  termination    : {self.termination}: {self.message}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_iterations"] = self.num_iterations
        d["num_fallbacks"] = self.num_fallbacks
        return d

    def to_json(self, **kwargs: Any) -> str:
        """Strict JSON: a non-finite number becomes null (json.dumps would write NaN/Infinity,
        which JSON parsers reject), and `message` says which costs were not finite."""
        d = _finite_or_none(self.to_dict())
        costs = {"initial_cost": self.initial_cost, "final_cost": self.final_cost}
        bad = [f"{k} = {v}" for k, v in costs.items() if not math.isfinite(v)]
        if bad:
            note = f"not finite, written as null: {', '.join(bad)}"
            d["message"] = f"{d['message']} ({note})" if d["message"] else note
        return json.dumps(d, allow_nan=False, **kwargs)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(v) for v in value]
    return value


@dataclass
class PreconditionerCache:
    """The static incomplete-Cholesky factor, kept across the solves of one growing problem.

    The recipe factors the preconditioner once per problem. An incremental pose graph is one
    problem that grows by a few poses per keyframe and is solved again after every loop closure,
    so its factor is reused from solve to solve, the new variables appended with identity blocks
    (:meth:`BlockIncompleteCholesky.extended`), until the variables or residual blocks have grown
    by more than `growth_threshold` (a fraction) since the factorisation. The in-solve safety net
    still applies: a step that needs more than ``ic_refactor_cg_iterations`` CG iterations
    re-factors, and the cache takes the new factor. Pass the same cache to every solve of the
    problem (``solve(..., preconditioner_cache=cache)``) and ``clear()`` it when the problem
    is replaced. Only the ``pcg-ic`` linear solver uses it.
    """

    growth_threshold: float = 0.25
    factor: BlockIncompleteCholesky | None = None
    factored_columns: int = 0
    factored_residual_blocks: int = 0
    factorizations: int = 0
    reuses: int = 0
    last_event: str = ""

    def clear(self) -> None:
        self.factor = None
        self.factored_columns = self.factored_residual_blocks = 0

    def lookup(self, num_columns: int, num_residual_blocks: int, block_size: int) -> tuple[Any, str]:
        """The cached factor grown to this problem, or None and why a new one is needed."""
        if self.factor is None:
            return None, "first factorisation"
        if self.factor.block_size != block_size or num_columns < self.factored_columns:
            return None, "the problem shrank or changed its block size"
        growth = max(
            (num_columns - self.factored_columns) / max(self.factored_columns, 1),
            (num_residual_blocks - self.factored_residual_blocks) / max(self.factored_residual_blocks, 1),
        )
        if growth > self.growth_threshold:
            threshold = 100 * self.growth_threshold
            return None, f"the problem grew {100 * growth:.0f}% since the last factorisation (> {threshold:g}%)"
        self.reuses += 1
        return self.factor.extended(num_columns // block_size), ""

    def store(self, factor: BlockIncompleteCholesky, num_columns: int, num_residual_blocks: int, event: str) -> None:
        self.factor = factor
        self.factored_columns = num_columns
        self.factored_residual_blocks = num_residual_blocks
        self.factorizations += 1
        self.last_event = event


class _LinearSystem:
    """Builds and solves the damped step at the configured precision, with loud fallbacks.

    Holds the state that lives across iterations of one problem: the static IC(0) factor and the
    precision each stage has fallen back to.
    """

    def __init__(self, options: SolverOptions, precision: PrecisionConfig, summary: SolverSummary) -> None:
        self.options = options
        self.precision = precision
        self.summary = summary
        self.preconditioner: BlockIncompleteCholesky | None = None
        self.jacobi: BlockJacobiPreconditioner | None = None
        self.stored: StoredJacobian | None = None  # the last stored J: its layout is reused
        self.iteration = 0
        self.block_size = 1
        self.refactor_next = False
        self.refactor_reason = ""
        self.bad_fp16_steps = 0
        self.cache: PreconditionerCache | None = None
        # Clock time at which the solve's budget runs out (checked between CG chunks).
        self.deadline = math.inf
        self.seconds_per_cg_iteration: float | None = None  # measured; sizes the CG chunks
        # Counts the LM loop's linearisations; a factor made at the current one cannot be stale,
        # so a slow step on it is blamed on rounding instead (see _after_step).
        self.linearization = 0
        self.factor_linearization = -1
        self.last_factorization_seconds = 0.0
        self.refactor_limit = options.ic_refactor_cg_iterations

    def _fallback(self, stage: str, reason: str) -> bool:
        """Widen one stage, loudly. False when it is already fp64 (nothing left to widen)."""
        current: Precision = getattr(self.precision, stage)
        wider = current.higher()
        if wider is current:
            log.warning("iteration %d: %s failed at fp64 (%s); the step is rejected", self.iteration, stage, reason)
            return False
        self.summary.fallbacks.append(
            FallbackEvent(self.iteration, stage, current.value, wider.value, reason)
        )
        log.warning(
            "fp16/fp32 fallback in iteration %d: %s %s -> %s (%s)",
            self.iteration,
            stage,
            current.value,
            wider.value,
            reason,
        )
        self.precision = self.precision.with_stage(stage, wider)
        return True

    def _stage_to_widen(self) -> str:
        # A failed Krylov solve cannot say which stored operand went wrong; widen the narrowest.
        for stage in ("matrix_storage", "preconditioner", "cg_vectors"):
            if getattr(self.precision, stage) is not Precision.FP64:
                if stage == "preconditioner" and self.preconditioner is None and self.jacobi is None:
                    continue
                return stage
        return "cg_vectors"

    def solve(
        self, jac: BlockJacobian, residuals: np.ndarray, damping: float
    ) -> tuple[LinearSolveResult, np.ndarray]:
        """Step dx for min |r + J dx|^2 + damping * dx^T clip(diag(J^T J)) dx, and the gradient J^T r.

        A result with `failed` set means no precision could produce a usable step; the caller
        rejects it and raises the damping.
        """
        opts = self.options
        times = self.summary.stage_times
        t0 = clock()
        gradient = jac.rmatvec(residuals)
        norms = jac.column_norms()
        damping_diag = damping * np.clip(norms**2, opts.min_diagonal, opts.max_diagonal)
        times["gradient_and_scaling"] += clock() - t0
        if opts.linear_solver == "schur":
            t0 = clock()
            res = solve_schur(jac, gradient, damping_diag)
            times["linear_solve"] += clock() - t0
            return res, gradient
        if opts.linear_solver == "cholesky":
            t0 = clock()
            csr = jac.to_csr()
            hessian = (csr.T @ csr + sp.diags(damping_diag)).tocsr()
            times["gradient_and_scaling"] += clock() - t0
            t0 = clock()
            res = solve_direct(hessian, -gradient, self.block_size)
            times["linear_solve"] += clock() - t0
            return res, gradient

        stale = self.refactor_next
        self.refactor_next = False
        if opts.linear_solver == "pcg-ic":
            reason = ""
            if self.preconditioner is None:
                reason = "first factorisation"
                if self.cache is not None and not opts.ic_refactor_each_iteration:
                    self.preconditioner, reason = self.cache.lookup(
                        jac.num_columns, jac.values.shape[0], self.block_size
                    )
                    if self.preconditioner is not None:
                        self.summary.preconditioner_reused = True
                        self.summary.preconditioner_events.append("reused the cached factor")
            elif opts.ic_refactor_each_iteration:
                reason = "refactor every iteration"
            elif stale and self._factorization_fits_budget():
                reason = self.refactor_reason
            if self.preconditioner is None or reason:
                self._refactor(jac, norms, reason)
        if opts.linear_solver == "cgnr" and opts.cgnr_preconditioner == "block_jacobi":
            t0 = clock()
            self.jacobi = self._block_jacobi(jac, norms, damping_diag)
            times["preconditioner"] += clock() - t0
        abandoned_iterations = 0  # CG iterations of attempts given up on a stale factor
        while True:
            abandon_at = self._abandon_at()
            try:
                t0 = clock()
                stored = StoredJacobian.store(
                    jac,
                    self.precision.matrix_storage,
                    scale=self.precision.scaled,
                    column_norms=norms,
                    previous=self.stored,
                )
                self.stored = stored
                pre: BlockIncompleteCholesky | BlockJacobiPreconditioner | None = self.preconditioner or self.jacobi
                if pre is not None:
                    pre = pre.stored(self.precision.preconditioner)
                times["gradient_and_scaling"] += clock() - t0
                t0 = clock()
                res = solve_cgnr(
                    stored,
                    gradient,
                    damping_diag,
                    pre,
                    self.precision.cg_vectors,
                    opts.cg_tolerance,
                    opts.cg_max_iterations,
                    opts.cg_q_tolerance,
                    chunk_iterations=self._cg_chunk(jac, abandon_at),
                    on_chunk=self._progress(t0, abandon_at),
                )
                elapsed = clock() - t0
                times["linear_solve"] += elapsed
                if res.iterations > 0:
                    self.seconds_per_cg_iteration = elapsed / res.iterations
                if (
                    res.status == "time_limit"
                    and clock() < self.deadline
                    and abandon_at
                    and self._factorization_fits_budget()
                ):
                    # Stopped by _progress for staleness, not by the budget: refactor here and
                    # solve again (the abandoned iterations still count in the summary).
                    abandoned_iterations += res.iterations
                    self._refactor(
                        jac,
                        norms,
                        f"a step on a factor from an earlier linearisation passed {res.iterations} CG "
                        f"iterations (relative residual {res.relative_residual:.1e}): abandoned and refactored",
                    )
                    continue
            except PrecisionOverflow as err:
                if not self._fallback(err.stage, err.detail):
                    return LinearSolveResult(np.zeros(jac.num_columns), 0, "non_finite", np.inf), gradient
                continue
            if res.failed:
                if not self._fallback(self._stage_to_widen(), f"CGNR {res.status}"):
                    return res, gradient
                continue
            if self.precision.matrix_storage is Precision.FP16 and opts.fp16_step_residual_limit > 0:
                true_rel = self._true_relative_residual(jac, res.x, damping_diag, gradient)
                self.bad_fp16_steps = 0 if true_rel <= opts.fp16_step_residual_limit else self.bad_fp16_steps + 1
                if self.bad_fp16_steps >= max(opts.fp16_bad_step_patience, 1):
                    self._fallback(
                        "matrix_storage",
                        f"{self.bad_fp16_steps} fp16 steps in a row left more than "
                        f"{opts.fp16_step_residual_limit:g}x the normal-equation residual (last {true_rel:.2f}): "
                        "J is too ill-conditioned for fp16",
                    )
                    continue
            self._after_step(res.iterations)
            if abandoned_iterations:
                res = replace(res, iterations=res.iterations + abandoned_iterations)
            return res, gradient

    @property
    def factor_fresh(self) -> bool:
        return self.factor_linearization == self.linearization

    def _factorization_fits_budget(self) -> bool:
        """False when the time left is shorter than the last factorisation took.

        A factorisation cannot be interrupted (at 200k poses it takes ~15 s), so starting one the
        budget cannot hold overruns it by that much; the stale factor still gives a usable step.
        """
        left = self.deadline - clock()
        if left >= self.last_factorization_seconds:
            return True
        log.info(
            "iteration %d: the preconditioner is stale, but %.1f s are left of the time budget and a "
            "factorisation takes %.1f s: keeping the old factor",
            self.iteration,
            max(left, 0.0),
            self.last_factorization_seconds,
        )
        return False

    def _refactor(self, jac: BlockJacobian, norms: np.ndarray, reason: str) -> None:
        self.factor_linearization = self.linearization
        t0 = clock()
        self.preconditioner = self._factor_preconditioner(jac, norms)
        self.last_factorization_seconds = clock() - t0
        self.summary.stage_times["preconditioner"] += self.last_factorization_seconds
        self.summary.preconditioner_events.append(reason)
        if self.cache is not None:
            self.cache.store(self.preconditioner, jac.num_columns, jac.values.shape[0], reason)

    def _abandon_at(self) -> int:
        """CG iterations after which a step on a stale IC factor is abandoned (0 = never).

        A factor from an earlier linearisation that needs several times the refactor limit is
        stale, and finishing the solve on it costs up to the CG cap (at 200k poses the steady
        state was three 500-iteration steps, each followed by a refactorisation anyway).
        Refactoring at once and solving again costs the iterations so far plus a fresh solve.
        """
        if (
            self.options.linear_solver != "pcg-ic"
            or self.preconditioner is None
            or self.factor_fresh
            or self.refactor_limit <= 0
        ):
            return 0
        return ABANDON_FACTOR * self.refactor_limit

    def _after_step(self, iterations: int) -> None:
        """Decide what a slow step (more CG iterations than the refactor limit) says about the factor.

        A factor from an earlier linearisation goes stale: refactor. But a factor made at this very
        linearisation cannot be stale, and with complete fill it is the exact factor of J^T J here,
        so many iterations mean rounding: the fp16 factor and fp16 J (whose mismatch with the fp64
        factor it came from) perturb the preconditioned operator by about u * cond(J^T J), which
        grows with the graph (a 10k-pose graph took 6x the CG iterations of fp64, a 200k one hit the
        500 cap). Refactoring then rebuilds the same factor (seconds each on large graphs) and helps
        nothing; widening the narrowest of the two stages does. With nothing left to widen, or with
        an incomplete factor, the limit is raised instead, to twice what the fresh factor needed.
        """
        limit = self.refactor_limit
        slow = self.preconditioner is not None and 0 < limit < iterations
        self.refactor_next = False
        if not slow:
            return
        if not self.factor_fresh:
            self.refactor_next = True
            self.refactor_reason = f"a step needed {iterations} CG iterations (> {limit})"
            return
        stages = [s for s in ("preconditioner", "matrix_storage") if getattr(self.precision, s) is not Precision.FP64]
        if self.options.ic_fill_level >= FULL_FILL and stages:
            stage = min(stages, key=lambda name: getattr(self.precision, name).bits)
            self._fallback(
                stage,
                f"a step with a preconditioner factored at this linearisation needed {iterations} CG "
                f"iterations (> {limit}): {getattr(self.precision, stage).value} rounding, not staleness",
            )
            return
        self.refactor_limit = 2 * iterations
        log.info(
            "iteration %d: a fresh preconditioner needed %d CG iterations; refactoring only above %d",
            self.iteration,
            iterations,
            self.refactor_limit,
        )

    def _cg_chunk(self, jac: BlockJacobian, abandon_at: int = 0) -> int:
        """CG iterations per chunk: about progress_interval_seconds of work, less when the time
        budget ends sooner (never fewer than a few: each chunk restarts the Krylov space)."""
        if self.seconds_per_cg_iteration is None:
            # No solve measured yet: one fp64 product pair, times 3 for the preconditioner and the
            # vector updates, is the CG iteration's cost to within a small factor.
            t0 = clock()
            jac.rmatvec(jac.matvec(np.ones(jac.num_columns)))
            self.seconds_per_cg_iteration = max(3.0 * (clock() - t0), 1e-9)
        # Each restart forgets the Krylov space (measured: a 50k-pose step needing 100 iterations
        # in one run took 467 in 35-iteration chunks), so a chunk is at least MIN_CG_CHUNK
        # iterations unless the time budget ends sooner.
        per_it = self.seconds_per_cg_iteration
        chunk = max(MIN_CG_CHUNK, int(self.options.progress_interval_seconds / per_it))
        remaining = self.deadline - clock()
        if math.isfinite(remaining):
            chunk = min(chunk, max(5, int(max(remaining, 0.0) / per_it)))
        if abandon_at:
            # The staleness check needs a chunk boundary there; a step that converges before it
            # is not split at all.
            chunk = min(chunk, abandon_at)
        return chunk

    def _progress(self, start: float, abandon_at: int = 0) -> Callable[[int, float], bool]:
        """The CG chunk callback: says how a long solve is going; False once the budget is spent
        or, on a stale factor, once `abandon_at` iterations have passed (see _abandon_at)."""
        verbose = self.options.verbose

        def report(iterations: int, relative_residual: float) -> bool:
            now = clock()
            text = (
                f"     iteration {self.iteration}: CG {iterations} iterations, relative residual "
                f"{relative_residual:.2e}, {now - start:.1f} s in this linear solve"
            )
            if verbose:
                print(text, flush=True)
            else:
                log.info(text.strip())
            return now < self.deadline and not (abandon_at and iterations >= abandon_at)

        return report

    @staticmethod
    def _true_relative_residual(
        jac: BlockJacobian, dx: np.ndarray, damping_diag: np.ndarray, gradient: np.ndarray
    ) -> float:
        """|J^T J dx + D dx + g| / |g| with the residual-precision J (one product pair in fp64)."""
        r = jac.rmatvec(jac.matvec(dx)) + damping_diag * dx + gradient
        g = math.sqrt(dot64(gradient, gradient))
        return math.sqrt(dot64(r, r)) / g if g > 0 else 0.0

    def _block_jacobi(
        self, jac: BlockJacobian, norms: np.ndarray, damping_diag: np.ndarray
    ) -> BlockJacobiPreconditioner:
        """Block-Jacobi of the damped system in the variables the CG runs on (scaled or not)."""
        scale = scale_from_norms(norms, self.precision.scaled, jac.num_columns)
        pre = BlockJacobiPreconditioner.build(jac, scale, scaled_damping(damping_diag, scale))
        if pre.shifted_blocks:
            log.debug("iteration %d: %d block-Jacobi blocks shifted", self.iteration, pre.shifted_blocks)
        self.summary.preconditioner_factorizations += 1
        return pre

    def _factor_preconditioner(self, jac: BlockJacobian, norms: np.ndarray) -> BlockIncompleteCholesky:
        """Block incomplete Cholesky of the column-scaled J^T J (unit diagonal), in fp64."""
        csr = jac.to_csr()
        inv = sp.diags(1.0 / scale_from_norms(norms, True, jac.num_columns))
        scaled = (inv @ (csr.T @ csr) @ inv).tocsr()
        factor = BlockIncompleteCholesky.factor(
            BlockSparseMatrix.from_scipy(scaled, self.block_size),
            fill_level=self.options.ic_fill_level,
            ordering=self.options.ic_ordering,
        )
        self.summary.preconditioner_factorizations += 1
        self.summary.preconditioner_shift = factor.shift
        return factor


def solve(
    problem: LeastSquaresProblem,
    state: Any,
    options: SolverOptions | None = None,
    precision: PrecisionConfig | None = None,
    preconditioner_cache: PreconditionerCache | None = None,
) -> tuple[Any, SolverSummary]:
    """Minimise 0.5 |r(x)|^2 from `state`. Returns the final state and a :class:`SolverSummary`.

    Costs in the summary are always accumulated in fp64, whatever the residual precision.
    `preconditioner_cache` carries the static preconditioner from one solve of a growing problem
    to the next (see :class:`PreconditionerCache`).
    """
    options = options or SolverOptions()
    precision = precision or PrecisionConfig.preset("fp64")
    res_dtype = precision.residual.dtype
    summary = SolverSummary(
        precision=precision.as_dict(),
        linear_solver=options.linear_solver,
        algorithm=options.algorithm,
        num_parameters=problem.num_parameters,
        num_residuals=0,
    )
    times = summary.stage_times
    start = clock()
    compile_start = thread_compile_seconds()
    system = _LinearSystem(options, precision, summary)
    system.block_size = problem.block_size
    system.cache = preconditioner_cache
    system.deadline = start + options.max_solver_time_in_seconds
    gauss_newton = options.algorithm == "gauss_newton"
    damping = 0.0 if gauss_newton else options.initial_damping
    nu = 2.0

    inner = getattr(problem, "inner_iteration", None) if options.inner_iterations else None
    _count_invalid(problem, state, summary, initial=True)
    if inner is not None:
        # The summary's initial cost is the caller's start, before the first inner pass.
        t0 = clock()
        summary.initial_cost = _cost(problem.residuals(state, res_dtype))
        times["residual_jacobian"] += clock() - t0
        if math.isfinite(summary.initial_cost):
            state = _inner_pass(inner, state, summary)
    t0 = clock()
    residuals, jac = problem.linearize(state, res_dtype)
    system.linearization += 1
    times["residual_jacobian"] += clock() - t0
    summary.num_residuals = int(residuals.shape[0])
    cost = _cost(residuals)
    if inner is None or not math.isfinite(summary.initial_cost):
        summary.initial_cost = cost
    elif not _inner_pass_paid_off(summary.initial_cost, cost, options, summary):
        inner = None
    if not math.isfinite(cost):
        summary.termination, summary.message = "FAILURE", "initial cost is not finite"
        summary.final_cost = cost
        summary.compile_time = thread_compile_seconds() - compile_start
        return state, summary

    for iteration in range(1, options.max_iterations + 1):
        it_start = clock()
        system.iteration = iteration
        step, gradient = system.solve(jac, residuals, damping)
        grad_norm = float(np.max(np.abs(gradient))) if gradient.size else 0.0
        dx = step.x
        summary.total_cg_iterations += step.iterations
        if grad_norm <= options.gradient_tolerance:
            summary.termination = "CONVERGENCE"
            summary.message = (
                f"gradient tolerance reached: max|g| = {grad_norm:.3e} <= {options.gradient_tolerance:.1e}"
            )
            break

        if step.failed:
            # No precision produced a usable step: reject it; more damping makes the system easier.
            candidate, new_cost, predicted = state, math.inf, 0.0
            dx = np.zeros_like(dx)
        else:
            t0 = clock()
            candidate = problem.retract(state, dx)
            times["update"] += clock() - t0
            t0 = clock()
            new_residuals = problem.residuals(candidate, res_dtype)
            times["residual_jacobian"] += clock() - t0
            new_cost = _cost(new_residuals)
            # Predicted decrease of the linear model: -(g.dx + 0.5 |J dx|^2).
            jdx = jac.matvec(dx)
            predicted = -(dot64(gradient, dx) + 0.5 * dot64(jdx, jdx))
        actual = cost - new_cost
        rho = actual / predicted if predicted > 0 else (1.0 if actual > 0 else -1.0)
        accepted = math.isfinite(new_cost) and (actual > 0 if gauss_newton else rho > 1e-3)
        step_norm = math.sqrt(dot64(dx, dx))
        old_cost = cost
        if accepted:
            state, cost = candidate, new_cost
            if not gauss_newton:
                damping = max(options.min_damping, damping * max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3))
                nu = 2.0
        elif not gauss_newton:
            damping = min(options.max_damping, damping * nu)
            nu *= 2.0

        report = IterationReport(
            iteration=iteration,
            cost=cost,
            cost_change=old_cost - cost,
            gradient_max_norm=grad_norm,
            step_norm=step_norm,
            damping=damping,
            cg_iterations=step.iterations,
            linear_status=step.status,
            step_accepted=accepted,
            iteration_time=0.0,
            total_time=0.0,
        )

        stop = None
        # A small change only means convergence after a real step: a stagnated Krylov solve can
        # return a tiny step far from the optimum (seen with unscaled fp16).
        solved = step.status in ("converged", "direct", "max_iterations")
        if accepted and solved and abs(old_cost - cost) <= options.function_tolerance * old_cost:
            stop = (
                "CONVERGENCE",
                f"function tolerance reached: |dcost|/cost = {abs(old_cost - cost) / old_cost:.3e}",
            )
        elif accepted and solved and step_norm <= options.parameter_tolerance * (
            problem_norm(state) + options.parameter_tolerance
        ):
            stop = ("CONVERGENCE", f"parameter tolerance reached: |dx| = {step_norm:.3e}")
        elif (
            not accepted
            and solved
            and step_norm > 0.0
            and 0.0 <= predicted <= options.function_tolerance * old_cost
        ):
            # Even the model promises less than the function tolerance: this is the optimum.
            stop = ("CONVERGENCE", f"predicted decrease {predicted:.3e} is below the function tolerance")
        elif gauss_newton and not accepted:
            stop = ("NO_CONVERGENCE", "Gauss-Newton step increased the cost")
        elif damping >= options.max_damping:
            stop = ("NO_CONVERGENCE", f"damping reached its maximum {options.max_damping:g}")

        elapsed = clock() - start
        if stop is None and elapsed > options.max_solver_time_in_seconds and iteration < options.max_iterations:
            # Checked before the next linearisation, which would be wasted; a linear solve cut
            # short by the budget (status time_limit) still had its truncated step tried above.
            stop = (
                "NO_CONVERGENCE",
                f"time limit reached: max_solver_time_in_seconds = {options.max_solver_time_in_seconds:g} s "
                f"(stopped after {iteration} iterations, {elapsed:.1f} s"
                + (", inside the linear solve" if step.status == "time_limit" else "")
                + "); the best state so far is returned",
            )
            log.warning("solve stopped by its time limit after %d iterations (%.1f s)", iteration, elapsed)
        if accepted and stop is None:
            before_inner = cost
            if inner is not None:
                state = _inner_pass(inner, state, summary)
            t0 = clock()
            residuals, jac = problem.linearize(state, res_dtype)
            system.linearization += 1
            times["residual_jacobian"] += clock() - t0
            if inner is not None:
                cost = _cost(residuals)  # the pass lowered it further (never raises it)
                report.cost, report.cost_change = cost, old_cost - cost
                if not _inner_pass_paid_off(before_inner, cost, options, summary):
                    inner = None
            if not np.all(np.isfinite(jac.values)):
                stop = ("FAILURE", "the Jacobian is not finite at the accepted state")
        now = clock()
        report.iteration_time = now - it_start
        report.total_time = now - start
        summary.iterations.append(report)
        if options.verbose:
            # Flushed: under a pipe or a log file a long solve must still show its progress.
            if iteration == 1:
                print(summary.iteration_table().splitlines()[0], flush=True)
            print(summary.iteration_table().splitlines()[-1], flush=True)
        if options.callback is not None:
            options.callback(report)
        if stop is not None:
            summary.termination, summary.message = stop
            break
    else:
        summary.message = f"iteration limit of {options.max_iterations} reached"

    summary.final_cost = cost
    times["total"] = clock() - start
    _count_invalid(problem, state, summary, initial=False)
    summary.compile_time = thread_compile_seconds() - compile_start
    return state, summary


def _inner_pass(inner: Callable[[Any], tuple[Any, int]], state: Any, summary: SolverSummary) -> Any:
    """One inner-iteration pass (SolverOptions.inner_iterations), timed and counted."""
    t0 = clock()
    state, moved = inner(state)
    summary.stage_times["inner_iterations"] += clock() - t0
    summary.inner_iteration_passes += 1
    summary.inner_iteration_moves += int(moved)
    return state


def _inner_pass_paid_off(before: float, after: float, options: SolverOptions, summary: SolverSummary) -> bool:
    """Whether inner iterations are still worth their time (SolverOptions.inner_iteration_tolerance)."""
    if before - after >= options.inner_iteration_tolerance * abs(before):
        return True
    log.debug(
        "inner iterations off after pass %d: it lowered the cost by %.2e (relative), below %g",
        summary.inner_iteration_passes,
        (before - after) / before if before else 0.0,
        options.inner_iteration_tolerance,
    )
    return False


def _count_invalid(problem: LeastSquaresProblem, state: Any, summary: SolverSummary, initial: bool) -> None:
    """Record (and warn about) observations the problem could not evaluate at `state`, for the
    problems that have such a notion (`count_invalid_observations`, e.g. points behind a camera)."""
    counter = getattr(problem, "count_invalid_observations", None)
    if counter is None:
        return
    count = int(counter(state))
    if initial:
        summary.invalid_observations_initial = count
    else:
        summary.invalid_observations = count
    if count:
        # INFO, not WARNING: the summary counts them and its report prints a "cheirality" line; a VO
        # window meets the odd such point every few keyframes and would flood a node's log.
        log.info(
            "%d observation(s) with the point at or behind its camera at the %s state: constant residual, "
            "zero Jacobian (counted in the summary)",
            count,
            "initial" if initial else "final",
        )


def problem_norm(state: Any) -> float:
    """A scale for the parameter tolerance: the norm of the state's numeric content."""
    if isinstance(state, np.ndarray):
        flat = state.reshape(-1)
        return math.sqrt(dot64(flat, flat))
    if isinstance(state, tuple | list):
        return float(math.sqrt(sum(problem_norm(s) ** 2 for s in state)))
    values = getattr(state, "translations", None)
    return problem_norm(np.ascontiguousarray(values)) if values is not None else 0.0


def _cost(residuals: np.ndarray) -> float:
    return 0.5 * dot64(residuals, residuals)
