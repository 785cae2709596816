"""Hand-built keyframes for the loop-closure tests: a camera turning in a ring of landmarks.

The camera yaws about +y in place, ``per_lap`` keyframes a lap; the VO poses drift a little
(0.05° and 2 mm / 1 mm a keyframe), so a loop closure has something to correct.  Each keyframe sees
the landmarks in front of it with 5 mm point noise, 0.3 px pixel noise and one flipped descriptor
bit per observation.  Also the vocabulary trained on the first lap.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mp_slam_ros.loop.vocabulary import BinaryVocabulary
from mp_slam_ros.vision.types import Keyframe, PinholeCamera

NS = 1_000_000_000
#: Keyframe ids start here: not 0, so code that confuses ids and indices fails.
FIRST_ID = 1000


def yaw(angle: float) -> np.ndarray:
    """A 4x4 rotation by ``angle`` about +y."""
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.array([0.0, angle, 0.0]))[0]
    return T


@dataclass
class Ring:
    camera: PinholeCamera
    keyframes: list[Keyframe]
    truth: list[np.ndarray]
    vocabulary: BinaryVocabulary
    per_lap: int


def ring_keyframes(landmarks: int, per_lap: int, count: int, seed: int = 0) -> Ring:
    """``count`` keyframes around a ring of ``landmarks`` landmarks (module doc)."""
    rng = np.random.default_rng(seed)
    camera = PinholeCamera(640, 480, 400.0, 400.0, 320.0, 240.0)
    angle, height, radius = (rng.uniform(0, 2 * np.pi, landmarks), rng.uniform(-1, 1, landmarks),
                             rng.uniform(3.5, 4.5, landmarks))
    points = np.stack([radius * np.sin(angle), height, radius * np.cos(angle)], axis=1)
    descriptors = rng.integers(0, 256, (landmarks, 32), dtype=np.uint8)
    truth = [yaw(2 * np.pi * k / per_lap) for k in range(count)]
    keyframes = []
    for k, T in enumerate(truth):
        drift = yaw(np.radians(0.05 * k))
        drift[:3, 3] = [0.002 * k, 0.0, 0.001 * k]
        P_cam = (points - T[:3, 3]) @ T[:3, :3]
        z = P_cam[:, 2]
        u = camera.fx * P_cam[:, 0] / np.maximum(z, 1e-9) + camera.cx
        v = camera.fy * P_cam[:, 1] / np.maximum(z, 1e-9) + camera.cy
        seen = np.nonzero((z > 0.5) & (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height))[0]
        d = descriptors[seen].copy()
        d[np.arange(len(seen)), rng.integers(0, 32, len(seen))] ^= np.uint8(1)  # a flipped bit per observation
        keyframes.append(Keyframe(
            keyframe_id=FIRST_ID + k, stamp_ns=(k + 1) * NS, T_odom_base=drift @ T, T_base_camera=np.eye(4),
            points=P_cam[seen] + rng.normal(0, 0.005, (len(seen), 3)),
            pixels=np.stack([u[seen], v[seen]], axis=1) + rng.normal(0, 0.3, (len(seen), 2)),
            descriptors=d, landmark_ids=seen, camera=camera,
        ))  # fmt: skip
    vocabulary = BinaryVocabulary.train([kf.descriptors for kf in keyframes[:per_lap]], branching=8, depth=2)
    return Ring(camera, keyframes, truth, vocabulary, per_lap)
