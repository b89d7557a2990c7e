"""The wire contract below the SDK, checked with plain HTTP: data-plane auth and routing,
signed file URLs, the pre-2.51 control-plane routes and the error body format."""

import base64
import hashlib
import os
import time
import urllib.parse
import urllib.request

import httpx
import pytest

from e2b import Sandbox

from conftest import API_URL, DOMAIN, ENVD_PORT, SANDBOX_URL, random_sandbox_id


def envd_headers(sbx: Sandbox, token=None, **extra):
    h = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
    if token is not None:
        h["X-Access-Token"] = token
    h.update(extra)
    return h


def rpc(path: str, headers: dict, body=None) -> httpx.Response:
    return httpx.post(
        f"{SANDBOX_URL}/{path}",
        headers={**headers, "Content-Type": "application/json", "Connect-Protocol-Version": "1"},
        json=body if body is not None else {},
        timeout=10,
    )


def api(method: str, path: str, key=None, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    headers["X-API-KEY"] = key if key is not None else os.environ["E2B_API_KEY"]
    return httpx.request(method, f"{API_URL}{path}", headers=headers, timeout=20, **kw)


def assert_error_body(r: httpx.Response, status: int):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body.get("code"), int) and body["code"] == status, body
    assert isinstance(body.get("message"), str) and body["message"], body


# --- data-plane auth ---


def test_access_token_is_required_on_the_data_plane(sandbox):
    token = sandbox._envd_access_token
    assert token, "create must return an envdAccessToken"
    ok = rpc("process.Process/List", envd_headers(sandbox, token))
    assert ok.status_code == 200, ok.text
    assert "processes" in ok.json() or ok.json() == {}

    wrong = rpc("process.Process/List", envd_headers(sandbox, "not-the-token"))
    assert wrong.status_code == 401, wrong.text
    missing = rpc("process.Process/List", envd_headers(sandbox))
    assert missing.status_code == 401, missing.text
    # A rejected request ran nothing.
    r = rpc(
        "filesystem.Filesystem/MakeDir",
        envd_headers(sandbox, "bad"),
        {"path": "/home/user/should-not-exist"},
    )
    assert r.status_code == 401
    assert sandbox.files.exists("/home/user/should-not-exist") is False


def test_a_token_only_opens_its_own_sandbox(sandbox_factory):
    a, b = sandbox_factory(), sandbox_factory()
    r = rpc("process.Process/List", envd_headers(b, a._envd_access_token))
    assert r.status_code == 401, r.text


def test_files_endpoint_needs_the_token_or_a_signature(sandbox):
    sandbox.files.write("/home/user/guarded.txt", "guarded")
    base = f"{SANDBOX_URL}/files?path=%2Fhome%2Fuser%2Fguarded.txt"
    assert httpx.get(base, headers=envd_headers(sandbox)).status_code == 401
    assert httpx.get(base, headers=envd_headers(sandbox, "wrong")).status_code == 401
    r = httpx.get(base, headers=envd_headers(sandbox, sandbox._envd_access_token))
    assert (r.status_code, r.content) == (200, b"guarded")


def test_health_is_open(sandbox):
    r = httpx.get(f"{SANDBOX_URL}/health", headers=envd_headers(sandbox))
    assert 200 <= r.status_code < 300, r.text


def test_unknown_sandbox_on_the_data_plane_is_a_502_not_found(sandbox):
    fake = random_sandbox_id()
    r = httpx.get(
        f"{SANDBOX_URL}/health",
        headers={"E2b-Sandbox-Id": fake, "E2b-Sandbox-Port": str(ENVD_PORT)},
    )
    assert r.status_code == 502, r.text
    assert "was not found" in r.json()["message"]


def test_routing_by_host_header(sandbox):
    token = sandbox._envd_access_token
    host = sandbox.get_host(ENVD_PORT)
    assert host == f"{ENVD_PORT}-{sandbox.sandbox_id}.{DOMAIN}"
    sandbox.files.write("/home/user/by-host.txt", "routed by host")
    r = httpx.get(
        f"{SANDBOX_URL}/files",
        params={"path": "/home/user/by-host.txt"},
        headers={"Host": host, "X-Access-Token": token},
    )
    assert (r.status_code, r.content) == (200, b"routed by host"), r.text
    r = httpx.post(
        f"{SANDBOX_URL}/process.Process/List",
        headers={"Host": host, "X-Access-Token": token, "Content-Type": "application/json"},
        content=b"{}",
    )
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{SANDBOX_URL}/process.Process/List",
        headers={"Host": host, "X-Access-Token": "wrong", "Content-Type": "application/json"},
        content=b"{}",
    )
    assert r.status_code == 401, r.text


