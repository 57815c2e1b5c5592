"""The web page and the API documentation in a real browser (headless Chromium driven by playwright).

The page must show what the library ranks, and nothing it loads may come from outside the server: the
users who point treeseek at a folder of microscope images often have no internet. Without Chromium these
tests are skipped, unless TREESEEK_BROWSER_TESTS=required (as in CI), where a missing browser fails them.
``TREESEEK_SCREENSHOT_DIR=docs`` also saves the README's picture of the page.
"""
import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, serving

pytestmark = pytest.mark.slow  # the page in a real Chromium

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]


def missing(reason: str):
    if os.environ.get("TREESEEK_BROWSER_TESTS") == "required":
        pytest.fail(f"browser tests are required here, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[test]')")
    executable = os.environ.get("TREESEEK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        missing("Chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(main_job):
    with serving(main_job / "index") as (base, info, _):
        yield base, info


@pytest.fixture
def page(browser, served):
    """A fresh page that may only reach the server; ``page.outside`` lists what it tried to load elsewhere."""
    base, _ = served
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.outside = []

    def only_the_server(route):
        if route.request.url.startswith(base + "/"):
            route.continue_()
        else:
            opened.outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    yield opened
    context.close()


def tone(share) -> str:
    """The page's colour for a hit that meets the query at this share of the tree's height."""
    share = 1.0 if share is None else min(1.0, max(0.0, share))
    return f"hsl({round(120 * (1 - share))}, 60%, 45%)"


def test_the_page_shows_the_ranking_of_the_command_line(page, served, main_job, caltech_subset, tmp_path):
    base, info = served
    query = sorted((caltech_subset / "anchor").iterdir())[1]
    cli = run_cli("search", main_job / "index", query, "-k", "14", "--json", tmp_path / "r.json",
                  "--grid", tmp_path / "grid.png")
    assert cli.returncode == 0, cli.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    expected = report["queries"][0]

    page.goto(base + "/")
    summary = f"{info['items']} items · {len(info['classes'])} classes"
    page.wait_for_function("text => document.querySelector('#summary').textContent.startsWith(text)", arg=summary)
    assert page.eval_on_selector_all("#method option", "options => options.map(o => o.value)") == info["methods"]
    assert not page.is_visible("#codes") and not page.is_visible("#signin")  # no codes stored, no token asked
    page.set_input_files("#files", str(query))
    page.fill("#k", "14")  # beyond the query's class: hits that meet it higher up the tree
    page.click("#search button[type=submit]")
    page.wait_for_selector(".hit >> nth=13")

    cards = page.locator(".hit")
    assert cards.count() == 14
    for card, hit in zip(cards.all(), expected["results"]):
        title, scores, meets, button = card.inner_text().splitlines()
        assert button == "more like this"
        assert title == f"{hit['rank']}. {hit['class']}"
        assert meets == f"meets at {hit['lca']} · id {hit['id']}"
        assert float(re.search(r"D (\S+)", scores).group(1)) == pytest.approx(hit["distance"], abs=6e-4)
        assert card.evaluate("node => node.style.getPropertyValue('--tone')") == tone(hit["hierarchy"])
    assert len({hit["lca"] for hit in expected["results"]}) > 1  # the colours were checked at several heights
    head = page.inner_text(".query")
    assert head == f"{query.name}: placed at leaf “{expected['leaf']}” · ranked by soft, alpha {report['alpha']:g}"
    assert re.fullmatch(r"1 query image\(s\) in \d+ ms", page.inner_text("#status"))
    # every thumbnail and the query's preview decoded in the browser
    page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    assert page.locator("#results img").count() == 15
    assert page.outside == []
    if os.environ.get("TREESEEK_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["TREESEEK_SCREENSHOT_DIR"]) / "web-page.png"), full_page=True)


def card_ids(page) -> list[int]:
    return [int(text.rsplit(" ", 1)[1]) for text in page.locator(".hit span:has-text('meets at')").all_inner_texts()]


def test_more_like_this_searches_from_a_result(page, served, caltech_subset):
    base, _ = served
    page.goto(base + "/")
    page.wait_for_selector("#method option", state="attached")
    page.set_input_files("#files", str(sorted((caltech_subset / "bass").iterdir())[0]))
    page.fill("#k", "5")
    page.click("#search button[type=submit]")
    page.wait_for_selector(".hit >> nth=4")
    chosen = card_ids(page)[2]
    page.locator(".hit button.like").nth(2).click()
    page.wait_for_function("id => document.querySelector('#status').textContent.startsWith(`more like item ${id} in`)",
                           arg=chosen)
    with urllib.request.urlopen(f"{base}/api/items/{chosen}/similar?k=5&method=soft") as answer:
        expected = json.load(answer)["queries"][0]
    assert card_ids(page) == [hit["id"] for hit in expected["results"]] and chosen not in card_ids(page)
    assert page.inner_text(".query").startswith(f"item {chosen}: placed at leaf “{expected['leaf']}”")
    assert page.get_attribute(".query img", "src") == f"/api/items/{chosen}/image"  # the item is the query
    assert page.outside == []


def test_the_page_signs_in_to_a_server_with_an_access_token(browser, main_job, caltech_subset):
    with serving(main_job / "index", env={"TREESEEK_SERVER_TOKEN": "s3cret"}) as (base, info, _):
        assert info is None
        context = browser.new_context()
        page = context.new_page()
        page.goto(base + "/")
        page.wait_for_selector("#signin", state="visible")
        assert page.inner_text("#status") == "This server needs its access token."
        page.fill("#token", "wrong")
        page.click("#signin button")
        page.wait_for_function("() => document.querySelector('#status').textContent === 'wrong access token'")
        page.fill("#token", "s3cret")
        page.click("#signin button")
        page.wait_for_selector("#signin", state="hidden")
        assert "100 items" in page.inner_text("#summary")
        page.set_input_files("#files", str(sorted((caltech_subset / "ant").iterdir())[0]))
        page.click("#search button[type=submit]")
        page.wait_for_selector(".hit >> nth=9")
        # the pictures are fetched by <img>, which sends no header: the cookie carries the token
        page.wait_for_function("() => [...document.querySelectorAll('.hit img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)")
        context.close()


def test_the_page_reports_bad_input_in_one_line(page, served, caltech_subset, tmp_path):
    base, _ = served
    page.goto(base + "/")
    page.wait_for_selector("#method option", state="attached")  # the page has read /api/info
    page.click("#search button[type=submit]")
    assert page.inner_text("#status") == "Choose one or more images first."
    assert page.get_attribute("#status", "class") == "error"

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(sorted((caltech_subset / "ant").iterdir())[0].read_bytes()[:300])
    page.set_input_files("#files", str(broken))
    page.click("#search button[type=submit]")
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status").startswith("cannot read query image broken.jpg")
    assert "\n" not in page.inner_text("#status") and page.locator(".hit").count() == 0
    assert page.outside == []


def test_the_api_documentation_works_offline(page, served):
    base, _ = served
    page.goto(base + "/docs")
    for path in ("/api/search", "/api/search/features", "/api/info"):
        page.wait_for_selector(f".opblock-summary-path[data-path='{path}']", timeout=30_000)
    assert page.outside == []


def test_the_page_says_when_no_known_class_is_close(page, served, main_job, tmp_path):
    from PIL import Image

    base, _ = served
    noise = tmp_path / "static.png"  # television static: nothing any class of the collection looks like
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(noise)
    cli = run_cli("search", main_job / "index", noise, "-k", "4", "--json", tmp_path / "r.json",
                  "--grid", tmp_path / "grid.png")
    assert cli.returncode == 0, cli.stderr
    expected = json.loads((tmp_path / "r.json").read_text())["queries"][0]
    assert expected["novelty"]["flagged"] and "results are visual only" in cli.stdout
    page.goto(base + "/")
    page.wait_for_selector("#method option", state="attached")
    page.set_input_files("#files", str(noise))
    page.fill("#k", "4")
    page.click("#search button[type=submit]")
    page.wait_for_selector(".hit >> nth=3")
    assert page.inner_text(".query .novel") == "no known class is close: results are visual only"
    assert "ranked by cosine" in page.inner_text(".query")
    assert card_ids(page) == [hit["id"] for hit in expected["results"]]
    assert page.outside == []
