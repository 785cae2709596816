"""Write a synthetic sequence in the formats the rest of the project reads.

``euroc`` (an EuRoC-style folder with ground truth), ``sqlite3`` and ``mcap`` (rosbag2 with images,
camera_info and ground-truth poses) and ``tum`` (the ground truth as a TUM trajectory). Rendering
is the slow part (~50 ms a stereo frame at 640x480), so when the EuRoC folder is among the
formats it is rendered once into it and the bags are filled from its PNGs, which are lossless.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..vision.types import Sequence

__all__ = ["EXPORT_FORMATS", "export_sequence"]

EXPORT_FORMATS = ("euroc", "sqlite3", "mcap", "tum")


def export_sequence(
    sequence: Sequence,
    out_dir: str | os.PathLike,
    formats: Iterable[str] = EXPORT_FORMATS,
    progress: bool = False,
    overwrite: bool = True,
) -> dict[str, Path]:
    """Write ``sequence`` into ``out_dir`` in each of ``formats``; returns format -> written path.

    Layout: ``<name>_euroc/``, ``<name>_sqlite3/``, ``<name>_mcap/``, ``<name>_groundtruth.tum``.
    """
    from ..io.euroc import read_euroc, write_euroc
    from ..io.rosbag import write_sequence_bag
    from ..io.trajectory import write_tum

    wanted = [f.strip() for f in formats if f.strip()]
    unknown = sorted(set(wanted) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {', '.join(EXPORT_FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = sequence.name or "sequence"
    written: dict[str, Path] = {}
    source = sequence
    if "euroc" in wanted:
        written["euroc"] = write_euroc(out / f"{name}_euroc", sequence, progress=progress, overwrite=overwrite)
        source = read_euroc(written["euroc"], mode=sequence.mode)
        source.name = name
    for storage in ("sqlite3", "mcap"):
        if storage in wanted:
            written[storage] = write_sequence_bag(
                out / f"{name}_{storage}", source, storage=storage, progress=progress, overwrite=overwrite
            )
    if "tum" in wanted:
        if sequence.ground_truth is None:
            raise ValueError(f"{name}: no ground truth to write as TUM")
        path = out / f"{name}_groundtruth.tum"
        write_tum(path, sequence.ground_truth, header=f"{name}: base_link in world, exact ground truth")
        written["tum"] = path
    return written
