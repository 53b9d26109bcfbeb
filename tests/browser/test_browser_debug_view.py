"""The live debug view (/debug/, on when DEBUG_VIEW_TOKEN is set) in a real Chromium.

The page contract these tests read: `<body data-tag="<tag>">`; `#status` reads `live` while the
page polls `/debug/<tag>/entries`; each document is an element `.doc[data-doc-id="<docId>"]`
with its body in `pre.body`; the login form has `input#token` (name `token`) and `#login`.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import time
from urllib.parse import urlsplit

from browser_harness import REPO, doc_id, get, need_selenium, random_token, submit

need_selenium()

# After need_selenium: skipped (or failed under CI=true) with a clear message when missing.
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

TAG = "wharf-test"
LIVE_WITHIN_S = 2.0


def doc_selector(doc: str) -> str:
    return f'.doc[data-doc-id="{doc}"]'


def login(browser, stack, token: str) -> None:
    """Logs in through the form; waits for the redirect to /debug/."""
    d = browser.driver
    d.get(stack.url("/debug/login"))
    field = WebDriverWait(d, 10).until(EC.presence_of_element_located((By.ID, "token")))
    assert field.get_attribute("name") == "token"
    field.send_keys(token)
    d.find_element(By.ID, "login").click()
    WebDriverWait(d, 10).until(
        lambda d: urlsplit(d.current_url).path == "/debug/",
        message="the login to redirect to /debug/",
    )


def text(element) -> str:
    """The element's textContent: what the DOM holds, whatever CSS does to how it is drawn
    (Selenium's `.text` returns the drawn text, `text-transform: uppercase` included)."""
    return element.get_attribute("textContent")


def status(browser) -> str:
    return text(browser.driver.find_element(By.ID, "status")).strip()


def open_view(browser, stack, tag: str = TAG) -> None:
    """Opens /debug/<tag> and waits until the page says it is polling."""
    d = browser.driver
    d.get(stack.url(f"/debug/{tag}"))
    WebDriverWait(d, 10).until(lambda d: status(browser) == "live", message="#status to read `live`")
    assert d.find_element(By.TAG_NAME, "body").get_attribute("data-tag") == tag


def wait_doc(browser, doc: str, timeout: float):
    return WebDriverWait(browser.driver, timeout, poll_frequency=0.02).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, doc_selector(doc))),
        message=f"document {doc} on the page within {timeout}s",
    )


def send_tagged(stack, body: bytes, tag: str | None = TAG, headers: dict | None = None,
                doc_type: str = "metrics", namespace: str = "glean-js") -> str:
    doc = doc_id()
    h = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    if tag is not None:
        h["X-Debug-ID"] = tag
    assert submit(stack.submit_url(doc, namespace=namespace, doc_type=doc_type), body, h) == 200
    return doc


def test_debug_view_shows_new_documents_live(make_stack, browser):
    """(c) Logged in through the form, /debug/wharf-test shows a document submitted after it
    opened within 2 s, without a reload; documents of another tag or without one do not show."""
    token = random_token()
    stack = make_stack({"DEBUG_VIEW_TOKEN": token})
    login(browser, stack, token)
    open_view(browser, stack)
    d = browser.driver
    d.execute_script("window.__sameDocument = 'still here'")
    assert not d.find_elements(By.CSS_SELECTOR, ".doc")

    body = json.dumps({"ping_info": {"seq": 0}, "client_info": {"app_channel": "nightly"},
                       "metrics": {"string": {"marker": "live-1"}}}).encode()
    started = time.monotonic()
    doc = send_tagged(stack, body)
    element = wait_doc(browser, doc, LIVE_WITHIN_S)
    elapsed = time.monotonic() - started
    print(f"document shown {elapsed:.2f} s after its submission was sent")
    assert elapsed <= LIVE_WITHIN_S, elapsed
    assert "live-1" in text(element.find_element(By.CSS_SELECTOR, "pre.body"))
    assert d.execute_script("return window.__sameDocument") == "still here", "the page was reloaded"

    # Another tag and no tag, then a sentinel on ours: once the sentinel shows, the page has
    # polled past both others.
    other = send_tagged(stack, b'{"other":1}', tag="someone-else")
    untagged = send_tagged(stack, b'{"untagged":1}', tag=None)
    sentinel = send_tagged(stack, b'{"sentinel":1}')
    wait_doc(browser, sentinel, LIVE_WITHIN_S + 1)
    shown = {e.get_attribute("data-doc-id") for e in d.find_elements(By.CSS_SELECTOR, ".doc")}
    assert shown == {doc, sentinel}, shown
    assert other not in d.page_source and untagged not in d.page_source
    assert status(browser) == "live"


