"""The lesson order: a numbered notebook imports (in its exported code and in its tests) only modules exported by
itself or by notebooks before it, so the notebooks can be read, and run, from first to last."""
import json
import re
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1] / "nbs"
IMPORT = re.compile(r"^\s*(?:from\s+dynvfx\.(\w+)\s+import|import\s+dynvfx\.(\w+)"
                    r"|from\s+dynvfx\s+import\s+([\w, ]+))", re.M)


def _cells(notebook: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "code"]


def _numbered_notebooks() -> dict[str, int]:
    "Module name -> the number of the notebook that exports it (`#| default_exp`)."
    modules = {}
    for notebook in sorted(NBS.glob("[0-9][0-9]_*.ipynb")):
        for source in _cells(notebook):
            found = re.search(r"^#\|\s*default_exp\s+(\S+)", source, re.M)
            if found: modules[found.group(1)] = int(notebook.name[:2])
    return modules


def imported_modules(notebook: Path) -> set[str]:
    "The dynvfx modules a notebook imports anywhere in its code cells (scripts it writes for subprocesses too)."
    found = set()
    for source in _cells(notebook):
        for module, imported, names in IMPORT.findall(source):
            found |= {module or imported} if module or imported else {n.strip() for n in names.split(",")}
    return found - {""}


MODULES = _numbered_notebooks()


@pytest.mark.parametrize("notebook", sorted(NBS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_imports_only_earlier_lessons(notebook: Path):
    number = int(notebook.name[:2])
    unknown = sorted(imported_modules(notebook) - set(MODULES) - {"__version__"})
    assert not unknown, f"{notebook.name} imports dynvfx modules that no notebook exports: {unknown}"
    later = sorted(m for m in imported_modules(notebook) if MODULES[m] > number)
    assert not later, f"{notebook.name} imports {later} from later notebooks: " + \
        ", ".join(f"{m} is notebook {MODULES[m]:02d}" for m in later)


def test_the_check_sees_imports():
    "The check is not vacuous: the pipeline notebook imports several earlier modules, and each module is known."
    assert {"core", "anchor_attention", "inversion"} <= imported_modules(NBS / "14_pipeline.ipynb")
    assert MODULES["core"] == 0 and MODULES["pipeline"] < MODULES["cli"] and MODULES["backbone"] < MODULES["wan"]
