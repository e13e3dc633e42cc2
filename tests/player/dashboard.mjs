// Drives the web dashboard of a running balancer (or node) in Debian's headless Chromium, as an
// operator would, and prints one JSON line with what it saw.
//
//   node dashboard.mjs ADMIN_URL TOKEN PLAYBACK_ID NODE_ID OUT_DIR
//
// Logs in with TOKEN, waits for NODE_ID and PLAYBACK_ID to be listed with live figures, plays
// the stream in the page's preview, saves screenshots (wide and narrow) to OUT_DIR, then drains
// NODE_ID from the page (accepting the confirmation). Exit code 0 whenever the page ran; the
// caller asserts on the report. Non-zero: the harness failed (bad args, no browser, a step
// timed out; the message says which).
import { chromium } from 'playwright-core';
import path from 'node:path';

const [adminUrl, token, playbackId, nodeId, outDir] = process.argv.slice(2);
if (!adminUrl || !token || !playbackId || !nodeId || !outDir) {
  console.error('usage: node dashboard.mjs ADMIN_URL TOKEN PLAYBACK_ID NODE_ID OUT_DIR');
  process.exit(2);
}
// Each step may take this long on a loaded 2-core machine.
const STEP_MS = 45_000;

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

let browser;
try {
  browser = await chromium.launch({ executablePath, headless: true, args, timeout: 60_000 });
} catch (e) {
  console.error(`dashboard.mjs: cannot launch ${executablePath}: ${e && e.message ? e.message : e}`);
  process.exit(3);
}
const out = { steps: [] };
const step = (s) => { out.steps.push(s); console.error(`[dashboard] ${s}`); };
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => { if (m.type() === 'error') console.error(`[page error] ${m.text()}`); });
  page.on('pageerror', (e) => console.error(`[page exception] ${e.message}`));
  page.on('dialog', (d) => { out.dialog = d.message(); d.accept(); });

  await page.goto(`${adminUrl}/dashboard`);
  await page.waitForSelector('#login-view:not([hidden])', { timeout: STEP_MS });
  step('login form shown');
  await page.fill('#token', 'not-the-token');
  await page.click('#login-form button[type=submit]');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent.length > 0, null, { timeout: STEP_MS });
  out.wrongTokenMessage = await page.textContent('#login-error');
  await page.fill('#token', token);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector(`#nodes tr[data-node="${nodeId}"]`, { timeout: STEP_MS });
  step('logged in, nodes listed');
  // Live figures: the stream's bit rate comes from the node's measurements.
  const row = `#streams tr[data-stream="${playbackId}"]`;
  await page.waitForFunction((sel) => {
    const r = document.querySelector(sel);
    return r && r.textContent.includes('kbit/s');
  }, row, { timeout: STEP_MS });
  out.streamRow = await page.$$eval(`${row} td`, (tds) => tds.map((td) => td.textContent));
  out.nodeRows = await page.$$eval('#nodes tbody tr', (trs) => trs.map((tr) => Array.from(tr.cells, (c) => c.textContent)));
  step('stream listed with figures');
  // Preview: hls.js from the embedded bundle plays the stream.
  await page.click(`${row} button[data-action=preview]`);
  await page.waitForFunction(() => {
    const v = document.querySelector('#preview-video');
    return v && v.currentTime > 2;
  }, null, { timeout: STEP_MS });
  out.previewTime = await page.$eval('#preview-video', (v) => v.currentTime);
  out.previewStatus = await page.textContent('#preview-status');
  step('preview playing');
  await page.screenshot({ path: path.join(outDir, 'dashboard.png'), fullPage: true });
  // A narrow window: the page must not overflow sideways (tables scroll in their own box).
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  out.narrowOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: path.join(outDir, 'dashboard-narrow.png'), fullPage: true });
  await page.setViewportSize({ width: 1400, height: 900 });
  // The session is a cookie the page's scripts cannot read, and the token is in no URL.
  out.cookieVisibleToScripts = await page.evaluate(() => document.cookie.includes('edge_session'));
  out.tokenInAUrl = requests.some((u) => u.includes(token));
  out.externalRequests = requests.filter((u) => !u.startsWith('http://127.0.0.1') && !u.startsWith('blob:'));
  // Drain from the page.
  await page.click(`#nodes tr[data-node="${nodeId}"] button[data-action=drain]`);
  await page.waitForFunction((id) => {
    const r = document.querySelector(`#nodes tr[data-node="${id}"]`);
    return r && r.textContent.includes('draining');
  }, nodeId, { timeout: STEP_MS });
  out.actionResult = await page.textContent('#action-result');
  step('node draining');
  // Log out: the API refuses the old session afterwards.
  await page.click('#logout');
  await page.waitForSelector('#login-view:not([hidden])', { timeout: STEP_MS });
  out.afterLogout = await page.evaluate(async () => (await fetch('/api/v1/nodes', { cache: 'no-store' })).status);
  step('logged out');
} catch (e) {
  console.error(`dashboard.mjs: step after "${out.steps[out.steps.length - 1] || 'start'}" failed: ${e && e.stack ? e.stack : e}`);
  await browser.close().catch(() => {});
  process.exit(4);
}
await browser.close().catch(() => {});
console.log(JSON.stringify(out));
process.exit(0);
