"""Run every notebook in nbs/ as one pytest test: the notebooks' cells are the tests.

Cells flagged with a test flag from settings.ini (`tst_flags`, e.g. `#| gpu`, `#| slow`) or `#| eval: false`
are skipped unless the flag is passed with `--flags`, as `nbdev_test` does. A failure names the notebook, the
cell number and the cell's first line, and shows the traceback.

The runner is the docs build's (`tools/build_docs.py`), so tests and docs run the same cells; each passing run is
kept in `_proc/_executed/`, and the docs site test after it renders those outputs instead of running it again.
"""
from pathlib import Path

import pytest

from tools import build_docs

NBS = build_docs.NBS
NOTEBOOKS = build_docs.notebook_paths(NBS)  # names starting with `_` (scratch) stay out


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook(notebook: Path, request):
    flags = build_docs.skip_flags(request.config.getoption("--flags") or "")
    try: build_docs.execute_notebook(notebook, flags)
    except build_docs.NotebookError as e: pytest.fail(str(e), pytrace=False)
