// The E2B JavaScript SDK conformance suite: the unmodified `e2b` package (pinned in
// package.json and package-lock.json) drives a live `paddock serve`.
//
// Started by crates/paddock/tests/e2b_js.rs, which sets E2B_API_URL and E2B_SANDBOX_URL (the
// server's one URL), E2B_API_KEY (a Paddock key) and E2B_DOMAIN (the server's --domain).
// Every sandbox a test makes is killed in its `finally`, so the runner can check that none
// is left behind.

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, NotFoundError, FileType } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY', 'E2B_DOMAIN']) {
  if (!process.env[name]) {
    throw new Error(`${name} is not set: run the suite through crates/paddock/tests/e2b_js.rs`)
  }
}

const RUN_ID = `js-${process.pid}-${Date.now()}`

/** Runs `body` with a fresh sandbox, killed afterwards whatever happens. */
async function withSandbox(opts, body) {
  const sbx = await Sandbox.create({
    timeoutMs: 120_000,
    ...opts,
    metadata: { suite: RUN_ID, ...(opts.metadata ?? {}) },
  })
  try {
    return await body(sbx)
  } finally {
    await sbx.kill().catch(() => {})
  }
}

/** Polls `check` until it returns a truthy value, for at most `ms`. */
async function eventually(check, ms = 10_000, what = 'condition') {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

// ---------------------------------------------------------------- sandboxes

test('create returns a running sandbox with id, domain and metadata', async () => {
  await withSandbox({ metadata: { job: '42' } }, async (sbx) => {
    assert.match(sbx.sandboxId, /^[a-z0-9]{20}$/)
    assert.equal(sbx.sandboxDomain, `${process.env.E2B_DOMAIN}:${new URL(process.env.E2B_API_URL).port}`)
    assert.equal(await sbx.isRunning(), true)
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.metadata.job, '42')
    assert.equal(info.templateId, 'base')
    assert.ok(info.startedAt instanceof Date)
    assert.ok(info.endAt > info.startedAt)
  })
})

test('envs given at create are seen by commands', async () => {
  await withSandbox({ envs: { STAGE: 'dev' } }, async (sbx) => {
    const r = await sbx.commands.run('echo $STAGE')
    assert.equal(r.stdout.trim(), 'dev')
  })
})

test('an unknown template is refused', async () => {
  await assert.rejects(
    Sandbox.create('no-such-template-xyz', { timeoutMs: 10_000 }),
    (err) => /template/i.test(String(err.message)),
  )
})

test('connect reaches the same sandbox', async () => {
  await withSandbox({}, async (sbx) => {
    await sbx.files.write('/tmp/mark', 'here')
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal(again.sandboxId, sbx.sandboxId)
    assert.equal(await again.files.read('/tmp/mark'), 'here')
  })
})

test('list finds the sandbox by metadata, and not after kill', async () => {
  const tag = `${RUN_ID}-list`
  const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata: { suite: RUN_ID, tag } })
  try {
    const found = await Sandbox.list({ query: { metadata: { tag } } }).nextItems()
    assert.deepEqual(
      found.map((s) => s.sandboxId),
      [sbx.sandboxId],
    )
    assert.equal(found[0].state, 'running')
  } finally {
    assert.equal(await sbx.kill(), true)
  }
  const after = await Sandbox.list({ query: { metadata: { tag } } }).nextItems()
  assert.deepEqual(after, [])
  assert.equal(await sbx.isRunning(), false)
})

test('setTimeout lengthens the sandbox life', async () => {
  await withSandbox({ timeoutMs: 30_000 }, async (sbx) => {
    const before = (await sbx.getInfo()).endAt
    await sbx.setTimeout(300_000)
    const after = (await sbx.getInfo()).endAt
    assert.ok(after.getTime() - before.getTime() > 200_000, `${before} -> ${after}`)
  })
})

test('a sandbox ends at its timeout', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 2_000, metadata: { suite: RUN_ID } })
  try {
    await eventually(async () => !(await sbx.isRunning()), 15_000, 'the timeout')
  } finally {
    await sbx.kill().catch(() => {})
  }
})

test('getHost names the port and the sandbox under the domain', async () => {
  await withSandbox({}, async (sbx) => {
    // The domain carries the port clients reach the server on, so the name is usable as is.
    const port = new URL(process.env.E2B_API_URL).port
    assert.equal(sbx.getHost(8080), `8080-${sbx.sandboxId}.${process.env.E2B_DOMAIN}:${port}`)
  })
})

test('metrics are a series with CPU and memory', async () => {
  await withSandbox({}, async (sbx) => {
    const m = await eventually(async () => {
      const s = await sbx.getMetrics()
      return s.length > 0 && s
    }, 10_000, 'a metrics sample')
    assert.ok(m[0].memTotal > 0)
    assert.ok(m[0].cpuCount >= 1)
    assert.ok(m[0].timestamp instanceof Date)
  })
})

