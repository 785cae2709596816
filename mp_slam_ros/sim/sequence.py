"""Synthetic stereo / RGB-D sequences: the room, a path, a camera rig, sensor noise; frames on demand.

Frames are rendered when iterated (nothing is stored), so a full-length sequence costs memory for
one frame only. Noise comes from a numpy Generator seeded with ``(seed, frame index)``, so any
frame is bit-identical however and however often the sequence is replayed, and a different
``seed`` changes the noise but not the scene or the path.

Sensor models:

* Grey images: the rendered intensity plus Gaussian noise (``image_noise_sigma`` grey levels),
  rounded and saturated to uint8. Stereo pairs are rectified: the right camera has the same
  intrinsics, translated by +``baseline_m`` along the left camera's x axis.
* Depth (RGB-D): exact camera-z depth plus Gaussian noise of sigma ``depth_noise * z**2`` metres
  (structured-light / active-stereo sensors), rounded to millimetres as 16UC1 depth is, 0 beyond
  ``depth_max_m``, at a random ``depth_dropout`` fraction of pixels and at half the pixels on
  depth discontinuities (where real sensors lose the return).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..vision.types import MODES, Frame, PinholeCamera, Sequence
from .render import quantize_image, render_intensity
from .scene import BOXES, ROOM_MAX, ROOM_MIN, TEXTURE_MODES, Scene, make_scene
from .trajectories import CAMERA_HEIGHT_M, DEFAULT_START_NS, PATH_NAMES, T_BASE_CAMERA, get_path

__all__ = [
    "SEQUENCE_NAMES",
    "SyntheticFrames",
    "SyntheticSceneInfo",
    "default_camera",
    "make_sequence",
    "scene_info",
]

#: Sequence name stem per path; the mode (and "_repeated") is appended.
SEQUENCE_NAMES = {"two_lap_room": "room_two_laps", "figure_eight": "room_figure_eight", "straight": "room_straight"}

#: Relative depth jump between neighbours that counts as a discontinuity for depth dropout.
_DEPTH_EDGE_RATIO = 0.05


def default_camera(width: int = 640, height: int = 480) -> PinholeCamera:
    """The simulator's pinhole camera: fx = fy = 0.72 * width (about 70 deg across), centred."""
    f = 0.72 * width
    return PinholeCamera(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)


@dataclass(frozen=True)
class SyntheticSceneInfo:
    """Facts about the synthetic room and paths that targets and reports need.

    ``path_lengths_m`` / ``durations_s`` are for each path in full (``two_lap_room``: both laps);
    ``lap_periods_s`` is None for the non-looping ``straight``.
    """

    room_min: tuple[float, float, float]
    room_max: tuple[float, float, float]
    room_size_m: tuple[float, float, float]
    boxes: tuple[tuple[float, ...], ...]
    camera_height_m: float
    path_lengths_m: dict[str, float]
    durations_s: dict[str, float]
    lap_periods_s: dict[str, float | None]


def scene_info() -> SyntheticSceneInfo:
    """Room size, boxes and path lengths (computed from the path functions, no rendering)."""
    paths = {name: get_path(name) for name in PATH_NAMES}
    return SyntheticSceneInfo(
        room_min=tuple(float(v) for v in ROOM_MIN),
        room_max=tuple(float(v) for v in ROOM_MAX),
        room_size_m=tuple(float(v) for v in ROOM_MAX - ROOM_MIN),
        boxes=tuple(tuple(float(v) for v in b) for b in BOXES),
        camera_height_m=CAMERA_HEIGHT_M,
        path_lengths_m={name: p.length_m() for name, p in paths.items()},
        durations_s={name: p.duration_s for name, p in paths.items()},
        lap_periods_s={name: p.lap_period_s for name, p in paths.items()},
    )


