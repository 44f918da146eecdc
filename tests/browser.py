"""Render an HTML report in a real headless browser (Debian's chromium) and say what a reader
would see wrong: images that did not load, content wider than the window (cut off or needing a
horizontal scroll), and a screenshot to look at.

Used by the report tests. Without chromium the tests skip, except where ``REPSPACE_BROWSER=1``
(set by ``.ci/run``, which installs chromium) makes a missing browser a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_PROBE = """<script>
window.addEventListener('load', () => {
  const width = window.innerWidth;
  const images = [...document.images].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,
                                                 width: i.getBoundingClientRect().width}));
  const wide = [...document.body.querySelectorAll('*')]
    .filter(e => e.getBoundingClientRect().right > width + 1)
    .map(e => e.tagName + (e.id ? '#' + e.id : '')).slice(0, 10);
  const out = document.createElement('pre');
  out.id = 'repspace-check';
  out.textContent = JSON.stringify({images, wide, scroll: document.documentElement.scrollWidth,
                                    width, title: document.title});
  document.body.appendChild(out);
});
</script>"""

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run",
          "--window-size=1200,900"]


def chromium() -> str:
    """The browser's path, or skip (fail where ``REPSPACE_BROWSER=1``)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("REPSPACE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("needs chromium (apt-get install chromium)")
    return found


def render(html: Path, screenshot: Path | None = None) -> dict:
    """What the browser shows of ``html``: ``{"images": [{"alt", "ok", "width"}], "wide":
    [elements past the window's right edge], "scroll", "width", "title"}``; with
    ``screenshot``, also a PNG of the first screen."""
    browser = chromium()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / html.name
        text = html.read_text(encoding="utf-8")
        page.write_text(re.sub(r"</body>", _PROBE + "</body>", text, count=1), encoding="utf-8")
        for asset in html.parent.iterdir():  # relative links (figures) keep working
            if asset.name != html.name:
                (Path(tmp) / asset.name).symlink_to(asset.resolve())
        done = subprocess.run([browser, *_FLAGS, f"--user-data-dir={tmp}/profile",
                               "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                              capture_output=True, text=True, timeout=120)
        found = re.search(r'<pre id="repspace-check">(.*?)</pre>', done.stdout, re.S)
        assert found, f"the page did not finish loading: {done.stderr[-500:]}"
        if screenshot is not None:
            subprocess.run([browser, *_FLAGS, f"--user-data-dir={tmp}/profile2",
                            f"--screenshot={screenshot}", html.resolve().as_uri()],
                           capture_output=True, timeout=120, check=True)
    import html as entities

    return json.loads(entities.unescape(found[1]))
