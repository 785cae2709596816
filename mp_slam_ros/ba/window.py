"""Sliding-window bundle adjustment for the visual-odometry node, on :class:`ReprojectionProblem`.

The front end hands over keyframes (an initial pose guess and the pixel observations of the
landmarks it tracked) and newly triangulated landmarks, both keyed by its own integer ids; once
per keyframe :meth:`SlidingWindowBundleAdjuster.optimize` builds one
:class:`~mp_slam_ros.ba.problem.ReprojectionProblem` over the window and runs the shared LM
driver on it, warm-started from the current estimates, and writes the result back.

**Window.** At most ``max_keyframes`` keyframes, kept in insertion order. Adding one more slides
the oldest out: its observations are dropped, and so is every landmark no longer observed by any
keyframe of the window. :meth:`~SlidingWindowBundleAdjuster.add_keyframe` returns what left
(:class:`SlideOut`: the keyframe's final pose, the dropped landmarks and their positions) so the
caller can hand it to the map.

**Gauge: old keyframes are fixed, not marginalised.** The oldest ``num_fixed_keyframes`` poses of
the window (default 2) are held constant at their current estimates; two poses fix the 7-DoF
gauge of a monocular window, scale included. A keyframe that slides out takes its observations
with it and leaves no prior behind. This is a deliberate scope decision: marginalising it would
leave a dense prior over every pose and landmark it shared observations with, which fills in the
reduced camera system (the sparse structure the linear solvers rely on is lost), must be kept
consistent by first-estimate Jacobians, and is an information matrix whose eigenvalues span many
decades, which stores badly in fp16. The price is the information the dropped observations
carried: the window drifts a little more than a marginalising one would, which is the
job of the map / loop closure downstream.

**Pending observations.** An observation of a landmark id that has not been added yet is stored
and kept out of the problem (``num_pending_observations``) until the landmark is added with
:meth:`~SlidingWindowBundleAdjuster.add_landmark`; from then on it counts like any other. That is
how a monocular front end works: a feature is tracked over two or more keyframes before it is
triangulated, and its earlier observations must not be lost. A pending observation whose landmark
never arrives leaves the window with its keyframe.

**Landmarks left out of a solve.** Landmarks observed fewer than twice in the window, and those
whose observing rays in the window meet at less than ``min_parallax_deg`` (default 1 deg), are
kept but left out of the problem, unchanged by the solve, until the window sees them well enough.
The parallax check exists because, measured on streamed synthetic trajectories, a landmark whose
older observations slid out, or one seen along the direction of motion, has a depth the window
barely observes, and LM walked such points out to kilometres, where the gradient vanishes and
they never come back (the problem's points are Euclidean, not inverse depth).

**Warm start.** Every solve starts from the previous solution plus the new keyframe's guess and
the new landmarks' positions. The LM damping starts from the previous solve's final damping,
clamped to ``damping_range`` (``warm_start_damping``). A converged solve ends with its damping cut
by ~3x per accepted step (to ~1e-10 and below), so the next solve starts nearly Gauss-Newton,
which is right for a problem that is solved but for one keyframe; the floor keeps a little
damping for the new keyframe's guess, and the ceiling stops a solve that gave up at the maximum
damping from stalling the next one. Measured on streamed synthetic trajectories (120 keyframes,
50-keyframe window, 288 paired solves of the same problem and state, mixed and fp64 alike):
4.5 LM iterations and ~240 CG iterations with the carry-over against 5.9 and ~470 from the
default 1e-4, about a third less solve time. Floors of 1e-8 and 1e-6 did the same; 1e-5 kept
only part of the gain.

All per-observation work is vectorised: the observations live in flat arrays (keyframe sequence
number, landmark id, pixel) and are matched to the landmarks by a binary search over the sorted
ids; Python loops run per keyframe or per added or dropped landmark only.
"""

from __future__ import annotations

import logging
import math
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike

