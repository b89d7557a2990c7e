"""The unmodified e2b-code-interpreter SDK reaching port 49999 by its own https URL.

Run by crates/paddock/tests/tls.rs against a `paddock serve --tls-cert ... --domain
paddock.test` with only E2B_API_URL and E2B_API_KEY set (no E2B_SANDBOX_URL), so the SDK
builds `https://49999-{id}.{domain}` itself (and `https://49983-{id}.{domain}` for envd);
SSL_CERT_FILE names the test CA and the names resolve through Paddock's DNS responder. The
interpreter is tests/mcp/fake_interpreter.py (the real one needs the code-interpreter template,
which tls.rs does not build): what is checked here is the way there, not the kernels.
"""

import sys
import time

from e2b_code_interpreter import Sandbox

FAKE = sys.argv[1]

sbx = Sandbox.create(template="base", timeout=120)
try:
    url = sbx._jupyter_url
    assert url == f"https://{sbx.get_host(49999)}", url
    print("interpreter url", url, flush=True)
    with open(FAKE) as f:
        sbx.files.write("/tmp/fake.py", f.read())
    sbx.commands.run("python3 /tmp/fake.py", background=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            ex = sbx.run_code("x + 1")
            break
        except Exception as e:  # 502 until the stand-in listens
            if time.monotonic() > deadline:
                raise
            print("not yet:", e, flush=True)
            time.sleep(0.2)
    assert ex.error is None, ex.error
    assert ex.text == "42", ex
    assert ex.logs.stderr == ["careful\n"], ex.logs
    print("code interpreter over https ok", flush=True)
finally:
    sbx.kill()
