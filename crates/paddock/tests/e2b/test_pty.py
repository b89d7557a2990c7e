"""`Sandbox.pty` / `AsyncSandbox.pty`: an interactive login bash on a pseudo-terminal."""

import re

import pytest

from e2b import CommandExitException, PtySize

from conftest import async_wait_until


class Screen:
    """Collects PTY output bytes."""

    def __init__(self):
        self.data = bytearray()

    def __call__(self, chunk: bytes):
        self.data.extend(chunk)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def has(self, needle: str) -> bool:
        return needle in self.text()


async def new_pty(sbx, rows=24, cols=80, **kw):
    screen = Screen()
    h = await sbx.pty.create(PtySize(rows=rows, cols=cols), on_data=screen, **kw)
    return h, screen


async def test_pty_runs_input_and_streams_output(async_sandbox):
    h, screen = await new_pty(async_sandbox)
    assert h.pid > 0
    # The arithmetic is done by the shell, so the echoed input never contains the answer.
    await async_sandbox.pty.send_stdin(h.pid, b"echo pty-$((40+2))\n")
    assert await async_wait_until(lambda: screen.has("pty-42"), 5), screen.text()
    await async_sandbox.pty.send_stdin(h.pid, b"tty; echo \"T=$TERM L=$LANG\"\n")
    assert await async_wait_until(lambda: re.search(r"/dev/pts/\d+", screen.text()) is not None, 5)
    assert await async_wait_until(lambda: screen.has("T=xterm-256color L=C.UTF-8"), 5), screen.text()
    assert await async_sandbox.pty.kill(h.pid) is True


async def test_pty_is_a_login_shell_as_user_in_home(async_sandbox):
    h, screen = await new_pty(async_sandbox)
    await async_sandbox.pty.send_stdin(
        h.pid, b"shopt -q login_shell && echo L$((1))N; echo \"W=$(id -un)@$(pwd)\"\n"
    )
    assert await async_wait_until(lambda: screen.has("L1N"), 5), screen.text()
    assert await async_wait_until(lambda: screen.has("W=user@/home/user"), 5), screen.text()
    await async_sandbox.pty.kill(h.pid)


async def test_pty_cwd_envs_and_user(async_sandbox):
    h, screen = await new_pty(async_sandbox, cwd="/tmp", envs={"PTYVAR": "pv"}, user="root")
    await async_sandbox.pty.send_stdin(h.pid, b"echo \"R=$(id -u):$(pwd):$PTYVAR\"\n")
    assert await async_wait_until(lambda: screen.has("R=0:/tmp:pv"), 5), screen.text()
    await async_sandbox.pty.kill(h.pid)


async def test_pty_resize(async_sandbox):
    h, screen = await new_pty(async_sandbox, rows=24, cols=80)
    await async_sandbox.pty.send_stdin(h.pid, b"echo S=$(stty size)\n")
    assert await async_wait_until(lambda: screen.has("S=24 80"), 5), screen.text()
    await async_sandbox.pty.resize(h.pid, PtySize(rows=30, cols=100))
    await async_sandbox.pty.send_stdin(h.pid, b"echo S=$(stty size)\n")
    assert await async_wait_until(lambda: screen.has("S=30 100"), 5), screen.text()
    await async_sandbox.pty.kill(h.pid)


async def test_pty_exit_code(async_sandbox):
    h, screen = await new_pty(async_sandbox)
    await async_sandbox.pty.send_stdin(h.pid, b"exit 5\n")
    with pytest.raises(CommandExitException) as ei:
        await h.wait()
    assert ei.value.exit_code == 5


async def test_pty_clean_exit(async_sandbox):
    h, screen = await new_pty(async_sandbox)
    await async_sandbox.pty.send_stdin(h.pid, b"echo bye-$((1+1)); exit\n")
    r = await h.wait()
    assert r.exit_code == 0
    assert screen.has("bye-2")


async def test_pty_kill(async_sandbox):
    h, _ = await new_pty(async_sandbox)
    assert h.pid in [p.pid for p in await async_sandbox.commands.list()]
    assert await async_sandbox.pty.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        await h.wait()
    assert await async_sandbox.pty.kill(h.pid) is False
    assert h.pid not in [p.pid for p in await async_sandbox.commands.list()]


async def test_pty_ctrl_c_interrupts(async_sandbox):
    h, screen = await new_pty(async_sandbox)
    # Wait for the sleep itself to run before typing ^C: the echo of the typed line shows up
    # before bash forks, and a SIGINT that reaches the forked child while it is still bash (not
    # yet sleep) makes it exit 130 instead of dying by the signal, so bash would go on to the
    # `echo after-...`. `sh` prints its marker after bash made it the foreground job, then execs.
    await async_sandbox.pty.send_stdin(
        h.pid, b"sh -c 'echo running-$((1+1)); exec sleep 30'; echo after-$((2+2))\n"
    )
    assert await async_wait_until(lambda: screen.has("running-2"), 5), screen.text()
    await async_sandbox.pty.send_stdin(h.pid, b"\x03")
    await async_sandbox.pty.send_stdin(h.pid, b"echo int-$((3+3))\n")
    # ^C killed the sleep (so the rest of its line never ran) and the shell took new input.
    assert await async_wait_until(lambda: screen.has("int-6"), 5), screen.text()
    assert not screen.has("after-4")
    await async_sandbox.pty.kill(h.pid)


def test_pty_sync(sandbox):
    h = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(h.pid, b"echo sync-$((5*5))\n")
    sandbox.pty.resize(h.pid, PtySize(rows=40, cols=120))
    sandbox.pty.send_stdin(h.pid, b"echo S=$(stty size); exit 0\n")
    out = bytearray()
    r = h.wait(on_pty=out.extend)
    assert r.exit_code == 0
    text = out.decode("utf-8", "replace")
    assert "sync-25" in text
    assert "S=40 120" in text
