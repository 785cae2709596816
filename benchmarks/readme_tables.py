#!/usr/bin/env python3
"""Copy the headline tables of benchmarks/results/*.md into README.md (between markers).

The README quotes measured numbers only; this keeps them identical to the last benchmark run.
Run after `bench_pgo.py` and `bench_kernels.py`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- benchmark-tables:start -->", "<!-- benchmark-tables:end -->"
PGO_SECTIONS = (
    "Solve time [s], default pipeline",
    "Final cost (Δ vs GTSAM from the same start), default",
    "Mixed-precision",
)
KERNEL_SECTIONS = ("CG-iteration kernels",)


def sections(text: str, wanted: tuple[str, ...], level: str) -> list[str]:
    """The markdown sections whose heading starts with one of `wanted`, demoted to level 4."""
    parts = re.split(rf"(?m)^(?={level} )", text)
    out = []
    for part in parts:
        heading = part.split("\n", 1)[0].lstrip("#").strip()
        if any(heading.startswith(w) for w in wanted):
            out.append(re.sub(rf"^{level} ", "#### ", part.strip(), count=1))
    return out


def main() -> int:
    results = ROOT / "benchmarks" / "results"
    pgo = (results / "pgo.md").read_text()
    machine = next(line for line in pgo.splitlines() if line.startswith("Machine:"))
    kernels = (results / "kernels.md").read_text()
    blocks = [machine, *sections(pgo, PGO_SECTIONS, "###"), *sections(kernels, KERNEL_SECTIONS, "##")]
    readme = ROOT / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"error: {readme} has no {START} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n\n" + "\n\n".join(blocks) + "\n\n" + END + tail)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
