"""Keyframe database: inverted-index scores, query bounds, removal and array round trip."""

from __future__ import annotations

import numpy as np
import pytest

from mp_slam_ros.loop.database import ARRAY_KINDS, KeyframeDatabase
from mp_slam_ros.loop.vocabulary import BowVector, bow_score

NUM_WORDS = 400


def random_bow(rng: np.random.Generator, size: int) -> BowVector:
    # Zipf-like word popularity, so some words are shared by many keyframes (long posting lists)
    # and most by few, as with a real vocabulary.
    p = 1.0 / np.arange(1, NUM_WORDS + 1)
    ids = np.sort(rng.choice(NUM_WORDS, size=size, replace=False, p=p / p.sum()))
    w = rng.random(size) + 0.01
    return BowVector(ids, w / w.sum())


@pytest.fixture(scope="module")
def keyframes():
    rng = np.random.default_rng(42)
    ids = rng.permutation(np.arange(1000, 1300))[:200]  # arbitrary, non-consecutive ids
    stamps = 1_000_000_000 + np.sort(rng.integers(0, 10**11, size=200))
    bows = [random_bow(rng, int(rng.integers(5, 60))) for _ in range(200)]
    return [(int(i), int(s), b) for i, s, b in zip(ids, stamps, bows, strict=True)]


@pytest.fixture
def db(keyframes) -> KeyframeDatabase:
    d = KeyframeDatabase()
    for kf_id, stamp, bow in keyframes:
        d.add(kf_id, stamp, bow)
    return d


def brute_force(keyframes, query: BowVector, max_id=None, max_stamp=None, min_score=0.0):
    out = []
    for kf_id, stamp, bow in keyframes:
        s = bow_score(query, bow)
        in_bounds = (max_id is None or kf_id <= max_id) and (max_stamp is None or stamp <= max_stamp)
        if s > 0 and s >= min_score and in_bounds:
            out.append((kf_id, s))
    return sorted(out, key=lambda r: (-r[1], r[0]))


def test_inverted_index_scores_equal_brute_force(db, keyframes):
    rng = np.random.default_rng(1)
    queries = [random_bow(rng, 40) for _ in range(10)] + [keyframes[17][2]]
    for query in queries:
        results = db.query(query, max_results=len(keyframes))
        expected = brute_force(keyframes, query)
        assert [r[0] for r in results] == [e[0] for e in expected]
        np.testing.assert_allclose([r[1] for r in results], [e[1] for e in expected], atol=1e-6)
        # Every keyframe: listed with its brute-force score, or absent because it shares no word.
        got = dict(results)
        for kf_id, _, bow in keyframes:
            assert got.get(kf_id, 0.0) == pytest.approx(bow_score(query, bow), abs=1e-6)
    # A keyframe's own vector finds itself first with score 1.
    assert db.query(keyframes[17][2], 1) == [(keyframes[17][0], pytest.approx(1.0, abs=1e-6))]


def test_query_best_first_and_truncated(db, keyframes):
    query = keyframes[3][2]
    results = db.query(query, max_results=7)
    assert len(results) == 7
    assert results == [(i, pytest.approx(s, abs=1e-6)) for i, s in brute_force(keyframes, query)[:7]]
    scores = [s for _, s in results]
    assert scores == sorted(scores, reverse=True)
    assert db.query(query, max_results=0) == []
    assert db.query(BowVector(np.zeros(0), np.zeros(0)), max_results=5) == []


def test_ties_break_by_lower_id():
    d = KeyframeDatabase()
    bow = BowVector(np.array([3, 9]), np.array([0.5, 0.5]))
    for kf_id in (30, 10, 20):
        d.add(kf_id, kf_id, bow)
    assert [i for i, _ in d.query(bow, 2)] == [10, 20]


