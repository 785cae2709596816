"""Linear solvers for the LM step at configured precision.

* :func:`solve_cgnr` — CGLS straight on the (column-scaled) Jacobian; J^T J is never formed
  for products. Optionally preconditioned by a static block IC(0) factor of J^T J, factored
  once per problem and reused (the pose-graph recipe), or by nothing beyond the column scaling.
* :func:`solve_direct` — sparse LU in fp64, the reference.

Matrices are scaled before they are stored so that fp16 cannot overflow (unit column norms of J,
so unit diagonal of the J^T J the preconditioner factors). Storage still checks every value: anything that
does not fit raises
:class:`PrecisionOverflow`, and the caller falls back to a wider type for that stage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import kernels
from .half import HALF_MAX, to_half_bits
from .jacobian import BlockJacobian
from .precision import Precision

_STATUS = {
    kernels.CG_CONVERGED: "converged",
    kernels.CG_MAX_ITERATIONS: "max_iterations",
    kernels.CG_BREAKDOWN: "breakdown",
    kernels.CG_NON_FINITE: "non_finite",
}


class PrecisionOverflow(ArithmeticError):
    """Values do not fit the storage precision (overflow or non-finite)."""

    def __init__(self, stage: str, precision: Precision, detail: str) -> None:
        super().__init__(f"{stage} at {precision.value}: {detail}")
        self.stage = stage
        self.precision = precision
        self.detail = detail


def store_values(values: np.ndarray, precision: Precision, stage: str) -> np.ndarray:
    """Round values to the storage precision; fp16 is returned as uint16 bit patterns."""
    if not np.all(np.isfinite(values)):
        raise PrecisionOverflow(stage, precision, "non-finite value before rounding")
    if precision is Precision.FP16:
        peak = float(np.max(np.abs(values))) if values.size else 0.0
        if peak > HALF_MAX:
            raise PrecisionOverflow(
                stage, precision, f"|value| up to {peak:.3g} exceeds fp16 max {HALF_MAX:.0f}"
            )
        return to_half_bits(values)
    stored = np.ascontiguousarray(values, dtype=precision.dtype)
    if not np.all(np.isfinite(stored)):
        raise PrecisionOverflow(stage, precision, "overflow when rounding")
    return stored


@dataclass
class LinearSolveResult:
    x: np.ndarray  # fp64 solution in the caller's (unscaled) variables
    iterations: int
    status: str  # converged | max_iterations | breakdown | non_finite | direct
    relative_residual: float

    @property
    def failed(self) -> bool:
        return self.status in ("breakdown", "non_finite")


# ---------------------------------------------------------------------------------------------
# CGNR on the stored Jacobian
# ---------------------------------------------------------------------------------------------
@dataclass
class StoredJacobian:
    """J with unit-norm columns, J_s = J S^-1, its values stored at one precision for products."""

    values: np.ndarray  # flat: fp64 / fp32 / uint16 (fp16 bit patterns)
    col_start: np.ndarray
    slot_offsets: np.ndarray
    slot_widths: np.ndarray
    rdim: int
    cdim: int
    num_rows: int
    num_columns: int
    column_scale: np.ndarray  # S, fp64
    precision: Precision

    @classmethod
    def store(cls, jac: BlockJacobian, precision: Precision, scale: bool = True) -> StoredJacobian:
        """Scale the columns to unit norm (unless `scale` is False) and round to `precision`.

        With unit columns every entry is in [-1, 1], so fp16 cannot overflow; only the naive fp16
        preset skips this, to show what happens without it.
        """
        if scale:
            norms = jac.column_norms()
            column_scale = np.where(norms > 0, norms, 1.0)
        else:
            column_scale = np.ones(jac.num_columns)
        scaled = jac.values.astype(np.float64)
        for s, (off, w) in enumerate(zip(jac.slot_offsets, jac.slot_widths, strict=True)):
            start = jac.col_start[:, s]
            ok = start >= 0
            idx = start[ok, None] + np.arange(w)[None, :]
            scaled[ok, :, off : off + w] /= column_scale[idx][:, None, :]
        return cls(
            store_values(scaled.reshape(-1), precision, "matrix_storage"),
            jac.col_start,
            jac.slot_offsets,
            np.asarray(jac.slot_widths, dtype=np.int64),
            jac.rdim,
            jac.cdim,
            jac.shape[0],
            jac.num_columns,
            column_scale,
            precision,
        )


def solve_cgnr(
    jac: StoredJacobian,
    rhs: np.ndarray,
    damping: float,
    preconditioner: BlockIC0 | None,
    vector_precision: Precision,
    tol: float,
    max_iterations: int,
    q_tolerance: float = 0.0,
) -> LinearSolveResult:
    """Solve min |J x - rhs|^2 + damping |S x|^2 by preconditioned CGLS on J_s (y = S x).

    With unit columns, damping * I on y is Marquardt's damping * diag(J^T J) on x. The
    preconditioner, if given, approximates J_s^T J_s (its factor from the first linearisation).
    Vectors and scalars are at `vector_precision`; the returned x is fp64.
    """
    vec = vector_precision.dtype
    b = np.ascontiguousarray(rhs, dtype=vec)
    y = np.zeros(jac.num_columns, dtype=vec)
    if preconditioner is not None:
        assert preconditioner.lvalues is not None and preconditioner.dinv is not None
        pre = (
            preconditioner.lindptr,
            preconditioner.lindices,
            preconditioner.lvalues,
            preconditioner.dinv,
            preconditioner.block_size,
            True,
        )
    else:
        empty = np.zeros(0, dtype=np.int64)
        pre = (empty, empty, np.zeros(0, dtype=vec), np.zeros(0, dtype=vec), 1, False)
    its, status, rel = kernels.pcgls(
        jac.values,
        jac.col_start,
        jac.slot_offsets,
        jac.slot_widths,
        jac.rdim,
        jac.cdim,
        jac.num_columns,
        *pre,
        b,
        vec.type(damping),
        y,
        tol,
        q_tolerance,
        max_iterations,
    )
    x = y.astype(np.float64) / jac.column_scale
    return LinearSolveResult(x, int(its), _STATUS[int(status)], float(rel))


# ---------------------------------------------------------------------------------------------
# PCG with block IC(0)
# ---------------------------------------------------------------------------------------------
@dataclass
class BlockSparseMatrix:
    """A symmetric matrix in block CSR with square blocks (bs x bs), fp64 values."""

    indptr: np.ndarray
    indices: np.ndarray
    blocks: np.ndarray  # (nnz_blocks, bs, bs)

    @property
    def block_size(self) -> int:
        return int(self.blocks.shape[1])

    @property
    def n(self) -> int:
        return (self.indptr.shape[0] - 1) * self.block_size

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix, block_size: int) -> BlockSparseMatrix:
        bsr = sp.bsr_matrix(matrix, blocksize=(block_size, block_size))
        bsr.sort_indices()
        return cls(bsr.indptr.astype(np.int64), bsr.indices.astype(np.int64), np.ascontiguousarray(bsr.data))

    def to_scipy(self) -> sp.csr_matrix:
        n = self.n
        return sp.bsr_matrix((self.blocks, self.indices, self.indptr), shape=(n, n)).tocsr()

    def diagonal(self) -> np.ndarray:
        bs = self.block_size
        out = np.zeros(self.n)
        rows = np.repeat(np.arange(self.indptr.shape[0] - 1), np.diff(self.indptr))
        on_diag = np.nonzero(rows == self.indices)[0]
        out.reshape(-1, bs)[rows[on_diag]] = np.diagonal(self.blocks[on_diag], axis1=1, axis2=2)
        return out

    def scaled(self, scale: np.ndarray) -> BlockSparseMatrix:
        """D H D for a diagonal D given as a vector."""
        bs = self.block_size
        rows = np.repeat(np.arange(self.indptr.shape[0] - 1), np.diff(self.indptr))
        s = scale.reshape(-1, bs)
        blocks = self.blocks * s[rows][:, :, None] * s[self.indices][:, None, :]
        return BlockSparseMatrix(self.indptr, self.indices, blocks)

    def lower(self) -> BlockSparseMatrix:
        """The lower block triangle, diagonal included (what IC(0) factors)."""
        rows = np.repeat(np.arange(self.indptr.shape[0] - 1), np.diff(self.indptr))
        keep = self.indices <= rows
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=self.indptr.shape[0] - 1))])
        return BlockSparseMatrix(indptr.astype(np.int64), self.indices[keep], self.blocks[keep])


@dataclass
class BlockIC0:
    """Static block incomplete-Cholesky factor L (H ~ L L^T), factored once in fp64.

    The fp64 factor is kept so that the stored copy can be re-made at a wider precision when
    the configured one overflows.
    """

    lindptr: np.ndarray
    lindices: np.ndarray
    lower64: np.ndarray  # (nnz_lower, bs, bs)
    dinv64: np.ndarray  # (n_blocks, bs, bs)
    shift: float
    attempts: int
    lvalues: np.ndarray | None = None
    dinv: np.ndarray | None = None
    precision: Precision | None = None

    @classmethod
    def factor(
        cls, matrix: BlockSparseMatrix, initial_shift: float = 1e-3, max_attempts: int = 30
    ) -> BlockIC0:
        """Factor; on breakdown retry with a diagonal shift that grows tenfold (Manteuffel)."""
        low = matrix.lower()
        bs = matrix.block_size
        rows = np.repeat(np.arange(low.indptr.shape[0] - 1), np.diff(low.indptr))
        strict = low.indices < rows
        lindptr = np.concatenate(
            [[0], np.cumsum(np.bincount(rows[strict], minlength=low.indptr.shape[0] - 1))]
        ).astype(np.int64)
        shift = 0.0
        for attempt in range(1, max_attempts + 1):
            ok, lower, dinv = kernels.block_ic0_factor(low.indptr, low.indices, low.blocks, bs, shift)
            if ok and np.all(np.isfinite(dinv)) and np.all(np.isfinite(lower)):
                return cls(lindptr, low.indices[strict], lower[strict], dinv, shift, attempt)
            shift = initial_shift if shift == 0.0 else shift * 10.0
        raise np.linalg.LinAlgError(f"block IC(0) broke down even with a diagonal shift of {shift:g}")

    @property
    def block_size(self) -> int:
        return int(self.dinv64.shape[1])

    def stored(self, precision: Precision) -> BlockIC0:
        if self.precision is not precision:
            self.lvalues = store_values(self.lower64.reshape(-1), precision, "preconditioner")
            self.dinv = store_values(self.dinv64.reshape(-1), precision, "preconditioner")
            self.precision = precision
        return self


def solve_direct(matrix: sp.spmatrix, rhs: np.ndarray) -> LinearSolveResult:
    """fp64 sparse LU (SuperLU with a fill-reducing ordering) of a symmetric positive definite matrix."""
    lu = spla.splu(sp.csc_matrix(matrix, dtype=np.float64), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
    x = lu.solve(np.asarray(rhs, dtype=np.float64))
    ok = bool(np.all(np.isfinite(x)))
    return LinearSolveResult(x, 1, "direct" if ok else "non_finite", 0.0)
