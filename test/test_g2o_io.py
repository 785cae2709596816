"""Tests for the pose-graph readers/writers (mp_slam_ros.io.g2o) and graph utilities."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mp_slam_ros.io import InputFormatError, read_pose_graph, write_g2o
from mp_slam_ros.pgo import (
    PoseGraph,
    information_condition_numbers,
    odometry_chain_initialization,
    project_information_psd,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    env = os.environ.get("MP_SLAM_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


def _pgo_dir() -> Path:
    data = _shared_data_dir()
    if data is None or not (data / "pgo").is_dir():
        pytest.skip("shared data directory not found; set MP_SLAM_SHARED_DATA to the shared/data directory")
    return data / "pgo"


def _pgo_files() -> list[str]:
    data = _shared_data_dir()
    if data is None:
        return []
    root = data / "pgo"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# From ../shared/data/SOURCES.md section 1: dim, poses, edges, has VERTEX lines, sequential edges.
# sphere_smallnoise.graph is not in that table; its counts come from counting its tags.
EXPECTED = {
    "se-sync/CSAIL.g2o": (2, 1045, 1172, False, 1044),
    "se-sync/MIT.g2o": (2, 808, 827, True, 807),
    "se-sync/intel.g2o": (2, 1728, 2512, True, 1727),
    "se-sync/manhattan.g2o": (2, 3500, 5453, False, 3499),
    "se-sync/city10000.g2o": (2, 10000, 20687, True, 9999),
    "se-sync/kitti_00.g2o": (2, 4541, 4677, False, 4540),
    "se-sync/kitti_02.g2o": (2, 4661, 4703, False, 4660),
    "se-sync/sphere2500.g2o": (3, 2500, 4949, True, 2499),
    "se-sync/torus3D.g2o": (3, 5000, 9048, True, 4999),
    "se-sync/smallGrid3D.g2o": (3, 125, 297, True, 124),
    "se-sync/tinyGrid3D.g2o": (3, 9, 11, True, 8),
    "dpgo/input_INTEL_g2o.g2o": (2, 1228, 1483, True, 1227),
    "dpgo/input_M3500_g2o.g2o": (2, 3500, 5453, True, 3499),
    "dpgo/kitti_06.g2o": (2, 1101, 1150, False, 1100),
    "dpgo/kitti_07.g2o": (2, 1101, 1106, False, 1100),
    "dpgo/kitti_08.g2o": (2, 4071, 4070, False, 4070),
    "dpgo/kitti_09.g2o": (2, 1591, 1592, False, 1590),
    "slambook/M3500a.g2o": (2, 3500, 5453, True, 3499),
    "slambook/M3500b.g2o": (2, 3500, 5453, True, None),
    "gtsam/sphere2500.txt": (3, 2500, 4949, False, None),
    "gtsam/sphere2500_groundtruth.txt": (3, 2500, 4949, False, None),
    "gtsam/w100.graph": (2, 100, 300, True, None),
    "gtsam/noisyToyGraph.txt": (2, 4, 5, True, None),
    "gtsam/optimizedNoisyToyGraph.txt": (2, 4, 5, True, None),
    "gtsam/orientationsNoisyToyGraph.txt": (2, 4, 5, True, None),
    "gtsam/pose2example.txt": (2, 11, 12, True, None),
    "gtsam/pose3example.txt": (3, 5, 6, True, None),
    "gtsam/pose3example-grid.txt": (3, 27, 44, True, None),
    "gtsam/pose3example-offdiagonal.txt": (3, 2, 1, True, None),
    "gtsam/pose3Localizationexample.txt": (3, 5, 4, True, None),
    "gtsam/Klaus3.g2o": (3, 3, 3, True, None),
    "gtsam/toyExample.g2o": (3, 5, 6, True, None),
    "gtsam/sphere_smallnoise.graph": (3, 2200, 8647, True, None),
}


def _write(tmp_path: Path, text: str, name: str = "graph.g2o") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _assert_graphs_equal(a: PoseGraph, b: PoseGraph, rotation_atol: float = 0.0) -> None:
    assert a.dim == b.dim
    assert a.has_initial_guess == b.has_initial_guess
    for name in ("ids", "fixed", "edge_i", "edge_j", "translations", "meas_translations", "information"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("rotations", "meas_rotations"):
        if rotation_atol == 0.0:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        else:
            np.testing.assert_allclose(
                getattr(a, name), getattr(b, name), rtol=0, atol=rotation_atol, err_msg=name
            )


# ---------------------------------------------------------------------------------------------
# real data


@pytest.mark.parametrize("rel", _pgo_files() or ["<no shared data>"])
def test_parse_shared_pose_graphs(rel: str) -> None:
    root = _pgo_dir()
    graph = read_pose_graph(root / rel)
    assert graph.source == str(root / rel)
    assert graph.num_poses > 0 and graph.num_edges > 0
    assert np.all(np.isfinite(graph.rotations)) and np.all(np.isfinite(graph.translations))
    rtr = np.einsum("nji,njk->nik", graph.rotations, graph.rotations)
    np.testing.assert_allclose(rtr, np.broadcast_to(np.eye(graph.dim), rtr.shape), atol=1e-9)
    np.testing.assert_array_equal(graph.information, np.swapaxes(graph.information, 1, 2))
    if rel in EXPECTED:
        dim, poses, edges, has_guess, seq = EXPECTED[rel]
        assert (graph.dim, graph.num_poses, graph.num_edges, graph.has_initial_guess) == (
            dim,
            poses,
            edges,
            has_guess,
        )
        if seq is not None:
            raw_i, raw_j = graph.ids[graph.edge_i], graph.ids[graph.edge_j]
            assert int(np.count_nonzero(np.abs(raw_i - raw_j) == 1)) == seq


def test_expected_table_covers_the_required_files() -> None:
    root = _pgo_dir()
    for rel in (
        "se-sync/intel.g2o",
        "se-sync/manhattan.g2o",
        "se-sync/city10000.g2o",
        "se-sync/sphere2500.g2o",
        "se-sync/torus3D.g2o",
        "gtsam/w100.graph",
        "gtsam/sphere2500.txt",
        "se-sync/CSAIL.g2o",
    ):
        assert rel in EXPECTED
        assert (root / rel).is_file(), rel


@pytest.mark.parametrize("rel", ["se-sync/city10000.g2o", "se-sync/torus3D.g2o"])
def test_large_files_parse_fast(rel: str) -> None:
    path = _pgo_dir() / rel
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        read_pose_graph(path)
        best = min(best, time.perf_counter() - start)
    assert best < 1.0, f"{rel} took {best:.3f} s"


def test_edge3_and_g2o_versions_of_sphere2500_agree() -> None:
    """EDGE3 (x y z roll pitch yaw) and EDGE_SE3:QUAT land in the same tangent order.

    The two files hold the same measurements (6 printed digits); both give translation
    information 10, in the last three slots of our rotation-first order. g2o's rotation block is
    ~4x larger because g2o measures rotation error with the quaternion vector part (half angle).
    """
    root = _pgo_dir()
    txt = read_pose_graph(root / "gtsam/sphere2500.txt")
    g2o = read_pose_graph(root / "se-sync/sphere2500.g2o")
    key = {(i, j): k for k, (i, j) in enumerate(zip(txt.edge_i.tolist(), txt.edge_j.tolist(), strict=True))}
    match = np.array([key[(i, j)] for i, j in zip(g2o.edge_i.tolist(), g2o.edge_j.tolist(), strict=True)])
    np.testing.assert_array_equal(txt.meas_translations[match], g2o.meas_translations)
    np.testing.assert_allclose(txt.meas_rotations[match], g2o.meas_rotations, atol=5e-6)
    np.testing.assert_array_equal(txt.information[:, 3:, 3:], np.broadcast_to(10 * np.eye(3), (4949, 3, 3)))
    np.testing.assert_array_equal(g2o.information[:, 3:, 3:], np.broadcast_to(10 * np.eye(3), (4949, 3, 3)))
    np.testing.assert_array_equal(txt.information[0].diagonal(), [100, 100, 25, 10, 10, 10])
    ratio = g2o.information[:, :3, :3].diagonal(axis1=1, axis2=2) / txt.information[match][
        :, :3, :3
    ].diagonal(axis1=1, axis2=2)
    assert ratio.min() > 3.5 and ratio.max() < 4.5
    # Chaining the EDGE3 odometry reproduces the g2o file's vertices: the rpy convention is right.
    np.testing.assert_allclose(txt.translations, g2o.translations, atol=2e-3)


def test_odometry_chain_reproduces_vertices_of_real_graph() -> None:
    graph = read_pose_graph(_pgo_dir() / "se-sync/sphere2500.g2o")
    chained = odometry_chain_initialization(graph)
    assert not chained.has_initial_guess
    np.testing.assert_allclose(chained.translations, graph.translations, atol=1e-3)
    np.testing.assert_allclose(chained.rotations, graph.rotations, atol=1e-5)


def test_toro_w100_information_and_equiv(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        graph = read_pose_graph(_pgo_dir() / "gtsam/w100.graph")
    assert "ignored 40 'EQUIV' line(s)" in caplog.text
    np.testing.assert_array_equal(graph.information, np.broadcast_to(np.eye(3), (300, 3, 3)))


def test_real_2d_graph_round_trips_exactly(tmp_path: Path) -> None:
    graph = read_pose_graph(_pgo_dir() / "se-sync/intel.g2o")
    out = tmp_path / "intel.g2o"
    write_g2o(graph, out)
    _assert_graphs_equal(read_pose_graph(out), graph)


# ---------------------------------------------------------------------------------------------
# information permutations and rotation conventions

# Upper-triangle value at (r, c) is 10*(r+1) + (c+1), so each slot is recognisable.
_G2O6_VALUES = " ".join(str(10 * (r + 1) + (c + 1)) for r in range(6) for c in range(r, 6))
# In our order (wx wy wz x y z) the g2o blocks (x y z | rx ry rz) swap places.
_OURS6 = np.array(
    [
        [44, 45, 46, 14, 24, 34],
        [45, 55, 56, 15, 25, 35],
        [46, 56, 66, 16, 26, 36],
        [14, 15, 16, 11, 12, 13],
        [24, 25, 26, 12, 22, 23],
        [34, 35, 36, 13, 23, 33],
    ],
    dtype=float,
)


def test_g2o_se3_information_permutation(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "VERTEX_SE3:QUAT 0 0 0 0 0 0 0 1\n"
        "VERTEX_SE3:QUAT 1 1 0 0 0 0 0 1\n"
        f"EDGE_SE3:QUAT 0 1 1 2 3 0 0 0 1 {_G2O6_VALUES}\n",
    )
    graph = read_pose_graph(path)
    assert graph.information.shape == (1, 6, 6)
    for a in range(6):
        for b in range(6):
            assert graph.information[0, a, b] == _OURS6[a, b], (a, b)
    np.testing.assert_array_equal(graph.meas_translations[0], [1, 2, 3])


def test_edge3_information_permutation(tmp_path: Path) -> None:
    path = _write(tmp_path, f"EDGE3 0 1 1 2 3 0 0 0 {_G2O6_VALUES}\n", "graph.txt")
    graph = read_pose_graph(path)
    for a in range(6):
        for b in range(6):
            assert graph.information[0, a, b] == _OURS6[a, b], (a, b)


def test_toro_edge2_information_order(tmp_path: Path) -> None:
    # I_xx=1 I_xy=2 I_yy=3 I_tt=4 I_xt=5 I_yt=6
    path = _write(tmp_path, "VERTEX2 0 0 0 0\nVERTEX2 1 1 0 0\nEDGE2 0 1 1 0 0 1 2 3 4 5 6\n", "w.graph")
    info = read_pose_graph(path).information[0]
    expected = [[1, 2, 5], [2, 3, 6], [5, 6, 4]]
    for a in range(3):
        for b in range(3):
            assert info[a, b] == expected[a][b], (a, b)


def test_g2o_se2_information_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "EDGE_SE2 0 1 1 0 0 1 2 3 4 5 6\n")
    info = read_pose_graph(path).information[0]
    expected = [[1, 2, 3], [2, 4, 5], [3, 5, 6]]
    for a in range(3):
        for b in range(3):
            assert info[a, b] == expected[a][b], (a, b)


def test_rotation_conventions_match_scipy(tmp_path: Path) -> None:
    q = np.array([0.1, -0.2, 0.3, 0.9])
    q /= np.linalg.norm(q)
    roll, pitch, yaw = 0.3, -0.2, 1.1
    path = _write(
        tmp_path,
        f"VERTEX3 0 0 0 0 0 0 0\nVERTEX3 1 1 2 3 {roll!r} {pitch!r} {yaw!r}\n"
        f"EDGE3 0 1 1 2 3 {roll!r} {pitch!r} {yaw!r} {_G2O6_VALUES}\n",
        "rpy.graph",
    )
    graph = read_pose_graph(path)
    expected = Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()  # Rz(yaw) Ry(pitch) Rx(roll)
    np.testing.assert_allclose(graph.rotations[1], expected, atol=1e-15)
    np.testing.assert_allclose(graph.meas_rotations[0], expected, atol=1e-15)

    qs = " ".join(map(repr, q.tolist()))
    path = _write(tmp_path, f"VERTEX_SE3:QUAT 0 0 0 0 {qs}\nEDGE_SE3:QUAT 0 0 0 0 0 {qs} {_G2O6_VALUES}\n")
    with pytest.raises(InputFormatError):  # self-loop; rotation checked on the vertex below
        read_pose_graph(path)
    path = _write(tmp_path, f"VERTEX_SE3:QUAT 7 0 0 0 {qs}\n")
    np.testing.assert_allclose(
        read_pose_graph(path).rotations[0], Rotation.from_quat(q).as_matrix(), atol=1e-15
    )

    path = _write(tmp_path, "VERTEX_SE2 0 1 2 0.5\n")
    r = read_pose_graph(path).rotations[0]
    np.testing.assert_allclose(r, [[math.cos(0.5), -math.sin(0.5)], [math.sin(0.5), math.cos(0.5)]], atol=0)


def test_slightly_non_unit_quaternion_is_renormalised(tmp_path: Path) -> None:
    path = _write(tmp_path, "VERTEX_SE3:QUAT 0 0 0 0 0 0 0.6 0.8005\n")
    r = read_pose_graph(path).rotations[0]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-15)
    np.testing.assert_allclose(r, Rotation.from_quat([0, 0, 0.6, 0.8005]).as_matrix(), atol=1e-15)


def test_fix_lines_and_comments(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "# a comment\n\nVERTEX_SE2 5 0 0 0\nVERTEX_SE2 3 1 0 0\n  # indented comment\n"
        "VERTEX_SE2 9 2 0 0\nFIX 5 9\nEDGE_SE2 3 5 1 0 0 1 0 0 1 0 1\nEDGE_SE2 5 9 1 0 0 1 0 0 1 0 1\n",
    )
    graph = read_pose_graph(path)
    np.testing.assert_array_equal(graph.ids, [3, 5, 9])  # sorted by id
    np.testing.assert_array_equal(graph.translations[:, 0], [1, 0, 2])
    np.testing.assert_array_equal(graph.fixed, [False, True, True])
    np.testing.assert_array_equal(graph.edge_i, [0, 1])
    np.testing.assert_array_equal(graph.edge_j, [1, 2])


def test_no_fix_line_marks_nothing(tmp_path: Path) -> None:
    graph = read_pose_graph(_write(tmp_path, "VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\n"))
    assert not graph.fixed.any()
    assert graph.num_edges == 0


def test_edge3_without_information_gets_identity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, "EDGE3 0 1 1 0 0 0 0 0\n", "g.graph")
    with caplog.at_level("WARNING"):
        graph = read_pose_graph(path)
    np.testing.assert_array_equal(graph.information[0], np.eye(6))
    assert "1 edge line(s) carry no information matrix" in caplog.text


# ---------------------------------------------------------------------------------------------
# malformed input: every case names path, line and field

SE3_V0 = "VERTEX_SE3:QUAT 0 0 0 0 0 0 0 1\n"
SE3_V1 = "VERTEX_SE3:QUAT 1 1 0 0 0 0 0 1\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        # truncated lines name the first missing field
        (SE3_V0 + SE3_V1 + "EDGE_SE3:QUAT 0 1 1 0 0 0 0 0\n", 3, "qw", "truncated"),
        ("VERTEX_SE2 0 0 0 0\nEDGE_SE2 0 0\nEDGE_SE2 0 1 1 0 0 1 0 0 1 0\n", 2, "x", "truncated"),
        ("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 0 0 0\nEDGE_SE2 0 1 1 0 0 1 0 0 1 0\n", 3, "I33", "truncated"),
        ("VERTEX_SE2 0 0 0\n", 1, "th", "truncated"),
        ("EDGE2 0 1 1 0 0 1 0 1 1\n", 1, "I_xt", "truncated"),
        (SE3_V0 + "VERTEX3 1 0 0 0 0 0\n", 2, "yaw", "truncated"),
        ("EDGE3 0 1 1 0 0 0 0 0 " + " ".join(["1"] * 20) + "\n", 1, "I66", "truncated"),
        ("EDGE3 0 1 1 0 0 0 0 0 1 0\n", 1, "I13", "truncated"),
        ("VERTEX_SE2 0 0 0 0\nFIX\n", 2, "id", "truncated"),
        # non-numeric tokens
        (
            "VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 0 0 0\nEDGE_SE2 0 1 1 abc 0 1 0 0 1 0 1\n",
            3,
            "y",
            "expected a number",
        ),
        ("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1.5 0 0 0\n", 2, "id", "expected an integer"),
        ("EDGE_SE2 0 x1 1 0 0 1 0 0 1 0 1\n", 1, "j", "expected an integer"),
        (SE3_V0 + "VERTEX_SE3:QUAT 1 0 0 0 0 0 0 1,0\n", 2, "qw", "expected a number"),
        ("VERTEX_SE2 0 0 0 0\nFIX zero\n", 2, "id", "expected an integer"),
        # non-finite values
        (
            "VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 0 0 0\nEDGE_SE2 0 1 1 0 0 1 0 0 nan 0 1\n",
            3,
            "I22",
            "non-finite",
        ),
        ("VERTEX_SE2 0 0 inf 0\n", 1, "y", "non-finite"),
        ("VERTEX3 0 0 0 0 0 -Infinity 0\n", 1, "pitch", "non-finite"),
        # non-unit quaternion
        (SE3_V0 + "VERTEX_SE3:QUAT 1 0 0 0 0 0 0 1.01\n", 2, "qw", "norm"),
        (SE3_V0 + SE3_V1 + f"EDGE_SE3:QUAT 0 1 1 0 0 0 0 0 0 {_G2O6_VALUES}\n", 3, "qw", "norm"),
        # graph structure
        (
            "VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 0 0 0\nEDGE_SE2 0 2 1 0 0 1 0 0 1 0 1\n",
            3,
            "j",
            "unknown vertex id 2",
        ),
        (
            "VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 0 0 0\nEDGE_SE2 7 1 1 0 0 1 0 0 1 0 1\n",
            3,
            "i",
            "unknown vertex id 7",
        ),
        ("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 0 0 0\nVERTEX_SE2 0 1 1 1\n", 3, "id", "duplicate vertex id 0"),
        ("VERTEX_SE2 0 0 0 0\nEDGE_SE2 0 0 1 0 0 1 0 0 1 0 1\n", 2, "j", "self-loop"),
        ("EDGE_SE2 3 3 1 0 0 1 0 0 1 0 1\n", 1, "j", "self-loop"),
        ("VERTEX_SE2 0 0 0 0\nFIX 4\n", 2, "id", "unknown vertex id 4"),
        # tags
        ("VERTEX_SE2 0 0 0 0\nVERTEX_XY 1 0 0\n", 2, "tag", "unknown tag 'VERTEX_XY'"),
        ("VERTEX_SE2 0 0 0 0\n" + SE3_V1, 2, "tag", "3D tag 'VERTEX_SE3:QUAT'"),
        ("EDGE3 0 1 1 0 0 0 0 0\nEDGE2 0 1 1 0 0 1 0 1 1 0 0\n", 2, "tag", "2D tag 'EDGE2'"),
        # extra values are an error too, so nothing is silently dropped
        ("VERTEX_SE2 0 0 0 0 99\n", 1, None, "extra value"),
    ],
)
def test_malformed_input(tmp_path: Path, text: str, line: int, field: str | None, reason: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InputFormatError) as info:
        read_pose_graph(path)
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), line, field), str(err)
    assert reason in str(err)
    assert str(err).startswith(f"{path}:{line}: ")
    assert isinstance(err, ValueError)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "# nothing here\n\n")
    with pytest.raises(InputFormatError) as info:
        read_pose_graph(path)
    assert (info.value.path, info.value.line, info.value.field) == (str(path), None, None)


def test_disconnected_graph_without_vertices_names_the_pose(tmp_path: Path) -> None:
    path = _write(tmp_path, "EDGE_SE2 0 1 1 0 0 1 0 0 1 0 1\nEDGE_SE2 5 6 1 0 0 1 0 0 1 0 1\n")
    with pytest.raises(InputFormatError) as info:
        read_pose_graph(path)
    assert info.value.path == str(path)
    assert "pose id 5 is not connected" in str(info.value)


def test_error_message_format() -> None:
    assert str(InputFormatError("a.g2o", 3, "qw", "bad")) == "a.g2o:3: field 'qw': bad"
    assert str(InputFormatError("a.g2o", None, None, "bad")) == "a.g2o: bad"
    assert str(InputFormatError("a.g2o", 4, None, "bad")) == "a.g2o:4: bad"
    assert str(InputFormatError(None, None, "x", "bad")) == "field 'x': bad"
    import pickle

    err = pickle.loads(pickle.dumps(InputFormatError("p", 1, "f", "r")))
    assert (err.path, err.line, err.field, err.reason) == ("p", 1, "f", "r")


# ---------------------------------------------------------------------------------------------
# writing


def _random_graph(dim: int, rng: np.random.Generator, n: int = 30, m: int = 60) -> PoseGraph:
    if dim == 2:
        ang = rng.uniform(-4, 4, n + m)  # includes angles outside [-pi, pi]
        rots = np.stack(
            [np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], 1
        )
    else:
        rots = Rotation.random(n + m, random_state=rng.integers(1 << 31)).as_matrix()
    k = 3 if dim == 2 else 6
    a = rng.normal(size=(m, k, k))
    ei = rng.integers(0, n, m)
    ej = (ei + rng.integers(1, n, m)) % n
    return PoseGraph(
        dim=dim,
        ids=np.arange(n) * 3 + 7,
        rotations=rots[:n],
        translations=rng.normal(size=(n, dim)) * 100,
        fixed=np.arange(n) % 7 == 2,
        edge_i=ei,
        edge_j=ej,
        meas_rotations=rots[n:],
        meas_translations=rng.normal(size=(m, dim)),
        information=a @ np.swapaxes(a, 1, 2) * 1e3,
    )


def test_round_trip_2d_is_exact(tmp_path: Path) -> None:
    graph = _random_graph(2, np.random.default_rng(1))
    # The reader builds rotations from angles, so read once to get representable matrices.
    write_g2o(graph, tmp_path / "a.g2o")
    once = read_pose_graph(tmp_path / "a.g2o")
    np.testing.assert_allclose(once.rotations, graph.rotations, atol=1e-15)
    write_g2o(once, tmp_path / "b.g2o")
    _assert_graphs_equal(read_pose_graph(tmp_path / "b.g2o"), once)
    assert sorted(os.listdir(tmp_path)) == ["a.g2o", "b.g2o"]  # no temp files left behind


def test_round_trip_3d(tmp_path: Path) -> None:
    """Everything but rotations is bit-exact; rotations pass through quaternions, a few ulps."""
    graph = _random_graph(3, np.random.default_rng(2))
    write_g2o(graph, tmp_path / "a.g2o")
    once = read_pose_graph(tmp_path / "a.g2o")
    _assert_graphs_equal(once, graph, rotation_atol=4e-15)
    write_g2o(once, tmp_path / "b.g2o")
    _assert_graphs_equal(read_pose_graph(tmp_path / "b.g2o"), once, rotation_atol=4e-15)


def test_round_trip_without_vertices(tmp_path: Path) -> None:
    path = _write(tmp_path, "EDGE_SE2 0 1 1 0 0.3 1 0 0 1 0 1\nEDGE_SE2 1 2 1 0 -2.5 1 0 0 1 0 1\n", "in.g2o")
    graph = read_pose_graph(path)
    write_g2o(graph, tmp_path / "out.g2o", write_vertices=False)
    assert "VERTEX" not in (tmp_path / "out.g2o").read_text()
    _assert_graphs_equal(read_pose_graph(tmp_path / "out.g2o"), graph)


def test_written_information_is_in_g2o_order(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        SE3_V0 + SE3_V1 + f"EDGE_SE3:QUAT 0 1 1 2 3 0 0 0 1 {_G2O6_VALUES}\n",
    )
    write_g2o(read_pose_graph(path), tmp_path / "out.g2o")
    edge = next(ln for ln in (tmp_path / "out.g2o").read_text().splitlines() if ln.startswith("EDGE")).split()
    assert [float(v) for v in edge[10:]] == [float(v) for v in _G2O6_VALUES.split()]


def test_write_replaces_existing_file_and_rejects_non_finite(tmp_path: Path) -> None:
    graph = _random_graph(2, np.random.default_rng(3))
    target = tmp_path / "g.g2o"
    target.write_text("old contents\n")
    os.chmod(target, 0o644)
    write_g2o(graph, target)
    assert target.read_text().startswith("VERTEX_SE2 7 ")
    assert (os.stat(target).st_mode & 0o777) == 0o644
    bad = dataclasses.replace(
        graph, translations=np.where(np.arange(30)[:, None] == 4, np.nan, graph.translations)
    )
    with pytest.raises(ValueError, match="non-finite"):
        write_g2o(bad, target)
    assert target.read_text().startswith("VERTEX_SE2 7 ")  # untouched
    assert sorted(os.listdir(tmp_path)) == ["g.g2o"]


# ---------------------------------------------------------------------------------------------
# graph utilities


def _pose2(x: float, y: float, th: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]]), np.array([x, y])


def _between(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    return a[0].T @ b[0], a[0].T @ (b[1] - a[1])


def _tiny_2d_graph() -> tuple[PoseGraph, list[tuple[np.ndarray, np.ndarray]]]:
    truth = [
        _pose2(0, 0, 0),
        _pose2(1, 0, math.pi / 2),
        _pose2(1, 1, math.pi / 2),
        _pose2(0, 2, math.pi),
        _pose2(5, 5, 0.3),  # no odometry edge from pose 3: reached by the loop closure 0 -> 4
        _pose2(5 + math.cos(0.3), 5 + math.sin(0.3), 0.3),
    ]
    pairs = [(0, 1), (1, 2), (3, 2), (0, 4), (4, 5)]  # (3, 2) runs against the index order
    meas = [_between(truth[i], truth[j]) for i, j in pairs]
    # A wrong loop closure 0 -> 2: odometry must be preferred over it.
    pairs.append((0, 2))
    meas.append(_pose2(100, 100, 1.0))
    graph = PoseGraph(
        dim=2,
        ids=np.array([10, 11, 12, 13, 14, 15]),
        rotations=np.zeros((6, 2, 2)),
        translations=np.zeros((6, 2)),
        fixed=np.zeros(6, bool),
        edge_i=np.array([p[0] for p in pairs]),
        edge_j=np.array([p[1] for p in pairs]),
        meas_rotations=np.stack([r for r, _ in meas]),
        meas_translations=np.stack([t for _, t in meas]),
        information=np.tile(np.eye(3), (len(pairs), 1, 1)),
    )
    return graph, truth


def test_odometry_chain_initialization_tiny_graph() -> None:
    graph, truth = _tiny_2d_graph()
    init = odometry_chain_initialization(graph)
    assert not init.has_initial_guess
    for k, (r, t) in enumerate(truth):
        np.testing.assert_allclose(init.rotations[k], r, atol=1e-12, err_msg=str(k))
        np.testing.assert_allclose(init.translations[k], t, atol=1e-12, err_msg=str(k))


def test_odometry_chain_via_reader(tmp_path: Path) -> None:
    graph, truth = _tiny_2d_graph()
    lines = []
    for e in range(graph.num_edges):
        th = math.atan2(graph.meas_rotations[e, 1, 0], graph.meas_rotations[e, 0, 0])
        x, y = graph.meas_translations[e].tolist()
        i, j = graph.ids[graph.edge_i[e]], graph.ids[graph.edge_j[e]]
        lines.append(f"EDGE_SE2 {i} {j} {x!r} {y!r} {th!r} 1 0 0 1 0 1")
    read = read_pose_graph(_write(tmp_path, "\n".join(lines) + "\n"))
    assert not read.has_initial_guess
    np.testing.assert_array_equal(read.ids, graph.ids)
    np.testing.assert_allclose(read.translations, np.stack([t for _, t in truth]), atol=1e-12)


def test_odometry_chain_initialization_3d() -> None:
    rots = Rotation.from_euler("xyz", [[0, 0, 0], [0.1, 0.2, 0.3], [-0.4, 0.5, 1.0]]).as_matrix()
    trans = np.array([[0.0, 0, 0], [1, 2, 3], [-1, 0, 2]])
    pairs = [(0, 1), (2, 1)]
    meas = [(rots[i].T @ rots[j], rots[i].T @ (trans[j] - trans[i])) for i, j in pairs]
    graph = PoseGraph(
        dim=3,
        ids=np.array([0, 1, 2]),
        rotations=np.zeros((3, 3, 3)),
        translations=np.zeros((3, 3)),
        fixed=np.zeros(3, bool),
        edge_i=np.array([0, 2]),
        edge_j=np.array([1, 1]),
        meas_rotations=np.stack([r for r, _ in meas]),
        meas_translations=np.stack([t for _, t in meas]),
        information=np.tile(np.eye(6), (2, 1, 1)),
    )
    init = odometry_chain_initialization(graph)
    np.testing.assert_allclose(init.rotations, rots, atol=1e-12)
    np.testing.assert_allclose(init.translations, trans, atol=1e-12)


def test_odometry_chain_unreachable_pose() -> None:
    graph, _ = _tiny_2d_graph()
    keep = graph.edge_j != 4  # drop the only edge into pose 14
    cut = dataclasses.replace(
        graph,
        edge_i=graph.edge_i[keep],
        edge_j=graph.edge_j[keep],
        meas_rotations=graph.meas_rotations[keep],
        meas_translations=graph.meas_translations[keep],
        information=graph.information[keep],
    )
    with pytest.raises(ValueError, match="pose id 14 is not connected"):
        odometry_chain_initialization(cut)


def _graph_with_information(info: np.ndarray) -> PoseGraph:
    m = info.shape[0]
    return PoseGraph(
        dim=2,
        ids=np.arange(m + 1),
        rotations=np.tile(np.eye(2), (m + 1, 1, 1)),
        translations=np.zeros((m + 1, 2)),
        fixed=np.zeros(m + 1, bool),
        edge_i=np.arange(m),
        edge_j=np.arange(m) + 1,
        meas_rotations=np.tile(np.eye(2), (m, 1, 1)),
        meas_translations=np.zeros((m, 2)),
        information=info,
    )


def test_project_information_psd_clips_indefinite() -> None:
    good = np.diag([1.0, 2.0, 3.0]) + 0.1 * np.ones((3, 3))
    indefinite = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalues -1, 1, 3
    graph = _graph_with_information(np.stack([good, indefinite]))
    projected, changed = project_information_psd(graph)
    assert changed == 1
    np.testing.assert_array_equal(projected.information[0], good)  # untouched, bit for bit
    eig = np.linalg.eigvalsh(projected.information[1])
    np.testing.assert_allclose(eig, [3e-12, 1.0, 3.0], rtol=1e-9, atol=1e-15)
    np.testing.assert_array_equal(projected.information[1], projected.information[1].T)
    np.testing.assert_array_equal(graph.information[1], indefinite)  # input not modified
    _, changed_again = project_information_psd(projected)
    assert changed_again == 0


def test_project_information_psd_rejects_matrix_without_positive_eigenvalue() -> None:
    graph = _graph_with_information(np.stack([-np.eye(3)]))
    with pytest.raises(ValueError, match="no positive eigenvalue"):
        project_information_psd(graph)


def test_information_condition_numbers() -> None:
    indefinite = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    graph = _graph_with_information(
        np.stack([np.diag([1.0, 2.0, 4.0]), indefinite, np.diag([1.0, 0.0, 1.0])])
    )
    cond = information_condition_numbers(graph)
    np.testing.assert_allclose(cond[:2], [4.0, 3.0])
    assert cond[2] == np.inf


def test_pose_graph_validates_shapes() -> None:
    graph, _ = _tiny_2d_graph()
    with pytest.raises(ValueError, match="edge_j"):
        dataclasses.replace(graph, edge_j=graph.edge_j + 10)
    with pytest.raises(ValueError, match="information"):
        dataclasses.replace(graph, information=np.zeros((graph.num_edges, 6, 6)))
    with pytest.raises(ValueError, match="unique"):
        dataclasses.replace(graph, ids=np.array([1, 1, 2, 3, 4, 5]))
