"""The ROS-free loop-closure pipeline: keyframes in, corrected poses, ``map -> odom`` and a map out.

Per keyframe (:meth:`LoopClosure.add_keyframe`):

1. **Place recognition**: the keyframe's ORB descriptors become a bag-of-words vector and the
   keyframe database (an inverted index) returns the best-scoring older keyframes, never the
   most recent ones (``exclude_recent_keyframes`` / ``exclude_recent_seconds``). Nothing here
   looks at the drifted pose, so a loop is found however far the odometry has drifted.
2. **Geometric verification** (:mod:`~mp_slam_ros.loop.verification`): PnP-RANSAC both ways.
3. **Pose graph**: one pose per keyframe, odometry edges between consecutive keyframes (the
   relative VO poses) and loop edges. Loop edges carry a robust loss (Cauchy by default), so a
   false loop that got through verification pulls with a force that fades with its error; after
   the optimisation, a loop whose loss weight fell below ``outlier_weight`` is removed from the
   graph and counted as rejected (``graph_outlier``).
4. **PGO** through the shared solver at the configured precision, only when a loop was added
   (between loops the graph is a chain, whose optimum is the odometry itself). It starts from the
   previous solution with the new keyframes chained on (a warm start), and the static
   incomplete-Cholesky preconditioner is kept across solves and re-factored only when the graph
   has grown past ``refactor_growth`` (:class:`~mp_slam_ros.solver.lm.PreconditionerCache`);
   each result says whether it was re-factored and why.

``map -> odom`` is the correction of the newest keyframe: ``T_map_base @ inv(T_odom_base)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.errors import InputFormatError
from ..io.g2o import read_pose_graph, write_g2o
from ..pgo.graph import PoseGraph
from ..pgo.problem import PoseGraphProblem
from ..solver import lie
from ..solver.jit import clock, thread_compile_seconds
from ..solver.lm import PreconditionerCache, SolverOptions, SolverSummary, solve
from ..solver.precision import PrecisionConfig, load_precision
from ..vision.types import Keyframe, PinholeCamera
from .config import LoopClosureConfig
from .database import KeyframeDatabase
from .verification import REJECTION_REASONS, verify_loop
from .vocabulary import BinaryVocabulary, default_vocabulary

__all__ = [
    "GRAPH_FILE",
    "KEYFRAMES_FILE",
    "LoopClosure",
    "LoopClosureResult",
    "LoopClosureStatistics",
    "LoopEdge",
    "MapFileError",
]

log = logging.getLogger(__name__)

#: Files inside a saved map directory.
GRAPH_FILE = "pose_graph.g2o"
KEYFRAMES_FILE = "keyframes.npz"
_MAP_FORMAT = 1


class MapFileError(InputFormatError):
    """A saved map that cannot be loaded: missing, truncated, corrupt or inconsistent."""


@dataclass(frozen=True, eq=False)
class LoopEdge:
    """An accepted loop: ``T_match_query`` is the query keyframe's base in the matched keyframe's base."""

    query_id: int
    match_id: int
    T_match_query: np.ndarray
    inliers: int
    matches: int


@dataclass
class LoopClosureResult:
    """What one :meth:`LoopClosure.add_keyframe` did."""

    keyframe_id: int
    stamp_ns: int
    candidates: list[tuple[int, float]]  # (keyframe id, bag-of-words score), best first
    accepted: list[LoopEdge]
    rejected: dict[str, int]  # reason -> candidates rejected for it (graph_outlier: removed after PGO)
    optimized: bool
    pgo: SolverSummary | None
    T_map_odom: np.ndarray
    timings: dict[str, float]  # seconds: retrieval, verification, pgo, total


@dataclass
class LoopClosureStatistics:
    """Running totals, for diagnostics and the replay report."""

    keyframes: int = 0
    candidates: int = 0
    loops_accepted: int = 0
    loops_rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECTION_REASONS, 0))
    loops_removed_by_graph: int = 0
    pgo_runs: int = 0
    last_pgo_time_s: float = 0.0
    total_pgo_time_s: float = 0.0
    max_pgo_time_s: float = 0.0
    last_pgo_iterations: int = 0
    last_pgo_cg_iterations: int = 0
    fp16_fallbacks: int = 0
    preconditioner_factorizations: int = 0
    preconditioner_reuses: int = 0
    last_refactor_reason: str = ""
    # Seconds numba spent compiling in add_keyframe; the times above exclude it (jit.clock).
    compile_time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _information(translation_sigma: float, rotation_sigma_deg: float) -> np.ndarray:
    """Diagonal information in the pose graph's tangent order (rotation first)."""
    sr = math.radians(rotation_sigma_deg)
    return np.diag([1.0 / sr**2] * 3 + [1.0 / translation_sigma**2] * 3)


