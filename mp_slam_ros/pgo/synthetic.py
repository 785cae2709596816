"""Synthetic pose graphs with ground truth: a robot driving laps that revisit earlier places."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..solver import lie
from .graph import PoseGraph, odometry_chain_initialization


@dataclass
class SyntheticPoseGraph:
    graph: PoseGraph  # noisy measurements, initial guess from chaining the noisy odometry
    true_rotations: np.ndarray
    true_translations: np.ndarray


def make_loop_pose_graph(
    num_poses: int = 1000,
    laps: float = 4.0,
    radius: float = 10.0,
    climb_per_lap: float = 0.5,
    loop_radius: float = 1.0,
    rotation_sigma: float = 0.01,
    translation_sigma: float = 0.05,
    dim: int = 3,
    seed: int = 0,
) -> SyntheticPoseGraph:
    """Poses on a helix of `laps` laps; loop edges join poses within `loop_radius` on other laps.

    Odometry and loop measurements get Gaussian noise in the tangent space (sigmas in rad and m,
    per axis) and carry the matching information. The initial guess chains the noisy odometry,
    so it drifts like visual odometry does.
    """
    rng = np.random.default_rng(seed)
    s = np.linspace(0.0, laps * 2.0 * np.pi, num_poses)
    x, y = radius * np.cos(s), radius * np.sin(s)
    yaw = s + np.pi / 2.0
    k = 3 if dim == 2 else 6
    if dim == 2:
        xi = np.zeros((num_poses, 3))
        xi[:, 2] = yaw
        rot = lie.se2_exp(xi)[0]
        trans = np.stack([x, y], axis=1)
    else:
        z = climb_per_lap * s / (2.0 * np.pi) * np.sin(3 * s) * 0.2 + 0.05 * np.sin(5 * s)
        omega = np.zeros((num_poses, 3))
        omega[:, 2] = yaw
        rot = lie.so3_exp(omega)
        trans = np.stack([x, y, z], axis=1)

    # Express the truth in the frame of pose 0, which is where the odometry chain starts.
    r0, t0 = lie.inverse(rot[:1], trans[:1])
    rot, trans = lie.compose(np.repeat(r0, num_poses, axis=0), np.repeat(t0, num_poses, axis=0), rot, trans)

    ii = [np.arange(num_poses - 1)]
    jj = [np.arange(1, num_poses)]
    per_lap = num_poses / laps
    for lap_gap in range(1, int(np.ceil(laps))):
        offset = round(lap_gap * per_lap)
        src = np.arange(num_poses - offset)
        dst = src + offset
        close = np.linalg.norm(trans[src] - trans[dst], axis=1) < loop_radius
        keep = close & (rng.random(src.size) < 0.5)
        ii.append(src[keep])
        jj.append(dst[keep])
    edge_i = np.concatenate(ii).astype(np.int64)
    edge_j = np.concatenate(jj).astype(np.int64)

    zr, zt = lie.between(rot[edge_i], trans[edge_i], rot[edge_j], trans[edge_j])
    sig = (
        np.array([translation_sigma] * dim + [rotation_sigma])
        if dim == 2
        else np.array([rotation_sigma] * 3 + [translation_sigma] * 3)
    )
    noise = rng.normal(size=(edge_i.size, k)) * sig
    nr, nt = lie.se2_exp(noise) if dim == 2 else lie.se3_exp(noise)
    zr, zt = lie.compose(zr, zt, nr, nt)
    info = np.broadcast_to(np.diag(1.0 / sig**2), (edge_i.size, k, k)).copy()

    graph = PoseGraph(
        dim=dim,
        ids=np.arange(num_poses, dtype=np.int64),
        rotations=np.broadcast_to(np.eye(dim), (num_poses, dim, dim)).copy(),
        translations=np.zeros((num_poses, dim)),
        fixed=np.zeros(num_poses, dtype=bool),
        edge_i=edge_i,
        edge_j=edge_j,
        meas_rotations=zr,
        meas_translations=zt,
        information=info,
        has_initial_guess=False,
        source="synthetic",
    )
    graph = odometry_chain_initialization(graph)
    return SyntheticPoseGraph(graph, rot, trans)


def _ellipse_arc_table(aspect: float, samples: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Parameter and arc length of the unit ellipse (a = 1, b = aspect), for uniform arc-length spacing."""
    th = np.linspace(0.0, 2.0 * np.pi, samples + 1)
    speed = np.hypot(np.sin(th), aspect * np.cos(th))
    arc = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(th))])
    return th, arc


