"""Binary bag-of-words vocabulary: training, descent, tf-idf, scoring, files, and place retrieval."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from mp_slam_ros.cli import main
from mp_slam_ros.io.errors import InputFormatError
from mp_slam_ros.loop.database import KeyframeDatabase
from mp_slam_ros.loop.vocabulary import BUNDLED_FILE, BinaryVocabulary, BowVector, bow_score, default_vocabulary


def clustered_descriptors(rng: np.random.Generator, num_images: int = 30, per_image: int = 150) -> list[np.ndarray]:
    """Descriptors around 60 random prototypes with ~10% of bits flipped: structure to cluster."""
    prototypes = np.unpackbits(rng.integers(0, 256, (60, 32), dtype=np.uint8), axis=1)
    sets = []
    for _ in range(num_images):
        # Each image sees a subset of the prototypes, as an image sees part of a scene.
        seen = rng.choice(60, size=20, replace=False)
        bits = prototypes[rng.choice(seen, size=per_image)]
        flip = rng.random(bits.shape) < 0.1
        sets.append(np.packbits(bits ^ flip, axis=1))
    return sets


@pytest.fixture(scope="module")
def training_sets() -> list[np.ndarray]:
    return clustered_descriptors(np.random.default_rng(7))


@pytest.fixture(scope="module")
def vocab(training_sets) -> BinaryVocabulary:
    return BinaryVocabulary.train(training_sets, branching=5, depth=3, seed=3)


def brute_force_words(vocab: BinaryVocabulary, descriptors: np.ndarray) -> np.ndarray:
    """Greedy descent in plain numpy on unpacked bits (first minimum on ties, as documented)."""
    a = vocab.to_arrays()
    bits = np.unpackbits(a["centers"], axis=1).astype(np.int16)
    out = []
    for d in np.unpackbits(descriptors, axis=1).astype(np.int16):
        node = 0
        while a["num_children"][node] > 0:
            children = a["first_child"][node] + np.arange(a["num_children"][node])
            node = children[np.argmin(np.abs(bits[children] - d).sum(axis=1))]
        out.append(a["node_word"][node])
    return np.array(out, dtype=np.int32)


def random_bow(rng: np.random.Generator, num_words: int, size: int) -> BowVector:
    ids = np.sort(rng.choice(num_words, size=size, replace=False))
    w = rng.random(size) + 0.01
    return BowVector(ids, w / w.sum())


# --------------------------------------------------------------------------- training


def test_training_is_reproducible(training_sets, vocab):
    again = BinaryVocabulary.train(training_sets, branching=5, depth=3, seed=3)
    for name, array in vocab.to_arrays().items():
        assert np.array_equal(array, again.to_arrays()[name]), name
    other = BinaryVocabulary.train(training_sets, branching=5, depth=3, seed=4)
    assert not np.array_equal(other.to_arrays()["centers"], vocab.to_arrays()["centers"])


def test_tree_shape_and_idf(training_sets, vocab):
    a = vocab.to_arrays()
    assert vocab.branching == 5 and vocab.depth == 3
    assert 5 < vocab.num_words <= 5**3
    assert a["num_children"].max() <= 5
    assert vocab.num_nodes == a["centers"].shape[0]
    # Depth of every leaf is at most L.
    level = np.zeros(vocab.num_nodes, dtype=int)
    for node in range(vocab.num_nodes):
        c = a["num_children"][node]
        level[a["first_child"][node] : a["first_child"][node] + c] = level[node] + 1
    assert level[a["num_children"] == 0].max() == 3
    # idf = log(N / images containing the word), counted here independently of train().
    seen = np.zeros(vocab.num_words)
    for d in training_sets:
        seen[np.unique(brute_force_words(vocab, d))] += 1
    expected = np.log(len(training_sets) / np.maximum(seen, 1))
    np.testing.assert_allclose(vocab.idf, expected, rtol=1e-6, atol=1e-6)
    assert vocab.num_training_images == len(training_sets)


def test_words_match_brute_force_descent(vocab, training_sets):
    rng = np.random.default_rng(11)
    queries = np.concatenate([rng.integers(0, 256, (100, 32), dtype=np.uint8), training_sets[0][:100]])
    words = vocab.words(queries)
    assert words.dtype == np.int32 and words.shape == (200,)
    assert np.array_equal(words, brute_force_words(vocab, queries))
    assert words.min() >= 0 and words.max() < vocab.num_words
    # Non-contiguous input is accepted and gives the same words.
    wide = np.zeros((200, 64), dtype=np.uint8)
    wide[:, ::2] = queries
    assert np.array_equal(vocab.words(wide[:, ::2]), words)
    assert vocab.words(np.zeros((0, 32), np.uint8)).shape == (0,)


def test_words_rejects_bad_descriptors(vocab):
    with pytest.raises(ValueError, match="uint8"):
        vocab.words(np.zeros((3, 32), dtype=np.int32))
    with pytest.raises(ValueError, match="32"):
        vocab.words(np.zeros((3, 16), dtype=np.uint8))


def test_train_rejects_bad_input():
    with pytest.raises(ValueError, match="no descriptors"):
        BinaryVocabulary.train([np.zeros((0, 32), np.uint8)], branching=4, depth=2)
    with pytest.raises(ValueError, match="branching"):
        BinaryVocabulary.train([np.zeros((5, 32), np.uint8)], branching=1, depth=2)
    with pytest.raises(ValueError, match=r"descriptor_sets\[1\]"):
        BinaryVocabulary.train([np.zeros((5, 32), np.uint8), np.zeros((5, 31), np.uint8)], branching=4, depth=2)


def test_identical_descriptors_make_one_word():
    vocab = BinaryVocabulary.train([np.full((50, 32), 7, np.uint8)] * 3, branching=4, depth=3)
    assert vocab.num_words == 1
    assert np.all(vocab.words(np.zeros((4, 32), np.uint8)) == 0)


# --------------------------------------------------------------------------- tf-idf and score


def test_transform_is_normalised_tf_idf(vocab, training_sets):
    d = training_sets[3]
    bow = vocab.transform(d)
    assert bow.word_ids.dtype == np.int32 and bow.weights.dtype == np.float32
    assert np.all(np.diff(bow.word_ids) > 0)
    assert np.all(bow.weights > 0)
    assert bow.weights.sum() == pytest.approx(1.0, abs=1e-6)
    counts = np.bincount(vocab.words(d), minlength=vocab.num_words).astype(float)
    dense = counts * vocab.idf
    dense /= dense.sum()
    np.testing.assert_allclose(bow.weights, dense[bow.word_ids], rtol=1e-5)
    assert np.all(dense[np.setdiff1d(np.arange(vocab.num_words), bow.word_ids)] == 0)
    empty = vocab.transform(np.zeros((0, 32), np.uint8))
    assert len(empty) == 0


def test_score_properties(vocab):
    rng = np.random.default_rng(5)
    bows = [random_bow(rng, 300, int(rng.integers(1, 80))) for _ in range(30)]
    for a in bows:
        assert vocab.score(a, a) == pytest.approx(1.0, abs=1e-6)
        for b in bows[:10]:
            s = vocab.score(a, b)
            assert 0.0 <= s <= 1.0
            assert s == pytest.approx(vocab.score(b, a), abs=1e-12)
            da, db = np.zeros(300), np.zeros(300)
            da[a.word_ids], db[b.word_ids] = a.weights, b.weights
            assert s == pytest.approx(1.0 - 0.5 * np.abs(da - db).sum(), abs=1e-6)
    disjoint_a = BowVector(np.array([1, 2, 3]), np.array([0.2, 0.3, 0.5]))
    disjoint_b = BowVector(np.array([4, 5]), np.array([0.5, 0.5]))
    assert bow_score(disjoint_a, disjoint_b) == 0.0
    assert bow_score(disjoint_a, BowVector(np.zeros(0), np.zeros(0))) == 0.0


def test_bow_vector_is_read_only():
    bow = BowVector(np.array([1, 4]), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        bow.weights[0] = 1.0
    with pytest.raises(ValueError, match="2 word ids but 3 weights"):
        BowVector(np.array([1, 4]), np.array([0.2, 0.3, 0.5]))


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(vocab, tmp_path, training_sets):
    path = tmp_path / "voc.npz"
    vocab.save(path)
    loaded = BinaryVocabulary.load(path)
    for name, array in vocab.to_arrays().items():
        assert np.array_equal(array, loaded.to_arrays()[name]), name
    assert np.array_equal(loaded.words(training_sets[1]), vocab.words(training_sets[1]))
    # Atomic save leaves no temporary files behind, and overwriting works.
    vocab.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["voc.npz"]


def test_load_errors_name_the_file_and_field(vocab, tmp_path):
    good = tmp_path / "good.npz"
    vocab.save(good)
    data = good.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFormatError, match=r"truncated\.npz") as err:
        BinaryVocabulary.load(truncated)
    assert err.value.path == str(truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(InputFormatError, match=r"garbage\.npz"):
        BinaryVocabulary.load(garbage)

    with pytest.raises(FileNotFoundError):
        BinaryVocabulary.load(tmp_path / "absent.npz")

    arrays = vocab.to_arrays()

    def write_variant(name: str, **changes) -> Path:
        path = tmp_path / name
        variant = {k: v for k, v in arrays.items() if changes.get(k, True) is not None}
        variant.update({k: v for k, v in changes.items() if v is not None})
        np.savez(path, **variant)
        return path

    cases = {
        "idf": write_variant("no_idf.npz", idf=None),
        "centers": write_variant("bad_centers.npz", centers=arrays["centers"][:, :16]),
        "node_word": write_variant("bad_words.npz", node_word=np.zeros_like(arrays["node_word"])),
        "first_child": write_variant("cycle.npz", first_child=np.zeros_like(arrays["first_child"])),
        "format_version": write_variant("future.npz", format_version=np.asarray(99)),
    }
    for field, path in cases.items():
        with pytest.raises(InputFormatError) as err:
            BinaryVocabulary.load(path)
        assert err.value.field == field, (path.name, str(err.value))
        assert path.name in str(err.value) and f"field '{field}'" in str(err.value)

    nan_idf = arrays["idf"].copy()
    nan_idf[0] = np.nan
    with pytest.raises(InputFormatError, match="field 'idf'"):
        BinaryVocabulary.load(write_variant("nan_idf.npz", idf=nan_idf))


def test_bundled_vocabulary_loads():
    vocab = default_vocabulary()
    assert vocab is default_vocabulary()  # cached: one copy per process
    assert 2000 <= vocab.num_words <= 20000
    assert vocab.num_training_images > 100
    path = Path(__file__).resolve().parent.parent / "mp_slam_ros" / "loop" / "data" / BUNDLED_FILE
    assert path.stat().st_size < 1_500_000
    assert zipfile.is_zipfile(path)
    rng = np.random.default_rng(0)
    bow = vocab.transform(rng.integers(0, 256, (200, 32), dtype=np.uint8))
    assert len(bow) > 50


# --------------------------------------------------------------------------- CLI


def test_cli_trains_a_vocabulary(tmp_path, capsys):
    out = tmp_path / "small.npz"
    code = main(
        ["vocabulary", "train", "synthetic", "--out", str(out), "--branching", "4", "--depth", "2",
         "--every", "100", "--max-images", "2", "--max-features", "200", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 images" in printed and "words" in printed and str(out) in printed
    vocab = BinaryVocabulary.load(out)
    assert vocab.branching == 4 and vocab.depth == 2 and vocab.num_training_images == 4
    assert 4 < vocab.num_words <= 16


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["vocabulary", "train", str(tmp_path / "missing"), "--out", str(tmp_path / "v.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mp-slam: error:") and "missing" in err and len(err.splitlines()) == 1
    assert main(["vocabulary", "train", "synthetic", "--every", "0", "--out", str(tmp_path / "v.npz")]) == 2
    assert "--every" in capsys.readouterr().err


# --------------------------------------------------------------------------- place retrieval

LAP_S = 2.0 * np.pi / 0.32  # two_lap_room: one lap of the ellipse parameter at 0.32 rad/s
RATE_HZ = 2.0


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0))))


@pytest.fixture(scope="module")
def room_keyframes():
    """Bag-of-words vectors of the *test* room (scene_seed=0, unseen in training) at 2 Hz, 320x240."""
    from mp_slam_ros.sim.sequence import make_sequence
    from mp_slam_ros.vision.features import FeatureOptions, detect_features, orb_descriptors

    seq = make_sequence("two_lap_room", mode="stereo", width=320, height=240, rate_hz=RATE_HZ, scene_seed=0)
    vocab = default_vocabulary()
    options = FeatureOptions()  # as the VO detects at keyframes
    bows = []
    for frame in seq.frames():
        pts = detect_features(frame.image, np.zeros((0, 2), np.float32), options)
        desc, _ = orb_descriptors(frame.image, pts)
        bows.append(vocab.transform(desc))
    T_world_camera = seq.ground_truth.poses @ seq.T_base_camera
    return seq.ground_truth.stamps_ns, T_world_camera, bows


def test_lap_two_retrieves_lap_one_places(room_keyframes):
    stamps, T, bows = room_keyframes
    db = KeyframeDatabase()
    for i, bow in enumerate(bows):
        db.add(i, int(stamps[i]), bow)
    t = (stamps - stamps[0]) * 1e-9
    queries = np.flatnonzero(t > LAP_S + 0.5)
    assert queries.size > 30
    hits, true_scores, opposite_scores = 0, [], []
    for q in queries:
        # Exclude the recent past as the loop closer does (10 s, half a lap).
        results = db.query(bows[q], max_results=3, max_stamp_ns=int(stamps[q] - 10e9), max_keyframe_id=int(q) - 1)
        assert all(stamps[j] <= stamps[q] - 10e9 for j, _ in results)
        if results:
            j = results[0][0]
            dist = np.linalg.norm(T[j][:3, 3] - T[q][:3, 3])
            angle = rotation_angle_deg(T[j][:3, :3].T @ T[q][:3, :3])
            hits += bool(dist < 1.0 and angle < 30.0)
        same = round(float(t[q] - LAP_S) * RATE_HZ)  # the same place on lap 1
        opposite = round(float((t[q] - 0.5 * LAP_S) % LAP_S) * RATE_HZ)  # across the room
        true_scores.append(bow_score(bows[q], bows[same]))
        opposite_scores.append(bow_score(bows[q], bows[opposite]))
    # Measured: 38 of 38 queries retrieve the right place (true-place score 0.14-0.25, mean 0.19;
    # opposite side at most 0.074, mean 0.037).
    assert hits / queries.size >= 0.85, f"{hits}/{queries.size} lap-2 queries found their lap-1 place"
    true_scores, opposite_scores = np.array(true_scores), np.array(opposite_scores)
    assert np.mean(true_scores > opposite_scores) >= 0.9
    assert true_scores.mean() > 2.5 * opposite_scores.mean()
