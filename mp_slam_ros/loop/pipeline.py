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
import glob
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
from ..io.npz import read_npz
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
    # Full copies of a map an interrupted save left behind, removed or moved back (save/load_map).
    stale_map_copies: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _information(translation_sigma: float, rotation_sigma_deg: float) -> np.ndarray:
    """Diagonal information in the pose graph's tangent order (rotation first)."""
    sr = math.radians(rotation_sigma_deg)
    return np.diag([1.0 / sr**2] * 3 + [1.0 / translation_sigma**2] * 3)


def _old_copy(target: Path, pid: int) -> Path:
    """Where a save by process ``pid`` parks the previous map while it moves the new one in."""
    return target.parent / f".{target.name}.{pid}.old"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OSError, OverflowError):  # no signals (some platforms) or a pid out of range: treat as gone
        return False
    return True


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
        # A non-finite keyframe would poison the graph and make the map unsavable: refuse it here,
        # whoever calls (the node's message layer rejects it earlier, replay and VO call directly).
        for name, value in (("T_odom_base", keyframe.T_odom_base), ("points", keyframe.points),
                            ("pixels", keyframe.pixels)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"keyframe {keyframe.keyframe_id}: field '{name}' holds non-finite values")
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
        written into a temporary sibling directory that then replaces `path`. The arrays go
        through the checks :meth:`load_map` makes first: a map that would not load back (a
        non-finite point, a pose that is not a rotation, ...) raises ValueError naming the field
        and keyframe, and nothing on disk changes.
        """
        target = Path(path)
        if self.num_keyframes == 0:
            raise ValueError("the map is empty: no keyframe to save")
        graph, _ = self.pose_graph()
        arrays = self._keyframe_arrays()
        try:
            _check_keyframe_arrays(Path(KEYFRAMES_FILE), arrays)
        except MapFileError as err:
            raise ValueError(
                f"the map would not load back, so nothing was written: {KEYFRAMES_FILE}: field '{err.field}': "
                f"{err.reason}"
            ) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        self._recover_interrupted_save(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            write_g2o(graph, tmp / GRAPH_FILE)
            with open(tmp / KEYFRAMES_FILE, "wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            old = None
            if target.exists():
                old = _old_copy(target, os.getpid())
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _recover_interrupted_save(self, target: Path) -> None:
        """Deal with the full copies ``.<name>.<pid>.old`` a save killed midway leaves beside ``target``.

        A save moves the old map to that copy, moves the new one in, then deletes the copy; a
        process killed in between leaves the copy and, in the worst moment, no ``target`` at all.
        Copies of a live process other than this one are that process's save in progress and are
        left alone. Of the stale ones, the newest is moved back when ``target`` is missing (it is
        the last complete map), the rest deleted; each step is logged and counted in
        ``stats.stale_map_copies``.
        """
        stale = []
        for old in target.parent.glob(f".{glob.escape(target.name)}.*.old"):
            pid_text = old.name[len(target.name) + 2 : -len(".old")]
            if not pid_text.isdigit() or not old.is_dir():
                continue
            pid = int(pid_text)
            if pid != os.getpid() and _pid_alive(pid):
                continue
            stale.append(old)
        stale.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in stale:
            if not target.exists() and (old / GRAPH_FILE).is_file() and (old / KEYFRAMES_FILE).is_file():
                os.replace(old, target)
                log.warning("%s was missing after an interrupted save: restored it from %s", target, old.name)
            else:
                shutil.rmtree(old, ignore_errors=True)
                log.warning("removed %s, the stale copy an interrupted save left beside %s", old.name, target)
            self.stats.stale_map_copies += 1

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
        if root.parent.is_dir():
            self._recover_interrupted_save(root)
        stale_copies = self.stats.stale_map_copies
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
        if graph.dim != 3:
            raise MapFileError(
                graph_path, field="VERTEX_SE2",
                reason="a 2D (SE(2)) pose graph; a map holds the 3D VERTEX_SE3:QUAT poses save_map writes",
            )  # fmt: skip
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
        problem = _rigid_problem(T_map)
        if problem is not None:
            raise MapFileError(graph_path, field="VERTEX_SE3:QUAT", reason=f"pose of keyframe id "
                               f"{int(ids[problem[0]])}: {problem[1]}")  # fmt: skip
        # Build the whole new state aside; the running map is replaced only once nothing can fail.
        database = KeyframeDatabase()
        T_odom_base, T_map_base = _Poses(), _Poses()
        for i, kf in enumerate(keyframes):
            database.add(i, kf.stamp_ns, self.vocabulary.transform(kf.descriptors))
            T_odom_base.append(kf.T_odom_base)
            T_map_base.append(T_map[i])
        loop_index = [(int(a), int(b)) for a, b in arrays["loop_index"]]
        loops = [
            LoopEdge(keyframes[b].keyframe_id, keyframes[a].keyframe_id, np.array(T, dtype=np.float64),
                     int(inl[0]), int(inl[1]))
            for (a, b), T, inl in zip(loop_index, arrays["loop_T_match_query"], arrays["loop_inliers"], strict=True)
        ]  # fmt: skip
        T_map_odom = np.array(arrays["T_map_odom"], dtype=np.float64)
        # Everything is valid: swap the state in (plain assignments from here on).
        self.reset()
        self.keyframes = keyframes
        self._index_of = {kf.keyframe_id: i for i, kf in enumerate(keyframes)}
        self._T_odom_base, self._T_map_base = T_odom_base, T_map_base
        self.database = database
        self._loop_index = loop_index
        self.loops = loops
        self._T_map_odom = T_map_odom
        self.stats.keyframes = n
        self.stats.loops_accepted = len(self.loops)
        self.stats.stale_map_copies = stale_copies


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


#: The dtype family each array must have: "i" integers, "f" floating point, "u1" uint8 exactly.
#: A float where an index belongs (or a float descriptor) is a damaged or foreign file, not
#: something to cast silently.
_ARRAY_KINDS: dict[str, str] = {
    "format": "i", "keyframe_id": "i", "stamp_ns": "i", "T_odom_base": "f", "T_base_camera": "f",
    "camera": "f", "num_features": "i", "points": "f", "pixels": "f", "descriptors": "u1",
    "landmark_ids": "i", "loop_index": "i", "loop_T_match_query": "f", "loop_inliers": "i", "T_map_odom": "f",
}  # fmt: skip

#: Per-keyframe and per-feature arrays, to say which keyframe a bad row belongs to.
_PER_KEYFRAME = ("keyframe_id", "stamp_ns", "T_odom_base", "T_base_camera", "camera", "num_features")
_PER_FEATURE = ("points", "pixels", "descriptors", "landmark_ids")
#: Rotation blocks must be orthonormal to this (poses are float64 products of rotations, whose
#: error stays near 1e-12; a damaged or hand-edited pose is off by far more).
_ROTATION_TOL = 1e-6
_INT64_MAX = np.iinfo(np.int64).max


def _read_keyframe_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        arrays = read_npz(path)
    except InputFormatError as exc:  # read_npz never passes on numpy's advice to unpickle
        raise MapFileError(path, field=exc.field, reason=exc.reason) from None
    _check_keyframe_arrays(path, arrays)
    return arrays


def _rigid_problem(T: np.ndarray) -> tuple[int, str] | None:
    """The first (row, reason) of a stack of 4x4 matrices that is not a rigid transform, or None."""
    T = T.reshape(-1, 4, 4)
    if len(T) == 0:
        return None
    R = T[:, :3, :3]
    bottom = np.abs(T[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1) > 1e-9
    ortho_err = np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = bottom | (ortho_err > _ROTATION_TOL) | (np.abs(det - 1.0) > _ROTATION_TOL)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    if bottom[i]:
        return i, f"last row is {T[i, 3].tolist()}, not [0, 0, 0, 1]"
    if ortho_err[i] > _ROTATION_TOL:
        return i, f"rotation block is not a rotation (R^T R differs from I by {ortho_err[i]:.3g})"
    return i, f"rotation block has determinant {det[i]:.3g}, not 1 (a reflection)"


def _check_keyframe_arrays(path: Path, a: dict[str, np.ndarray]) -> None:
    """Raise :class:`MapFileError` (``path``, field, reason) unless ``a`` is a map load_map can use.

    The one check of the keyframe arrays: :meth:`LoopClosure.load_map` runs it on what it read and
    :meth:`LoopClosure.save_map` on what it is about to write, so no map is written that would
    not load back.
    """
    for name, shape in _ARRAY_SHAPES.items():
        if name not in a:
            raise MapFileError(path, field=name, reason="missing")
        arr = a[name]
        same = arr.ndim == len(shape) and all(w is None or g == w for g, w in zip(arr.shape, shape, strict=True))
        if not same:
            raise MapFileError(path, field=name, reason=f"has shape {arr.shape}, expected {shape}")
        kind = _ARRAY_KINDS[name]
        if kind == "i" and arr.dtype.kind not in "iu":
            raise MapFileError(path, field=name, reason=f"has dtype {arr.dtype}, expected integers")
        if kind == "f" and arr.dtype.kind != "f":
            raise MapFileError(path, field=name, reason=f"has dtype {arr.dtype}, expected floating point")
        if kind == "u1" and arr.dtype != np.uint8:
            raise MapFileError(path, field=name, reason=f"has dtype {arr.dtype}, expected uint8 (ORB bytes)")
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > _INT64_MAX:
            raise MapFileError(path, field=name, reason="holds values beyond the int64 range")
    if int(a["format"]) != _MAP_FORMAT:
        raise MapFileError(path, field="format", reason=f"version {int(a['format'])}, expected {_MAP_FORMAT}")
    n = len(a["keyframe_id"])
    for name in _PER_KEYFRAME[1:]:
        if len(a[name]) != n:
            raise MapFileError(path, field=name, reason=f"{len(a[name])} rows for {n} keyframes")
    counts = a["num_features"]
    if counts.size and counts.min() < 0:
        i = int(np.argmax(counts < 0))
        raise MapFileError(path, field="num_features", reason=f"row {i}: negative count {int(counts[i])}")
    total = int(counts.sum())
    for name in _PER_FEATURE:
        if len(a[name]) != total:
            raise MapFileError(path, field=name, reason=f"{len(a[name])} rows for {total} features")
    m = len(a["loop_index"])
    for name in ("loop_T_match_query", "loop_inliers"):
        if len(a[name]) != m:
            raise MapFileError(path, field=name, reason=f"{len(a[name])} rows for {m} loops")
    ids = a["keyframe_id"]

    def where(name: str, row: int) -> str:  # the row, and whose it is
        if name in _PER_KEYFRAME:
            return f"row {row} (keyframe id {int(ids[row])})"
        if name in _PER_FEATURE:
            owner = int(np.searchsorted(np.cumsum(counts), row, side="right"))
            return f"row {row} (a feature of keyframe id {int(ids[owner])})"
        return f"row {row}"

    for name, arr in a.items():
        if name in _ARRAY_SHAPES and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = ~np.isfinite(arr.reshape(len(arr), -1) if arr.ndim else arr.reshape(1, 1))
            row = int(np.argmax(bad.any(axis=1)))
            at = f" at {where(name, row)}" if arr.ndim else ""
            raise MapFileError(path, field=name, reason=f"holds non-finite values{at}")
    if len(np.unique(ids)) != n:
        raise MapFileError(path, field="keyframe_id", reason="keyframe ids repeat")
    stamps = a["stamp_ns"]
    if n > 1 and np.any(np.diff(stamps) < 0):
        i = int(np.argmax(np.diff(stamps) < 0)) + 1
        raise MapFileError(path, field="stamp_ns", reason=f"{where('stamp_ns', i)} is older than the row before "
                           "(keyframes are stored in time order)")  # fmt: skip
    for name in ("T_odom_base", "T_base_camera", "loop_T_match_query", "T_map_odom"):
        problem = _rigid_problem(a[name])
        if problem is not None:
            row, reason = problem
            at = "" if name == "T_map_odom" else f"{where(name, row)}: "
            raise MapFileError(path, field=name, reason=f"{at}{reason}")
    cam = a["camera"]
    bad_cam = (cam[:, :2] != np.round(cam[:, :2])).any(axis=1) | (cam[:, :4] <= 0).any(axis=1)
    if bad_cam.any():
        i = int(np.argmax(bad_cam))
        raise MapFileError(path, field="camera", reason=f"{where('camera', i)}: width and height must be positive "
                           f"integers and fx, fy positive, got {cam[i, :4].tolist()}")  # fmt: skip
    lm = a["landmark_ids"]
    if lm.size and lm.min() < -1:
        i = int(np.argmax(lm < -1))
        raise MapFileError(path, field="landmark_ids", reason=f"{where('landmark_ids', i)}: {int(lm[i])} < -1")
    loops = a["loop_index"]
    if m:
        if loops.min() < 0 or loops.max() >= n:
            raise MapFileError(path, field="loop_index", reason=f"indices outside [0, {n})")
        if np.any(loops[:, 0] >= loops[:, 1]):
            i = int(np.argmax(loops[:, 0] >= loops[:, 1]))
            raise MapFileError(path, field="loop_index", reason=f"row {i}: loop {loops[i].tolist()} does not join "
                               "an older keyframe (first) to a newer one")  # fmt: skip
        inl = a["loop_inliers"]
        if np.any(inl < 0) or np.any(inl[:, 0] > inl[:, 1]):
            i = int(np.argmax((inl < 0).any(axis=1) | (inl[:, 0] > inl[:, 1])))
            raise MapFileError(path, field="loop_inliers", reason=f"row {i}: {inl[i].tolist()} is not "
                               "0 <= inliers <= matches")  # fmt: skip


def _keyframes_from_arrays(path: Path, a: dict[str, np.ndarray]) -> list[Keyframe]:
    """Keyframes from arrays :func:`_check_keyframe_arrays` passed (so nothing is cast silently)."""
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
