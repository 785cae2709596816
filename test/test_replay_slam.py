"""`mp-slam replay` with loop closure: both trajectories, their ATE, config routing, EuRoC stays quiet."""

import json

import numpy as np
import pytest

from mp_slam_ros.cli import main
from mp_slam_ros.io.trajectory import read_tum
from mp_slam_ros.loop.config import LoopClosureConfig
from mp_slam_ros.replay import load_slam_config, open_sequence, replay
from mp_slam_ros.sim.sequence import make_sequence

SLAM_FILES = ('slam.tum', 'slam_live.tum', 'keyframes_slam.tum')


def test_synthetic_room_replay_writes_both_trajectories(tmp_path):
    seq = make_sequence('two_lap_room', 'stereo', width=320, height=240, rate_hz=10.0)
    report = replay(seq, tmp_path, precision='mixed', progress=False, storage='mcap', loop_closure=LoopClosureConfig())
    for name in ('odometry.tum', *SLAM_FILES, 'report.json', 'trajectory.png'):
        assert (tmp_path / name).is_file(), name
    lc = report.loop_closure
    assert lc['statistics']['loops_accepted'] >= 10 and lc['precision'] == 'mixed'
    acc = lc['accuracy']
    assert acc['slam']['ate_rmse_m'] < 0.5 * acc['odometry']['ate_rmse_m']
    assert lc['ate_ratio'] == pytest.approx(acc['slam']['ate_rmse_m'] / acc['odometry']['ate_rmse_m'])
    # Before the first loop, the live and final corrections differ; every frame is in both files.
    odom, slam, live = (read_tum(tmp_path / n) for n in ('odometry.tum', 'slam.tum', 'slam_live.tum'))
    assert len(odom) == len(slam) == len(live) == report.frames
    np.testing.assert_allclose(live.poses[0], odom.poses[0], atol=1e-12)  # map == odom until a loop closes
    saved = json.loads((tmp_path / 'report.json').read_text())
    assert saved['loop_closure']['statistics']['pgo_runs'] == lc['statistics']['pgo_runs']
    from rosbags.highlevel import AnyReader

    with AnyReader([tmp_path / 'odometry_bag']) as reader:
        frames = set()
        for conn, _, raw in reader.messages([c for c in reader.connections if c.topic == '/tf']):
            for tf in reader.deserialize(raw, conn.msgtype).transforms:
                frames.add((tf.header.frame_id, tf.child_frame_id))
    assert ('map', 'odom') in frames and ('odom', 'base_link') in frames


def test_euroc_snippet_through_the_slam_replay_keeps_loop_closure_quiet(shared_data, tmp_path, repo_root):
    folder = shared_data / 'seq' / 'euroc_V1_01_easy_micro'
    profile = repo_root / 'config' / 'profile_desktop.yaml'
    vo, lc_config, topics = load_slam_config(profile if profile.is_file() else None)
    seq = open_sequence(folder, mode=vo.mode, topics=topics)
    vo = type(vo)(**{**vo.__dict__, 'T_base_camera': tuple(seq.T_base_camera.reshape(-1))})
    report = replay(seq, tmp_path, config=vo, progress=False, write_bag=False, plots=False, loop_closure=lc_config)
    st = report.loop_closure['statistics']
    assert st['keyframes'] == report.keyframes > 0
    assert st['candidates'] == st['loops_accepted'] == st['pgo_runs'] == 0
    slam, odometry = read_tum(tmp_path / 'slam.tum'), read_tum(tmp_path / 'odometry.tum')
    np.testing.assert_allclose(slam.poses, odometry.poses, atol=1e-12)


def test_slam_config_routes_sections_to_each_node(tmp_path):
    path = tmp_path / 'params.yaml'
    path.write_text(
        '/**:\n  ros__parameters:\n    precision: fp32\n    use_sim_time: true\n'
        'vo_node:\n  ros__parameters:\n    max_features: 120\n    left_image_topic: /left\n'
        'loop_closure_node:\n  ros__parameters:\n    min_inliers: 55\n    precision: fp64\n'
    )
    vo, lc, topics = load_slam_config(path)
    assert vo.precision == 'fp32' and vo.max_features == 120 and topics.left_image == '/left'
    assert lc.precision == 'fp64' and lc.min_inliers == 55
    flat = tmp_path / 'flat.yaml'
    flat.write_text('precision: fp16\nmin_inliers: 44\nmax_features: 90\n')
    vo, lc, _ = load_slam_config(flat)
    assert (vo.precision, lc.precision, lc.min_inliers, vo.max_features) == ('fp16', 'fp16', 44, 90)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('loop_closure_node:\n  ros__parameters:\n    min_inlier: 3\n')
    with pytest.raises(ValueError, match=r"bad\.yaml.*'min_inlier'"):
        load_slam_config(bad)


def test_cli_replay_without_loop_closure(shared_data, tmp_path, capsys):
    folder = shared_data / 'seq' / 'euroc_V1_01_easy_micro'
    code = main(['replay', str(folder), '--out', str(tmp_path), '--no-bag', '--no-progress', '--no-loop-closure'])
    assert code == 0
    assert not any((tmp_path / n).exists() for n in SLAM_FILES)
    assert 'loop closure' not in capsys.readouterr().out
