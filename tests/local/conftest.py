"""Fixtures of the node-local tier tests: the stand-in API server of the reporting tests."""

from tests.api.test_reporting import status_api

__all__ = ["status_api"]
