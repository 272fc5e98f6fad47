"""index.html: its structure read back with html.parser, then the page opened in headless Chromium.

The browser is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`, stdlib only): console
errors, uncaught exceptions, error log entries (Chromium logs a failed resource load there), failed network
loads, any request that is not file:// or data:, and images that did not decode all count as failures.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixeldit.report.build import build_report

FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "report" / "results"
CARD_URL = "https://example.org/dpg-bench-protocol"       # a URL a protocol card may hold: text, never a link
RECORDED_COMMAND = "pixeldit-bench eval dpg samples/t2i-tiny-0/0000128/dpm-25-cfg4.5 --out dpg.json"
NUMBER = re.compile(r"-?\d+(\.\d+)?( ± \d+(\.\d+)?)?|n/a")
BROWSER_TIMEOUT_S = 60


def _edit_result(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The fixture results plus sample grids, an interval, a URL in a card and a recorded command; then the report."""
    results = tmp_path_factory.mktemp("html") / "results"
    shutil.copytree(FIXTURE_RESULTS, results)
    rng = np.random.default_rng(0)
    for kimg in ("0000256", "0000512"):
        folder = results / "samples/pixeldit-s4-0" / kimg / "euler-50-cfg1.5"
        folder.mkdir(parents=True)
        np.savez(folder / "samples.npz", arr_0=rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8))
        Image.fromarray(rng.integers(0, 256, size=(64, 160, 3), dtype=np.uint8)).save(folder / "samples-grid.png")
    _edit_result(results / "metrics/pixeldit-s4-0/0000512/euler-50-cfg1.5/imagenet.json",
                 lambda record: record["values"].update(fid_std=0.123))
    _edit_result(results / "metrics/t2i-tiny-0/0000128/dpm-25-cfg4.5/dpg.json",
                 lambda record: (record["protocol"].update(source=CARD_URL),
                                 record.update(extra={"command": RECORDED_COMMAND, "seconds": 12.5})))
    plan = build_report(results)
    return plan, plan.out_dir / "index.html"


