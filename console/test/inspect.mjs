// Opens the console at URL in headless Chromium (Debian's, through
// playwright-core), waits until PREDICATE (a JavaScript expression over the
// page's `cy` and counters) holds, then prints what the page shows as JSON:
// the hosts, the components inside them, the links with their classes and
// labels, the health list and the timeline. With SHOT, it also saves a
// screenshot. Exits 1, with the page's last state, when the predicate does
// not hold within TIMEOUT ms.
//
//   node inspect.mjs URL PREDICATE [TIMEOUT] [SHOT]
import { chromium } from 'playwright-core';

const [url, predicate = 'true', timeout = '20000', shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
let code = 0;
try {
  // The console's CSP forbids eval; Playwright's polled predicates need it.
  const page = await browser.newPage({ viewport: { width: 1400, height: 800 }, bypassCSP: true });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  try {
    await page.waitForFunction(`window.__snapshots > 0 && window.__layouts > 0 && (${predicate})`, null, {
      timeout: Number(timeout),
      polling: 100,
    });
  } catch (e) {
    code = 1;
    errors.push(`not met in ${timeout} ms: ${predicate}: ${String(e).split("\n")[0]}`);
  }
  const state = await page.evaluate(() => ({
    snapshots: window.__snapshots,
    render_ms: window.__renderMs,
    snapshot_bytes: window.__bytes,
    hosts: cy.nodes('[id ^= "h:"]').map((n) => ({ id: n.data('host'), missing: n.hasClass('missing'), label: n.data('label') })),
    components: cy.nodes('.component').map((n) => ({ host: n.data('host'), app: n.data('app'), name: n.data('component'), label: n.data('label') })),
    links: cy.edges().not('.entry').map((e) => ({
      from: e.data('from'),
      to: e.data('to'),
      from_host: e.source().data('host'),
      to_host: e.target().data('host'),
      local: e.hasClass('local'),
      label: e.data('label'),
    })),
    entries: cy.nodes('.entry').map((n) => n.data('label')),
    health: [...document.querySelectorAll('#health li')].map((li) => li.textContent),
    timeline: [...document.querySelectorAll('#timeline li')].map((li) => li.textContent),
    overlapping: (() => {
      const boxes = cy.nodes('[id ^= "h:"]').map((n) => n.boundingBox());
      return boxes.some((a, i) => boxes.some((b, j) => i < j && a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2));
    })(),
  }));
  if (shot) await page.screenshot({ path: shot });
  console.log(JSON.stringify({ ...state, errors }));
  if (errors.length) code = 1;
} finally {
  await browser.close();
}
process.exit(code);
