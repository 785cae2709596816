#!/usr/bin/env python3
"""Copy the headline tables of benchmarks/results/*.md into README.md (between markers).

The README quotes measured numbers only; this keeps them identical to the last benchmark run.
Run after the benchmarks (`bench_pgo.py`, `bench_kernels.py`, `bench_ba.py`, `bench_ba_windows.py`,
`bench_ba_kernels.py`, `bench_vo.py`, `bench_loop.py`, `bench_loop_pgo.py`); a results file that does not
exist is skipped with a message.

    python benchmarks/readme_tables.py                 # update README.md
    python benchmarks/readme_tables.py --stdout        # print the block instead
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- benchmark-tables:start -->", "<!-- benchmark-tables:end -->"

# (results file, headings to copy: a section is copied when its heading starts with one of these). The
# section runs to the next heading of the same or a higher level and is demoted so that it starts at level 4.
SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "pgo.md",
        (
            "Solve time [s], default pipeline",
            "Final cost (Δ vs GTSAM from the same start), default",
            "Mixed-precision",
        ),
    ),
    ("kernels.md", ("CG-iteration kernels",)),
    ("ba.md", ("BAL problem-49-7776",)),
    ("ba_windows.md", ("VO window timing", "VO window accuracy: mixed vs fp64")),
    # bench_ba_kernels.py's file is one "##" section (tables per problem below it): all of it.
    ("ba_kernels.md", ("Bundle-adjustment CG products",)),
    ("vo.md", ("VO: ",)),
    (
        "loop.md",
        (
            "Loop closure: synthetic two-lap room",
            "Loop closure: the same keyframes",
            "Loop closure: repeated-texture",
            "Loop closure: targets",
        ),
    ),
    (
        "loop_pgo.md",
        ("PGO solve time against keyframes", "Targets: mixed-precision PGO", "ATE over 800 PGO problems"),
    ),
)
HEADING = re.compile(r"^(#{1,6}) (.*)$")


def sections(text: str, wanted: tuple[str, ...]) -> list[str]:
    """The markdown sections whose heading starts with one of `wanted`, demoted to start at level 4."""
    lines = text.splitlines()
    heads = [(i, len(m.group(1)), m.group(2).strip()) for i, line in enumerate(lines) if (m := HEADING.match(line))]
    out: list[str] = []
    covered = -1  # a subsection of a section already copied is not copied twice
    for k, (i, level, title) in enumerate(heads):
        if i < covered or not any(title.startswith(w) for w in wanted):
            continue
        end = next((j for j, lv, _ in heads[k + 1 :] if lv <= level), len(lines))
        covered = end
        shift = 4 - level

        def demote(m: re.Match, shift: int = shift) -> str:
            return "#" * min(6, len(m.group(1)) + shift) + " " + m.group(2)

        out.append("\n".join(HEADING.sub(demote, line) for line in lines[i:end]).strip())
    return out


def machine_line(text: str) -> str | None:
    return next((line for line in text.splitlines() if line.startswith("Machine:")), None)


def build_blocks(results: Path) -> list[str]:
    """The README block: per results file its machine line (once, when it differs) and the wanted sections."""
    blocks: list[str] = []
    last_machine = None
    for name, wanted in SOURCES:
        path = results / name
        if not path.is_file():
            print(f"skipping {name}: {path} does not exist", file=sys.stderr)
            continue
        text = path.read_text()
        found = sections(text, wanted)
        if not found:
            print(f"skipping {name}: no section heading starts with {' / '.join(wanted)}", file=sys.stderr)
            continue
        machine = machine_line(text)
        if machine and machine != last_machine:
            blocks.append(machine)
            last_machine = machine
        blocks.extend(found)
    return blocks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="results directory")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md", help="the README to update")
    ap.add_argument("--stdout", action="store_true", help="print the block instead of writing the README")
    args = ap.parse_args(argv)

    blocks = build_blocks(args.results)
    if not blocks:
        print(f"error: no benchmark tables found in {args.results}; README left unchanged", file=sys.stderr)
        return 2
    body = "\n\n".join(blocks)
    if args.stdout:
        print(body)
        return 0
    readme = args.readme
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"error: {readme} has no {START} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n\n" + body + "\n\n" + END + tail)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
