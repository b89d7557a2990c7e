// `get_host(port)` on a machine without wildcard DNS: run by crates/paddock/tests/e2b_js.rs
// inside a mount namespace whose /etc/resolv.conf names only Paddock's DNS responder
// (`paddock serve --dns-listen`), with the server on its default domain `localhost`.
// Node's fetch and Python's urllib must reach a server in the sandbox through the name
// getHost returns, with nothing but the E2B environment variables set.

import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { Sandbox } from 'e2b'

const sbx = await Sandbox.create({ timeoutMs: 60_000 })
try {
  await sbx.files.write('/home/user/www/index.html', 'hello from the sandbox')
  await sbx.commands.run('cd /home/user/www && python3 -m http.server 8000', { background: true })
  const host = sbx.getHost(8000)
  // The domain carries the server's port: the name resolves to the server, the port is its.
  assert.match(host, new RegExp(`^8000-${sbx.sandboxId}\\.localhost:\\d+$`))
  const url = `http://${host}/index.html`
  let body
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(url)
      if (r.status === 200) {
        body = await r.text()
        break
      }
    } catch (e) {
      if (i > 100) throw e
    }
    if (i > 100) throw new Error(`${url} never answered 200`)
    await new Promise((r) => setTimeout(r, 100))
  }
  assert.equal(body, 'hello from the sandbox')
  const py = execFileSync(
    'python3',
    ['-c', 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())', url],
    { encoding: 'utf8' },
  )
  assert.equal(py.trim(), 'hello from the sandbox')
  console.log(`localdns ok: ${url}`)
} finally {
  await sbx.kill()
}
