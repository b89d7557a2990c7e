"""`Sandbox.commands` (process.Process over Connect): run, output, exit codes, envs, cwd,
users, stdin, background processes, connect, kill, list, timeouts."""

import hashlib
import time

import pytest

from e2b import (
    CommandExitException,
    NotFoundException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    TimeoutException,
)

from conftest import wait_until


# --- run: output and exit codes ---


def test_run_captures_stdout_and_exit_code(sandbox):
    r = sandbox.commands.run("echo hello; echo world")
    assert r.stdout == "hello\nworld\n"
    assert r.stderr == ""
    assert r.exit_code == 0
    assert not r.error


def test_run_captures_stderr_separately(sandbox):
    r = sandbox.commands.run("echo out; echo err >&2")
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"
    assert r.exit_code == 0


def test_nonzero_exit_raises_with_exit_code_and_output(sandbox):
    with pytest.raises(CommandExitException) as ei:
        sandbox.commands.run("echo partial; echo boom >&2; exit 3")
    e = ei.value
    assert e.exit_code == 3
    assert e.stdout == "partial\n"
    assert e.stderr == "boom\n"


def test_background_wait_raises_on_nonzero_exit(sandbox):
    h = sandbox.commands.run("exit 7", background=True)
    assert h.pid > 0
    with pytest.raises(CommandExitException) as ei:
        h.wait()
    assert ei.value.exit_code == 7


def test_runs_in_a_bash_login_shell_as_user(sandbox):
    r = sandbox.commands.run(
        'shopt -q login_shell && echo login; echo "$(id -un)|$(id -u)|$HOME|$USER|$PWD"'
    )
    assert r.stdout == "login\nuser|1000|/home/user|user|/home/user\n"


def test_utf8_output_is_decoded(sandbox):
    r = sandbox.commands.run("printf 'h\\xc3\\xa9llo \\xe2\\x9c\\x93\\n'")
    assert r.stdout == "héllo ✓\n"


def test_large_output_arrives_complete_and_in_order(sandbox):
    # ~1.3 MB in many frames; any lost, duplicated or reordered chunk changes the text.
    r = sandbox.commands.run("seq 1 200000")
    expected = "".join(f"{i}\n" for i in range(1, 200001))
    assert len(r.stdout) == len(expected)
    assert hashlib.sha256(r.stdout.encode()).hexdigest() == hashlib.sha256(expected.encode()).hexdigest()


def test_large_stderr(sandbox):
    r = sandbox.commands.run("head -c 3000000 /dev/zero | tr '\\0' e >&2")
    assert r.stdout == ""
    assert r.stderr == "e" * 3_000_000


def test_on_stdout_and_on_stderr_stream_while_running(sandbox):
    out, err, arrivals = [], [], []

    def on_stdout(s):
        out.append(s)
        arrivals.append(time.monotonic())

    start = time.monotonic()
    r = sandbox.commands.run(
        "for i in 1 2 3; do echo line$i; echo err$i >&2; sleep 0.4; done",
        on_stdout=on_stdout,
        on_stderr=err.append,
    )
    end = time.monotonic()
    assert "".join(out) == "line1\nline2\nline3\n" == r.stdout
    assert "".join(err) == "err1\nerr2\nerr3\n" == r.stderr
    # Streamed, not delivered in one piece at the end: the first line came well before the
    # command finished (it sleeps 1.2 s in total).
    assert len(out) >= 2
    assert arrivals[0] - start < (end - start) - 0.6


# --- environment, cwd, users ---


def test_sandbox_envs_from_create_reach_commands(sandbox_factory):
    sbx = sandbox_factory(envs={"FOO": "bar", "SPACED": "a b c"})
    r = sbx.commands.run('echo "$FOO|$SPACED"')
    assert r.stdout == "bar|a b c\n"


def test_command_envs(sandbox):
    r = sandbox.commands.run('echo "$X-$Y"', envs={"X": "42", "Y": "forty two"})
    assert r.stdout == "42-forty two\n"


def test_command_envs_override_sandbox_envs(sandbox_factory):
    sbx = sandbox_factory(envs={"FOO": "from-sandbox", "KEEP": "kept"})
    r = sbx.commands.run('echo "$FOO $KEEP"', envs={"FOO": "from-command"})
    assert r.stdout == "from-command kept\n"


def test_command_envs_do_not_leak_into_later_commands(sandbox):
    sandbox.commands.run("true", envs={"ONLY_ONCE": "1"})
    r = sandbox.commands.run('echo "${ONLY_ONCE-unset}"')
    assert r.stdout == "unset\n"


def test_cwd(sandbox):
    assert sandbox.files.make_dir("/tmp/wd/sub")
    r = sandbox.commands.run("pwd; ls", cwd="/tmp/wd")
    assert r.stdout == "/tmp/wd\nsub\n"


def test_default_cwd_is_home(sandbox):
    assert sandbox.commands.run("pwd").stdout == "/home/user\n"


def test_run_as_root(sandbox):
    r = sandbox.commands.run('id -u; id -un; echo "$HOME"', user="root")
    assert r.stdout == "0\nroot\n/root\n"
    # A file root creates is root's.
    sandbox.commands.run("touch /tmp/by-root", user="root")
    assert sandbox.files.get_info("/tmp/by-root").owner == "root"


