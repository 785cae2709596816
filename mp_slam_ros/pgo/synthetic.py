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
