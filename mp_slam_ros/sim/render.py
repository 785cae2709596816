"""Ray casting of the synthetic room: grey image and exact depth for a pinhole camera.

One ray per pixel centre (pixel ``(u, v)`` looks along ``((u - cx) / fx, (v - cy) / fy, 1)`` in
the camera frame, OpenCV's convention). The ray is scaled so its camera-z component is 1, so the
hit parameter ``t`` *is* the depth (camera z, not ray length). The room is a box seen from inside
(exit through the nearest of three planes) and each obstacle box is a slab test, so a pixel costs
a few divisions plus the texture lookup.

Textures are sampled trilinearly: bilinear within two mip levels chosen from the pixel's
footprint on the surface (depth / f, stretched by 1 / sqrt(cos incidence), the geometric mean of
the two footprint axes), so far and grazing surfaces are prefiltered instead of aliasing. Shading
is a fixed brightness per face orientation times a mild falloff with ray length, so faces meeting
in a corner differ and the picture is not flat.
"""

from __future__ import annotations

import math

import numpy as np

from ..solver.jit import jit
from ..vision.types import PinholeCamera
from .scene import F_AXIS, F_SHADE, F_TEX, F_U0, F_UAXIS, F_V0, F_VAXIS, F_WRAP, Scene

__all__ = ["quantize_image", "render_depth", "render_frame", "render_intensity"]

_INV_LN2 = 1.0 / math.log(2.0)


@jit(fastmath=False, inline="always")
def _bilinear(tex_data, tex_levels, tid, lev, u, v, texel, wrap):
    off = tex_levels[tid, lev, 0]
    w = tex_levels[tid, lev, 1]
    h = tex_levels[tid, lev, 2]
    scale = 1.0 / (texel * (1 << lev))
    # Texel centres sit at (i + 0.5) texels.
    x = u * scale - 0.5
    y = v * scale - 0.5
    fx0 = math.floor(x)
    fy0 = math.floor(y)
    ax = x - fx0
    ay = y - fy0
    x0 = int(fx0)
    y0 = int(fy0)
    x1 = x0 + 1
    y1 = y0 + 1
    # Only the texels at the border need wrapping or clamping.
    if x0 < 0 or y0 < 0 or x1 >= w or y1 >= h:
        if wrap:
            x0 %= w
            x1 %= w
            y0 %= h
            y1 %= h
        else:
            x0 = min(max(x0, 0), w - 1)
            x1 = min(max(x1, 0), w - 1)
            y0 = min(max(y0, 0), h - 1)
            y1 = min(max(y1, 0), h - 1)
    r0 = off + y0 * w
    r1 = off + y1 * w
    a = float(tex_data[r0 + x0])
    b = float(tex_data[r0 + x1])
    c = float(tex_data[r1 + x0])
    d = float(tex_data[r1 + x1])
    return (1.0 - ay) * ((1.0 - ax) * a + ax * b) + ay * ((1.0 - ax) * c + ax * d)


@jit(fastmath=False)
def _render_kernel(
    R, o, fx, fy, cx, cy, room_min, room_max, boxes, box_rects, faces, tex_data, tex_levels, texel, out_val, out_depth
):
    height, width = out_depth.shape
    nb = boxes.shape[0]
    max_lev = tex_levels.shape[1] - 1
    f_mean = math.sqrt(fx * fy)
    inv_texel = 1.0 / texel
    # Room planes and box slabs relative to the camera centre, so a hit is one multiply.
    room_lo = room_min - o
    room_hi = room_max - o
    rel = np.empty((nb, 6))
    for b in range(nb):
        for k in range(3):
            rel[b, k] = boxes[b, k] - o[k]
            rel[b, 3 + k] = boxes[b, 3 + k] - o[k]
    dvec = np.empty(3)
    inv = np.empty(3)
    for i in range(height):
        yn = (i - cy) / fy
        for j in range(width):
            xn = (j - cx) / fx
            d0 = R[0, 0] * xn + R[0, 1] * yn + R[0, 2]
            d1 = R[1, 0] * xn + R[1, 1] * yn + R[1, 2]
            d2 = R[2, 0] * xn + R[2, 1] * yn + R[2, 2]
            dvec[0], dvec[1], dvec[2] = d0, d1, d2
            t_best = np.inf
            face = -1
            for k in range(3):
                dk = dvec[k]
                # 1/0 = inf makes the slab tests below handle axis-parallel rays.
                inv[k] = 1.0 / dk if dk != 0.0 else np.inf
                if dk > 0.0:
                    tk = room_hi[k] * inv[k]
                    side = 1
                elif dk < 0.0:
                    tk = room_lo[k] * inv[k]
                    side = 0
                else:
                    continue
                if tk < t_best:
                    t_best = tk
                    face = 2 * k + side
            for b in range(nb):
                if j < box_rects[b, 0] or j > box_rects[b, 1] or i < box_rects[b, 2] or i > box_rects[b, 3]:
                    continue
                tmin = -np.inf
                tmax = np.inf
                enter = -1
                miss = False
                for k in range(3):
                    if dvec[k] != 0.0:
                        t1 = rel[b, k] * inv[k]
                        t2 = rel[b, 3 + k] * inv[k]
                        side = 0
                        if t1 > t2:
                            t1, t2 = t2, t1
                            side = 1
                        if t1 > tmin:
                            tmin = t1
                            enter = 2 * k + side
                        if t2 < tmax:
                            tmax = t2
                    elif rel[b, k] > 0.0 or rel[b, 3 + k] < 0.0:
                        miss = True
                        break
                if not miss and enter >= 0 and tmin <= tmax and tmin > 0.0 and tmin < t_best:
                    t_best = tmin
                    face = 6 + 6 * b + enter
            if face < 0:
                out_depth[i, j] = 0.0
                out_val[i, j] = 0.0
                continue
            t = t_best
            ua = int(faces[face, F_UAXIS])
            va = int(faces[face, F_VAXIS])
            axis = int(faces[face, F_AXIS])
            u = o[ua] + t * dvec[ua] - faces[face, F_U0]
            v = o[va] + t * dvec[va] - faces[face, F_V0]
            norm_d = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
            cos_inc = max(abs(dvec[axis]) / norm_d, 1e-3)
            footprint = t / (f_mean * math.sqrt(cos_inc))
            lev_f = math.log(max(footprint * inv_texel, 1e-12)) * _INV_LN2  # numba < 0.60 has no math.log2
            lev_f = min(max(lev_f, 0.0), float(max_lev))
            lev0 = min(int(lev_f), max_lev - 1)
            frac = lev_f - lev0
            tid = int(faces[face, F_TEX])
            wrap = faces[face, F_WRAP] != 0.0
            albedo = _bilinear(tex_data, tex_levels, tid, lev0, u, v, texel, wrap)
            if frac > 0.0:
                coarse = _bilinear(tex_data, tex_levels, tid, lev0 + 1, u, v, texel, wrap)
                albedo = (1.0 - frac) * albedo + frac * coarse
            ray_len = t * norm_d
            falloff = 0.7 + 0.3 / (1.0 + (ray_len * 0.25) ** 2)
            out_val[i, j] = albedo * faces[face, F_SHADE] * falloff
            out_depth[i, j] = t


