"""The chaos scenario (issue 7), judged by an exact accounting by event id.

The short run (two instances per topic) is part of the normal suite; the long one (three) and
the reconciler phase (a retry budget longer than the old known-upload window, answers lost
after Metrica applied the upload, SIGKILLs meanwhile) run with ``make chaos`` and keep their
reports in ``docs/chaos-report.md`` and ``docs/chaos-report-reconcile.md``. All are the same
scenario with other profiles (:mod:`tests.support.chaos`).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
from rich.console import Console

from metrica_bridge.config import PROJECT_ROOT
from tests.support.accounting import account
from tests.support.chaos import LONG, RECONCILE, SHORT, Profile, run_scenario
from tests.support.kafka import TopicFactory


def _run(
    profile: Profile,
    bootstrap: str,
    topics: TopicFactory,
    postgres_url: str,
    workdir: Path,
    report_path: Path,
    console: Console | None,
) -> None:
    def progress(line: str) -> None:
        if console is not None:
            console.print(line)

    outcome = run_scenario(
        profile,
        bootstrap=bootstrap,
        topics=topics,
        postgres_url=postgres_url,
        workdir=workdir,
        progress=progress,
    )
    # Kept beside the report, to look into a failure without running the scenario again.
    with (workdir / "outcome.pickle").open("wb") as f:
        pickle.dump(outcome, f)
    report = account(outcome)
    report_path.write_text(report.markdown(f"Chaos report ({profile.name} run)"))
    if console is not None:
        report.print(console)
    assert not report.failures, f"{report.summary()}\n(full report: {report_path})"


def test_chaos_short(
    bootstrap: str, topics: TopicFactory, postgres_url: str, tmp_path: Path
) -> None:
    _run(SHORT, bootstrap, topics, postgres_url, tmp_path, tmp_path / "chaos-report.md", None)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("profile", "report"),
    [(LONG, "chaos-report.md"), (RECONCILE, "chaos-report-reconcile.md")],
    ids=["long", "reconcile"],
)
def test_chaos_long(
    profile: Profile,
    report: str,
    bootstrap: str,
    topics: TopicFactory,
    postgres_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not request.config.getoption("--chaos-long", default=False):
        pytest.skip("the long chaos scenario runs with --chaos-long (make chaos)")
    with capsys.disabled():
        console = Console(file=sys.stdout, width=140)
        _run(
            profile,
            bootstrap,
            topics,
            postgres_url,
            tmp_path,
            PROJECT_ROOT / "docs" / report,
            console,
        )
