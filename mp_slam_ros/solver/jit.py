"""The project's numba decorator and a clock that leaves JIT compilation out.

Every kernel module decorates with :func:`jit` instead of ``numba.njit(cache=True)``: it caches on
disk when :mod:`mp_slam_ros.numba_cache` found a writable directory and compiles in memory when it
did not (``cache=True`` without a usable directory makes numba raise at import).

Compilation is a stage of its own: the first call of a kernel with new argument types can take
seconds, which would otherwise land in whatever latency or frames/s figure timed that call. A
listener on numba's ``numba:compile`` event adds up the time spent compiling;
:func:`compile_seconds` reads it and :func:`clock` is a timer that stands still while numba
compiles, so intervals measured with it exclude compile time. Loading a kernel from the on-disk
cache is not a compile and is not counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numba
from numba.core import event

from ..numba_cache import CACHE_DIR, CACHE_ENABLED

__all__ = ["CACHE_DIR", "CACHE_ENABLED", "clock", "compile_count", "compile_seconds", "jit", "thread_compile_seconds"]


def jit(*args: Any, **kwargs: Any) -> Callable[..., Any]:
    """``numba.njit`` with ``cache`` defaulting to whether an on-disk cache is usable.

    Used exactly like ``njit``: ``@jit``, ``@jit(nogil=True)``, ``@jit(inline="always")``.
    """
    kwargs.setdefault("cache", CACHE_ENABLED)
    return numba.njit(*args, **kwargs)


class _CompileTimer(event.Listener):
    """Adds up the wall time of outermost ``numba:compile`` events, in total and per thread.

    numba broadcasts the event while it holds its global compiler lock, so at most one thread is
    inside a compile at a time; compiling a kernel compiles its callees in nested events, which
    are part of the outer one and are not counted again.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._start = 0.0
        self.seconds = 0.0
        self.count = 0
        self.local = threading.local()

    def on_start(self, ev: event.Event) -> None:
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def on_end(self, ev: event.Event) -> None:
        self._depth -= 1
        if self._depth == 0:
            elapsed = time.perf_counter() - self._start
            self.seconds += elapsed
            self.count += 1
            self.local.seconds = getattr(self.local, "seconds", 0.0) + elapsed


_TIMER = _CompileTimer()
event.register("numba:compile", _TIMER)


def compile_seconds() -> float:
    """Seconds this process has spent in numba compilation (all threads) since this module loaded."""
    return _TIMER.seconds


def compile_count() -> int:
    """Number of (outermost) numba compilations in this process: 0 when every kernel came from the cache."""
    return _TIMER.count


def thread_compile_seconds() -> float:
    """Seconds the calling thread has spent in numba compilation."""
    return getattr(_TIMER.local, "seconds", 0.0)


def clock() -> float:
    """``time.perf_counter()`` minus the calling thread's compile time: a timer that pauses while numba compiles.

    Only differences are meaningful, as with perf_counter. Per thread, so a compile in one thread
    (say the loop-closure callback of a node) is not taken off the latencies of another.
    """
    return time.perf_counter() - getattr(_TIMER.local, "seconds", 0.0)