class _Poses:
    """A growable (n, 4, 4) float64 stack (amortised appends for 10,000+ keyframes)."""

    def __init__(self) -> None:
        self.data = np.zeros((64, 4, 4))
        self.n = 0

    def append(self, T: np.ndarray) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.n] = T
        self.n += 1

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.n]


class LoopClosure:
    """Keyframes in; loop-corrected keyframe poses, ``map -> odom`` and a landmark map out.

    ``precision`` (a :class:`PrecisionConfig` or preset name) overrides ``config.precision``;
    ``vocabulary`` overrides ``config.vocabulary_file`` (default: the vocabulary shipped with the
    package).
    """

    def __init__(
        self,
        config: LoopClosureConfig | None = None,
        vocabulary: BinaryVocabulary | None = None,
        precision: PrecisionConfig | str | None = None,
    ) -> None:
        self.config = config or LoopClosureConfig()
        if vocabulary is None:
            vocabulary = (
                BinaryVocabulary.load(self.config.vocabulary_file)
                if self.config.vocabulary_file
                else default_vocabulary()
            )
        self.vocabulary = vocabulary
        precision = self.config.precision if precision is None else precision
        self.precision = load_precision(precision) if isinstance(precision, str) else precision
        self.solver_options = SolverOptions(max_iterations=self.config.pgo_max_iterations, linear_solver="pcg-ic")
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every keyframe, loop and the map (``map -> odom`` back to identity)."""
        self.keyframes: list[Keyframe] = []
        self._T_odom_base = _Poses()
        self._T_map_base = _Poses()
        self.loops: list[LoopEdge] = []
        self._loop_index: list[tuple[int, int]] = []  # (match index, query index) into keyframes
        self._index_of: dict[int, int] = {}
        self.database = KeyframeDatabase()
        self._T_map_odom = np.eye(4)
        self._last_loop_index = -(10**9)
        self._cache = PreconditionerCache(self.config.refactor_growth)
        self._map_cache: tuple[int, int, np.ndarray] | None = None  # (keyframes, pose version, points)
        self._pose_version = 0
        self.stats = LoopClosureStatistics()

    @property
    def num_keyframes(self) -> int:
        return len(self.keyframes)

    @property
    def T_map_odom(self) -> np.ndarray:
        return self._T_map_odom.copy()

    @property
    def latest_stamp_ns(self) -> int | None:
        return self.keyframes[-1].stamp_ns if self.keyframes else None

    def corrected_poses(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keyframe ids, stamps [ns] and loop-corrected poses ``T_map_base`` (n, 4, 4)."""
        ids = np.array([kf.keyframe_id for kf in self.keyframes], dtype=np.int64)
        stamps = np.array([kf.stamp_ns for kf in self.keyframes], dtype=np.int64)
        return ids, stamps, self._T_map_base.view.copy()

    def odometry_poses(self) -> np.ndarray:
        """The keyframes' VO poses ``T_odom_base`` (n, 4, 4), as received."""
        return self._T_odom_base.view.copy()

    # -- the pipeline -----------------------------------------------------------------------
    def add_keyframe(self, keyframe: Keyframe) -> LoopClosureResult:
        cfg = self.config
        t_start = clock()
        compile_start = thread_compile_seconds()
        if keyframe.keyframe_id in self._index_of:
            raise ValueError(f"keyframe {keyframe.keyframe_id} was already added")
        if self.keyframes and keyframe.stamp_ns < self.keyframes[-1].stamp_ns:
            raise ValueError(
                f"keyframe {keyframe.keyframe_id} is older ({keyframe.stamp_ns} ns) than the last one "
                f"({self.keyframes[-1].stamp_ns} ns); keyframes must arrive in time order"
            )
        index = len(self.keyframes)
        self.keyframes.append(keyframe)
        self._index_of[keyframe.keyframe_id] = index
        self._T_odom_base.append(keyframe.T_odom_base)
        self._T_map_base.append(self._T_map_odom @ keyframe.T_odom_base)
        self.stats.keyframes += 1

        t0 = clock()
        bow = self.vocabulary.transform(keyframe.descriptors)
        candidates: list[tuple[int, float]] = []
        if index - self._last_loop_index > cfg.min_keyframes_between_loops:
            newest = index - 1 - cfg.exclude_recent_keyframes
            cutoff = keyframe.stamp_ns - int(cfg.exclude_recent_seconds * 1e9)
            if newest >= 0:
                found = self.database.query(
                    bow, cfg.num_candidates, max_keyframe_id=newest, max_stamp_ns=cutoff, min_score=cfg.min_bow_score
                )
                if found:
                    best = found[0][1]
                    candidates = [(i, s) for i, s in found if s >= cfg.min_score_ratio * best]
        self.database.add(index, keyframe.stamp_ns, bow)
        t_retrieval = clock() - t0

        t0 = clock()
        rejected: dict[str, int] = {}
        loop: LoopEdge | None = None
        for cand_index, _score in candidates:
            self.stats.candidates += 1
            candidate = self.keyframes[cand_index]
            check = verify_loop(keyframe, candidate, cfg)
            if not check.accepted:
                rejected[check.reason] = rejected.get(check.reason, 0) + 1
                continue
            assert check.T_match_query is not None
            loop = LoopEdge(
                keyframe.keyframe_id, candidate.keyframe_id, check.T_match_query, check.inliers, check.matches
            )
            self._loop_index.append((cand_index, index))
            self.loops.append(loop)
            break
        t_verification = clock() - t0

        summary = None
        accepted: list[LoopEdge] = []
        t0 = clock()
        if loop is not None:
            summary, removed = self._optimize()
            if any(e is loop for e in removed):
                rejected["graph_outlier"] = rejected.get("graph_outlier", 0) + 1
            else:
                accepted.append(loop)
                self._last_loop_index = index
            self._T_map_odom = self._T_map_base.view[index] @ lie.inverse_transform(keyframe.T_odom_base)
        t_pgo = clock() - t0
        for reason, count in rejected.items():
            self.stats.loops_rejected[reason] = self.stats.loops_rejected.get(reason, 0) + count
        self.stats.loops_accepted += len(accepted)
        # One readable line per event that changes the map; candidates that fail are routine.
        if accepted:
            e = accepted[0]
            log.info(
                "loop closed: keyframe %d -> %d (%d/%d inliers), PGO %.1f ms, %s",
                e.query_id, e.match_id, e.inliers, e.matches, 1e3 * t_pgo,
                "; ".join(summary.preconditioner_events) if summary else "",
            )  # fmt: skip
        self.stats.compile_time_s += thread_compile_seconds() - compile_start
        return LoopClosureResult(
            keyframe_id=keyframe.keyframe_id,
            stamp_ns=keyframe.stamp_ns,
            candidates=[(self.keyframes[i].keyframe_id, s) for i, s in candidates],
            accepted=accepted,
            rejected=rejected,
            optimized=summary is not None,
            pgo=summary,
            T_map_odom=self.T_map_odom,
            timings={
                "retrieval": t_retrieval,
                "verification": t_verification,
                "pgo": t_pgo,
                "total": clock() - t_start,
            },
        )

    # -- pose graph -------------------------------------------------------------------------
    def pose_graph(self) -> tuple[PoseGraph, np.ndarray]:
        """The current pose graph (poses = corrected estimate) and its loop-edge mask."""
        cfg = self.config
        n = self.num_keyframes
        odom = self._T_odom_base.view
        rel_odom = lie.inverse_transform(odom[:-1]) @ odom[1:]
        loops = np.array(self._loop_index, dtype=np.int64).reshape(-1, 2)
        rel_loop = np.array([e.T_match_query for e in self.loops]).reshape(-1, 4, 4)
        rel = np.concatenate([rel_odom, rel_loop])
        odom_info = _information(cfg.odometry_translation_sigma, cfg.odometry_rotation_sigma_deg)
        loop_info = _information(cfg.loop_translation_sigma, cfg.loop_rotation_sigma_deg)
        info = np.concatenate(
            [np.broadcast_to(odom_info, (n - 1, 6, 6)), np.broadcast_to(loop_info, (len(loops), 6, 6))]
        )
        poses = self._T_map_base.view
        graph = PoseGraph(
            dim=3,
            ids=np.array([kf.keyframe_id for kf in self.keyframes], dtype=np.int64),
            rotations=poses[:, :3, :3],
            translations=poses[:, :3, 3],
            fixed=np.eye(1, n, dtype=bool)[0],  # the first keyframe anchors the map
            edge_i=np.concatenate([np.arange(n - 1), loops[:, 0]]),
            edge_j=np.concatenate([np.arange(1, n), loops[:, 1]]),
            meas_rotations=rel[:, :3, :3],
            meas_translations=rel[:, :3, 3],
            information=info,
            source="loop closure",
        )
        is_loop = np.concatenate([np.zeros(n - 1, dtype=bool), np.ones(len(loops), dtype=bool)])
        return graph, is_loop

    def _optimize(self) -> tuple[SolverSummary, list[LoopEdge]]:
        """PGO from the current estimate; removes loops the robust loss turned off. Returns them."""
        cfg = self.config
        graph, is_loop = self.pose_graph()
        t0 = clock()
        # The problem is built once: it solves, then says which loops its loss switched off.
        problem = PoseGraphProblem(
            graph, loss=cfg.robust_loss, loss_scale=cfg.robust_loss_scale, robust_edges=is_loop
        )
        state, summary = solve(problem, problem.initial_state(), self.solver_options, self.precision, self._cache)
        elapsed = clock() - t0
        weights = problem.edge_weights(state)[is_loop]
        outliers = np.nonzero(weights < cfg.outlier_weight)[0]
        removed = [self.loops[k] for k in outliers]
        if removed:
            keep = np.ones(len(self.loops), dtype=bool)
            keep[outliers] = False
            self.loops = [e for e, k in zip(self.loops, keep, strict=True) if k]
            self._loop_index = [e for e, k in zip(self._loop_index, keep, strict=True) if k]
            self.stats.loops_removed_by_graph += len(removed)
            for e, w in zip(removed, weights[outliers], strict=True):
                log.warning(
                    "loop %d -> %d removed from the pose graph: its robust weight fell to %.2g (< %g) "
                    "against the rest of the graph",
                    e.query_id, e.match_id, w, cfg.outlier_weight,
                )  # fmt: skip
        poses = self._T_map_base.view
        poses[:, :3, :3] = state.rotations
        poses[:, :3, 3] = state.translations
        self._pose_version += 1
        s = self.stats
        s.pgo_runs += 1
        s.last_pgo_time_s = elapsed
        s.total_pgo_time_s += elapsed
        s.max_pgo_time_s = max(s.max_pgo_time_s, elapsed)
        s.last_pgo_iterations = summary.num_iterations
        s.last_pgo_cg_iterations = summary.total_cg_iterations
        s.fp16_fallbacks += summary.num_fallbacks
        s.preconditioner_factorizations += summary.preconditioner_factorizations
        s.preconditioner_reuses += int(summary.preconditioner_reused)
        refactors = [e for e in summary.preconditioner_events if e != "reused the cached factor"]
        if refactors:
            s.last_refactor_reason = refactors[-1]
        return summary, removed

    # -- map --------------------------------------------------------------------------------
    def landmark_map(self) -> np.ndarray:
        """Keyframe landmarks in ``map`` (float32, N x 3), one per ``map_voxel_size`` voxel."""
        n = self.num_keyframes
        if self._map_cache is not None and self._map_cache[:2] == (n, self._pose_version):
            return self._map_cache[2]
        if n == 0:
            return np.zeros((0, 3), dtype=np.float32)
        T_map_cam = self._T_map_base.view @ np.array([kf.T_base_camera for kf in self.keyframes])
        counts = np.array([kf.num_features for kf in self.keyframes])
        points = np.concatenate([kf.points for kf in self.keyframes]).astype(np.float64)
        owner = np.repeat(np.arange(n), counts)
        world = np.einsum("nij,nj->ni", T_map_cam[owner, :3, :3], points) + T_map_cam[owner, :3, 3]
        world = world[np.all(np.isfinite(world), axis=1)]
        keys = np.floor(world / self.config.map_voxel_size).astype(np.int64)
        _, first = np.unique(keys, axis=0, return_index=True)
        cloud = world[np.sort(first)].astype(np.float32)
        self._map_cache = (n, self._pose_version, cloud)
        return cloud

    # -- persistence ------------------------------------------------------------------------
    def save_map(self, path: str | os.PathLike[str]) -> Path:
        """Write the map to directory `path` atomically: a complete new map or the old one, never half.

        Inside: ``pose_graph.g2o`` (corrected poses, odometry and loop edges) and ``keyframes.npz``
        (the keyframe database: VO poses, features, descriptors, intrinsics, loops). Both are
        written into a temporary sibling directory that then replaces `path`.
        """
        target = Path(path)
        if self.num_keyframes == 0:
            raise ValueError("the map is empty: no keyframe to save")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            graph, _ = self.pose_graph()
            write_g2o(graph, tmp / GRAPH_FILE)
            with open(tmp / KEYFRAMES_FILE, "wb") as f:
                np.savez_compressed(f, **self._keyframe_arrays())
                f.flush()
                os.fsync(f.fileno())
            old = None
            if target.exists():
                old = target.parent / f".{target.name}.{os.getpid()}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _keyframe_arrays(self) -> dict[str, np.ndarray]:
        kfs = self.keyframes
        cams = [kf.camera for kf in kfs]
        if any(c is None for c in cams):
            raise ValueError("every keyframe needs its camera intrinsics to be saved")
        return {
            "format": np.array(_MAP_FORMAT),
            "keyframe_id": np.array([kf.keyframe_id for kf in kfs], dtype=np.int64),
            "stamp_ns": np.array([kf.stamp_ns for kf in kfs], dtype=np.int64),
            "T_odom_base": self._T_odom_base.view.copy(),
            "T_base_camera": np.array([kf.T_base_camera for kf in kfs]),
            "camera": np.array([[c.width, c.height, c.fx, c.fy, c.cx, c.cy] for c in cams], dtype=np.float64),
            "num_features": np.array([kf.num_features for kf in kfs], dtype=np.int64),
            "points": np.concatenate([kf.points for kf in kfs]),
            "pixels": np.concatenate([kf.pixels for kf in kfs]),
            "descriptors": np.concatenate([kf.descriptors for kf in kfs]),
            "landmark_ids": np.concatenate([kf.landmark_ids for kf in kfs]),
            "loop_index": np.array(self._loop_index, dtype=np.int64).reshape(-1, 2),
            "loop_T_match_query": np.array([e.T_match_query for e in self.loops]).reshape(-1, 4, 4),
            "loop_inliers": np.array([[e.inliers, e.matches] for e in self.loops], dtype=np.int64).reshape(-1, 2),
            "T_map_odom": self._T_map_odom,
        }

    def load_map(self, path: str | os.PathLike[str]) -> None:
        """Replace the running map with a saved one. Everything is read and checked before anything
        changes, so a missing, truncated or corrupt map raises :class:`MapFileError` (naming the file
        and field) and leaves the running map as it was."""
        root = Path(path)
        graph_path, kf_path = root / GRAPH_FILE, root / KEYFRAMES_FILE
        for p in (graph_path, kf_path):
            if not p.is_file():
                raise MapFileError(p, reason="missing: not a saved map (expected pose_graph.g2o and keyframes.npz)")
        try:
            graph = read_pose_graph(graph_path)
        except InputFormatError as exc:
            raise MapFileError(exc.path, exc.line, exc.field, exc.reason) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MapFileError(graph_path, reason=f"unreadable: {exc}") from None
        arrays = _read_keyframe_arrays(kf_path)
        keyframes = _keyframes_from_arrays(kf_path, arrays)
        n = len(keyframes)
        ids = arrays["keyframe_id"]
        if graph.num_poses != n or not np.array_equal(np.sort(graph.ids), np.sort(ids)):
            raise MapFileError(
                graph_path, field="VERTEX_SE3:QUAT",
                reason=f"{graph.num_poses} poses whose ids do not match the {n} keyframes of {KEYFRAMES_FILE}",
            )  # fmt: skip
        row_of = {int(v): r for r, v in enumerate(graph.ids)}
        order = np.array([row_of[int(v)] for v in ids], dtype=np.int64)
        T_map = np.tile(np.eye(4), (n, 1, 1))
        T_map[:, :3, :3] = graph.rotations[order]
        T_map[:, :3, 3] = graph.translations[order]
        loop_index = arrays["loop_index"]
        if loop_index.size and (loop_index.min() < 0 or loop_index.max() >= n):
            raise MapFileError(kf_path, field="loop_index", reason=f"indices outside [0, {n})")
        bows = [self.vocabulary.transform(kf.descriptors) for kf in keyframes]
        # Everything is valid: swap the state in.
        self.reset()
        for i, kf in enumerate(keyframes):
            self.keyframes.append(kf)
            self._index_of[kf.keyframe_id] = i
            self._T_odom_base.append(kf.T_odom_base)
            self._T_map_base.append(T_map[i])
            self.database.add(i, kf.stamp_ns, bows[i])
        self._loop_index = [(int(a), int(b)) for a, b in loop_index]
        self.loops = [
            LoopEdge(keyframes[b].keyframe_id, keyframes[a].keyframe_id, T, int(inl[0]), int(inl[1]))
            for (a, b), T, inl in zip(
                loop_index, arrays["loop_T_match_query"], arrays["loop_inliers"], strict=True
            )
        ]
        self._T_map_odom = arrays["T_map_odom"].copy()
        self.stats.keyframes = n
        self.stats.loops_accepted = len(self.loops)