test('a killed sandbox is gone for connect', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000, metadata: { suite: RUN_ID } })
  await sbx.kill()
  await assert.rejects(Sandbox.connect(sbx.sandboxId), (err) => err instanceof Error)
})

// ---------------------------------------------------------------- commands

test('run returns stdout, stderr and the exit code', async () => {
  await withSandbox({}, async (sbx) => {
    const r = await sbx.commands.run('echo out; echo err >&2')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'out\n')
    assert.equal(r.stderr, 'err\n')
  })
})

test('a failing command throws CommandExitError with its result', async () => {
  await withSandbox({}, async (sbx) => {
    await assert.rejects(sbx.commands.run('echo nope >&2; exit 3'), (err) => {
      assert.ok(err instanceof CommandExitError)
      assert.equal(err.exitCode, 3)
      assert.equal(err.stderr, 'nope\n')
      return true
    })
  })
})

test('cwd, envs and user apply to a command', async () => {
  await withSandbox({}, async (sbx) => {
    const r = await sbx.commands.run('pwd; echo $A; id -un', {
      cwd: '/tmp',
      envs: { A: 'b c' },
      user: 'root',
    })
    assert.equal(r.stdout, '/tmp\nb c\nroot\n')
    const u = await sbx.commands.run('id -un; echo $HOME')
    assert.equal(u.stdout, 'user\n/home/user\n')
  })
})

test('output streams through callbacks as it is produced', async () => {
  await withSandbox({}, async (sbx) => {
    const out = []
    const err = []
    const r = await sbx.commands.run('for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.1; done', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
    })
    assert.equal(out.join(''), '1\n2\n3\n')
    assert.equal(err.join(''), 'e1\ne2\ne3\n')
    assert.equal(r.stdout, '1\n2\n3\n')
  })
})

test('a command over its timeout is stopped', async () => {
  await withSandbox({}, async (sbx) => {
    const t0 = Date.now()
    await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1_000 }))
    assert.ok(Date.now() - t0 < 15_000)
  })
})

test('background commands are listed, connected to and killed', async () => {
  await withSandbox({}, async (sbx) => {
    const h = await sbx.commands.run('echo started; sleep 60', { background: true })
    assert.ok(h.pid > 0)
    const listed = await eventually(async () => {
      const l = await sbx.commands.list()
      return l.find((p) => p.pid === h.pid)
    }, 5_000, 'the process in the list')
    assert.match(`${listed.cmd} ${listed.args.join(' ')}`, /sleep 60/)
    const out = []
    const c = await sbx.commands.connect(h.pid, { onStdout: (d) => out.push(d) })
    assert.equal(await sbx.commands.kill(h.pid), true)
    await assert.rejects(c.wait())
    await eventually(async () => !(await sbx.commands.list()).some((p) => p.pid === h.pid), 5_000, 'the process to go')
    assert.equal(await sbx.commands.kill(h.pid), false)
  })
})

test('stdin reaches a running command', async () => {
  await withSandbox({}, async (sbx) => {
    const h = await sbx.commands.run('read line; echo got:$line', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'hello\n')
    const r = await h.wait()
    assert.equal(r.stdout, 'got:hello\n')
  })
})

test('closing stdin ends a reader', async () => {
  await withSandbox({}, async (sbx) => {
    const h = await sbx.commands.run('wc -c', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'abcd')
    await sbx.commands.closeStdin(h.pid)
    const r = await h.wait()
    assert.equal(r.stdout.trim(), '4')
  })
})

test('sudo works for user', async () => {
  await withSandbox({}, async (sbx) => {
    const r = await sbx.commands.run('sudo id -u')
    assert.equal(r.stdout.trim(), '0')
  })
})

// ---------------------------------------------------------------- files

test('write and read text, bytes and blobs', async () => {
  await withSandbox({}, async (sbx) => {
    const info = await sbx.files.write('/home/user/a.txt', 'héllo')
    assert.equal(info.path, '/home/user/a.txt')
    assert.equal(await sbx.files.read('/home/user/a.txt'), 'héllo')
    const bytes = new Uint8Array(70_000).map((_, i) => i % 251)
    await sbx.files.write('/home/user/b.bin', bytes.buffer)
    const back = await sbx.files.read('/home/user/b.bin', { format: 'bytes' })
    assert.deepEqual(Buffer.from(back), Buffer.from(bytes))
    const blob = await sbx.files.read('/home/user/a.txt', { format: 'blob' })
    assert.equal(await blob.text(), 'héllo')
    const owner = await sbx.commands.run('stat -c %U /home/user/a.txt')
    assert.equal(owner.stdout.trim(), 'user')
  })
})