from ..solver.lm import SolverOptions, SolverSummary, solve
from ..solver.precision import PrecisionConfig, load_precision
from .problem import LOSSES, ReprojectionProblem, WindowState

__all__ = ["SlideOut", "SlidingWindowBundleAdjuster", "WindowOptions"]

log = logging.getLogger(__name__)

_ROTATION_TOLERANCE = 1e-6  # |R^T R - I| allowed in a keyframe's rotation (a float64 rotation is ~1e-15 off)


@dataclass(frozen=True)
class WindowOptions:
    """Options of :class:`SlidingWindowBundleAdjuster`.

    Attributes:
        max_keyframes: keyframes in the window; adding one more slides the oldest out.
        num_fixed_keyframes: the oldest poses of the window held constant (the gauge; 2 fixes the
            7 DoF of a monocular window, scale included).
        loss, loss_scale: robust loss on the pixel error, scale in pixels. The default Huber at
            2.45 px is ORB-SLAM's monocular inlier threshold (sqrt of the 95 % chi^2 quantile of
            2 DoF, 5.99, at 1 px noise): inliers see the plain quadratic, outliers a linear cost.
        max_iterations: LM iterations per solve; overrides ``SolverOptions.max_iterations``.
            Warm-started steady-state solves converge in 4-5; the first few windows (3-5
            keyframes, a handful of barely triangulable points) may stop at the cap, which is
            logged and harmless (the best state is written back and the next solve continues).
        min_parallax_deg: landmarks whose rays from their oldest and newest observing keyframes
            of the window meet at a smaller angle are left out of the problem, unchanged (module
            doc); 0 disables the check.
        warm_start_damping: start each solve's LM damping from the previous solve's final damping.
        damping_range: (low, high) clamp of the carried-over damping.
    """

    max_keyframes: int = 50
    num_fixed_keyframes: int = 2
    loss: str = "huber"
    loss_scale: float = 2.45
    max_iterations: int = 10
    min_parallax_deg: float = 1.0
    warm_start_damping: bool = True
    damping_range: tuple[float, float] = (1e-6, 1e-2)

    def __post_init__(self) -> None:
        if self.num_fixed_keyframes < 1:
            raise ValueError(f"num_fixed_keyframes must be at least 1 (the gauge), got {self.num_fixed_keyframes}")
        if self.max_keyframes <= self.num_fixed_keyframes:
            raise ValueError(
                f"max_keyframes ({self.max_keyframes}) must exceed num_fixed_keyframes ({self.num_fixed_keyframes})"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got '{self.loss}'")
        if not (math.isfinite(self.loss_scale) and self.loss_scale > 0.0):
            raise ValueError(f"loss_scale must be positive and finite, got {self.loss_scale}")
        if not (0.0 <= self.min_parallax_deg < 90.0):
            raise ValueError(f"min_parallax_deg must be in [0, 90), got {self.min_parallax_deg}")
        if self.max_iterations < 1:
            raise ValueError(f"max_iterations must be at least 1, got {self.max_iterations}")
        low, high = self.damping_range
        if not (0.0 < low <= high < math.inf):
            raise ValueError(f"damping_range must be 0 < low <= high < inf, got {self.damping_range}")


@dataclass(frozen=True)
class SlideOut:
    """What left the window when a keyframe slid out.

    Attributes:
        keyframe_id: the keyframe that slid out (the oldest).
        rotation, translation: its last estimate, world_T_camera ((3, 3), (3,)).
        landmark_ids: the landmarks dropped because no keyframe of the window observes them any
            more (sorted), with their last ``landmark_positions`` (k, 3).
    """

    keyframe_id: int
    rotation: np.ndarray
    translation: np.ndarray
    landmark_ids: np.ndarray
    landmark_positions: np.ndarray


def _index(value: object, name: str) -> int:
    """An integer id (Python or numpy integer; bool and float rejected)."""
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _finite(a: ArrayLike, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.array(a, dtype=np.float64)  # a copy: the caller's array may change later
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _ids(a: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be a 1-D array of integers, got shape {arr.shape} dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if arr.dtype.kind == "u" and np.any(out < 0):
        raise ValueError(f"{name} do not fit in int64")
    sorted_ids = np.sort(out)
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
        raise ValueError(f"{name} are not unique: {np.unique(dup)[:10].tolist()}")
    return out


class SlidingWindowBundleAdjuster:
    """Sliding-window bundle adjustment over keyframes and landmarks keyed by the front end's ids
    (module doc).

    Args:
        intrinsics: (fx, fy, cx, cy) of the undistorted pinhole camera, in pixels.
        precision: a :class:`PrecisionConfig` or a preset name / YAML path for
            :func:`~mp_slam_ros.solver.precision.load_precision`; default "mixed".
        solver_options: LM options; default ``SolverOptions(linear_solver="cgnr")``. Its
            ``max_iterations`` is replaced by the window's, its ``initial_damping`` is used for the
            first solve (and for all of them without ``warm_start_damping``).
        window_options: :class:`WindowOptions`.
        baseline: the stereo baseline in metres of a rectified pair, for keyframes that also give
            right-image observations (``right_u`` of :meth:`add_keyframe`); None: monocular only.

    Poses are world_T_camera (R, t) as in :class:`ReprojectionProblem`; a keyframe's pixels are
    (u, v) of the landmarks given with it, in the same order.
    """

    def __init__(
        self,
        intrinsics: Sequence[float],
        precision: PrecisionConfig | str = "mixed",
        solver_options: SolverOptions | None = None,
        window_options: WindowOptions | None = None,
        baseline: float | None = None,
    ) -> None:
        if baseline is not None and not (math.isfinite(baseline) and baseline > 0.0):
            raise ValueError(f"baseline must be positive and finite, got {baseline}")
        self.baseline = None if baseline is None else float(baseline)
        intr = tuple(float(v) for v in intrinsics)
        if len(intr) != 4 or not all(map(math.isfinite, intr)) or intr[0] <= 0 or intr[1] <= 0:
            raise ValueError(f"intrinsics must be finite (fx, fy, cx, cy) with fx, fy > 0, got {intrinsics}")
        self.intrinsics: tuple[float, float, float, float] = intr  # type: ignore[assignment]
        self.precision = load_precision(precision) if isinstance(precision, str) else precision
        self.solver_options = solver_options or SolverOptions(linear_solver="cgnr")
        self.window_options = window_options or WindowOptions()

        # Keyframes, oldest first. A keyframe's sequence number (insertion count) never changes, so
        # an observation stores it and its pose index is seq - first_seq, whatever slid out since.
        self._kf_ids: list[int] = []
        self._kf_seq: dict[int, int] = {}
        self._kf_num_obs: list[int] = []
        self._first_seq = 0
        self._next_seq = 0
        self._rotations = np.zeros((0, 3, 3))
        self._translations = np.zeros((0, 3))
        # Observations of all keyframes, in keyframe order (the oldest keyframe's are a prefix).
        self._obs_seq = np.zeros(0, dtype=np.int64)
        self._obs_landmark = np.zeros(0, dtype=np.int64)
        self._obs_pixels = np.zeros((0, 2))
        # Per observation: the observing camera's shift along the keyframe's x axis (0: the
        # keyframe's own camera, baseline: the right camera of a rectified stereo pair).
        self._obs_offset = np.zeros(0)
        # Landmarks: id -> row of a position buffer (rows are reused after drops), and a sorted
        # (ids, rows) view rebuilt lazily when landmarks come or go.
        self._lm_row: dict[int, int] = {}
        self._lm_positions = np.zeros((64, 3))
        self._free_rows: list[int] = []
        self._next_row = 0
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None

        self._damping: float | None = None
        self.last_summary: SolverSummary | None = None
        self.last_problem: ReprojectionProblem | None = None  # what the last optimize() solved
        # Seconds spent by the last optimize() in: building the problem ("setup"), the solver
        # ("solve") and writing the result back ("write_back").
        self.last_timing: dict[str, float] = {}

    # -- input ------------------------------------------------------------------------------
    def add_keyframe(
        self,
        keyframe_id: int,
        rotation: ArrayLike,
        translation: ArrayLike,
        landmark_ids: ArrayLike,
        pixels: ArrayLike,
        right_u: ArrayLike | None = None,
    ) -> SlideOut | None:
        """Add a keyframe: its initial pose guess (world_T_camera) and its observations, pixel
        ``pixels[k]`` (u, v) of landmark ``landmark_ids[k]``.

        ``right_u[k]`` (optional, NaN where unmatched) is landmark k's column in the rectified
        right image (same row ``v``); it adds a second observation from the right camera, which
        is what holds a stereo window's scale. Needs the window's ``baseline``.

        Landmarks not added yet are pending (module doc). Returns the :class:`SlideOut` of the
        oldest keyframe when the window was full, else None. Raises ValueError/TypeError (and
        changes nothing) for a keyframe id already in the window, a rotation that is not one,
        non-finite values, mismatched shapes or a landmark observed twice in the keyframe.
        """
        kf = _index(keyframe_id, "keyframe_id")
        if kf in self._kf_seq:
            raise ValueError(f"keyframe {kf} is already in the window")
        R = _finite(rotation, (3, 3), "rotation")
        t = _finite(translation, (3,), "translation")
        if np.max(np.abs(R.T @ R - np.eye(3))) > _ROTATION_TOLERANCE or np.linalg.det(R) <= 0.0:
            raise ValueError(f"rotation of keyframe {kf} is not a rotation matrix (orthonormal, det +1)")
        ids = _ids(landmark_ids, "landmark_ids")
        px = np.array(pixels, dtype=np.float64).reshape(-1, 2) if ids.size == 0 else np.array(pixels, np.float64)
        if px.shape != (ids.size, 2):
            raise ValueError(f"pixels must have shape ({ids.size}, 2) to match landmark_ids, got {px.shape}")
        if not np.all(np.isfinite(px)):
            raise ValueError("pixels must be finite")
        offsets = np.zeros(ids.size)
        if right_u is not None:
            if self.baseline is None:
                raise ValueError("right_u needs a window constructed with a stereo baseline")
            ru = np.array(right_u, dtype=np.float64).reshape(-1)
            if ru.shape != (ids.size,):
                raise ValueError(f"right_u must have shape ({ids.size},) to match landmark_ids, got {ru.shape}")
            if np.any(np.isinf(ru)):
                raise ValueError("right_u must be finite or NaN (no match)")
            matched = np.flatnonzero(~np.isnan(ru))
            ids = np.concatenate([ids, ids[matched]])
            px = np.concatenate([px, np.stack([ru[matched], px[matched, 1]], axis=1)])
            offsets = np.concatenate([offsets, np.full(matched.size, self.baseline)])

        seq = self._next_seq
        self._next_seq += 1
        self._kf_ids.append(kf)
        self._kf_seq[kf] = seq
        self._kf_num_obs.append(ids.size)
        self._rotations = np.concatenate([self._rotations, R[None]])
        self._translations = np.concatenate([self._translations, t[None]])
        self._obs_seq = np.concatenate([self._obs_seq, np.full(ids.size, seq, dtype=np.int64)])
        self._obs_landmark = np.concatenate([self._obs_landmark, ids])
        self._obs_pixels = np.concatenate([self._obs_pixels, px])
        self._obs_offset = np.concatenate([self._obs_offset, offsets])
        if len(self._kf_ids) > self.window_options.max_keyframes:
            return self._slide()
        return None

    def add_landmark(self, landmark_id: int, position: ArrayLike) -> None:
        """Add a landmark (world position (3,)); its pending observations join the problem.

        Add it after a keyframe that observes it: a landmark no keyframe of the window observes
        is dropped at the next slide. Raises ValueError if the id is already in the window (see
        :meth:`update_landmark`) or the position is not finite.
        """
        lm = _index(landmark_id, "landmark_id")
        if lm in self._lm_row:
            raise ValueError(f"landmark {lm} is already in the window; use update_landmark to move it")
        X = _finite(position, (3,), "position")
        row = self._new_row(lm)  # first: it may reallocate the buffer
        self._lm_positions[row] = X

    def add_landmarks(self, landmark_ids: ArrayLike, positions: ArrayLike) -> None:
        """:meth:`add_landmark` for several landmarks (ids (k,), positions (k, 3)); all or none."""
        ids = _ids(landmark_ids, "landmark_ids")
        if ids.size == 0 and np.size(positions) == 0:
            return
        X = _finite(positions, (ids.size, 3), "positions")
        known = [i for i in ids.tolist() if i in self._lm_row]
        if known:
            raise ValueError(f"landmark(s) {known[:10]} already in the window; use update_landmark to move them")
        rows = [self._new_row(i) for i in ids.tolist()]
        self._lm_positions[rows] = X

    def update_landmark(self, landmark_id: int, position: ArrayLike) -> None:
        """Move a landmark of the window (e.g. re-triangulated). KeyError if it is not in the window."""
        lm = _index(landmark_id, "landmark_id")
        row = self._lm_row.get(lm)
        if row is None:
            raise KeyError(f"landmark {lm} is not in the window")
        self._lm_positions[row] = _finite(position, (3,), "position")

    def _new_row(self, lm: int) -> int:
        if self._free_rows:
            row = self._free_rows.pop()
        else:
            row = self._next_row
            self._next_row += 1
            if row >= self._lm_positions.shape[0]:
                grown = np.zeros((2 * self._lm_positions.shape[0], 3))
                grown[:row] = self._lm_positions[:row]
                self._lm_positions = grown
        self._lm_row[lm] = row
        self._sorted = None
        return row

    # -- sliding ----------------------------------------------------------------------------
    def _slide(self) -> SlideOut:
        """Remove the oldest keyframe, its observations and the landmarks left unobserved."""
        kf = self._kf_ids.pop(0)
        del self._kf_seq[kf]
        n_obs = self._kf_num_obs.pop(0)
        R, t = self._rotations[0].copy(), self._translations[0].copy()
        self._rotations = self._rotations[1:]
        self._translations = self._translations[1:]
        self._obs_seq = self._obs_seq[n_obs:]
        self._obs_landmark = self._obs_landmark[n_obs:]
        self._obs_pixels = self._obs_pixels[n_obs:]
        self._obs_offset = self._obs_offset[n_obs:]
        self._first_seq += 1

        ids, rows = self._sorted_landmarks()
        known, pos = self._match()
        observed = np.bincount(pos[known], minlength=ids.size) > 0
        gone = ~observed
        dropped_ids = ids[gone]
        dropped_positions = self._lm_positions[rows[gone]]
        if dropped_ids.size:
            for lm in dropped_ids.tolist():
                self._free_rows.append(self._lm_row.pop(lm))
            self._sorted = (ids[observed], rows[observed])
        return SlideOut(kf, R, t, dropped_ids, dropped_positions)

    # -- matching observations to landmarks -------------------------------------------------
    def _sorted_landmarks(self) -> tuple[np.ndarray, np.ndarray]:
        """Landmark ids, ascending, and their rows in the position buffer."""
        if self._sorted is None:
            n = len(self._lm_row)
            ids = np.fromiter(self._lm_row.keys(), dtype=np.int64, count=n)
            rows = np.fromiter(self._lm_row.values(), dtype=np.int64, count=n)
            order = np.argsort(ids)
            self._sorted = (ids[order], rows[order])
        return self._sorted

    def _match(self) -> tuple[np.ndarray, np.ndarray]:
        """Per stored observation: whether its landmark is in the window, and the landmark's index
        in the sorted ids (meaningless where not)."""
        ids, _ = self._sorted_landmarks()
        if ids.size == 0:
            n = self._obs_landmark.size
            return np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
        pos = np.searchsorted(ids, self._obs_landmark)
        np.minimum(pos, ids.size - 1, out=pos)
        return ids[pos] == self._obs_landmark, pos

    # -- solving ----------------------------------------------------------------------------
    def problem(self) -> tuple[ReprojectionProblem, WindowState]:
        """The window as a :class:`ReprojectionProblem` and its current state (copies).

        Pose k of the problem is ``keyframe_ids[k]``, point j is ``landmark_ids[j]``; the oldest
        ``num_fixed_keyframes`` poses are fixed; pending observations are left out.
        """
        if not self._kf_ids:
            raise RuntimeError("the window has no keyframes")
        ids, rows = self._sorted_landmarks()
        known, pos = self._match()
        n = len(self._kf_ids)
        select = np.flatnonzero(known)
        pose_index = self._obs_seq[select] - self._first_seq
        point_index = pos[select]
        positions = self._lm_positions[rows]
        if self.window_options.min_parallax_deg > 0.0 and select.size:
            keep = self._parallax_ok(pose_index, point_index, self._obs_offset[select], positions)[point_index]
            select, pose_index, point_index = select[keep], pose_index[keep], point_index[keep]
        problem = ReprojectionProblem(
            pose_index,
            point_index,
            self._obs_pixels[select],
            self.intrinsics,
            n,
            ids.size,
            fixed_poses=range(min(self.window_options.num_fixed_keyframes, n)),
            loss=self.window_options.loss,
            loss_scale=self.window_options.loss_scale,
            camera_offsets=self._obs_offset[select],
        )
        return problem, WindowState(self._rotations.copy(), self._translations.copy(), positions)

    def _parallax_ok(
        self, pose_index: np.ndarray, point_index: np.ndarray, offsets: np.ndarray, positions: np.ndarray
    ) -> np.ndarray:
        """Per landmark: whether the rays to it from its first and last observing cameras of the
        window (oldest keyframe's left camera ... newest keyframe's right camera) meet at
        ``min_parallax_deg`` or more, at the current estimates (module doc: below that, LM
        walked Euclidean points out to kilometres). A stereo pair alone gives baseline/depth."""
        m = positions.shape[0]
        # Order the cameras by (keyframe, offset): the key's extremes are the widest-apart pair.
        key = 2 * pose_index + (offsets > 0.0)
        first = np.full(m, 2 * len(self._kf_ids), dtype=np.int64)
        last = np.full(m, -1, dtype=np.int64)
        np.minimum.at(first, point_index, key)
        np.maximum.at(last, point_index, key)
        np.maximum(last, 0, out=last)
        np.minimum(first, last, out=first)  # a landmark without observations: one ray, no parallax
        baseline = self.baseline or 0.0

        def centre(k: np.ndarray) -> np.ndarray:
            pose = k // 2
            return self._translations[pose] + (k % 2)[:, None] * baseline * self._rotations[pose][:, :, 0]

        a = positions - centre(first)
        b = positions - centre(last)
        with np.errstate(invalid="ignore", divide="ignore"):
            cos = np.einsum("ij,ij->i", a, b) / np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
        return cos <= math.cos(math.radians(self.window_options.min_parallax_deg))  # NaN (a point on a camera): False

    @property
    def next_initial_damping(self) -> float:
        """The LM damping the next solve starts from."""
        if self._damping is None or not self.window_options.warm_start_damping:
            return self.solver_options.initial_damping
        return self._damping

    def optimize(self) -> SolverSummary:
        """Solve the window from the current estimates and write the result back.

        Returns the solver's summary (also ``last_summary``; timings in ``last_timing``). A
        solve that ends in FAILURE or NO_CONVERGENCE still writes back its best state, which
        never costs more than the start; it is logged.
        """
        t0 = time.perf_counter()
        problem, state = self.problem()
        rows = self._sorted_landmarks()[1]
        options = replace(
            self.solver_options,
            max_iterations=self.window_options.max_iterations,
            initial_damping=self.next_initial_damping,
        )
        t1 = time.perf_counter()
        if problem.num_parameters == 0:
            # e.g. only the fixed keyframes and no landmark seen twice: nothing the solver could move
            summary = SolverSummary(
                precision=self.precision.as_dict(),
                linear_solver=options.linear_solver,
                algorithm=options.algorithm,
                num_parameters=0,
                num_residuals=2 * problem.num_observations,
                termination="CONVERGENCE",
                message="nothing to optimise (no free pose and no landmark in the problem)",
            )
            summary.initial_cost = summary.final_cost = problem.cost(state)
            result = state
        else:
            result, summary = solve(problem, state, options, self.precision)
        t2 = time.perf_counter()
        self._rotations = result.rotations
        self._translations = result.translations
        self._lm_positions[rows] = result.points
        if summary.iterations:
            low, high = self.window_options.damping_range
            self._damping = min(max(summary.iterations[-1].damping, low), high)
        if summary.termination != "CONVERGENCE":
            log.warning(
                "window of %d keyframes: %s after %d iterations (%s)",
                len(self._kf_ids),
                summary.termination,
                summary.num_iterations,
                summary.message,
            )
        self.last_summary = summary
        self.last_problem = problem
        self.last_timing = {"setup": t1 - t0, "solve": t2 - t1, "write_back": time.perf_counter() - t2}
        return summary

    # -- accessors --------------------------------------------------------------------------
    @property
    def keyframe_ids(self) -> np.ndarray:
        """Keyframe ids of the window, oldest first."""
        return np.array(self._kf_ids, dtype=np.int64)

    @property
    def fixed_keyframe_ids(self) -> np.ndarray:
        """The keyframes the next solve holds fixed (the oldest ``num_fixed_keyframes``)."""
        return np.array(self._kf_ids[: self.window_options.num_fixed_keyframes], dtype=np.int64)

    @property
    def landmark_ids(self) -> np.ndarray:
        """Landmark ids of the window, ascending."""
        return self._sorted_landmarks()[0].copy()

    @property
    def num_keyframes(self) -> int:
        return len(self._kf_ids)

    @property
    def num_landmarks(self) -> int:
        return len(self._lm_row)

    @property
    def num_observations(self) -> int:
        """Observations of landmarks in the window (including those of landmarks seen once)."""
        return int(np.count_nonzero(self._match()[0]))

    @property
    def num_pending_observations(self) -> int:
        """Observations of landmark ids not added (yet)."""
        return int(self._obs_landmark.size) - self.num_observations

    def has_keyframe(self, keyframe_id: int) -> bool:
        return _index(keyframe_id, "keyframe_id") in self._kf_seq

    def has_landmark(self, landmark_id: int) -> bool:
        return _index(landmark_id, "landmark_id") in self._lm_row

    def pose(self, keyframe_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Current estimate (R (3, 3), t (3,)) of a keyframe, world_T_camera (copies). KeyError if absent."""
        kf = _index(keyframe_id, "keyframe_id")
        seq = self._kf_seq.get(kf)
        if seq is None:
            raise KeyError(f"keyframe {kf} is not in the window")
        k = seq - self._first_seq
        return self._rotations[k].copy(), self._translations[k].copy()

    def landmark(self, landmark_id: int) -> np.ndarray:
        """Current position (3,) of a landmark (a copy). KeyError if absent."""
        lm = _index(landmark_id, "landmark_id")
        row = self._lm_row.get(lm)
        if row is None:
            raise KeyError(f"landmark {lm} is not in the window")
        return self._lm_positions[row].copy()

    @property
    def state(self) -> WindowState:
        """All estimates (copies): poses in ``keyframe_ids`` order, points in ``landmark_ids`` order."""
        rows = self._sorted_landmarks()[1]
        return WindowState(self._rotations.copy(), self._translations.copy(), self._lm_positions[rows])
