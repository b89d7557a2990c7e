// Opens a desktop's live view (noVNC's vnc.html through Paddock's port proxy) in Debian's
// chromium, headless, driven by playwright-core (no browser download), and waits until
// noVNC is connected and its canvas shows the desktop. Used by desktop.test.mjs and, as
// `node view.mjs URL`, by crates/paddock/tests/desktop.rs; prints one JSON line:
// {"connected", "width", "height", "colors", "status", "reloads"}. When the canvas shows
// nothing within the timeout the line says what the page saw instead ("error", noVNC's
// status, the canvas, failed requests, WebSocket events, console errors), so a failure can be
// told apart: a module that did not load, a WebSocket refused or closed, or a desktop that
// drew nothing.
//
// Chromium fails requests with net::ERR_NETWORK_CHANGED when it decides the host's network
// changed; on a Paddock host, sandbox links (veth pairs, as with Docker) come and go with
// every create, delete and refill of the network slot stock. A fresh-clone CI run saw noVNC's
// modules fail so while the suites' sandboxes were made and removed around the view. A
// person presses reload; so does this script, up to RELOADS times, when the page lost a
// request or its WebSocket that way (the count is "reloads").
// Every `*.{PADDOCK_DOMAIN}` name resolves to 127.0.0.1 (the test server) inside the browser.
import { chromium } from 'playwright-core'

const T = 60_000
const RELOADS = 5
const CHANGED = 'ERR_NETWORK_CHANGED'

/** What noVNC's page shows now: canvas size and colours, status text, connected class. */
function shown () {
  const c = document.querySelector('#noVNC_container canvas')
  const status = document.querySelector('#noVNC_status')?.textContent ?? ''
  const connected = document.documentElement.classList.contains('noVNC_connected')
  if (!c) return { connected, status, canvas: false, width: 0, height: 0, colors: 0 }
  let colors = 0
  if (c.width > 0 && c.height > 0) {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
    const seen = new Set()
    for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2])
    colors = seen.size
  }
  return { connected, status, canvas: true, width: c.width, height: c.height, colors }
}

/** True once noVNC's canvas has drawn something other than one colour. */
function drawn () {
  const c = document.querySelector('#noVNC_container canvas')
  if (!c || c.width < 64 || c.height < 64) return false
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
  const seen = new Set()
  for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2])
  return seen.size > 1
}

/** Loads `url` and returns what the canvas shows; when it shows nothing within `timeout`
 * ms, returns `connected: false` with what the page saw. */
export async function view (url, { timeout = T } = {}) {
  const domain = process.env.PADDOCK_DOMAIN ?? 'paddock.test'
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--host-resolver-rules=MAP *.${domain} 127.0.0.1`]
  })
  const t0 = Date.now()
  const at = () => `${Date.now() - t0} ms`
  const failed = []
  const sockets = []
  const errors = []
  // Set when the page lost a request or its WebSocket to a host network change.
  let changed = false
  const note = (list, text) => {
    list.push(`${at()} ${text}`)
    if (text.includes(CHANGED)) changed = true
  }
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 850 } })
    page.setDefaultTimeout(timeout)
    page.on('requestfailed', (r) => note(failed, `${r.url()}: ${r.failure()?.errorText}`))
    page.on('response', (r) => { if (r.status() >= 400) note(failed, `${r.url()}: HTTP ${r.status()}`) })
    page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') note(errors, m.text()) })
    page.on('pageerror', (e) => note(errors, String(e)))
    page.on('websocket', (ws) => {
      note(sockets, `open ${ws.url()}`)
      let frames = 0
      ws.on('framereceived', () => { frames += 1 })
      ws.on('socketerror', (e) => note(sockets, `error ${e} after ${frames} frames`))
      ws.on('close', () => note(sockets, `closed after ${frames} frames`))
    })
    for (let reloads = 0; ; reloads++) {
      changed = false
      let response
      try {
        response = await page.goto(url)
      } catch (e) {
        if (String(e).includes(CHANGED) && reloads < RELOADS) continue
        throw e
      }
      if (response.status() !== 200) {
        return { connected: false, status: `HTTP ${response.status()}`, body: (await response.text()).slice(0, 300), reloads }
      }
      // noVNC adds the canvas once the RFB connection is up; wait until it has drawn
      // something other than one colour, or until a network change cost the page a request.
      const outcome = await new Promise((resolve) => {
        let tick = null
        const done = (v) => { clearInterval(tick); resolve(v) }
        tick = setInterval(() => { if (changed) done(CHANGED) }, 100)
        page.waitForFunction(drawn, null, { timeout, polling: 200 }).then(() => done('drawn'), (e) => done(e))
      })
      if (outcome === 'drawn') return { ...(await page.evaluate(shown)), reloads }
      if (outcome === CHANGED && reloads < RELOADS) {
        note(sockets, `reloading after ${CHANGED}`)
        changed = false
        await new Promise((resolve) => setTimeout(resolve, 1000))
        continue
      }
      const now = await page.evaluate(shown).catch((x) => ({ evaluate: String(x) }))
      return { ...now, connected: false, error: `nothing drawn within ${timeout} ms (${outcome})`, reloads, failed, sockets, errors }
    }
  } finally {
    await browser.close()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const url = process.argv[2]
  if (!url) throw new Error('usage: node view.mjs URL')
  console.log(JSON.stringify(await view(url)))
}
