"""The tests: `python -m pytest tests` from the repository's top (plain `pytest` works too)."""