_ARRAY_SHAPES: dict[str, tuple[int | None, ...]] = {
    "format": (),
    "keyframe_id": (None,),
    "stamp_ns": (None,),
    "T_odom_base": (None, 4, 4),
    "T_base_camera": (None, 4, 4),
    "camera": (None, 6),
    "num_features": (None,),
    "points": (None, 3),
    "pixels": (None, 2),
    "descriptors": (None, 32),
    "landmark_ids": (None,),
    "loop_index": (None, 2),
    "loop_T_match_query": (None, 4, 4),
    "loop_inliers": (None, 2),
    "T_map_odom": (4, 4),
}


def _read_keyframe_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:  # zipfile, zlib and numpy raise a zoo of types for a damaged archive
        raise MapFileError(path, reason=f"truncated or corrupt ({type(exc).__name__}: {exc})") from None
    for name, shape in _ARRAY_SHAPES.items():
        if name not in arrays:
            raise MapFileError(path, field=name, reason="missing")
        a = arrays[name]
        same = a.ndim == len(shape) and all(w is None or g == w for g, w in zip(a.shape, shape, strict=True))
        if not same:
            raise MapFileError(path, field=name, reason=f"has shape {a.shape}, expected {shape}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise MapFileError(path, field=name, reason="holds non-finite values")
    if int(arrays["format"]) != _MAP_FORMAT:
        raise MapFileError(path, field="format", reason=f"version {int(arrays['format'])}, expected {_MAP_FORMAT}")
    n = len(arrays["keyframe_id"])
    for name in ("stamp_ns", "T_odom_base", "T_base_camera", "camera", "num_features"):
        if len(arrays[name]) != n:
            raise MapFileError(path, field=name, reason=f"{len(arrays[name])} rows for {n} keyframes")
    total = int(arrays["num_features"].sum())
    for name in ("points", "pixels", "descriptors", "landmark_ids"):
        if len(arrays[name]) != total:
            raise MapFileError(path, field=name, reason=f"{len(arrays[name])} rows for {total} features")
    m = len(arrays["loop_index"])
    for name in ("loop_T_match_query", "loop_inliers"):
        if len(arrays[name]) != m:
            raise MapFileError(path, field=name, reason=f"{len(arrays[name])} rows for {m} loops")
    return arrays


def _keyframes_from_arrays(path: Path, a: dict[str, np.ndarray]) -> list[Keyframe]:
    ends = np.cumsum(a["num_features"])
    starts = ends - a["num_features"]
    out = []
    for i in range(len(a["keyframe_id"])):
        w, h, fx, fy, cx, cy = a["camera"][i]
        try:
            camera = PinholeCamera(int(w), int(h), float(fx), float(fy), float(cx), float(cy))
        except ValueError as exc:
            raise MapFileError(path, field="camera", reason=f"row {i}: {exc}") from None
        s, e = starts[i], ends[i]
        keyframe = Keyframe(
            keyframe_id=int(a["keyframe_id"][i]), stamp_ns=int(a["stamp_ns"][i]),
            T_odom_base=a["T_odom_base"][i], T_base_camera=a["T_base_camera"][i],
            points=a["points"][s:e], pixels=a["pixels"][s:e], descriptors=a["descriptors"][s:e],
            landmark_ids=a["landmark_ids"][s:e], camera=camera,
        )  # fmt: skip
        out.append(keyframe)
    return out
