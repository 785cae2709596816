"""The synthetic room: geometry (room planes and boxes on the floor) and procedural textures.

World frame (ROS convention): x and y horizontal, z up, origin on the floor at the room centre.
The room is the axis-aligned box ``ROOM_MIN``..``ROOM_MAX`` (10 m x 8 m x 3 m) seen from inside;
the boxes are axis-aligned and stand on the floor along the walls, clear of every path in
:mod:`mp_slam_ros.sim.trajectories`.

Textures are what the visual front end feeds on, so they imitate what real rooms offer: a
multi-octave value-noise base (smooth shading at many scales) with rectangles, discs, stripe
patches and "posters" (framed random checkerboards and text-like lines) scattered over it at
sizes from 2 cm to 1 m. The strong straight edges and their crossings give Shi-Tomasi corners at
every viewing distance; the randomness gives every region of every surface its own look, which
ORB bag-of-words loop closure relies on. ``texture='repeated'`` instead tiles one pattern
(period :data:`REPEAT_PERIOD_M` along the walls, floor and ceiling), so different places look
alike and appearance alone proposes wrong loops.

Every surface texture is stored with a mip pyramid (2x2 box filter per level) so the renderer can
prefilter distant and grazing surfaces instead of aliasing them.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

__all__ = [
    "BOXES",
    "REPEAT_PERIOD_M",
    "ROOM_MAX",
    "ROOM_MIN",
    "TEXTURE_MODES",
    "Scene",
    "make_scene",
]

ROOM_MIN = np.array([-5.0, -4.0, 0.0])
ROOM_MAX = np.array([5.0, 4.0, 3.0])

#: Boxes standing on the floor, rows (xmin, ymin, zmin, xmax, ymax, zmax) in metres. They stay
#: >= 1.2 m from the paths, and the stretch of the y = -4 wall between x = -2.6 and 2.8 is left
#: free so two views there can differ only by the texture.
BOXES = np.array(
    [
        [3.7, 2.7, 0.0, 4.7, 3.7, 1.1],
        [-4.6, 2.9, 0.0, -3.6, 3.8, 0.7],
        [-0.7, 3.3, 0.0, 0.5, 3.85, 1.6],
        [4.3, -1.2, 0.0, 4.85, 0.4, 0.9],
        [-4.8, -0.9, 0.0, -4.2, 0.6, 1.9],
        [2.8, -3.8, 0.0, 3.6, -3.2, 0.8],
        [-3.4, -3.7, 0.0, -2.6, -2.9, 1.3],
        [4.0, -3.7, 0.0, 4.7, -3.0, 0.5],
    ]
)

TEXTURE_MODES = ("unique", "repeated")

#: Tile period of ``texture='repeated'`` along walls, floor and ceiling (512 texels of 4 mm).
REPEAT_PERIOD_M = 2.048

#: Mip levels per texture; level k has texels 2**k times larger. Texture sizes are multiples of
#: 2**(NUM_LEVELS - 1) so every level halves exactly (which keeps tiles periodic).
NUM_LEVELS = 7

# Face table columns (one row per face; see Scene.faces).
F_TEX, F_UAXIS, F_VAXIS, F_U0, F_V0, F_SHADE, F_WRAP, F_AXIS = range(8)
FACE_COLUMNS = 8


def _face_shade(axis: int, normal_sign: int) -> float:
    # A fixed brightness per facing direction, as if lit from above and one side, so that the
    # faces of a box and the walls meeting in a corner differ.
    if axis == 2:
        return 0.95 if normal_sign > 0 else 0.62
    if axis == 0:
        return 0.88 if normal_sign > 0 else 0.74
    return 0.81 if normal_sign > 0 else 0.69


def _base_noise(rng: np.random.Generator, h: int, w: int, texel: float) -> np.ndarray:
    """Multi-octave value noise in [0, 255] (float32), wavelengths 1.6 m down to 2.5 cm.

    Built coarse to fine (upsample x2, add the next octave's lattice), which costs about one
    full-size interpolation instead of one per octave.
    """
    octaves = 7
    finest = 1.6 / 2 ** (octaves - 1) / texel  # lattice spacing of the finest octave, in texels
    gh = math.ceil(h / finest / 2 ** (octaves - 1)) + 3
    gw = math.ceil(w / finest / 2 ** (octaves - 1)) + 3
    acc = rng.standard_normal((gh, gw)).astype(np.float32)
    norm = 1.0
    for k in range(1, octaves):
        gh, gw = 2 * gh, 2 * gw
        acc = cv2.resize(acc, (gw, gh), interpolation=cv2.INTER_CUBIC)
        amp = 0.5 ** (0.35 * k)  # amplitude ~ wavelength**0.35: pink-ish, strong at every scale
        acc += amp * rng.standard_normal((gh, gw)).astype(np.float32)
        norm += amp * amp
    up = cv2.resize(acc, (round(gw * finest), round(gh * finest)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, max(1, up.shape[0] - h)))
    ox = int(rng.integers(0, max(1, up.shape[1] - w)))
    acc = up[oy : oy + h, ox : ox + w]
    mean = rng.uniform(95.0, 160.0)
    return np.clip(mean + 34.0 * acc / math.sqrt(norm), 0.0, 255.0)


def _contrasting_grey(rng: np.random.Generator, background: float) -> int:
    # At least 50 grey levels from the background, so the shape's corners are strong.
    while True:
        g = float(rng.uniform(0.0, 255.0))
        if abs(g - background) >= 50.0:
            return int(g)


def _rotated_rect(cx: float, cy: float, w: float, h: float, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    corners = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) * 0.5
    rot = corners @ np.array([[c, s], [-s, c]])
    return np.round((rot + np.array([cx, cy])) * 16.0).astype(np.int32)  # 4 fractional bits for cv2


def _draw_stripes(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, size: float, grey: float) -> None:
    """A patch of parallel bars of random widths (bar-code like), axis-aligned or rotated."""
    w = size * rng.uniform(0.8, 1.6)
    h = size * rng.uniform(0.5, 1.0)
    angle = 0.0 if rng.random() < 0.6 else rng.uniform(0.0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    x = -w / 2.0
    while x < w / 2.0:
        bar = max(2.0, rng.uniform(0.04, 0.14) * w)
        gap = max(2.0, rng.uniform(0.03, 0.12) * w)
        bw = min(bar, w / 2.0 - x)
        mx = x + bw / 2.0
        pts = _rotated_rect(cx + c * mx, cy + s * mx, bw, h, angle)
        cv2.fillConvexPoly(img, pts, _contrasting_grey(rng, grey), lineType=cv2.LINE_AA, shift=4)
        x += bar + gap


def _draw_poster(img: np.ndarray, rng: np.random.Generator, texel: float) -> None:
    """A framed axis-aligned rectangle of its own random content: a checkerboard or text lines."""
    h, w = img.shape
    pw = int(rng.uniform(0.3, 1.0) / texel)
    ph = int(rng.uniform(0.25, 0.8) / texel)
    if pw >= w - 4 or ph >= h - 4:
        return
    x0 = int(rng.integers(0, w - pw))
    y0 = int(rng.integers(0, h - ph))
    frame = max(2, int(rng.uniform(0.01, 0.03) / texel))
    cv2.rectangle(img, (x0, y0), (x0 + pw - 1, y0 + ph - 1), int(rng.uniform(0, 60)), thickness=-1)
    iw, ih = pw - 2 * frame, ph - 2 * frame
    if iw < 8 or ih < 8:
        return
    if rng.random() < 0.5:
        cell = rng.uniform(0.02, 0.08) / texel
        grid = rng.integers(0, 256, size=(max(1, int(ih / cell)), max(1, int(iw / cell)))).astype(np.uint8)
        content = cv2.resize(grid, (iw, ih), interpolation=cv2.INTER_NEAREST)
    else:
        paper = int(rng.uniform(170, 250))
        content = np.full((ih, iw), paper, np.uint8)
        line_h = max(3, int(rng.uniform(0.015, 0.04) / texel))
        y = line_h
        while y + line_h < ih:
            x = int(rng.uniform(0.5, 2.0) * line_h)
            while x < iw - line_h:
                word = int(rng.uniform(1.0, 6.0) * line_h)
                x1 = min(iw - line_h, x + word)
                cv2.rectangle(content, (x, y), (x1, y + line_h - 1), int(rng.uniform(0, 90)), thickness=-1)
                x = x1 + int(rng.uniform(0.5, 1.5) * line_h)
            y += int(line_h * rng.uniform(1.7, 2.6))
    img[y0 + frame : y0 + frame + ih, x0 + frame : x0 + frame + iw] = content


def procedural_texture(rng: np.random.Generator, h: int, w: int, texel: float, clutter: float = 1.0) -> np.ndarray:
    """A (h, w) uint8 texture of ``texel`` metres per texel; ``clutter`` scales the shape density."""
    base = _base_noise(rng, h, w, texel)
    img = np.round(base).astype(np.uint8)
    area = h * w * texel * texel
    # Shapes from large to small so small ones stay visible on top of large ones. The coverage
    # per size class keeps corners dense but leaves some plain noise between them.
    for size, coverage in ((0.6, 0.08), (0.3, 0.12), (0.15, 0.14), (0.08, 0.12), (0.04, 0.07), (0.02, 0.025)):
        count = rng.poisson(clutter * coverage * area / (size * size))
        for _ in range(count):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            sz = size * math.exp(rng.normal(0.0, 0.3)) / texel
            bg = float(base[min(h - 1, int(cy)), min(w - 1, int(cx))])
            kind = rng.random()
            if kind < 0.55:
                aspect = math.exp(rng.normal(0.0, 0.5))
                angle = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, math.pi)
                pts = _rotated_rect(cx, cy, sz * aspect, sz / aspect, angle)
                cv2.fillConvexPoly(img, pts, _contrasting_grey(rng, bg), lineType=cv2.LINE_AA, shift=4)
            elif kind < 0.8:
                axes = (int(sz * 8 * rng.uniform(0.5, 1.0)), int(sz * 8 * rng.uniform(0.5, 1.0)))
                cv2.ellipse(
                    img, (int(cx * 16), int(cy * 16)), axes, rng.uniform(0, 180), 0, 360,
                    _contrasting_grey(rng, bg), thickness=-1, lineType=cv2.LINE_AA, shift=4,
                )
            else:
                _draw_stripes(img, rng, cx, cy, sz, bg)
    # Posters last, so each stays a clean, distinctive landmark.
    for _ in range(rng.poisson(clutter * area / 2.5)):
        _draw_poster(img, rng, texel)
    return img


def _pad_size(n_texels: float) -> int:
    q = 1 << (NUM_LEVELS - 1)
    return max(q, math.ceil(n_texels / q) * q)


def _mip_pyramid(tex: np.ndarray) -> list[np.ndarray]:
    levels = [tex]
    for _ in range(1, NUM_LEVELS):
        prev = levels[-1].astype(np.float32)
        down = 0.25 * (prev[0::2, 0::2] + prev[1::2, 0::2] + prev[0::2, 1::2] + prev[1::2, 1::2])
        levels.append(np.round(down).astype(np.uint8))
    return levels


class Scene:
    """Room, boxes and packed textures, in the layout the numba renderer reads.

    ``faces`` has one row per face: the 6 room planes first (row ``2*axis + side``, side 0 the
    plane at ``ROOM_MIN[axis]``), then 6 rows per box (same order; the bottom faces are never
    hit from inside the room). Columns: texture id, u axis, v axis, u origin, v origin, shade,
    wrap flag, normal axis. ``tex_levels[t, l] = (offset, width, height)`` of level ``l`` of
    texture ``t`` inside the flat uint8 ``tex_data``.
    """

    def __init__(
        self,
        texture: str = "unique",
        seed: int = 0,
        texel_m: float = 0.004,
        boxes: np.ndarray | None = None,
    ) -> None:
        if texture not in TEXTURE_MODES:
            raise ValueError(f"Scene: texture {texture!r} is not one of {TEXTURE_MODES}")
        self.texture = texture
        self.seed = seed
        self.texel_m = float(texel_m)
        self.room_min = ROOM_MIN.copy()
        self.room_max = ROOM_MAX.copy()
        self.boxes = np.array(BOXES if boxes is None else boxes, dtype=np.float64).reshape(-1, 6)
        self.repeat_period_m = REPEAT_PERIOD_M if texture == "repeated" else None
        self._build(np.random.default_rng(seed))

    @property
    def size_m(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.room_max - self.room_min)

    def _build(self, rng: np.random.Generator) -> None:
        texel = self.texel_m
        textures: list[np.ndarray] = []
        faces = np.zeros((6 + 6 * len(self.boxes), FACE_COLUMNS))
        shared: dict[str, int] = {}

        def add_texture(tex: np.ndarray) -> int:
            textures.append(tex)
            return len(textures) - 1

        def tile(kind: str, h_m: float) -> int:
            # One tile per surface kind in 'repeated' mode, reused by every face of that kind.
            if kind not in shared:
                n = round(REPEAT_PERIOD_M / texel)
                shared[kind] = add_texture(procedural_texture(rng, _pad_size(h_m / texel), _pad_size(n), texel))
            return shared[kind]

        def fill_face(row: int, lo: np.ndarray, hi: np.ndarray, axis: int, normal_sign: int, kind: str) -> None:
            u_axis, v_axis = [(1, 2), (0, 2), (0, 1)][axis]
            u_ext, v_ext = hi[u_axis] - lo[u_axis], hi[v_axis] - lo[v_axis]
            if self.texture == "repeated":
                # Wall tiles span the full height; the others are square, as high as boxes get.
                tile_h = self.room_max[2] - self.room_min[2] if kind == "wall" else REPEAT_PERIOD_M
                tex_id, wrap = tile(kind, tile_h), 1.0
            else:
                h, w = _pad_size(v_ext / texel), _pad_size(u_ext / texel)
                clutter = 0.8 if kind == "ceiling" else 1.0
                tex_id, wrap = add_texture(procedural_texture(rng, h, w, texel, clutter)), 0.0
            # Wrapped tiles are anchored at the room corner so a shift by the period repeats
            # exactly; unique textures start at the face's own corner.
            u0 = self.room_min[u_axis] if wrap else lo[u_axis]
            v0 = self.room_min[v_axis] if wrap else lo[v_axis]
            faces[row] = (tex_id, u_axis, v_axis, u0, v0, _face_shade(axis, normal_sign), wrap, axis)

        lo, hi = self.room_min, self.room_max
        for axis in range(3):
            for side in range(2):
                kind = "wall" if axis < 2 else ("floor" if side == 0 else "ceiling")
                # The room is seen from inside: the min plane faces +axis.
                fill_face(2 * axis + side, lo, hi, axis, +1 if side == 0 else -1, kind)
        for b, box in enumerate(self.boxes):
            blo, bhi = box[:3], box[3:]
            for axis in range(3):
                for side in range(2):
                    row = 6 + 6 * b + 2 * axis + side
                    if axis == 2 and side == 0:
                        faces[row] = faces[4]  # bottom face: on the floor, never visible
                        continue
                    fill_face(row, blo, bhi, axis, -1 if side == 0 else +1, "box")

        tex_levels = np.zeros((len(textures), NUM_LEVELS, 3), np.int64)
        chunks = []
        offset = 0
        for t, tex in enumerate(textures):
            for lev, img in enumerate(_mip_pyramid(tex)):
                tex_levels[t, lev] = (offset, img.shape[1], img.shape[0])
                chunks.append(img.ravel())
                offset += img.size
        self.faces = faces
        self.tex_levels = tex_levels
        self.tex_data = np.concatenate(chunks)
        self.textures = textures  # level-0 images, for inspection

    def distance_to_surfaces(self, points: np.ndarray) -> np.ndarray:
        """Distance (N,) from points inside the room to the nearest room plane or box surface.

        Points inside a box get 0 (they are "on" it as far as clearance checks go).
        """
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        d = np.minimum(p - self.room_min, self.room_max - p).min(axis=1)
        for box in self.boxes:
            outside = np.maximum(np.maximum(box[:3] - p, p - box[3:]), 0.0)
            d = np.minimum(d, np.linalg.norm(outside, axis=1))
        return d


@functools.lru_cache(maxsize=4)
def make_scene(texture: str = "unique", seed: int = 0, texel_m: float = 0.004) -> Scene:
    """The standard room (cached: textures take about a second to generate)."""
    return Scene(texture=texture, seed=seed, texel_m=texel_m)
