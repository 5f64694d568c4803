"""The backward explorer in a real browser: headless Chromium (Debian's `chromium`),
driven by Playwright's Python API pointed at that executable (Playwright never downloads a
browser here). Keys, buttons, `#step=K`, clicks on the drawing and search step the page,
and the panel is checked against the engine's own record, the Trace.

Without Chromium or Playwright these tests skip, unless TINYGRAPH_REQUIRE_BROWSER is set
(CI sets it, so that there they always run)."""

import math
import os
import re
import shutil

import pytest
import torch

import tinygraph as tg
from tinygraph import viz
from transformer.config import load_preset
from transformer.layers import Block
from transformer.model import LanguageModel

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright is not installed (pip install -e '.[dev]')"
    if missing is None and (CHROMIUM is None or shutil.which("dot") is None):
        missing = "Chromium or graphviz is not installed (Debian: apt-get install chromium graphviz)"
    if missing:
        if os.environ.get("TINYGRAPH_REQUIRE_BROWSER"):
            pytest.fail(f"{missing}, and TINYGRAPH_REQUIRE_BROWSER is set.")
        pytest.skip(missing)
    with sync_playwright() as p:
        # Playwright gives every launch a fresh, temporary profile (--user-data-dir)
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def block_page(tmp_path_factory):
    torch.manual_seed(0)
    block = Block(8, 2)
    with viz.Trace(block) as trace:
        out = block(tg.randn(2, 3, 8, requires_grad=True))
        out.backward(tg.randn(out.shape))
    path = trace.write_html(out, tmp_path_factory.mktemp("explorer") / "block.html", title="Block")
    return path.as_uri(), trace, sorted(trace.order, key=trace.order.get)


@pytest.fixture
def page(browser):
    """A page that fails the test on any script error or any request that leaves the file."""
    page = browser.new_page(viewport={"width": 1300, "height": 850})
    errors, requests = [], []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("request", lambda request: requests.append(request.url))
    yield page
    page.close()
    assert errors == []
    assert requests and all(url.startswith("file://") for url in requests)


def at(page, uri, step):
    page.goto(f"{uri}#step={step}")
    return shown(page)


def shown(page):
    return int(page.locator("body").get_attribute("data-step"))


def check_panel(page, trace, nodes, step):
    """Everything the panel says about step K, against the Trace's record of op #K."""
    node = nodes[step - 1]
    panel = page.locator("#panel")
    assert panel.locator(".step-of").inner_text().lower() == f"step {step} of {len(nodes)}"
    assert panel.locator("h1").inner_text() == f"#{step} {node.name}"
    module = trace.scope_of[node]
    assert module is None or module in panel.locator(".module").inner_text()
    cards = panel.locator(".grad")  # the grad of each output, then the grad sent to each input
    assert cards.count() == len(node.outputs) + len(node.edges)
    for card, stats in zip(cards.all(), trace.received[node] + trace.grads[node]):
        if stats is None:
            assert card.locator("[data-field]").count() == 0
            continue
        field = lambda name, card=card: card.locator(f"[data-field={name}]").inner_text()  # noqa: E731
        assert field("shape") == "(" + ", ".join(map(str, stats.shape)) + ("," if len(stats.shape) == 1 else "") + ")"
        assert field("dtype") == stats.dtype
        for name in ("norm", "min", "max"):
            assert math.isclose(float(field(name)), getattr(stats, name), rel_tol=1e-3, abs_tol=1e-12), name
        assert card.locator(".hist rect").count() == viz.HIST_BINS
    saved = panel.locator(".saved").inner_text()
    assert saved == "nothing" if not trace.saved_bytes[node] else saved.endswith("(unless retain_graph)")
    assert re.search(r"def backward\(ctx", panel.locator("pre.source").inner_text())
    # the drawing highlights op #K: the node whose label starts with "#K "
    current = page.locator(".view:not([hidden]) g.node.current text").first.text_content()
    assert current == f"#{step} {node.name}"


def test_step_k_in_the_url_opens_at_step_k_and_the_panel_is_the_engines_record(page, block_page):
    uri, trace, nodes = block_page
    for step in (1, 5, 10, len(nodes)):
        assert at(page, uri, step) == step
        check_panel(page, trace, nodes, step)
    assert at(page, uri, 999) == len(nodes)  # clamped


