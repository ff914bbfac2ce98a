"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

One ``weir run --rest-port 0`` of the command-line tests' unbounded job (a slow sink:
backpressure); the page at its address must show the job graph with each vertex's
parallelism and backpressure level, update its counts as records flow, take a checkpoint
from its button (after a confirmation; a dismissed confirmation changes nothing), show it
in the checkpoint tab (history row, counts, chart), and stop the job with a savepoint from
its Stop button. Every wait is on something the page shows (Playwright's waits), bounded.

The browser is ``$WEIR_CHROMIUM`` or ``chromium`` on the ``PATH`` (Playwright never
downloads one here). Without it the tests skip, saying so; with ``CI`` set they fail
instead, since CI installs it (``.ci/run``). ``WEIR_DASHBOARD_SCREENSHOTS=DIR`` saves
the screenshots the README shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_driver import LiveJob

WAIT_MS = 20_000
"""How long one wait for the page may take (Playwright's timeout, in ms)."""


def _chromium() -> str | None:
    given = os.environ.get("WEIR_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (.ci/run: apt-get install -y chromium)")
    pytest.skip(f"{reason}: install Debian's chromium (apt-get install chromium) to run it")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install 'weir[test]')")
    executable = _chromium()
    if executable is None:
        _unavailable("no chromium browser found (looked for $WEIR_CHROMIUM, chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def live_job(tmp_path: Path, job_script: Path) -> Iterator[LiveJob]:
    savepoints = tmp_path / "savepoints"
    savepoints.mkdir()
    job = LiveJob.start(
        tmp_path,
        "--checkpoint-dir",
        str(tmp_path / "checkpoints"),
        "--savepoint-dir",
        str(savepoints),
        str(job_script),
    )
    try:
        yield job
    finally:
        job.kill()


def _screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("WEIR_DASHBOARD_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def test_dashboard_shows_updates_checkpoints_and_stops_a_job(
    browser: Any, live_job: LiveJob, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_job.address)

    # The job graph: the source, then sum and sink chained, each with parallelism 2.
    vertices = page.locator(".vertex")
    expect(vertices).to_have_count(2)
    expect(vertices.nth(0).locator("h4")).to_have_text("generator")
    expect(vertices.nth(1).locator("h4")).to_contain_text("sum")
    for i in range(2):
        expect(vertices.nth(i)).to_have_attribute("data-level", _LEVEL)
        expect(vertices.nth(i).locator("dd").first).to_have_text("2")
    expect(page.locator("#job-state")).to_have_text("RUNNING")

    # It updates: the source's output count grows between polls.
    first = page.locator(".vertex >> nth=0 >> .records-out").inner_text()
    page.wait_for_function(
        "(before) => document.querySelector('.vertex .records-out').textContent !== before",
        arg=first,
    )

    # A dismissed confirmation takes no checkpoint.
    page.locator("nav .tab[data-tab=checkpoints]").click()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.locator("#btn-checkpoint").click()
    stats = httpx.get(f"{live_job.address}/jobs/{live_job.job_id}/checkpoints").json()
    assert stats["counts"]["total"] == 0

    # A confirmed one completes and shows in the tab: message, counts, history, chart.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#btn-checkpoint").click()
    expect(page.locator("#message")).to_contain_text("Checkpoint done (#1)")
    expect(page.locator("#checkpoint-history tr[data-checkpoint='1']")).to_contain_text("COMPLETED")
    expect(page.locator("[data-count=completed] b")).to_have_text("1")
    expect(page.locator("#checkpoint-chart rect.sync")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#btn-checkpoint").click()
    expect(page.locator("#message")).to_contain_text("Checkpoint done (#2)")
    expect(page.locator("#checkpoint-chart rect.async")).to_have_count(2)
    _screenshot(page, "dashboard-checkpoints")
    page.locator("nav .tab[data-tab=overview]").click()
    _screenshot(page, "dashboard-overview")

    # Stop, after a confirmation: a savepoint, then the job ends.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#btn-stop").click()
    expect(page.locator("#message")).to_contain_text("Stop with a savepoint done")
    location = page.locator("#message").inner_text().rsplit(": ", 1)[1]
    assert Path(location, "_metadata").is_file()
    assert Path(location).parent == tmp_path / "savepoints"
    assert live_job.wait() == 0
    assert live_job.stdout.strip().splitlines()[-1] == "finished"
    assert errors == []
    page.close()


_LEVEL = __import__("re").compile("^(ok|low|high)$")
