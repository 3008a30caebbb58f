"""Write README.md from nbs/index.ipynb, offline: `python -m tools.write_readme` from the repository's top
(`--check` only compares).

nbdev's `nbdev_readme` renders the index notebook with Quarto, which cannot be installed here. This does the same
job in plain Python: the notebook is executed as the docs build executes it (and from the same cache), then its
title and summary, its markdown, its visible code as fenced blocks and its text outputs are written as GitHub
markdown. Hidden cells (`#| hide`, `#| include: false`) and nbdev's own (`#| default_exp`, `#| export`) stay out,
`#| echo: false` keeps only the output, and links to notebooks (`01_video_io.ipynb`) point into `nbs/`.
The tests fail when README.md differs from what this writes.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from dynvfx.core import atomic_write_text
from tools import build_docs  # the same execution, cache and cell rules as the site

ROOT, NBS = build_docs.ROOT, build_docs.NBS
README = ROOT / "README.md"
COMMAND = "python -m tools.write_readme"  # how README.md is written, as the README and the messages say


def _notebook_links(markdown: str, nbs: Path = NBS) -> str:
    "Relative links to notebooks (`[x](01_video_io.ipynb#y)`) -> links into nbs/ from the repository's top."
    def swap(m):
        target = m.group(2)
        return f"]({m.group(1)}nbs/{target}" if (nbs / target).exists() else m.group(0)
    return re.sub(r"\]\((\s*)([\w./-]+\.ipynb)(?=[#)\s])", swap, markdown)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _outputs(cell) -> list[str]:
    "A cell's outputs as markdown: markdown as itself, text as a fenced block; images and HTML stay out."
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            parts.append(f"```\n{_text(output['text']).rstrip()}\n```")
        data = output.get("data", {})
        if "text/markdown" in data: parts.append(_text(data["text/markdown"]).strip())
        elif "text/plain" in data and not any(k.startswith("image/") or k == "text/html" for k in data):
            parts.append(f"```\n{_text(data['text/plain']).rstrip()}\n```")
    return parts


def readme_text(notebook: Path | None = None) -> str:
    "The README that the index notebook makes."
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    from nbdev.processors import hide_, rm_export

    notebook = notebook or NBS / build_docs.settings().get("readme_nb", "index.ipynb")
    nb = build_docs.executed_notebook(notebook)
    nb = NBProcessor(nb=nb, procs=[FrontmatterProc, rm_export, hide_], process=True).nb
    front = getattr(nb, "frontmatter_", {}) or {}
    blocks = [f"# {front.get('title', build_docs.SITE_NAME)}"]
    if front.get("description"): blocks.append(f"> {front['description']}")
    blocks.append(f"<!-- Written by tools/write_readme.py from nbs/{notebook.name}: edit the notebook, then run "
                  f"`{COMMAND}`. -->")
    for cell in nb.cells:
        if cell.cell_type == "raw": continue
        if cell.cell_type == "markdown":
            blocks.append(cell.source.strip()); continue
        options, code = build_docs._cell_options(cell.source)
        if options.get("include") == "false": continue
        if options.get("echo") != "false" and code.strip(): blocks.append(f"```python\n{code.strip()}\n```")
        if options.get("output") != "false": blocks += _outputs(cell)
    return _notebook_links("\n\n".join(b for b in blocks if b)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write README.md from nbs/index.ipynb (offline; no Quarto).")
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 if README.md would change")
    args = parser.parse_args(argv)
    try: text = readme_text()
    except build_docs.NotebookError as e:
        print(e, file=sys.stderr); return 1
    current = README.read_text(encoding="utf-8") if README.exists() else ""
    if args.check:
        if text != current: print(f"README.md is out of step with nbs/index.ipynb: run {COMMAND}", file=sys.stderr)
        return int(text != current)
    if text != current: atomic_write_text(README, text)
    print(f"README.md {'written' if text != current else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
