"""Small dense nonlinear least-squares problems for the LM driver (curve fits, NIST StRD tests).

The driver in :mod:`lm` is written for sparse SLAM problems; this module lets any
``r(x): R^n -> R^m`` with a dense Jacobian run through the same code path, precision recipe and
fallbacks, so that the mixed-precision machinery can be checked against certified results.

Precision matters here: when the solver asks for fp32 residuals, the user's functions are called
with the parameters already rounded to fp32, so the residuals are really computed in fp32 (a
fp64 evaluation rounded afterwards would hide exactly the cancellation fp32 suffers).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from .jacobian import BlockJacobian
from .lm import SolverOptions, SolverSummary, solve
from .precision import Precision, PrecisionConfig

__all__ = ["DenseLeastSquaresProblem", "least_squares"]

ResidualFn = Callable[[np.ndarray], ArrayLike]
JacobianFn = Callable[[np.ndarray], ArrayLike]


class DenseLeastSquaresProblem:
    """A problem for :func:`mp_slam_ros.solver.lm.solve` given by a residual and a Jacobian function.

    Args:
        residual_fn: ``r(x) -> (m,)``. Called with ``x`` in the precision the solver evaluates
            residuals in (fp64 or fp32); it should compute in ``x.dtype`` (cast its data to it)
            for the fp32 presets to mean real fp32 arithmetic.
        jacobian_fn: ``J(x) -> (m, n)``, the derivative of ``residual_fn``, same dtype rule.
        num_parameters: ``n``, the length of the parameter vector.

    The state is the fp64 parameter vector itself, and the retraction is plain addition.
    """

    def __init__(self, residual_fn: ResidualFn, jacobian_fn: JacobianFn, num_parameters: int) -> None:
        if num_parameters < 1:
            raise ValueError(f"num_parameters must be positive, got {num_parameters}")
        self._residual_fn = residual_fn
        self._jacobian_fn = jacobian_fn
        self._num_parameters = int(num_parameters)

    @property
    def num_parameters(self) -> int:
        return self._num_parameters

    @property
    def block_size(self) -> int:
        return 1

    def _at(self, state: np.ndarray, dtype: np.dtype) -> np.ndarray:
        x = np.asarray(state, dtype=np.float64)
        if x.shape != (self._num_parameters,):
            raise ValueError(f"state must have shape ({self._num_parameters},), got {x.shape}")
        # A fresh array: user functions may write into their argument without touching the state.
        return x.astype(dtype, copy=True)

    def residuals(self, state: np.ndarray, dtype: np.dtype | type = np.float64) -> np.ndarray:
        """r(state) evaluated with the parameters rounded to `dtype`, returned as `dtype` (m,)."""
        dtype = np.dtype(dtype)
        r = np.asarray(self._residual_fn(self._at(state, dtype)))
        if r.ndim != 1:
            raise ValueError(f"residual_fn must return a 1-D array, got shape {r.shape}")
        return r.astype(dtype, copy=False)

    def jacobian(self, state: np.ndarray, dtype: np.dtype | type = np.float64) -> np.ndarray:
        """J(state) evaluated with the parameters rounded to `dtype`, returned as `dtype` (m, n)."""
        dtype = np.dtype(dtype)
        jac = np.asarray(self._jacobian_fn(self._at(state, dtype)))
        if jac.ndim != 2 or jac.shape[1] != self._num_parameters:
            raise ValueError(f"jacobian_fn must return an (m, {self._num_parameters}) array, got shape {jac.shape}")
        return jac.astype(dtype, copy=False)

    def linearize(self, state: np.ndarray, dtype: np.dtype | type = np.float64) -> tuple[np.ndarray, BlockJacobian]:
        r = self.residuals(state, dtype)
        jac = self.jacobian(state, dtype)
        if jac.shape[0] != r.shape[0]:
            raise ValueError(f"jacobian_fn returned {jac.shape[0]} rows for {r.shape[0]} residuals")
        return r, BlockJacobian.dense(jac)

    def retract(self, state: np.ndarray, delta: np.ndarray) -> np.ndarray:
        return np.asarray(state, dtype=np.float64) + np.asarray(delta, dtype=np.float64)


def default_options(num_parameters: int, precision: PrecisionConfig) -> SolverOptions:
    """Options suited to a small dense fit at `precision` (what :func:`least_squares` uses).

    * The linear solver follows the matrix-storage precision: the fp64 direct solve when J is
      stored in fp64, else CGNR, so that asking for `fp32`/`mixed` actually exercises the
      low-precision storage instead of being silently served by the fp64 factorisation.
    * Inner CG solves aim for a tight tolerance but stop once the model decrease stalls, and run
      at most 3n iterations: CG needs n in exact arithmetic, and CGLS iterated long past its
      attainable accuracy can diverge rather than stagnate. Exact steps cost nothing with a
      handful of unknowns and save LM iterations.
    * Tolerances and the iteration budget (100 n) follow scipy.optimize.least_squares' defaults.
    """
    storage_fp64 = precision.matrix_storage is Precision.FP64
    return SolverOptions(
        linear_solver="cholesky" if storage_fp64 else "cgnr",
        max_iterations=100 * num_parameters,
        function_tolerance=1e-8,
        parameter_tolerance=1e-8,
        gradient_tolerance=1e-10,
        cg_tolerance=1e-10,
        cg_q_tolerance=1e-6,
        cg_max_iterations=3 * num_parameters,
    )


def least_squares(
    residual_fn: ResidualFn,
    jacobian_fn: JacobianFn,
    x0: ArrayLike,
    precision: str | PrecisionConfig = "fp64",
    options: SolverOptions | None = None,
) -> tuple[np.ndarray, SolverSummary]:
    """Minimise ``0.5 |residual_fn(x)|^2`` from `x0` with the mixed-precision LM driver.

    A convenience in the manner of ``scipy.optimize.least_squares(fun, x0, jac=...)``.

    Args:
        residual_fn, jacobian_fn: see :class:`DenseLeastSquaresProblem`.
        x0: starting point, shape (n,).
        precision: a preset name (``"fp64"``, ``"fp32"``, ``"mixed"``, ``"fp16"``) or a config.
        options: solver options; :func:`default_options` when omitted.

    Returns:
        The fp64 solution and the solver's summary (``final_cost`` is ``0.5 |r|^2``).
    """
    x = np.array(x0, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x0 must be finite")
    config = PrecisionConfig.preset(precision) if isinstance(precision, str) else precision
    problem = DenseLeastSquaresProblem(residual_fn, jacobian_fn, x.size)
    options = options if options is not None else default_options(x.size, config)
    state, summary = solve(problem, x, options, config)
    return np.asarray(state, dtype=np.float64), summary
