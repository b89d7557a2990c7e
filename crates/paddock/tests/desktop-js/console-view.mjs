// The web console's sandbox page embeds a desktop's live view: logs in with an API key, opens
// the sandbox's overview and waits until noVNC, inside the console's iframe (another origin:
// the host-routed port 6080), shows the desktop. Run by crates/paddock/tests/desktop.rs as
// `node console-view.mjs SERVER_URL KEY ID`; prints one JSON line {"src", "connected", "width"}.
import { chromium } from 'playwright-core'

const [url, key, id] = process.argv.slice(2)
if (!id) throw new Error('usage: node console-view.mjs SERVER_URL KEY ID')
const domain = process.env.PADDOCK_DOMAIN ?? 'paddock.test'
const T = 60_000
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', `--host-resolver-rules=MAP *.${domain} 127.0.0.1, MAP ${domain} 127.0.0.1`]
})
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1200 } })
  page.setDefaultTimeout(T)
  await page.goto(url)
  await page.fill('#api-key', key)
  await page.click('button[type=submit]')
  await page.waitForSelector("h1:text('Sandboxes')")
  await page.goto(`${url}/#/sandboxes/${id}/overview`)
  const frameEl = await page.waitForSelector('iframe#desktop-view')
  const src = await frameEl.getAttribute('src')
  const frame = await frameEl.contentFrame()
  await frame.waitForFunction(() => {
    const c = document.querySelector('#noVNC_container canvas')
    return document.documentElement.classList.contains('noVNC_connected') && c && c.width >= 64
  }, null, { timeout: T, polling: 200 })
  const width = await frame.evaluate(() => document.querySelector('#noVNC_container canvas').width)
  console.log(JSON.stringify({ src, connected: true, width }))
} finally {
  await browser.close()
}