def test_a_request_naming_a_sandbox_never_reaches_the_rest_api(sandbox):
    # With a valid API key and a sandbox header, a REST path is the sandbox's envd path.
    r = httpx.get(
        f"{SANDBOX_URL}/v2/sandboxes",
        headers={
            **envd_headers(sandbox, sandbox._envd_access_token),
            "X-API-KEY": os.environ["E2B_API_KEY"],
        },
    )
    assert r.status_code == 404, (r.status_code, r.text)
    assert not isinstance(r.json() if r.content else None, list), r.text


# --- signed URLs ---


def signature(path: str, op: str, token: str, user: str = "", expiration=None) -> str:
    raw = f"{path}:{op}:{user}:{token}" + (f":{expiration}" if expiration is not None else "")
    return "v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).decode().rstrip("=")


def test_download_url_works_without_the_token(sandbox):
    sandbox.files.write("/home/user/dl.txt", "download me")
    url = sandbox.download_url("/home/user/dl.txt")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert q["path"] == ["/home/user/dl.txt"]
    assert q["signature"][0].startswith("v1_")
    # No X-Access-Token: the signature is the credential. Routed like a browser would be
    # behind wildcard DNS (Host) and like E2B_SANDBOX_URL clients (header).
    r = httpx.get(url, headers={"Host": sandbox.get_host(ENVD_PORT)})
    assert (r.status_code, r.content) == (200, b"download me"), r.text
    req = urllib.request.Request(url, headers={"E2b-Sandbox-Id": sandbox.sandbox_id})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.read() == b"download me"


def test_download_url_with_expiration(sandbox):
    sandbox.files.write("/home/user/exp.txt", "fresh")
    url = sandbox.download_url("/home/user/exp.txt", use_signature_expiration=120)
    assert "signature_expiration=" in url
    r = httpx.get(url, headers={"E2b-Sandbox-Id": sandbox.sandbox_id})
    assert (r.status_code, r.content) == (200, b"fresh"), r.text


def test_expired_signature_is_rejected(sandbox):
    sandbox.files.write("/home/user/old.txt", "stale")
    url = sandbox.download_url("/home/user/old.txt", use_signature_expiration=-10)
    r = httpx.get(url, headers={"E2b-Sandbox-Id": sandbox.sandbox_id})
    assert r.status_code == 401, r.text
    assert r.json()["message"] == "signature is already expired"


def test_bad_signatures_are_rejected(sandbox):
    token = sandbox._envd_access_token
    sandbox.files.write("/home/user/sig.txt", "secret")
    sandbox.files.write("/home/user/other.txt", "other")
    h = {"E2b-Sandbox-Id": sandbox.sandbox_id}
    base = f"{SANDBOX_URL}/files"

    def get(params):
        return httpx.get(base, params=params, headers=h)

    good = signature("/home/user/sig.txt", "read", token)
    assert get({"path": "/home/user/sig.txt", "signature": good}).status_code == 200
    # Unsigned, tampered, for another path, for the other operation, for another user,
    # with the expiration stripped.
    assert get({"path": "/home/user/sig.txt"}).status_code == 401
    assert get({"path": "/home/user/sig.txt", "signature": good[:-2] + "AA"}).status_code == 401
    assert get({"path": "/home/user/other.txt", "signature": good}).status_code == 401
    write_sig = signature("/home/user/sig.txt", "write", token)
    assert get({"path": "/home/user/sig.txt", "signature": write_sig}).status_code == 401
    assert (
        get({"path": "/home/user/sig.txt", "signature": good, "username": "root"}).status_code
        == 401
    )
    exp = int(time.time()) + 60
    with_exp = signature("/home/user/sig.txt", "read", token, expiration=exp)
    assert get({"path": "/home/user/sig.txt", "signature": with_exp}).status_code == 401
    r = get({"path": "/home/user/sig.txt", "signature": with_exp, "signature_expiration": exp})
    assert (r.status_code, r.content) == (200, b"secret")


