"""Reading ``.npz`` archives we wrote ourselves (maps, vocabularies) from files we cannot trust.

numpy answers a file that is not an archive, or an archive holding Python objects, with advice to
"load it unsafely using allow_pickle=". Unpickling runs arbitrary code, so that advice must never
reach a user: every failure here becomes an :class:`InputFormatError` naming the file (and the
array, when one is at fault) that says what is wrong instead.
"""

from __future__ import annotations

import os
from collections.abc import Collection

import numpy as np

from .errors import InputFormatError

__all__ = ["read_npz"]

# Local file header, empty archive (end of central directory), spanned archive.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "pickle" in text.lower():  # numpy's hint to unpickle: replace, never repeat
        return "holds pickled Python objects, which are never loaded (not data this program wrote)"
    return f"truncated or corrupt ({type(exc).__name__}: {text})"


def read_npz(path: str | os.PathLike[str], names: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (only ``names`` when given), read without pickles.

    Raises FileNotFoundError for a missing file and :class:`InputFormatError` for anything that is
    not a readable archive of plain arrays.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:  # a missing file keeps its own, clearer, exception
        raise
    except OSError as exc:  # a directory, no permission, an I/O error
        raise InputFormatError(path, reason=f"unreadable ({type(exc).__name__}: {exc.strerror or exc})") from None
    if head not in _ZIP_MAGIC:
        raise InputFormatError(path, reason="not an .npz archive (it does not start with a zip header)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for name in data.files:
                if names is not None and name not in names:
                    continue
                try:
                    arrays[name] = data[name]
                except ValueError as exc:  # an object array in an otherwise fine archive
                    raise InputFormatError(path, field=name, reason=_reason(exc)) from None
    except InputFormatError:
        raise
    except Exception as exc:  # zipfile, zlib and numpy raise a zoo of types for a damaged archive
        raise InputFormatError(path, reason=_reason(exc)) from None
    return arrays
