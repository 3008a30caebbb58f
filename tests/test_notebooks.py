"""Run every notebook in nbs/ as one pytest test: the notebooks' cells are the tests.

Cells flagged with a test flag from settings.ini (`tst_flags`, e.g. `#| gpu`, `#| slow`) or `#| eval: false`
are skipped unless the flag is passed with `--flags`, as `nbdev_test` does. A failure names the notebook, the
cell number and the cell's first line, and shows the traceback.
"""
import os
from configparser import ConfigParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb") if not p.name.startswith("_") and ".ipynb_checkpoints" not in p.parts)


def _skip_flags(config) -> set[str]:
    settings = ConfigParser(delimiters=["="]); settings.read(ROOT / "settings.ini")
    return set(settings["DEFAULT"].get("tst_flags", "").split()) - set((config.getoption("--flags") or "").split())


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook(notebook: Path, request):
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor

    flags = _skip_flags(request.config)
    nb = NBProcessor(notebook, procs=FrontmatterProc, process=True).nb

    def skip(cell):
        if cell.cell_type != "code": return True
        if "nbdev_export(" in cell.source: return True
        directives = getattr(cell, "directives_", {}) or {}
        if directives.get("eval:", [""])[0].lower() == "false": return True
        return bool(flags & directives.keys())

    os.environ["IN_TEST"] = "1"
    shell = CaptureShell(notebook)
    with working_directory(notebook.parent):
        for index, cell in enumerate(nb.cells):
            if skip(cell): continue
            shell.cell(cell)
            if shell.exc:
                first_line = next((l for l in cell.source.splitlines() if l.strip() and not l.startswith("#|")), "")
                pytest.fail(f"{notebook.name}, cell #{index + 1} ({first_line.strip()[:80]!r}) failed:\n{shell.prettytb(fname=notebook)}", pytrace=False)
