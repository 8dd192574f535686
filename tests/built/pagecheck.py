"""A real-browser check of built HTML pages: headless Chromium driven over the DevTools
protocol, from the standard library alone.

Chromium is started with ``--remote-debugging-pipe``: it reads DevTools commands from file
descriptor 3 and writes replies and events to descriptor 4, as NUL-terminated JSON. No
websocket, no driver binary, no Python package is needed. :func:`check_page` loads one page
at each window width and returns the problems it finds, each naming the page, the width and
the element. What counts as a problem (the definitions the tests rely on):

**math**
    MathJax has typeset every ``div.math`` / ``span.math`` (one ``mjx-container`` each) with
    no error: no ``mjx-merror`` and no ``[data-mjx-error]`` (an unknown macro is an error
    because the book's MathJax configuration drops the ``noundefined`` package).
**overflow** (at every width)
    Checked elements: display equations (``mjx-container[display=true]``), tables,
    figures (``figure``, cell-output images, animation players), code blocks
    (``div.highlight``, ``pre``) and proof, theorem, exercise and admonition boxes. An
    element is *clipped* if its overflow-x is ``hidden`` or ``clip`` and its content is
    wider than its box (``scrollWidth > clientWidth``): part of it is cut off and no scroll
    bar is offered. An element *overflows* if the right edge of its content passes the
    right edge of the nearest ancestor that clips (overflow-x ``hidden``/``clip``) or, when
    no ancestor up to the text column clips or scrolls, the right edge of the text column
    (``article.bd-article``) or of the window. Content inside an ancestor that scrolls
    (overflow-x ``auto``/``scroll``) below the text column is reachable, so it is fine. An
    equation number that overlaps its equation is a problem too. Tolerance: 1 CSS pixel.
**images**
    Every ``<img>`` has loaded (``complete`` and ``naturalWidth > 0``).
**players**
    Every Matplotlib ``to_jshtml`` player (``div.animation``) has its frame image, slider and
    buttons, and stepping it (first frame, next frame, last frame) moves the slider and
    changes the image.
**launch buttons** (when expected links are given)
    The launch menu of the page holds exactly the expected Colab and Binder links.
**console**
    No JavaScript exception and no console error (failed resource loads included).
**offline**
    The page requests nothing from the network: every ``http(s)`` request is blocked and
    reported (the book is read from a static folder and must not depend on a CDN).
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The flags the book's check runs Chromium with (plus the pipe and a fresh profile).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--no-first-run"]
#: Window widths (CSS pixels) at which pages are checked: a desktop and a narrow window.
DESKTOP, NARROW = 1280, 400
WINDOW_HEIGHT = 900
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """The Chromium executable: ``$GMBOOK_CHROMIUM`` if set, else the first on ``PATH``."""
    env = os.environ.get("GMBOOK_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    """Chromium failed, died or did not answer in time."""


@dataclass(frozen=True)
class Problem:
    """One problem on one page: ``check`` is the kind (``math``, ``overflow``, ...)."""

    page: str
    width: int | None
    check: str
    element: str
    message: str

    def __str__(self) -> str:
        at = f" @{self.width}px" if self.width else ""
        return f"{self.page}{at} [{self.check}] {self.element}: {self.message}"


class Browser:
    """Headless Chromium with a DevTools client over a pipe. Use as a context manager."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium found (install Debian's chromium, or set "
                               "GMBOOK_CHROMIUM to the browser's executable)")
        self.timeout = timeout
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self._events: dict[str | None, list[dict]] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._profile: str | None = None

    # ------------------------------------------------------------------ process and pipe

    def __enter__(self) -> "Browser":
        self._profile = tempfile.mkdtemp(prefix="gmbook-chromium-")
        cmd_r, cmd_w = os.pipe()    # we write commands, Chromium reads fd 3
        out_r, out_w = os.pipe()    # Chromium writes fd 4, we read
        # In the child, dup2 the pipe ends onto 3 and 4 (pass_fds keeps those two open).
        # Copies above 4 first, so that the first dup2 cannot clobber the second's source.
        child_in = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)

        def wire() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        args = [self.executable, *CHROMIUM_FLAGS, "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}", "--mute-audio", "about:blank"]
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          pass_fds=(3, 4), preexec_fn=wire)
        finally:
            for fd in (cmd_r, out_w, child_in, child_out):
                os.close(fd)
        self._write = os.fdopen(cmd_w, "wb", buffering=0)
        self._read = os.fdopen(out_r, "rb", buffering=0)
        self._stderr: list[bytes] = []
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.call("Browser.getVersion")  # fails loudly if the browser did not come up
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            self.call("Browser.close", timeout=5)
        except BrowserError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._write, self._read):
            try:
                stream.close()
            except OSError:
                pass
        self._proc = None
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)

    def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = (self._stderr + [line])[-20:]

    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._read.read(1 << 16)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        box = self._replies.get(msg["id"])
                    if box is not None:
                        box.put(msg)
                else:
                    with self._lock:
                        self._events.setdefault(msg.get("sessionId"), []).append(msg)
        with self._lock:  # the browser is gone: wake every waiter
            for box in self._replies.values():
                box.put({"error": {"message": "the browser closed the pipe"}})

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        """Send one DevTools command and return its result (raise on error or time-out)."""
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            box: queue.Queue = queue.Queue()
            self._replies[mid] = box
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            self._write.write(json.dumps(msg).encode() + b"\0")
        except (BrokenPipeError, OSError) as err:
            raise BrowserError(f"{method}: the browser is gone ({err}); "
                               f"stderr: {self._stderr_tail()}") from err
        try:
            reply = box.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no answer in {timeout or self.timeout:.0f} s") \
                from None
        finally:
            with self._lock:
                self._replies.pop(mid, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}; "
                               f"stderr: {self._stderr_tail()}")
        return reply.get("result", {})

    def _stderr_tail(self) -> str:
        return b"".join(self._stderr[-3:]).decode(errors="replace").strip()

    def events(self, session: str) -> list[dict]:
        with self._lock:
            return list(self._events.get(session, []))

    def wait_event(self, session: str, method: str, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for event in self.events(session):
                if event.get("method") == method:
                    return event
            time.sleep(0.02)
        return None

    # ------------------------------------------------------------------ pages

    def open(self, url: str, width: int = DESKTOP) -> "Tab":
        """A new tab at ``url`` (offline: http(s) requests are blocked and recorded)."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, target, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*",
                                                      "wss://*"]}, session=session)
        tab.resize(width)
        self.call("Page.navigate", {"url": url}, session=session)
        if self.wait_event(session, "Page.loadEventFired", self.timeout) is None:
            raise BrowserError(f"{url}: the load event did not fire in {self.timeout:.0f} s")
        return tab


class Tab:
    """One page of the browser (a DevTools session)."""

    def __init__(self, browser: Browser, target: str, session: str):
        self.browser, self.target, self.session = browser, target, session

    def resize(self, width: int, height: int = WINDOW_HEIGHT) -> None:
        self.browser.call("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": height, "deviceScaleFactor": 1,
                           "mobile": False}, session=self.session)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """Evaluate JavaScript (promises awaited) and return its JSON value."""
        result = self.browser.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
            "userGesture": True}, session=self.session, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise BrowserError(f"the check's own script failed: {text}")
        return result.get("result", {}).get("value")

    def console_problems(self) -> list[tuple[str, str]]:
        """``(kind, message)`` of every exception, console error and blocked request."""
        out = []
        for event in self.browser.events(self.session):
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                text = (d.get("exception") or {}).get("description") or d.get("text", "")
                where = f" at {d.get('url', '')}:{d.get('lineNumber', 0) + 1}" \
                    if d.get("url") else ""
                out.append(("console", f"uncaught exception{where}: {text.splitlines()[0]}"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error",
                                                                                   "assert"):
                text = " ".join(str(a.get("value", a.get("description", "")))
                                for a in params.get("args", []))
                out.append(("console", f"console.{params['type']}: {text[:300]}"))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                url = entry.get("url", "")
                if url.startswith(("http://", "https://", "ws://", "wss://")):
                    continue  # reported once below, as a network request
                out.append(("console", f"{entry.get('text', '')[:300]}"
                                       + (f" ({url})" if url else "")))
            elif method == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                if url.startswith(("http://", "https://", "ws://", "wss://")):
                    out.append(("offline", f"requests {url[:200]} from the network "
                                           "(the book must read offline, with no CDN)"))
        return out

    def close(self) -> None:
        try:
            self.browser.call("Target.closeTarget", {"targetId": self.target}, timeout=10)
        except BrowserError:
            pass
        with self.browser._lock:  # forget its events (player frames are large data: URLs)
            self.browser._events.pop(self.session, None)


# ---------------------------------------------------------------------- the page's checks

#: Runs in the page once it has loaded: opens dropdowns, waits for images and MathJax.
_SETTLE_JS = r"""
(async () => {
  // Open what a reader can open (solutions, hidden cells): it is checked open.
  for (const b of document.querySelectorAll('.toggle-hidden button.toggle-button')) b.click();
  for (const d of document.querySelectorAll('details')) d.open = true;
  for (const img of document.images) if (img.loading === 'lazy') img.loading = 'eager';
  const wait = (img) => img.complete ? null : new Promise(r => {
    img.addEventListener('load', r); img.addEventListener('error', r); setTimeout(r, 10000);
  });
  await Promise.all(Array.from(document.images, wait));
  let mathjax = 'absent';
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    mathjax = MathJax.version || 'unknown';
  } else if (document.querySelector('script[src*="mathjax" i]')) {
    // deferred scripts run before the load event: a moment more, then it failed to load
    for (let i = 0; i < 20 && !(window.MathJax && MathJax.startup &&
                                  MathJax.startup.promise); i++)
      await new Promise(r => setTimeout(r, 100));
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      await MathJax.startup.promise;
      mathjax = MathJax.version || 'unknown';
    } else mathjax = 'did not start';
  }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return mathjax;
})()
"""

#: A short description of an element, for messages: tag#id.class "text..." (in section).
_DESCRIBE_JS = r"""
const describe = (el) => {
  let s = el.tagName.toLowerCase();
  if (el.id) s += '#' + el.id;
  const cls = (typeof el.className === 'string' ? el.className : '').trim().split(/\s+/)
    .filter(c => c && !c.startsWith('mjx')).slice(0, 3);
  if (cls.length) s += '.' + cls.join('.');
  let label = '';
  const math = el.closest('div.math');
  if (math) {
    const eqno = math.querySelector('.eqno');
    if (math.id) label = '#' + math.id;
    if (eqno) label += ' ' + eqno.textContent.replace('#', '').trim();
  }
  const box = el.closest('div.proof, div.admonition, div.exercise, div.solution, figure, ' +
                         'div.cell, table');
  if (box && box !== el) {
    const title = box.querySelector('.admonition-title, figcaption, caption, ' +
                                    'p.admonition-title');
    let t = box.id ? '#' + box.id : '';
    if (title) t += ' "' + title.textContent.trim().replace(/\s+/g, ' ').slice(0, 60) + '"';
    if (t) label += (label ? ' ' : '') + 'in ' + box.tagName.toLowerCase() + t;
  }
  if (!label) {
    let text = '';
    const math = el.closest('mjx-container');
    const tex = math && math.querySelector('mjx-assistive-mml');
    text = (tex ? tex.textContent : el.textContent || el.getAttribute('alt') ||
            el.getAttribute('src') || '').trim().replace(/\s+/g, ' ');
    if (text) label = '"' + text.slice(0, 60) + (text.length > 60 ? '...' : '') + '"';
  }
  let sec = el.closest('section[id]');
  while (sec && sec.id === 'proof-content')  // sphinx-proof's inner section: skip it
    sec = sec.parentElement && sec.parentElement.closest('section[id]');
  return s + (label ? ' ' + label : '') + (sec ? ' (section #' + sec.id + ')' : '');
};
// The descendant of el that reaches furthest right, outside any box that scrolls or clips.
const widest = (el) => {
  let best = null, right = -Infinity;
  const walk = (node) => {
    for (const c of node.children) {
      const st = getComputedStyle(c);
      if (st.position === 'fixed' || st.display === 'none') continue;  // never scroll the page
      const r = c.getBoundingClientRect();
      if (r.width > 0 && r.right > right + 0.5 && st.visibility !== 'hidden') {
        right = r.right; best = c;
      }
      if (st.overflowX === 'visible') walk(c);
    }
  };
  walk(el);
  return best;
};
"""

#: Math, images and overflow at the current width; returns [[check, element, message]].
_CHECK_JS = r"""
(doMath) => {
  const out = [], scrolling = [];
  const TOL = 1;
  const seen = new Set();
  if (doMath) {
    for (const el of document.querySelectorAll('mjx-merror, [data-mjx-error]')) {
      const c = el.closest('mjx-container') || el;
      if (seen.has(c)) continue;
      seen.add(c);
      const err = el.getAttribute('data-mjx-error') ||
                  (el.querySelector('[data-mjx-error]') || el).getAttribute('data-mjx-error')
                  || el.textContent.trim();
      out.push(['math', describe(c), 'MathJax error: ' + err]);
    }
    for (const el of document.querySelectorAll('div.math, span.math')) {
      if (!el.querySelector('mjx-container'))
        out.push(['math', describe(el), 'not typeset by MathJax (raw TeX shown: "' +
                  el.textContent.trim().slice(0, 60) + '")']);
    }
  }
  for (const img of document.images) {
    if (!img.complete || img.naturalWidth === 0) {
      const src = (img.getAttribute('src') || '').slice(0, 80);
      out.push(['images', describe(img), 'image did not load (naturalWidth 0): ' + src]);
    }
  }
  const column = document.querySelector('article.bd-article') ||
                 document.querySelector('[role=main]') || document.body;
  const colRect = column.getBoundingClientRect();
  const viewport = document.documentElement.clientWidth;
  const ox = (el) => getComputedStyle(el).overflowX;
  const selectors = [
    'mjx-container[display="true"]', 'table', 'figure', 'div.figure', 'div.animation',
    'div.cell_output img', 'div.highlight', 'pre', 'div.proof', 'div.admonition',
    'div.exercise', 'div.solution', 'div.cell_output'];
  const elements = new Set();
  for (const sel of selectors)
    for (const el of column.querySelectorAll(sel)) elements.add(el);
  for (const el of elements) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;        // hidden (closed dropdown)
    if (el.closest('.full-width, .margin, .sidebar, aside')) continue;
    const own = ox(el);
    if ((own === 'auto' || own === 'scroll') && el.scrollWidth > el.clientWidth + TOL &&
        el.matches('mjx-container'))
      scrolling.push(`${describe(el)}: ${el.scrollWidth}px in ${el.clientWidth}px`);
    if ((own === 'hidden' || own === 'clip') && el.scrollWidth > el.clientWidth + TOL) {
      const w = widest(el);
      out.push(['overflow', describe(el), `clipped: content ${el.scrollWidth}px wide in a ` +
                `${el.clientWidth}px box with overflow-x ${own} (no scroll bar)` +
                (w ? `; the widest part: ${describe(w)}` : '')]);
      continue;
    }
    const extent = (own === 'visible') ? Math.max(r.right, r.left + el.scrollWidth) : r.right;
    let a = el.parentElement, verdict = null;
    while (a && a !== document.documentElement) {
      const o = ox(a);
      const ar = a.getBoundingClientRect();
      const inner = ar.left + a.clientLeft + a.clientWidth;
      if (o === 'auto' || o === 'scroll') {
        if (column.contains(a) && a !== column) { verdict = 'ok'; break; }
      } else if (o === 'hidden' || o === 'clip') {
        if (extent > inner + TOL) {
          verdict = `clipped: its right edge passes the right edge of its clipping ` +
                    `container ${describe(a).split(' ')[0]} by ${Math.round(extent - inner)}px`;
        } else verdict = 'ok';
        if (a === column || !column.contains(a) || verdict !== 'ok') break;
      }
      if (a === column) {
        const right = colRect.right;
        if (extent > right + TOL)
          verdict = `overflows: its right edge passes the text column's by ` +
                    `${Math.round(extent - right)}px (cut off or over the margin)`;
        else verdict = 'ok';
        break;
      }
      a = a.parentElement;
    }
    if (verdict === null && extent > viewport + TOL)
      verdict = `overflows: its right edge passes the window's by ${Math.round(extent - viewport)}px`;
    if (verdict && verdict !== 'ok') out.push(['overflow', describe(el), verdict]);
  }
  for (const eqno of column.querySelectorAll('div.math .eqno')) {
    const container = eqno.closest('div.math').querySelector('mjx-container');
    const math = container && container.querySelector('mjx-math');
    if (!math) continue;
    const a = eqno.getBoundingClientRect(), b = math.getBoundingClientRect();
    if (ox(container) !== 'visible') {   // only the part shown through the scroll box
      const c = container.getBoundingClientRect();
      b.x = Math.max(b.left, c.left); b.width = Math.max(0, Math.min(b.right, c.right) - b.x);
    }
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (a.width > 0 && w > TOL && h > TOL)
      out.push(['overflow', describe(math), `the equation number ${eqno.textContent.trim()} ` +
                `overlaps the equation by ${Math.round(w)}px`]);
  }
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + TOL) {
    const w = widest(document.body);
    out.push(['overflow', w ? describe(w) : 'html',
              `the page scrolls sideways: ${page.scrollWidth}px wide in a ` +
              `${page.clientWidth}px window`]);
  }
  return [out, scrolling];
}
"""

#: Steps every to_jshtml player; returns [[check, element, message]].
_PLAYERS_JS = r"""
async () => {
  const out = [];
  const tick = () => new Promise(r => setTimeout(r, 30));
  const players = document.querySelectorAll('div.animation');
  let k = 0;
  for (const div of players) {
    k += 1;
    const name = describe(div).replace(/^div/, `player ${k} div`);
    const img = div.querySelector('img[id^="_anim_img"]');
    const slider = div.querySelector('input.anim-slider');
    const btn = (label) => div.querySelector(`button[title="${label}"]`);
    const missing = ['First frame', 'Next frame', 'Last frame', 'Play', 'Pause']
      .filter(t => !btn(t));
    if (!img || !slider || missing.length) {
      out.push(['players', name, 'player incomplete: ' +
        [!img && 'no frame image', !slider && 'no slider',
         missing.length && 'no button ' + missing.join(', ')].filter(Boolean).join('; ')]);
      continue;
    }
    const nframes = parseInt(slider.max) + 1;
    if (!(nframes > 1)) {
      out.push(['players', name, `player not initialised (slider max ${slider.max}: its ` +
                                 `script did not run)`]);
      continue;
    }
    btn('Pause').click();
    btn('First frame').click(); await tick();
    const first = img.getAttribute('src') || '';
    const at0 = slider.value;
    btn('Next frame').click(); await tick();
    const second = img.getAttribute('src') || '';
    const at1 = slider.value;
    btn('Last frame').click(); await tick();
    const last = img.getAttribute('src') || '';
    const atN = slider.value;
    const problems = [];
    if (!first) problems.push('no frame shown');
    if (at0 !== '0' || at1 !== '1' || atN !== String(nframes - 1))
      problems.push(`slider at ${at0}, ${at1}, ${atN} after first, next and last frame ` +
                    `(expected 0, 1, ${nframes - 1})`);
    if (first && (first === second && second === last))
      problems.push('stepping does not change the image');
    await new Promise(r => { if (img.complete) r(); else { img.onload = img.onerror = r; } });
    if (img.naturalWidth === 0) problems.push('the frame image does not load');
    btn('First frame').click();
    if (problems.length)
      out.push(['players', name, `${nframes} frames: ` + problems.join('; ')]);
  }
  return [players.length, out];
}
"""

#: The launch menu's links: [[href, visible], ...] and whether the menu button is visible.
_LAUNCH_JS = r"""
(() => {
  const menus = document.querySelectorAll('.dropdown-launch-buttons');
  const links = [];
  let visible = false;
  for (const m of menus) {
    const b = m.querySelector('button');
    if (b && b.getBoundingClientRect().width > 0) visible = true;
    for (const a of m.querySelectorAll('a[href]')) links.push(a.href);
  }
  return [menus.length, visible, links];
})()
"""


def _call(function: str, *args: str) -> str:
    """JavaScript that calls ``function`` (with ``describe`` in scope) on ``args``."""
    return f"(() => {{ {_DESCRIBE_JS}\n return ({function})({', '.join(args)}); }})()"


def check_page(browser: Browser, path: Path, name: str, *,
               widths: tuple[int, ...] = (DESKTOP, NARROW), players: bool = True,
               launch: dict[str, str] | None = None) -> tuple[list[Problem], dict]:
    """Load ``path`` in ``browser`` and return its problems and a few facts.

    Args:
        browser: an open :class:`Browser`.
        path: the HTML file.
        name: how messages name the page (e.g. ``book/diffusion/ddpm``).
        widths: window widths (CSS px) at which overflow is checked; math, images, console
            and network are checked at the first.
        players: step the animation players (``div.animation``).
        launch: expected launch links, ``{"Colab": url, "Binder": url}``; ``None`` skips
            the launch-button check.

    Returns:
        ``(problems, facts)``; facts holds ``mathjax`` (version, or ``"absent"``),
        ``players`` (how many), ``scrolling`` (width -> the display equations wider than
        their box, which scroll: not a problem, but worth splitting) and ``seconds``.
    """
    start = time.monotonic()
    problems: list[Problem] = []
    facts: dict[str, Any] = {}
    tab = browser.open(path.resolve().as_uri(), widths[0])
    try:
        facts["mathjax"] = tab.evaluate(_SETTLE_JS)
        if facts["mathjax"] == "did not start":
            problems.append(Problem(name, None, "math", "script mathjax",
                                    "MathJax is referenced but did not start"))
        for k, width in enumerate(widths):
            if k:
                tab.resize(width)
                tab.evaluate("new Promise(r => requestAnimationFrame(() => "
                             "requestAnimationFrame(r)))")
            found, scrolling = tab.evaluate(_call(_CHECK_JS, str(k == 0).lower()))
            for check, element, message in found:
                if k and check != "overflow":
                    continue
                problems.append(Problem(name, width, check, element, message))
            facts.setdefault("scrolling", {})[width] = scrolling
        if len(widths) > 1:
            tab.resize(widths[0])
        if players:
            count, found = tab.evaluate(_call(_PLAYERS_JS), timeout=120)
            facts["players"] = count
            problems += [Problem(name, None, c, e, m) for c, e, m in found]
        if launch is not None:
            menus, visible, links = tab.evaluate(_LAUNCH_JS)
            if not menus:
                problems.append(Problem(name, widths[0], "launch", "header",
                                        "no launch-button menu on the page"))
            else:
                if not visible:
                    problems.append(Problem(name, widths[0], "launch",
                                            ".dropdown-launch-buttons button",
                                            "the launch button is not visible"))
                for service, url in launch.items():
                    host = url.split("/")[2]
                    found_links = sorted({h for h in links if h.split("/")[2:3] == [host]})
                    if found_links != [url]:
                        problems.append(Problem(
                            name, None, "launch", f"{service} launch link",
                            f"expected {url}, found {found_links or 'none'}"))
        time.sleep(0.05)  # late console messages
        for check, message in tab.console_problems():
            problems.append(Problem(name, None, check, "page", message))
    finally:
        tab.close()
    facts["seconds"] = round(time.monotonic() - start, 2)
    return problems, facts
