"""Helpers shared by the benchmark scripts in this directory (bench_pgo.py, bench_ba.py, bench_ba_windows.py, ...).

Importing this module has two side effects the scripts rely on:

* the repository root goes on ``sys.path``, so ``mp_slam_ros`` is importable without an install;
* ``mp_slam_ros`` is imported, which picks the numba kernel cache shared with the CLI, the nodes and
  the tests (``NUMBA_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/mp_slam_ros`` or ``~/.cache/mp_slam_ros``;
  see :mod:`mp_slam_ros.numba_cache`) before numba is first imported.

The scripts import it as ``common`` (their own directory is ``sys.path[0]`` when run as
``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
import numpy as np  # noqa: E402

# Chooses the shared kernel cache; must happen before numba is imported.
import mp_slam_ros  # noqa: E402, F401

SHARED_DATA_ENV = "MP_SLAM_SHARED_DATA"
DEFAULT_DATA = Path("..") / "shared" / "data"  # relative to the repository root
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

__all__ = [
    "DEFAULT_DATA",
    "REPO_ROOT",
    "RESULTS_DIR",
    "SHARED_DATA_ENV",
    "RepeatPolicy",
    "add_output_args",
    "atomic_write",
    "code_version",
    "cpu_load_note",
    "data_origin",
    "fmt_cost",
    "fmt_ratio",
    "fmt_rel",
    "fmt_time",
    "gtsam_available",
    "gtsam_short_term",
    "gtsam_termination",
    "json_safe",
    "log",
    "log_bars",
    "log_start",
    "machine_info",
    "machine_line",
    "median_cpu",
    "median_index",
    "parse_choices",
    "parse_sizes",
    "portable_path",
    "progress",
    "ratio",
    "rel_diff",
    "rerender_source",
    "resolve_data_dir",
    "run_gtsam_lm",
    "run_repeated",
    "save_figure",
    "scrub",
    "short_term",
    "solver_options_dict",
    "summary_record",
    "summary_to_dict",
    "timed",
    "write_outputs",
]


# ----------------------------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    """Progress output: stderr, so stdout carries only the markdown tables."""
    print(msg, file=sys.stderr, flush=True)


def rel_diff(a: float | None, b: float | None) -> float | None:
    """(a - b) / |b|, or None when either is missing or not finite, or b is 0."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return (a - b) / abs(b)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or not finite, or b <= 0."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return a / b