def make_keyframe_pose_graph(
    num_keyframes: int,
    laps: float = 2.0,
    seed: int = 0,
    *,
    spacing: float = 0.075,
    aspect: float = 0.65,
    lap_offset: float = 0.05,
    lap_climb: float = 0.03,
    odometry_rotation_sigma: float = float(np.radians(0.05)),
    odometry_translation_sigma: float = 0.001,
    loop_rotation_sigma: float = float(np.radians(0.01)),
    loop_translation_sigma: float = 0.001,
    loop_every: int = 1,
    loop_radius: float = 0.25,
    min_loop_gap: int | None = None,
    noise_scale: float = 1.0,
) -> SyntheticPoseGraph:
    """A visual-SLAM keyframe graph: a robot driving ``laps`` laps of a loop, as the loop closer holds it.

    Path: an ellipse (semi-axes ratio ``aspect``, like the synthetic room's 2.6 m x 1.7 m) driven
    counter-clockwise, keyframes evenly spaced along the path, about ``spacing`` metres apart
    (7.5 cm: a robot at 0.75 m/s with 10 Hz keyframes). The keyframe spacing is what a keyframe
    graph keeps constant, so the loop grows with the graph: its perimeter is
    ``num_keyframes * spacing / laps`` (200 keyframes in 2 laps: a 7.5 m room loop; 1,000: a
    37.5 m hall; 10,000: a 375 m building floor); a fixed room driven more laps would instead add
    keyframes on ground the map already covers, which a keyframe-based SLAM does not do. Each lap
    runs ``lap_offset`` further out and ``lap_climb`` higher than the one before (spread evenly
    over the lap, which stretches the spacing of a small loop by a few per cent), so revisits are
    near but not identical; yaw follows the path with a +-5 deg wobble, and height, pitch and
    roll oscillate a little with whole periods per lap.

    Edges (tangent order rotation first, like :class:`PoseGraph`):

    * odometry between consecutive keyframes with Gaussian noise ``odometry_*_sigma`` per axis
      (rad, m) in the tangent space of the measurement. The defaults (0.05 deg, 1 mm per 7.5 cm)
      are a good visual odometry; their drift is rotation-dominated and grows like
      ``num_keyframes ** 1.5``: odometry-only ATE ~0.1 m at 500 keyframes (0.3 % of the path),
      ~0.3 m at 1,000, ~2.5 m at 5,000 (0.7 %), ~8 m at 10,000 (1 %).
    * a loop edge from every ``loop_every``-th keyframe that revisits an earlier place to the
      nearest earlier keyframe within ``loop_radius`` at least ``min_loop_gap`` keyframes back
      (default half a lap, like the loop closer's exclusion of recent keyframes), with the small
      noise ``loop_*_sigma`` of a PnP-verified loop.

    Information matrices are the inverse noise covariances. ``noise_scale`` multiplies the noise
    actually drawn but not the information (0 gives exact measurements with the same weights).
    The initial guess chains the noisy odometry from the identity: the graph as the loop closer
    holds it before its first loop. Ground truth is expressed in the frame of keyframe 0.
    """
    n = int(num_keyframes)
    if n < 2:
        raise ValueError(f"num_keyframes must be at least 2, got {num_keyframes!r}")
    if not laps > 0:
        raise ValueError(f"laps must be positive, got {laps!r}")
    sigmas = {
        "odometry_rotation_sigma": odometry_rotation_sigma,
        "odometry_translation_sigma": odometry_translation_sigma,
        "loop_rotation_sigma": loop_rotation_sigma,
        "loop_translation_sigma": loop_translation_sigma,
        "spacing": spacing,
        "aspect": aspect,
        "loop_radius": loop_radius,
    }
    for name, value in sigmas.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    if loop_every < 1:
        raise ValueError(f"loop_every must be at least 1, got {loop_every!r}")
    rng = np.random.default_rng(seed)

    # --- ground truth
    per_lap = n / laps
    th_table, arc_table = _ellipse_arc_table(aspect)
    a = n * spacing / laps / arc_table[-1]  # base ellipse of perimeter n * spacing / laps
    b = aspect * a

    def path(u: np.ndarray) -> tuple[np.ndarray, ...]:
        """Position at ``u`` laps along the path, and the lap phase."""
        th = np.interp((u % 1.0) * arc_table[-1], arc_table, th_table) + 2.0 * np.pi * np.floor(u)
        grow = lap_offset * u
        phase = 2.0 * np.pi * u
        z = lap_climb * u + 0.02 * np.sin(7.0 * phase)
        return (a + grow) * np.cos(th), (b + grow) * np.sin(th), z, phase

    # Keyframes at equal arc length along the real 3D path (outward drift and height wobble included),
    # found on a dense sampling of it.
    u_end = (n - 1) / per_lap
    u_dense = np.linspace(0.0, u_end, 32 * n + 1)
    xd, yd, zd, _ = path(u_dense)
    length = np.concatenate([[0.0], np.cumsum(np.sqrt(np.diff(xd) ** 2 + np.diff(yd) ** 2 + np.diff(zd) ** 2))])
    u = np.interp(np.linspace(0.0, length[-1], n), length, u_dense)
    x, y, z, phase = path(u)
    heading_dense = np.unwrap(np.arctan2(np.gradient(yd), np.gradient(xd)))
    heading = np.interp(u, u_dense, heading_dense)
    yaw = heading + np.radians(5.0) * np.sin(3.0 * phase + 0.3)
    pitch = 0.03 * np.sin(5.0 * phase + 1.0)
    roll = 0.02 * np.sin(4.0 * phase + 2.0)
    rot = lie.rpy_to_rotation(roll, pitch, yaw)
    trans = np.stack([x, y, z], axis=1)
    r0, t0 = lie.inverse(rot[:1], trans[:1])
    rot, trans = lie.compose(np.repeat(r0, n, axis=0), np.repeat(t0, n, axis=0), rot, trans)

    # --- loop edges: nearest earlier keyframe, outside the recent window
    gap = int(np.ceil(0.5 * per_lap)) if min_loop_gap is None else int(min_loop_gap)
    gap = max(gap, 2)
    loop_i = np.zeros(0, dtype=np.int64)
    loop_j = np.zeros(0, dtype=np.int64)
    queries = np.arange(gap, n)
    if queries.size:
        from scipy.spatial import cKDTree

        # Within the radius lie a few keyframes of the query's own lap and of each earlier lap.
        per_radius = int(np.ceil(2.0 * loop_radius / spacing)) + 1
        k = int(min(n, per_radius * (int(np.ceil(laps)) + 1)))
        dist, idx = cKDTree(trans).query(trans[queries], k=k, distance_upper_bound=loop_radius)
        dist, idx = dist.reshape(queries.size, k), idx.reshape(queries.size, k)
        valid = (idx < n) & (idx <= queries[:, None] - gap)
        dist = np.where(valid, dist, np.inf)
        best = np.argmin(dist, axis=1)
        found = np.isfinite(dist[np.arange(queries.size), best])
        loop_j = queries[found]
        loop_i = idx[np.arange(queries.size), best][found].astype(np.int64)
        keep = np.arange(loop_j.size) % loop_every == 0
        loop_i, loop_j = loop_i[keep], loop_j[keep]
    edge_i = np.concatenate([np.arange(n - 1), loop_i]).astype(np.int64)
    edge_j = np.concatenate([np.arange(1, n), loop_j]).astype(np.int64)

    # --- noisy measurements
    m = edge_i.size
    sig = np.empty((m, 6))
    sig[: n - 1, :3], sig[: n - 1, 3:] = odometry_rotation_sigma, odometry_translation_sigma
    sig[n - 1 :, :3], sig[n - 1 :, 3:] = loop_rotation_sigma, loop_translation_sigma
    zr, zt = lie.between(rot[edge_i], trans[edge_i], rot[edge_j], trans[edge_j])
    nr, nt = lie.se3_exp(noise_scale * rng.normal(size=(m, 6)) * sig)
    zr, zt = lie.compose(zr, zt, nr, nt)
    info = np.zeros((m, 6, 6))
    info[:, np.arange(6), np.arange(6)] = 1.0 / sig**2

    graph = PoseGraph(
        dim=3,
        ids=np.arange(n, dtype=np.int64),
        rotations=np.broadcast_to(np.eye(3), (n, 3, 3)).copy(),
        translations=np.zeros((n, 3)),
        fixed=np.zeros(n, dtype=bool),
        edge_i=edge_i,
        edge_j=edge_j,
        meas_rotations=zr,
        meas_translations=zt,
        information=info,
        has_initial_guess=False,
        source="synthetic keyframe graph",
    )
    graph = odometry_chain_initialization(graph)
    return SyntheticPoseGraph(graph, rot, trans)