def test_upload_url_works_without_the_token(sandbox):
    url = sandbox.upload_url("/home/user/up.txt")
    r = httpx.post(
        url,
        files={"file": ("up.txt", b"uploaded via signed url")},
        headers={"E2b-Sandbox-Id": sandbox.sandbox_id},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and body[0]["path"] == "/home/user/up.txt"
    assert body[0]["name"] == "up.txt" and body[0]["type"] == "file"
    assert sandbox.files.read("/home/user/up.txt") == "uploaded via signed url"
    assert sandbox.files.get_info("/home/user/up.txt").owner == "user"


def test_unsigned_or_read_signed_upload_is_rejected(sandbox):
    token = sandbox._envd_access_token
    h = {"E2b-Sandbox-Id": sandbox.sandbox_id}
    for params in (
        {"path": "/home/user/nope.txt"},
        {"path": "/home/user/nope.txt", "signature": signature("/home/user/nope.txt", "read", token)},
        {"path": "/home/user/nope.txt", "signature": "v1_garbage"},
    ):
        r = httpx.post(f"{SANDBOX_URL}/files", params=params, files={"file": ("nope.txt", b"x")}, headers=h)
        assert r.status_code == 401, (params, r.status_code, r.text)
    assert sandbox.files.exists("/home/user/nope.txt") is False


def test_signature_of_one_sandbox_does_not_open_another(sandbox_factory):
    a, b = sandbox_factory(), sandbox_factory()
    b.files.write("/home/user/b.txt", "b's")
    url = a.download_url("/home/user/b.txt")
    r = httpx.get(url, headers={"E2b-Sandbox-Id": b.sandbox_id})
    assert r.status_code == 401, r.text


# --- control plane below the SDK ---


def test_v1_create_connect_list_delete_routes(test_id):
    r = api(
        "POST",
        "/sandboxes",
        json={"templateID": "base", "timeout": 300, "metadata": {"sandbox_test_id": test_id}},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    sid = created["sandboxID"]
    try:
        for field in ("templateID", "clientID", "envdVersion", "envdAccessToken"):
            assert isinstance(created.get(field), str) and created[field], (field, created)
        r = api("POST", f"/sandboxes/{sid}/connect", json={"timeout": 60})
        assert r.status_code in (200, 201), r.text
        assert r.json()["sandboxID"] == sid
        r = api("POST", f"/v2/sandboxes/{sid}/connect", json={})
        assert r.status_code in (200, 201), r.text
        assert r.json()["envdAccessToken"] == created["envdAccessToken"]
        r = api("GET", "/sandboxes", params={"metadata": f"sandbox_test_id={test_id}"})
        assert r.status_code == 200, r.text
        assert [s["sandboxID"] for s in r.json()] == [sid]
        r = api("GET", f"/sandboxes/{sid}")
        assert r.status_code == 200
        detail = r.json()
        for field in ("templateID", "sandboxID", "clientID", "startedAt", "endAt", "state", "envdVersion"):
            assert field in detail, (field, detail)
        for field in ("cpuCount", "memoryMB", "diskSizeMB"):
            assert isinstance(detail.get(field), int), (field, detail)
    finally:
        r = api("DELETE", f"/sandboxes/{sid}")
        assert r.status_code == 204, r.text
    assert_error_body(api("DELETE", f"/sandboxes/{sid}"), 404)


def test_create_must_answer_201_with_a_body(test_id):
    r = api("POST", "/v2/sandboxes", json={"templateID": "base", "metadata": {"sandbox_test_id": test_id}, "envVars": {}})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    assert api("DELETE", f"/sandboxes/{sid}").status_code == 204


def test_api_errors_are_json_with_an_integer_code():
    assert_error_body(api("GET", f"/sandboxes/{random_sandbox_id()}"), 404)
    assert_error_body(api("GET", "/v2/sandboxes", key="pdk_wrong"), 401)
    r = httpx.get(f"{API_URL}/v2/sandboxes", timeout=10)
    assert_error_body(r, 401)


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/sandboxes/{id}/resume", {}),
        ("POST", "/sandboxes/{id}/snapshots", {"memory": True}),
        ("POST", "/sandboxes/{id}/fork", {"count": 0}),
        ("PUT", "/sandboxes/{id}/network", {}),
        ("POST", "/v3/templates", {"name": "t"}),
        ("GET", "/templates", None),
        ("DELETE", "/templates/base", None),
        ("POST", "/volumes", {"name": "no/slash"}),
    ],
)
def test_unsupported_features_are_4xx_json(sandbox, method, path, body):
    r = api(method, path.format(id=sandbox.sandbox_id), json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    payload = r.json()
    assert isinstance(payload.get("code"), int) and payload["code"] == r.status_code, payload
    assert isinstance(payload.get("message"), str) and payload["message"], payload
    assert sandbox.is_running() is True


@pytest.mark.parametrize(
    "extra",
    [
        {"volumeMounts": [{"name": "v", "path": "/mnt/v"}]},
        {"autoResume": {"enabled": True}},
        {"mcp": {"github": {}}},
    ],
    ids=["volumeMounts", "autoResumeWithoutAutoPause", "mcp"],
)
def test_create_with_unsupported_options_is_refused(test_id, extra):
    r = api(
        "POST",
        "/v2/sandboxes",
        json={"templateID": "base", "metadata": {"sandbox_test_id": test_id}, "envVars": {}, **extra},
    )
    if r.status_code == 201:
        api("DELETE", f"/sandboxes/{r.json()['sandboxID']}")
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert isinstance(r.json().get("code"), int), r.text
