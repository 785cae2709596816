"""Smooth base_link trajectories through the synthetic room, exact as functions of time.

Each path gives the base pose ``T_world_base`` (base frame: x forward, y left, z up) as a closed
form of time: position, then ``R = Rz(yaw) Ry(pitch) Rx(roll)`` (ROS RPY; positive pitch tips the
nose down). The camera rides on the base at :data:`T_BASE_CAMERA`: the optical frame at the base
origin looking along base x, so camera z = base x, camera x = -base y, camera y = -base z.

* ``two_lap_room``: an ellipse (semi-axes 2.6 m x 1.7 m, 1.3 m high) around the room centre,
  counter-clockwise, driven twice. Speed 0.54-0.83 m/s. The camera looks along the path but
  yawed 35 deg (+-8 deg) towards the outer walls, so walls 2-5 m away fill the view. Lap 2 runs
  5 cm further out, 3 cm higher and yawed 2 deg more (blended in over the last quarter of lap 1),
  so revisits are near but not identical, as when a robot re-drives a loop.
* ``figure_eight``: a lemniscate of Bernoulli (+-3.0 m x +-1.06 m) from the room centre at
  0.55-0.91 m/s, camera looking along the path; the two lobes are driven in opposite senses.
* ``straight``: 3 m along +x at 0.6 m/s, camera yawed 30 deg towards the y = -4 wall.

All have small pitch / roll / height oscillations. Yaw rate stays under 40 deg/s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..solver import lie

if TYPE_CHECKING:
    from ..io.trajectory import Trajectory

__all__ = [
    "DEFAULT_START_NS",
    "PATH_NAMES",
    "T_BASE_CAMERA",
    "SmoothPath",
    "figure_eight",
    "frame_stamps",
    "get_path",
    "straight",
    "two_lap_room",
]

#: First frame stamp: 1 s rather than 0, which ROS code often reads as "unset".
DEFAULT_START_NS = 1_000_000_000

#: Camera optical frame in base_link: columns are the camera axes in base coordinates.
T_BASE_CAMERA = np.array(
    [
        [0.0, 0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)

CAMERA_HEIGHT_M = 1.3

# (x, y, z, roll, pitch, yaw) arrays of time
_StateFn = Callable[[np.ndarray], tuple[np.ndarray, ...]]


def _smoothstep5(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C2 ramp 0 -> 1 on [0, 1] and its derivative; C2 keeps the yaw rate continuous."""
    x = np.clip(x, 0.0, 1.0)
    return x**3 * (10.0 - 15.0 * x + 6.0 * x * x), 30.0 * x * x * (1.0 - x) ** 2


