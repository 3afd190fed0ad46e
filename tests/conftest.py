"""Shared pytest configuration for all of pysc's tests.

Integration tests (``tests/integration``) run real programs inside the
sandbox through the ``pysc`` command; they are marked ``integration``
automatically so that ``pytest -m "not integration"`` runs only the fast
unit tests.  ``--pysc-platforms=ptrace,kvm`` restricts the platforms the
integration tests run on (default: every platform ``pysc help platforms``
lists).
"""
from __future__ import annotations

import os

import pytest

_INTEGRATION_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration")


def pytest_addoption(parser):
    group = parser.getgroup("pysc")
    group.addoption(
        "--pysc-platforms", action="store", default=os.environ.get("PYSC_TEST_PLATFORMS", ""),
        help="comma-separated platforms the integration tests run on "
             "(default: all that `pysc help platforms` lists; env PYSC_TEST_PLATFORMS)")


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: runs real programs inside the sandbox")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.fspath).startswith(_INTEGRATION_DIR + os.sep):
            item.add_marker(pytest.mark.integration)
