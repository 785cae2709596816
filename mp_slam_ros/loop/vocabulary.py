"""A binary bag-of-words vocabulary over 256-bit ORB descriptors (DBoW2 style).

Place recognition needs a cheap, fixed-length summary of a keyframe that two views of the same
place share and two different places do not. Following Gálvez-López and Tardós (2012, "Bags of
binary words for fast place recognition in image sequences"), descriptors are quantised by a
vocabulary tree: a hierarchical k-majority clustering (k-medians in Hamming space, with
bitwise-majority centres) of ``depth`` levels and ``branching`` children per node. A descriptor
descends from the root to the nearest child at every level; the leaf it reaches is its *word*.
A keyframe becomes a sparse tf-idf vector over words, L1-normalised, and two keyframes are
compared with the L1 score ``1 - 0.5 |a - b|_1`` in ``[0, 1]``.

Tree layout: nodes are numbered breadth first (the root is node 0) and the children of a node are
contiguous, so the tree is three flat arrays (``first_child``, ``num_children``, ``node_word``)
plus one 32-byte centre per node. That makes the descent a tight numba loop (about 40 Hamming
distances per descriptor for the bundled tree) and the ``.npz`` file small and easy to validate.

The bundled vocabulary (``data/orb_vocabulary.npz``) was trained on the synthetic room with
``scene_seed=1`` (both the two-lap path and the figure-eight path, 640x480, every 4th frame,
Shi-Tomasi corners from :func:`~mp_slam_ros.vision.features.detect_features` with
``FeatureOptions(max_features=1000)`` described by
:func:`~mp_slam_ros.vision.features.orb_descriptors`), which is *not* the room the demo and the
tests run in (``scene_seed=0``), so retrieval is never evaluated on training data. Regenerate it
from the repository root with::

    mp-slam vocabulary train synthetic --out mp_slam_ros/loop/data/orb_vocabulary.npz \\
        --branching 10 --depth 4 --every 4 --max-features 1000 --seed 0

That is 310 images and 266,166 descriptors, giving 9,996 words (k=10, L=4) in a 377 kB file, in
about 25 s on one core (the clustering itself takes 3 s; the rest is rendering and feature
detection). Training is deterministic: the same seed and input give the same vocabulary.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
from numba import types
from numba.extending import intrinsic

from ..io.errors import InputFormatError
from ..io.files import atomic_write_bytes
from ..io.npz import read_npz
from ..solver.jit import jit

if TYPE_CHECKING:
    from ..vision.types import Sequence as FrameSequence

__all__ = [
    "DESCRIPTOR_BYTES",
    "BinaryVocabulary",
    "BowVector",
    "bow_score",
    "default_vocabulary",
    "synthetic_training_sequences",
    "training_descriptors",
]

#: Bytes of one ORB descriptor (256 bits).
DESCRIPTOR_BYTES = 32

#: Version of the ``.npz`` layout written by :meth:`BinaryVocabulary.save`.
FORMAT_VERSION = 1

#: Name of the bundled vocabulary inside the package's ``data`` folder.
BUNDLED_FILE = "orb_vocabulary.npz"

# k-majority stops when no assignment changes; this bounds the rare oscillating node (majority
# centres can cycle between ties), and later iterations barely move the centres anyway.
_MAX_ITERATIONS = 30

# Arrays of the .npz file and their dtypes; scalars are 0-d arrays.
_FIELDS = {
    "format_version": np.int64,
    "branching": np.int64,
    "depth": np.int64,
    "num_training_images": np.int64,
    "centers": np.uint8,
    "first_child": np.int32,
    "num_children": np.int32,
    "node_word": np.int32,
    "idf": np.float32,
}


# --------------------------------------------------------------------------- numba kernels
@intrinsic
def _popcount(typingctx, x):
    """LLVM's ctpop: a single POPCNT instruction on any x86-64 or ARMv8 the JIT targets."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@jit(nogil=True, inline="always")
def _hamming(a: np.ndarray, i: int, b: np.ndarray, j: int) -> int:
    d = 0
    for w in range(4):
        d += _popcount(a[i, w] ^ b[j, w])
    return d


