"""A local emulator of Yandex Metrica's CDP API (DESIGN.md §7), strict to metrica-api.md.

Modules: ``validation`` (fields), ``store`` (data and merge modes; ``persist`` for SQLite),
``quotas``, ``faults``, ``core`` (the sandbox without HTTP), ``app`` (starlette routes),
``server`` (:class:`SandboxServer`, uvicorn in a thread), ``command`` (``metrica-bridge sandbox``).
"""

from metrica_bridge.sandbox.app import create_app
from metrica_bridge.sandbox.core import Sandbox
from metrica_bridge.sandbox.quotas import QuotaLimits
from metrica_bridge.sandbox.server import SandboxServer

__all__ = ["QuotaLimits", "Sandbox", "SandboxServer", "create_app"]
