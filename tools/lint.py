"""Lines of at most 119 characters (diffusers' convention) and ruff's basic checks: `python -m tools.lint` from the
repository's top prints what it finds and exits 1 when it finds anything. CI runs it; tests/test_lint.py too.

What is checked, with which of ruff's rules:

- the package (`dynvfx/`, less nbdev's `_modidx.py`), tools/, tests/ and bench/: ruff's default rules (E4 imports, E7
  statements, E9 syntax, F pyflakes: unused imports, undefined names, ...) plus E501 at 119 characters. Left out:
  E701/E702 (fastcore's one-line `if x: return y` and `a; b` are our style), E731 (a named one-line lambda is
  fine in a notebook), E741 (names like `l`: STYLE.md's naming covers them, a reader rather than a rule judges);
- the notebooks' code cells and nbs/*.py (test helpers): E501 only, the same 119 characters. Notebook cells
  legitimately import mid-notebook, redefine drafts and use names a previous cell made, so the other rules stay
  off there; the exported code is checked in the package.

nbdev writes the modules, and two things it writes cannot be changed from the notebooks, so they do not count:
the `__all__ = [...]` assignment (wrapped by nbdev at 120 characters), and imports after the `__version__` line
that `put_version_in_init` puts at the top of `dynvfx/__init__.py` (E402 there).
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE_LENGTH = 119
CODE_RULES = ["E4", "E7", "E9", "F", "E501"]
CODE_IGNORED = ["E701", "E702", "E731", "E741"]
CODE_PATHS = ["dynvfx", "tools", "tests", "bench"]
NOTEBOOK_RULES = ["E501"]
NOTEBOOK_PATHS = ["nbs"]
EXCLUDED = ["dynvfx/_modidx.py", "nbs/_*"]  # nbdev's symbol index; scratch notebooks
PER_FILE_IGNORED = {"dynvfx/__init__.py": ["E402"]}


@dataclass
class Finding:
    "One thing ruff found: where (a notebook's cell too) and what."
    path: str
    row: int
    column: int
    code: str
    message: str
    cell: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:cell {self.cell}:{self.row}" if self.cell else f"{self.path}:{self.row}"
        return f"{where}:{self.column}: {self.code} {self.message}"


def ruff(paths: Sequence[str], select: Sequence[str], ignore: Sequence[str] = (), root: Path = ROOT) -> list[Finding]:
    "Run ruff on `paths` (relative to `root`) with exactly these rules, ignoring any ruff configuration file."
    per_file = ", ".join(f"'{path}' = {codes!r}" for path, codes in PER_FILE_IGNORED.items())
    command = [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--output-format", "json",
               "--line-length", str(LINE_LENGTH), "--select", ",".join(select), "--extend-exclude", ",".join(EXCLUDED),
               "--config", f"lint.per-file-ignores = {{{per_file}}}"]
    if ignore: command += ["--ignore", ",".join(ignore)]
    paths = [path for path in paths if (root / path).exists()]  # a repository without bench/, say
    if not paths: return []
    result = subprocess.run([*command, *paths], cwd=root, capture_output=True, text=True)
    if result.returncode not in (0, 1): raise RuntimeError(f"ruff failed (exit {result.returncode}): {result.stderr}")
    return [Finding(Path(f["filename"]).resolve().relative_to(root.resolve()).as_posix(), f["location"]["row"],
                    f["location"]["column"], f["code"] or "syntax-error", f["message"], f.get("cell"))
            for f in json.loads(result.stdout)]


def nbdev_all_rows(source: str) -> set[int]:
    "The line numbers of the module-level `__all__ = [...]` assignment that nbdev writes."
    try: tree = ast.parse(source)
    except SyntaxError: return set()
    return {row for node in tree.body if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for row in range(node.lineno, node.end_lineno + 1)}


def is_nbdev_all(finding: Finding, root: Path = ROOT) -> bool:
    "Whether a finding is a long line of nbdev's `__all__` in a module of the package."
    if finding.code != "E501" or not finding.path.startswith("dynvfx/"): return False
    return finding.row in nbdev_all_rows((root / finding.path).read_text(encoding="utf-8"))


def findings(root: Path = ROOT) -> list[Finding]:
    "Everything the check finds in the code and the notebooks, less what nbdev writes."
    found = ruff(CODE_PATHS, CODE_RULES, CODE_IGNORED, root) + ruff(NOTEBOOK_PATHS, NOTEBOOK_RULES, root=root)
    return [f for f in found if not is_nbdev_all(f, root)]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="ruff on the package, tools/, tests/ and the notebooks' code cells: lines of "
                                        f"at most {LINE_LENGTH} characters and basic rules (exit 1 on findings).",
                            epilog="Which rules, and why: the docstring of tools/lint.py.").parse_args(argv)
    found = findings()
    for finding in found: print(finding)
    print(f"tools.lint: {len(found)} finding{'s' * (len(found) != 1)} (lines of at most {LINE_LENGTH} characters; "
          f"rules {','.join(CODE_RULES)} less {','.join(CODE_IGNORED)} on {', '.join(CODE_PATHS)}; "
          f"{','.join(NOTEBOOK_RULES)} on the notebooks)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
