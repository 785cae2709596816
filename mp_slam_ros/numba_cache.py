"""Where numba keeps the compiled kernels: one on-disk cache per user, shared by every entry point.

The kernels take tens of seconds to compile, so the CLI, the ROS nodes, the tests and the
benchmarks must all find the same cache. numba reads ``NUMBA_CACHE_DIR`` when it is imported and
decides where a function is cached when the function is decorated, so this module runs from
``mp_slam_ros/__init__.py``, before any kernel module imports numba. It imports nothing heavy.

Order of the candidates:

1. ``NUMBA_CACHE_DIR`` if the user set it (honoured as is: only that directory is tried);
2. ``$XDG_CACHE_HOME/mp_slam_ros`` (when ``XDG_CACHE_HOME`` is an absolute path);
3. ``~/.cache/mp_slam_ros``.

The first writable one is used.  A new, empty per-user one (2 or 3) is first seeded from the install's kernel cache
(:func:`seed_dirs`: ``MP_SLAM_KERNEL_SEED``, or ``<prefix>/share/mp_slam_ros/kernel_cache`` that
``make venv`` fills after ``mp-slam warmup``): numba keys its cache by the source file's path and
time stamp, so kernels compiled once for an install load for every user of that install.  (numba
cannot load from a read-only directory, so the seed is copied, not used in place.)

If none is writable (read-only install, service account without a home),
kernels compile in memory in every process instead of numba raising "no locator available" at
import; :data:`CACHE_DIR` is then None and one warning names the directories tried.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

ENV_VAR = "NUMBA_CACHE_DIR"
SEED_ENV_VAR = "MP_SLAM_KERNEL_SEED"
SUBDIR = "mp_slam_ros"
_SEEDED_MARKER = ".seeded-from"


class NumbaCacheWarning(RuntimeWarning):
    """No cache directory is writable: kernels are compiled in memory in every process."""


def candidate_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Cache directories to try, best first (see the module docstring)."""
    env = os.environ if environ is None else environ
    user_dir = env.get(ENV_VAR, "")
    if user_dir:
        return [Path(user_dir).expanduser()]
    out: list[Path] = []
    xdg = env.get("XDG_CACHE_HOME", "")
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        out.append(Path(xdg) / SUBDIR)
    home = env.get("HOME", "")
    if not home and environ is None:
        try:
            home = str(Path.home())  # from the password database when HOME is unset
        except (RuntimeError, KeyError):
            home = ""
    if home:
        fallback = Path(home).expanduser() / ".cache" / SUBDIR
        if fallback not in out:
            out.append(fallback)
    return out


def is_writable_dir(path: Path) -> bool:
    """Whether `path` exists (or can be created) and a file can be written in it.

    A real write, not os.access: root passes every permission check, and a read-only mount or a
    path under a regular file only fails when something is actually written.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True


def resolve_cache_dir(environ: Mapping[str, str] | None = None) -> tuple[Path | None, list[Path]]:
    """The first writable candidate (None if there is none) and the candidates that were tried."""
    tried = candidate_dirs(environ)
    for path in tried:
        if is_writable_dir(path):
            return path.resolve(), tried
    return None, tried


def seed_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Read-only kernel caches an install ships (see the module docstring), best first."""
    env = os.environ if environ is None else environ
    out = [Path(env[SEED_ENV_VAR]).expanduser()] if env.get(SEED_ENV_VAR) else []
    out.append(Path(sys.prefix) / "share" / SUBDIR / "kernel_cache")
    return out


def seed_cache(cache_dir: Path, seeds: list[Path]) -> int:
    """Copy the first existing seed's files that ``cache_dir`` lacks; the number of files copied.

    Done once per seed (a marker names it); a seed that cannot be read is skipped quietly, since
    compiling is the fallback anyway.
    """
    import shutil

    for seed in seeds:
        if not seed.is_dir():
            continue
        marker = cache_dir / _SEEDED_MARKER
        try:
            stamp = f"{seed.resolve()} {seed.stat().st_mtime_ns}"
            if marker.is_file() and marker.read_text() == stamp:
                return 0
            copied = 0
            for src in seed.rglob("*"):
                dst = cache_dir / src.relative_to(seed)
                if src.is_dir():
                    dst.mkdir(parents=True, exist_ok=True)
                elif not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
                    copied += 1
            marker.write_text(stamp)
            return copied
        except OSError:
            continue
    return 0


def _configure() -> Path | None:
    path, tried = resolve_cache_dir()
    if path is None:
        where = ", ".join(str(p) for p in tried) or "no candidate (HOME and XDG_CACHE_HOME unset)"
        warnings.warn(
            f"mp_slam_ros: no writable numba cache directory (tried {where}); kernels are compiled in "
            f"memory in every process. Set {ENV_VAR} to a writable directory to keep them.",
            NumbaCacheWarning,
            stacklevel=3,
        )
        return None
    chosen_by_user = bool(os.environ.get(ENV_VAR))
    os.environ[ENV_VAR] = str(path)
    # Seed the per-user default caches; a directory the user named is theirs (tests and benchmarks
    # name an empty one to measure compiling), unless they also name a seed.
    if not chosen_by_user or os.environ.get(SEED_ENV_VAR):
        seed_cache(path, [d for d in seed_dirs() if d.resolve() != path])
    # numba read the environment when it was imported; if someone imported it before us, make it
    # read it again so the kernels decorated from now on use this directory.
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.reload_config()
    return path


#: The cache directory in use (also in ``os.environ["NUMBA_CACHE_DIR"]``), or None: compiled in memory.
CACHE_DIR: Path | None = _configure()
#: Whether the project's kernels are cached on disk (``cache=`` of :func:`mp_slam_ros.solver.jit.jit`).
CACHE_ENABLED: bool = CACHE_DIR is not None