class PageParser(HTMLParser):
    """Tables (cells with their visible text and card), image sources, links, ids, text inside and outside cards."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[dict]]] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.attributes: list[str] = []
        self.cards: list[str] = []
        self.text_outside_cards: list[str] = []
        self._table_id = None
        self._cell = None
        self._in_card = self._in_sup = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.attributes += [value for value in attrs.values() if value]
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "div" and attrs.get("id", "").startswith("table-"):
            self._table_id = attrs["id"].removeprefix("table-")
            self.tables[self._table_id] = []
        elif tag == "tr" and self._table_id and self._cell is None:
            self.tables[self._table_id].append([])
        elif tag == "td" and self._table_id:
            self._cell = {"text": "", "card": None}
            self.tables[self._table_id][-1].append(self._cell)
        elif tag == "pre" and attrs.get("class") == "card":
            self._in_card = True
            self.cards.append("")
            if self._cell is not None:
                self._cell["card"] = len(self.cards) - 1
        elif tag == "sup":
            self._in_sup = True
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "pre" and self._in_card:
            self._in_card = False
        elif tag == "sup":
            self._in_sup = False
        elif tag == "td":
            self._cell = None
        elif tag == "table":
            self._table_id = None

    def handle_data(self, data):
        if self._in_card:
            self.cards[-1] += data
            return
        self.text_outside_cards.append(data)
        if self._cell is not None and not self._in_sup:
            self._cell["text"] += data


def _parse(index: Path) -> PageParser:
    parser = PageParser()
    parser.feed(index.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_page_has_every_table_with_its_rows(report):
    plan, index = report
    page = _parse(index)
    for table in plan.tables:
        rows = page.tables[table.name][1:]          # the header row first
        assert [row[0]["text"] for row in rows] == [cells[0].text for cells in table.rows], table.name
    assert {"main-imagenet-256", "main-imagenet-512", "main-digits-32", "ablation-ladder", "t2i"} <= set(page.tables)
    digits = [row[0]["text"] for row in page.tables["main-digits-32"][1:]]
    assert "full PixelDiT (pixeldit-s4-0, 512 kimg, euler-50-cfg1.5)" in digits
    assert any(label.startswith("vanilla DiT/4") for label in digits)

    compute = page.tables["latent_vs_pixel-digits-32"][1:]
    assert {row[1]["text"] for row in compute} == {"latent", "pixel"}
    pflops = [float(row[5]["text"]) for row in compute]
    assert pflops == sorted(pflops) and len(compute) == 6      # every digits-32 snapshot with FID and compute


def test_every_number_opens_its_protocol_card(report):
    plan, index = report
    page = _parse(index)
    results = plan.results_dir
    checked = 0
    for name in [table.name for table in plan.tables] + ["latent_vs_pixel-digits-32"]:
        for row in page.tables[name][1:]:
            for cell in row:
                if NUMBER.fullmatch(cell["text"].strip()):
                    assert cell["card"] is not None, f"{name}: {cell['text']!r} has no protocol card"
                    checked += 1
    assert checked > 100
    measured = [json.loads(card) for card in page.cards if '"result"' in card]
    for card in measured:
        cards = card if isinstance(card, list) else [card]
        for one in cards:
            assert json.loads((results / one["result"]).read_text())["protocol"] == one["protocol"]
    published = [json.loads(card) for card in page.cards if '"registry"' in card]
    assert published and all(card["source"] for card in published)
    deco = [row for row in page.tables["main-imagenet-256"][1:] if row[0]["text"] == "DeCo-XL/16"]
    assert len(deco) == 2                              # one method, one source, two budgets: each its own card
    for row in deco:
        assert json.loads(page.cards[row[7]["card"]])["epochs"] == float(row[5]["text"])

    fid_cells = [row[7]["text"] for row in page.tables["main-digits-32"][1:]]
    assert "30.50 ± 0.12" in fid_cells                         # the one result that records fid_std
    assert sum("±" in text for text in fid_cells) == 1


def test_images_resolve_and_nothing_points_off_the_page(report):
    plan, index = report
    page = _parse(index)
    folder = index.parent
    assert page.images and all(not re.match(r"[a-z]+:|/", src) for src in page.images)
    for src in page.images:
        assert (folder / src).is_file(), src
    assert "grids/pixeldit-s4-0/0000512-euler-50-cfg1.5.png" in page.images
    assert "plots/loss_curves.png" in page.images
    for href in page.links:
        if href.startswith("#"):
            assert href[1:] in page.ids, f"anchor {href} has no target"
        else:
            assert (folder / href).is_file(), href
    assert "samples-pixeldit-s4-0" in page.ids
    assert not any("://" in value for value in page.attributes)
    assert not re.search(r"https?://", "".join(page.text_outside_cards))
    assert any(CARD_URL in card for card in page.cards)           # a card's URL stays inert text


def test_summary_and_reproduce_come_from_the_results(report):
    plan, index = report
    text = "".join(_parse(index).text_outside_cards)
    assert "9 result files" in text and "0" * 40 in text and "fixture" in text and "torch 2.13.0" in text
    assert "12.5 s of evaluation over the 1 of 9 results" in text
    assert f"pixeldit-bench report --results {plan.results_dir} --out {plan.out_dir}" in text
    assert RECORDED_COMMAND in text
    assert "no command line recorded; inputs: samples: samples/pixeldit-s4-0/0000512/euler-50-cfg1.5" in text


# ------------------------------------------------------------------------------------------ browser

def chromium_executable() -> str:
    """Debian's chromium, installed with apt-get when missing (CI is a fresh machine running as root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail("the browser test needs Debian's `chromium`, which is missing, and cannot install it here "
                    "(apt-get needs root); run `apt-get install -y chromium` as root, then rerun")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]):
        done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=1200)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(command)}` failed (exit {done.returncode}), so the page cannot be checked in "
                        f"a browser: {done.stderr.strip()[-1500:]}")
    return shutil.which("chromium") or pytest.fail("apt-get installed chromium but it is not on PATH")


def _move_above(fd: int, lowest: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, lowest)
    os.close(fd)
    return moved


class DevTools:
    """A headless Chromium spoken to over `--remote-debugging-pipe`: commands out on fd 3, replies on fd 4."""

    def __init__(self, chromium: str, profile: Path):
        browser_reads, self._to_browser = os.pipe()
        self._from_browser, browser_writes = os.pipe()
        # Above 9, so bash's `3<&` / `4>&` cannot overwrite one pipe end with the other (dash takes no fd > 9).
        browser_reads, browser_writes = (_move_above(fd, 10) for fd in (browser_reads, browser_writes))
        arguments = ["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
                     "--remote-debugging-pipe", "--window-size=1280,900", f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{browser_reads} 4>&{browser_writes}', chromium, *arguments],
            pass_fds=(browser_reads, browser_writes), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(browser_reads)
        os.close(browser_writes)
        self._messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as stream:
            while chunk := stream.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._messages.put(json.loads(message))

    def _receive(self) -> dict:
        try:
            return self._messages.get(timeout=BROWSER_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"chromium sent nothing for {BROWSER_TIMEOUT_S} s") from None

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        while True:
            event = next((event for event in self.events if event.get("method") == method), None) or self._receive()
            if event.get("method") == method:
                return event
            self.events.append(event)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_browser)


def open_in_browser(page: Path, screenshot: Path, profile: Path) -> list[str]:
    """Load `page` from file://, save a full-page screenshot, return every problem the browser saw."""
    browser = DevTools(chromium_executable(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable", session=session)
        navigation = browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        assert "errorText" not in navigation, navigation
        browser.wait_for("Page.loadEventFired")
        broken = browser.send("Runtime.evaluate", {"expression": "Array.from(document.images).filter(image => "
                                                   "!image.complete || image.naturalWidth === 0).map(i => i.src)",
                                                   "returnByValue": True}, session=session)["result"]["value"]
        size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}, session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()
    problems = [f"image did not load: {source}" for source in broken]
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            problems.append("console error: " + " ".join(str(arg.get("value", arg.get("description")))
                                                         for arg in params["args"]))
        elif method == "Runtime.exceptionThrown":
            problems.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            problems.append(f"log error: {params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            problems.append(f"failed load: {params.get('errorText')} (request {params['requestId']})")
        elif method == "Network.requestWillBeSent" and not re.match(r"(file|data|about):", params["request"]["url"]):
            problems.append(f"network fetch: {params['request']['url']}")
    return problems


def test_browser_sees_the_failures_it_must_report(tmp_path):
    """The checker itself: a page with a missing image, a console error and a remote image fails on all three."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png"><img src="http://192.0.2.1/x.png">'
                    '<script>console.error("deliberate")</script></body></html>')
    problems = "\n".join(open_in_browser(page, tmp_path / "broken.png", tmp_path / "profile"))
    assert "console error: deliberate" in problems
    assert "image did not load" in problems and "missing.png" in problems
    assert "network fetch: http://192.0.2.1/x.png" in problems


def test_page_renders_in_chromium_without_errors(report, tmp_path):
    _, index = report
    screenshot = index.parent / "index-screenshot.png"
    problems = open_in_browser(index, screenshot, tmp_path / "profile")
    assert problems == [], "\n".join(problems)
    with Image.open(screenshot) as image:
        width, height = image.size
        colours = len(image.convert("RGB").getcolors(maxcolors=1 << 20) or range(1 << 20))
    assert width >= 1000 and height > 3000      # the whole page, not the 900-pixel window
    assert screenshot.stat().st_size > 100_000 and colours > 1000
