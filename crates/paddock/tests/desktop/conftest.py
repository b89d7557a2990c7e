"""Fixtures of the desktop suite: E2B's desktop SDK (`e2b-desktop`, pinned in
requirements.txt), unchanged, against a live `paddock serve` that has the `desktop` template.

Started by `crates/paddock/tests/desktop.rs`, which sets `E2B_API_URL`, `E2B_SANDBOX_URL`,
`E2B_API_KEY` and `E2B_DOMAIN` (the server's `--domain`).
"""

import faulthandler
import os
import sys
import time
import urllib.parse
from typing import Callable

import pytest
from e2b_desktop import Sandbox

# A whole test, sandbox creation (Xvfb and XFCE started by the SDK) included.
TEST_TIMEOUT_S = 120

API_URL = os.environ.get("E2B_API_URL", "")
_API_PORT = urllib.parse.urlsplit(API_URL).port if API_URL else None
# What the SDK's `get_host` uses: `--domain` and the port the API is reached on.
DOMAIN = os.environ.get("E2B_DOMAIN", "") + (f":{_API_PORT}" if _API_PORT else "")
# The screen size the shared desktop is created with.
SIZE = (800, 600)


@pytest.fixture(autouse=True)
def _hang_guard():
    """Prints every thread's stack and ends the run when a test hangs."""
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def desktop():
    """One desktop for the suite (from the default template, `desktop`), killed at the end."""
    for name in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN"):
        if not os.environ.get(name):
            pytest.fail(f"{name} is not set: run the suite through crates/paddock/tests/desktop.rs")
    sbx = Sandbox.create(resolution=SIZE, timeout=600)
    yield sbx
    sbx.kill()


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.2):
    """Polls `predicate` until it returns something true; returns that, or the last value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = predicate()
        except Exception:  # a command that fails while the app starts
            v = None
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
