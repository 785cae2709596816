"""J x and J^T y for two-slot observation Jacobians (bundle adjustment), in layouts built for fp16.

Every observation contributes an (rdim, cdim) block whose columns split into two slots (slot 0: a
camera or pose, slot 1: a point). fp16 storage can only save time where reading J is what limits
the kernel, so these layouts first make the arithmetic vector-wide and cut the per-observation work
that does not depend on the precision (gathering x, scattering into J^T y); the measurements are in
benchmarks/results/ba_kernels.md (benchmarks/bench_ba_kernels.py).

Layouts (:class:`ObservationLayout`; ``e = r * cdim + c`` is an entry of a block, K = ``chunk``):

* ``blocks``: one row-major block after another, as
  :class:`~mp_slam_ros.solver.linear.StoredJacobian` stores them (K = 1).
* ``soa``: ``values[e, obs]``, one row per entry, observations padded to whole tiles of K.
* ``chunked`` (AoSoA): chunks of K observations stored entry-major (``values[chunk, e, k]``): one
  chunk is one contiguous run and each entry's K values are one vector load (one ``vcvtph2ps``).
* ``grouped``: chunked, with the observations sorted by their slot-0 variable and every group padded
  to whole chunks, so all K observations of a chunk share their camera/pose. Its x values are then
  loop-invariant for the chunk, and its J^T y terms are summed in vector lanes over the group and
  added to the output once per group: only the point slot is gathered and scattered per
  observation (3 of 12 or 9 columns). This is the recommended layout.

The tiled layouts vectorise across a tile's observations, which needs x in tile-major order: it is
gathered into a small scratch with scalar loads first (forced vgatherdps measured no faster on AMD
Zen 5), and J^T y terms are scattered with scalar read-modify-writes (observations of one tile may
share a variable, which a vector scatter would get wrong without conflict detection). K must be at
least 16: LLVM fully unrolls an 8-iteration loop before its loop vectoriser runs, and the SLP
vectoriser that would be left cannot prove numba's arrays do not alias, so K = 8 stays scalar.

J x comes out in the layout's *row order* (:meth:`ObservationLayout.row_index`), padding rows
included: in CGNR J x only feeds J^T, so its order is free, and no tile needs a remainder loop.
Use :meth:`ObservationLayout.rows_to_layout` / ``rows_from_layout`` to convert.

Fixed variables (``col_start == -1``) are not skipped: packing zeroes their values and points the
slot at column 0, so the kernels have no branch per slot. A zero block times finite x adds nothing
(x with inf/NaN has failed the iteration already), and its J^T y term adds +0.

In a CG loop (compiled or not; ``kind`` = ``packed.layout.kind``)::

    packed = pack_stored(StoredJacobian.store(jac, precision))   # once per stored J
    matvec, rmatvec, normal = kernels_for(packed.layout.kind)     # e.g. grouped_matvec, grouped_rmatvec
    q = np.empty(packed.layout.num_row_slots, dtype=p.dtype)      # not num_rows: padding rows included
    matvec(*packed.args, p, q, packed.layout.dims)                # q = J p (layout row order)
    rmatvec(*packed.args, q, w, packed.layout.dims)               # w = J^T q
    normal(*packed.args, p, w, packed.layout.dims)                # or both at once, J read once

Every kernel is generic over the storage type through :func:`kernels.load` and
:func:`kernels.acc_zero`: fp64, fp32, or fp16 bit patterns (:data:`half.HALF_STORAGE`) widened to
fp32 and accumulated in the type of the output vector. Block shape and K reach the kernels as the
lengths of tuple arguments (:func:`layout_dims`), compile-time constants (numba types a tuple by
its length), so the loops over a block unroll and the loop across a tile vectorises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from .jit import jit
from .kernels import acc_zero, load

if TYPE_CHECKING:
    from .linear import StoredJacobian

LAYOUTS = ("blocks", "soa", "chunked", "grouped")
DEFAULT_LAYOUT = "grouped"
DEFAULT_CHUNK = 16  # 16 fp32 lanes: one zmm register per entry after widening
# Contraction only (a * b + c -> fma, one rounding instead of two); no reassociation, so the summation
# order, and with it the result, does not depend on how LLVM vectorises.
_FASTMATH = {"contract"}


def layout_dims(rdim: int, slot_widths: tuple[int, int], chunk: int) -> tuple[tuple, tuple, tuple, tuple]:
    """The tuple argument that carries (rdim, slot widths, chunk) into the kernels as constants."""
    if len(slot_widths) != 2:
        raise ValueError(f"two slots expected, got widths {tuple(slot_widths)}")
    return ((0,) * int(rdim), (0,) * int(slot_widths[0]), (0,) * int(slot_widths[1]), (0,) * int(chunk))


@dataclass(frozen=True, eq=False)
class ObservationLayout:
    """Where entry (obs, r, c) of J, its column starts and its rows live in the packed arrays.

    Observations are packed in a sequence of ``num_tiles * chunk`` slots; ``position[obs]`` is the
    slot of observation ``obs`` (identity except for ``grouped``), the other slots are padding.
    """

    kind: str
    rdim: int
    slot_widths: tuple[int, int]
    chunk: int
    num_blocks: int
    num_columns: int
    num_tiles: int
    position: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.kind!r}")
        if self.kind == "blocks" and self.chunk != 1:
            raise ValueError("the blocks layout has chunk 1")
        if self.chunk < 1:
            raise ValueError("chunk must be >= 1")

    @property
    def cdim(self) -> int:
        return int(sum(self.slot_widths))

    @property
    def entries(self) -> int:
        return self.rdim * self.cdim

    @property
    def num_padded(self) -> int:
        """Observation slots, padding included."""
        return self.num_tiles * self.chunk

    @property
    def num_rows(self) -> int:
        """Rows of J."""
        return self.num_blocks * self.rdim

    @property
    def num_row_slots(self) -> int:
        """Length of a J x vector in this layout: J's rows plus the padding observations' rows."""
        return self.num_padded * self.rdim

    @property
    def dims(self) -> tuple[tuple, tuple, tuple, tuple]:
        return layout_dims(self.rdim, self.slot_widths, self.chunk)

    def value_index(self, obs: np.ndarray, entry: np.ndarray) -> np.ndarray:
        """Flat index in the packed values of entry ``entry`` (= r * cdim + c) of block ``obs``."""
        p = self.position[np.asarray(obs, dtype=np.int64)]
        entry = np.asarray(entry, dtype=np.int64)
        if self.kind == "soa":
            return entry * self.num_padded + p
        k = self.chunk
        return (p // k) * (self.entries * k) + entry * k + p % k

    def col_index(self, obs: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Flat index in the packed column starts of slot ``slot`` of block ``obs``."""
        p = self.position[np.asarray(obs, dtype=np.int64)]
        slot = np.asarray(slot, dtype=np.int64)
        if self.kind == "soa":
            return slot * self.num_padded + p
        k = self.chunk
        if self.kind == "grouped":
            # Per chunk: the shared slot-0 column, then K point columns.
            return (p // k) * (k + 1) + np.where(slot == 0, 0, 1 + p % k)
        return (p // k) * (2 * k) + slot * k + p % k

    def row_index(self, obs: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Position of row r of block obs in this layout's J x vector."""
        p = self.position[np.asarray(obs, dtype=np.int64)]
        r = np.asarray(r, dtype=np.int64)
        if self.kind == "soa":
            return r * self.num_padded + p
        k = self.chunk
        return (p // k) * (k * self.rdim) + r * k + p % k

    def rows_to_layout(self, y: np.ndarray) -> np.ndarray:
        """A vector over J's rows (block-major, as BlockJacobian orders them) in layout row order."""
        y = np.asarray(y)
        out = np.zeros(self.num_row_slots, dtype=y.dtype)
        obs, r = np.divmod(np.arange(self.num_rows), self.rdim)
        out[self.row_index(obs, r)] = y
        return out

    def rows_from_layout(self, q: np.ndarray) -> np.ndarray:
        """Inverse of rows_to_layout (padding rows dropped)."""
        obs, r = np.divmod(np.arange(self.num_rows), self.rdim)
        return np.asarray(q)[self.row_index(obs, r)]


@dataclass
class PackedJacobian:
    """J's values and column starts in one :class:`ObservationLayout`, ready for the kernels.

    ``cols`` is int32 (half the index bytes of int64; BA column counts are far below 2^31) and has
    no -1: fixed slots point at column 0 with zero values (module doc).
    """

    layout: ObservationLayout
    values: np.ndarray  # flat, storage dtype of the caller (fp64, fp32 or fp16 bits)
    cols: np.ndarray  # flat int32

    @property
    def args(self) -> tuple:
        """(values, cols, num_tiles): the leading arguments of this layout's kernels."""
        return self.values, self.cols, self.layout.num_tiles

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """out = J x in layout row order (length layout.num_row_slots), accumulated in x's dtype."""
        if out is None:
            out = np.empty(self.layout.num_row_slots, dtype=x.dtype)
        return _MATVEC[self.layout.kind](*self.args, x, out, self.layout.dims)

    def rmatvec(self, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """out = J^T y (overwritten) for y in layout row order, accumulated in y's dtype."""
        if out is None:
            out = np.empty(self.layout.num_columns, dtype=y.dtype)
        return _RMATVEC[self.layout.kind](*self.args, y, out, self.layout.dims)

    def normal(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """out = J^T (J x), reading J once per call (the CGNR operator without the J x vector)."""
        if out is None:
            out = np.empty(self.layout.num_columns, dtype=x.dtype)
        return _NORMAL[self.layout.kind](*self.args, x, out, self.layout.dims)


def pack(
    values: np.ndarray,
    col_start: np.ndarray,
    rdim: int,
    slot_widths: tuple[int, int] | np.ndarray,
    num_columns: int,
    kind: str = DEFAULT_LAYOUT,
    chunk: int = DEFAULT_CHUNK,
) -> PackedJacobian:
    """Repack flat "blocks" values (as StoredJacobian stores them, any storage dtype) into `kind`.

    The dtype is kept bit for bit (fp16 bits stay bits), so packing never rounds. Values of fixed
    slots are zeroed and their column start set to 0 (module doc).
    """
    widths = (int(slot_widths[0]), int(slot_widths[1]))
    col_start = np.asarray(col_start)
    nb = int(col_start.shape[0])
    if col_start.shape != (nb, 2):
        raise ValueError(f"col_start must be (n_blocks, 2), got {col_start.shape}")
    k = 1 if kind == "blocks" else int(chunk)
    if kind not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {kind!r}")
    ent = rdim * sum(widths)
    if values.size != nb * ent:
        raise ValueError(f"values has {values.size} entries, expected {nb} x {ent}")
    fixed = col_start < 0
    for s in range(2):
        if fixed[:, s].any() and num_columns < widths[s]:
            raise ValueError("a fixed slot is wider than x; the dummy column needs num_columns >= slot width")
    if int(col_start.max(initial=0)) + max(widths) > np.iinfo(np.int32).max:
        raise ValueError("column indices do not fit int32")

    layout, cols = _plan(col_start, int(rdim), widths, int(num_columns), kind, k)
    return PackedJacobian(layout, _place_values(layout, values, col_start), cols)


def repack(packed: PackedJacobian, values: np.ndarray, col_start: np.ndarray) -> PackedJacobian:
    """`packed`'s layout and column starts with new values of the same structure (a new
    linearisation): only the values move, the grouping and the int32 columns are reused."""
    if values.size != packed.layout.num_blocks * packed.layout.entries:
        raise ValueError("values do not match the packed structure")
    return PackedJacobian(packed.layout, _place_values(packed.layout, values, col_start), packed.cols)


def _plan(
    col_start: np.ndarray, rdim: int, widths: tuple[int, int], num_columns: int, kind: str, k: int
) -> tuple[ObservationLayout, np.ndarray]:
    """The structure of a packing: where each observation goes, and the packed column starts."""
    nb = int(col_start.shape[0])
    fixed = col_start < 0
    starts = np.where(fixed, 0, col_start).astype(np.int32)
    if kind == "grouped":
        # Stable, so each group keeps the caller's order (BAL files: sorted by point).
        order = np.argsort(col_start[:, 0], kind="stable")
        keys = col_start[order, 0]
        new_group = np.ones(nb, dtype=bool)
        new_group[1:] = keys[1:] != keys[:-1]
        group_id = np.cumsum(new_group) - 1
        group_start = np.flatnonzero(new_group)
        group_size = np.diff(np.append(group_start, nb))
        group_slots = -(-group_size // k) * k
        slot_start = np.concatenate([[0], np.cumsum(group_slots)[:-1]])
        position = np.empty(nb, dtype=np.int64)
        position[order] = slot_start[group_id] + (np.arange(nb) - group_start[group_id])
        num_tiles = int(group_slots.sum()) // k
    else:
        position = np.arange(nb, dtype=np.int64)
        num_tiles = -(-nb // k)
    layout = ObservationLayout(kind, rdim, widths, k, nb, num_columns, num_tiles, position)

    pstarts = np.zeros((layout.num_padded, 2), dtype=np.int32)
    pstarts[position] = starts
    if kind == "grouped":
        # Padding slots inherit their chunk's slot-0 column, so every chunk has a single one.
        tile_of = position // k
        tile_col = np.zeros(num_tiles, dtype=np.int32)
        tile_col[tile_of] = starts[:, 0]
        cols = np.empty((num_tiles, k + 1), dtype=np.int32)
        cols[:, 0] = tile_col
        cols[:, 1:] = pstarts[:, 1].reshape(num_tiles, k)
        cols = cols.reshape(-1)
    elif kind == "soa":
        cols = pstarts.T.reshape(-1)
    else:
        cols = pstarts.reshape(num_tiles, k, 2).transpose(0, 2, 1).reshape(-1)
    return layout, np.ascontiguousarray(cols)


def _place_values(layout: ObservationLayout, values: np.ndarray, col_start: np.ndarray) -> np.ndarray:
    """Flat "blocks" values in `layout`, fixed slots zeroed; the dtype is kept bit for bit."""
    nb, rdim, widths, k = layout.num_blocks, layout.rdim, layout.slot_widths, layout.chunk
    ent = layout.entries
    blocks = np.array(values, copy=True).reshape(nb, rdim, sum(widths))
    offsets = (0, widths[0])
    fixed = col_start < 0
    for s in range(2):
        # A zero bit pattern is +0 in every storage type, fp16 bits included.
        blocks[fixed[:, s], :, offsets[s] : offsets[s] + widths[s]] = 0
    padded = np.zeros((layout.num_padded, ent), dtype=blocks.dtype)
    padded[layout.position] = blocks.reshape(nb, ent)
    # Tiled layouts: entry-major within a tile; soa is one tile spanning everything.
    flat = padded.T if layout.kind == "soa" else padded.reshape(layout.num_tiles, k, ent).transpose(0, 2, 1)
    return np.ascontiguousarray(flat).reshape(-1)


def pack_stored(stored: StoredJacobian, kind: str = DEFAULT_LAYOUT, chunk: int = DEFAULT_CHUNK) -> PackedJacobian:
    """Pack a two-slot :class:`~mp_slam_ros.solver.linear.StoredJacobian` into `kind`."""
    return pack(
        stored.values, stored.col_start, stored.rdim, tuple(stored.slot_widths), stored.num_columns, kind, chunk
    )


def unpack(packed: PackedJacobian) -> tuple[np.ndarray, np.ndarray]:
    """Back to flat "blocks" values and (n_blocks, 2) int64 column starts (fixed slots read 0)."""
    lay = packed.layout
    obs = np.arange(lay.num_blocks)[:, None]
    values = packed.values[lay.value_index(obs, np.arange(lay.entries)[None, :])].reshape(-1)
    cols = packed.cols[lay.col_index(obs, np.arange(2)[None, :])].astype(np.int64)
    return values, cols


# ---------------------------------------------------------------------------------------------
# Per-tile building blocks. Entry e of the tile's observation k is values[vbase + e * vstride + k];
# row r of its J x is vector slot obase + r * ostride + k. The row/column loops have constant trip
# counts and unroll fully, leaving the loop over k innermost with scalar accumulators: LLVM
# vectorises it across observations with unit-stride loads.
# ---------------------------------------------------------------------------------------------
@njit(inline="always")
def _at(base, e, stride, k):
    """Index base + e * stride + k as uint64. numba wraps negative signed indices (i < 0 -> i + n);
    that select hides the unit stride from LLVM and turns every vector load into a gather (measured: the
    window-50 chunked pair took 45 us with signed indices, 20 us with these)."""
    return np.uint64(base) + np.uint64(e) * np.uint64(stride) + np.uint64(k)


@njit(inline="always")
def _gather(cols, cbase, cstride, x, xg, first, dims):
    """xg[c * K + k] = x[col(slot, k) + c] for the columns of slots `first`..1 (slot 0 starts at c = 0)."""
    W0 = len(dims[1])
    W1 = len(dims[2])
    K = len(dims[3])
    if first == 0:
        for k in range(K):
            c0 = cols[_at(cbase, 0, 0, k)]
            for c in range(W0):
                xg[_at(0, c, K, k)] = x[_at(c0, 0, 0, c)]
    for k in range(K):
        c1 = cols[_at(cbase, 1, cstride, k)]
        for c in range(W1):
            xg[_at(0, W0 + c, K, k)] = x[_at(c1, 0, 0, c)]


@njit(inline="always")
def _tile_matvec(values, vbase, vstride, xg, out, obase, ostride, dims):
    RD = len(dims[0])
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    for r in range(RD):
        for k in range(K):
            acc = acc_zero(out)
            for c in range(CD):
                acc += load(values, _at(vbase, r * CD + c, vstride, k)) * xg[_at(0, c, K, k)]
            out[_at(obase, r, ostride, k)] = acc


@njit(inline="always")
def _tile_matvec_shared0(values, vbase, vstride, cam, x, xg, out, obase, ostride, dims):
    """_tile_matvec when all K observations share slot 0's variable (x[cam:cam + W0])."""
    RD = len(dims[0])
    W0 = len(dims[1])
    W1 = len(dims[2])
    K = len(dims[3])
    CD = W0 + W1
    for r in range(RD):
        for k in range(K):
            acc = acc_zero(out)
            for c in range(W0):
                acc += load(values, _at(vbase, r * CD + c, vstride, k)) * x[_at(cam, 0, 0, c)]
            for c in range(W0, CD):
                acc += load(values, _at(vbase, r * CD + c, vstride, k)) * xg[_at(0, c, K, k)]
            out[_at(obase, r, ostride, k)] = acc


@njit(inline="always")
def _tile_contrib(values, vbase, vstride, y, ybase, ystride, ct, first, dims):
    """ct[c * K + k] = sum_r J[k][r, c] y[k, r] for the columns from `first` on (before the scatter)."""
    RD = len(dims[0])
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    # k outermost: innermost, with its rdim-term body, LLVM would unroll it fully before vectorising
    # (module doc); around the unrolled column loop it stays a loop, and that loop vectorises.
    for k in range(K):
        for c in range(first, CD):
            acc = acc_zero(ct)
            for r in range(RD):
                acc += load(values, _at(vbase, r * CD + c, vstride, k)) * y[_at(ybase, r, ystride, k)]
            ct[_at(0, c, K, k)] = acc


@njit(inline="always")
def _tile_lanes0(values, vbase, vstride, y, ybase, ystride, lanes, dims):
    """lanes[c * K + k] += sum_r J[k][r, c] y[k, r] over slot 0's columns: per-lane sums for a group."""
    RD = len(dims[0])
    W0 = len(dims[1])
    CD = W0 + len(dims[2])
    K = len(dims[3])
    for k in range(K):
        for c in range(W0):
            acc = lanes[_at(0, c, K, k)]
            for r in range(RD):
                acc += load(values, _at(vbase, r * CD + c, vstride, k)) * y[_at(ybase, r, ystride, k)]
            lanes[_at(0, c, K, k)] = acc


@njit(inline="always")
def _flush_lanes0(lanes, cam, out, dims):
    """Add a finished group's lane sums to its slot-0 columns (one scalar sum per column and group) and
    clear the lanes for the next group."""
    W0 = len(dims[1])
    K = len(dims[3])
    for c in range(W0):
        acc = acc_zero(out)
        for k in range(K):
            acc += lanes[_at(0, c, K, k)]
            lanes[_at(0, c, K, k)] = 0
        out[_at(cam, 0, 0, c)] += acc


@njit(inline="always")
def _scatter(cols, cbase, cstride, ct, out, first, dims):
    """out[col(slot, k) + c] += ct[c * K + k] for slots `first`..1, one observation after another."""
    W0 = len(dims[1])
    W1 = len(dims[2])
    K = len(dims[3])
    for k in range(K):
        if first == 0:
            c0 = cols[_at(cbase, 0, 0, k)]
            for c in range(W0):
                out[_at(c0, 0, 0, c)] += ct[_at(0, c, K, k)]
        c1 = cols[_at(cbase, 1, cstride, k)]
        for c in range(W1):
            out[_at(c1, 0, 0, c)] += ct[_at(0, W0 + c, K, k)]


# ---------------------------------------------------------------------------------------------
# Whole products. blocks, soa and chunked share one code path; only the strides differ.
# ---------------------------------------------------------------------------------------------
@njit(inline="always")
def _strides(ntiles, dims, soa):
    """(tile value step, entry stride, tile col step, slot stride, tile row step, row stride)."""
    RD = len(dims[0])
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    if soa:
        n = ntiles * K
        return K, n, K, n, K, n
    return RD * CD * K, K, 2 * K, K, RD * K, K


@njit(inline="always")
def _tiled_matvec(values, cols, ntiles, x, out, dims, soa):
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    vstep, vstride, cstep, cstride, ostep, ostride = _strides(ntiles, dims, soa)
    xg = np.empty(CD * K, dtype=out.dtype)
    for t in range(ntiles):
        _gather(cols, t * cstep, cstride, x, xg, 0, dims)
        _tile_matvec(values, t * vstep, vstride, xg, out, t * ostep, ostride, dims)
    return out


@njit(inline="always")
def _tiled_rmatvec(values, cols, ntiles, y, out, dims, soa):
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    vstep, vstride, cstep, cstride, ystep, ystride = _strides(ntiles, dims, soa)
    ct = np.empty(CD * K, dtype=out.dtype)
    out[:] = 0
    for t in range(ntiles):
        _tile_contrib(values, t * vstep, vstride, y, t * ystep, ystride, ct, 0, dims)
        _scatter(cols, t * cstep, cstride, ct, out, 0, dims)
    return out


@njit(inline="always")
def _tiled_normal(values, cols, ntiles, x, out, dims, soa):
    RD = len(dims[0])
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    vstep, vstride, cstep, cstride, _, _ = _strides(ntiles, dims, soa)
    xg = np.empty(CD * K, dtype=out.dtype)
    jx = np.empty(RD * K, dtype=out.dtype)
    ct = np.empty(CD * K, dtype=out.dtype)
    out[:] = 0
    for t in range(ntiles):
        _gather(cols, t * cstep, cstride, x, xg, 0, dims)
        _tile_matvec(values, t * vstep, vstride, xg, jx, 0, K, dims)
        _tile_contrib(values, t * vstep, vstride, jx, 0, K, ct, 0, dims)
        _scatter(cols, t * cstep, cstride, ct, out, 0, dims)
    return out


@jit(nogil=True, fastmath=_FASTMATH)
def blocks_matvec(values, cols, ntiles, x, out, dims):
    """out = J x, blocks layout (dims with chunk 1)."""
    return _tiled_matvec(values, cols, ntiles, x, out, dims, False)


@jit(nogil=True, fastmath=_FASTMATH)
def blocks_rmatvec(values, cols, ntiles, y, out, dims):
    """out = J^T y (overwritten), blocks layout."""
    return _tiled_rmatvec(values, cols, ntiles, y, out, dims, False)


@jit(nogil=True, fastmath=_FASTMATH)
def blocks_normal(values, cols, ntiles, x, out, dims):
    """out = J^T (J x) (overwritten), blocks layout."""
    return _tiled_normal(values, cols, ntiles, x, out, dims, False)


@jit(nogil=True, fastmath=_FASTMATH)
def soa_matvec(values, cols, ntiles, x, out, dims):
    """out = J x in layout row order, soa layout."""
    return _tiled_matvec(values, cols, ntiles, x, out, dims, True)


@jit(nogil=True, fastmath=_FASTMATH)
def soa_rmatvec(values, cols, ntiles, y, out, dims):
    """out = J^T y (overwritten), y in layout row order, soa layout."""
    return _tiled_rmatvec(values, cols, ntiles, y, out, dims, True)


@jit(nogil=True, fastmath=_FASTMATH)
def soa_normal(values, cols, ntiles, x, out, dims):
    """out = J^T (J x) (overwritten), soa layout."""
    return _tiled_normal(values, cols, ntiles, x, out, dims, True)


@jit(nogil=True, fastmath=_FASTMATH)
def chunked_matvec(values, cols, ntiles, x, out, dims):
    """out = J x in layout row order, chunked layout."""
    return _tiled_matvec(values, cols, ntiles, x, out, dims, False)


@jit(nogil=True, fastmath=_FASTMATH)
def chunked_rmatvec(values, cols, ntiles, y, out, dims):
    """out = J^T y (overwritten), y in layout row order, chunked layout."""
    return _tiled_rmatvec(values, cols, ntiles, y, out, dims, False)


@jit(nogil=True, fastmath=_FASTMATH)
def chunked_normal(values, cols, ntiles, x, out, dims):
    """out = J^T (J x) (overwritten), chunked layout, each chunk read once."""
    return _tiled_normal(values, cols, ntiles, x, out, dims, False)


# ---------------------------------------------------------------------------------------------
# grouped: chunked storage, cols per chunk = [slot-0 column, K point columns] (stride K + 1).
# ---------------------------------------------------------------------------------------------
@jit(nogil=True, fastmath=_FASTMATH)
def grouped_matvec(values, cols, ntiles, x, out, dims):
    """out = J x in layout row order, grouped layout."""
    RD = len(dims[0])
    CD = len(dims[1]) + len(dims[2])
    K = len(dims[3])
    xg = np.empty(CD * K, dtype=out.dtype)
    for t in range(ntiles):
        cb = t * (K + 1)
        _gather(cols, cb, 1, x, xg, 1, dims)
        _tile_matvec_shared0(values, t * RD * CD * K, K, cols[cb], x, xg, out, t * RD * K, K, dims)
    return out


@jit(nogil=True, fastmath=_FASTMATH)
def grouped_rmatvec(values, cols, ntiles, y, out, dims):
    """out = J^T y (overwritten), y in layout row order, grouped layout."""
    RD = len(dims[0])
    W0 = len(dims[1])
    CD = W0 + len(dims[2])
    K = len(dims[3])
    ct = np.empty(CD * K, dtype=out.dtype)
    lanes = np.zeros(W0 * K, dtype=out.dtype)
    out[:] = 0
    for t in range(ntiles):
        cb = t * (K + 1)
        vb = t * RD * CD * K
        yb = t * RD * K
        _tile_lanes0(values, vb, K, y, yb, K, lanes, dims)
        _tile_contrib(values, vb, K, y, yb, K, ct, W0, dims)
        _scatter(cols, cb, 1, ct, out, 1, dims)
        if t + 1 == ntiles or cols[(t + 1) * (K + 1)] != cols[cb]:
            _flush_lanes0(lanes, cols[cb], out, dims)
    return out


@jit(nogil=True, fastmath=_FASTMATH)
def grouped_normal(values, cols, ntiles, x, out, dims):
    """out = J^T (J x) (overwritten), grouped layout, each chunk read once."""
    RD = len(dims[0])
    W0 = len(dims[1])
    CD = W0 + len(dims[2])
    K = len(dims[3])
    xg = np.empty(CD * K, dtype=out.dtype)
    jx = np.empty(RD * K, dtype=out.dtype)
    ct = np.empty(CD * K, dtype=out.dtype)
    lanes = np.zeros(W0 * K, dtype=out.dtype)
    out[:] = 0
    for t in range(ntiles):
        cb = t * (K + 1)
        vb = t * RD * CD * K
        _gather(cols, cb, 1, x, xg, 1, dims)
        _tile_matvec_shared0(values, vb, K, cols[cb], x, xg, jx, 0, K, dims)
        _tile_lanes0(values, vb, K, jx, 0, K, lanes, dims)
        _tile_contrib(values, vb, K, jx, 0, K, ct, W0, dims)
        _scatter(cols, cb, 1, ct, out, 1, dims)
        if t + 1 == ntiles or cols[(t + 1) * (K + 1)] != cols[cb]:
            _flush_lanes0(lanes, cols[cb], out, dims)
    return out


_MATVEC = {"blocks": blocks_matvec, "soa": soa_matvec, "chunked": chunked_matvec, "grouped": grouped_matvec}
_RMATVEC = {"blocks": blocks_rmatvec, "soa": soa_rmatvec, "chunked": chunked_rmatvec, "grouped": grouped_rmatvec}
_NORMAL = {"blocks": blocks_normal, "soa": soa_normal, "chunked": chunked_normal, "grouped": grouped_normal}


def kernels_for(kind: str) -> tuple:
    """(matvec, rmatvec, normal) of a layout, each called as f(values, cols, num_tiles, v, out, dims)."""
    return _MATVEC[kind], _RMATVEC[kind], _NORMAL[kind]
