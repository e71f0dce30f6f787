"""Waystation's benchmark: `python -m bench` (`make bench`); see docs/performance.md."""