XSS = '{"html":"<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"}'


def test_debug_view_shows_client_data_as_text(make_stack, browser):
    """(c) Markup in a body (and in a stored header) is shown as text and never runs."""
    token = random_token()
    stack = make_stack({"DEBUG_VIEW_TOKEN": token})
    login(browser, stack, token)
    open_view(browser, stack)
    d = browser.driver

    doc = send_tagged(stack, XSS.encode(), headers={
        "User-Agent": "<img src=x onerror=window.__pwned=3>",
        "X-Source-Tags": "<script>window.__pwned=4</script>",
    })
    element = wait_doc(browser, doc, LIVE_WITHIN_S)
    pre = element.find_element(By.CSS_SELECTOR, "pre.body")
    shown = text(pre)
    assert "<script>window.__pwned=1</script>" in shown, shown
    assert "<img src=x onerror=window.__pwned=2>" in shown, shown
    # One more poll cycle (a second document shown) gives an injected <img> time to fail to load.
    sentinel = send_tagged(stack, b'{"sentinel":1}')
    wait_doc(browser, sentinel, LIVE_WITHIN_S + 1)
    assert d.execute_script("return typeof window.__pwned") == "undefined"
    injected = d.execute_script(
        "return Array.from(document.querySelectorAll('.doc script, .doc img, .doc [onerror]'))"
        ".map(e => e.outerHTML)"
    )
    assert injected == [], injected


def test_debug_view_needs_the_token(make_stack, make_browser):
    """(c) Without the token (a fresh browser, no cookie) /debug/ and /debug/wharf-test show the
    login form and no documents; a wrong token is refused (form and Bearer); the right one works."""
    token = random_token()
    stack = make_stack({"DEBUG_VIEW_TOKEN": token})
    secret_doc = send_tagged(stack, b'{"kept":"for the view"}')

    # Outside the browser: 401 with the form, nothing of the document.
    for path in ("/debug/", f"/debug/{TAG}"):
        status, _, page = get(stack.url(path))
        assert status == 401, (path, status)
        assert b'name="token"' in page and secret_doc.encode() not in page, (path, page[:500])
    status, _, page = get(stack.url(f"/debug/{TAG}/entries?after=0"))
    assert status == 401 and secret_doc.encode() not in page
    status, _, page = get(stack.url(f"/debug/{TAG}/entries?after=0"), {"Authorization": f"Bearer {token}x"})
    assert status == 401 and secret_doc.encode() not in page
    status, _, page = get(stack.url(f"/debug/{TAG}/entries?after=0"), {"Authorization": f"Bearer {token}"})
    assert status == 200 and secret_doc.encode() in page, (status, page[:500])

    # A fresh browser has no cookie: the view is the login form.
    browser = make_browser()
    d = browser.driver
    d.get(stack.url(f"/debug/{TAG}"))
    WebDriverWait(d, 10).until(EC.presence_of_element_located((By.ID, "token")))
    assert d.find_elements(By.ID, "login")
    assert not d.find_elements(By.CSS_SELECTOR, ".doc")
    assert secret_doc not in d.page_source

    # A wrong token through the form: refused, still no access.
    d.get(stack.url("/debug/login"))
    field = WebDriverWait(d, 10).until(EC.presence_of_element_located((By.ID, "token")))
    field.send_keys(token[:-1] + ("A" if token[-1] != "A" else "B"))
    button = d.find_element(By.ID, "login")
    button.click()
    WebDriverWait(d, 10).until(EC.staleness_of(button), message="the form to be answered")
    WebDriverWait(d, 10).until(EC.presence_of_element_located((By.ID, "token")))
    assert urlsplit(d.current_url).path != "/debug/" or d.find_elements(By.ID, "token")
    d.get(stack.url(f"/debug/{TAG}"))
    WebDriverWait(d, 10).until(EC.presence_of_element_located((By.ID, "token")))
    assert not d.find_elements(By.CSS_SELECTOR, ".doc")
    assert secret_doc not in d.page_source

    # The right token in the same browser: the document kept before is there.
    login(browser, stack, token)
    open_view(browser, stack)
    wait_doc(browser, secret_doc, LIVE_WITHIN_S + 1)


