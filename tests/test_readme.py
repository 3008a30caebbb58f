"""README.md is written from nbs/index.ipynb by tools/write_readme.py (offline; nbdev_readme needs Quarto).
It must equal what the command writes now, so an edit to either one alone fails here."""
import difflib

from tools import write_readme

ROOT = write_readme.ROOT


def test_readme_is_written_from_the_index_notebook():
    expected, current = write_readme.readme_text(), (ROOT / "README.md").read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(current.splitlines(True), expected.splitlines(True),
                                        "README.md", "tools/write_readme.py", n=1))
    assert current == expected, \
        f"README.md is out of step with nbs/index.ipynb; run {write_readme.COMMAND}\n{diff[:3000]}"


def test_quickstart_holds_the_demo_and_the_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Quickstart", 1)[1].split("```", 2)[1].splitlines()[1:]
    demo, tests = [line for line in block if line.strip()]  # .ci/run runs the second line as the test command
    assert demo.endswith("dynvfx demo") and "pytest tests" in tests
