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

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import kernels
from .block_products import DEFAULT_CHUNK, PackedJacobian, pack_stored, repack
from .half import HALF_MAX, to_half_bits
from .jacobian import BlockJacobian
from .precision import Precision

_STATUS = {
    kernels.CG_CONVERGED: "converged",
    kernels.CG_MAX_ITERATIONS: "max_iterations",
    kernels.CG_BREAKDOWN: "breakdown",
    kernels.CG_NON_FINITE: "non_finite",
    kernels.CG_STAGNATED: "stagnated",
}


class PrecisionOverflow(ArithmeticError):
    """Values do not fit the storage precision (overflow or non-finite)."""

    def __init__(self, stage: str, precision: Precision, detail: str) -> None:
        super().__init__(f"{stage} at {precision.value}: {detail}")
        self.stage = stage
        self.precision = precision
        self.detail = detail


def store_values(values: np.ndarray, precision: Precision, stage: str) -> np.ndarray:
    """Round values to the storage precision; fp16 is returned as bit patterns (half.HALF_STORAGE)."""
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
    # converged | max_iterations | stagnated | breakdown | non_finite | direct | time_limit (stopped
    # between CG chunks by the caller's deadline: x is the truncated, still usable, step so far)
    status: str
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

    values: np.ndarray  # flat: fp64 / fp32 / fp16 bit patterns (half.HALF_STORAGE)
    col_start: np.ndarray
    slot_offsets: np.ndarray
    slot_widths: np.ndarray
    rdim: int
    cdim: int
    num_rows: int
    num_columns: int
    column_scale: np.ndarray  # S, fp64
    precision: Precision
    packed: PackedJacobian | None = None  # the same values in block_products' grouped layout

    @classmethod
    def store(
        cls,
        jac: BlockJacobian,
        precision: Precision,
        scale: bool = True,
        column_norms: np.ndarray | None = None,
        layout: str = "auto",
        previous: StoredJacobian | None = None,
    ) -> StoredJacobian:
        """Scale the columns to unit norm (unless `scale` is False) and round to `precision`.

        With unit columns every entry is in [-1, 1], so fp16 cannot overflow; only the naive fp16
        preset skips this, to show what happens without it. `layout` "rows" keeps the block rows
        for the CG products; "grouped" also packs them for block_products' grouped kernels (two
        slots, observations grouped by their first slot's variable: 10x faster products on
        bundle adjustment, benchmarks/results/ba_kernels.md); "auto" packs when the grouping pads
        the observations by at most GROUPED_MAX_PADDING (many observations per camera, as in BA,
        unlike a pose graph's edges). With "auto", `previous` (the stored J of an earlier
        linearisation of the same problem) lends its layout decision and grouping when the
        structure (col_start) is unchanged, so each LM iteration only moves the values.
        """
        if layout not in ("rows", "auto", "grouped"):
            raise ValueError(f"layout must be auto, rows or grouped, got '{layout}'")
        norms = jac.column_norms() if scale and column_norms is None else column_norms
        column_scale = scale_from_norms(norms, scale, jac.num_columns)
        widths = np.asarray(jac.slot_widths, dtype=np.int64)
        scaled = kernels.scale_block_columns(
            np.ascontiguousarray(jac.values).reshape(-1), jac.col_start, jac.slot_offsets, widths, jac.rdim, jac.cdim,
            column_scale, np.empty(jac.values.size),
        )  # fmt: skip
        stored = cls(
            store_values(scaled, precision, "matrix_storage"),
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
        if layout == "auto" and previous is not None and np.array_equal(previous.col_start, jac.col_start):
            if previous.packed is not None:
                stored.packed = repack(previous.packed, stored.values, jac.col_start)
        elif layout == "grouped" or (layout == "auto" and grouped_padding(jac) <= GROUPED_MAX_PADDING):
            stored.packed = pack_stored(stored, "grouped", DEFAULT_CHUNK)
        return stored

    @property
    def operator(self) -> tuple:
        """J as pcg_normal's operand (kernels.normal_product): packed if available, else block rows."""
        if self.packed is not None:
            return (*self.packed.args, self.packed.layout.dims)
        return (self.values, self.col_start, self.slot_offsets, self.slot_widths, self.rdim, self.cdim)


GROUPED_MAX_PADDING = 0.25


def scale_from_norms(norms: np.ndarray | None, scale: bool, num_columns: int) -> np.ndarray:
    """The column scaling S: the column norms of J (1 for an empty column), or 1 everywhere when
    the precision configuration does not scale (the naive fp16 preset)."""
    if not scale:
        return np.ones(num_columns)
    assert norms is not None
    return np.where(norms > 0, norms, 1.0)


def grouped_padding(jac: BlockJacobian) -> float:
    """Extra (padding) observations the grouped layout needs, as a fraction; inf if it does not apply."""
    if jac.col_start.shape[1] != 2 or jac.col_start.shape[0] == 0:
        return math.inf
    if np.any(jac.col_start < 0) and jac.num_columns < max(jac.slot_widths):
        return math.inf
    _, sizes = np.unique(jac.col_start[:, 0], return_counts=True)
    padded = int(np.sum(-(-sizes // DEFAULT_CHUNK))) * DEFAULT_CHUNK
    return padded / jac.col_start.shape[0] - 1.0


@dataclass
class BlockJacobiPreconditioner:
    """Block-Jacobi preconditioner of the column-scaled J_s^T J_s + D_s for CGNR: one dense block
    per variable (a pose, a camera, a point), read off the Jacobian's slots, so nothing about the
    problem is assumed. Cheap enough to rebuild every LM iteration, which it must be, as the
    damping D changes. Each block is kept as G = chol(M_v)^-1 and applied as G^T G (see kernels).
    """

    ptr: np.ndarray  # (nv+1,) first column of each variable
    offsets: np.ndarray  # (nv+1,) offset of each variable's w x w block in the flat storage
    g64: np.ndarray  # flat fp64 blocks G_v / m_v, row-major, m_v = max |G_v| (entries in [-1, 1])
    gscale: np.ndarray  # (nv,) m_v^2, applied in the CG vectors' precision
    shifted_blocks: int  # blocks that were not positive definite and got a diagonal shift
    values: np.ndarray | None = None
    precision: Precision | None = None

    @classmethod
    def build(
        cls, jac: BlockJacobian, column_scale: np.ndarray, scaled_damping: np.ndarray
    ) -> BlockJacobiPreconditioner:
        """Factor the variable blocks of S^-1 J^T J S^-1 + diag(scaled_damping) in fp64."""
        widths = np.asarray(jac.slot_widths, dtype=np.int64)
        ptr, offsets = kernels.variable_partition(jac.col_start, widths, jac.num_columns)
        g, shifted = kernels.block_jacobi_factor(
            jac.values, jac.col_start, jac.slot_offsets, widths, jac.rdim, jac.cdim,
            np.ascontiguousarray(column_scale, dtype=np.float64),
            np.ascontiguousarray(scaled_damping, dtype=np.float64), ptr, offsets,
        )  # fmt: skip
        peak = np.maximum.reduceat(np.abs(g), offsets[:-1]) if g.size else np.ones(0)
        peak = np.where(peak > 0, peak, 1.0)
        g /= np.repeat(peak, np.diff(offsets))
        return cls(ptr, offsets, g, peak**2, int(shifted))

    @property
    def num_variables(self) -> int:
        return int(self.ptr.shape[0] - 1)

    def stored(self, precision: Precision) -> BlockJacobiPreconditioner:
        if self.precision is not precision:
            self.values = store_values(self.g64, precision, "preconditioner")
            self.precision = precision
        return self

    def apply(self, r: np.ndarray) -> np.ndarray:
        """M^-1 r at the stored precision (for tests and diagnostics; the solver applies it in-kernel)."""
        assert self.values is not None
        gscale = self.gscale.astype(r.dtype)
        return kernels.apply_block_jacobi(self.ptr, self.offsets, self.values, gscale, r, np.empty_like(r))


def solve_cgnr(
    jac: StoredJacobian,
    gradient: np.ndarray,
    damping: float | np.ndarray,
    preconditioner: BlockIncompleteCholesky | BlockJacobiPreconditioner | None,
    vector_precision: Precision,
    tol: float,
    max_iterations: int,
    q_tolerance: float = 0.0,
    chunk_iterations: int = 0,
    on_chunk: Callable[[int, float], bool] | None = None,
) -> LinearSolveResult:
    """The step x solving (J^T J + diag(damping)) x = -gradient by CG on the normal equations.

    J^T J is applied as J^T (J p) with the stored (scaled, possibly fp16) J and never formed.
    `gradient` = J^T r comes from the caller at residual precision, so the stored precision of J
    cannot move the optimum the nonlinear iteration converges to. `damping` (a scalar or one
    value per column) is in the caller's unscaled variables; the solve runs on y = S x, where it
    becomes damping_k / S_k^2. The preconditioner, if given, approximates J_s^T J_s (its factor
    from the first linearisation, see `scaled_damping`) or is a block-Jacobi of it, both already
    stored at their precision. Vectors and scalars are at `vector_precision`; x is fp64.

    `chunk_iterations` > 0 runs the CG kernel at most that many iterations at a time, so that a
    long solve returns to Python between chunks: `on_chunk(iterations_so_far, relative_residual)`
    reports progress and returns False to stop (status "time_limit", x the iterate so far, a
    usable truncated step). A chunk that ends at its cap is continued by CG on the correction,
    A d = b - A y (the residual recomputed in fp64 from the stored J); the restart forgets the
    Krylov space, so chunks should be long (the driver sizes them to seconds). A solve that
    finishes within its first chunk is bit-identical to an unchunked one.
    """
    vec = vector_precision.dtype
    rhs = np.ascontiguousarray(-np.asarray(gradient) / jac.column_scale, dtype=vec)
    damping_s = scaled_damping(damping, jac.column_scale).astype(vec)
    y = np.zeros(jac.num_columns, dtype=vec)
    empty = np.zeros(0, dtype=np.int64)
    block_size = 1
    if isinstance(preconditioner, BlockIncompleteCholesky):
        assert preconditioner.lvalues is not None and preconditioner.dinv is not None
        pre = (
            kernels.PRE_BLOCK_IC,
            preconditioner.lindptr,
            preconditioner.lindices,
            preconditioner.lvalues,
            preconditioner.dinv,
            preconditioner.perm,
        )
        block_size = preconditioner.block_size
    elif isinstance(preconditioner, BlockJacobiPreconditioner):
        assert preconditioner.values is not None
        jacobi = preconditioner
        pre = (kernels.PRE_BLOCK_JACOBI, jacobi.ptr, jacobi.offsets, jacobi.values, jacobi.gscale.astype(vec), empty)
    else:
        none = np.zeros(0, dtype=vec)
        pre = (kernels.PRE_NONE, empty, empty, none, none, empty)
    shape = kernels.block_shape(block_size)
    chunk = max_iterations if chunk_iterations <= 0 else min(chunk_iterations, max_iterations)
    its, status, rel = kernels.pcg_normal(
        jac.operator, jac.num_columns, *pre, rhs, damping_s, y, tol, q_tolerance, chunk, shape
    )
    its, status_name, rel = int(its), _STATUS[int(status)], float(rel)
    if status_name == "max_iterations" and its < max_iterations:
        its, status_name, rel = _continue_cgnr(
            jac, pre, shape, rhs, damping_s, y, (its, rel), tol, q_tolerance, max_iterations, chunk, on_chunk
        )
    x = y.astype(np.float64) / jac.column_scale
    return LinearSolveResult(x, its, status_name, rel)


def _continue_cgnr(
    jac: StoredJacobian,
    pre: tuple,
    shape: tuple,
    rhs: np.ndarray,
    damping_s: np.ndarray,
    y: np.ndarray,
    done: tuple[int, float],
    tol: float,
    q_tolerance: float,
    max_iterations: int,
    chunk: int,
    on_chunk: Callable[[int, float], bool] | None,
) -> tuple[int, str, float]:
    """Further chunks of a CG solve whose first chunk hit its cap; `y` is updated in place.

    Each chunk solves for the correction d of A d = b - A y with the tolerance rescaled to the
    original right-hand side. Nash and Sofer's model test then judges the chunk's own model,
    which only ever stops a continuation that has stalled. A breakdown inside a continuation
    keeps the iterate of the chunks before it: it is still a descent step.
    """
    its, rel = done
    b64 = rhs.astype(np.float64)
    bnorm = math.sqrt(kernels.dot64(b64, b64))
    d = np.zeros_like(y)
    while True:
        if on_chunk is not None and not on_chunk(its, rel):
            return its, "time_limit", rel
        y64 = y.astype(np.float64)
        jy = kernels.block_matvec(
            jac.values, jac.col_start, jac.slot_offsets, jac.slot_widths, jac.rdim, jac.cdim, y64,
            np.empty(jac.num_rows),
        )  # fmt: skip
        ay = kernels.block_rmatvec(
            jac.values, jac.col_start, jac.slot_offsets, jac.slot_widths, jac.rdim, jac.cdim, jy,
            np.empty(jac.num_columns),
        )  # fmt: skip
        r64 = b64 - ay - damping_s.astype(np.float64) * y64
        rnorm = math.sqrt(kernels.dot64(r64, r64))
        rel = rnorm / bnorm if bnorm > 0 else 0.0
        if rel <= tol:
            return its, "converged", rel
        step = min(chunk, max_iterations - its)
        k, status, krel = kernels.pcg_normal(
            jac.operator, jac.num_columns, *pre, r64.astype(y.dtype), damping_s, d, tol * bnorm / rnorm,
            q_tolerance, step, shape,
        )  # fmt: skip
        its += int(k)
        name = _STATUS[int(status)]
        if name in ("breakdown", "non_finite"):
            return its, "stagnated", rel
        y += d
        rel = float(krel) * rnorm / bnorm
        if name != "max_iterations" or its >= max_iterations:
            return its, name, rel


def scaled_damping(damping: float | np.ndarray, column_scale: np.ndarray) -> np.ndarray:
    """The damping diagonal in the column-scaled variables y = S x: damping_k / S_k^2 (fp64)."""
    return np.broadcast_to(damping, column_scale.shape) / column_scale**2


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


FULL_FILL = 1 << 30  # a fill level that admits every fill block: the complete factor


def fill_reducing_order(matrix: BlockSparseMatrix) -> np.ndarray:
    """A minimum-degree ordering of the block graph (new position -> old block), from SuperLU."""
    nb = matrix.indptr.shape[0] - 1
    rows = np.repeat(np.arange(nb), np.diff(matrix.indptr))
    # A diagonally dominant stand-in with the block pattern: SuperLU only needs the structure.
    graph = sp.csc_matrix((np.full(rows.size, -1.0), (rows, matrix.indices)), shape=(nb, nb))
    graph = graph + sp.diags(np.asarray(abs(graph).sum(axis=1)).ravel() + 1.0)
    lu = spla.splu(graph.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    # L U = Pc^T A Pc with Pc[i, perm_c[i]] = 1, so new position a holds old block argsort(perm_c)[a].
    return np.argsort(lu.perm_c).astype(np.int64)


@dataclass
class BlockIncompleteCholesky:
    """Static block incomplete-Cholesky factor, P H P^T ~ L L^T, factored once in fp64.

    `fill_level` 0 is IC(0) (the pattern of H); higher levels admit fill of that level
    (IC(p)); a very large level is the complete factor of the matrix it was built from. The
    ordering is natural or minimum degree (which keeps fill, and so storage and triangular-solve
    time, small). The fp64 factor is kept so that the stored copy can be re-made at a wider
    precision when the configured one overflows.
    """

    lindptr: np.ndarray
    lindices: np.ndarray
    lower64: np.ndarray  # (nnz_strictly_lower, bs, bs)
    dinv64: np.ndarray  # (n_blocks, bs, bs): inverses of the diagonal blocks of L
    perm: np.ndarray  # new position -> old block
    shift: float
    attempts: int
    fill_level: int
    lvalues: np.ndarray | None = None
    dinv: np.ndarray | None = None
    precision: Precision | None = None

    @classmethod
    def factor(
        cls,
        matrix: BlockSparseMatrix,
        fill_level: int = 0,
        ordering: str = "natural",
        initial_shift: float = 1e-3,
        max_attempts: int = 30,
    ) -> BlockIncompleteCholesky:
        """Factor; on breakdown retry with a diagonal shift that grows tenfold (Manteuffel)."""
        nb = matrix.indptr.shape[0] - 1
        bs = matrix.block_size
        if ordering == "natural":
            perm = np.arange(nb, dtype=np.int64)
        elif ordering == "mmd":
            perm = fill_reducing_order(matrix)
        else:
            raise ValueError(f"ordering must be 'natural' or 'mmd', got '{ordering}'")
        inv = np.empty(nb, dtype=np.int64)
        inv[perm] = np.arange(nb)
        rows = np.repeat(np.arange(nb), np.diff(matrix.indptr))
        new_r, new_c = inv[rows], inv[matrix.indices]
        lower = new_c <= new_r
        # Blocks above the diagonal in the new order are transposes of blocks below it.
        blocks = np.where((new_c <= new_r)[:, None, None], matrix.blocks, np.swapaxes(matrix.blocks, 1, 2))
        lo_r = np.where(lower, new_r, new_c)
        lo_c = np.where(lower, new_c, new_r)
        key = lo_r * nb + lo_c
        key, first = np.unique(key, return_index=True)
        lo_r, lo_c, blocks = key // nb, key % nb, blocks[first]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(lo_r, minlength=nb))]).astype(np.int64)
        level = int(min(fill_level, 1 << 30))
        pptr, pcols = kernels.symbolic_fill(indptr, lo_c.astype(np.int64), level)
        prow = np.repeat(np.arange(nb), np.diff(pptr))
        pattern_blocks = np.zeros((pcols.size, bs, bs))
        pattern_blocks[np.searchsorted(prow * nb + pcols, key)] = blocks
        strict = pcols < prow
        lindptr = np.concatenate([[0], np.cumsum(np.bincount(prow[strict], minlength=nb))]).astype(np.int64)
        shift = 0.0
        for attempt in range(1, max_attempts + 1):
            ok, lower_blocks, dinv = kernels.block_factor(pptr, pcols, pattern_blocks, shift, kernels.block_shape(bs))
            if ok and np.all(np.isfinite(dinv)) and np.all(np.isfinite(lower_blocks)):
                return cls(lindptr, pcols[strict], lower_blocks[strict], dinv, perm, shift, attempt, fill_level)
            shift = initial_shift if shift == 0.0 else shift * 10.0
        raise np.linalg.LinAlgError(f"block incomplete Cholesky broke down even with a diagonal shift of {shift:g}")

    @property
    def block_size(self) -> int:
        return int(self.dinv64.shape[1])

    @property
    def num_blocks(self) -> int:
        """Stored blocks: strictly lower plus diagonal."""
        return int(self.lower64.shape[0] + self.dinv64.shape[0])

    def extended(self, num_blocks: int) -> BlockIncompleteCholesky:
        """This factor grown to `num_blocks` variables: the new ones go last in the ordering with
        identity blocks and no coupling. That is the right diagonal for the column-scaled system
        (unit diagonal), so a grown problem keeps the old factor where it still describes it."""
        old = int(self.dinv64.shape[0])
        if num_blocks < old:
            raise ValueError(f"cannot extend a factor of {old} blocks to {num_blocks}")
        if num_blocks == old:
            return self
        bs = self.block_size
        added = num_blocks - old
        return BlockIncompleteCholesky(
            np.concatenate([self.lindptr, np.full(added, self.lindptr[-1], dtype=np.int64)]),
            self.lindices,
            self.lower64,
            np.concatenate([self.dinv64, np.broadcast_to(np.eye(bs), (added, bs, bs))]),
            np.concatenate([self.perm, np.arange(old, num_blocks, dtype=np.int64)]),
            self.shift,
            self.attempts,
            self.fill_level,
        )

    def stored(self, precision: Precision) -> BlockIncompleteCholesky:
        if self.precision is not precision:
            self.lvalues = store_values(self.lower64.reshape(-1), precision, "preconditioner")
            self.dinv = store_values(self.dinv64.reshape(-1), precision, "preconditioner")
            self.precision = precision
        return self

    def apply(self, r: np.ndarray) -> np.ndarray:
        """M^-1 r at the stored precision (for tests and diagnostics; the solver applies it in-kernel)."""
        assert self.lvalues is not None and self.dinv is not None
        out = np.empty_like(r)
        shape = kernels.block_shape(self.block_size)
        factor = (self.lindptr, self.lindices, self.lvalues, self.dinv, self.perm)
        kernels.apply_block_preconditioner(*factor, r, out, shape)
        return out


def solve_direct(matrix: sp.spmatrix, rhs: np.ndarray, block_size: int = 1) -> LinearSolveResult:
    """fp64 sparse Cholesky with a minimum-degree ordering (the reference solver); rhs (n,) or (n, k).

    Uses the block factorisation with complete fill, and SuperLU when the matrix is not
    numerically positive definite (its pivoting copes with what Cholesky cannot).
    """
    rhs = np.asarray(rhs, dtype=np.float64)
    try:
        factor = BlockIncompleteCholesky.factor(
            BlockSparseMatrix.from_scipy(matrix, block_size), fill_level=FULL_FILL, ordering="mmd", max_attempts=1
        )
        factor.stored(Precision.FP64)
        x = factor.apply(rhs) if rhs.ndim == 1 else np.stack([factor.apply(c) for c in rhs.T], axis=1)
    except np.linalg.LinAlgError:
        try:
            lu = spla.splu(sp.csc_matrix(matrix, dtype=np.float64), permc_spec="MMD_AT_PLUS_A")
        except RuntimeError:  # exactly singular
            return LinearSolveResult(np.zeros_like(rhs), 1, "non_finite", np.inf)
        x = lu.solve(rhs)
    ok = bool(np.all(np.isfinite(x)))
    return LinearSolveResult(x, 1, "direct" if ok else "non_finite", 0.0)
