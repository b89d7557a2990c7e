// Opens a desktop's live view (noVNC's vnc.html through Paddock's port proxy) in Debian's
// chromium, headless, driven by playwright-core (no browser download), and waits until
// noVNC is connected and its canvas shows the desktop. Used by desktop.test.mjs and, as
// `node view.mjs URL`, by crates/paddock/tests/desktop.rs; prints one JSON line:
// {"connected", "width", "height", "colors", "status"}.
// Every `*.{PADDOCK_DOMAIN}` name resolves to 127.0.0.1 (the test server) inside the browser.
import { chromium } from 'playwright-core'

const T = 60_000

/** Loads `url` and returns what the canvas shows; rejects when it shows nothing within
 * `timeout` ms. */
export async function view (url, { timeout = T } = {}) {
  const domain = process.env.PADDOCK_DOMAIN ?? 'paddock.test'
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', `--host-resolver-rules=MAP *.${domain} 127.0.0.1`]
  })
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 850 } })
    page.setDefaultTimeout(timeout)
    const response = await page.goto(url)
    if (response.status() !== 200) {
      return { connected: false, status: `HTTP ${response.status()}`, body: (await response.text()).slice(0, 300) }
    }
    // noVNC adds the canvas once the RFB connection is up; wait until it has drawn
    // something other than one colour.
    await page.waitForFunction(() => {
      const c = document.querySelector('#noVNC_container canvas')
      if (!c || c.width < 64 || c.height < 64) return false
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
      const seen = new Set()
      for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2])
      return seen.size > 1
    }, null, { timeout, polling: 200 })
    return await page.evaluate(() => {
      const c = document.querySelector('#noVNC_container canvas')
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data
      const seen = new Set()
      for (let i = 0; i < d.length; i += 4 * 97) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2])
      const status = document.querySelector('#noVNC_status')?.textContent ?? ''
      const connected = document.documentElement.classList.contains('noVNC_connected')
      return { connected, width: c.width, height: c.height, colors: seen.size, status }
    })
  } finally {
    await browser.close()
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const url = process.argv[2]
  if (!url) throw new Error('usage: node view.mjs URL')
  console.log(JSON.stringify(await view(url)))
}
