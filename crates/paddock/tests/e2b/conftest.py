"""Fixtures for the E2B SDK conformance suite.

The suite drives a live `paddock serve` with the unmodified `e2b` SDK. It is started by
`crates/paddock/tests/e2b.rs`, which sets:

- `E2B_API_URL`, `E2B_SANDBOX_URL`: the server's one URL (control and data plane),
- `E2B_API_KEY`: a Paddock key,
- `E2B_DOMAIN`: the server's `--domain`.

Each test gets fresh sandboxes tagged with `{"sandbox_test_id": <uuid>}` in their metadata;
every sandbox a test creates is killed at teardown, so the runner can check that none is
left behind.
"""

import asyncio
import faulthandler
import os
import signal
import sys
import time
import urllib.parse
import uuid
from typing import Callable, List

import pytest

from e2b import AsyncSandbox, Sandbox

# Per test, setup and teardown included (see `_alarm`). The whole suite takes well under a
# minute on a healthy server.
TEST_TIMEOUT_S = 60
HARD_TIMEOUT_S = 30


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite through crates/paddock/tests/e2b.rs")
    return value


API_URL = os.environ.get("E2B_API_URL", "")
SANDBOX_URL = os.environ.get("E2B_SANDBOX_URL", "")
# The domain Paddock tells the SDK: `--domain` with the port the API is reached on (not the
# scheme's default), so `get_host` names are usable as URLs.
_API_PORT = urllib.parse.urlsplit(API_URL).port if API_URL else None
DOMAIN = os.environ.get("E2B_DOMAIN", "") + (f":{_API_PORT}" if _API_PORT else "")
ENVD_PORT = 49983


class _TestTimeout(Exception):
    pass


def _real_stderr(config) -> int:
    """The fd of the terminal's stderr, which pytest's fd capture has replaced as fd 2."""
    capman = config.pluginmanager.getplugin("capturemanager")
    err = getattr(getattr(capman, "_global_capturing", None), "err", None)
    return getattr(err, "targetfd_save", None) or sys.__stderr__.fileno()


@pytest.fixture(autouse=True)
def _alarm(request):
    """Fails a test that runs longer than TEST_TIMEOUT_S (autouse, so it wraps every
    other fixture of the test).

    SIGALRM interrupts Python code, but not a sync SDK call blocked inside its native HTTP
    client (pyqwest); most of those end at the SDK's own 60 s timeouts. If the test is
    still stuck HARD_TIMEOUT_S later, faulthandler prints every thread's stack and ends
    the whole run, so a hang is reported rather than waited out.
    """

    def on_alarm(signum, frame):
        raise _TestTimeout(f"test exceeded {TEST_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT_S)
    faulthandler.dump_traceback_later(
        TEST_TIMEOUT_S + HARD_TIMEOUT_S, exit=True, file=_real_stderr(request.config)
    )
    yield
    faulthandler.cancel_dump_traceback_later()
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session", autouse=True)
def _environment():
    for name in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY", "E2B_DOMAIN"):
        env(name)
    if os.environ.get("E2B_DEBUG", "").lower() == "true":
        pytest.fail("E2B_DEBUG must not be set: the suite needs the control plane")


@pytest.fixture
def test_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def sandbox_factory(test_id) -> Callable[..., Sandbox]:
    """Creates sync sandboxes (kwargs go to `Sandbox.create`), tagged with the test id
    unless the caller passes its own metadata, and kills them all at teardown."""
    created: List[str] = []

    def make(**kwargs) -> Sandbox:
        kwargs.setdefault("metadata", {"sandbox_test_id": test_id})
        kwargs.setdefault("timeout", 120)
        sbx = Sandbox.create(**kwargs)
        created.append(sbx.sandbox_id)
        return sbx

    yield make
    for sandbox_id in created:
        try:
            Sandbox.kill(sandbox_id)
        except Exception:
            pass


@pytest.fixture
def sandbox(sandbox_factory) -> Sandbox:
    return sandbox_factory()


@pytest.fixture
async def async_sandbox_factory(test_id):
    created: List[str] = []

    async def make(**kwargs) -> AsyncSandbox:
        kwargs.setdefault("metadata", {"sandbox_test_id": test_id})
        kwargs.setdefault("timeout", 120)
        sbx = await AsyncSandbox.create(**kwargs)
        created.append(sbx.sandbox_id)
        return sbx

    yield make
    for sandbox_id in created:
        try:
            await AsyncSandbox.kill(sandbox_id)
        except Exception:
            pass


@pytest.fixture
async def async_sandbox(async_sandbox_factory) -> AsyncSandbox:
    return await async_sandbox_factory()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05):
    """Polls `predicate` until it is true; returns whether it became true in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


async def async_wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


def random_sandbox_id() -> str:
    """A well-formed (20 chars of [a-z0-9]) id that names no sandbox."""
    return uuid.uuid4().hex[:20]
