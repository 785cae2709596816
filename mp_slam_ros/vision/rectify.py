"""Rectification: raw stereo pairs and distorted RGB-D images to one ideal pinhole camera.

The rest of the front end and the bundle adjuster see only an undistorted pinhole camera (and,
in stereo, a rectified pair whose right camera sits ``baseline`` metres along the left camera's
x axis). This module computes that once from the calibration and applies it to every frame:
OpenCV remap tables are built once, so a 752x480 pair costs two ``cv2.remap`` calls per frame.

The rectified left camera is rotated against the physical one (``R_rect``, OpenCV's ``R1``); the
pipeline expresses poses in the rectified frame, so the camera extrinsic it reports back is
``T_base_camera @ T_camera_rect``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from .types import PinholeCamera

__all__ = ["RectifiedCamera", "Rectifier"]

log = logging.getLogger(__name__)

# A pair counts as already rectified when the right camera is translated along x only, up to
# these tolerances; the images are then used as they are (no remap, no resampling blur).
_RECTIFIED_ROTATION_TOL = 1e-6
_RECTIFIED_OFFAXIS_TOL = 1e-6


@dataclass(frozen=True)
class RectifiedCamera:
    """The ideal camera the pipeline works in.

    ``camera`` has no distortion; ``baseline`` is the rectified stereo baseline in metres (0 in
    RGB-D mode); ``T_camera_rect`` (4x4) is the pose of the rectified camera frame in the input
    (left / colour) camera frame: a pure rotation.
    """

    camera: PinholeCamera
    baseline: float
    T_camera_rect: np.ndarray


def _cv_distortion(camera: PinholeCamera) -> np.ndarray:
    """OpenCV's coefficient vector; k1 k2 p1 p2 padded with k3 = 0 (some OpenCV builds want 5+)."""
    d = np.asarray(camera.distortion, dtype=np.float64) if camera.is_distorted else np.zeros(5)
    if camera.distortion_model == "plumb_bob" and d.size < 5:
        d = np.concatenate([d, np.zeros(5 - d.size)])
    return d.reshape(1, -1)


class Rectifier:
    """Undistortion (RGB-D) or stereo rectification (stereo), fixed at construction.

    Args:
        camera: the left (stereo) or colour (RGB-D) camera as calibrated.
        right_camera, T_left_right: the right camera and its pose in the left camera's frame
            (stereo only).
    """

    def __init__(
        self,
        camera: PinholeCamera,
        right_camera: PinholeCamera | None = None,
        T_left_right: np.ndarray | None = None,
    ) -> None:
        self._maps_left: tuple[np.ndarray, np.ndarray] | None = None
        self._maps_right: tuple[np.ndarray, np.ndarray] | None = None
        if right_camera is None:
            self.rectified = self._undistort_only(camera)
        else:
            if T_left_right is None:
                raise ValueError(
                    "stereo rectification needs T_left_right, the right camera's pose in the left's frame"
                )
            self.rectified = self._stereo(camera, right_camera, np.asarray(T_left_right, dtype=np.float64))

    @property
    def passthrough(self) -> bool:
        """True when the input is used unchanged (already rectified / undistorted)."""
        return self._maps_left is None

    def _undistort_only(self, camera: PinholeCamera) -> RectifiedCamera:
        ideal = PinholeCamera(camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy)
        if camera.is_distorted:
            if camera.distortion_model == "equidistant":
                self._maps_left = cv2.fisheye.initUndistortRectifyMap(
                    camera.K, _cv_distortion(camera)[:, :4], np.eye(3), camera.K, camera.size, cv2.CV_16SC2
                )
            else:
                self._maps_left = cv2.initUndistortRectifyMap(
                    camera.K, _cv_distortion(camera), np.eye(3), camera.K, camera.size, cv2.CV_16SC2
                )
        return RectifiedCamera(ideal, 0.0, np.eye(4))

    def _stereo(self, left: PinholeCamera, right: PinholeCamera, T_lr: np.ndarray) -> RectifiedCamera:
        R_lr, t_lr = T_lr[:3, :3], T_lr[:3, 3]
        aligned = np.abs(R_lr - np.eye(3)).max() < _RECTIFIED_ROTATION_TOL
        on_axis = abs(t_lr[1]) < _RECTIFIED_OFFAXIS_TOL and abs(t_lr[2]) < _RECTIFIED_OFFAXIS_TOL
        same_k = np.allclose(left.K, right.K) and left.size == right.size
        if aligned and on_axis and same_k and not left.is_distorted and not right.is_distorted:
            if t_lr[0] <= 0.0:
                raise ValueError(f"the right camera must lie at +x of the left one, got x = {t_lr[0]:.4f} m")
            ideal = PinholeCamera(left.width, left.height, left.fx, left.fy, left.cx, left.cy)
            return RectifiedCamera(ideal, float(t_lr[0]), np.eye(4))
        if left.size != right.size:
            raise ValueError(f"stereo images differ in size: left {left.size}, right {right.size}")
        if "equidistant" in (left.distortion_model, right.distortion_model):
            raise ValueError(
                "raw stereo with the equidistant (fisheye) model is not supported; rectify upstream"
            )
        # OpenCV wants the transform taking left-camera points to right-camera points.
        T_rl = np.linalg.inv(T_lr)
        R1, R2, P1, P2, _, _, _ = cv2.stereoRectify(
            left.K, _cv_distortion(left), right.K, _cv_distortion(right), left.size,
            T_rl[:3, :3].copy(), T_rl[:3, 3].reshape(3, 1).copy(), flags=cv2.CALIB_ZERO_DISPARITY, alpha=0,
        )  # fmt: skip
        self._maps_left = cv2.initUndistortRectifyMap(
            left.K, _cv_distortion(left), R1, P1, left.size, cv2.CV_16SC2
        )
        self._maps_right = cv2.initUndistortRectifyMap(
            right.K, _cv_distortion(right), R2, P2, right.size, cv2.CV_16SC2
        )
        baseline = -P2[0, 3] / P2[0, 0]
        if not baseline > 0.0:
            raise ValueError(
                f"stereo rectification gave a non-positive baseline ({baseline:.4f} m): left/right swapped?"
            )
        ideal = PinholeCamera(left.width, left.height, P1[0, 0], P1[1, 1], P1[0, 2], P1[1, 2])
        T_camera_rect = np.eye(4)
        T_camera_rect[:3, :3] = R1.T  # R1 takes original-left coordinates to rectified ones
        log.info(
            "stereo rectification: fx %.2f fy %.2f cx %.2f cy %.2f, baseline %.4f m",
            ideal.fx, ideal.fy, ideal.cx, ideal.cy, baseline,
        )  # fmt: skip
        return RectifiedCamera(ideal, float(baseline), T_camera_rect)

    def left(self, image: np.ndarray) -> np.ndarray:
        if self._maps_left is None:
            return image
        return cv2.remap(image, *self._maps_left, cv2.INTER_LINEAR)

    def right(self, image: np.ndarray) -> np.ndarray:
        if self._maps_right is None:
            return image
        return cv2.remap(image, *self._maps_right, cv2.INTER_LINEAR)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """Undistort a registered depth image; nearest neighbour, so no depth is blended across edges."""
        if self._maps_left is None:
            return depth
        return cv2.remap(depth, *self._maps_left, cv2.INTER_NEAREST)