def test_default_user_cannot_write_into_a_root_only_dir(sandbox):
    sandbox.commands.run("mkdir /tmp/root-only && chmod 700 /tmp/root-only", user="root")
    with pytest.raises(CommandExitException) as ei:
        sandbox.commands.run("touch /tmp/root-only/x")
    assert ei.value.exit_code == 1
    assert "permission denied" in ei.value.stderr.lower()
    assert sandbox.commands.run("ls /tmp/root-only", user="root").stdout == ""


@pytest.mark.sudo
def test_sudo_as_user_gives_root(sandbox):
    """Passwordless sudo for `user`, as in E2B's base template."""
    r = sandbox.commands.run("sudo id -u")
    assert r.stdout == "0\n"


# --- stdin ---


def test_stdin_send_and_close(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True)
    h.send_stdin("hello ")
    sandbox.commands.send_stdin(h.pid, b"stdin\n")
    sandbox.commands.close_stdin(h.pid)
    r = h.wait()
    assert r.exit_code == 0
    assert r.stdout == "hello stdin\n"


def test_stdin_many_chunks_keep_order(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True)
    for i in range(100):
        h.send_stdin(f"{i}\n")
    h.close_stdin()
    r = h.wait()
    assert r.stdout == "".join(f"{i}\n" for i in range(100))


def test_stdin_binary(sandbox):
    data = bytes(range(256)) * 4
    h = sandbox.commands.run("sha256sum", background=True, stdin=True)
    h.send_stdin(data)
    h.close_stdin()
    r = h.wait()
    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_stream_input(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.stream_input(h.pid, [b"a", "b", b"c\n"])
    sandbox.commands.close_stdin(h.pid)
    assert h.wait().stdout == "abc\n"


def test_without_stdin_flag_stdin_is_at_eof(sandbox):
    # `stdin` not requested: envd gives the process /dev/null, so `cat` ends at once
    # instead of waiting for input until the timeout.
    r = sandbox.commands.run("cat; echo end", timeout=10)
    assert r.stdout == "end\n"


def test_send_stdin_to_unknown_pid_is_not_found(sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.send_stdin(999_999, "x")


# --- background, connect, kill, list ---


def test_background_process_then_connect_and_wait(sandbox):
    h = sandbox.commands.run("sleep 2; echo done; exit 0", background=True)
    pid = h.pid
    h.disconnect()
    h2 = sandbox.commands.connect(pid)
    assert h2.pid == pid
    r = h2.wait()
    assert r.exit_code == 0
    assert "done\n" in r.stdout


def test_two_background_processes_are_independent(sandbox):
    a = sandbox.commands.run("sleep 0.5; echo a", background=True)
    b = sandbox.commands.run("echo b", background=True)
    assert a.pid != b.pid
    assert b.wait().stdout == "b\n"
    assert a.wait().stdout == "a\n"


def test_connect_to_unknown_pid_is_not_found(sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(999_999)


def test_kill_returns_true_then_false(sandbox):
    h = sandbox.commands.run("sleep 30", background=True)
    assert sandbox.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException) as ei:
        h.wait()
    assert ei.value.exit_code != 0
    assert sandbox.commands.kill(h.pid) is False
    assert h.pid not in [p.pid for p in sandbox.commands.list()]


def test_kill_unknown_pid_returns_false(sandbox):
    assert sandbox.commands.kill(999_999) is False


def test_handle_kill(sandbox):
    h = sandbox.commands.run("sleep 30", background=True)
    t0 = time.monotonic()
    assert h.kill() is True
    with pytest.raises(CommandExitException):
        h.wait()
    assert time.monotonic() - t0 < 10


def test_list_shows_running_processes_with_their_config(sandbox):
    h = sandbox.commands.run("sleep 30", background=True, envs={"LISTED": "1"}, cwd="/tmp")
    procs = {p.pid: p for p in sandbox.commands.list()}
    assert h.pid in procs
    p = procs[h.pid]
    assert p.cmd == "/bin/bash"
    assert p.args == ["-l", "-c", "sleep 30"]
    assert p.envs.get("LISTED") == "1"
    assert p.cwd == "/tmp"
    h.kill()
    assert wait_until(lambda: h.pid not in [p.pid for p in sandbox.commands.list()], 5)


# --- timeouts ---


def test_command_timeout_raises_and_kills_the_process(sandbox):
    t0 = time.monotonic()
    with pytest.raises(TimeoutException) as ei:
        sandbox.commands.run("sleep 10", timeout=2)
    elapsed = time.monotonic() - t0
    # A deadline, not a sandbox that went away.
    assert not isinstance(ei.value, (SandboxNotRunningException, SandboxUnreachableException))
    assert 1.5 < elapsed < 8
    # The server ends the process at the deadline too (the SDK only drops the stream).
    assert wait_until(
        lambda: not any("sleep 10" in " ".join(p.args) for p in sandbox.commands.list()), 5
    )
    assert sandbox.commands.run("echo still-alive").stdout == "still-alive\n"


def test_killing_the_sandbox_ends_a_running_command(sandbox):
    h = sandbox.commands.run("sleep 30", background=True)
    assert sandbox.kill() is True
    t0 = time.monotonic()
    with pytest.raises(SandboxNotRunningException):
        h.wait()
    assert time.monotonic() - t0 < 15
