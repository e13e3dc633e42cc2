import { chromium } from 'playwright-core';
import http from 'node:http';
const url = process.argv[2]; const secs = Number(process.argv[3] || 20);
const srv = http.createServer((_q, r) => { r.writeHead(200, {'content-type':'text/html'}); r.end('<!doctype html><body></body>'); });
await new Promise((res) => srv.listen(0, '127.0.0.1', res));
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless','--no-sandbox','--disable-gpu','--autoplay-policy=no-user-gesture-required'] });
const p = await b.newPage();
p.on('console', (m) => console.error('console:', m.text()));
const reqs = [];
p.on('request', (r) => reqs.push([Date.now(), r.url().replace(/^https?:\/\/[^/]+/, '')]));
await p.goto(`http://127.0.0.1:${srv.address().port}/`);
await p.evaluate((u) => {
  const v = document.createElement('video'); v.muted = true; v.autoplay = true; document.body.appendChild(v);
  window.ev = [];
  for (const e of ['loadstart','loadedmetadata','loadeddata','canplay','playing','waiting','stalled','error','seeking','seeked','ended','emptied','suspend','progress'])
    v.addEventListener(e, () => window.ev.push([Math.round(performance.now()), e, v.currentTime.toFixed(3)]));
  v.src = u; v.play().catch((e) => window.ev.push([0, 'playrej ' + e.message]));
  window.v = v;
}, url);
for (let i = 0; i < secs; i++) {
  await new Promise((r) => setTimeout(r, 1000));
  const s = await p.evaluate(() => { const v = window.v; const b = []; for (let i = 0; i < v.buffered.length; i++) b.push([v.buffered.start(i).toFixed(2), v.buffered.end(i).toFixed(2)]);
    return { t: v.currentTime.toFixed(2), rs: v.readyState, ns: v.networkState, err: v.error && (v.error.code + ' ' + v.error.message), b: JSON.stringify(b), w: v.videoWidth, q: v.getVideoPlaybackQuality && v.getVideoPlaybackQuality().totalVideoFrames, dur: v.duration }; });
  console.log(JSON.stringify(s));
}
console.log(JSON.stringify(await p.evaluate(() => window.ev)));
console.log(reqs.length, 'requests; first 40:'); const t0 = reqs.length ? reqs[0][0] : 0; for (const r of reqs.slice(0, 40)) console.log(r[0] - t0, r[1]);
await b.close(); srv.close();
