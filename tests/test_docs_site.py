"""The tutorial site: built from the notebooks by tools/build_docs.py, then every page is opened in headless Chromium
with the network cut off, and must show its title and every one of its figures (images loaded, videos playable).

Chromium is Debian's `chromium` (.ci/run installs it). Without it this test is skipped on a developer's machine, and
fails in CI (CI=true). The build renders the notebook runs that tests/test_notebooks.py kept, so it adds seconds.
"""
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tools import build_docs

NOTEBOOKS = build_docs.notebook_paths()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves
                  "--virtual-time-budget=10000", "--dump-dom"]

# Added to a copy of each page: once the page has loaded (images included) and its videos have their metadata or
# an error, it writes what a reader sees into the DOM, which --dump-dom prints.
PROBE = """<script>
window.addEventListener("load", async () => {
  const shown = el => { const r = el.getBoundingClientRect(), s = getComputedStyle(el);
                        return r.width > 0 && r.height > 0 && s.visibility !== "hidden" && s.display !== "none"; };
  const settle = v => v.readyState >= 1 || v.error ? Promise.resolve() : new Promise(done => {
    v.addEventListener("loadedmetadata", done); v.addEventListener("error", done); setTimeout(done, 5000); });
  const videos = [...document.querySelectorAll("main video")];
  await Promise.all(videos.map(settle));
  const report = {
    title: document.title,
    h1: [...document.querySelectorAll("h1")].filter(shown).map(h => h.textContent.trim()),
    images: [...document.querySelectorAll("main img")].map(i => ({src: (i.getAttribute("src") || "").slice(0, 80),
             loaded: i.complete && i.naturalWidth > 0, shown: shown(i)})),
    videos: videos.map(v => ({src: (v.currentSrc || "").slice(0, 80),
             playable: v.readyState >= 1 && !v.error && v.videoWidth > 0,
             shown: shown(v)})),
  };
  const out = document.createElement("pre"); out.id = "site-check"; out.hidden = true;
  out.textContent = JSON.stringify(report); document.body.appendChild(out);
});
</script>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site, built into a temporary folder with the PyPI renderer; and its pages."
    out = tmp_path_factory.mktemp("docs") / "_site"
    pages = build_docs.build(out, renderer="nbconvert")
    return out, {page.notebook: page for page in pages}


def _chromium_report(page_file: Path) -> dict:
    "Open a probed copy of a page in headless Chromium; the probe's report of what it shows."
    probed = page_file.with_name(f".probe-{page_file.name}")
    probed.write_text(page_file.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", probed.as_uri()],
                                capture_output=True, text=True, timeout=120)
    probed.unlink()
    found = re.search(r'<pre id="site-check"[^>]*>(.*?)</pre>', result.stdout, flags=re.S)
    assert found, f"{page_file.name}: Chromium printed no report (exit {result.returncode}): {result.stderr[-800:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def shown(site):
    "What Chromium shows of every page, by notebook."
    if not CHROMIUM:
        if os.environ.get("CI"): pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out, pages = site
    with ThreadPoolExecutor(3) as pool:
        reports = pool.map(lambda page: _chromium_report(out / page.name), pages.values())
        return dict(zip(pages, reports))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[str(p.relative_to(build_docs.NBS)) for p in NOTEBOOKS])
def test_page_shows_title_and_figures(notebook, site, shown):
    out, pages = site
    key = notebook.relative_to(build_docs.NBS).as_posix()
    page = pages[key]
    assert (out / page.name).is_file(), f"{key}: no page {page.name}"
    report = shown[key]
    assert report["h1"] == [page.title], f"{page.name}: shows headings {report['h1']}, not its title {page.title!r}"
    assert page.title in report["title"]
    broken = [i["src"] for i in report["images"] if not (i["loaded"] and i["shown"])]
    assert not broken, f"{page.name}: images not shown: {broken}"
    assert len(report["images"]) >= page.figures, \
        f"{page.name}: {len(report['images'])} images shown, the notebook has {page.figures}"
    unplayable = [v["src"] for v in report["videos"] if not (v["playable"] and v["shown"])]
    assert not unplayable, f"{page.name}: videos that do not play: {unplayable}"
    assert len(report["videos"]) >= page.videos


class _Resources(HTMLParser):
    "What a page loads by itself: scripts, styles, images, media, frames (links a reader clicks do not count)."
    LOADING_TAGS = {"script", "img", "iframe", "video", "audio", "source", "embed", "track"}
    LOADING_LINKS = {"stylesheet", "icon", "preload", "modulepreload", "manifest"}

    def __init__(self):
        super().__init__(); self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in self.LOADING_TAGS: self.urls += [attrs.get("src"), attrs.get("poster")]
        rel = set((attrs.get("rel") or "").split())
        if tag == "link" and rel & self.LOADING_LINKS: self.urls.append(attrs.get("href"))


def test_site_loads_nothing_from_the_network(site):
    out, pages = site
    remote = re.compile(r"^\s*(https?:)?//", flags=re.I)
    for path in [*out.rglob("*.html"), *out.rglob("*.css")]:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".css":
            urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", text) + re.findall(r"@import\s+['\"]([^'\"]+)", text)
        else: parser = _Resources(); parser.feed(text); urls = [u for u in parser.urls if u]
        remote_urls = [u for u in urls if remote.match(u)]
        assert not remote_urls, f"{path.relative_to(out)} loads {remote_urls[:3]}"
    assert {p.name for p in out.glob("*.html")} >= {page.name for page in pages.values()}


def test_every_notebook_has_a_page_in_the_sidebar(site):
    out, pages = site
    index = (out / "index.html").read_text(encoding="utf-8")
    nav = re.search(r'<nav[^>]*site-nav.*?</nav>', index, flags=re.S).group(0)
    links = re.findall(r'href="([^"]+)"', nav)
    assert links[1:] == [page.name for page in pages.values()]  # after the site name, in file order


def test_a_failing_notebook_fails_the_build_with_its_name(tmp_path):
    import nbformat
    notebook = tmp_path / "07_broken.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken\n\n> fails on purpose"),
                                                   nbformat.v4.new_code_cell("answer = 42"),
                                                   nbformat.v4.new_code_cell("answer / 0")]), notebook)
    with pytest.raises(build_docs.NotebookError, match=r"07_broken\.ipynb, cell #3 \('answer / 0'\) failed"):
        build_docs.build_page(notebook)
