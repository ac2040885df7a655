"""The HTML leaderboard in a real headless Chromium (Debian's package, driven by Python
Playwright; no browser is downloaded): the page loads offline, a column header sorts,
a click on a cell opens its documents, the disagreement filter keeps the documents where
two rows differ, and --max-samples caps what a cell embeds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import commit_binary_cell

from harness.reporting import BoardOptions, build_board, html_page
from harness.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="no chromium executable (apt-get install chromium)")

PACKLLM = "packllm (tiny-llama + tiny-gpt2)"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    store = Store(tmp_path / "results")
    commit_binary_cell(store, "single (tiny-llama)", "single", ["tiny-llama"],
                       [1] * 5 + [0] * 25)
    commit_binary_cell(store, "single (tiny-gpt2)", "single", ["tiny-gpt2"], [0] * 30)
    commit_binary_cell(store, PACKLLM, "packllm", ["tiny-llama", "tiny-gpt2"],
                       [1] * 25 + [0] * 5)
    return store.root


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox"])
        yield launched
        launched.close()


def _open(browser, results: Path, tmp_path: Path, options: BoardOptions | None = None):
    board = build_board(results, options)
    page_file = tmp_path / "leaderboard.html"
    page_file.write_text(html_page(board), encoding="utf-8")
    context = browser.new_context(offline=True)  # the page must need no network
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_file.as_uri())
    return board, page, errors


def _labels(page) -> list[str]:
    return page.eval_on_selector_all("#board tbody tr",
                                     "rows => rows.map(r => r.cells[0].textContent)")


def test_sorting_opening_a_cell_and_the_disagreement_filter(browser, results: Path,
                                                           tmp_path: Path) -> None:
    board, page, errors = _open(browser, results, tmp_path)
    assert page.title() == "harness leaderboard" and len(_labels(page)) == 3

    header = page.locator("#board th", has_text="mmlu")
    header.click()  # first click: highest first
    assert _labels(page) == [PACKLLM, "single (tiny-llama)", "single (tiny-gpt2)"]
    header.click()
    assert _labels(page) == ["single (tiny-gpt2)", "single (tiny-llama)", PACKLLM]
    page.locator("#board th", has_text="method").click()
    assert _labels(page)[0] in (PACKLLM, "single (tiny-gpt2)", "single (tiny-llama)")

    packllm = next(r for r in board.rows if r.label == PACKLLM)
    assert page.locator("#details").is_hidden()
    page.click(f'#board td[data-row="{packllm.key}"][data-task="mmlu"]')
    assert page.locator("#details").is_visible()
    assert PACKLLM in page.inner_text("#details-title")
    assert "McNemar" in page.inner_text("#cell-facts")  # the paired test, with its p
    documents = page.locator("#samples tbody tr")
    assert documents.count() == 30
    first = documents.first.inner_text()
    assert "question 0?" in first and "weights" in first  # prompt and the method's fact
    assert page.input_value("#row-y") != packllm.key  # compared with its reference row

    page.check("#disagree")  # packllm right on 0-24, its reference on 0-4: 20 differ
    assert documents.count() == 20
    assert documents.first.get_attribute("data-doc") == "mmlu/5"
    page.uncheck("#disagree")
    assert documents.count() == 30
    assert errors == []


def test_max_samples_caps_the_documents_a_cell_embeds(browser, results: Path,
                                                     tmp_path: Path) -> None:
    board, page, errors = _open(browser, results, tmp_path, BoardOptions(max_samples=7))
    page.click("#board tbody tr:first-child td.cell")
    assert page.locator("#samples tbody tr").count() == 7
    assert "at most 7" in page.inner_text("#sample-count")
    assert errors == []
