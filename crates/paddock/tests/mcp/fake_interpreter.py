"""A stand-in for the code interpreter on port 49999 (the `code-interpreter` template's
server), for run_code's test without building that template: `POST /execute` answers with
lines in the interpreter's wire format (docs/code-interpreter.md). The code selects the
answer; stdout echoes the language and timeout the request carried."""

import base64
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A 1x1 PNG.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)).decode()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        code = body.get("code", "")
        timeout = body.get("timeout")
        timeout = "none" if timeout is None else f"{timeout:g}"
        lines = [{"type": "stdout", "text": f"lang={body.get('language')} timeout={timeout}\n"}]
        if code == "boom":
            lines.append({"type": "error", "name": "ZeroDivisionError", "value": "division by zero",
                          "traceback": "Traceback (most recent call last):\nZeroDivisionError: division by zero"})
        elif code == "big":
            lines.append({"type": "stdout", "text": "x" * 70000})
        else:
            lines.append({"type": "stderr", "text": "careful\n"})
            lines.append({"type": "result", "text": "42", "html": "<b>42</b>", "png": PNG,
                          "is_main_result": True})
        lines.append({"type": "number_of_executions", "execution_count": 1})
        lines.append({"type": "end_of_execution"})
        # Compact, as the interpreter writes its lines.
        out = "".join(json.dumps(l, separators=(",", ":")) + "\n" for l in lines).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", 49999), Handler).serve_forever()
