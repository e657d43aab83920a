"""The dashboard (GET /) in headless Chromium: the page loads, a chat round
trip renders the model's reply, and the pool view updates from /metrics.json.

Chromium (Debian's `chromium`) is driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: NUL-terminated JSON on fds 3 and 4), so no client
library is needed. Skipped when Chromium is absent, unless
KVS_REQUIRE_CHROMIUM=1 (CI), where that fails. Every wait is bounded.
"""
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

import openai
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if not CHROMIUM:
    if os.environ.get("KVS_REQUIRE_CHROMIUM") == "1":
        raise RuntimeError("KVS_REQUIRE_CHROMIUM=1 but chromium is not installed (apt-get install chromium)")
    pytest.skip("chromium absent (apt-get install chromium): dashboard browser test skipped", allow_module_level=True)


class JsError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page, spoken to over the DevTools pipe."""

    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="kvslim-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        args = [CHROMIUM, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", f"--user-data-dir={self.profile}", "about:blank"]
        # the protocol's fixed descriptors 3 and 4 are set by the shell that execs Chromium
        # (subprocess closes every descriptor not passed, after a preexec_fn would run)
        script = f'exec 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-; exec "$@"'
        self.proc = subprocess.Popen(["bash", "-c", script, "bash", *args], pass_fds=(to_child_r, from_child_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        targets = self.call("Target.getTargets", timeout=60)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method, timeout=30, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"chromium gave no answer to {method} in {timeout} s")
            r, _, _ = select.select([self.from_child], [], [], 0.5)
            if r:
                chunk = os.read(self.from_child, 1 << 16)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe")
                self.buf += chunk

    def js(self, expr):
        """The value of a JavaScript expression (promises awaited)."""
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise JsError(f"{expr}: {r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def wait_js(self, expr, seconds=60, what=None):
        deadline = time.monotonic() + seconds
        err = None
        while time.monotonic() < deadline:
            try:  # the page may still be loading: its elements are not there yet
                v = self.js(expr)
            except JsError as e:
                v, err = None, e
            if v:
                return v
            time.sleep(0.2)
        raise AssertionError(f"timed out after {seconds} s waiting for {what or expr} (last error: {err})")

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.to_child)
        os.close(self.from_child)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def test_dashboard_in_chromium(make_server, browser):
    s = make_server("-c", "1024", "--parallel", "2")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=s.url + "/")
    # the page loads and the pool view draws from /metrics.json
    model = browser.wait_js("document.getElementById('model').textContent", 30, "the model line")
    assert "context 1024 tokens" in model
    assert browser.js("document.getElementById('status').textContent") == ""
    assert "of" in browser.js("document.getElementById('usedtxt').textContent")
    assert browser.js("document.getElementById('scheme').textContent")
    stats0 = browser.js("document.getElementById('stats').innerText")
    assert "0 / 0 / 0" in stats0, stats0  # no requests yet

    # a chat round trip: typed, sent with the button, streamed into the log
    browser.js("document.getElementById('temp').value = '0'; document.getElementById('max').value = '8'; "
               "document.getElementById('msg').value = 'Name a colour.'; document.getElementById('send').click(); 1")
    reply = browser.wait_js("(document.querySelector('#log .e') || {}).textContent || "
                            "(document.querySelector('#log .a') || {}).textContent", 60, "the reply")
    assert not reply.startswith("ERROR"), reply
    # the same request through the API gives the text the page rendered
    c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=120)
    want = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Name a colour."}],
                                     max_tokens=8, temperature=0).choices[0].message.content
    browser.wait_js(f"document.querySelector('#log .a').textContent === {json.dumps(want)}", 30,
                    f"the rendered reply to become {want!r} (now {reply!r})")
    assert browser.js("document.querySelector('#log .u').textContent") == "> Name a colour."

    # the pool view updates: the two requests are counted within its polling
    browser.wait_js("document.getElementById('stats').innerText.includes('2 / 0 / 0')", 30,
                    "the pool view to count two finished requests")
    used = browser.js("document.getElementById('usedtxt').textContent")
    assert used.split(" MiB")[0] != "0.0", used  # the cached prefix holds pages