class SyntheticFrames:
    """The ``frames`` callable of a synthetic :class:`Sequence`; also gives random access by index."""

    def __init__(
        self,
        scene: Scene | tuple[str, int],
        camera: PinholeCamera,
        stamps_ns: np.ndarray,
        T_world_camera: np.ndarray,
        mode: str,
        T_left_right: np.ndarray | None,
        seed: int,
        image_noise_sigma: float,
        depth_noise: float,
        depth_max_m: float,
        depth_dropout: float,
    ) -> None:
        # (texture, scene_seed) defers building the textures (about a second) to the first frame,
        # so sequences made only for their metadata or ground truth stay cheap.
        self._scene = scene
        self.camera = camera
        self.stamps_ns = np.asarray(stamps_ns, dtype=np.int64)
        self.T_world_camera = np.asarray(T_world_camera, dtype=np.float64)
        self.mode = mode
        self.T_left_right = T_left_right
        self.seed = seed
        self.image_noise_sigma = image_noise_sigma
        self.depth_noise = depth_noise
        self.depth_max_m = depth_max_m
        self.depth_dropout = depth_dropout

    @property
    def scene(self) -> Scene:
        if not isinstance(self._scene, Scene):
            self._scene = make_scene(*self._scene)
        return self._scene

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def __call__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self.frame(i)

    def _noisy_image(self, val: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.image_noise_sigma > 0:
            val = val + rng.normal(0.0, self.image_noise_sigma, val.shape).astype(np.float32)
        return quantize_image(val)

    def _noisy_depth(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        z = z.astype(np.float64)
        out = z + rng.standard_normal(z.shape) * (self.depth_noise * z * z) if self.depth_noise > 0 else z.copy()
        out = np.round(out * 1000.0) / 1000.0
        invalid = (z <= 0.0) | (z > self.depth_max_m) | (out <= 0.0)
        if self.depth_dropout > 0:
            invalid |= rng.random(z.shape) < self.depth_dropout
            edge = np.zeros(z.shape, bool)
            jump_x = np.abs(np.diff(z, axis=1)) > _DEPTH_EDGE_RATIO * np.minimum(z[:, 1:], z[:, :-1])
            jump_y = np.abs(np.diff(z, axis=0)) > _DEPTH_EDGE_RATIO * np.minimum(z[1:], z[:-1])
            edge[:, 1:] |= jump_x
            edge[:, :-1] |= jump_x
            edge[1:] |= jump_y
            edge[:-1] |= jump_y
            invalid |= edge & (rng.random(z.shape) < 0.5)
        out[invalid] = 0.0
        return out.astype(np.float32)

    def frame(self, i: int) -> Frame:
        """Frame ``i``, rendered now."""
        rng = np.random.default_rng([self.seed, i])
        T = self.T_world_camera[i]
        val, depth = render_intensity(self.scene, self.camera, T)
        stamp = int(self.stamps_ns[i])
        if self.mode == "stereo":
            val_r, _ = render_intensity(self.scene, self.camera, T @ self.T_left_right)
            left = self._noisy_image(val, rng)
            return Frame(stamp, left, right=self._noisy_image(val_r, rng))
        image = self._noisy_image(val, rng)
        return Frame(stamp, image, depth=self._noisy_depth(depth, rng))


def make_sequence(
    trajectory: str = "two_lap_room",
    mode: str = "stereo",
    width: int = 640,
    height: int = 480,
    rate_hz: float = 20.0,
    duration_s: float | None = None,
    baseline_m: float = 0.11,
    seed: int = 0,
    image_noise_sigma: float = 2.0,
    depth_noise: float = 1.5e-3,
    texture: str = "unique",
    *,
    depth_max_m: float = 8.0,
    depth_dropout: float = 0.01,
    laps: int | None = None,
    T_base_camera: np.ndarray | None = None,
    scene_seed: int = 0,
    start_ns: int = DEFAULT_START_NS,
) -> Sequence:
    """A synthetic sequence through the textured room, ground truth = base_link poses.

    ``trajectory`` is one of ``two_lap_room``, ``figure_eight``, ``straight``; ``duration_s`` None
    means the whole path. ``depth_noise`` is the coefficient k of sigma = k z^2 (0: exact depth,
    still mm-rounded). ``scene_seed`` picks the room's textures, ``seed`` the sensor noise.
    ``ground_truth`` is a :class:`mp_slam_ros.io.trajectory.Trajectory` of ``T_world_base``
    (``base_link``, REP-103: x forward, y left, z up); the camera pose is
    ``T_world_base @ T_base_camera`` (the left / colour optical frame, named as the bag writer
    names it, :data:`mp_slam_ros.io.rosbag.FRAME_IDS`).
    """
    if mode not in MODES:
        raise ValueError(f"make_sequence: mode {mode!r} is not one of {MODES}")
    if texture not in TEXTURE_MODES:
        raise ValueError(f"make_sequence: texture {texture!r} is not one of {TEXTURE_MODES}")
    path = get_path(trajectory, laps)
    gt = path.trajectory(rate_hz, duration_s, start_ns)
    T_bc = T_BASE_CAMERA.copy() if T_base_camera is None else np.asarray(T_base_camera, dtype=np.float64)
    camera = default_camera(width, height)
    T_left_right = None
    if mode == "stereo":
        T_left_right = np.eye(4)
        T_left_right[0, 3] = baseline_m
    frames = SyntheticFrames(
        scene=(texture, scene_seed),
        camera=camera,
        stamps_ns=gt.stamps_ns,
        T_world_camera=gt.poses @ T_bc,
        mode=mode,
        T_left_right=T_left_right,
        seed=seed,
        image_noise_sigma=image_noise_sigma,
        depth_noise=depth_noise,
        depth_max_m=depth_max_m,
        depth_dropout=depth_dropout,
    )
    name = f"{SEQUENCE_NAMES[trajectory]}_{mode}" + ("_repeated" if texture == "repeated" else "")
    return Sequence(
        mode=mode,
        camera=camera,
        frames=frames,
        num_frames=len(frames),
        right_camera=camera if mode == "stereo" else None,
        T_left_right=T_left_right,
        T_base_camera=T_bc,
        ground_truth=gt,
        name=name,
        base_frame="base_link",
        camera_frame="camera_left_optical_frame" if mode == "stereo" else "camera_color_optical_frame",
        T_base_camera_source="simulator",
    )
