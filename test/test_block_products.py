"""J x, Jᵀ y and Jᵀ(J x) of mp_slam_ros.solver.block_products against dense fp64 products.

Error bound (per output entry), for stored values Ĵ = fl_s(J) and fp32 or fp64 arithmetic:

* storage: round-to-nearest gives |Ĵ_ij - J_ij| <= u_s |J_ij| + eta_s, with u_s the unit roundoff of the
  storage type (fp16: 2^-11, fp32: 2^-24, fp64: 0 since the reference values are fp64) and eta_s half
  the subnormal spacing (fp16: 2^-25), which covers entries below the smallest normal 2^-14, where the
  relative bound fails. Columns are scaled to unit norm, so every |J_ij| <= 1 and nothing overflows.
* arithmetic: a sum of n products, in any order and with or without FMA, is within gamma_n = n u /(1 - n u)
  of the exact sum of |terms| (Higham, Accuracy and Stability, 3.1), u = 2^-24 for fp32 vectors. For
  Jᵀ y the grouped layout adds a column's terms lane by lane and then the lanes, which is still one sum of
  the column's nnz_j terms.

So |ŷ_i - (J x)_i| <= (u_s + gamma_n (1 + u_s)) (|J||x|)_i + eta_s (1 + gamma_n) (P|x|)_i, with n the
terms of that entry (the row's cdim for J x, the column's nnz for Jᵀ y) and P the sparsity pattern; the
tests assert exactly this with x and y exactly representable at the vector precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mp_slam_ros.ba.synthetic import make_window
from mp_slam_ros.solver import block_products as bp
from mp_slam_ros.solver.half import FP16_BACKEND, HALF_STORAGE
from mp_slam_ros.solver.jacobian import BlockJacobian
from mp_slam_ros.solver.linear import StoredJacobian
from mp_slam_ros.solver.precision import Precision

LAYOUTS = [("blocks", 1), ("soa", 16), ("chunked", 16), ("grouped", 16)]
OTHER_CHUNKS = [("chunked", 8), ("grouped", 32)]  # K = 8: the scalar path LLVM leaves; 32: two zmm per entry
PRECISIONS = [Precision.FP64, Precision.FP32, Precision.FP16]
STORE_U = {Precision.FP64: 0.0, Precision.FP32: 2.0**-24, Precision.FP16: 2.0**-11}
STORE_ETA = {Precision.FP64: 0.0, Precision.FP32: 2.0**-150, Precision.FP16: 2.0**-25}
ARITH_U = {Precision.FP64: 2.0**-53, Precision.FP32: 2.0**-24, Precision.FP16: 2.0**-24}


def gamma(n: np.ndarray | int, u: float) -> np.ndarray:
    n = np.asarray(n, dtype=np.float64)
    return n * u / (1.0 - n * u)


# ---------------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def window_jac() -> BlockJacobian:
    """A 10-keyframe VO window, poses 0 and 9 fixed (col_start -1): slots (6, 3)."""
    prob, state = make_window(10, seed=0).problem(fixed_poses=(0, 9))
    _, jac = prob.linearize(state, np.dtype(np.float64))
    assert (jac.col_start[:, 0] < 0).any() and jac.slot_widths == (6, 3)
    return jac


@pytest.fixture(scope="module")
def bal_like_jac() -> BlockJacobian:
    """Random (9, 3) camera/point blocks, camera 0 fixed, entries over 8 decades (fp16 subnormals after
    scaling), each camera seeing a point at most once as in BAL; 13 cameras so groups end mid-chunk."""
    rng = np.random.default_rng(1)
    ncam, npt = 13, 60
    pairs = np.array([(c, p) for c in range(ncam) for p in range(npt) if rng.random() < 0.45])
    pairs = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]  # sorted by point, like BAL files
    nb = len(pairs)
    values = rng.standard_normal((nb, 2, 12)) * 10.0 ** rng.uniform(-6, 2, (nb, 2, 12))
    cam_col = np.where(pairs[:, 0] == 0, -1, (pairs[:, 0] - 1) * 9)
    col_start = np.stack([cam_col, (ncam - 1) * 9 + pairs[:, 1] * 3], axis=1)
    return BlockJacobian(values, col_start, (9, 3), (ncam - 1) * 9 + npt * 3)


def dense_scaled(jac: BlockJacobian) -> np.ndarray:
    """The column-scaled J (what StoredJacobian rounds) as a dense fp64 matrix, fixed slots left out."""
    exact = StoredJacobian.store(jac, Precision.FP64)
    blocks = exact.values.reshape(jac.values.shape)
    return BlockJacobian(blocks, jac.col_start, jac.slot_widths, jac.num_columns).to_csr().toarray()


def vectors(jac: BlockJacobian, prec: Precision, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vec = prec.compute_dtype
    x = rng.standard_normal(jac.num_columns).astype(vec)
    y = rng.standard_normal(jac.shape[0]).astype(vec)
    return x, y


def check_bound(got: np.ndarray, exact_mat: np.ndarray, v: np.ndarray, prec: Precision, what: str) -> float:
    """Assert |got - exact_mat @ v| <= the bound of the module docstring; return max(error / bound)."""
    v64 = v.astype(np.float64)
    exact = exact_mat @ v64
    absprod = np.abs(exact_mat) @ np.abs(v64)
    pattern = (exact_mat != 0).astype(np.float64)
    n = pattern.sum(axis=1)
    g = gamma(np.maximum(n, 1), ARITH_U[prec])
    bound = (STORE_U[prec] + g * (1 + STORE_U[prec])) * absprod + STORE_ETA[prec] * (1 + g) * (pattern @ np.abs(v64))
    bound += gamma(np.maximum(n, 1), 2.0**-53) * absprod  # the fp64 reference's own rounding
    err = np.abs(got.astype(np.float64) - exact)
    bad = err > bound
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} entries above the bound; worst error {err[bad].max():.3e} "
        f"vs bound {bound[bad][np.argmax(err[bad])]:.3e}"
    )
    return float(np.max(np.where(bound > 0, err / np.where(bound > 0, bound, 1), 0.0)))


def packed(jac: BlockJacobian, prec: Precision, kind: str, chunk: int) -> bp.PackedJacobian:
    return bp.pack_stored(StoredJacobian.store(jac, prec), kind, chunk)


# ---------------------------------------------------------------------------------------------
# Products against the dense fp64 reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "which,prec,kind,chunk",
    [(w, p, k, c) for w in ("window", "bal_like") for p in PRECISIONS for k, c in LAYOUTS]
    + [("window", p, k, c) for p in (Precision.FP32, Precision.FP16) for k, c in OTHER_CHUNKS],
    ids=lambda v: v.value if isinstance(v, Precision) else str(v),
)
def test_products_within_the_rounding_bound(which: str, prec: Precision, kind: str, chunk: int, request) -> None:
    jac = request.getfixturevalue(f"{which}_jac")
    ref = dense_scaled(jac)
    pj = packed(jac, prec, kind, chunk)
    lay = pj.layout
    x, y = vectors(jac, prec)
    jx = pj.matvec(x)
    assert jx.shape == (lay.num_row_slots,) and jx.dtype == x.dtype
    ratios = [check_bound(lay.rows_from_layout(jx), ref, x, prec, "J x")]
    jty = pj.rmatvec(lay.rows_to_layout(y))
    assert jty.shape == (jac.num_columns,)
    ratios.append(check_bound(jty, ref.T, y, prec, "J^T y"))
    if prec is Precision.FP16:
        # The fp16 rounding is really there (an fp32 store would sit near 2^-13 of the fp16 bound).
        assert max(ratios) > 0.05, ratios
    # Padding observations contribute exact zeros to J x.
    pad_rows = np.setdiff1d(np.arange(lay.num_row_slots), lay.row_index(*np.divmod(np.arange(lay.num_rows), 2)))
    assert np.all(jx[pad_rows] == 0)


@pytest.mark.parametrize("kind,chunk", LAYOUTS)
@pytest.mark.parametrize("prec", PRECISIONS, ids=lambda p: p.value)
def test_fused_normal_matches_the_pair(window_jac: BlockJacobian, prec: Precision, kind: str, chunk: int) -> None:
    pj = packed(window_jac, prec, kind, chunk)
    x, _ = vectors(window_jac, prec, seed=3)
    pair = pj.rmatvec(pj.matvec(x))
    fused = pj.normal(x)
    # Same products and the same summation order per entry; only FMA contraction choices may differ.
    tol = 1e-12 if prec is Precision.FP64 else 1e-5
    np.testing.assert_allclose(fused, pair, rtol=tol, atol=tol * np.max(np.abs(pair)))
    ref = dense_scaled(window_jac)
    np.testing.assert_allclose(fused, ref.T @ (ref @ x.astype(np.float64)), rtol=0, atol=2e-2 * np.max(np.abs(pair)))


def test_generic_kernels_agree(window_jac: BlockJacobian) -> None:
    """Same stored values as today's kernels.block_matvec / block_rmatvec (the CG loop's), fp16 storage."""
    from mp_slam_ros.solver import kernels

    st = StoredJacobian.store(window_jac, Precision.FP16)
    x, y = vectors(window_jac, Precision.FP16)
    args = (st.values, st.col_start, st.slot_offsets, st.slot_widths, st.rdim, st.cdim)
    q = kernels.block_matvec(*args, x, np.empty(st.num_rows, x.dtype))
    w = kernels.block_rmatvec(*args, y, np.empty(st.num_columns, x.dtype))
    for kind, chunk in LAYOUTS:
        pj = bp.pack_stored(st, kind, chunk)
        np.testing.assert_allclose(pj.layout.rows_from_layout(pj.matvec(x)), q, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pj.rmatvec(pj.layout.rows_to_layout(y)), w, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Fixed slots, packing, layouts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,chunk", LAYOUTS)
def test_fixed_slots_are_ignored(window_jac: BlockJacobian, kind: str, chunk: int) -> None:
    """Garbage in the fixed slots' values must not reach J x or Jᵀ y, and nothing lands in the dummy column."""
    st = StoredJacobian.store(window_jac, Precision.FP32)
    vals = st.values.reshape(window_jac.values.shape).copy()
    fixed = window_jac.col_start[:, 0] < 0
    vals[fixed, :, :6] = 1e3
    pj = bp.pack(vals.reshape(-1), st.col_start, 2, (6, 3), st.num_columns, kind, chunk)
    ref = dense_scaled(window_jac)
    x, y = vectors(window_jac, Precision.FP32, seed=5)
    x[:6] = 1e4  # the dummy column the fixed slots point at
    check_bound(pj.layout.rows_from_layout(pj.matvec(x)), ref, x, Precision.FP32, "J x")
    check_bound(pj.rmatvec(pj.layout.rows_to_layout(y)), ref.T, y, Precision.FP32, "J^T y")
    values, cols = bp.unpack(pj)
    assert np.all(values.reshape(vals.shape)[fixed, :, :6] == 0) and np.all(cols[fixed, 0] == 0)


