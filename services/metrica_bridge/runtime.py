"""Process-wide settings of the Python runtime for the long-running service (not for tests or
one-shot commands), measured in docs/benchmarks.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys

GC_THRESHOLD = 10_000  # container allocations between two young-generation collections
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def tune_gc() -> None:
    """Fewer cyclic-GC passes. Tens of thousands of in-flight events are alive at once, and with
    the default thresholds (700, 10, 10) the collector ran every few hundred of them and walked
    the whole heap often: a third of the engine's CPU. What is alive after start-up (modules,
    schemas, settings) is frozen out of every pass."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


@functools.cache  # find_library runs ldconfig in a subprocess: once per process is plenty
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def trim_malloc() -> bool:
    """Give free heap memory back to the OS (glibc's ``malloc_trim``). Live allocations stay
    flat on a backlog, but freed blocks of every size churn through malloc (librdkafka's fetch
    buffers, upload bodies, store rows): measured with memray, the live peak was 168 MiB of a
    316 MiB resident set, and the rest crept up over the first few hundred thousand events
    unless trimmed. Called every second; a no-op without glibc (False)."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True


def limit_malloc_arenas() -> bool:
    """At most two glibc malloc arenas (as ``MALLOC_ARENA_MAX=2`` would), set before the
    threads start: by default each of the service's threads (consumers, store workers, the
    producer's poller) gets an arena of its own, and their fragmentation cost ~40 MiB of RSS on
    a backlog. A no-op where the C library is not glibc (False)."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    return mallopt is not None and bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