test('write many files at once, and read a stream', async () => {
  await withSandbox({}, async (sbx) => {
    const infos = await sbx.files.write([
      { path: '/home/user/m/one', data: '1' },
      { path: '/home/user/m/two', data: '22' },
    ])
    assert.equal(infos.length, 2)
    const s = await sbx.files.read('/home/user/m/two', { format: 'stream' })
    const chunks = []
    for await (const c of s) chunks.push(Buffer.from(c))
    assert.equal(Buffer.concat(chunks).toString(), '22')
  })
})

test('list, getInfo, exists, makeDir, rename and remove', async () => {
  await withSandbox({}, async (sbx) => {
    assert.equal(await sbx.files.makeDir('/home/user/d/e'), true)
    assert.equal(await sbx.files.makeDir('/home/user/d/e'), false)
    await sbx.files.write('/home/user/d/f.txt', 'abc')
    const names = (await sbx.files.list('/home/user/d')).map((e) => e.name).sort()
    assert.deepEqual(names, ['e', 'f.txt'])
    const deep = (await sbx.files.list('/home/user/d', { depth: 2 })).map((e) => e.path).sort()
    assert.ok(deep.includes('/home/user/d/e'))
    const info = await sbx.files.getInfo('/home/user/d/f.txt')
    assert.equal(info.type, FileType.FILE)
    assert.equal(info.size, 3)
    assert.equal(info.owner, 'user')
    assert.equal((await sbx.files.getInfo('/home/user/d/e')).type, FileType.DIR)
    const moved = await sbx.files.rename('/home/user/d/f.txt', '/home/user/d/g.txt')
    assert.equal(moved.path, '/home/user/d/g.txt')
    assert.equal(await sbx.files.exists('/home/user/d/f.txt'), false)
    assert.equal(await sbx.files.exists('/home/user/d/g.txt'), true)
    await sbx.files.remove('/home/user/d')
    assert.equal(await sbx.files.exists('/home/user/d'), false)
  })
})

test('reading a missing file is NotFoundError', async () => {
  await withSandbox({}, async (sbx) => {
    await assert.rejects(sbx.files.read('/home/user/nope'), (err) => err instanceof NotFoundError)
  })
})

test('files as root, and a user cannot write where root owns', async () => {
  await withSandbox({}, async (sbx) => {
    await sbx.files.write('/root/secret', 'x', { user: 'root' })
    assert.equal(await sbx.files.read('/root/secret', { user: 'root' }), 'x')
    await assert.rejects(sbx.files.write('/root/other', 'y'))
  })
})

test('watchDir reports writes', async () => {
  await withSandbox({}, async (sbx) => {
    await sbx.files.makeDir('/home/user/w')
    const events = []
    const h = await sbx.files.watchDir('/home/user/w', (e) => events.push(e))
    try {
      await sbx.files.write('/home/user/w/new.txt', 'n')
      await eventually(() => events.some((e) => e.name === 'new.txt'), 10_000, 'a watch event')
    } finally {
      await h.stop()
    }
  })
})

test('signed upload and download URLs work without the token', async () => {
  await withSandbox({}, async (sbx) => {
    // E2B_SANDBOX_URL points at one address, so a plain client names the sandbox in the
    // header (behind wildcard DNS the URL's host would name it).
    const headers = { 'E2b-Sandbox-Id': sbx.sandboxId }
    const up = await sbx.uploadUrl('/home/user/signed.txt')
    assert.match(up, /signature=v1_/)
    const form = new FormData()
    form.append('file', new Blob(['signed body']), 'signed.txt')
    const r = await fetch(up, { method: 'POST', body: form, headers })
    assert.equal(r.status, 200, await r.text())
    const down = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 60 })
    const d = await fetch(down, { headers })
    assert.equal(d.status, 200)
    assert.equal(await d.text(), 'signed body')
    assert.equal((await sbx.files.getInfo('/home/user/signed.txt')).owner, 'user')
    const unsigned = new URL(down)
    unsigned.searchParams.delete('signature')
    assert.equal((await fetch(unsigned, { headers })).status, 401)
  })
})

// ---------------------------------------------------------------- pty

test('a PTY runs a shell, takes input, resizes and is killed', async () => {
  await withSandbox({}, async (sbx) => {
    let out = ''
    const dec = new TextDecoder()
    const h = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (out += dec.decode(d)) })
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('echo $((6*7)); tty\n'))
    await eventually(() => out.includes('42') && out.includes('/dev/pts/'), 10_000, 'PTY output')
    await sbx.pty.resize(h.pid, { cols: 100, rows: 30 })
    await sbx.pty.sendInput(h.pid, new TextEncoder().encode('stty size\n'))
    await eventually(() => out.includes('30 100'), 10_000, 'the new size')
    assert.equal(await sbx.pty.kill(h.pid), true)
    await assert.rejects(h.wait())
  })
})
