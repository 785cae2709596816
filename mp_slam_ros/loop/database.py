"""Keyframe database for place recognition: bag-of-words vectors behind an inverted index.

A query must rank every earlier keyframe by the L1 score of :func:`~mp_slam_ros.loop.vocabulary.bow_score`
without looking at each of them: with 10,000 keyframes of ~200 words a brute-force scan is two
million weight comparisons per keyframe. The L1 score of two L1-normalised vectors is the sum of
``min(a_w, b_w)`` over their *shared* words, so an inverted index (word -> keyframes that contain
it, with their weights) gives every score from the query's own posting lists: keyframes sharing no
word with the query are never touched, and with thousands of words each list holds only the
keyframes that saw that word.

Postings live in per-word numpy arrays that grow by doubling, so a query is a handful of
vectorised operations (concatenate the lists, ``minimum`` with the query weights, ``bincount``
into per-keyframe scores) rather than a Python loop over keyframes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .vocabulary import BowVector

__all__ = ["KeyframeDatabase"]

#: Arrays written by :meth:`KeyframeDatabase.to_arrays`, with the dtype kind each must have.
ARRAY_KINDS = {
    "keyframe_ids": "i",
    "stamps_ns": "i",
    "bow_offsets": "i",
    "bow_words": "i",
    "bow_weights": "f",
}


class _Postings:
    """One word's posting list: database slots and the word's weight there (capacity doubles)."""

    __slots__ = ("size", "slots", "weights")

    def __init__(self) -> None:
        self.slots = np.empty(4, dtype=np.int64)
        self.weights = np.empty(4, dtype=np.float64)
        self.size = 0

    def append(self, slot: int, weight: float) -> None:
        if self.size == self.slots.size:
            self.slots = np.concatenate([self.slots, np.empty_like(self.slots)])
            self.weights = np.concatenate([self.weights, np.empty_like(self.weights)])
        self.slots[self.size] = slot
        self.weights[self.size] = weight
        self.size += 1

    def discard(self, slot: int) -> None:
        keep = self.slots[: self.size] != slot
        n = int(keep.sum())
        self.slots[:n] = self.slots[: self.size][keep]
        self.weights[:n] = self.weights[: self.size][keep]
        self.size = n


class KeyframeDatabase:
    """Bag-of-words vectors of keyframes, queried through an inverted index.

    Keyframes are identified by the caller's ``keyframe_id`` (any int, unique in the database)
    and carry their stamp, so a query can exclude the most recent keyframes by id or by time.
    Internally each keyframe gets a dense *slot* (its insertion rank) that indexes the score
    accumulator; removed slots are not reused until :meth:`clear`, which keeps removal cheap.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every keyframe."""
        self._postings: dict[int, _Postings] = {}
        self._slot_of: dict[int, int] = {}
        self._bows: dict[int, BowVector] = {}
        self._slot_ids = np.empty(16, dtype=np.int64)
        self._slot_stamps = np.empty(16, dtype=np.int64)
        self._num_slots = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, keyframe_id: object) -> bool:
        return keyframe_id in self._slot_of

    @property
    def keyframe_ids(self) -> list[int]:
        """Ids of the keyframes in the database, in insertion order."""
        return list(self._slot_of)

    def bow(self, keyframe_id: int) -> BowVector:
        """The stored bag-of-words vector of a keyframe (KeyError if absent)."""
        return self._bows[keyframe_id]

    def stamp_ns(self, keyframe_id: int) -> int:
        """The stored stamp of a keyframe (KeyError if absent)."""
        return int(self._slot_stamps[self._slot_of[keyframe_id]])

    def add(self, keyframe_id: int, stamp_ns: int, bow: BowVector) -> None:
        """Insert a keyframe; an id already present is an error (remove it first to replace it)."""
        keyframe_id, stamp_ns = int(keyframe_id), int(stamp_ns)
        if keyframe_id in self._slot_of:
            raise ValueError(f"KeyframeDatabase.add: keyframe {keyframe_id} is already in the database")
        if not isinstance(bow, BowVector):
            raise TypeError(f"KeyframeDatabase.add: expected a BowVector, got {type(bow).__name__}")
        slot = self._num_slots
        if slot == self._slot_ids.size:
            grow = self._slot_ids.size
            self._slot_ids = np.concatenate([self._slot_ids, np.empty(grow, np.int64)])
            self._slot_stamps = np.concatenate([self._slot_stamps, np.empty(grow, np.int64)])
        self._slot_ids[slot] = keyframe_id
        self._slot_stamps[slot] = stamp_ns
        self._num_slots += 1
        self._slot_of[keyframe_id] = slot
        self._bows[keyframe_id] = bow
        postings = self._postings
        for word, weight in zip(bow.word_ids.tolist(), bow.weights.tolist(), strict=True):
            if not weight > 0:
                continue  # adds nothing to any score; keeps "score > 0" equal to "shares a word"
            p = postings.get(word)
            if p is None:
                p = postings[word] = _Postings()
            p.append(slot, weight)

    def remove(self, keyframe_id: int) -> None:
        """Take a keyframe out of the database and the index (KeyError if absent)."""
        keyframe_id = int(keyframe_id)
        slot = self._slot_of.pop(keyframe_id)
        bow = self._bows.pop(keyframe_id)
        for word in bow.word_ids.tolist():
            p = self._postings.get(word)
            if p is None:
                continue
            p.discard(slot)
            if p.size == 0:
                del self._postings[word]

    def query(
        self,
        bow: BowVector,
        max_results: int,
        max_keyframe_id: int | None = None,
        max_stamp_ns: int | None = None,
        min_score: float = 0.0,
    ) -> list[tuple[int, float]]:
        """The best-scoring keyframes as ``(keyframe_id, score)``, best first (ties: lower id first).

        Only keyframes with ``id <= max_keyframe_id`` and ``stamp <= max_stamp_ns`` (when given)
        and ``score >= min_score`` are returned, and only ones sharing at least one word with the
        query, i.e. with a positive score (a score of 0 is no evidence of anything). Scores equal
        :func:`~mp_slam_ros.loop.vocabulary.bow_score` up to float rounding.
        """
        if max_results <= 0 or not self._slot_of or len(bow) == 0:
            return []
        slot_parts, weight_parts, sizes, qweights = [], [], [], []
        for word, qw in zip(bow.word_ids.tolist(), bow.weights.tolist(), strict=True):
            p = self._postings.get(word)
            if p is None:
                continue
            slot_parts.append(p.slots[: p.size])
            weight_parts.append(p.weights[: p.size])
            sizes.append(p.size)
            qweights.append(qw)
        if not slot_parts:
            return []
        slots = np.concatenate(slot_parts)
        contrib = np.minimum(np.concatenate(weight_parts), np.repeat(np.asarray(qweights, np.float64), sizes))
        n = self._num_slots
        scores = np.bincount(slots, weights=contrib, minlength=n)
        # Removed slots have no postings left, so every positive score belongs to a live keyframe.
        ok = (scores > 0) & (scores >= min_score)
        if max_keyframe_id is not None:
            ok &= self._slot_ids[:n] <= max_keyframe_id
        if max_stamp_ns is not None:
            ok &= self._slot_stamps[:n] <= max_stamp_ns
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            return []
        cand_scores = np.minimum(scores[cand], 1.0)
        if cand.size > max_results:
            # Partition first: only max_results of possibly thousands need sorting. Keep
            # everything tied with the cut so the tie-break by id below stays exact.
            kth = np.partition(cand_scores, cand.size - max_results)[cand.size - max_results]
            sel = cand_scores >= kth
            cand, cand_scores = cand[sel], cand_scores[sel]
        ids = self._slot_ids[cand]
        order = np.lexsort((ids, -cand_scores))[:max_results]
        return [(int(ids[i]), float(cand_scores[i])) for i in order]

    # ------------------------------------------------------------------ persistence
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The database as flat arrays (CSR layout of the vectors), for saving inside a map file.

        ``keyframe_ids``/``stamps_ns`` (K,) int64 in insertion order, ``bow_offsets`` (K+1,)
        int64, and the concatenated ``bow_words`` int32 / ``bow_weights`` float32.
        """
        ids = list(self._slot_of)
        bows = [self._bows[k] for k in ids]
        sizes = np.array([len(b) for b in bows], dtype=np.int64)
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        return {
            "keyframe_ids": np.array(ids, dtype=np.int64),
            "stamps_ns": np.array([self._slot_stamps[self._slot_of[k]] for k in ids], dtype=np.int64),
            "bow_offsets": offsets,
            "bow_words": np.concatenate([b.word_ids for b in bows]) if bows else np.zeros(0, np.int32),
            "bow_weights": np.concatenate([b.weights for b in bows]) if bows else np.zeros(0, np.float32),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> KeyframeDatabase:
        """Rebuild a database from :meth:`to_arrays` output; a bad array raises ValueError naming it."""
        a = {}
        for name, kind in ARRAY_KINDS.items():
            if name not in arrays:
                raise ValueError(f"keyframe database: array '{name}' is missing")
            x = np.asarray(arrays[name])
            if x.ndim != 1:
                raise ValueError(f"keyframe database: array '{name}' must be 1-D, got shape {x.shape}")
            if x.size and (x.dtype.kind not in ("i", "u") if kind == "i" else x.dtype.kind != "f"):
                raise ValueError(f"keyframe database: array '{name}' has dtype {x.dtype}, expected "
                                 f"{'integers' if kind == 'i' else 'floats'}")  # fmt: skip
            a[name] = x
        ids, stamps, offsets = a["keyframe_ids"], a["stamps_ns"], a["bow_offsets"]
        words, weights = a["bow_words"], a["bow_weights"]
        k = ids.size
        if stamps.size != k:
            raise ValueError(f"keyframe database: array 'stamps_ns' has {stamps.size} entries for {k} keyframes")
        if np.unique(ids).size != k:
            raise ValueError("keyframe database: array 'keyframe_ids' has duplicate ids")
        if offsets.size != k + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != words.size:
            raise ValueError(
                f"keyframe database: array 'bow_offsets' must rise from 0 to {words.size} in {k + 1} entries"
            )
        if weights.size != words.size:
            raise ValueError(
                f"keyframe database: array 'bow_weights' has {weights.size} entries, 'bow_words' {words.size}"
            )
        if words.size and (words.min() < 0 or words.max() > np.iinfo(np.int32).max):
            raise ValueError("keyframe database: array 'bow_words' has word ids outside int32's non-negative range")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("keyframe database: array 'bow_weights' must be finite and non-negative")
        # Within each vector the words must be strictly increasing (sorted, unique): steps
        # across vector boundaries are exempt.
        if words.size > 1:
            step_ok = np.diff(words.astype(np.int64)) > 0
            boundary = np.zeros(words.size - 1, dtype=bool)
            inner = offsets[1:-1]
            inner = inner[(inner > 0) & (inner < words.size)]
            boundary[inner - 1] = True
            if not np.all(step_ok | boundary):
                raise ValueError("keyframe database: array 'bow_words' is not sorted and unique within each keyframe")
        db = cls()
        for i in range(k):
            s, e = int(offsets[i]), int(offsets[i + 1])
            db.add(int(ids[i]), int(stamps[i]), BowVector(words[s:e], weights[s:e]))
        return db
