"""``qrank ui`` in a real browser: start the command on localhost with real small models, drive the page
with Playwright on Debian's Chromium, and check what a user sees.

Needs ``apt-get install -y chromium`` (no browser download: Playwright drives /usr/bin/chromium).
Run:  .venv/bin/pytest -m browser tests/integration/test_ui_browser.py
Screenshots go to $QRANK_SCREENSHOT_DIR (e.g. docs/img) when it is set, else to the test's tmp folder;
$QRANK_UI_REPORT_DIR replaces the small generated evaluation report with a real ``qrank eval`` output.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("QRANK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
QUERY = "Vitamin D deficiency raises the risk of respiratory infections."
PLANTED = "Low serum vitamin D levels were associated with more frequent upper respiratory tract infections in adults."
DOCS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Regular exercise improves cardiovascular health and lowers blood pressure.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    PLANTED,
    "Glaciers in the Alps have been retreating for over a century.",
    "Vitamin C is found in citrus fruit and peppers.",
]
MARKUP = '<b>bold</b> <img src="x" onerror="document.title=1"> ${value} {{value}}'



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("QRANK_SCREENSHOT_DIR")
    path = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


SEARCH_QUERY = "Vitamin D deficiency and respiratory infections"
N_DOCS = 100


def _scifact_docs(scifact_dir: Path) -> list[dict]:
    """SciFact abstracts (cut to 80 words: one passage each, quick to embed), with those about vitamin D."""
    docs, vitamin = [], []
    with open(scifact_dir / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            doc = {"id": d["_id"], "title": d["title"], "text": " ".join(d["text"].split()[:80])}
            if "vitamin d" in (d["title"] + " " + d["text"]).lower() and len(vitamin) < 10:
                vitamin.append(doc)
            elif len(docs) < N_DOCS - 10:
                docs.append(doc)
            if len(docs) >= N_DOCS - 10 and len(vitamin) >= 10:
                break
    return docs + vitamin


@pytest.fixture(scope="module")
def home(tmp_path_factory, minilm_dir, scifact_dir) -> Path:
    """A qrank home with a small SciFact collection and one evaluation report, as ``qrank index`` and
    ``qrank eval`` leaves them by default (``<home>/reports/<name>``)."""
    pytest.importorskip("matplotlib", reason="the eval extra writes the report's plot")
    pytest.importorskip("faiss", reason="the index extra builds the collection")
    from qrank import Settings
    from qrank.pipeline import Pipeline
    from unit.test_ui_reports import _result  # the same small report the unit tests read

    from qrank.eval.report import write_report

    home = tmp_path_factory.mktemp("qrank-home")
    with Pipeline.open("scifact", embedder=str(minilm_dir), settings=Settings(home=home)) as p:
        p.add(_scifact_docs(scifact_dir), progress=False)
    real = os.environ.get("QRANK_UI_REPORT_DIR")  # a real `qrank eval` output, for the documentation's screenshot
    if real:
        shutil.copytree(real, home / "reports" / "scifact")
    else:
        write_report(_result(0.6451), home / "reports" / "scifact")
    return home


@pytest.fixture(scope="module")
def ui_url(ce_dir, random_ce_dir, minilm_dir, home, tmp_path_factory):
    """``qrank ui`` in a subprocess on a free localhost port; the URL once it answers."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("ui-log") / "ui.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost", "QRANK_HOME": str(home)}
    cmd = [sys.executable, "-c", "import sys; from qrank.cli import main; sys.exit(main(sys.argv[1:]))", "ui",
           "--reranker", str(ce_dir), "--reranker", str(random_ce_dir), "--embedder", str(minilm_dir), "--device",
           "cpu", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"qrank ui exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                proc.terminate()
                pytest.fail(f"qrank ui did not answer within 180 s:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in log_path.read_text(errors="replace"), log_path.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium, or set QRANK_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, ui_url):
    """A fresh page on the UI; any request leaving localhost is blocked and recorded (the test then fails)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    outside: list[str] = []

    def gate(route):
        if route.request.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")):
            return route.continue_()
        outside.append(route.request.url)
        return route.abort()

    context.route("**/*", gate)
    pg = context.new_page()
    pg.goto(ui_url)
    pg.wait_for_selector("#pg-query textarea", timeout=60_000)
    yield pg
    context.close()
    assert outside == [], f"the page tried to reach the internet: {outside}"


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} textarea").first.fill(text)


def test_playground_puts_the_planted_document_first(page, shots):
    _fill(page, "pg-query", QUERY)
    _fill(page, "pg-docs", "\n".join(DOCS))
    page.locator("#pg-run").click()
    rows = page.locator("#ranked tbody tr")
    rows.first.wait_for(timeout=60_000)
    assert rows.count() == len(DOCS)
    first = rows.first
    assert first.get_attribute("data-index") == str(DOCS.index(PLANTED))
    assert PLANTED in first.inner_text()
    assert "▲ 3" in first.inner_text()  # fourth in, first out
    status = page.locator("#pg-status").inner_text()
    assert f"{len(DOCS)} documents ranked by scifact-minilm-ce in" in status and "ms" in status
    page.locator("#pg-json-panel").get_by_text("Raw JSON").click()
    page.locator("#pg-json").wait_for(timeout=10_000)
    assert PLANTED[:40] in page.locator("#pg-json").inner_text()
    page.screenshot(path=str(shots / "ui-playground.png"), full_page=True)


def test_playground_reads_an_uploaded_file(page, tmp_path):
    upload = tmp_path / "docs.jsonl"
    upload.write_text("\n".join(json.dumps({"text": d}) for d in DOCS) + "\n", encoding="utf-8")
    _fill(page, "pg-query", QUERY)
    page.locator("#pg-file input[type=file]").set_input_files(str(upload))
    page.locator("#pg-file").get_by_text("docs.jsonl").first.wait_for(timeout=30_000)
    page.locator("#pg-topn input").fill("2")
    page.locator("#pg-run").click()
    rows = page.locator("#ranked tbody tr")
    rows.first.wait_for(timeout=60_000)
    assert rows.count() == 2
    assert rows.first.get_attribute("data-index") == str(DOCS.index(PLANTED))


def test_user_text_is_shown_as_text(page):
    _fill(page, "pg-query", QUERY)
    _fill(page, "pg-docs", "\n".join([PLANTED, MARKUP]))
    page.locator("#pg-run").click()
    page.locator("#ranked tbody tr").nth(1).wait_for(timeout=60_000)
    assert page.locator("#ranked b, #ranked img").count() == 0
    assert MARKUP in page.locator("#ranked").inner_text()  # not markup, not a template
    assert page.title() == "qrank"


def test_playground_errors_show_in_the_page(page, shots):
    _fill(page, "pg-query", QUERY)
    page.locator("#pg-run").click()  # no documents
    box = page.locator("#pg-results .qrank-error")
    box.wait_for(timeout=30_000)
    assert "documents" in box.inner_text() and "one per line" in box.inner_text()
    assert "Traceback" not in page.content()
    page.locator("#pg-results").screenshot(path=str(shots / "ui-error.png"))


def test_compare_two_rerankers(page, shots):
    page.get_by_role("tab", name="Compare models").click()
    _fill(page, "c-query", QUERY)
    _fill(page, "c-docs", "\n".join(DOCS))
    page.locator("#c-run").click()
    page.locator("#compare-a tbody tr").first.wait_for(timeout=60_000)
    assert page.locator("#compare-a tbody tr").first.get_attribute("data-index") == str(DOCS.index(PLANTED))
    assert page.locator("#compare-b tbody tr").count() == 5
    agreement = page.locator("#c-agreement").inner_text()
    assert "Kendall τ" in agreement and "Spearman ρ" in agreement and "top-5 overlap" in agreement
    page.screenshot(path=str(shots / "ui-compare.png"), full_page=True)


def test_search_shows_three_rankings_side_by_side(page, home, shots):
    from qrank import Settings
    from qrank.pipeline import Pipeline

    page.get_by_role("tab", name="Search").click()
    page.wait_for_function(
        "() => (document.querySelector('#s-collection input')?.value || '') === 'scifact'", timeout=30_000
    )
    page.locator("#s-query textarea").first.fill(SEARCH_QUERY)
    page.locator("#s-candidates input").fill("30")
    page.locator("#s-run").click()
    page.locator("#search-reranked tbody tr").first.wait_for(timeout=90_000)
    shown = {col: page.locator(f"#search-{col} tbody tr") for col in ("bm25", "first_stage", "reranked")}
    ids = {col: [rows.nth(i).get_attribute("data-id") for i in range(rows.count())] for col, rows in shown.items()}
    # the page shows what the pipeline answers (the unit tests check the pipeline's columns against references)
    with Pipeline.open("scifact", settings=Settings(home=home, cache={"enabled": False}), create=False) as p:
        dense = [h.id for h in p.search(SEARCH_QUERY, k=30, rerank=False)]
    assert ids["first_stage"] == dense[:10]
    assert set(ids["reranked"]) <= set(dense)  # the reranker saw the first 30 candidates only
    assert len(ids["bm25"]) == 10 and len(ids["reranked"]) == 10
    assert ids["reranked"] != ids["first_stage"]  # the reranker changed something, and the page says where
    assert "moved" in page.locator("#search-reranked thead").inner_text()
    first_title = page.locator("#search-reranked tbody tr").first.inner_text().lower()
    assert "vitamin d" in first_title
    page.screenshot(path=str(shots / "ui-search.png"), full_page=True)


def test_evaluation_tab_shows_the_latest_report(page, home, shots):
    page.get_by_role("tab", name="Evaluation").click()
    page.wait_for_function("() => (document.querySelector('#e-table')?.innerText || '').includes('dense+rerank')",
                           timeout=30_000)
    text = page.locator("#e-table").inner_text()
    metrics = json.loads((home / "reports" / "scifact" / "metrics.json").read_text())
    for system, vals in metrics.items():
        first_metric = next(v for v in vals.values() if isinstance(v, float))
        assert system in text and str(round(first_metric, 4)) in text
    img = page.locator("#e-plot img")
    img.wait_for(timeout=30_000)
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
    assert "scifact" in page.locator("#e-summary").inner_text()
    page.screenshot(path=str(shots / "ui-evaluation.png"), full_page=True)