def test_keys_and_buttons_step_and_the_url_follows(page, block_page):
    uri, trace, nodes = block_page
    at(page, uri, 1)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert shown(page) == 3 and page.evaluate("location.hash") == "#step=3"
    check_panel(page, trace, nodes, 3)
    page.keyboard.press("ArrowLeft")
    assert shown(page) == 2
    page.keyboard.press("End")
    assert shown(page) == len(nodes) and page.locator("#next").is_disabled()
    page.keyboard.press("Home")
    assert shown(page) == 1 and page.locator("#prev").is_disabled()
    page.click("#next")
    page.click("#next")
    page.click("#prev")
    assert shown(page) == 2
    page.click("#last")
    assert shown(page) == len(nodes)
    page.click("#first")
    assert shown(page) == 1
    page.evaluate("location.hash = '#step=7'")
    page.wait_for_function("document.body.dataset.step === '7'")
    check_panel(page, trace, nodes, 7)
    page.keyboard.press(" ")  # play: one step a second
    page.wait_for_function("document.body.dataset.step === '8'", timeout=5000)
    page.click("#play")  # pause
    assert page.get_attribute("#play", "aria-label") == "play"
    page.wait_for_timeout(1200)
    assert shown(page) == 8


def test_a_click_on_an_op_or_on_a_link_in_the_panel_jumps_to_its_step(page, block_page):
    uri, trace, nodes = block_page
    at(page, uri, 1)
    page.keyboard.press("0")  # fit the whole drawing
    target = next(k for k, n in enumerate(nodes, 1) if n.name == "PackedAttention")
    page.locator(".view:not([hidden]) g.node", has_text=f"#{target} PackedAttention").click()
    assert shown(page) == target
    check_panel(page, trace, nodes, target)
    link = page.locator("#panel .grad a").first  # the op that receives input 0's grad
    expected = int(link.inner_text().split()[0][1:])
    link.click()
    assert shown(page) == expected


def test_search_by_op_name_and_by_module_path(page, block_page):
    uri, trace, nodes = block_page
    at(page, uri, 1)
    page.keyboard.press("/")
    page.keyboard.type("gelu")
    gelu = next(k for k, n in enumerate(nodes, 1) if n.name == "Gelu")
    assert page.locator("#matches li").all_inner_texts() == [f"#{gelu} Gelu mlp"]
    page.keyboard.press("Enter")
    assert shown(page) == gelu
    page.fill("#search", "attn.qkv")
    in_qkv = [k for k, n in enumerate(nodes, 1) if (trace.scope_of[n] or "").startswith("attn.qkv")]
    items = page.locator("#matches li")
    assert [int(t.split()[0][1:]) for t in items.all_inner_texts()] == in_qkv
    items.first.click()
    assert shown(page) == in_qkv[0]


def test_zoom_and_pan_move_the_drawing(page, block_page):
    uri, _, _ = block_page
    at(page, uri, 1)
    box = lambda: [float(v) for v in page.locator(".view:not([hidden]) svg").get_attribute("viewBox").split()]  # noqa: E731
    before = box()
    page.click("#zoom-in")
    assert box()[2] == pytest.approx(before[2] / 1.25)
    page.keyboard.press("-")
    assert box()[2] == pytest.approx(before[2])
    page.mouse.move(300, 400)
    page.mouse.wheel(0, -300)
    assert box()[2] < before[2]
    x = box()[0]
    page.mouse.down()
    page.mouse.move(360, 400, steps=4)
    page.mouse.up()
    assert box()[0] < x and shown(page) == 1  # dragged right: the drawing moves, the step stays


def test_a_whole_model_opens_its_modules_on_click_and_follows_backward_into_them(page, tmp_path):
    torch.manual_seed(0)
    model = LanguageModel(load_preset("baby"), 11)
    with viz.Trace(model) as trace:
        _, loss = model(tg.randint(0, 11, (2, 5)), tg.randint(0, 11, (2, 5)))
        loss.backward()
    uri = trace.write_html(loss, tmp_path / "baby.html", depth=2).as_uri()
    nodes = sorted(trace.order, key=trace.order.get)
    view = lambda: int(page.locator("body").get_attribute("data-view"))  # noqa: E731
    at(page, uri, 1)  # the loss: drawn in the overview, every layer a box
    assert view() == 0
    boxes = page.locator(".view:not([hidden]) g.node", has_text="(collapsed)")
    assert boxes.count() == 8  # layers 0, 1, 3-8 (the dropout of p=0 records no op)
    page.keyboard.press("0")
    boxes.filter(has_text="layers.5").click()  # opens layers.5: its ops drawn, the other layers still boxes
    assert view() != 0 and shown(page) == 1
    drawn = page.locator(".view:not([hidden]) g.node")
    assert drawn.filter(has_text="layers.5.attn.qkv.weight").count() == 1
    assert drawn.filter(has_text="(collapsed)").count() == 7
    page.click("#collapse")
    assert view() == 0
    step = next(k for k, n in enumerate(nodes, 1) if trace.scope_of[n] == "layers.4.mlp")
    at(page, uri, step)  # stepping into a collapsed block opens it
    assert page.locator("#where").inner_text().startswith("layers.4 (Block)")
    check_panel(page, trace, nodes, step)