def test_bounds_are_honoured(db, keyframes):
    query = keyframes[100][2]
    ids = sorted(k[0] for k in keyframes)
    stamps = sorted(k[1] for k in keyframes)
    max_id, max_stamp = ids[120], stamps[80]
    by_id = db.query(query, 50, max_keyframe_id=max_id)
    assert by_id and all(i <= max_id for i, _ in by_id)
    assert [i for i, _ in by_id] == [i for i, _ in brute_force(keyframes, query, max_id=max_id)[:50]]
    stamp_of = {k[0]: k[1] for k in keyframes}
    by_stamp = db.query(query, 50, max_stamp_ns=max_stamp)
    assert by_stamp and all(stamp_of[i] <= max_stamp for i, _ in by_stamp)
    assert [i for i, _ in by_stamp] == [i for i, _ in brute_force(keyframes, query, max_stamp=max_stamp)[:50]]
    both = db.query(query, 200, max_keyframe_id=max_id, max_stamp_ns=max_stamp)
    assert [i for i, _ in both] == [i for i, _ in brute_force(keyframes, query, max_id, max_stamp)]
    # The query's own keyframe (score 1) is excluded when the bound is below it.
    own_id = keyframes[100][0]
    assert all(i != own_id for i, _ in db.query(query, 200, max_keyframe_id=own_id - 1))
    assert db.query(query, 10, max_keyframe_id=min(ids) - 1) == []
    high = db.query(query, 200, min_score=0.1)
    assert high and all(s >= 0.1 for _, s in high)
    assert [i for i, _ in high] == [i for i, _ in brute_force(keyframes, query, min_score=0.1)]


def test_remove_and_clear(db, keyframes):
    query = keyframes[5][2]
    before = dict(db.query(query, 500))
    victims = [keyframes[5][0], keyframes[6][0], keyframes[50][0]]
    for v in victims:
        assert v in db
        db.remove(v)
        assert v not in db
    assert len(db) == len(keyframes) - 3
    after = dict(db.query(query, 500))
    assert not set(victims) & set(after)
    for kf_id, s in after.items():
        assert s == pytest.approx(before[kf_id], abs=1e-9)
    assert set(before) - set(after) <= set(victims)
    with pytest.raises(KeyError):
        db.remove(victims[0])
    # Re-adding a removed id works and scores it again.
    db.add(victims[0], keyframes[5][1], query)
    assert db.query(query, 1)[0][0] == victims[0]
    with pytest.raises(ValueError, match="already"):
        db.add(victims[0], 0, query)
    db.clear()
    assert len(db) == 0 and db.query(query, 5) == []


def test_arrays_round_trip(db, keyframes, tmp_path):
    arrays = db.to_arrays()
    assert set(arrays) == set(ARRAY_KINDS)
    path = tmp_path / "db.npz"
    np.savez(path, **arrays)
    with np.load(path) as f:
        loaded = KeyframeDatabase.from_arrays(dict(f))
    assert len(loaded) == len(db) and loaded.keyframe_ids == db.keyframe_ids
    for name, a in loaded.to_arrays().items():
        assert np.array_equal(a, arrays[name]), name
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = random_bow(rng, 30)
        assert loaded.query(q, 20, max_stamp_ns=keyframes[150][1]) == db.query(q, 20, max_stamp_ns=keyframes[150][1])
    kf_id, stamp, bow = keyframes[9]
    assert loaded.stamp_ns(kf_id) == stamp
    assert np.array_equal(loaded.bow(kf_id).word_ids, bow.word_ids)
    empty = KeyframeDatabase.from_arrays(KeyframeDatabase().to_arrays())
    assert len(empty) == 0


def test_from_arrays_names_the_bad_array(db):
    good = db.to_arrays()

    def broken(**changes):
        a = dict(good)
        for k, v in changes.items():
            if v is None:
                del a[k]
            else:
                a[k] = v
        return a

    offsets = good["bow_offsets"].copy()
    offsets[-1] += 1
    unsorted = good["bow_words"].copy()
    unsorted[:2] = unsorted[1::-1]
    negative = good["bow_weights"].copy()
    negative[4] = -0.1
    cases = {
        "keyframe_ids": broken(keyframe_ids=None),
        "stamps_ns": broken(stamps_ns=good["stamps_ns"][:-1]),
        "bow_offsets": broken(bow_offsets=offsets),
        "bow_words": broken(bow_words=unsorted),
        "bow_weights": broken(bow_weights=negative),
    }
    for name, arrays in cases.items():
        with pytest.raises(ValueError, match=f"'{name}'"):
            KeyframeDatabase.from_arrays(arrays)
    with pytest.raises(ValueError, match="'bow_weights'"):
        KeyframeDatabase.from_arrays(broken(bow_weights=good["bow_weights"].astype(np.int64)))
    with pytest.raises(ValueError, match=r"'keyframe_ids'.*duplicate"):
        ids = good["keyframe_ids"].copy()
        ids[1] = ids[0]
        KeyframeDatabase.from_arrays(broken(keyframe_ids=ids))
    with pytest.raises(ValueError, match="'bow_words'"):
        KeyframeDatabase.from_arrays(broken(bow_words=good["bow_words"].reshape(1, -1)))


def test_add_rejects_non_bow():
    with pytest.raises(TypeError):
        KeyframeDatabase().add(1, 0, np.array([1, 2]))