def _box_rects(boxes: np.ndarray, R: np.ndarray, o: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Inclusive pixel rectangles (u0, u1, v0, v1) that can see each box; empty when behind the camera.

    A box wholly in front projects inside the hull of its projected corners; one straddling the
    image plane gets the whole image (rare, and only costs time).
    """
    rects = np.empty((len(boxes), 4), np.int64)
    idx = np.array([[0, 1, 2], [3, 1, 2], [0, 4, 2], [3, 4, 2], [0, 1, 5], [3, 1, 5], [0, 4, 5], [3, 4, 5]])
    for b, box in enumerate(boxes):
        corners = box[idx]  # (8, 3) world
        pc = (corners - o) @ R  # camera frame: R^T (p - o)
        z = pc[:, 2]
        if np.all(z <= 1e-6):
            rects[b] = (1, 0, 1, 0)
        elif np.any(z <= 1e-6):
            rects[b] = (0, camera.width - 1, 0, camera.height - 1)
        else:
            u = camera.fx * pc[:, 0] / z + camera.cx
            v = camera.fy * pc[:, 1] / z + camera.cy
            rects[b] = (
                max(0, math.floor(u.min()) - 1),
                min(camera.width - 1, math.ceil(u.max()) + 1),
                max(0, math.floor(v.min()) - 1),
                min(camera.height - 1, math.ceil(v.max()) + 1),
            )
    return rects


def render_intensity(scene: Scene, camera: PinholeCamera, T_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free intensity (float32, grey levels, not rounded) and depth (float32 metres)."""
    if camera.is_distorted:
        raise ValueError("render: only undistorted (rectified) cameras are supported")
    T = np.ascontiguousarray(T_world_camera, dtype=np.float64).reshape(4, 4)
    o = np.ascontiguousarray(T[:3, 3])
    if np.any(o <= scene.room_min) or np.any(o >= scene.room_max):
        raise ValueError(f"render: camera position {o} is outside the room")
    val = np.empty((camera.height, camera.width), np.float32)
    depth = np.empty((camera.height, camera.width), np.float32)
    R = np.ascontiguousarray(T[:3, :3])
    _render_kernel(
        R, o, float(camera.fx), float(camera.fy), float(camera.cx), float(camera.cy),
        scene.room_min, scene.room_max, scene.boxes, _box_rects(scene.boxes, R, o, camera), scene.faces,
        scene.tex_data, scene.tex_levels,
        scene.texel_m, val, depth,
    )
    return val, depth


def render_frame(scene: Scene, camera: PinholeCamera, T_world_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Render one noise-free view: grey image (uint8, HxW) and exact depth (float32 metres, camera z)."""
    val, depth = render_intensity(scene, camera, T_world_camera)
    return quantize_image(val), depth


def render_depth(scene: Scene, camera: PinholeCamera, T_world_camera: np.ndarray) -> np.ndarray:
    """Exact depth only (float32 metres); the texture lookup is the cheap part, so this is a convenience."""
    return render_intensity(scene, camera, T_world_camera)[1]


def quantize_image(val: np.ndarray) -> np.ndarray:
    """Round grey levels to uint8 with saturation."""
    return np.clip(np.rint(val), 0.0, 255.0).astype(np.uint8)
