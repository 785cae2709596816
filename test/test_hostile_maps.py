"""Hostile input for loop closure: bad keyframes, damaged maps, interrupted saves, bad vocabularies.

Every case must end as a clear error (the documented exception naming the file and field, or a
``(False, message)`` service answer) or a loud, counted recovery, and never damage a map that was
already there: the running one (keyframes, loops, poses) nor the files on disk (byte for byte).

The map is a small real one: hand-built keyframes of a camera turning on the spot among landmarks
on a cylinder, two laps with a little odometry drift, run through :class:`LoopClosure` so the
second lap closes loops. Each case corrupts one field of a copy of its files.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from ring_keyframes import ring_keyframes

from mp_slam_ros.cli import main
from mp_slam_ros.io.errors import InputFormatError
from mp_slam_ros.io.ros_messages import keyframe_to_messages, make_pose_stamped, rosbags_factory
from mp_slam_ros.loop.config import LoopClosureConfig
from mp_slam_ros.loop.pipeline import GRAPH_FILE, KEYFRAMES_FILE, LoopClosure, MapFileError
from mp_slam_ros.loop.vocabulary import BinaryVocabulary
from mp_slam_ros.ros.loop_closure_core import LoopClosureDiagnostics, LoopClosureRunner
from mp_slam_ros.vision.types import Keyframe, PinholeCamera

NS = 1_000_000_000
CONFIG = LoopClosureConfig(exclude_recent_keyframes=5, exclude_recent_seconds=0.5, precision="fp64")
RUNNER_VALUES = {"exclude_recent_keyframes": 5, "exclude_recent_seconds": 0.5, "precision": "fp64"}
NO_PICKLE_ADVICE = "allow_pickle"
#: A pid no process can have (Linux caps pids at 2**22): the saver that left the copy is gone.
DEAD_PID = 2**22 + 17


def _keyframes() -> tuple[list[Keyframe], BinaryVocabulary]:
    ring = ring_keyframes(landmarks=500, per_lap=12, count=20)
    return ring.keyframes, ring.vocabulary


@pytest.fixture(scope="module")
def scene() -> tuple[list[Keyframe], BinaryVocabulary]:
    return _keyframes()


@pytest.fixture(scope="module")
def running(scene) -> LoopClosure:
    """The running map every load attempt must leave as it is (it holds loops to lose)."""
    keyframes, vocabulary = scene
    lc = LoopClosure(CONFIG, vocabulary=vocabulary)
    for kf in keyframes:
        lc.add_keyframe(kf)
    assert len(lc.loops) >= 2, "the scene must close loops for the map cases to mean anything"
    return lc


@pytest.fixture(scope="module")
def pristine(running, tmp_path_factory) -> Path:
    """A valid saved map (never modified: cases corrupt copies)."""
    return running.save_map(tmp_path_factory.mktemp("pristine") / "map")


@pytest.fixture(scope="module")
def runner(running) -> LoopClosureRunner:
    return LoopClosureRunner(RUNNER_VALUES, rosbags_factory(), loop_closure=running)


def _state(lc: LoopClosure) -> tuple:
    ids, stamps, poses = lc.corrected_poses()
    return (
        lc.num_keyframes,
        len(lc.loops),
        list(lc._loop_index),
        ids.tolist(),
        stamps.tolist(),
        poses.tobytes(),
        lc.T_map_odom.tobytes(),
        len(lc.database),
    )


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Damaged maps: one field per case
# ---------------------------------------------------------------------------------------------

Arrays = dict[str, np.ndarray]


def _set(name: str, value: Callable[[Arrays], np.ndarray]) -> Callable[[Arrays], None]:
    def change(a: Arrays) -> None:
        a[name] = value(a)

    return change


def _row(name: str, row: int, value: Callable[[np.ndarray], np.ndarray]) -> Callable[[Arrays], None]:
    def change(a: Arrays) -> None:
        arr = a[name].copy()
        arr[row] = value(arr[row])
        a[name] = arr

    return change


def _negative_count(a: Arrays) -> None:
    counts = a["num_features"].copy()
    counts[1] += counts[0] + 3  # the total stays right: only the sign is wrong
    counts[0] = -3
    a["num_features"] = counts


def _reflection(T: np.ndarray) -> np.ndarray:
    T = T.copy()
    T[:3, 0] *= -1
    return T


def _zero_rotation(T: np.ndarray) -> np.ndarray:
    T = T.copy()
    T[:3, :3] = 0.0
    return T


def _nan_first(x: np.ndarray) -> np.ndarray:
    x = x.astype(x.dtype, copy=True)
    x.flat[0] = np.nan
    return x


# (case id, change to keyframes.npz, field named, words in the message)
NPZ_CASES: list[tuple[str, Callable[[Arrays], None], str, str]] = [
    ("loop_index_float", _set("loop_index", lambda a: a["loop_index"].astype(np.float64)), "loop_index",
     "expected integers"),
    ("loop_index_out_of_range", _row("loop_index", 0, lambda r: np.array([0, 99])), "loop_index", "outside [0, 20)"),
    ("loop_index_backwards", _row("loop_index", 0, lambda r: r[::-1]), "loop_index", "older keyframe"),
    ("descriptors_float", _set("descriptors", lambda a: a["descriptors"].astype(np.float32)), "descriptors",
     "expected uint8"),
    ("keyframe_id_float", _set("keyframe_id", lambda a: a["keyframe_id"].astype(np.float64)), "keyframe_id",
     "expected integers"),
    ("keyframe_id_beyond_int64", _set("keyframe_id", lambda a: np.array([2**64 - 1, *a["keyframe_id"][1:]], np.uint64)),
     "keyframe_id", "int64"),
    ("keyframe_id_repeated", _row("keyframe_id", 1, lambda r: 1000), "keyframe_id", "repeat"),
    ("stamps_out_of_order", _row("stamp_ns", 3, lambda r: 0), "stamp_ns", "row 3 (keyframe id 1003)"),
    ("num_features_negative", _negative_count, "num_features", "negative count -3"),
    ("num_features_inconsistent", _row("num_features", 0, lambda r: r + 1), "points", "rows for"),
    ("points_nan", _row("points", 0, _nan_first), "points",
     "non-finite values at row 0 (a feature of keyframe id 1000)"),
    ("pixels_inf", _row("pixels", 5, lambda r: np.full_like(r, np.inf)), "pixels", "non-finite"),
    ("camera_nan_cx", _row("camera", 2, lambda r: np.where(np.arange(6) == 4, np.nan, r)), "camera",
     "non-finite values at row 2 (keyframe id 1002)"),
    ("camera_zero_width", _row("camera", 0, lambda r: np.where(np.arange(6) == 0, 0.0, r)), "camera",
     "positive integers"),
    ("camera_fractional_height", _row("camera", 0, lambda r: np.where(np.arange(6) == 1, 479.5, r)), "camera",
     "positive integers"),
    ("T_odom_base_zero_rotation", _row("T_odom_base", 4, _zero_rotation), "T_odom_base",
     "keyframe id 1004): rotation block is not a rotation"),
    ("T_odom_base_reflection", _row("T_odom_base", 4, _reflection), "T_odom_base", "determinant -1"),
    ("T_base_camera_bad_last_row", _row("T_base_camera", 0, lambda T: T * 2.0), "T_base_camera", "last row"),
    ("loop_T_zero_rotation", _row("loop_T_match_query", 0, _zero_rotation), "loop_T_match_query", "not a rotation"),
    ("T_map_odom_nan", _set("T_map_odom", lambda a: _nan_first(a["T_map_odom"])), "T_map_odom", "non-finite"),
    ("T_map_odom_scaled", _set("T_map_odom", lambda a: np.diag([2.0, 2.0, 2.0, 1.0])), "T_map_odom",
     "not a rotation"),
    ("landmark_ids_below_minus_one", _row("landmark_ids", 0, lambda r: -5), "landmark_ids", "-5 < -1"),
    ("loop_inliers_above_matches", _row("loop_inliers", 0, lambda r: np.array([50, 10])), "loop_inliers",
     "inliers <= matches"),
    ("loop_inliers_negative", _row("loop_inliers", 0, lambda r: np.array([-1, 10])), "loop_inliers",
     "inliers <= matches"),
    ("format_from_the_future", _set("format", lambda a: np.array(2)), "format", "version 2, expected 1"),
    ("format_float", _set("format", lambda a: np.array(1.0)), "format", "expected integers"),
    ("points_missing", lambda a: a.pop("points"), "points", "missing"),
    ("pickled_object_array", _set("stamp_ns", lambda a: np.array([{"x": 1}], dtype=object)), "stamp_ns",
     "pickled Python objects"),
]  # fmt: skip


def _damaged_copy(pristine: Path, tmp_path: Path) -> Path:
    path = tmp_path / "map"
    shutil.copytree(pristine, path)
    return path


def _assert_refused(
    lc: LoopClosure, runner: LoopClosureRunner, path: Path, file: str, field: str | None, words: str
) -> None:
    """The load raises MapFileError (file, field, words), the service answers False, nothing changes."""
    state, files = _state(lc), _files(path.parent)
    with pytest.raises(MapFileError) as err:
        lc.load_map(path)
    text = str(err.value)
    assert err.value.path is not None and Path(err.value.path).name == file, text
    assert err.value.field == field, text
    assert words in text and NO_PICKLE_ADVICE not in text, text
    ok, message = runner.load_map(str(path))
    assert not ok and file in message and words in message and "unchanged" in message, message
    assert NO_PICKLE_ADVICE not in message
    assert _state(lc) == state
    assert _files(path.parent) == files


@pytest.mark.parametrize(("change", "field", "words"), [c[1:] for c in NPZ_CASES], ids=[c[0] for c in NPZ_CASES])
def test_damaged_keyframes_npz_is_refused_and_nothing_changes(
    running, runner, pristine, tmp_path, change, field, words
):
    path = _damaged_copy(pristine, tmp_path)
    with np.load(path / KEYFRAMES_FILE) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    with open(path / KEYFRAMES_FILE, "wb") as f:
        np.savez(f, **arrays)
    _assert_refused(running, runner, path, KEYFRAMES_FILE, field, words)


# (case id, bytes of keyframes.npz, words)
GARBAGE_CASES = [
    ("text", b"this is not an archive at all", "not an .npz archive"),
    ("pickle", b"\x80\x04\x95garbage that numpy would offer to unpickle", "not an .npz archive"),
    ("empty", b"", "not an .npz archive"),
    ("zip_header_then_garbage", b"PK\x03\x04" + b"\x00" * 40, "truncated or corrupt"),
]


@pytest.mark.parametrize(("content", "words"), [c[1:] for c in GARBAGE_CASES], ids=[c[0] for c in GARBAGE_CASES])
def test_garbage_keyframes_npz_never_suggests_unpickling(running, runner, pristine, tmp_path, content, words):
    path = _damaged_copy(pristine, tmp_path)
    (path / KEYFRAMES_FILE).write_bytes(content)
    _assert_refused(running, runner, path, KEYFRAMES_FILE, None, words)


def _se2_graph(path: Path) -> None:
    lines = ["VERTEX_SE2 1000 0 0 0", "VERTEX_SE2 1001 1 0 0",
             "EDGE_SE2 1000 1001 1 0 0 1 0 0 1 0 1"]  # fmt: skip
    (path / GRAPH_FILE).write_text("\n".join(lines) + "\n")


def _graph_line(path: Path, replace: Callable[[list[str]], list[str]]) -> None:
    lines = (path / GRAPH_FILE).read_text().splitlines()
    (path / GRAPH_FILE).write_text("\n".join(replace(lines)) + "\n")


def _vertex_nan(lines: list[str]) -> list[str]:
    i = next(k for k, ln in enumerate(lines) if ln.startswith("VERTEX_SE3:QUAT 1003 "))
    parts = lines[i].split()
    parts[2] = "nan"
    lines[i] = " ".join(parts)
    return lines


VERTEX_1005 = "VERTEX_SE3:QUAT 1005 "
GRAPH_CASES = [
    ("se2_graph", _se2_graph, "VERTEX_SE2", "2D (SE(2))"),
    ("vertex_nan", lambda p: _graph_line(p, _vertex_nan), "x", "non-finite"),
    ("vertex_missing", lambda p: _graph_line(p, lambda ls: [ln for ln in ls if not ln.startswith(VERTEX_1005)]),
     "i", "unknown vertex id 1005"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "field", "words"), [c[1:] for c in GRAPH_CASES], ids=[c[0] for c in GRAPH_CASES])
def test_damaged_pose_graph_is_refused_and_nothing_changes(running, runner, pristine, tmp_path, damage, field, words):
    path = _damaged_copy(pristine, tmp_path)
    damage(path)
    _assert_refused(running, runner, path, GRAPH_FILE, field, words)


def test_any_failure_inside_load_is_a_service_answer(running, runner, pristine, monkeypatch):
    """Not only MapFileError: whatever breaks while loading, the service answers and the map stays."""
    state = _state(running)

    def broken(descriptors):
        raise RuntimeError("vocabulary exploded")

    monkeypatch.setattr(running.vocabulary, "transform", broken)
    ok, message = runner.load_map(str(pristine))
    assert not ok and "RuntimeError: vocabulary exploded" in message and "unchanged" in message, message
    assert _state(running) == state


def test_the_pristine_map_loads(scene, pristine, running):
    """The control: the undamaged copy loads back whole (so the cases above fail for their damage)."""
    other = LoopClosure(CONFIG, vocabulary=scene[1])
    other.load_map(pristine)
    assert (other.num_keyframes, len(other.loops)) == (running.num_keyframes, len(running.loops))
    assert other._loop_index == running._loop_index


# ---------------------------------------------------------------------------------------------
# Saving: never write what would not load back
# ---------------------------------------------------------------------------------------------


def _bad_points(kf: Keyframe) -> Keyframe:
    points = kf.points.copy()
    points[3, 1] = np.nan
    return dataclasses.replace(kf, points=points)


def _bad_camera(kf: Keyframe) -> Keyframe:
    return dataclasses.replace(kf, camera=PinholeCamera(640, 480, 400.0, 400.0, float("nan"), 240.0))


def _bad_extrinsic(kf: Keyframe) -> Keyframe:
    return dataclasses.replace(kf, T_base_camera=np.diag([1.0, 1.0, -1.0, 1.0]))


SAVE_CASES = [
    ("nan_point", _bad_points, "field 'points': holds non-finite values at row"),
    ("nan_intrinsic", _bad_camera, "field 'camera': holds non-finite values at row 2 (keyframe id 1002)"),
    ("reflected_extrinsic", _bad_extrinsic, "field 'T_base_camera': row 2 (keyframe id 1002): rotation block has "
     "determinant -1"),
]  # fmt: skip


@pytest.mark.parametrize(("spoil", "words"), [c[1:] for c in SAVE_CASES], ids=[c[0] for c in SAVE_CASES])
def test_a_map_that_would_not_load_back_is_not_saved(scene, pristine, tmp_path, spoil, words):
    keyframes, vocabulary = scene
    path = _damaged_copy(pristine, tmp_path)  # an earlier, good map at the target
    before = _files(tmp_path)
    lc = LoopClosure(CONFIG, vocabulary=vocabulary)
    for kf in keyframes[:4]:
        lc.add_keyframe(kf)
    # Spoiled in place after it was added (add_keyframe refuses non-finite keyframes itself): the
    # save check is the last line of defence, whatever got into the map.
    lc.keyframes[2] = spoil(lc.keyframes[2])
    with pytest.raises(ValueError, match="would not load back") as err:
        lc.save_map(path)
    assert words in str(err.value) and KEYFRAMES_FILE in str(err.value), str(err.value)
    run = LoopClosureRunner(RUNNER_VALUES, rosbags_factory(), loop_closure=lc)
    ok, message = run.save_map(str(path))
    assert not ok and words in message and str(path) in message, message
    assert _files(tmp_path) == before  # the old map is intact, no temporary left behind
    LoopClosure(CONFIG, vocabulary=vocabulary).load_map(path)


@pytest.mark.parametrize("spoil", [_bad_points, lambda kf: dataclasses.replace(
    kf, T_odom_base=np.where(np.eye(4, dtype=bool), np.inf, kf.T_odom_base))], ids=["nan_point", "inf_pose"])
def test_the_pipeline_refuses_a_non_finite_keyframe_and_keeps_its_map(scene, spoil):
    keyframes, vocabulary = scene
    lc = LoopClosure(CONFIG, vocabulary=vocabulary)
    for kf in keyframes[:2]:
        lc.add_keyframe(kf)
    with pytest.raises(ValueError, match=f"keyframe {keyframes[2].keyframe_id}: field '.*' holds non-finite"):
        lc.add_keyframe(spoil(keyframes[2]))
    assert lc.num_keyframes == 2
    lc.add_keyframe(keyframes[3])  # and goes on
    assert lc.num_keyframes == 3


# ---------------------------------------------------------------------------------------------
# Keyframes on arrival: rejected, counted, reported; the map unchanged
# ---------------------------------------------------------------------------------------------


def _nan_position(factory, kf, msgs):
    T = kf.T_odom_base.copy()
    pose = make_pose_stamped(factory, kf.stamp_ns, T, "odom")
    pose.pose.position.y = float("nan")
    return pose, msgs[1], msgs[2]


def _inf_position(factory, kf, msgs):
    pose = make_pose_stamped(factory, kf.stamp_ns, kf.T_odom_base, "odom")
    pose.pose.position.x = float("inf")
    return pose, msgs[1], msgs[2]


def _cloud_value(field_offset: int, value: float):
    def spoil(factory, kf, msgs):
        cloud = msgs[1]
        data = np.array(cloud.data, dtype=np.uint8)
        data[56 * 7 + field_offset : 56 * 7 + field_offset + 4] = np.frombuffer(np.float32(value).tobytes(), np.uint8)
        cloud.data = data
        return msgs[0], cloud, msgs[2]

    return spoil


def _info_value(name: str, index: int, value: float):
    def spoil(factory, kf, msgs):
        info = msgs[2]
        arr = np.array(getattr(info, name), dtype=np.float64)
        arr[index] = value
        setattr(info, name, arr)
        return msgs[0], msgs[1], info

    return spoil


def _stamp_mismatch(factory, kf, msgs):
    return make_pose_stamped(factory, kf.stamp_ns + 1, kf.T_odom_base, "odom"), msgs[1], msgs[2]


# (case id, spoil messages, field named in the rejection)
ARRIVAL_CASES = [
    ("nan_position", _nan_position, "field 'position'"),
    ("inf_position", _inf_position, "field 'position'"),
    ("nan_point_z", _cloud_value(8, np.nan), "field 'z': 1 of"),
    ("inf_pixel_u", _cloud_value(12, np.inf), "field 'u': 1 of"),
    ("nan_k_cx", _info_value("k", 2, np.nan), "field 'k': keyframe intrinsics"),
    ("nan_p_cy", _info_value("p", 6, np.nan), "field 'p': keyframe intrinsics"),
    ("inf_p_fx", _info_value("p", 0, np.inf), "field 'p'"),
    ("stamps_disagree", _stamp_mismatch, "stamp"),
]


@pytest.mark.parametrize(("spoil", "words"), [c[1:] for c in ARRIVAL_CASES], ids=[c[0] for c in ARRIVAL_CASES])
def test_a_bad_keyframe_is_rejected_counted_and_reported(scene, spoil, words):
    keyframes, vocabulary = scene
    factory = rosbags_factory()
    run = LoopClosureRunner(RUNNER_VALUES, factory, loop_closure=LoopClosure(CONFIG, vocabulary=vocabulary))
    diagnostics = LoopClosureDiagnostics(now=0.0)
    for kf in keyframes[:2]:
        diagnostics.record_received()
        diagnostics.record(run.process(keyframe_to_messages(factory, kf, "odom", "camera")))
    state = _state(run.lc)
    bad = keyframes[2]
    out = run.process(spoil(factory, bad, keyframe_to_messages(factory, bad, "odom", "camera")))
    diagnostics.record(out)
    assert out.result is None and out.path is None and words in out.rejected, out.rejected
    assert "rejected, not added to the map" in out.warnings[-1] and words in out.warnings[-1]
    assert run.rejected == 1 and _state(run.lc) == state
    report = diagnostics.report(run.stats, now=1.0)
    values = dict(report.values)
    assert report.level_name == "WARN" and "1 keyframe(s) rejected as invalid" in report.message, report.message
    assert values["keyframes rejected (invalid)"] == "1" and values["keyframes rejected in period"] == "1"
    # The map goes on: the next good keyframe is added and the path (every pose) is published.
    out = run.process(keyframe_to_messages(factory, keyframes[3], "odom", "camera"))
    assert out.result is not None and len(out.path.poses) == 3
    assert dict(diagnostics.report(run.stats, now=2.0).values)["keyframes rejected in period"] == "0"


# ---------------------------------------------------------------------------------------------
# Interrupted saves: the hidden full copy beside the map
# ---------------------------------------------------------------------------------------------


def _stale_copy(pristine: Path, root: Path, pid: int) -> Path:
    old = root / f".map.{pid}.old"
    shutil.copytree(pristine, old)
    return old


def test_a_stale_copy_is_removed_on_the_next_save(running, runner, pristine, tmp_path):
    path = _damaged_copy(pristine, tmp_path)
    old = _stale_copy(pristine, tmp_path, DEAD_PID)
    count = running.stats.stale_map_copies
    ok, message = runner.save_map(str(path))
    assert ok and "recovered 1 stale copy" in message, message
    assert sorted(os.listdir(tmp_path)) == ["map"] and not old.exists()
    assert running.stats.stale_map_copies == count + 1
    report = LoopClosureDiagnostics(now=0.0).report(runner.stats, now=1.0)
    assert dict(report.values)["stale map copies recovered"] == str(count + 1)
    assert "stale map copy(ies) of an interrupted save recovered" in report.message


def test_a_stale_copy_is_removed_on_load_and_a_live_savers_copy_is_kept(scene, pristine, tmp_path):
    path = _damaged_copy(pristine, tmp_path)
    _stale_copy(pristine, tmp_path, DEAD_PID)
    live = _stale_copy(pristine, tmp_path, os.getppid())  # another process, alive: maybe saving right now
    lc = LoopClosure(CONFIG, vocabulary=scene[1])
    lc.load_map(path)
    assert lc.stats.stale_map_copies == 1 and lc.num_keyframes == 20
    assert sorted(os.listdir(tmp_path)) == sorted(["map", live.name])


def test_a_save_killed_between_its_renames_loses_nothing(scene, pristine, tmp_path):
    """Killed after moving the old map aside and before moving the new one in: only the copy is left."""
    _stale_copy(pristine, tmp_path, DEAD_PID)
    before = _files(tmp_path / f".map.{DEAD_PID}.old")
    lc = LoopClosure(CONFIG, vocabulary=scene[1])
    lc.load_map(tmp_path / "map")
    assert lc.num_keyframes == 20 and lc.stats.stale_map_copies == 1
    assert sorted(os.listdir(tmp_path)) == ["map"] and _files(tmp_path / "map") == before


# ---------------------------------------------------------------------------------------------
# Vocabularies and `mp-slam vocabulary train`
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"\x80\x04\x95 pickled", b"plain text", b""], ids=["pickle", "text", "empty"])
def test_garbage_vocabulary_is_a_clear_error(tmp_path, content):
    path = tmp_path / "voc.npz"
    path.write_bytes(content)
    with pytest.raises(InputFormatError) as err:
        BinaryVocabulary.load(path)
    assert err.value.path == str(path) and "not an .npz archive" in str(err.value)
    assert NO_PICKLE_ADVICE not in str(err.value)


def test_vocabulary_with_an_object_array_names_the_field(scene, tmp_path):
    arrays = scene[1].to_arrays()
    arrays["idf"] = np.array([{"x": 1}], dtype=object)
    path = tmp_path / "voc.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputFormatError) as err:
        BinaryVocabulary.load(path)
    assert err.value.field == "idf" and "pickled Python objects" in str(err.value)
    assert NO_PICKLE_ADVICE not in str(err.value)


def _train(tmp_path: Path, *extra: str, out: str | None = None) -> list[str]:
    return ["vocabulary", "train", "synthetic", "--out", out or str(tmp_path / "v.npz"), "--no-progress", *extra]


@pytest.mark.parametrize(
    ("extra", "out", "words"),
    [
        (("--branching", "1"), None, "--branching must be at least 2, got 1"),
        (("--depth", "0"), None, "--depth must be at least 1, got 0"),
        (("--max-features", "0"), None, "--max-features must be at least 1"),
        ((), "v.txt", "name the file *.npz"),
        ((), "missing_dir/v.npz", "does not exist"),
        ((), "a_directory.npz", "is a directory"),
    ],
    ids=["branching", "depth", "max_features", "extension", "no_dir", "out_is_dir"],
)
def test_vocabulary_train_checks_arguments_before_any_work(tmp_path, capsys, monkeypatch, extra, out, words):
    import mp_slam_ros.loop.vocabulary as vocabulary

    def no_work(*args, **kwargs):
        raise AssertionError("the arguments must be checked before any image is read")

    monkeypatch.setattr(vocabulary, "synthetic_training_sequences", no_work)
    (tmp_path / "a_directory.npz").mkdir()
    assert main(_train(tmp_path, *extra, out=None if out is None else str(tmp_path / out))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mp-slam: error:") and words in err and len(err.splitlines()) == 1, err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_vocabulary_train_refuses_an_unwritable_out_dir(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(_train(tmp_path, out=str(locked / "v.npz"))) == 2
    finally:
        locked.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


def test_vocabulary_train_names_the_inputs_without_descriptors(tmp_path, capsys, monkeypatch):
    import mp_slam_ros.loop.vocabulary as vocabulary

    monkeypatch.setattr(vocabulary, "synthetic_training_sequences", lambda: [object()])
    monkeypatch.setattr(vocabulary, "training_descriptors", lambda *a, **k: [np.zeros((0, 32), np.uint8)] * 3)
    assert main(_train(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "no ORB descriptors in the 3 training image(s) of synthetic" in err, err
    assert not (tmp_path / "v.npz").exists()
