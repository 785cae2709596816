"""Block-row sparse Jacobians: the one sparse format problems hand to the solver.

Each residual block (an edge, an observation) has `rdim` rows and a dense row of `cdim` values
split into slots, one per variable it touches. This is J's natural structure for between
factors and reprojection errors, keeps values contiguous per block (so half-precision widening
vectorises), and costs one column index per slot rather than one per value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import kernels


@dataclass
class BlockJacobian:
    values: np.ndarray  # (n_blocks, rdim, cdim), fp32 or fp64
    col_start: np.ndarray  # (n_blocks, n_slots) int64: first column of each slot in x, -1 if fixed
    slot_widths: tuple[int, ...]  # columns per slot; sum == cdim
    num_columns: int

    def __post_init__(self) -> None:
        self.col_start = np.ascontiguousarray(self.col_start, dtype=np.int64)
        if self.values.ndim != 3 or self.values.shape[2] != sum(self.slot_widths):
            raise ValueError("values must be (n_blocks, rdim, sum(slot_widths))")

    @property
    def rdim(self) -> int:
        return int(self.values.shape[1])

    @property
    def cdim(self) -> int:
        return int(self.values.shape[2])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.values.shape[0] * self.rdim, self.num_columns)

    @property
    def slot_offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.slot_widths)[:-1]]).astype(np.int64)

    @classmethod
    def dense(cls, jacobian: np.ndarray) -> BlockJacobian:
        """A dense (m, n) Jacobian as m one-row blocks with a single slot (small problems)."""
        jac = np.atleast_2d(np.asarray(jacobian))
        m, n = jac.shape
        return cls(jac.reshape(m, 1, n).copy(), np.zeros((m, 1), dtype=np.int64), (n,), n)

    def _coo(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nb, rdim, cdim = self.values.shape
        offsets = self.slot_offsets
        cols = np.empty((nb, cdim), dtype=np.int64)
        valid = np.empty((nb, cdim), dtype=bool)
        for s, w in enumerate(self.slot_widths):
            start = self.col_start[:, s]
            cols[:, offsets[s] : offsets[s] + w] = start[:, None] + np.arange(w)[None, :]
            valid[:, offsets[s] : offsets[s] + w] = (start >= 0)[:, None]
        rows = np.arange(nb * rdim).reshape(nb, rdim)
        rr = np.broadcast_to(rows[:, :, None], (nb, rdim, cdim))
        cc = np.broadcast_to(cols[:, None, :], (nb, rdim, cdim))
        mask = np.broadcast_to(valid[:, None, :], (nb, rdim, cdim))
        return rr[mask], cc[mask], self.values[mask]

    def to_csr(self, dtype: np.dtype | type = np.float64) -> sp.csr_matrix:
        rows, cols, vals = self._coo()
        return sp.csr_matrix((vals.astype(dtype), (rows, cols)), shape=self.shape)

    def _kernel_args(self) -> tuple:
        widths = np.asarray(self.slot_widths, dtype=np.int64)
        return (self.values.reshape(-1), self.col_start, self.slot_offsets, widths, self.rdim, self.cdim)

    def column_norms(self) -> np.ndarray:
        """Euclidean norm of each column of J, in fp64."""
        sq = np.empty(self.num_columns)
        return np.sqrt(kernels.block_column_sumsq(*self._kernel_args(), sq))

    def rmatvec(self, y: np.ndarray) -> np.ndarray:
        """J^T y accumulated in fp64 (the gradient)."""
        y = np.ascontiguousarray(y, dtype=np.float64)
        return kernels.block_rmatvec(*self._kernel_args(), y, np.empty(self.num_columns))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """J x accumulated in fp64."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        return kernels.block_matvec(*self._kernel_args(), x, np.empty(self.shape[0]))