@pytest.mark.parametrize("kind,chunk", [*LAYOUTS, *OTHER_CHUNKS, ("soa", 32)])
@pytest.mark.parametrize("dtype", ["fp64", "fp32", "fp16"])
def test_pack_unpack_round_trip(window_jac: BlockJacobian, dtype: str, kind: str, chunk: int) -> None:
    st = StoredJacobian.store(window_jac, Precision(dtype))
    pj = bp.pack_stored(st, kind, chunk)
    lay = pj.layout
    assert pj.values.dtype == st.values.dtype and pj.cols.dtype == np.int32
    assert pj.values.size == lay.num_padded * lay.entries
    values, cols = bp.unpack(pj)
    np.testing.assert_array_equal(values.view(np.uint8), st.values.view(np.uint8))  # bit for bit
    np.testing.assert_array_equal(cols, np.where(st.col_start < 0, 0, st.col_start))
    # Every (observation, entry) has its own place, and the rest (padding) is zero.
    idx = lay.value_index(np.arange(lay.num_blocks)[:, None], np.arange(lay.entries)[None, :]).ravel()
    assert np.unique(idx).size == idx.size and idx.min() >= 0 and idx.max() < pj.values.size
    rest = np.setdiff1d(np.arange(pj.values.size), idx)
    assert np.all(pj.values[rest] == 0)
    # J x row order: a permutation of the padded rows.
    obs, r = np.divmod(np.arange(lay.num_rows), lay.rdim)
    rows = lay.row_index(obs, r)
    assert np.unique(rows).size == rows.size and rows.max() < lay.num_row_slots
    y = np.arange(lay.num_rows, dtype=np.float64)
    np.testing.assert_array_equal(lay.rows_from_layout(lay.rows_to_layout(y)), y)


