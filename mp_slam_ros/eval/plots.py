"""Trajectory and error plots (matplotlib, Agg; no pyplot state, no display needed).

Figures are drawn on a standalone :class:`matplotlib.figure.Figure` with an Agg canvas, so
importing this module never changes the caller's matplotlib backend; PNGs are written to a
temporary file in the target folder and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mp_slam_ros.eval.metrics import AteResult
from mp_slam_ros.io.trajectory import Trajectory

__all__ = ["plot_errors_over_time", "plot_trajectory"]


def _save(fig: Figure, path_png: str | os.PathLike, dpi: int) -> None:
    FigureCanvasAgg(fig)
    path = os.fspath(path_png)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def plot_trajectory(
    path_png: str | os.PathLike,
    estimates: Mapping[str, Trajectory],
    reference: Trajectory | None = None,
    title: str = "",
    dpi: int = 120,
) -> None:
    """Top view (x-y) of the estimates and the optional reference, equal axes, start markers, legend.

    Align the estimates first (e.g. with ``AteResult.T_align``) if they live in another frame.
    """
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot(1, 1, 1)
    if reference is not None and len(reference):
        p = reference.positions
        ax.plot(p[:, 0], p[:, 1], "--", color="0.3", lw=1.5, label="reference")
        ax.plot(p[0, 0], p[0, 1], "o", color="0.3", ms=7, mfc="none")
    for k, (name, traj) in enumerate(estimates.items()):
        if not len(traj):
            continue
        p = traj.positions
        color = f"C{k}"
        ax.plot(p[:, 0], p[:, 1], "-", color=color, lw=1.2, label=name)
        ax.plot(p[0, 0], p[0, 1], "o", color=color, ms=6)
    ax.plot([], [], "o", color="k", ms=6, label="start")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path_png, dpi)


def plot_errors_over_time(
    path_png: str | os.PathLike,
    ate_results: Mapping[str, AteResult],
    title: str = "",
    dpi: int = 120,
) -> None:
    """Per-pose ATE (m) over time (s since the earliest pair of all results), one line per result."""
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot(1, 1, 1)
    starts = [int(r.stamps_ns[0]) for r in ate_results.values() if r.num_pairs]
    t0 = min(starts) if starts else 0
    for k, (name, res) in enumerate(ate_results.items()):
        if not res.num_pairs:
            continue
        t = (np.asarray(res.stamps_ns, dtype=np.int64) - t0) / 1e9
        ax.plot(t, res.errors, "-", color=f"C{k}", lw=1.0, label=f"{name} (rmse {res.rmse:.3g} m)")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("ATE [m]")
    ax.set_ylim(bottom=0.0)
    ax.grid(True, alpha=0.3)
    if starts:
        ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path_png, dpi)
