// E2B's desktop JavaScript SDK (@e2b/desktop, pinned in package.json), unchanged, against
// Paddock's `desktop` template; the stream's URL opened in headless Chromium through the port
// proxy (view.mjs). Run by crates/paddock/tests/desktop.rs with the E2B environment
// variables and PADDOCK_DOMAIN set.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Sandbox } from '@e2b/desktop'
import { view } from './view.mjs'

/** The width and height in a PNG's IHDR chunk. */
function pngSize (bytes) {
  const b = Buffer.from(bytes)
  assert.equal(b.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'a PNG')
  assert.equal(b.subarray(12, 16).toString(), 'IHDR')
  return [b.readUInt32BE(16), b.readUInt32BE(20)]
}

/** `get_url()` names https; the test server speaks plain HTTP on the same host and port. */
const plain = (url) => url.replace(/^https:/, 'http:')

test('desktop SDK: create, input, screenshot, stream with a password in a browser', { timeout: 240_000 }, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 300_000 })
  try {
    assert.equal((await sbx.getInfo()).templateId, 'desktop')
    assert.deepEqual(pngSize(await sbx.screenshot()), [1024, 768])
    await sbx.moveMouse(321, 123)
    assert.deepEqual(await sbx.getCursorPosition(), { x: 321, y: 123 })
    await sbx.leftClick(500, 400)
    await sbx.rightClick()
    await sbx.press('esc')
    await sbx.scroll('down', 2)
    await sbx.write('hi')

    await sbx.stream.start({ requireAuth: true })
    await assert.rejects(sbx.stream.start(), /Stream is already running/)
    const key = sbx.stream.getAuthKey()
    const url = sbx.stream.getUrl({ authKey: key })
    assert.match(url, new RegExp(`^https://6080-${sbx.sandboxId}\\.`))
    assert.ok(url.includes(`password=${key}`), url)
    const seen = await view(plain(url))
    assert.equal(seen.connected, true, JSON.stringify(seen))
    assert.deepEqual([seen.width, seen.height], [1024, 768], JSON.stringify(seen))
    assert.ok(seen.colors > 1, JSON.stringify(seen))
    // The wrong password is refused by x11vnc: noVNC never shows the desktop.
    const bad = await view(plain(sbx.stream.getUrl({ authKey: 'wrong-password' })), { timeout: 10_000 }).catch((e) => ({ error: String(e) }))
    assert.ok(bad.error || !bad.connected, JSON.stringify(bad))
    await sbx.stream.stop()
    // And the desktop works on.
    assert.deepEqual(pngSize(await sbx.screenshot()), [1024, 768])
  } finally {
    await sbx.kill()
  }
})
