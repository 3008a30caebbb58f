"""Lines of at most 119 characters and ruff's basic checks (tools/lint.py, which CI runs too): on the package,
tools/, tests/ and the notebooks' code cells. Run `python -m tools.lint` to see every finding."""
import json
from textwrap import TextWrapper

from tools import lint

LONG = "x = '" + "a" * 120 + "'\n"  # a line of 126 characters


def test_code_and_notebooks_pass_the_lint():
    found = lint.findings()
    shown = "\n".join(map(str, found[:40])) + (f"\n... and {len(found) - 40} more" if len(found) > 40 else "")
    assert not found, f"python -m tools.lint finds {len(found)}:\n{shown}"


NBDEV_INIT = '__version__ = "0.1.0"\n"""Summary."""\n\nfrom .mod import here\n\nhere\n'  # E402, as nbdev writes it


def _repository(root, module: str, tool: str, notebook_cells: list[str]):
    "A tiny repository laid out like ours: one module, an nbdev `__init__.py`, a tool, a test, notebooks."
    for folder in ["dynvfx", "tools", "tests", "nbs"]: (root / folder).mkdir()
    (root / "dynvfx" / "__init__.py").write_text(NBDEV_INIT)
    (root / "dynvfx" / "mod.py").write_text(module)
    (root / "tools" / "tool.py").write_text(tool)
    (root / "tests" / "test_x.py").write_text("def test_x(): assert True\n")
    cells = [{"cell_type": "code", "id": f"{i:08x}", "metadata": {}, "outputs": [], "execution_count": None,
              "source": source} for i, source in enumerate(notebook_cells)]
    notebook = {"cells": cells, "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    (root / "nbs" / "01_x.ipynb").write_text(json.dumps(notebook))
    (root / "nbs" / "_scratch.ipynb").write_text(json.dumps(dict(notebook, cells=cells[-1:])))


def test_finds_long_lines_and_unused_imports_but_not_what_nbdev_writes(tmp_path):
    wrapper = TextWrapper(width=120, subsequent_indent=" " * 11, break_long_words=False)  # as nbdev's maker.py
    names = [f"exported_name_{i:02d}" for i in range(12)]
    nbdev_all = "__all__ = " + "\n".join(wrapper.wrap(str(names))) + "\n"
    assert len(nbdev_all.splitlines()[0]) == 130 and len(nbdev_all.splitlines()) > 1
    module = "# %% auto #0\n" + nbdev_all + "".join(f"{name} = 1\n" for name in names) + "here = 1\n" + LONG + \
        "if here: here = 2\n"
    long_row = module.splitlines().index(LONG.strip()) + 1
    _repository(tmp_path, module, tool="import os\n", notebook_cells=["import os", "short = 1\n" + LONG])
    found = {(f.path, f.cell, f.row, f.code) for f in lint.findings(tmp_path)}
    assert found == {("dynvfx/mod.py", None, long_row, "E501"),  # the long line; not __all__, not the one-line `if`
                     ("tools/tool.py", None, 1, "F401"),  # unused import in tools/
                     ("nbs/01_x.ipynb", 2, 2, "E501")}  # in a notebook: E501 only; scratch notebooks stay out


def test_a_clean_repository_passes(tmp_path):
    _repository(tmp_path, "from pathlib import Path\n\nhere = Path('.')\n", tool="import os\n\nprint(os.sep)\n",
                notebook_cells=["short = 1"])
    assert lint.findings(tmp_path) == []
