"""Network options of E2B sandboxes: internet access, egress rules, public and private
ports (previews through `get_host`). Only loopback and the sandbox itself are contacted."""

import os

import httpx
import pytest

from e2b import Sandbox, SandboxException

from conftest import API_URL, SANDBOX_URL, wait_until


def v1(method: str, path: str, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {os.environ['E2B_API_KEY']}"}
    return httpx.request(method, f"{API_URL}{path}", headers=headers, timeout=20, **kw)


def serve_port(sbx: Sandbox, port: int, token: str = "") -> None:
    """Serves a page on `port` and waits until the proxy reaches it (with the traffic token
    of a private port: without it the answer is 401 whether or not anything listens)."""
    sbx.files.write(f"/home/user/site{port}/index.html", f"preview {port}\n")
    sbx.commands.run(
        f"cd /home/user/site{port} && python3 -m http.server {port} --bind 127.0.0.1",
        background=True,
    )
    url = f"{SANDBOX_URL}/"
    headers = {"Host": sbx.get_host(port)}
    if token:
        headers["E2b-Traffic-Access-Token"] = token
    wait_until(
        lambda: httpx.get(url, headers=headers, timeout=5).status_code != 502,
        timeout=15,
    )


def test_internet_access_is_the_default_and_false_means_loopback_only(sandbox_factory):
    sbx = sandbox_factory()
    assert sbx.get_info().allow_internet_access is True
    r = sbx.commands.run("grep -c nameserver /etc/resolv.conf; awk 'NR>2 {print $1}' /proc/net/dev")
    assert r.stdout.split() == ["1", "lo:", "eth0:"]
    assert v1("GET", f"/v1/sandboxes/{sbx.sandbox_id}/network").json()["network"]["mode"] == "all"

    off = sandbox_factory(allow_internet_access=False)
    assert off.get_info().allow_internet_access is False
    r = off.commands.run("grep -c nameserver /etc/resolv.conf || true; awk 'NR>2 {print $1}' /proc/net/dev")
    assert r.stdout.split() == ["0", "lo:"]


def test_allow_out_with_deny_all_is_an_allow_list(sandbox_factory):
    sbx = sandbox_factory(
        network={"allow_out": ["example.test", "10.9.0.0/16"], "deny_out": ["0.0.0.0/0"]}
    )
    net = v1("GET", f"/v1/sandboxes/{sbx.sandbox_id}/network").json()
    assert net["network"] == {"mode": "allow", "allow": ["10.9.0.0/16", "example.test"]}
    # A name outside the list gets NXDOMAIN from the sandbox's resolver (answered locally,
    # nothing is forwarded).
    r = sbx.commands.run(
        "python3 -c 'import socket\n"
        "try: socket.gethostbyname(\"not-allowed.test\"); print(\"resolved\")\n"
        "except socket.gaierror as e: print(\"refused\", e.errno)'"
    )
    assert r.stdout.startswith("refused"), r.stdout


@pytest.mark.parametrize(
    "network",
    [
        {"deny_out": ["1.2.3.4/32"]},
        {"allow_out": ["example.test"]},
        {"mask_request_host": "${PORT}-x.example"},
    ],
)
def test_unsupported_network_rules_are_refused(sandbox_factory, network):
    with pytest.raises(SandboxException) as e:
        sandbox_factory(network=network)
    assert "400" in str(e.value)


def test_ports_are_public_by_default_like_e2b(sandbox_factory):
    sbx = sandbox_factory()
    serve_port(sbx, 8000)
    r = httpx.get(f"{SANDBOX_URL}/", headers={"Host": sbx.get_host(8000)}, timeout=10)
    assert (r.status_code, r.text) == (200, "preview 8000\n")
    # The same through E2B's header routing, without any token.
    r = httpx.get(
        f"{SANDBOX_URL}/index.html",
        headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"},
        timeout=10,
    )
    assert (r.status_code, r.text) == (200, "preview 8000\n")


def test_private_ports_need_the_traffic_token(sandbox_factory):
    sbx = sandbox_factory(network={"allow_public_traffic": False})
    token = sbx.traffic_access_token
    assert token
    serve_port(sbx, 8001, token)
    host = {"Host": sbx.get_host(8001)}
    assert httpx.get(f"{SANDBOX_URL}/", headers=host, timeout=10).status_code == 401
    r = httpx.get(
        f"{SANDBOX_URL}/",
        headers={**host, "E2b-Traffic-Access-Token": token},
        timeout=10,
    )
    assert (r.status_code, r.text) == (200, "preview 8001\n")
    bad = httpx.get(
        f"{SANDBOX_URL}/", headers={**host, "E2b-Traffic-Access-Token": "wrong"}, timeout=10
    )
    assert bad.status_code == 403
