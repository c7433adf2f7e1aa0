"""``--chaos-long``: run the long chaos scenario (``make chaos``) instead of skipping it."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-long",
        action="store_true",
        default=False,
        help="run the long chaos scenario and write docs/chaos-report.md",
    )