def json_safe(obj: Any) -> Any:
    """Plain JSON types; non-finite floats become strings ("nan", "inf") so the file stays strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return str(obj)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temporary file, so an interrupted run never leaves a truncated result behind."""
    tmp = path.with_name(path.name + ".tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as fh:
        fh.write(data)
    os.replace(tmp, path)


def scrub(text: str) -> str:
    """Error text without machine-specific absolute paths (repository-relative, or file names only)."""
    text = text.replace(str(REPO_ROOT) + os.sep, "").replace(str(REPO_ROOT.parent) + os.sep, ".." + os.sep)
    return re.sub(r'File "([^"]*[/\\])([^"/\\]+)"', r'File "\2"', text)


def portable_path(path: Path) -> str:
    """``path`` relative to the repository root (never an absolute, machine-specific path)."""
    try:
        return os.path.relpath(path, REPO_ROOT)
    except ValueError:  # another drive on Windows
        return path.name


class _Counter:
    """Stand-in for a tqdm bar when tqdm is not installed: one stderr line per finished task."""

    def __init__(self, total: int, unit: str) -> None:
        self.total, self.unit, self.n, self.desc = total, unit, 0, ""
        self.start = time.perf_counter()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix_str(self, text: str) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.n += n
        log(f"[{self.n}/{self.total} {self.unit}, {time.perf_counter() - self.start:.0f} s] {self.desc}")

    def write(self, msg: str, file: Any = None) -> None:
        print(msg, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress(total: int, unit: str = "cfg") -> Any:
    """A tqdm progress bar on stderr, or a plain counter when tqdm is not installed (it is not a dependency)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total, unit)
    return tqdm(total=total, file=sys.stderr, dynamic_ncols=True, unit=unit)


# ----------------------------------------------------------------------------------------------
# data


def resolve_data_dir(
    arg: str | None, subdir: str, looks_right: Callable[[Path], bool], example: str
) -> tuple[Path, str]:
    """The ``subdir`` directory of the shared data (``pgo``, ``ba``, ...) and where its location came from.

    The location is ``--data`` (``arg``), else ``$MP_SLAM_SHARED_DATA``, else ``../shared/data`` relative to
    the repository root. Either may name the shared data root (holding ``subdir/``) or ``subdir`` itself;
    ``looks_right(candidate)`` decides which. ``example`` (a file relative to ``subdir``) is for the error.
    """
    if arg:
        base, origin = Path(arg).expanduser(), "--data"
    elif os.environ.get(SHARED_DATA_ENV):
        base, origin = Path(os.environ[SHARED_DATA_ENV]).expanduser(), f"${SHARED_DATA_ENV}"
    else:
        base, origin = REPO_ROOT / DEFAULT_DATA, f"the default, {DEFAULT_DATA} next to the repository root"
    base = base.resolve()  # --data / the variable: relative to the working directory
    for cand in (base / subdir, base):
        if looks_right(cand):
            return cand, origin
    what = {"pgo": "pose-graph", "ba": "bundle-adjustment"}.get(subdir, subdir)
    raise SystemExit(
        f"error: shared {what} data not found at {base} (from {origin}).\n"
        f"       Expected {base}/{subdir}/{example} etc. Point --data DIR or ${SHARED_DATA_ENV} at the shared "
        f"data directory (the one holding {subdir}/), or place it at {DEFAULT_DATA} relative to the repository root."
    )


def data_origin(origin: str) -> str:
    """``origin`` of :func:`resolve_data_dir` for the JSON (the default's text names a relative location)."""
    return "default" if origin.startswith("the default") else origin


# ----------------------------------------------------------------------------------------------
# machine info


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions, date, load average and :func:`code_version`, for the JSON."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None

    def version(pkg: str) -> str | None:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return None

    import numba

    info: dict[str, Any] = {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": version("scipy"),
        "numba": numba.__version__,
        "gtsam": version("gtsam"),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        info["memory"] = mem.split(":", 1)[1].strip()
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    info.update(code_version())
    return info


def code_version() -> dict[str, Any]:
    """Commit, uncommitted solver files and a hash of the package sources (the solver is being tuned)."""
    out: dict[str, Any] = {}
    pkg = REPO_ROOT / "mp_slam_ros"
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(f.relative_to(REPO_ROOT).as_posix().encode())
        h.update(f.read_bytes())
    out["mp_slam_ros_sources_sha256"] = h.hexdigest()[:16]
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        # --no-optional-locks: a read-only status that does not refresh the index.
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "mp_slam_ros"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        out["mp_slam_ros_uncommitted"] = [line[3:] for line in status.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def machine_line(machine: dict[str, Any], with_gtsam: bool = True) -> str:
    """The ``Machine: ...`` line of a results markdown (readme_tables.py copies it into the README)."""
    cores = machine.get("usable_cores") or machine.get("logical_cores")
    gtsam = f", gtsam {machine['gtsam']}" if with_gtsam else ""
    return (
        f"Machine: {machine['cpu_model']}, {cores} cores; Python {machine['python']}, numpy {machine['numpy']}, "
        f"scipy {machine['scipy']}, numba {machine['numba']}{gtsam}; {machine['date_utc']}; "
        f"mp_slam_ros {machine.get('git_commit', '?')[:10]}"
        + (" + uncommitted solver changes" if machine.get("mp_slam_ros_uncommitted") else "")
        + f" (sources {machine['mp_slam_ros_sources_sha256']})."
    )


def log_start(data_dir: Path | None, origin: str, machine: dict[str, Any], extra: str = "") -> None:
    """The first two progress lines of a run: where the data (or ``origin`` alone without a data directory) and the
    numba cache are, and the machine."""
    data = origin if data_dir is None else f"{data_dir} ({origin})"
    log(f"data: {data}; NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(none writable: in memory)')}")
    log(
        f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores; "
        f"sources {machine['mp_slam_ros_sources_sha256']}{extra}"
    )


def cpu_load_note(machine: dict[str, Any], runs: Iterable[dict]) -> str | None:
    """Record our process-CPU / wall ratio over ``runs`` (:func:`run_repeated` results) and the load average at
    the end in ``machine``; return the note explaining the ratio (None without timed runs).

    Our solves are effectively single-threaded, so a ratio well below 1 means other processes took the core.
    """
    with contextlib.suppress(OSError, AttributeError):
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    wall_sum = cpu_sum = 0.0
    for r in runs:
        wall_sum += sum(r.get("times", []))
        cpu_sum += sum(r.get("cpu_times", []))
    if wall_sum <= 0:
        return None
    machine["ours_cpu_over_wall"] = cpu_sum / wall_sum
    la = machine.get("load_average_at_start"), machine.get("load_average_at_end")
    return (
        f"Our runs used {cpu_sum / wall_sum:.2f} s of process CPU per wall-clock second "
        f"(load average at start {la[0]}, at end {la[1]}, {machine.get('usable_cores')} cores); a value well "
        "below 1 together with a high load average means other processes competed for the cores."
    )


# ----------------------------------------------------------------------------------------------
# timing


@dataclass
class RepeatPolicy:
    repeat: int
    single_run_above: float  # a first run slower than this is not repeated

    def more(self, times: list[float], first_run_fell_back: bool = False) -> bool:
        """Whether to run again. A slow configuration runs once; twice if its first run fell back to a wider
        precision, since that run may have paid the one-off JIT compilation of the fallback kernels."""
        if len(times) >= self.repeat:
            return False
        if times[-1] <= self.single_run_above:
            return True
        return len(times) == 1 and first_run_fell_back


def median_index(times: list[float]) -> int:
    """Index of the median run (the faster middle one for an even count)."""
    order = sorted(range(len(times)), key=times.__getitem__)
    return order[(len(order) - 1) // 2]


def median_cpu(r: dict) -> float | None:
    """Process CPU time of the median-wall-time run."""
    cpu = r.get("cpu_times")
    return cpu[median_index(r["times"])] if cpu else None


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall time and its process CPU time (CPU well below wall: other load on the machine)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return out, wall, time.process_time() - c0


def summary_to_dict(summary: Any) -> dict:
    """The solver summary as plain JSON; per-iteration reports are stored column-wise (one list per field)."""
    try:
        d = summary.to_dict()
    except Exception:
        d = {k: v for k, v in vars(summary).items() if not callable(v)}
    d = json.loads(json.dumps(json_safe(d)))
    its = d.get("iterations")
    if isinstance(its, list) and its and all(isinstance(x, dict) for x in its):
        keys = list(its[0])
        d["iterations"] = {k: [x.get(k) for x in its] for k in keys}
    return d


def summary_record(summary: Any, wall: float, cpu: float, final_cost_fp64: float) -> dict[str, Any]:
    """One run of our solver: times and the fields of its :class:`SolverSummary` the tables use.

    ``final_cost_fp64`` is the problem's fp64 cost of the final state: the summary's own ``final_cost`` is
    accumulated from residuals in the preset's residual precision.
    """
    return {
        "wall_time": wall,
        "cpu_time": cpu,  # process CPU time: well below wall time means other load on the machine
        "final_cost": float(summary.final_cost),
        "final_cost_fp64": float(final_cost_fp64),
        "initial_cost": float(summary.initial_cost),
        "num_iterations": int(summary.num_iterations),
        "total_cg_iterations": int(getattr(summary, "total_cg_iterations", 0)),
        "num_fallbacks": int(getattr(summary, "num_fallbacks", 0)),
        "termination": str(summary.termination),
        "message": str(getattr(summary, "message", "")),
        "stage_times": {k: float(v) for k, v in dict(summary.stage_times).items()},
        "summary": summary_to_dict(summary),
    }


def run_repeated(run_once: Callable[[], dict], policy: RepeatPolicy, bar: Any = None) -> dict:
    """Run one configuration of our solver as ``policy`` says; the median run's record plus all times.

    ``run_once`` returns a :func:`summary_record`. An exception is caught and returned as ``{"error": ...}``
    so the remaining configurations still run.
    """
    runs: list[dict] = []
    times: list[float] = []
    while True:
        if bar is not None:
            bar.set_postfix_str(f"run {len(times) + 1}")
        gc.collect()  # no collection of an earlier run's garbage inside the timed call
        try:
            run = run_once()
        except Exception as err:  # keep benchmarking the other configurations
            return {
                "error": scrub(f"{type(err).__name__}: {err}"),
                "traceback": scrub(traceback.format_exc(limit=6)),
                "runs": runs,
            }
        times.append(run["wall_time"])
        runs.append(run)
        if not policy.more(times, runs[0]["num_fallbacks"] > 0):
            break
    k = median_index(times)
    med = runs[k]
    result = {key: val for key, val in med.items() if key not in ("summary", "wall_time")}
    result["time"] = statistics.median(times)
    result["times"] = times
    result["cpu_times"] = [r["cpu_time"] for r in runs]
    result["n_runs"] = len(times)
    result["median_run_summary"] = med["summary"]
    result["deterministic"] = (
        len({r["final_cost_fp64"] for r in runs}) == 1 and len({r["num_iterations"] for r in runs}) == 1
    )
    if not result["deterministic"]:
        result["final_cost_fp64_runs"] = [r["final_cost_fp64"] for r in runs]
        result["num_iterations_runs"] = [r["num_iterations"] for r in runs]
    return result


# ----------------------------------------------------------------------------------------------
# GTSAM


def gtsam_available() -> str | None:
    """None if gtsam imports, else the (path-free) reason."""
    try:
        import gtsam  # noqa: F401
    except Exception as err:
        return scrub(f"{type(err).__name__}: {err}")
    return None


def run_gtsam_lm(graph: Any, initial: Any, params: Any, policy: RepeatPolicy, bar: Any = None) -> dict[str, Any]:
    """GTSAM's ``LevenbergMarquardtOptimizer`` on ``graph`` from ``initial``, repeated as ``policy`` says.

    Only ``optimize()`` is timed (the optimizer is built outside). Returns the per-run times, CPU times,
    iterations and ``graph.error`` values, the index of the median run and the first run's result values
    (GTSAM is deterministic, which ``deterministic`` checks).
    """
    import gtsam

    times: list[float] = []
    cpu_times: list[float] = []
    iters: list[int] = []
    errors: list[float] = []
    result = None
    while True:
        if bar is not None:
            bar.set_postfix_str(f"run {len(times) + 1}")
        opt = gtsam.LevenbergMarquardtOptimizer(graph, initial, params)
        gc.collect()
        values, wall, cpu = timed(opt.optimize)
        times.append(wall)
        cpu_times.append(cpu)
        iters.append(int(opt.iterations()))
        errors.append(float(graph.error(values)))
        if result is None:
            result = values
        if not policy.more(times):
            break
    return {
        "values": result,
        "median": median_index(times),
        "times": times,
        "cpu_times": cpu_times,
        "iterations": iters,
        "errors": errors,
        "deterministic": len(set(errors)) == 1 and len(set(iters)) == 1,
    }


def gtsam_lm_params_record(params: Any, max_iterations: int, **extra: Any) -> dict[str, Any]:
    """GTSAM ``LevenbergMarquardtParams`` as the JSON records store them, plus benchmark-specific ``extra``."""
    record = {
        "lambdaInitial": params.getlambdaInitial(),
        "lambdaFactor": params.getlambdaFactor(),
        "lambdaUpperBound": params.getlambdaUpperBound(),
        "relativeErrorTol": params.getRelativeErrorTol(),
        "absoluteErrorTol": params.getAbsoluteErrorTol(),
        "maxIterations": max_iterations,
        "linearSolverType": str(params.getLinearSolverType()),
    }
    record.update(extra)
    return record


def gtsam_termination(iterations: int, max_iterations: int, error: float, initial_error: float) -> str:
    """GTSAM's LM reports no status: infer one from the iteration count and the error."""
    if iterations >= max_iterations:
        return f"NO_CONVERGENCE (max {max_iterations} iterations)"
    if iterations == 0 or error >= initial_error:
        return "FAILURE (no step accepted)"
    return "CONVERGENCE"


# ----------------------------------------------------------------------------------------------
# markdown


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    if t >= 100:
        return f"{t:.0f}"
    if t >= 10:
        return f"{t:.1f}"
    if t >= 1:
        return f"{t:.2f}"
    return f"{t:.3f}"


def fmt_cost(c: float | None) -> str:
    return "-" if c is None or not math.isfinite(c) else f"{c:.7g}"


def fmt_rel(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1e}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def short_term(r: dict) -> str:
    """A short termination label of one of our runs (a :func:`summary_record` / :func:`run_repeated` dict)."""
    if "error" in r:
        return "CRASH"
    t = r["termination"]
    if t == "CONVERGENCE":
        return "conv"
    msg = r.get("message", "")
    if "iteration limit" in msg:
        return "max it"
    if "time limit" in msg:
        return "time limit"
    return t.lower()


def gtsam_short_term(gt: dict) -> str:
    """A short label of a :func:`gtsam_termination` string."""
    t = gt["termination"]
    return "conv" if t.startswith("CONVERGENCE") else "max it" if t.startswith("NO_CONV") else "**failed**"


# ----------------------------------------------------------------------------------------------
# outputs and command line


def parse_choices(text: str, allowed: Iterable[str], what: str) -> list[str]:
    """A comma-separated command-line list, checked against ``allowed`` (exits with a message otherwise)."""
    allowed = list(allowed)
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise SystemExit(f"error: unknown {what}(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
    if not items:
        raise SystemExit(f"error: no {what} given")
    return items


def rerender_source(args: argparse.Namespace) -> tuple[dict, Path, str]:
    """``--from-json``: the earlier results, the output directory (default: beside the JSON) and stem."""
    src = Path(args.from_json)
    out_dir = Path(args.out_dir) if args.out_dir else src.parent
    return json.loads(src.read_text()), out_dir, args.name or src.stem


def parse_sizes(text: str | None, default: Iterable[int]) -> list[int]:
    """``--sizes``: comma-separated keyframe counts, sorted and unique, each at least 2 (``default`` when
    not given); exits with a message otherwise."""
    if text:
        try:
            sizes = sorted({int(s) for s in text.split(",") if s.strip()})
        except ValueError:
            raise SystemExit(f"error: --sizes must be comma-separated integers, got {text!r}") from None
    else:
        sizes = list(default)
    if not sizes or any(s < 2 for s in sizes):
        raise SystemExit("error: every size must be at least 2 keyframes")
    return sizes


def solver_options_dict(options: Any) -> dict[str, Any]:
    """A ``SolverOptions`` as JSON, for the record of what was run (its defaults are still being tuned)."""
    from dataclasses import asdict

    return json_safe({k: v for k, v in asdict(options).items() if not callable(v) and k != "callback"})


def add_repeat_args(
    ap: argparse.ArgumentParser,
    repeat: int | None,
    repeat_help: str,
    single_run_above: float,
    single_run_above_help: str = "do not repeat a configuration whose first run took longer than SEC",
) -> None:
    """--repeat and --single-run-above (see :class:`RepeatPolicy`), with each benchmark's defaults."""
    ap.add_argument("--repeat", type=int, default=repeat, help=repeat_help)
    ap.add_argument(
        "--single-run-above",
        type=float,
        default=single_run_above,
        metavar="SEC",
        help=f"{single_run_above_help} (default {single_run_above:g})",
    )


def add_output_args(ap: argparse.ArgumentParser, stem: str, quick_stem: str | None = None) -> None:
    """--out-dir, --name, --no-plot and --from-json, which every benchmark script takes."""
    quick = f", or {quick_stem} with --quick" if quick_stem else ""
    ap.add_argument("--out-dir", default=None, help="output directory (default benchmarks/results)")
    ap.add_argument("--name", default=None, help=f"output file stem (default {stem}{quick})")
    ap.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    ap.add_argument(
        "--from-json",
        metavar="FILE",
        help=f"do not run anything: re-derive and re-render the tables and plot of an earlier {stem}.json",
    )


def log_bars(ax: Any, xlabels: list[str], series: list[tuple[str, list[float | None], list[bool], str]]) -> None:
    """Grouped bars on a log y axis, one group per x label and one bar per series (label, values, bad, colour).

    Bars whose ``bad`` flag is set (not converged, or above the best cost) are hatched; a missing value
    leaves a gap. Adds the legend, with an entry explaining the hatching.
    """
    from matplotlib.patches import Patch

    width = 0.84 / max(len(series), 1)
    x = np.arange(len(xlabels))
    for i, (label, vals, bad, color) in enumerate(series):
        xs = x - 0.42 + width * (i + 0.5)
        bars = ax.bar(xs, [v if v is not None else np.nan for v in vals], width, label=label, color=color)
        for b, is_bad in zip(bars, bad, strict=True):
            if is_bad:
                b.set_hatch("////")
                b.set_alpha(0.55)
                if hasattr(b, "set_hatchcolor"):  # matplotlib >= 3.10
                    b.set_hatchcolor("black" if color not in ("black", "dimgray") else "white")
                else:
                    b.set_edgecolor("black")
                    b.set_linewidth(0)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 10)  # room for the legend
    ax.set_xticks(x)
    ax.set_xticklabels(xlabels, fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    handles = [Patch(facecolor=color, label=label) for label, _, _, color in series]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="////", label="not converged / above best"))
    ax.legend(handles=handles, fontsize=7, ncol=4, loc="upper left")


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(
    results: dict,
    out_dir: Path,
    stem: str,
    markdown: str,
    plots: Iterable[tuple[str, Callable[[dict, Path], None]]] = (),
) -> None:
    """``<stem>.json``, ``<stem>.md`` (also printed to stdout) and one ``<stem><suffix>.png`` per plot.

    ``plots`` holds (suffix, function(results, path)); a failing plot is reported, not fatal, so the numbers
    of a long run are never lost to a plotting problem.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / f"{stem}.json", json.dumps(json_safe(results), indent=1) + "\n")
    atomic_write(out_dir / f"{stem}.md", markdown + "\n")
    written = []
    for suffix, plot in plots:
        name = f"{stem}{suffix}.png"
        try:
            plot(results, out_dir / name)
            written.append(name)
        except Exception as err:
            log(f"warning: plot {name} failed: {type(err).__name__}: {err}")
    print(markdown)
    log(f"wrote {portable_path(out_dir / stem)}.{{json,md}}" + (f" and {', '.join(written)}" if written else ""))
