"""The HTML leaderboard in a real headless Chromium (Debian's package, driven by Python
Playwright; no browser is downloaded): the page loads offline, a column header sorts, a
click on a cell opens its panel in the viewport wherever the page is scrolled (score, CI,
paired test, cost, caveats, provenance collapsed), a multiple choice shows its question,
options and each row's pick, the disagreement filter keeps the documents where two rows
differ, and --max-samples caps what a cell embeds.

The opened panel is also photographed: its layout (the page with every text made
transparent, so that fonts, which differ between machines, do not count) is compared
with a committed reference at a coarse scale. HARNESS_UPDATE_SCREENSHOTS=1 rewrites the
reference; HARNESS_SCREENSHOT_DIR=DIR keeps both screenshots (with and without text)
for review."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from harness.contract.board import BoardOptions
from harness.report.board import build_board
from harness.report.html import html_page
from harness.results.store import Store

from support import CHOICE_OPTIONS, HOST_FIXTURES, commit_binary_cell, commit_choice_cell

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="no chromium executable (apt-get install chromium)")

PACKLLM = "packllm (tiny-llama + tiny-gpt2)"
LLAMA = "single (tiny-llama)"
VIEWPORT = {"width": 1000, "height": 640}
REFERENCE_SCREENSHOT = HOST_FIXTURES / "explorer" / "choice-panel-layout.png"
# Mean absolute difference of two layout screenshots shrunk to 40 px blocks, in grey
# levels (0-255). Measured against the reference: serif, monospace, Liberation Sans or a
# 17 px root font 2.9-3.3; the page without its stylesheet 13.2; the panel not opened 15.2.
SCREENSHOT_TOLERANCE = 8.0
EXTRA_ROWS = 30  # single rows below the three, so the table runs far past the viewport


@pytest.fixture
def results(tmp_path: Path) -> Path:
    store = Store(tmp_path / "results")
    commit_binary_cell(store, LLAMA, "single", ["tiny-llama"], [1] * 5 + [0] * 25)
    commit_binary_cell(store, "single (tiny-gpt2)", "single", ["tiny-gpt2"], [0] * 30)
    commit_binary_cell(store, PACKLLM, "packllm", ["tiny-llama", "tiny-gpt2"],
                       [1] * 25 + [0] * 5)
    # a multiple choice: option i % 4 is right; packllm gets 10 of 12, tiny-llama 4
    commit_choice_cell(store, LLAMA, "single", ["tiny-llama"],
                       [i % 4 if i < 4 else (i + 1) % 4 for i in range(12)], task="planets")
    commit_choice_cell(store, PACKLLM, "packllm", ["tiny-llama", "tiny-gpt2"],
                       [i % 4 if i < 10 else (i + 2) % 4 for i in range(12)], task="planets")
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
    # the page must need no network; one pixel per CSS pixel on every machine
    context = browser.new_context(offline=True, viewport=VIEWPORT, device_scale_factor=1,
                                  color_scheme="light")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_file.as_uri())
    return board, page, errors


def _labels(page) -> list[str]:
    return page.eval_on_selector_all("#board tbody tr",
                                     "rows => rows.map(r => r.cells[0].textContent)")


def _cell(board, label: str, task: str) -> str:
    row = next(r for r in board.rows if r.label == label)
    return f'#board td[data-row="{row.key}"][data-task="{task}"]'


def _in_viewport(page, selector: str) -> bool:
    return page.eval_on_selector(selector, """node => { const box = node.getBoundingClientRect();
        return box.top >= 0 && box.left >= 0 && box.top < innerHeight && box.bottom > 0; }""")


def test_sorting_opening_a_cell_and_the_disagreement_filter(browser, results: Path,
                                                           tmp_path: Path) -> None:
    board, page, errors = _open(browser, results, tmp_path)
    assert page.title() == "harness leaderboard" and len(_labels(page)) == 3

    header = page.locator("#board th", has_text="mmlu")
    header.click()  # first click: highest first
    assert _labels(page) == [PACKLLM, LLAMA, "single (tiny-gpt2)"]
    header.click()
    assert _labels(page) == ["single (tiny-gpt2)", LLAMA, PACKLLM]
    page.locator("#board th", has_text="method").click()
    assert _labels(page)[0] in (PACKLLM, "single (tiny-gpt2)", LLAMA)

    packllm = next(r for r in board.rows if r.label == PACKLLM)
    assert page.locator("#details").is_hidden()
    page.click(_cell(board, PACKLLM, "mmlu"))
    assert page.locator("#details").is_visible()
    assert PACKLLM in page.inner_text("#details-title")
    facts = page.inner_text("#cell-facts")
    # the readable panel: the metric with its CI, the paired test with its p, no JSON
    assert "accuracy" in facts and "95% CI" in facts and "exact McNemar: p =" in facts
    assert "Holm p =" in facts and "single (tiny-llama)" in facts and "{" not in facts
    assert page.locator("#cell-facts details.provenance").get_attribute("open") is None
    assert not page.locator("#cell-facts details.provenance dl").is_visible()  # collapsed
    page.click("#cell-facts details.provenance summary")
    assert packllm.cells["mmlu"].provenance["fingerprint"] in page.inner_text(
        "#cell-facts details.provenance")

    documents = page.locator("#samples article.doc")
    assert documents.count() == 30
    first = documents.first.inner_text()
    # a generation shows prompt, reference, both rows' responses and verdicts, and facts
    assert "question 0?" in first and "reference" in first and "weights" in first
    assert documents.first.locator(".verdict.right").count() == 2
    assert page.input_value("#row-y") != packllm.key  # compared with its reference row

    page.check("#disagree")  # packllm right on 0-24, its reference on 0-4: 20 differ
    assert documents.count() == 20
    assert documents.first.get_attribute("data-doc") == "mmlu/5"
    page.uncheck("#disagree")
    assert documents.count() == 30
    assert errors == []


def test_a_multiple_choice_shows_question_options_and_each_rows_pick(browser, results: Path,
                                                                     tmp_path: Path) -> None:
    board, page, errors = _open(browser, results, tmp_path)
    page.click(_cell(board, PACKLLM, "planets"))
    assert page.input_value("#row-y") == next(r.key for r in board.rows if r.label == LLAMA)
    # document 4: option A is right; packllm (X) picked it, tiny-llama (Y) picked B
    card = page.locator('#samples article.doc[data-doc="planets/4"]')
    assert "Question 4: which planet?" in card.locator(".question").inner_text()
    options = card.locator("ol.options li")
    assert options.all_inner_texts()[0].startswith("A") and options.count() == 4
    assert [options.nth(i).locator(".option-text").inner_text().split(" · ")[0]
            for i in range(4)] == list(CHOICE_OPTIONS)
    assert options.nth(0).get_attribute("class").split() == ["gold"]
    assert options.nth(0).locator(".who.x").count() == 1
    assert options.nth(1).locator(".who.y").count() == 1
    assert "picked-wrong" in options.nth(1).get_attribute("class")
    assert "log p: X" in options.nth(0).inner_text()
    assert card.locator(".verdict.right .who.x").count() == 1
    assert card.locator(".verdict.wrong .who.y").count() == 1
    assert not card.locator("details.prompt pre").is_visible()  # the few-shot prompt: folded
    page.check("#disagree")  # tiny-llama is right on 0-3 only, packllm on 0-9
    assert page.locator("#samples article.doc").count() == 8
    assert errors == []


def test_a_cell_opens_in_the_viewport_wherever_the_page_is_scrolled(browser, results: Path,
                                                                    tmp_path: Path) -> None:
    store = Store(results)
    for index in range(EXTRA_ROWS):
        commit_binary_cell(store, f"single (model-{index:02d})", "single", [f"model-{index:02d}"],
                           [index % 2] * 4)
    board, page, errors = _open(browser, results, tmp_path)
    assert page.evaluate("document.body.scrollHeight") > 2 * VIEWPORT["height"]

    for label, task in ((PACKLLM, "planets"), (f"single (model-{EXTRA_ROWS - 1:02d})", "mmlu")):
        cell = page.locator(_cell(board, label, task))
        cell.scroll_into_view_if_needed()
        scrolled = page.evaluate("scrollY")
        cell.click()
        assert page.evaluate("scrollY") == scrolled  # the page does not jump
        assert _in_viewport(page, "#details") and _in_viewport(page, "#details-title")
        assert _in_viewport(page, "#cell-facts")
        assert page.evaluate("document.activeElement.closest('#details') !== null")
        page.keyboard.press("Escape")
        assert page.locator("#details").is_hidden()
        # focus goes back to the cell (the dialog's close event is queued), and Enter reopens it
        page.wait_for_function("document.activeElement.classList.contains('cell')", timeout=5000)
        page.keyboard.press("Enter")
        assert page.locator("#details").is_visible()
        page.click("#close")
    # a cell without a score says what it is and why, whatever its status
    page.click(_cell(board, "single (model-00)", "planets"))
    assert page.get_attribute("#cell-facts .status", "data-status") == "missing"
    assert "not run" in page.inner_text("#cell-facts")
    assert page.inner_text("#sample-count") == "no documents stored for this cell"
    assert errors == []


def test_the_opened_panel_looks_as_it_did(browser, results: Path, tmp_path: Path) -> None:
    from PIL import Image, ImageChops, ImageStat

    board, page, errors = _open(browser, results, tmp_path)
    page.click(_cell(board, PACKLLM, "planets"))
    page.locator("#close").blur()  # no focus ring
    shot, layout = tmp_path / "choice-panel.png", tmp_path / REFERENCE_SCREENSHOT.name
    page.screenshot(path=str(shot))
    page.add_style_tag(content="*{color:transparent !important}")
    page.screenshot(path=str(layout))
    keep = os.environ.get("HARNESS_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for taken in (shot, layout):
            shutil.copy(taken, Path(keep) / taken.name)
    if os.environ.get("HARNESS_UPDATE_SCREENSHOTS") == "1":
        REFERENCE_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(layout, REFERENCE_SCREENSHOT)

    def blocks(path: Path) -> Image.Image:
        with Image.open(path) as image:
            grey = image.convert("L")
            return grey.resize((grey.width // 40, grey.height // 40), Image.Resampling.BOX)

    actual, expected = blocks(layout), blocks(REFERENCE_SCREENSHOT)
    assert actual.size == expected.size
    difference = ImageStat.Stat(ImageChops.difference(actual, expected)).mean[0]
    assert difference < SCREENSHOT_TOLERANCE, (
        f"the opened panel looks different from {REFERENCE_SCREENSHOT} (mean difference "
        f"{difference:.1f} grey levels over 40 px blocks): see {shot} and {layout}")
    assert errors == []


def test_max_samples_caps_the_documents_a_cell_embeds(browser, results: Path,
                                                     tmp_path: Path) -> None:
    board, page, errors = _open(browser, results, tmp_path, BoardOptions(max_samples=7))
    page.click(_cell(board, PACKLLM, "mmlu"))
    assert page.locator("#samples article.doc").count() == 7
    assert "at most 7" in page.inner_text("#sample-count")
    page.reload()  # the address names the open cell, so a reload (or a link) reopens it
    assert page.locator("#details").is_visible() and PACKLLM in page.inner_text("#details-title")
    page.keyboard.press("Escape")
    page.wait_for_function("location.hash === ''", timeout=5000)  # after the close event
    assert errors == []
