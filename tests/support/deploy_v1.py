"""Workflows as first deployed (tests/support/deploys.py)."""

from tests.support.deploys import build

globals().update(build(1))