@dataclass(frozen=True)
class SmoothPath:
    """A base_link path as a function of time (seconds from the start) over ``[0, duration_s]``."""

    name: str
    duration_s: float
    lap_period_s: float | None
    state: _StateFn

    def poses(self, t_s: np.ndarray) -> np.ndarray:
        """Base poses ``T_world_base`` (N, 4, 4) at times ``t_s`` (N,) in seconds."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        x, y, z, roll, pitch, yaw = self.state(t)
        T = np.zeros((t.size, 4, 4))
        T[:, :3, :3] = lie.rpy_to_rotation(roll, pitch, yaw)
        T[:, 0, 3], T[:, 1, 3], T[:, 2, 3] = x, y, z
        T[:, 3, 3] = 1.0
        return T

    def length_m(self, duration_s: float | None = None) -> float:
        """Path length of the base origin over ``[0, duration_s]`` (default: all), to ~1e-6 m."""
        dur = self.duration_s if duration_s is None else duration_s
        t = np.linspace(0.0, dur, max(2, int(dur * 2000.0) + 1))
        p = self.poses(t)[:, :3, 3]
        return float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum())

    def trajectory(
        self, rate_hz: float = 20.0, duration_s: float | None = None, start_ns: int = DEFAULT_START_NS
    ) -> Trajectory:
        """The base poses at the frame stamps, as :class:`mp_slam_ros.io.trajectory.Trajectory`."""
        from ..io.trajectory import Trajectory

        stamps = frame_stamps(self.duration_s if duration_s is None else duration_s, rate_hz, start_ns)
        if duration_s is not None and duration_s > self.duration_s + 1e-9:
            raise ValueError(f"{self.name}: duration {duration_s} s exceeds the path's {self.duration_s:.3f} s")
        return Trajectory(stamps, self.poses((stamps - start_ns) * 1e-9))


def frame_stamps(duration_s: float, rate_hz: float, start_ns: int = DEFAULT_START_NS) -> np.ndarray:
    """Stamps (int64 ns) of frames at ``rate_hz`` from ``start_ns`` over ``[0, duration_s]`` inclusive."""
    if rate_hz <= 0 or duration_s < 0:
        raise ValueError(f"frame_stamps: need rate_hz > 0 and duration_s >= 0, got {rate_hz}, {duration_s}")
    n = math.floor(duration_s * rate_hz + 1e-9) + 1
    return start_ns + np.round(np.arange(n) * (1e9 / rate_hz)).astype(np.int64)


# --------------------------------------------------------------------------- two_lap_room
_ELLIPSE_A, _ELLIPSE_B = 2.6, 1.7
_ELLIPSE_OMEGA = 0.32  # rad/s of the ellipse parameter: speed = omega * (b .. a)
_OUTWARD_YAW = math.radians(35.0)


def _two_lap_state(t: np.ndarray) -> tuple[np.ndarray, ...]:
    s = _ELLIPSE_OMEGA * t
    ramp, dramp = _smoothstep5((s - 1.5 * math.pi) / (0.5 * math.pi))
    dramp = dramp / (0.5 * math.pi)  # d ramp / d s
    delta, ddelta = 0.05 * ramp, 0.05 * dramp
    a, b = _ELLIPSE_A + delta, _ELLIPSE_B + delta
    c, sn = np.cos(s), np.sin(s)
    x, y = a * c, b * sn
    heading = np.arctan2(b * c + ddelta * sn, -a * sn + ddelta * c)
    yaw = heading - _OUTWARD_YAW - math.radians(8.0) * np.sin(3.0 * s + 0.3) - math.radians(2.0) * ramp
    # Oscillations with whole numbers of periods per lap, so lap 2 differs only by the ramp.
    pitch = 0.04 + 0.035 * np.sin(5.0 * s + 1.0)
    roll = 0.03 * np.sin(4.0 * s + 2.0)
    z = CAMERA_HEIGHT_M + 0.02 * np.sin(7.0 * s) + 0.03 * ramp
    return x, y, z, roll, pitch, yaw


_TWO_LAP_PERIOD = 2.0 * math.pi / _ELLIPSE_OMEGA

# --------------------------------------------------------------------------- figure_eight
_LEMNISCATE_A = 3.0  # Bernoulli: x = a cos s / (1 + sin^2 s), y = x sin s; curvature 3 r / a^2
_LEMNISCATE_OMEGA = 0.28
# The curve parameter s is the phase of (cos th, k sin th), th uniform in time: s runs at rate k
# at the lobe ends (the tightest bends) and 1/k at the crossing, which keeps the yaw rate under
# 35 deg/s at 0.55-0.91 m/s.
_LEMNISCATE_K = 0.65


def _figure_eight_state(t: np.ndarray) -> tuple[np.ndarray, ...]:
    th = _LEMNISCATE_OMEGA * t + 0.5 * math.pi  # start at the crossing, in the room centre
    ct, st = np.cos(th), np.sin(th)
    s = th + np.arctan2((_LEMNISCATE_K - 1.0) * st * ct, ct * ct + _LEMNISCATE_K * st * st)
    c, sn = np.cos(s), np.sin(s)
    den = 1.0 + sn * sn
    x = _LEMNISCATE_A * c / den
    y = x * sn
    heading = np.arctan2(1.0 - 3.0 * sn * sn, -sn * (3.0 - sn * sn))  # d(x, y)/ds up to a positive factor
    yaw = heading + math.radians(6.0) * np.sin(2.0 * th)
    pitch = 0.04 + 0.03 * np.sin(4.0 * th + 0.5)
    roll = 0.025 * np.sin(3.0 * th + 1.0)
    z = CAMERA_HEIGHT_M + 0.02 * np.sin(6.0 * th)
    return x, y, z, roll, pitch, yaw


_FIGURE_EIGHT_PERIOD = 2.0 * math.pi / _LEMNISCATE_OMEGA

# --------------------------------------------------------------------------- straight
_STRAIGHT_SPEED = 0.6


def _straight_state(t: np.ndarray) -> tuple[np.ndarray, ...]:
    x = -1.5 + _STRAIGHT_SPEED * t
    y = np.full_like(t, -1.5)
    z = CAMERA_HEIGHT_M + 0.02 * np.sin(2.0 * math.pi * t / 1.7)
    yaw = math.radians(-30.0) + math.radians(3.0) * np.sin(2.0 * math.pi * t / 4.0)
    pitch = 0.04 + 0.03 * np.sin(2.0 * math.pi * t / 2.3)
    roll = 0.02 * np.sin(2.0 * math.pi * t / 3.1)
    return x, y, z, roll, pitch, yaw


PATH_NAMES = ("two_lap_room", "figure_eight", "straight")


def get_path(name: str, laps: int | None = None) -> SmoothPath:
    """The named path; ``laps`` overrides the number of laps of the looped ones (2 and 1)."""
    if name == "two_lap_room":
        n = 2 if laps is None else laps
        return SmoothPath(name, n * _TWO_LAP_PERIOD, _TWO_LAP_PERIOD, _two_lap_state)
    if name == "figure_eight":
        n = 1 if laps is None else laps
        return SmoothPath(name, n * _FIGURE_EIGHT_PERIOD, _FIGURE_EIGHT_PERIOD, _figure_eight_state)
    if name == "straight":
        return SmoothPath(name, 5.0, None, _straight_state)
    raise ValueError(f"get_path: unknown path {name!r}; known: {PATH_NAMES}")


def two_lap_room(
    rate_hz: float = 20.0, duration_s: float | None = None, start_ns: int = DEFAULT_START_NS
) -> Trajectory:
    """Base poses of the two-lap ellipse at ``rate_hz`` (a ``Trajectory``)."""
    return get_path("two_lap_room").trajectory(rate_hz, duration_s, start_ns)


def figure_eight(
    rate_hz: float = 20.0, duration_s: float | None = None, laps: int = 1, start_ns: int = DEFAULT_START_NS
) -> Trajectory:
    """Base poses of the figure-eight at ``rate_hz`` (a ``Trajectory``)."""
    return get_path("figure_eight", laps).trajectory(rate_hz, duration_s, start_ns)


def straight(
    rate_hz: float = 20.0, duration_s: float | None = None, start_ns: int = DEFAULT_START_NS
) -> Trajectory:
    """Base poses of the short straight segment at ``rate_hz`` (a ``Trajectory``)."""
    return get_path("straight").trajectory(rate_hz, duration_s, start_ns)
