"""Drives Paddock's MCP tools with the official MCP Python SDK (`mcp`, pinned in
requirements.txt), over stdio (`paddock mcp`) or streamable HTTP (`/mcp`).

Usage:
  client.py stdio PADDOCK_BIN SERVER_URL   (keys from PADDOCK_MCP_KEY_A / _B)
  client.py http MCP_URL                   (same keys, sent as Authorization: Bearer)
  client.py interp MCP_URL                 (run_code against a real code-interpreter sandbox,
                                            key A only; templates.rs runs it once the
                                            template is built)

Key A runs the whole scenario; key B (another tenant) must not see A's sandbox.
PADDOCK_MCP_CODE_ROUTE=1 says the server documents `POST /v1/sandboxes/{id}/code`: run_code
is then checked through it (fake_interpreter.py), else its absence must be a clear error.
Prints one line per step; exits non-zero (with a traceback) on the first failed check.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TOOLS = {
    "create_sandbox", "list_sandboxes", "kill_sandbox", "run_command", "run_code",
    "write_file", "read_file", "list_files", "get_url",
}
MODE = sys.argv[1]


def client_for(key: str, protocol: str) -> Client:
    if MODE == "stdio":
        params = StdioServerParameters(
            command=sys.argv[2],
            args=["mcp", "--url", sys.argv[3]],
            env={"PADDOCK_API_KEY": key},
        )
        return Client(params, mode=protocol)
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return Client(streamable_http_client(sys.argv[2], http_client=http), mode=protocol)


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def data_of(result) -> dict:
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(text_of(result))


async def call(client: Client, name: str, args: dict, expect_error: bool = False) -> dict:
    r = await client.call_tool(name, args)
    is_error = bool(r.is_error)
    assert is_error == expect_error, f"{name}({args}): is_error={is_error}: {text_of(r)}"
    print(f"{name}: {text_of(r)[:300]}", flush=True)
    return r


async def scenario(protocol: str) -> None:
    key_a = os.environ["PADDOCK_MCP_KEY_A"]
    key_b = os.environ["PADDOCK_MCP_KEY_B"]
    async with client_for(key_a, protocol) as a:
        print(f"[{MODE}/{protocol}] connected, protocol {a.protocol_version}", flush=True)
        tools = (await a.list_tools()).tools
        names = {t.name for t in tools}
        assert names == TOOLS, f"tools: {sorted(names)}"
        for t in tools:
            assert t.description and len(t.description) > 60, f"{t.name}: thin description"
            assert t.input_schema.get("type") == "object", f"{t.name}: {t.input_schema}"
        run_schema = next(t for t in tools if t.name == "run_command").input_schema
        assert set(run_schema["required"]) == {"sandbox_id", "command"}, run_schema
        assert {"cwd", "timeout"} <= set(run_schema["properties"]), run_schema

        sbx = data_of(await call(a, "create_sandbox", {"template": "base", "timeout": 120}))
        sid = sbx["sandbox_id"]
        assert len(sid) == 20 and sbx["state"] == "running", sbx
        try:
            out = data_of(await call(a, "run_command", {
                "sandbox_id": sid,
                "command": "echo hello; pwd; echo oops >&2; exit 3",
                "cwd": "/tmp",
            }))
            assert out["stdout"] == "hello\n/tmp\n", out
            assert out["stderr"] == "oops\n", out
            assert out["exit_code"] == 3 and out["timed_out"] is False, out

            out = data_of(await call(a, "run_command", {
                "sandbox_id": sid, "command": "sleep 5", "timeout": 1,
            }))
            assert out["timed_out"] is True, out

            content = "héllo from MCP\nline 2\n"
            w = data_of(await call(a, "write_file", {
                "sandbox_id": sid, "path": "/tmp/mcp/dir/a.txt", "content": content,
            }))
            assert w["size"] == len(content.encode()), w
            r = data_of(await call(a, "read_file", {"sandbox_id": sid, "path": "/tmp/mcp/dir/a.txt"}))
            assert r["content"] == content and r["truncated"] is False, r
            # Caps: content over write_file's 2 MiB is refused before any REST call; read_file
            # returns the first 131,072 bytes of a bigger file and says so.
            r = await call(a, "write_file", {
                "sandbox_id": sid, "path": "/tmp/big", "content": "x" * (2 * 1024 * 1024 + 1),
            }, expect_error=True)
            assert "at most 2097152 bytes" in text_of(r), text_of(r)
            await call(a, "run_command", {"sandbox_id": sid, "command": "head -c 200000 /dev/zero | tr '\\0' y > /tmp/big"})
            r = data_of(await call(a, "read_file", {"sandbox_id": sid, "path": "/tmp/big"}))
            assert r["truncated"] is True and r["size_read"] == 131072 and r["content"] == "y" * 131072, r["size_read"]
            r = data_of(await call(a, "run_command", {"sandbox_id": sid, "command": "head -c 70000 /dev/zero | tr '\\0' z"}))
            assert r["stdout_truncated"] is True and r["stdout"] == "z" * 65536, len(r["stdout"])
            ls = data_of(await call(a, "list_files", {"sandbox_id": sid, "path": "/tmp/mcp", "depth": 2}))
            by_name = {e["name"]: e for e in ls["entries"]}
            assert by_name["dir"]["type"] == "dir", ls
            assert by_name["a.txt"]["type"] == "file" and by_name["a.txt"]["size"] == len(content.encode()), ls

            u = data_of(await call(a, "get_url", {"sandbox_id": sid, "port": 8080}))
            assert sid in u["url"] and "8080" in u["url"], u
            assert "paddock_token=" in u["url"] and u["public"] is False, u
            assert f"/proxy/{sid}/8080/" in u["path_url"], u

            r = await call(a, "run_code", {"sandbox_id": sid, "code": "print(1)"}, expect_error=True)
            if os.environ.get("PADDOCK_MCP_CODE_ROUTE") == "1":
                # The base template has no interpreter: the API's error names the template.
                assert "code-interpreter" in text_of(r) and "no_interpreter" in text_of(r), text_of(r)
                await fake_interpreter(a, sid)
            else:
                # A server whose API has no code route says so clearly.
                assert "no code interpreter API" in text_of(r) and "not_implemented" in text_of(r), text_of(r)

            listed = data_of(await call(a, "list_sandboxes", {}))
            assert sid in {s["sandbox_id"] for s in listed["sandboxes"]}, listed

            # Another tenant sees nothing of it, exactly as over REST.
            async with client_for(key_b, protocol) as b:
                listed = data_of(await call(b, "list_sandboxes", {}))
                assert sid not in {s["sandbox_id"] for s in listed["sandboxes"]}, listed
                r = await call(b, "run_command", {"sandbox_id": sid, "command": "id"}, expect_error=True)
                assert f"sandbox {sid} not found" in text_of(r) and "not_found" in text_of(r), text_of(r)
                r = await call(b, "read_file", {"sandbox_id": sid, "path": "/tmp/mcp/dir/a.txt"},
                               expect_error=True)
                assert "not_found" in text_of(r), text_of(r)
                await call(b, "kill_sandbox", {"sandbox_id": sid}, expect_error=True)
        finally:
            await call(a, "kill_sandbox", {"sandbox_id": sid})

        listed = data_of(await call(a, "list_sandboxes", {}))
        assert sid not in {s["sandbox_id"] for s in listed["sandboxes"]}, listed

        # An unknown sandbox: a tool error carrying the API's message and code.
        missing = "a" * 20
        r = await call(a, "run_command", {"sandbox_id": missing, "command": "true"}, expect_error=True)
        assert f"sandbox {missing} not found" in text_of(r), text_of(r)
        assert r.structured_content["error"]["code"] == "not_found", r.structured_content
        # Bad input the API refuses: its message comes back too.
        r = await call(a, "create_sandbox", {"template": "no-such-template"}, expect_error=True)
        assert "no-such-template" in text_of(r), text_of(r)


async def fake_interpreter(a: Client, sid: str) -> None:
    """run_code through the real route, against fake_interpreter.py started in the sandbox
    with the tools themselves (a background server, as run_command's description says)."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "fake_interpreter.py")) as f:
        await call(a, "write_file", {"sandbox_id": sid, "path": "/tmp/fake.py", "content": f.read()})
    await call(a, "run_command", {"sandbox_id": sid, "command": "nohup python3 /tmp/fake.py > /tmp/fake.log 2>&1 &"})
    for _ in range(100):
        if data_of(await call(a, "get_url", {"sandbox_id": sid, "port": 49999}))["listening"]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the fake interpreter does not listen")
    r = await call(a, "run_code", {"sandbox_id": sid, "code": "x + 1"})
    out = data_of(r)
    assert out["stdout"] == "lang=python timeout=300\n", out
    assert out["stderr"] == "careful\n", out
    assert out["results"] == [{"text": "42", "html": "<b>42</b>", "png": "<image 1>", "is_main_result": True}], out
    images = [c for c in r.content if getattr(c, "type", "") == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png", r.content
    out = data_of(await call(a, "run_code", {"sandbox_id": sid, "code": "x", "language": "js", "timeout": 5}))
    assert out["stdout"] == "lang=js timeout=5\n", out
    r = await call(a, "run_code", {"sandbox_id": sid, "code": "boom"}, expect_error=True)
    err = r.structured_content["error"]
    assert err["name"] == "ZeroDivisionError" and err["value"] == "division by zero", err
    assert "Traceback" in err["traceback"], err
    out = data_of(await call(a, "run_code", {"sandbox_id": sid, "code": "big"}))
    assert out["truncated"] is True and len(out["stdout"]) == 65536, len(out["stdout"])


async def real_interpreter() -> None:
    """run_code against a real `code-interpreter` sandbox (mode `interp`, key A, over /mcp):
    state, stdout, a value, a chart as an image with its data, JavaScript, an error, and a
    timeout that interrupts and keeps the state."""
    async with client_for(os.environ["PADDOCK_MCP_KEY_A"], "auto") as a:
        sid = data_of(await call(a, "create_sandbox", {"template": "code-interpreter"}))["sandbox_id"]
        try:
            out = data_of(await call(a, "run_code", {"sandbox_id": sid, "code": "x = 41\nprint('hi')\nx + 1"}))
            assert out["stdout"] == "hi\n", out
            assert out["results"] == [{"text": "42", "is_main_result": True}], out
            r = await call(a, "run_code", {
                "sandbox_id": sid,
                "code": "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nplt.title('T')\nplt.show()",
            })
            out = data_of(r)
            images = [c for c in r.content if getattr(c, "type", "") == "image"]
            assert len(images) == 1 and images[0].mime_type == "image/png", r.content
            chart = json.loads(out["results"][0]["chart"])
            assert chart["type"] == "bar" and chart["title"] == "T", chart
            assert [(e["label"], e["value"]) for e in chart["elements"]] == [("a", 1), ("b", 2)], chart
            out = data_of(await call(a, "run_code", {"sandbox_id": sid, "code": "[1, 2].map((v) => v * 3)", "language": "js"}))
            assert out["results"] == [{"text": "[ 3, 6 ]", "json": "[3,6]", "is_main_result": True}], out
            r = await call(a, "run_code", {"sandbox_id": sid, "code": "1/0"}, expect_error=True)
            assert r.structured_content["error"]["name"] == "ZeroDivisionError", r.structured_content
            r = await call(a, "run_code", {"sandbox_id": sid, "code": "import time\nwhile True: time.sleep(0.1)", "timeout": 2}, expect_error=True)
            assert r.structured_content["error"]["name"] == "TimeoutError", r.structured_content
            out = data_of(await call(a, "run_code", {"sandbox_id": sid, "code": "x"}))
            assert out["results"][0]["text"] == "41", out
        finally:
            await call(a, "kill_sandbox", {"sandbox_id": sid})
    print("MCP run_code against the real interpreter passed", flush=True)


async def main() -> None:
    if MODE == "interp":
        await real_interpreter()
        return
    # The SDK's default ("auto": the 2026-07-28 discovery) and the initialize handshake
    # that older clients use.
    for protocol in ("auto", "legacy"):
        await scenario(protocol)
    print("MCP scenario passed", flush=True)


asyncio.run(main())
