"""Helpers for the notebooks' tests. They are not part of the `dynvfx` package, which never imports them.

The notebooks run in this folder (the test runner, nbdev and Jupyter all start them here), so a notebook
imports these with `from test_helpers import ...`.
"""
from __future__ import annotations

from collections.abc import Callable


def error_text(f: Callable[[], object]) -> str:
    "The one-line message that `f()` raises as a `DynVFXError`; fails when it raises none, or another exception."
    try: f()
    except Exception as e:
        # matched by name: the core notebook defines the class itself, so its errors are not dynvfx.core's class
        if type(e).__name__ != "DynVFXError": raise
        return str(e)
    raise AssertionError("no DynVFXError was raised")
