"""Developer tools for dynvfx, run from the repository's top as modules:

- `python -m tools.build_docs`: the tutorial site, from the notebooks, into `_site/` (offline; no Quarto needed);
- `python -m tools.write_readme`: README.md, from `nbs/index.ipynb` (`--check` only compares);
- `python -m tools.lint`: ruff on the package, tools/ and tests/ (lines of at most 119 characters).
"""