def test_grouped_chunks_share_their_first_slot(bal_like_jac: BlockJacobian) -> None:
    pj = packed(bal_like_jac, Precision.FP32, "grouped", 16)
    lay = pj.layout
    cam = bal_like_jac.col_start[:, 0]
    tile = lay.position // lay.chunk
    for t in np.unique(tile):
        assert np.unique(cam[tile == t]).size == 1
    # One run of chunks per camera, in column order, each group padded to whole chunks.
    first = [cam[tile == t][0] for t in np.unique(tile)]
    assert first == sorted(first)
    assert lay.num_tiles == sum(-(-int(np.sum(cam == c)) // 16) for c in np.unique(cam))


def test_lut_storage_gives_the_same_products(window_jac: BlockJacobian) -> None:
    """int16 bit patterns widen through the table: bit-identical to the F16C path where that exists."""
    st = StoredJacobian.store(window_jac, Precision.FP16)
    x, y = vectors(window_jac, Precision.FP16)
    for kind, chunk in LAYOUTS:
        lut = bp.pack(st.values.view(np.int16), st.col_start, 2, (6, 3), st.num_columns, kind, chunk)
        assert lut.values.dtype == np.int16
        ref = dense_scaled(window_jac)
        check_bound(lut.layout.rows_from_layout(lut.matvec(x)), ref, x, Precision.FP16, "J x (LUT)")
        if FP16_BACKEND == "f16c":
            hw = bp.pack(st.values.view(np.uint16), st.col_start, 2, (6, 3), st.num_columns, kind, chunk)
            np.testing.assert_array_equal(lut.matvec(x), hw.matvec(x))
            yl = lut.layout.rows_to_layout(y)
            np.testing.assert_array_equal(lut.rmatvec(yl), hw.rmatvec(yl))


def test_pack_rejects_what_it_cannot_hold(window_jac: BlockJacobian) -> None:
    st = StoredJacobian.store(window_jac, Precision.FP32)
    with pytest.raises(ValueError, match="two slots"):
        bp.layout_dims(2, (6, 3, 3), 16)
    with pytest.raises(ValueError, match="col_start"):
        bp.pack(st.values, st.col_start[:, :1], 2, (6, 3), st.num_columns)
    with pytest.raises(ValueError, match="entries"):
        bp.pack(st.values[:-1], st.col_start, 2, (6, 3), st.num_columns)
    with pytest.raises(ValueError, match="layout"):
        bp.pack(st.values, st.col_start, 2, (6, 3), st.num_columns, "csr")
    with pytest.raises(ValueError, match="dummy column"):
        bp.pack(st.values, st.col_start, 2, (6, 3), 5)


def test_half_storage_is_the_backend_type() -> None:
    assert np.dtype(HALF_STORAGE) == (np.dtype(np.uint16) if FP16_BACKEND == "f16c" else np.dtype(np.int16))


# ---------------------------------------------------------------------------------------------
# The real BAL problem (skipped without the shared data)
# ---------------------------------------------------------------------------------------------
def test_bal_problem_grouped_fp16(shared_data: Path) -> None:
    from mp_slam_ros.ba.problem import BalBundleAdjustmentProblem
    from mp_slam_ros.io.bal import read_bal

    path = shared_data / "ba" / "minisam" / "problem-49-7776-pre.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    prob = BalBundleAdjustmentProblem(read_bal(path))
    _, jac = prob.linearize(prob.initial_state(), np.dtype(np.float64))
    st64 = StoredJacobian.store(jac, Precision.FP64)
    ref = BlockJacobian(st64.values.reshape(jac.values.shape), jac.col_start, (9, 3), jac.num_columns).to_csr()
    pj = packed(jac, Precision.FP16, "grouped", 16)
    x, y = vectors(jac, Precision.FP16)
    # Sparse version of check_bound (the dense J would be 60k x 24k).
    for got, mat, v in (
        (pj.layout.rows_from_layout(pj.matvec(x)), ref, x),
        (pj.rmatvec(pj.layout.rows_to_layout(y)), ref.T.tocsr(), y),
    ):
        v64 = v.astype(np.float64)
        absm = abs(mat)
        n = np.diff(mat.indptr)
        g = gamma(np.maximum(n, 1), ARITH_U[Precision.FP16])
        pattern = absm.copy()
        pattern.data[:] = 1.0
        bound = (2.0**-11 + g * (1 + 2.0**-11)) * (absm @ np.abs(v64)) + 2.0**-25 * (1 + g) * (pattern @ np.abs(v64))
        bound += gamma(np.maximum(n, 1), 2.0**-53) * (absm @ np.abs(v64))
        err = np.abs(got - mat @ v64)
        assert np.all(err <= bound), float(np.max(err / bound))
