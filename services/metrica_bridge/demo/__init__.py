"""``metrica-bridge demo`` (``make run``): the whole pipeline embedded, with live progress.

Modules: ``stack`` (broker, sandbox, store, settings), ``progress`` (metrics snapshots and the
"every event handled" accounting), ``view`` (live view, plain lines, summary), ``command``
(the CLI command and the run from start to Ctrl-C).
"""

from metrica_bridge.demo.command import Demo, DemoOptions, demo

__all__ = ["Demo", "DemoOptions", "demo"]
