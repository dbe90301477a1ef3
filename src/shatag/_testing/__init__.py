"""Test and demo helpers, marked as such: not part of the wheel (see ``pyproject.toml``)."""