@jit(nogil=True)
def _descend(
    desc: np.ndarray, centers: np.ndarray, first_child: np.ndarray, num_children: np.ndarray, node_word: np.ndarray
) -> np.ndarray:
    """Word of each descriptor: nearest child at every level, first one on ties (as in training)."""
    n = desc.shape[0]
    out = np.empty(n, dtype=np.int32)
    for i in range(n):
        node = 0
        while num_children[node] > 0:
            c0 = first_child[node]
            best = c0
            best_d = _hamming(desc, i, centers, c0)
            for c in range(c0 + 1, c0 + num_children[node]):
                d = _hamming(desc, i, centers, c)
                if d < best_d:
                    best_d = d
                    best = c
            node = best
        out[i] = node_word[node]
    return out


@jit(nogil=True)
def _assign(desc: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> bool:
    """Nearest centre of every descriptor into ``labels``; True if any label changed."""
    changed = False
    k = centers.shape[0]
    for i in range(desc.shape[0]):
        best = 0
        best_d = _hamming(desc, i, centers, 0)
        for c in range(1, k):
            d = _hamming(desc, i, centers, c)
            if d < best_d:
                best_d = d
                best = c
        if labels[i] != best:
            labels[i] = best
            changed = True
    return changed


@jit(nogil=True)
def _majority(desc: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> None:
    """Bitwise-majority centre of each cluster, in place (ties set the bit; empty clusters stay).

    The majority bit vector minimises the summed Hamming distance to the members, so it is the
    binary counterpart of a k-means mean (a k-median).
    """
    k = centers.shape[0]
    counts = np.zeros((k, 256), dtype=np.int64)
    sizes = np.zeros(k, dtype=np.int64)
    one = np.uint64(1)
    for i in range(desc.shape[0]):
        c = labels[i]
        sizes[c] += 1
        for w in range(4):
            x = desc[i, w]
            for b in range(64):
                counts[c, 64 * w + b] += np.int64((x >> np.uint64(b)) & one)
    for c in range(k):
        if sizes[c] == 0:
            continue
        for w in range(4):
            v = np.uint64(0)
            for b in range(64):
                if 2 * counts[c, 64 * w + b] >= sizes[c]:
                    v |= one << np.uint64(b)
            centers[c, w] = v


@jit(nogil=True)
def _update_min_distance(desc: np.ndarray, center: np.ndarray, min_d: np.ndarray) -> None:
    for i in range(desc.shape[0]):
        d = _hamming(desc, i, center, 0)
        if d < min_d[i]:
            min_d[i] = d


# --------------------------------------------------------------------------- bag-of-words vectors
@dataclass(frozen=True, eq=False)
class BowVector:
    """A sparse, L1-normalised tf-idf bag-of-words vector.

    ``word_ids`` are sorted and unique (int32) so two vectors intersect with a merge, and
    ``weights`` (float32, positive, summing to 1) line up with them. The arrays are read-only:
    the keyframe database keeps references to them in its inverted index.
    """

    word_ids: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        ids = np.array(self.word_ids, dtype=np.int32).reshape(-1)
        w = np.array(self.weights, dtype=np.float32).reshape(-1)
        if ids.shape != w.shape:
            raise ValueError(f"BowVector: {ids.size} word ids but {w.size} weights")
        ids.setflags(write=False)
        w.setflags(write=False)
        object.__setattr__(self, "word_ids", ids)
        object.__setattr__(self, "weights", w)

    def __len__(self) -> int:
        return int(self.word_ids.size)


def bow_score(a: BowVector, b: BowVector) -> float:
    """DBoW2's L1 score ``1 - 0.5 |a - b|_1`` in ``[0, 1]`` of two L1-normalised vectors.

    For non-negative vectors of unit L1 norm ``|a_i - b_i| = a_i + b_i - 2 min(a_i, b_i)``, so the
    score is the sum of ``min(a_i, b_i)`` over the shared words: only the intersection matters,
    which is what lets the inverted index of :class:`~mp_slam_ros.loop.database.KeyframeDatabase`
    score without touching unrelated keyframes. An empty vector scores 0 against anything.
    """
    _, ia, ib = np.intersect1d(a.word_ids, b.word_ids, assume_unique=True, return_indices=True)
    if ia.size == 0:
        return 0.0
    s = float(np.minimum(a.weights[ia].astype(np.float64), b.weights[ib].astype(np.float64)).sum())
    return min(max(s, 0.0), 1.0)


# --------------------------------------------------------------------------- the vocabulary
class _FieldError(Exception):
    """A bad vocabulary array: ``load`` turns it into InputFormatError naming the file and field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _as_descriptors(descriptors: np.ndarray, what: str = "descriptors") -> np.ndarray:
    """(N, 32) uint8, C-contiguous, so it can be viewed as (N, 4) uint64 without a copy."""
    d = np.asarray(descriptors)
    if d.dtype != np.uint8 or d.ndim != 2 or d.shape[1] != DESCRIPTOR_BYTES:
        raise ValueError(f"{what}: expected (N, {DESCRIPTOR_BYTES}) uint8 ORB descriptors, got {d.shape} {d.dtype}")
    return np.ascontiguousarray(d)


def _as_words64(d8: np.ndarray) -> np.ndarray:
    return d8.view(np.uint64).reshape(d8.shape[0], DESCRIPTOR_BYTES // 8)


class BinaryVocabulary:
    """A vocabulary tree of binary words; see the module docstring for the method and file layout.

    Build one with :meth:`train` or :meth:`load` (or :func:`default_vocabulary`); the constructor
    takes the raw arrays and validates them.
    """

    def __init__(
        self,
        centers: np.ndarray,
        first_child: np.ndarray,
        num_children: np.ndarray,
        node_word: np.ndarray,
        idf: np.ndarray,
        branching: int,
        depth: int,
        num_training_images: int = 0,
    ) -> None:
        arrays = {
            "format_version": np.asarray(FORMAT_VERSION),
            "branching": np.asarray(branching),
            "depth": np.asarray(depth),
            "num_training_images": np.asarray(num_training_images),
            "centers": np.asarray(centers),
            "first_child": np.asarray(first_child),
            "num_children": np.asarray(num_children),
            "node_word": np.asarray(node_word),
            "idf": np.asarray(idf),
        }
        try:
            self._set(arrays)
        except _FieldError as err:
            raise ValueError(f"BinaryVocabulary: field '{err.field}': {err.reason}") from None

    def _set(self, arrays: dict[str, np.ndarray]) -> None:
        """Validate the arrays (raising _FieldError) and take them over."""
        for name, dtype in _FIELDS.items():
            if name not in arrays:
                raise _FieldError(name, "missing")
            a = arrays[name]
            if dtype in (np.int64, np.int32) and not np.issubdtype(a.dtype, np.integer):
                raise _FieldError(name, f"expected integers, got {a.dtype}")
            if dtype is np.float32 and not np.issubdtype(a.dtype, np.floating):
                raise _FieldError(name, f"expected floats, got {a.dtype}")
            if dtype is np.uint8 and a.dtype != np.uint8:
                raise _FieldError(name, f"expected uint8, got {a.dtype}")
            if _FIELDS[name] is np.int64 and a.ndim != 0:
                raise _FieldError(name, f"expected a scalar, got shape {a.shape}")
        if int(arrays["format_version"]) != FORMAT_VERSION:
            raise _FieldError("format_version", f"unsupported version {int(arrays['format_version'])}")
        k, L = int(arrays["branching"]), int(arrays["depth"])
        if k < 2:
            raise _FieldError("branching", f"must be at least 2, got {k}")
        if L < 1:
            raise _FieldError("depth", f"must be at least 1, got {L}")
        if int(arrays["num_training_images"]) < 0:
            raise _FieldError("num_training_images", "must not be negative")
        centers = arrays["centers"]
        if centers.ndim != 2 or centers.shape[1] != DESCRIPTOR_BYTES or centers.shape[0] < 1:
            raise _FieldError("centers", f"expected shape (num_nodes, {DESCRIPTOR_BYTES}), got {centers.shape}")
        m = centers.shape[0]
        vectors = {}
        for name in ("first_child", "num_children", "node_word"):
            a = arrays[name]
            if a.shape != (m,):
                raise _FieldError(name, f"expected shape ({m},) like centers, got {a.shape}")
            if a.size and (a.min() < -1 or a.max() >= m):
                raise _FieldError(name, f"values must be in [-1, {m})")
            vectors[name] = a.astype(np.int32)
        first, count, word = vectors["first_child"], vectors["num_children"], vectors["node_word"]
        if count.min() < 0 or count.max() > k:
            raise _FieldError("num_children", f"must be in [0, {k}]")
        internal = count > 0
        nodes = np.arange(m)
        # Children after their parent (breadth-first numbering) guarantees the descent ends.
        if np.any(first[internal] <= nodes[internal]) or np.any(first[internal] + count[internal] > m):
            raise _FieldError("first_child", "children must follow their parent and lie inside the tree")
        parents = np.zeros(m, dtype=np.int64)
        for s, c in zip(first[internal], count[internal], strict=True):
            parents[s : s + c] += 1
        if parents[0] != 0 or np.any(parents[1:] != 1):
            raise _FieldError("first_child", "every node but the root must have exactly one parent")
        idf = arrays["idf"]
        leaves = ~internal
        num_words = int(leaves.sum())
        if idf.shape != (num_words,):
            raise _FieldError("idf", f"expected shape ({num_words},) (one per leaf), got {idf.shape}")
        if not np.all(np.isfinite(idf)) or np.any(idf < 0):
            raise _FieldError("idf", "weights must be finite and non-negative")
        if np.any(word[internal] != -1) or not np.array_equal(np.sort(word[leaves]), np.arange(num_words)):
            raise _FieldError("node_word", "leaves must carry the word ids 0..num_words-1 once each, other nodes -1")

        self._branching, self._depth = k, L
        self._num_training_images = int(arrays["num_training_images"])
        self._centers = np.ascontiguousarray(centers)
        self._centers64 = _as_words64(self._centers)
        self._first_child, self._num_children, self._node_word = first, count, word
        self._idf = np.ascontiguousarray(idf, dtype=np.float32)
        for a in (self._centers, self._first_child, self._num_children, self._node_word, self._idf):
            a.setflags(write=False)

    # ------------------------------------------------------------------ properties
    @property
    def num_words(self) -> int:
        """Number of words (leaves)."""
        return int(self._idf.size)

    @property
    def num_nodes(self) -> int:
        """Number of tree nodes including the root."""
        return int(self._centers.shape[0])

    @property
    def branching(self) -> int:
        return self._branching

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def num_training_images(self) -> int:
        return self._num_training_images

    @property
    def idf(self) -> np.ndarray:
        """idf weight per word, ``log(N / n_w)`` over the training images (read-only)."""
        return self._idf

    def __repr__(self) -> str:
        return (
            f"BinaryVocabulary(words={self.num_words}, branching={self.branching}, depth={self.depth}, "
            f"training_images={self.num_training_images})"
        )

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        descriptor_sets: Sequence[np.ndarray],
        branching: int,
        depth: int,
        seed: int = 0,
        progress: bool = False,
    ) -> BinaryVocabulary:
        """Cluster the descriptors of the training images into a tree of ``branching**depth`` words at most.

        ``descriptor_sets`` holds one (N_i, 32) uint8 array per training image; images matter (not
        only descriptors) because the idf weight of a word is ``log(N / n_w)`` with ``N`` the
        number of images that have descriptors and ``n_w`` the number containing the word, so
        words seen everywhere (floor texture, noise) count little. Each node is split with
        k-medians++ seeding (the same seed gives the same tree) and k-majority iterations; a
        node with at most ``branching`` descriptors gets one child per distinct descriptor, and a
        node whose descriptors are all equal stays a leaf, as in DBoW2.
        """
        if branching < 2:
            raise ValueError(f"branching must be at least 2, got {branching}")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        sets = [_as_descriptors(d, f"descriptor_sets[{i}]") for i, d in enumerate(descriptor_sets)]
        sets = [d for d in sets if d.shape[0] > 0]
        if not sets:
            raise ValueError("train: no descriptors in the training images")
        all8 = np.concatenate(sets)
        all64 = _as_words64(all8)
        rng = np.random.default_rng(seed)

        centers: list[np.ndarray] = [np.zeros(DESCRIPTOR_BYTES // 8, dtype=np.uint64)]  # the root has none
        first_child: list[int] = [0]
        num_children: list[int] = [0]
        # Breadth first, so children come after their parent and sit next to each other.
        queue: list[tuple[int, np.ndarray, int]] = [(0, np.arange(all64.shape[0]), 0)]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=depth, desc="vocabulary levels", unit="level", dynamic_ncols=True)
        level_done = 0
        head = 0
        while head < len(queue):
            node, idx, level = queue[head]
            head += 1
            if bar is not None and level > level_done:
                bar.update(level - level_done)
                level_done = level
            child_centers, groups = _split(all64[idx], branching, rng)
            if len(child_centers) < 2:
                continue  # all descriptors equal: nothing to split, the node is a word
            first_child[node] = len(centers)
            num_children[node] = len(child_centers)
            for c, g in zip(child_centers, groups, strict=True):
                child = len(centers)
                centers.append(c)
                first_child.append(0)
                num_children.append(0)
                if level + 1 < depth and g.size > 1:
                    queue.append((child, idx[g], level + 1))
        if bar is not None:
            bar.update(depth - level_done)
            bar.close()

        centers64 = np.ascontiguousarray(np.stack(centers))
        count = np.asarray(num_children, dtype=np.int32)
        first = np.asarray(first_child, dtype=np.int32)
        node_word = np.full(count.size, -1, dtype=np.int32)
        leaves = np.flatnonzero(count == 0)
        node_word[leaves] = np.arange(leaves.size, dtype=np.int32)

        # idf from how many training images contain each word (via the descent, which is what
        # queries will use, rather than the clustering's own assignment).
        image_count = np.zeros(leaves.size, dtype=np.int64)
        for d in sets:
            w = _descend(_as_words64(d), centers64, first, count, node_word)
            image_count[np.unique(w)] += 1
        n_images = len(sets)
        # Every leaf holds training descriptors and the descent retraces their clustering, so each
        # word is seen at least once; the guard only keeps a hand-made tree from dividing by zero.
        idf = np.log(n_images / np.maximum(image_count, 1)).astype(np.float32)
        return cls(
            centers=centers64.view(np.uint8).reshape(-1, DESCRIPTOR_BYTES),
            first_child=first,
            num_children=count,
            node_word=node_word,
            idf=idf,
            branching=branching,
            depth=depth,
            num_training_images=n_images,
        )

    # ------------------------------------------------------------------ use
    def words(self, descriptors: np.ndarray) -> np.ndarray:
        """Word id (int32) of each descriptor of an (N, 32) uint8 array, by greedy tree descent."""
        d8 = _as_descriptors(descriptors)
        if d8.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        return _descend(_as_words64(d8), self._centers64, self._first_child, self._num_children, self._node_word)

    def transform(self, descriptors: np.ndarray) -> BowVector:
        """The keyframe's tf-idf bag of words, L1-normalised (DBoW2's TF_IDF weighting).

        Words with zero idf (in every training image) carry no information and are left out.
        """
        w = self.words(descriptors)
        if w.size == 0:
            return BowVector(np.zeros(0, np.int32), np.zeros(0, np.float32))
        ids, counts = np.unique(w, return_counts=True)
        weights = counts * self._idf[ids].astype(np.float64)
        keep = weights > 0
        ids, weights = ids[keep], weights[keep]
        total = weights.sum()
        if total > 0:
            weights /= total
        return BowVector(ids.astype(np.int32), weights.astype(np.float32))

    def score(self, a: BowVector, b: BowVector) -> float:
        """Similarity of two bag-of-words vectors in ``[0, 1]``; see :func:`bow_score`."""
        return bow_score(a, b)

    # ------------------------------------------------------------------ files
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the ``.npz`` file (read-only views)."""
        return {
            "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
            "branching": np.asarray(self._branching, dtype=np.int64),
            "depth": np.asarray(self._depth, dtype=np.int64),
            "num_training_images": np.asarray(self._num_training_images, dtype=np.int64),
            "centers": self._centers,
            "first_child": self._first_child,
            "num_children": self._num_children,
            "node_word": self._node_word,
            "idf": self._idf,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a compressed ``.npz``, atomically (a reader never sees half a vocabulary)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self.to_arrays())
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BinaryVocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises FileNotFoundError for a missing file and
        :class:`~mp_slam_ros.io.errors.InputFormatError` naming the file (and the field, when one
        array is missing or inconsistent) for anything that is not a valid vocabulary.
        """
        path = os.fspath(path)
        try:
            arrays = read_npz(path, names=_FIELDS)
        except InputFormatError as err:  # read_npz never passes on numpy's advice to unpickle
            reason = f"not a readable vocabulary .npz: {err.reason}"
            raise InputFormatError(path, field=err.field, reason=reason) from None
        vocab = cls.__new__(cls)
        try:
            vocab._set(arrays)
        except _FieldError as err:
            raise InputFormatError(path, field=err.field, reason=err.reason) from None
        return vocab


def _split(desc: np.ndarray, k: int, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Cluster one node's descriptors ((n, 4) uint64) into at most k: (centres, member indices)."""
    n = desc.shape[0]
    if n <= k:
        # DBoW2's trivial case: every distinct descriptor is its own child.
        _, first = np.unique(desc, axis=0, return_index=True)
        first = np.sort(first)
        uniq = desc[first]
        labels = np.zeros(n, dtype=np.int64)
        _assign(desc, np.ascontiguousarray(uniq), labels)
        return list(uniq), [np.flatnonzero(labels == c) for c in range(len(uniq))]

    # k-medians++ seeding: each new centre is drawn with probability proportional to the squared
    # distance to the nearest centre so far, which spreads the seeds over the data.
    chosen = [int(rng.integers(n))]
    min_d = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    _update_min_distance(desc, desc[chosen[0] : chosen[0] + 1], min_d)
    while len(chosen) < k:
        p = min_d.astype(np.float64) ** 2
        total = p.sum()
        if total <= 0:
            break  # fewer distinct descriptors than k
        j = int(np.searchsorted(np.cumsum(p), rng.random() * total, side="right"))
        j = min(j, n - 1)
        chosen.append(j)
        _update_min_distance(desc, desc[j : j + 1], min_d)
    centers = np.ascontiguousarray(desc[chosen])
    if centers.shape[0] < 2:
        return list(centers), [np.arange(n)]

    labels = np.full(n, -1, dtype=np.int64)
    _assign(desc, centers, labels)
    for _ in range(_MAX_ITERATIONS):
        _majority(desc, labels, centers)
        if not _assign(desc, centers, labels):
            break
    # Every label is now the nearest centre (first on ties), exactly what the descent will do;
    # centres nobody chose are dropped, which cannot change any descriptor's nearest centre.
    used = np.flatnonzero(np.bincount(labels, minlength=centers.shape[0]) > 0)
    return [centers[c] for c in used], [np.flatnonzero(labels == c) for c in used]


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> BinaryVocabulary:
    """The vocabulary shipped with the package (loaded once, then shared: it is immutable)."""
    ref = resources.files(__package__).joinpath("data", BUNDLED_FILE)
    with resources.as_file(ref) as path:
        return BinaryVocabulary.load(path)


# --------------------------------------------------------------------------- training data
def synthetic_training_sequences(width: int = 640, height: int = 480) -> list[FrameSequence]:
    """The synthetic room with ``scene_seed=1`` along the two-lap and the figure-eight paths.

    A different room from the ``scene_seed=0`` one of the demo and the tests, so a vocabulary
    trained here is evaluated on places it has never seen.
    """
    from ..sim.sequence import make_sequence

    return [
        make_sequence(trajectory=name, mode="stereo", width=width, height=height, scene_seed=1)
        for name in ("two_lap_room", "figure_eight")
    ]


def training_descriptors(
    sequence: FrameSequence,
    every: int = 1,
    max_images: int | None = None,
    max_features: int = 1000,
    progress: bool = False,
) -> list[np.ndarray]:
    """ORB descriptors of every ``every``-th frame's image (at most ``max_images``), one array per image.

    Features are found as the visual odometry finds them at keyframes (grid-spread Shi-Tomasi
    corners, upright ORB), only more of them, so the words cover what keyframes will show.
    """
    from ..vision.features import FeatureOptions, detect_features, orb_descriptors

    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    options = FeatureOptions(max_features=max_features)
    wanted = list(range(0, sequence.num_frames, every))
    if max_images is not None:
        wanted = wanted[:max_images]
    frames = sequence.frames
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(wanted), desc=sequence.name or "images", unit="image", dynamic_ncols=True)

    def images() -> Iterator[np.ndarray]:
        if hasattr(frames, "frame"):  # random access (synthetic): render only the wanted frames
            for i in wanted:
                yield frames.frame(i).image
            return
        keep = set(wanted)
        for i, frame in enumerate(frames()):
            if i > wanted[-1]:
                break
            if i in keep:
                yield frame.image

    out = []
    if wanted:
        for image in images():
            pts = detect_features(image, np.zeros((0, 2), np.float32), options)
            desc, _ = orb_descriptors(image, pts)
            out.append(np.ascontiguousarray(desc, dtype=np.uint8).reshape(-1, DESCRIPTOR_BYTES))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out
