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
        assert card.locator("b").inner_text() == f"{hit['rank']}. {hit['class']}"
        # the file in words a curator knows (the server shows it within the collection's folder)
        assert card.locator(".file").inner_text() == f"{Path(hit['path']).name} in {Path(hit['path']).parent.name}"
        assert card.locator(".relation").inner_text() == hit["relation"]
        assert card.locator(".similarity").inner_text() == f"{round(100 * hit['similarity'])}% similar"
        details = card.locator("details").text_content()
        assert f"meets at {hit['lca']} · id {hit['id']}" in details
        assert float(re.search(r"D (\S+)", details).group(1)) == pytest.approx(hit["distance"], abs=6e-4)
        assert card.locator("button.like").inner_text() == "more like this"
        if expected["confidence"] >= 0.5:
            assert card.evaluate("node => node.style.getPropertyValue('--tone')") == tone(hit["hierarchy"])
    assert len({hit["lca"] for hit in expected["results"]}) > 1  # the colours were checked at several heights
    head = page.inner_text(".query")
    sure = round(100 * expected["confidence"])
    assert head.startswith(f"{query.name}: placed at leaf “{expected['leaf']}” ({sure}% sure) · ranked by soft, "
                           f"alpha {report['alpha']:g}")
    assert re.fullmatch(r"1 query image\(s\) in \d+ ms", page.inner_text("#status"))
    # every thumbnail and the query's preview decoded in the browser
    page.wait_for_function("() => [...document.querySelectorAll('#results img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    assert page.locator("#results img").count() == 15
    assert page.outside == []
    if os.environ.get("TREESEEK_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["TREESEEK_SCREENSHOT_DIR"]) / "web-page.png"), full_page=True)


def card_ids(page, selector: str = ".hit") -> list[int]:
    return page.eval_on_selector_all(selector, "cards => cards.map(card => Number(card.dataset.id))")


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
    assert "ranked by soft at alpha 0 (cosine alone)" in page.inner_text(".query")
    assert card_ids(page) == [hit["id"] for hit in expected["results"]]
    assert {card.evaluate("n => n.style.getPropertyValue('--tone')") for card in page.locator(".hit").all()} == \
        {"#a0a8b0"}  # not coloured as matches
    assert page.outside == []


def search_picture(page, picture, k: int) -> None:
    page.set_input_files("#files", str(picture))
    page.fill("#k", str(k))
    page.click("#search button[type=submit]")
    page.wait_for_selector(f".hit >> nth={k - 1}")


def test_the_tree_panel_opens_a_node_lists_its_members_and_searches_within_it(page, served, main_job, caltech_subset,
                                                                                tmp_path):
    base, _ = served
    with urllib.request.urlopen(f"{base}/api/tree") as answer:
        tree = json.load(answer)
    group = next(n for n in tree["nodes"] if n["children"] and n["id"] != tree["root"] and 1 < n["items"] < 24)
    page.goto(base + "/")
    page.wait_for_selector(".node")
    while not page.locator(f".node[data-node='{group['id']}']").count():  # open the tree down to the group
        page.locator(".toggle:has-text('▸')").first.click()
    page.locator(f".node[data-node='{group['id']}']").click()
    page.wait_for_selector(".member")
    with urllib.request.urlopen(f"{base}/api/tree/{group['id']}/items?limit=500") as answer:
        members = [item["id"] for item in json.load(answer)["items"]]
    assert card_ids(page, ".member") == members and page.inner_text("#within-name") == group["name"]
    query = sorted((caltech_subset / "anchor").iterdir())[1]
    search_picture(page, query, 3)
    cli = run_cli("search", main_job / "index", query, "-k", "3", "--within", group["name"], "--json",
                  tmp_path / "r.json", "--grid", tmp_path / "g.png")
    assert cli.returncode == 0, cli.stderr
    expected = [hit["id"] for hit in json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"]]
    assert card_ids(page) == expected and set(expected) <= set(members)  # only the branch's items
    assert page.outside == []


def test_the_threshold_hides_results_and_the_export_holds_the_search_rows(page, served, main_job, caltech_subset,
                                                                          tmp_path):
    import csv

    base, _ = served
    query = sorted((caltech_subset / "bass").iterdir())[0]
    page.goto(base + "/")
    page.wait_for_selector("#method option", state="attached")
    search_picture(page, query, 10)
    cli = run_cli("search", main_job / "index", query, "-k", "10", "--json", tmp_path / "r.json", "--grid",
                  tmp_path / "g.png")
    assert cli.returncode == 0, cli.stderr
    hits = json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"]
    with page.expect_download() as download:
        page.click("#export-csv")
    download.value.save_as(tmp_path / "export.csv")
    with open(tmp_path / "export.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["rank"]), int(r["id"]), r["file"], r["class"]) for r in rows] == \
        [(h["rank"], h["id"], str(Path(h["path"]).relative_to(caltech_subset)), h["class"]) for h in hits]
    assert [float(r["distance"]) for r in rows] == pytest.approx([h["distance"] for h in hits], abs=1e-6)
    cut = sorted(h["similarity"] for h in hits)[4]  # a threshold between the 5th and 6th most similar
    page.fill("#min-similarity", str(100 * cut + 1e-6))
    shown = page.eval_on_selector_all(".hit:not([hidden])", "cards => cards.map(card => Number(card.dataset.id))")
    assert shown == [h["id"] for h in hits if h["similarity"] >= cut + 1e-8] and len(shown) == 5
    assert page.inner_text("#hidden-count") == "5 hidden"


def test_a_low_confidence_query_is_shown_as_such(page, served, caltech_subset):
    base, _ = served

    # the server's own answer, with the placement made a guess between classes (a fetch shim: playwright's
    # route.fetch() does not pass a multipart image upload through intact)
    page.add_init_script("""
        const realFetch = window.fetch;
        window.fetch = async (...args) => {
          const response = await realFetch(...args);
          if (!String(args[0]).startsWith("/api/search")) return response;
          const report = await response.json();
          for (const query of report.queries) {
            query.confidence = 0.31;
            if (query.novelty) query.novelty.flagged = false;
            delete query.note;
          }
          return new Response(JSON.stringify(report), { status: response.status, headers: response.headers });
        };""")
    page.goto(base + "/")
    page.wait_for_selector("#method option", state="attached")
    search_picture(page, sorted((caltech_subset / "ant").iterdir())[0], 4)
    assert "(31% sure)" in page.inner_text(".query")
    assert page.inner_text(".query .unsure").startswith("unsure: the picture lies between classes (31% sure")
    assert {card.evaluate("n => n.style.getPropertyValue('--tone')") for card in page.locator(".hit").all()} == \
        {"#a0a8b0"}


def test_the_page_lists_the_near_duplicates_of_the_api(page, served):
    base, _ = served
    with urllib.request.urlopen(f"{base}/api/duplicates?threshold=0.3") as answer:  # a looser threshold: some groups
        groups = json.load(answer)["groups"]
    assert groups  # the 10-class subset holds some at this threshold: the view has something to show
    page.route(f"{base}/api/duplicates", lambda route: route.continue_(url=f"{base}/api/duplicates?threshold=0.3"))
    page.goto(base + "/")
    page.wait_for_selector("#method option", state="attached")
    page.click("#show-duplicates")
    page.wait_for_selector("#duplicates .query")
    shown = page.eval_on_selector_all("#duplicates .duplicate-group", "groups => groups.map(g => "
                                      "[...g.querySelectorAll('.member')].map(card => Number(card.dataset.id)))")
    assert shown == [[item["id"] for item in group] for group in groups]
    assert page.inner_text("#duplicates .query").startswith(f"{len(groups)} groups" if groups else "no near-identical")
    assert page.outside == []
