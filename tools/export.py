"""Export the notebooks to the package: `nbdev_export`, then `__all__` wrapped within the project's 119 characters.

nbdev 2.4.14 (the last nbdev 2; nbdev 3 refuses settings.ini) wraps each module's `__all__` list at 120 characters
and then writes `__all__ = ` in front of the first line, so that line can reach 130 characters and the others 120;
no setting and no notebook cell changes the width. This command is `nbdev_export` followed by the same wrap with the
prefix counted, at 119: every module's `__all__` then reads as the notebooks' lines do. The notebooks stay the only
source; CI checks that running this command changes nothing.

    python -m tools.export          # from the repository root (the notebooks' last cell runs it too)
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from textwrap import TextWrapper

ROOT = Path(__file__).resolve().parent.parent
LINE_LENGTH = 119
ALL_ASSIGNMENT = re.compile(r"^__all__ = (\[[^\]]*\])$", re.MULTILINE)  # names hold no "]"


def wrap_all(source: str, width: int = LINE_LENGTH) -> str:
    "A module's source with its `__all__ = [...]` wrapped at `width`, the `__all__ = ` prefix counted."
    def rewrap(match: re.Match) -> str:
        names = ast.literal_eval(match.group(1))
        wrapper = TextWrapper(width=width, initial_indent="__all__ = ", subsequent_indent=" " * 11,
                              break_long_words=False)
        return "\n".join(wrapper.wrap(str(names)))
    return ALL_ASSIGNMENT.sub(rewrap, source, count=1)


def wrap_package(package: Path = ROOT / "dynvfx") -> list[Path]:
    "Rewrap every module's `__all__` in `package`; the modules it changed."
    changed = []
    for module in sorted(package.glob("*.py")):
        source = module.read_text(encoding="utf-8")
        if (wrapped := wrap_all(source)) != source:
            module.write_text(wrapped, encoding="utf-8"); changed.append(module)
    return changed


def main() -> None:
    if os.environ.get("IN_TEST"): return  # as nbdev_export: the notebooks' tests export nothing
    from nbdev.doclinks import nbdev_export
    os.chdir(ROOT)
    nbdev_export()
    wrap_package()


if __name__ == "__main__":
    main()
