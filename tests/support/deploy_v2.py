"""The same workflows after an edit (tests/support/deploys.py)."""

from tests.support.deploys import build

globals().update(build(2))
