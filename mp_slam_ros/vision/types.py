"""Camera models, frames and sequences: the values the front end, the readers and the simulator share.

Everything here is plain numpy, with no OpenCV and no ROS, so readers (EuRoC folders, rosbag2),
the synthetic-sequence generator and the ROS node all produce the same objects.

Conventions
-----------
* Poses are 4x4 homogeneous float64 matrices ``T_a_b``: the pose of frame ``b`` in frame ``a``
  (it maps points from ``b`` coordinates to ``a`` coordinates).
* Camera frames follow the optical convention: x right, y down, z forward.
* Stamps are integer nanoseconds (``int``), as in ROS ``builtin_interfaces/Time`` and EuRoC.
* Depth images are float32 metres; 0 or NaN means "no depth".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DISTORTION_MODELS", "MODES", "Frame", "Keyframe", "PinholeCamera", "Sequence"]

#: Distortion models understood by the front end (ROS camera_info names).  ``plumb_bob`` is
#: OpenCV's k1 k2 p1 p2 [k3] (EuRoC's ``radial-tangential``); ``equidistant`` is OpenCV's fisheye
#: k1..k4.
DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")

#: Input modes of the visual odometry.
MODES = ("stereo", "rgbd")


@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera with optional lens distortion (ROS ``sensor_msgs/CameraInfo`` semantics).

    ``distortion`` empty or all zero means the images are already undistorted (rectified).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"PinholeCamera: image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"PinholeCamera: focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(
                f"PinholeCamera: distortion model {self.distortion_model!r} is not one of {DISTORTION_MODELS}"
            )
        object.__setattr__(self, "distortion", tuple(float(d) for d in self.distortion))

    @property
    def K(self) -> np.ndarray:
        """The 3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def intrinsics(self) -> np.ndarray:
        """``[fx, fy, cx, cy]`` as the bundle adjuster takes them."""
        return np.array([self.fx, self.fy, self.cx, self.cy])

    @property
    def is_distorted(self) -> bool:
        return any(d != 0.0 for d in self.distortion)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)``, OpenCV's order."""
        return (self.width, self.height)


@dataclass
class Frame:
    """One synchronised input frame.

    ``image`` is the left (stereo) or colour (RGB-D) image as 8-bit grey ``(H, W)``; ``right`` is
    the right image in stereo mode; ``depth`` is the registered depth in float32 metres in RGB-D
    mode.  Readers convert colour to grey and 16UC1 millimetres to metres.
    """

    stamp_ns: int
    image: np.ndarray
    right: np.ndarray | None = None
    depth: np.ndarray | None = None


@dataclass
class Sequence:
    """An input sequence: calibration, a re-iterable source of frames, and optional ground truth.

    ``frames`` is a zero-argument callable returning a fresh iterator, so a sequence can be
    replayed more than once without holding every image in memory.  ``T_base_camera`` is the pose
    of the (left / colour) camera in the robot's ``base_link`` (EuRoC: ``T_BS`` of cam0).
    ``T_left_right`` is the pose of the right camera in the left camera's frame (stereo only).
    ``ground_truth`` holds ``base_link`` poses in a world frame, as
    :class:`mp_slam_ros.io.trajectory.Trajectory`.

    ``base_frame`` / ``camera_frame`` name the two frames of ``T_base_camera`` (``camera_frame``
    is the images' ``header.frame_id``, "" when unknown) and ``T_base_camera_source`` says where
    the extrinsic came from ("" for "as constructed"; a reader that found none sets
    :data:`mp_slam_ros.io.frames.EXTRINSIC_ASSUMED`, so replay can warn instead of silently
    labelling the camera's pose as ``base_frame``).
    """

    mode: str
    camera: PinholeCamera
    frames: Callable[[], Iterator[Frame]]
    num_frames: int
    right_camera: PinholeCamera | None = None
    T_left_right: np.ndarray | None = None
    T_base_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    ground_truth: object | None = None  # mp_slam_ros.io.trajectory.Trajectory
    name: str = ""
    base_frame: str = "base_link"
    camera_frame: str = ""
    T_base_camera_source: str = ""
    # What the reader dropped or repaired (counts, e.g. images whose stamp repeats) and the
    # warnings it logged about it, so replay can put both in its report.
    input_counts: dict[str, int] = field(default_factory=dict)
    input_warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Sequence: mode {self.mode!r} is not one of {MODES}")
        if self.mode == "stereo" and (self.right_camera is None or self.T_left_right is None):
            raise ValueError("Sequence: stereo mode needs right_camera and T_left_right")
        self.T_base_camera = np.asarray(self.T_base_camera, dtype=np.float64).reshape(4, 4)
        if self.T_left_right is not None:
            self.T_left_right = np.asarray(self.T_left_right, dtype=np.float64).reshape(4, 4)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def __len__(self) -> int:
        return self.num_frames


@dataclass
class Keyframe:
    """What visual odometry hands to loop closure for one keyframe.

    ``T_odom_base`` is the keyframe's VO pose (``base_link`` in ``odom``) after window BA;
    ``T_base_camera`` the camera extrinsic, so the camera pose is ``T_odom_base @ T_base_camera``.
    Per feature (N rows): ``points`` are 3D positions in the *camera* frame (float32 metres),
    ``pixels`` their undistorted pixel coordinates (float32), ``descriptors`` 32-byte ORB
    descriptors (uint8, N x 32) and ``landmark_ids`` the front end's landmark ids (int64).
    """

    keyframe_id: int
    stamp_ns: int
    T_odom_base: np.ndarray
    T_base_camera: np.ndarray
    points: np.ndarray
    pixels: np.ndarray
    descriptors: np.ndarray
    landmark_ids: np.ndarray
    camera: PinholeCamera | None = None

    def __post_init__(self) -> None:
        n = len(self.points)
        self.T_odom_base = np.asarray(self.T_odom_base, dtype=np.float64).reshape(4, 4)
        self.T_base_camera = np.asarray(self.T_base_camera, dtype=np.float64).reshape(4, 4)
        self.points = np.asarray(self.points, dtype=np.float32).reshape(n, 3)
        self.pixels = np.asarray(self.pixels, dtype=np.float32).reshape(n, 2)
        self.descriptors = np.asarray(self.descriptors, dtype=np.uint8).reshape(n, 32)
        self.landmark_ids = np.asarray(self.landmark_ids, dtype=np.int64).reshape(n)

    @property
    def num_features(self) -> int:
        return len(self.points)

    @property
    def T_odom_camera(self) -> np.ndarray:
        return self.T_odom_base @ self.T_base_camera
