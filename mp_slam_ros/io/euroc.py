"""EuRoC ASL folders: read them as :class:`~mp_slam_ros.vision.types.Sequence`, and write them.

Layout (``folder`` may be the sequence root holding ``mav0/`` or ``mav0/`` itself)::

    mav0/cam0/data.csv            #timestamp [ns],filename
    mav0/cam0/data/<ns>.png       8-bit grey
    mav0/cam0/sensor.yaml         T_BS (camera in body), resolution, intrinsics, distortion
    mav0/cam1/...                 right camera (stereo)
    mav0/depth0/...               16-bit PNG depth in millimetres registered to cam0 (RGB-D;
                                  written by :func:`write_euroc`, not part of the EuRoC release)
    mav0/state_groundtruth_estimate0/data.csv   body poses in the world (EuRoC state csv)

``sensor.yaml`` starts with OpenCV's ``%YAML:1.0`` directive, which PyYAML rejects; it is
stripped before parsing. ``radial-tangential`` distortion becomes ROS's ``plumb_bob``.

Frames are loaded lazily (one ``cv2.imread`` per image when the sequence is iterated); which
frames exist is decided up front: the stamps listed in both cameras' ``data.csv`` (stereo) or in
``cam0`` and ``depth0`` (RGB-D), and every listed image file must exist.

Ground truth is the body (``base_link``) pose in the world frame, as
:class:`~mp_slam_ros.io.trajectory.Trajectory`. Without an explicit path it is looked up in
``mav0/state_groundtruth_estimate0/data.csv``, then in a ``groundtruth*/`` folder beside
``mav0`` (a ``.csv`` in EuRoC state format preferred over a TUM ``.txt``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml

from mp_slam_ros.io.errors import InputFormatError
from mp_slam_ros.io.trajectory import Trajectory, read_euroc_groundtruth, read_tum, write_euroc_groundtruth
from mp_slam_ros.vision.types import Frame, PinholeCamera, Sequence

__all__ = ["find_groundtruth", "read_camera_yaml", "read_euroc", "read_image_list", "write_euroc"]

#: EuRoC / Kalibr distortion model names to ROS camera_info names, and back.
_DIST_TO_ROS = {
    "radial-tangential": "plumb_bob",
    "radtan": "plumb_bob",
    "plumb_bob": "plumb_bob",
    "equidistant": "equidistant",
    "rational-polynomial": "rational_polynomial",
    "rational_polynomial": "rational_polynomial",
}
_ROS_TO_DIST = {
    "plumb_bob": "radial-tangential",
    "equidistant": "equidistant",
    "rational_polynomial": "rational-polynomial",
}

_CSV_HEADER = "#timestamp [ns],filename\n"
_DEPTH_SCALE = 1000.0  # depth PNG units per metre (millimetres)


def _missing(what: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"EuRoC: {what} not found", os.fspath(path))


def _mav0(folder: str | os.PathLike) -> Path:
    root = Path(folder)
    if not root.is_dir():
        raise _missing("sequence folder", root)
    if (root / "mav0").is_dir():
        return root / "mav0"
    if (root / "cam0").is_dir():
        return root
    raise _missing("mav0/ folder (nor cam0/ directly)", root / "mav0")


# ---------------------------------------------------------------------- sensor.yaml
def _yaml_numbers(path: Path, field: str, value, count: int | None = None) -> list[float]:
    if isinstance(value, dict) and "data" in value:  # OpenCV matrix {rows, cols, data}
        value = value["data"]
    if not isinstance(value, list | tuple):
        raise InputFormatError(path, None, field, f"expected a list of numbers, got {value!r}")
    try:
        numbers = [float(v) for v in value]  # float() also takes '1e-05', which YAML 1.1 leaves a string
    except (TypeError, ValueError):
        raise InputFormatError(path, None, field, f"expected numbers, got {value!r}") from None
    if not all(np.isfinite(numbers)):
        raise InputFormatError(path, None, field, "non-finite value")
    if count is not None and len(numbers) != count:
        raise InputFormatError(path, None, field, f"expected {count} numbers, got {len(numbers)}")
    return numbers


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise _missing("sensor.yaml", path)
    text = path.read_text(encoding="utf-8")
    # OpenCV FileStorage writes a '%YAML:1.0' directive that PyYAML rejects; drop it.
    lines = text.splitlines()
    if lines and lines[0].lstrip().startswith("%YAML"):
        lines = lines[1:]
        if lines and lines[0].strip() == "---":
            lines = lines[1:]
    try:
        data = yaml.safe_load("\n".join(lines))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = None if mark is None else mark.line + 1 + (len(text.splitlines()) - len(lines))
        raise InputFormatError(path, line, None, f"invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise InputFormatError(path, None, None, "expected a YAML mapping")
    return data


def read_camera_yaml(path: str | os.PathLike) -> tuple[PinholeCamera, np.ndarray]:
    """``(camera, T_BS)`` from a EuRoC camera ``sensor.yaml`` (``T_BS``: camera pose in the body frame)."""
    path = Path(path)
    data = _load_yaml(path)
    for key in ("T_BS", "resolution", "intrinsics"):
        if key not in data:
            raise InputFormatError(path, None, key, "missing")
    T = np.asarray(_yaml_numbers(path, "T_BS", data["T_BS"], 16)).reshape(4, 4)
    if np.abs(T[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-9 or np.abs(T[:3, :3].T @ T[:3, :3] - np.eye(3)).max() > 1e-6:
        raise InputFormatError(path, None, "T_BS", "not a rigid transform")
    model = str(data.get("camera_model", "pinhole"))
    if model != "pinhole":
        raise InputFormatError(path, None, "camera_model", f"only 'pinhole' is supported, got '{model}'")
    width, height = _yaml_numbers(path, "resolution", data["resolution"], 2)
    fx, fy, cx, cy = _yaml_numbers(path, "intrinsics", data["intrinsics"], 4)
    dist_name = str(data.get("distortion_model", "radial-tangential"))
    if dist_name not in _DIST_TO_ROS:
        raise InputFormatError(path, None, "distortion_model", f"unsupported model '{dist_name}'")
    dist = _yaml_numbers(path, "distortion_coefficients", data.get("distortion_coefficients", []))
    if width != int(width) or height != int(height):
        raise InputFormatError(path, None, "resolution", f"expected integers, got {data['resolution']!r}")
    try:
        camera = PinholeCamera(int(width), int(height), fx, fy, cx, cy, tuple(dist), _DIST_TO_ROS[dist_name])
    except ValueError as err:
        raise InputFormatError(path, None, "intrinsics", str(err)) from None
    return camera, T


def _yaml_float(x: float) -> str:
    """repr() of a float, with a '.' in the mantissa so YAML 1.1 (PyYAML) reads it as a float."""
    r = repr(float(x))
    mantissa, _, exponent = r.partition("e")
    if "." not in mantissa and mantissa.lstrip("-").isdigit():
        mantissa += ".0"
    return mantissa + ("e" + exponent if exponent else "")


def _camera_yaml(camera: PinholeCamera, T_BS: np.ndarray, comment: str, sensor_type: str = "camera") -> str:
    T = np.asarray(T_BS, dtype=np.float64).reshape(4, 4)
    rows = ",\n         ".join(", ".join(_yaml_float(v) for v in row) for row in T)
    dist = ", ".join(_yaml_float(v) for v in camera.distortion)
    return (
        "%YAML:1.0\n"
        "# General sensor definitions.\n"
        f"sensor_type: {sensor_type}\n"
        f"comment: {comment}\n\n"
        "# Sensor extrinsics wrt. the body-frame.\n"
        "T_BS:\n  cols: 4\n  rows: 4\n"
        f"  data: [{rows}]\n\n"
        "# Camera specific definitions.\n"
        f"resolution: [{camera.width}, {camera.height}]\n"
        "camera_model: pinhole\n"
        f"intrinsics: [{', '.join(_yaml_float(v) for v in camera.intrinsics)}] #fu, fv, cu, cv\n"
        f"distortion_model: {_ROS_TO_DIST[camera.distortion_model]}\n"
        f"distortion_coefficients: [{dist}]\n"
    )


# ---------------------------------------------------------------------- data.csv
def read_image_list(csv_path: str | os.PathLike) -> dict[int, str]:
    """``{stamp_ns: filename}`` from a EuRoC camera ``data.csv`` (``#timestamp [ns],filename``)."""
    path = Path(csv_path)
    if not path.is_file():
        raise _missing("image list data.csv", path)
    out: dict[int, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            tokens = [t.strip() for t in text.split(",")]
            if len(tokens) != 2:
                field = "filename" if len(tokens) < 2 else None
                reason = f"expected 2 columns (timestamp,filename), got {len(tokens)}"
                raise InputFormatError(path, lineno, field, reason)
            try:
                stamp = int(tokens[0])
            except ValueError:
                raise InputFormatError(path, lineno, "timestamp", f"expected integer ns, got '{tokens[0]}'") from None
            if not tokens[1]:
                raise InputFormatError(path, lineno, "filename", "empty file name")
            if stamp in out:
                raise InputFormatError(path, lineno, "timestamp", f"stamp {stamp} listed twice")
            out[stamp] = tokens[1]
    return out


def _write_image_list(path: Path, stamps: list[int]) -> None:
    path.write_text(_CSV_HEADER + "".join(f"{s},{s}.png\n" for s in stamps), encoding="utf-8")


# ---------------------------------------------------------------------- ground truth
def find_groundtruth(folder: str | os.PathLike) -> Path | None:
    """The ground-truth file of a EuRoC folder, or None (see the module doc for the search order)."""
    mav0 = _mav0(folder)
    state = mav0 / "state_groundtruth_estimate0" / "data.csv"
    if state.is_file():
        return state
    candidates = []
    for d in sorted(mav0.parent.glob("groundtruth*")):
        if d.is_dir():
            candidates += sorted(d.glob("*.csv")) + sorted(d.glob("*.txt"))
    if not candidates:
        return None
    csvs = [c for c in candidates if c.suffix == ".csv"]
    return (csvs or candidates)[0]


def _read_groundtruth(path: Path) -> Trajectory:
    if not path.is_file():
        raise _missing("ground-truth file", path)
    if path.suffix.lower() == ".csv":
        return read_euroc_groundtruth(path)
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            text = raw.strip()
            if text and not text.startswith("#"):
                return read_euroc_groundtruth(path) if "," in text else read_tum(path)
    return read_tum(path)


# ---------------------------------------------------------------------- reading
def _read_grey(path: str) -> np.ndarray:
    import cv2

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        if not os.path.isfile(path):
            raise _missing("image", Path(path))
        raise InputFormatError(path, None, None, "could not decode image")
    return image


def _read_depth(path: str) -> np.ndarray:
    import cv2

    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        if not os.path.isfile(path):
            raise _missing("depth image", Path(path))
        raise InputFormatError(path, None, None, "could not decode depth image")
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise InputFormatError(path, None, None, f"depth must be 16-bit single channel, got {raw.dtype} {raw.shape}")
    return raw.astype(np.float32) / np.float32(_DEPTH_SCALE)


def _image_paths(sensor: Path, listing: dict[int, str], stamps: list[int]) -> list[str]:
    paths = []
    for s in stamps:
        p = sensor / "data" / listing[s]
        if not p.is_file():
            raise _missing(f"image for stamp {s} listed in {sensor / 'data.csv'}", p)
        paths.append(os.fspath(p))
    return paths


def read_euroc(
    folder: str | os.PathLike,
    mode: str | None = "stereo",
    ground_truth: str | os.PathLike | bool | None = None,
) -> Sequence:
    """Read a EuRoC ASL folder as a lazy :class:`Sequence`.

    ``mode`` is ``"stereo"`` (cam0 + cam1), ``"rgbd"`` (cam0 + depth0) or None to pick ``"rgbd"``
    when ``mav0/depth0`` exists and ``mav0/cam1`` does not. ``ground_truth``: a file path (EuRoC
    state csv or TUM txt), None to auto-detect (see the module doc), False for none.
    """
    mav0 = _mav0(folder)
    if mode is None:
        mode = "rgbd" if (mav0 / "depth0").is_dir() and not (mav0 / "cam1").is_dir() else "stereo"
    if mode not in ("stereo", "rgbd"):
        raise ValueError(f"read_euroc: mode must be 'stereo', 'rgbd' or None, got {mode!r}")
    cam0 = mav0 / "cam0"
    other = mav0 / ("cam1" if mode == "stereo" else "depth0")
    for d in (cam0, other):
        if not d.is_dir():
            raise _missing(f"{d.name}/ folder (needed for mode '{mode}')", d)
    camera, T_BS0 = read_camera_yaml(cam0 / "sensor.yaml")
    right_camera = T_left_right = None
    if mode == "stereo":
        right_camera, T_BS1 = read_camera_yaml(other / "sensor.yaml")
        T_left_right = np.linalg.inv(T_BS0) @ T_BS1
    list0 = read_image_list(cam0 / "data.csv")
    list1 = read_image_list(other / "data.csv")
    stamps = sorted(set(list0) & set(list1))
    paths0 = _image_paths(cam0, list0, stamps)
    paths1 = _image_paths(other, list1, stamps)

    if mode == "stereo":

        def frames() -> Iterator[Frame]:
            for s, p0, p1 in zip(stamps, paths0, paths1, strict=True):
                yield Frame(stamp_ns=int(s), image=_read_grey(p0), right=_read_grey(p1))
    else:

        def frames() -> Iterator[Frame]:
            for s, p0, p1 in zip(stamps, paths0, paths1, strict=True):
                yield Frame(stamp_ns=int(s), image=_read_grey(p0), depth=_read_depth(p1))

    gt = None
    if ground_truth is not False and ground_truth is not True:
        gt_path = Path(ground_truth) if ground_truth is not None else find_groundtruth(mav0)
        if gt_path is not None:
            gt = _read_groundtruth(gt_path)
    elif ground_truth is True:
        gt_path = find_groundtruth(mav0)
        if gt_path is None:
            raise _missing("ground truth (state_groundtruth_estimate0/data.csv or groundtruth*/)", mav0)
        gt = _read_groundtruth(gt_path)

    name = mav0.parent.name if mav0.name == "mav0" else mav0.name
    return Sequence(
        mode=mode,
        camera=camera,
        frames=frames,
        num_frames=len(stamps),
        right_camera=right_camera,
        T_left_right=T_left_right,
        T_base_camera=T_BS0,
        ground_truth=gt,
        name=name,
        T_base_camera_source="EuRoC T_BS (cam0/sensor.yaml)",
    )


# ---------------------------------------------------------------------- writing
def _depth_to_png(depth: np.ndarray) -> np.ndarray:
    d = np.asarray(depth, dtype=np.float64)
    mm = np.rint(np.where(np.isfinite(d), d, 0.0) * _DEPTH_SCALE)
    # Negative or beyond-range depths cannot be stored; write them as "no depth" (0).
    mm[(mm < 0) | (mm > 65535)] = 0
    return mm.astype(np.uint16)


def _imwrite(path: Path, image: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(os.fspath(path), image):
        raise OSError(f"could not write image {path}")


def write_euroc(folder: str | os.PathLike, sequence: Sequence, progress: bool = False, overwrite: bool = False) -> Path:
    """Write ``sequence`` as a EuRoC folder ``folder/mav0/...``; returns ``folder``.

    Images become PNGs (grey 8-bit; RGB-D depth as 16-bit millimetres in ``mav0/depth0``, values
    rounded to the nearest mm, NaN / negative / > 65.535 m written as 0). The ground truth, if
    any, goes to ``mav0/state_groundtruth_estimate0/data.csv``. Everything is written into a
    temporary folder beside ``folder`` that is renamed into place at the end, so an interrupted
    write leaves nothing half-done; an existing ``folder`` is replaced only with ``overwrite``.
    """
    target = Path(folder)
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise FileExistsError(errno.EEXIST, "EuRoC: output folder exists (pass overwrite=True)", os.fspath(target))
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        _write_tree(tmp / "mav0", sequence, progress)
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise FileExistsError(errno.EEXIST, "EuRoC: output folder appeared while writing", os.fspath(target))
            old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        # mkdtemp made the folder 0700; give it the mode a plain mkdir would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(target, 0o777 & ~umask)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    return target


def _write_tree(mav0: Path, sequence: Sequence, progress: bool) -> None:
    if sequence.mode not in ("stereo", "rgbd"):
        raise ValueError(f"write_euroc: unsupported mode {sequence.mode!r}")
    cam0 = mav0 / "cam0"
    other = mav0 / ("cam1" if sequence.mode == "stereo" else "depth0")
    for d in (cam0 / "data", other / "data"):
        d.mkdir(parents=True)
    (cam0 / "sensor.yaml").write_text(
        _camera_yaml(sequence.camera, sequence.T_base_camera, "cam0 (left / colour)"), encoding="utf-8"
    )
    if sequence.mode == "stereo":
        T_BS1 = sequence.T_base_camera @ sequence.T_left_right
        (other / "sensor.yaml").write_text(_camera_yaml(sequence.right_camera, T_BS1, "cam1 (right)"), encoding="utf-8")
    else:
        (other / "sensor.yaml").write_text(
            _camera_yaml(sequence.camera, sequence.T_base_camera, "depth registered to cam0, 16-bit mm", "depth")
            + f"depth_scale: {_yaml_float(_DEPTH_SCALE)} # PNG units per metre\n",
            encoding="utf-8",
        )
    stamps: list[int] = []
    frames = iter(sequence)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(sequence), desc=f"write {mav0.parent.name or 'euroc'}", unit="frame")
    for frame in frames:
        s = int(frame.stamp_ns)
        if stamps and s <= stamps[-1]:
            raise ValueError(f"write_euroc: frame stamps must increase; {s} follows {stamps[-1]}")
        image = np.asarray(frame.image)
        if image.dtype != np.uint8:
            raise ValueError(f"write_euroc: frame {s}: image must be uint8, got {image.dtype}")
        _imwrite(cam0 / "data" / f"{s}.png", image)
        if sequence.mode == "stereo":
            if frame.right is None:
                raise ValueError(f"write_euroc: frame {s} has no right image (stereo sequence)")
            _imwrite(other / "data" / f"{s}.png", np.asarray(frame.right))
        else:
            if frame.depth is None:
                raise ValueError(f"write_euroc: frame {s} has no depth (RGB-D sequence)")
            _imwrite(other / "data" / f"{s}.png", _depth_to_png(frame.depth))
        stamps.append(s)
    _write_image_list(cam0 / "data.csv", stamps)
    _write_image_list(other / "data.csv", stamps)
    if sequence.ground_truth is not None:
        gt = sequence.ground_truth
        if not isinstance(gt, Trajectory):
            raise TypeError(f"write_euroc: ground_truth must be a Trajectory, got {type(gt).__name__}")
        gt_dir = mav0 / "state_groundtruth_estimate0"
        gt_dir.mkdir()
        write_euroc_groundtruth(gt_dir / "data.csv", gt)
