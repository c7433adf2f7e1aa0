"""The service process's runtime settings: each does what it says, in a fresh interpreter
(they change process-wide state that the test process must not keep)."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from metrica_bridge import runtime

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")


def _run(code: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_tune_gc_freezes_what_is_alive_and_raises_the_threshold() -> None:
    result = _run(
        """
        import gc, json
        from metrica_bridge import runtime
        before = gc.get_freeze_count()
        runtime.tune_gc()
        print(json.dumps({"threshold": gc.get_threshold(), "before": before,
                          "frozen": gc.get_freeze_count()}))
        """
    )
    assert result["threshold"] == [runtime.GC_THRESHOLD, 10, 10]
    assert result["before"] == 0
    assert result["frozen"] > 1_000


@linux_only
def test_trim_malloc_gives_freed_heap_back_to_the_os() -> None:
    # 200 MiB of malloc'd blocks (above pymalloc's 512 bytes), then one block after them so the
    # heap's top cannot shrink on its own: freed, they stay resident until trimmed.
    result = _run(
        """
        import gc, json, os
        from metrica_bridge import runtime
        page = os.sysconf("SC_PAGE_SIZE")
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page
        blocks = [bytearray(4000) for _ in range(50_000)]
        sentinel = bytearray(4000)
        del blocks
        gc.collect()
        freed = rss()
        trimmed = runtime.trim_malloc()
        print(json.dumps({"trimmed": trimmed, "freed": freed, "after": rss()}))
        """
    )
    assert result["trimmed"] is True
    assert result["freed"] - result["after"] > 100 * 2**20


@linux_only
def test_limit_malloc_arenas_is_accepted_by_glibc() -> None:
    result = _run(
        """
        import json
        from metrica_bridge import runtime
        print(json.dumps({"limited": runtime.limit_malloc_arenas()}))
        """
    )
    assert result["limited"] is True


def test_the_c_library_is_looked_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # ctypes.util.find_library runs ldconfig in a subprocess; trim_malloc runs every second.
    calls: list[str] = []
    real = ctypes.util.find_library

    def counting(name: str) -> str | None:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(ctypes.util, "find_library", counting)
    runtime._libc.cache_clear()
    try:
        for _ in range(3):
            runtime.trim_malloc()
    finally:
        runtime._libc.cache_clear()
    assert len(calls) == (1 if sys.platform.startswith("linux") else 0)
