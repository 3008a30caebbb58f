#!/usr/bin/env python
"""Build the tutorial site from the notebooks: `python -m tools.build_docs` (from the repository's top) writes
`_site/` (open `_site/index.html`); `--help` lists the options.

Every notebook in `nbs/` (names starting with `_` are scratch and stay out) becomes one page:

1. **executed** on the CPU, cell by cell, exactly as the notebook tests run it: cells with a test flag from
   settings.ini (`#| gpu`, `#| slow`) or `#| eval: false` are shown but not run. nbdev's `show_doc` cells for the
   exported names run in the same pass. Runs are cached in `_proc/_executed/` under a hash of the notebook, the
   package, the test helpers (`nbs/*.py`) and `data/`; the notebook tests fill the same cache, so a build right after
   the tests only renders;
2. **processed** by nbdev's documentation processors: title and summary from the first markdown cell, `#| hide`,
   `#| echo: false`, `#| output: false`, `#| include: false`, links from `name` to where it is documented;
   exported cells keep their code on the page after their `show_doc` card, as nbdev does for `#| exports`
   (in these notebooks the code is the lesson);
3. **rendered** by nbconvert (math as MathML, figures as files next to the page) into a page with a sidebar of all
   notebooks, ordered by file name. Nothing is fetched when a page is viewed: no CDN scripts, fonts or MathJax.
   Where Quarto is installed it renders instead (`--renderer auto`, the default), from the processed notebooks
   in `_proc/` and the top-level `_quarto.yml`; `--renderer nbconvert` forces the PyPI renderer.

A notebook that fails to run fails the build, and the message names the notebook and the cell.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from configparser import ConfigParser
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from dynvfx.core import atomic_write, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SITE = ROOT / "_site"
PROC = ROOT / "_proc"
CACHE = PROC / "_executed"
TEMPLATES = Path(__file__).resolve().parent / "docs_template"
SITE_NAME = "dynvfx"


class NotebookError(Exception):
    "A notebook failed while the docs were built: the message names the notebook and the cell."


# ---------------------------------------------------------------- which notebooks, which cells

def settings() -> dict[str, str]:
    "The `[DEFAULT]` section of settings.ini."
    parser = ConfigParser(delimiters=["="]); parser.read(ROOT / "settings.ini", encoding="utf-8")
    return dict(parser["DEFAULT"])


def notebook_paths(nbs: Path = NBS) -> list[Path]:
    "The site's notebooks: `index.ipynb` first, then by path; names or folders starting with `_` or `.` stay out."
    paths = [p for p in nbs.rglob("*.ipynb")
             if not any(part.startswith(("_", ".")) for part in p.relative_to(nbs).parts)]
    return sorted(paths, key=lambda p: (p.relative_to(nbs).parent.parts, p.name != "index.ipynb", p.name))


def skip_flags(run_flags: str | set[str] = "") -> set[str]:
    "Test flags whose cells are not run: settings.ini `tst_flags` less the flags asked for."
    if isinstance(run_flags, str): run_flags = set(run_flags.split())
    return set(settings().get("tst_flags", "").split()) - set(run_flags)


def cell_directives(source: str) -> dict[str, list[str]]:
    "The `#|` directives at the top of a code cell, as nbdev reads them (`{'eval:': ['false'], 'gpu': []}`)."
    from fastcore.basics import AttrDict
    from nbdev.process import extract_directives
    return extract_directives(AttrDict(source=source), remove=False)


def runs(cell, flags: set[str]) -> bool:
    "Whether a cell is executed: code, not the export call, not `#| eval: false`, and no skipped test flag."
    if cell.cell_type != "code" or not cell.source.strip(): return False
    if "nbdev_export(" in cell.source: return False
    directives = cell_directives(cell.source)
    if directives.get("eval:", [""])[0].lower() == "false": return False
    return not (flags & directives.keys())


def _code_without_directives(source: str) -> str:
    "The cell's code with its leading `#|` lines removed, so a cell magic can come first."
    lines = source.splitlines(True)
    while lines and (re.match(r"\s*#\|", lines[0]) or not lines[0].strip()): lines.pop(0)
    return "".join(lines)


# ---------------------------------------------------------------- executing, with a cache

def execution_key(notebook: Path, flags: set[str]) -> str:
    "Hash of what a notebook's outputs depend on: itself, the package, `data/`, the skipped flags."
    digest = hashlib.sha256()
    files = [notebook, *sorted((ROOT / "dynvfx").rglob("*.py")),  # the package
             *sorted(NBS.glob("*.py")),  # the test helpers (nbs/test_helpers.py)
             *sorted(p for p in (ROOT / "data").rglob("*") if p.is_file())]
    if notebook.name == settings().get("readme_nb", "index.ipynb"):  # the home page lists the other notebooks
        files += notebook_paths(notebook.parent)
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join(sorted(flags)).encode())
    return digest.hexdigest()


def _cache_path(notebook: Path, cache: Path) -> Path:
    if notebook.is_relative_to(NBS): return cache / notebook.relative_to(NBS).with_suffix(".json")
    return cache / "_elsewhere" / f"{hashlib.sha1(str(notebook).encode()).hexdigest()[:12]}_{notebook.stem}.json"


def with_show_docs(nb):
    "Insert nbdev's `show_doc` cells after the exported cells (its `add_show_docs`), so one run also documents them."
    from nbdev.process import NBProcessor
    from nbdev.processors import add_show_docs
    NBProcessor(nb=nb, procs=[add_show_docs], rm_directives=False).process()
    return nb


def execute_notebook(notebook: Path, flags: set[str] | None = None, cache: Path | None = CACHE):
    "Run a notebook's cells (and its `show_doc` cards) in a fresh shell in its folder; raises `NotebookError`."
    from execnb.nbio import _dict2obj, dict2nb, nb2dict, read_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory

    notebook = Path(notebook).resolve()
    flags = skip_flags() if flags is None else flags
    nb = read_nb(notebook)
    for number, cell in enumerate(nb.cells, 1): cell.number_ = number  # the cell's number in the notebook
    with_show_docs(nb)
    os.environ["IN_TEST"] = "1"
    sys.modules.pop("test_helpers", None)  # imported afresh, so that it registers its cell magic in this new shell
    shell = CaptureShell(notebook)
    shell.run("from nbdev.showdoc import show_doc")
    with working_directory(notebook.parent):
        for cell in nb.cells:
            if cell.cell_type == "code": cell.outputs, cell.execution_count = [], None
            if not runs(cell, flags): continue
            shell._cell_idx = cell.get("number_")
            cell.outputs = _dict2obj(list(shell.run(_code_without_directives(cell.source))))
            cell.execution_count = cell.get("number_")
            if shell.exc:
                first_line = next((line for line in cell.source.splitlines()
                                   if line.strip() and not line.lstrip().startswith("#|")), "")
                where = f"cell #{cell.number_}" if cell.get("number_") else "the docs card after an exported cell"
                raise NotebookError(f"{notebook.name}, {where} ({first_line.strip()[:80]!r}) failed:\n"
                                    f"{shell.prettytb(fname=notebook)}")
    if cache is not None: save_executed(notebook, nb, flags, cache)
    nb = dict2nb(nb2dict(nb)); nb["path_"] = str(notebook)  # the same structure as a run read back from the cache
    return nb


def save_executed(notebook: Path, nb, flags: set[str], cache: Path = CACHE):
    "Keep an executed notebook under its execution key (whole or not at all)."
    from execnb.nbio import nb2dict
    data = {"key": execution_key(Path(notebook).resolve(), flags), "notebook": nb2dict(nb)}
    atomic_write_text(_cache_path(Path(notebook).resolve(), cache), json.dumps(data, ensure_ascii=False))


def executed_notebook(notebook: Path, flags: set[str] | None = None, cache: Path | None = CACHE, force: bool = False):
    "The notebook with outputs: from the cache when its key still matches, else executed now."
    from execnb.nbio import dict2nb
    notebook = Path(notebook).resolve()
    flags = skip_flags() if flags is None else flags
    if cache is not None and not force:
        path = _cache_path(notebook, cache)
        if path.exists():
            try: data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError): data = {}
            if data.get("key") == execution_key(notebook, flags):
                nb = dict2nb(data["notebook"]); nb["path_"] = str(notebook)
                return nb
    return execute_notebook(notebook, flags, cache)


# ---------------------------------------------------------------- nbdev's processing

def page_name(notebook: Path, nbs: Path = NBS) -> str:
    "The page a notebook becomes, as nbdev names it (`01_video_io.ipynb` -> `video_io.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(notebook.relative_to(nbs)).as_posix()


def show_exported_source(cell):
    "Exported cells keep their code on the page, like nbdev's `#| exports` (the `show_doc` card comes first)."
    directives = getattr(cell, "directives_", None) or {}
    if "export" in directives: directives["exports"] = directives.pop("export")


def _symbol_pages() -> dict[str, str]:
    "Our exported names -> their page anchors, from dynvfx/_modidx.py (read from the file: no install needed)."
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("_dynvfx_modidx", ROOT / "dynvfx" / "_modidx.py")
    module = module_from_spec(spec); spec.loader.exec_module(module)
    pages = {}
    for mod, syms in module.d["syms"].items():
        for full, (url, _) in syms.items():
            short = full[len(mod) + 1:]
            pages.setdefault(short, url); pages[f"{mod.split('.', 1)[-1]}.{short}"] = url; pages[full] = url
    return pages


class link_symbols:
    "Link `name` in markdown (cells and markdown outputs) to the page that documents it, like nbdev's `add_links`."
    def __init__(self, nb):
        from nbdev.doclinks import NbdevLookup
        lookup = NbdevLookup.__new__(NbdevLookup)
        lookup.entries, lookup.syms, lookup.aliases = {}, _symbol_pages(), {}
        self.lookup = lookup

    def __call__(self, cell):
        if cell.cell_type == "markdown": cell.source = self.lookup.linkify(cell.source)
        for output in cell.get("outputs", []):
            markdown = output.get("data", {}).get("text/markdown")
            if markdown: output["data"]["text/markdown"] = [self.lookup.link_line(line) for line in markdown]


class cards_before_code:
    "Put the `show_doc` cards of an exported cell before its code, in the order the code defines the names."
    def __init__(self, nb): self.nb = nb

    def begin(self):
        cells, index = self.nb.cells, 0
        while index < len(cells):
            cell = cells[index]
            if cell.cell_type == "code" and "exports" in (cell.directives_ or {}):
                end = index + 1
                while end < len(cells) and getattr(cells[end], "has_sd", False): end += 1
                cells[index:end] = list(reversed(cells[index + 1:end])) + [cell]  # nbdev inserts them last-first
                index = end
            else: index += 1

    def __call__(self, cell): pass


def doc_processors() -> list:
    """nbdev's documentation processors (`FilterDefaults`) with three changes: exported code is shown, links stay on
    this site, and `exec_show_docs` is left out because the execution above already ran the `show_doc` cells."""
    from nbdev.frontmatter import FrontmatterProc
    from nbdev import processors as p
    return [show_exported_source, FrontmatterProc, p.populate_language, p.add_show_docs, p.strip_ansi, p.hide_line,
            p.filter_stream_, p.rm_header_dash, p.clean_show_doc, p.rm_export, p.ai_magics,
            p.clean_magics, p.hide_, link_symbols, p.add_fold, cards_before_code, p.strip_hidden_metadata]


def process_notebook(nb):
    "Run nbdev's documentation processors over an executed notebook (in its folder, where settings.ini is found)."
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    os.environ["IN_TEST"] = "1"
    with working_directory(Path(nb.path_).parent):
        processor = NBProcessor(nb=nb, procs=doc_processors())
        processor.process()
    return processor.nb


# ---------------------------------------------------------------- one page: a plain notebook for the renderer

@dataclass
class Page:
    "One page of the site: where it comes from, where it goes, and what it must show."
    notebook: str            # path relative to nbs/
    name: str                # path of the HTML page relative to the site root
    title: str
    description: str
    figures: int = 0         # image outputs (and images inside HTML outputs) the page must show
    videos: int = 0          # <video> elements inside HTML outputs
    nb: dict = field(default_factory=dict, repr=False)  # nbformat notebook, ready for nbconvert
    files: dict = field(default_factory=dict, repr=False)  # files HTML outputs refer to: path from the page -> bytes


_QUARTO_OPTION = re.compile(r"^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")


def _cell_options(source: str) -> tuple[dict[str, str], str]:
    "Quarto cell options left by nbdev (`#| echo: false`) and the code without them."
    options, lines = {}, source.splitlines(True)
    while lines and _QUARTO_OPTION.match(lines[0]):
        key, value = _QUARTO_OPTION.match(lines.pop(0)).groups()
        options[key] = value.strip().strip("\"'")
    return options, "".join(lines).strip("\n")


def _is_widget(output) -> bool:
    return "application/vnd.jupyter.widget-view+json" in output.get("data", {})


_WIDGET_NOTE = ("<p class=\"widget-note\">An interactive widget runs here when the notebook runs in Jupyter; "
                "this static page cannot run it.</p>")


def _count_media(outputs: list) -> tuple[int, int]:
    "Images and videos a cell's outputs show."
    images = videos = 0
    for output in outputs:
        data = output.get("data", {})
        if any(k in data for k in ("image/png", "image/jpeg", "image/gif", "image/svg+xml")): images += 1
        elif "text/html" in data:
            text = "".join(data["text/html"])
            images += len(re.findall(r"<img\b", text, flags=re.I))
            videos += len(re.findall(r"<video\b", text, flags=re.I))
    return images, videos


def _bring_local_files(markup: str, folder: Path, page: Page) -> str:
    "Files that an HTML output refers to by a relative path (`<video src=\"clip.mp4\">`) are copied next to the page."
    def swap(m):
        url = m.group(2)
        if re.match(r"^([a-z][\w+.-]*:|/|#)", url, flags=re.I): return m.group(0)
        source = (folder / html.unescape(url)).resolve()
        if not source.is_file(): return m.group(0)
        name = f"{Path(page.name).stem}_files/media/{hashlib.sha1(str(source).encode()).hexdigest()[:8]}_{source.name}"
        page.files[name] = source.read_bytes()
        return f'{m.group(1)}="{html.escape(name)}"'
    return re.sub(r'\b(src|poster)="([^"]+)"', swap, markup)


def notebook_page(processed, notebook: Path, nbs: Path = NBS) -> Page:
    "Turn a processed notebook into a page: a plain nbformat notebook whose cells carry nbconvert's tags."
    from execnb.nbio import nb2dict

    front = getattr(processed, "frontmatter_", {}) or {}
    title = str(front.get("title") or notebook.stem)
    page = Page(notebook=notebook.relative_to(nbs).as_posix(), name=page_name(notebook, nbs), title=title,
                description=str(front.get("description") or ""))
    cells = []
    for cell in processed.cells:
        if cell.cell_type == "raw": continue  # the YAML front matter: it becomes the page's header
        cell = nb2dict(cell); cell.pop("has_sd", None)
        cell["metadata"] = {}
        if cell["cell_type"] == "code":
            options, cell["source"] = _cell_options("".join(cell["source"]))
            if options: cell["metadata"]["quarto"] = options  # for Quarto, where it renders these notebooks
            tags, outputs = [], []
            for output in cell.get("outputs", []):
                if _is_widget(output):
                    output = {"output_type": "display_data", "metadata": {}, "data": {"text/html": _WIDGET_NOTE}}
                elif "text/html" in output.get("data", {}):
                    markup = "".join(output["data"]["text/html"])
                    output["data"]["text/html"] = _bring_local_files(markup, notebook.parent, page)
                outputs.append(output)
            cell["outputs"] = outputs
            if options.get("include") == "false": continue
            if options.get("echo") == "false" or not cell["source"].strip(): tags.append("remove_input")
            if options.get("output") == "false" or options.get("eval") == "false" and not outputs:
                tags.append("remove_output")
            if "remove_input" in tags and ("remove_output" in tags or not outputs): continue
            if options.get("code-fold") in ("show", "true"):
                cell["metadata"]["code_fold"] = {"summary": options.get("code-summary", "Code"),
                                                 "open": options["code-fold"] == "show"}
            if tags: cell["metadata"]["tags"] = tags
            if "remove_output" not in tags:
                images, videos = _count_media(outputs); page.figures += images; page.videos += videos
        cells.append(cell)
    kernel = {"display_name": "python3", "language": "python", "name": "python3"}
    nb = {"cells": cells, "metadata": {"kernelspec": kernel,
                                       "language_info": {"name": "python", "pygments_lexer": "ipython3"}},
          "nbformat": 4, "nbformat_minor": 5}
    for cell in nb["cells"]:
        cell.setdefault("id", hashlib.sha1(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:8])
        if cell["cell_type"] == "code": cell.setdefault("execution_count", None)
    page.nb = nb
    return page


def build_page(notebook: str | Path, force: bool = False) -> Page:
    "Execute (or take from the cache), process and prepare one notebook's page; runs in a worker process."
    notebook = Path(notebook).resolve()
    nb = executed_notebook(notebook, force=force)
    try: processed = process_notebook(nb)
    except Exception as e:  # name the notebook: nbdev's processors do not
        raise NotebookError(f"{notebook.name}: nbdev's docs processing failed: {type(e).__name__}: {e}") from None
    return notebook_page(processed, notebook, NBS if notebook.is_relative_to(NBS) else notebook.parent)


# ---------------------------------------------------------------- rendering with nbconvert

def _latex_to_mathml(tex: str, display: str) -> str:
    "MathML for a TeX snippet (browsers draw it without scripts); the TeX itself where the converter gives up."
    from latex2mathml.converter import convert
    try: return convert(tex.strip(), display=display)
    except Exception: return f'<code class="tex">{html.escape(tex)}</code>'


def _pandoc_link_attributes(markdown: str) -> str:
    "nbdev's show_doc writes pandoc links (`[source](url){target=\"_blank\" ...}`): make them HTML links."
    def link(m):
        attrs = " ".join(a for a in re.findall(r'[\w-]+="[^"]*"', m.group(3)) if not a.startswith("style="))
        return f'<a href="{html.escape(m.group(2))}" class="source-link" {attrs}>{m.group(1)}</a>'
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}", link, markdown)


def _anchor_id(text: str) -> str:
    "Heading ids as pandoc and nbdev's symbol index make them: lower case, spaces to dashes."
    text = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    return re.sub(r"[^\w.\- ]", "", text).replace(" ", "-")


def make_exporter():
    "nbconvert's HTML exporter with our template: no prompts, math as MathML, heading ids like nbdev's links."
    from jinja2 import pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    from nbconvert.preprocessors import ExtractOutputPreprocessor, TagRemovePreprocessor

    class SiteRenderer(IPythonRenderer):
        def inline_math(self, body): return _latex_to_mathml(body, "inline")
        def block_math(self, body): return _latex_to_mathml(body, "block")
        def latex_environment(self, name, body):
            return _latex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", "block")
        def heading(self, text, level, **attrs):
            return f'<h{level} id="{_anchor_id(text)}">{text}</h{level}>\n'

    class SiteExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            renderer = SiteRenderer(escape=False, attachments=cell.get("attachments", {}), embed_images=True,
                                    path=context.get("resources", {}).get("metadata", {}).get("path", ""))
            return MarkdownWithMath(renderer=renderer).render(_pandoc_link_attributes(source))

    exporter = SiteExporter(template_name="dynvfx", extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input_prompt=True, exclude_output_prompt=True, sanitize_html=False)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={"remove_cell"},
                                                         remove_input_tags={"remove_input"},
                                                         remove_all_outputs_tags={"remove_output"}), enabled=True)
    exporter.register_preprocessor(ExtractOutputPreprocessor(), enabled=True)
    return exporter


def _notebook_links(page_html: str, page: Page, pages: list[Page]) -> str:
    "Links to notebooks (`01_video_io.ipynb#x`) and to our docs host become links to this site's pages."
    here = Path(page.name).parent
    by_notebook = {Path(p.notebook).name: p.name for p in pages} | {p.notebook: p.name for p in pages}
    host = (settings().get("doc_host", "") + settings().get("doc_baseurl", "")).rstrip("/") + "/"

    def relative(target: str) -> str: return os.path.relpath(target, here.as_posix() or ".")

    def swap(m):
        url = html.unescape(m.group(2))
        path, _, anchor = url.partition("#")
        if host != "/" and url.startswith(host): path = path[len(host):]
        elif re.match(r"^[a-z]+:", url) or url.startswith("#"): return m.group(0)
        elif path.endswith(".ipynb") and (path in by_notebook or Path(path).name in by_notebook):
            path = by_notebook.get(path) or by_notebook[Path(path).name]
        else: return m.group(0)
        return f'{m.group(1)}"{html.escape(relative(path) + ("#" + anchor if anchor else ""))}"'
    return re.sub(r'(href=)"([^"]*)"', swap, page_html)


def render_site(pages: list[Page], out: Path) -> Path:
    "Write every page, its figure files and the shared assets under `out` (replaced whole, or not at all)."
    import nbformat
    exporter = make_exporter()
    with atomic_write(out) as staging:
        assets = staging / "assets"; assets.mkdir(parents=True)
        _write_assets(assets)
        nav = [{"title": "Home" if p.name == "index.html" else p.title, "name": p.name} for p in pages]
        for page in pages:
            target = staging / page.name; target.parent.mkdir(parents=True, exist_ok=True)
            stem, folder = Path(page.name).stem, Path(page.name).parent.as_posix() or "."
            root = os.path.relpath(".", folder)
            resources = {"unique_key": stem, "output_files_dir": f"{stem}_files",
                         "metadata": {"name": page.title, "path": str(NBS / Path(page.notebook).parent)},
                         "site": {"name": SITE_NAME, "title": page.title, "description": page.description,
                                  "nav": [dict(item, href=os.path.relpath(item["name"], folder),
                                               current=item["name"] == page.name) for item in nav],
                                  "root": "" if root == "." else root + "/", "notebook": page.notebook,
                                  "git_url": settings().get("git_url", ""),
                                  "branch": settings().get("branch", "main")}}
            notebook = nbformat.reads(json.dumps(page.nb), as_version=4)  # also joins multi-line strings
            body, resources = exporter.from_notebook_node(notebook, resources=resources)
            target.write_text(_notebook_links(body, page, pages), encoding="utf-8")
            for filename, data in [*(resources.get("outputs") or {}).items(), *page.files.items()]:
                path = target.parent / filename; path.parent.mkdir(parents=True, exist_ok=True); path.write_bytes(data)
        (staging / "site.json").write_text(json.dumps(
            [{k: v for k, v in vars(p).items() if k != "nb"} for p in pages], indent=1), encoding="utf-8")
    return Path(out)


def _write_assets(assets: Path):
    "JupyterLab's notebook CSS (shipped with nbconvert), the code colours, and our layout."
    from pygments.formatters import HtmlFormatter
    lab = _lab_static()
    css = [(lab / "index.css").read_text(encoding="utf-8"), (lab / "theme-light.css").read_text(encoding="utf-8"),
           HtmlFormatter(style="default").get_style_defs(".highlight")]
    (assets / "jupyter.css").write_text("\n".join(css), encoding="utf-8")
    shutil.copy(TEMPLATES / "site.css", assets / "site.css")


def _lab_static() -> Path:
    "nbconvert's `lab` template folder of static files."
    from jupyter_core.paths import jupyter_path
    for base in jupyter_path("nbconvert", "templates"):
        if (Path(base) / "lab" / "static" / "index.css").exists(): return Path(base) / "lab" / "static"
    raise FileNotFoundError("nbconvert's lab template (static/index.css) was not found; reinstall nbconvert")


# ---------------------------------------------------------------- Quarto, where it is installed

def render_with_quarto(pages: list[Page], processed_dir: Path, out: Path) -> Path:
    "Write the processed notebooks to `_proc/` as nbdev does, with the top-level `_quarto.yml`; Quarto renders them."
    import subprocess

    import nbformat
    import yaml
    if processed_dir.exists():  # keep the execution cache, replace the rest
        for path in processed_dir.iterdir():
            if path != CACHE: shutil.rmtree(path) if path.is_dir() else path.unlink()
    processed_dir.mkdir(parents=True, exist_ok=True)
    for page in pages:
        nb = nbformat.reads(json.dumps(page.nb), as_version=4)
        front = {"title": page.title, "description": page.description, "output-file": Path(page.name).name}
        front_matter = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
        nb.cells.insert(0, nbformat.v4.new_raw_cell(f"---\n{front_matter}---"))
        for cell in nb.cells:  # Quarto reads its cell options from `#|` lines
            options = cell.metadata.pop("quarto", {})
            cell.metadata.pop("tags", None); cell.metadata.pop("code_fold", None)
            if options: cell.source = "".join(f"#| {k}: {v}\n" for k, v in options.items()) + cell.source
        target = processed_dir / page.notebook; target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        for name, data in page.files.items():
            path = target.parent / name; path.parent.mkdir(parents=True, exist_ok=True); path.write_bytes(data)
    shutil.copy(ROOT / "_quarto.yml", processed_dir / "_quarto.yml")
    subprocess.run(["quarto", "render", "--no-execute"], cwd=processed_dir, check=True)
    with atomic_write(out) as partial: shutil.move(str(processed_dir / "_site"), str(partial))
    return out


# ---------------------------------------------------------------- the command

def _worker_init(threads: int):
    os.environ.setdefault("OMP_NUM_THREADS", str(threads)); os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    os.environ.setdefault("MPLBACKEND", "Agg")


def is_cached(notebook: Path, flags: set[str] | None = None, cache: Path = CACHE) -> bool:
    "Whether the cache holds a run of this very notebook, package and data."
    path = _cache_path(Path(notebook).resolve(), cache)
    if not path.exists(): return False
    try: key = json.loads(path.read_text(encoding="utf-8")).get("key")
    except (OSError, ValueError): return False
    return key == execution_key(Path(notebook).resolve(), skip_flags() if flags is None else flags)


def build_pages(notebooks: list[Path] | None = None, workers: int | None = None, force: bool = False) -> list[Page]:
    "Every notebook's page; notebooks without a cached run run in worker processes. `NotebookError` names failures."
    notebooks = notebook_paths() if notebooks is None else [Path(p).resolve() for p in notebooks]
    to_run = [p for p in notebooks if force or not is_cached(p)]
    pages, failures = {}, []

    def keep(notebook, build):
        try: pages[notebook] = build()
        except Exception as e:  # a worker's NotebookError is build_docs.NotebookError, also when this runs as __main__
            is_ours = type(e).__name__ == "NotebookError"
            failures.append(str(e) if is_ours else f"{notebook.name}: {type(e).__name__}: {e}")

    if to_run:
        workers = max(1, min(workers or os.cpu_count() or 1, len(to_run)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        # spawned workers get this process's sys.path and import this module by its name (tools.build_docs), or
        # run it again as their __main__ when it is the script
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            futures = {p: pool.submit(build_page, str(p), force) for p in to_run}
            for notebook, future in futures.items(): keep(notebook, future.result)
    for notebook in notebooks:
        if notebook not in to_run: keep(notebook, lambda: build_page(notebook))
    if failures: raise NotebookError("the docs build failed:\n" + "\n\n".join(failures))
    return [pages[p] for p in notebooks]


def build(out: Path = SITE, workers: int | None = None, force: bool = False,
          renderer: str = "nbconvert") -> list[Page]:
    "Build the site into `out`; returns its pages."
    pages = build_pages(workers=workers, force=force)
    if renderer == "quarto": render_with_quarto(pages, PROC, Path(out))
    else: render_site(pages, Path(out))
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the tutorial site from nbs/*.ipynb into _site/ (offline).")
    parser.add_argument("--out", type=Path, default=SITE, help="site folder (default: _site/)")
    parser.add_argument("--workers", type=int, default=None, help="notebooks run in parallel (default: CPU count)")
    parser.add_argument("--force", action="store_true",
                        help="run every notebook again, ignoring the cache in _proc/_executed/")
    parser.add_argument("--renderer", choices=["auto", "nbconvert", "quarto"], default="auto",
                        help="auto: Quarto where it is installed, else nbconvert")
    args = parser.parse_args(argv)
    renderer = ("quarto" if shutil.which("quarto") else "nbconvert") if args.renderer == "auto" else args.renderer
    start = time.time()
    try: pages = build(args.out, args.workers, args.force, renderer)
    except NotebookError as e:
        print(e, file=sys.stderr); return 1
    print(f"{len(pages)} pages ({renderer}) in {time.time() - start:.0f} s: {Path(args.out).resolve() / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