# ---------------------------------------------------------------------------- screenshot


def glean_pings() -> list[tuple[str, str, bytes, dict]]:
    """(docType, description, body, extra headers): a metrics ping, a gzip events ping and a
    baseline ping carrying markup in a string metric."""
    client_info = {
        "telemetry_sdk_build": "5.0.3",
        "client_id": "5d8e3c2a-4b7f-4f0e-9a61-2c0b7d1e8f34",
        "first_run_date": "2026-11-14+00:00",
        "os": "Linux",
        "os_version": "Unknown",
        "architecture": "Unknown",
        "locale": "en-US",
        "app_build": "Unknown",
        "app_display_version": "2.3.1",
        "app_channel": "release",
    }
    metrics = {
        "ping_info": {"seq": 41, "start_time": "2026-12-01T09:00:04.117+00:00",
                      "end_time": "2026-12-01T10:00:04.552+00:00", "reason": "scheduled"},
        "client_info": client_info,
        "metrics": {
            "counter": {"page.loads": 12, "search.submitted": 3},
            "string": {"app.theme": "dark"},
            "timespan": {"page.load_time": {"time_unit": "millisecond", "value": 418}},
            "labeled_counter": {"search.engine": {"default": 2, "wikipedia": 1}},
        },
    }
    events = {
        "ping_info": {"seq": 17, "start_time": "2026-12-01T09:58:00.000+00:00",
                      "end_time": "2026-12-01T10:00:05.000+00:00", "reason": "max_capacity"},
        "client_info": client_info,
        "events": [
            {"timestamp": 0, "category": "ui", "name": "button_click", "extra": {"id": "save"}},
            {"timestamp": 1840, "category": "ui", "name": "dialog_open", "extra": {"dialog": "share"}},
        ],
    }
    baseline = {
        "ping_info": {"seq": 88, "start_time": "2026-12-01T10:00:05.000+00:00",
                      "end_time": "2026-12-01T10:00:06.000+00:00", "reason": "active"},
        "client_info": client_info,
        "metrics": {"string": {"page.title": "<script>alert('hi')</script> Notes"}},
    }
    agent = {
        "X-Telemetry-Agent": "Glean/5.0.3 (JS on Linux)",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0",
    }
    return [
        ("metrics", "metrics ping", json.dumps(metrics, indent=2).encode(), agent),
        ("events", "events ping, gzip", gzip.compress(json.dumps(events).encode(), mtime=0),
         {**agent, "Content-Encoding": "gzip"}),
        ("baseline", "baseline ping with markup in a string", json.dumps(baseline).encode(), agent),
    ]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_debug_view_screenshot(make_stack, browser, tmp_path):
    """(d) The view with a few Glean-like pings. With WHARF_SCREENSHOT=<path> (relative to the
    repository) the picture is written there: tests/browser/screenshot refreshes
    docs/debug-view.png this way."""
    token = random_token()
    stack = make_stack({"DEBUG_VIEW_TOKEN": token})
    login(browser, stack, token)
    open_view(browser, stack)
    shown = []
    for doc_type, _, body, headers in glean_pings():
        doc = send_tagged(stack, body, headers=headers, doc_type=doc_type, namespace="org-example-notes")
        wait_doc(browser, doc, LIVE_WITHIN_S)
        shown.append(doc)
    d = browser.driver
    assert [e.get_attribute("data-doc-id") for e in d.find_elements(By.CSS_SELECTOR, ".doc")] in (shown, shown[::-1])
    assert d.execute_script("return document.querySelectorAll('.doc script').length") == 0
    assert status(browser) == "live"
    target = os.environ.get("WHARF_SCREENSHOT")
    out = REPO / target if target else tmp_path / "debug-view.png"  # REPO / an absolute path is that path
    out.parent.mkdir(parents=True, exist_ok=True)
    png = d.get_screenshot_as_png()
    width, height = png_size(png)
    assert (width, height) == tuple(d.execute_script("return [window.innerWidth, window.innerHeight]")), (width, height)
    out.write_bytes(png)
    print(f"screenshot: {out} ({width}x{height}, {len(png)} bytes)")
