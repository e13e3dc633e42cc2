// Plays an HLS URL with hls.js (lowLatencyMode) or Shaka Player (streaming.lowLatencyMode) in
// Debian's headless Chromium for SECONDS and prints one JSON line describing what the player
// saw.
//
//   node play.mjs URL SECONDS [hlsjs|shaka]
//
// With EDGE_PLAYER_LOG=N in the environment, the last N lines of hls.js's own log are printed
// to stderr after the run (to see why a player stalled; hls.js only).
// The page is a blank page on its own loopback origin with the player's script injected, so the
// HLS origin must send CORS `*`.
// Exit code is 0 whenever the browser ran, even if the player reported errors: the caller
// asserts on the report. A non-zero exit means the harness itself failed (bad args, no browser).
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import http from 'node:http';

const here = path.dirname(fileURLToPath(import.meta.url));
const [url, secondsArg, playerArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const playerKind = playerArg || 'hlsjs';
// The script each player runs from (pinned in package.json).
const playerScripts = {
  hlsjs: 'node_modules/hls.js/dist/hls.min.js',
  shaka: 'node_modules/shaka-player/dist/shaka-player.compiled.js',
};
if (!url || !Number.isFinite(seconds) || seconds <= 0 || !playerScripts[playerKind]) {
  console.error('usage: node play.mjs URL SECONDS [hlsjs|shaka]');
  process.exit(2);
}

// How many hls.js log lines to keep and print (0: hls.js logs nothing).
const logLines = Math.max(0, Number(process.env.EDGE_PLAYER_LOG) || 0);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];
// EDGE_PLAYER_TRUST_SPKI: base64 SHA-256 hashes of the public keys (comma-separated) whose
// certificates Chromium trusts over HTTPS, as a test CA would be: a self-signed test
// certificate is accepted, any other certificate error still fails.
if (process.env.EDGE_PLAYER_TRUST_SPKI) {
  args.push(`--ignore-certificate-errors-spki-list=${process.env.EDGE_PLAYER_TRUST_SPKI}`);
}

// The page is served by a throwaway server on loopback: a real loopback origin (Chromium's
// local-network-access rules refuse loopback fetches from about:blank, data: or intercepted
// pages), distinct from the HLS origin so CORS is exercised.
const pageServer = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><html><head><title>edge player</title></head><body></body></html>');
});
await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${pageServer.address().port}/`;

// Runs inside the page: creates the <video>, attaches hls.js and records what happens.
function startPlayer([src, logLines]) {
  // How many non-fatal errors are kept in full in the report (the rest are only counted).
  const NON_FATAL_LOG_MAX = 10;
  const s = {
    supported: Hls.isSupported(), startTime: null, endTime: null, firstPlayingMs: null,
    fatalErrors: [], nonFatalErrors: 0, nonFatalDetails: {}, nonFatalLog: [], stalls: 0,
    t0: performance.now(),
  };
  window.__state = s;
  if (!s.supported) { s.fatalErrors.push('hls.js: MediaSource not supported'); return; }
  const video = document.createElement('video');
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  document.body.appendChild(video);
  // hls.js's log, kept in a ring of the last `logLines` lines when asked for.
  s.log = [];
  const keep = (level) => (...a) => {
    s.log.push(`${(performance.now() - s.t0).toFixed(0)} ${level} ${a.map(String).join(' ')}`);
    if (s.log.length > logLines) s.log.shift();
  };
  const debug = logLines > 0
    ? { log: keep('log'), debug: keep('debug'), info: keep('info'), warn: keep('warn'), error: keep('error') }
    : false;
  const hls = new Hls({ lowLatencyMode: true, debug });
  window.__hls = hls;
  window.__video = video;
  hls.on(Hls.Events.ERROR, (_ev, data) => {
    const what = `${data.type}/${data.details}` + (data.response && data.response.code ? ` (HTTP ${data.response.code})` : '')
      + (data.error && data.error.message ? `: ${data.error.message}` : '') + (data.url ? ` ${data.url}` : '');
    if (data.fatal) { s.fatalErrors.push(what); }
    else {
      s.nonFatalErrors += 1;
      s.nonFatalDetails[data.details] = (s.nonFatalDetails[data.details] || 0) + 1;
      // The first few in full: what, where the playhead was, whether playback had started,
      // and what each SourceBuffer held (a hole is told apart from a start gap by these).
      if (s.nonFatalLog.length < NON_FATAL_LOG_MAX) {
        const ranges = (sb) => {
          try { return Array.from({ length: sb.buffered.length }, (_, i) => [sb.buffered.start(i), sb.buffered.end(i)]); } catch (_e) { return null; }
        };
        const buffers = { media: ranges(video) };
        try {
          for (const [kind, track] of Object.entries(hls.bufferController.tracks)) {
            if (track && track.buffer) buffers[kind] = ranges(track.buffer);
          }
        } catch (_e) { /* hls.js internals moved: the media ranges are still there */ }
        s.nonFatalLog.push({
          what, atMs: performance.now() - s.t0, currentTime: video.currentTime,
          afterStart: s.startTime !== null, buffers,
        });
      }
    }
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => { video.play().catch((e) => s.fatalErrors.push(`video.play(): ${e}`)); });
  video.addEventListener('playing', () => {
    if (s.startTime === null) {
      s.startTime = video.currentTime;
      s.firstPlayingMs = performance.now() - s.t0;
      // Where the buffered range being played starts: the keyframe hls.js loaded from.
      for (let i = 0; i < video.buffered.length; i++) {
        if (video.buffered.start(i) <= s.startTime && s.startTime <= video.buffered.end(i)) {
          s.bufferStartAtStart = video.buffered.start(i);
        }
      }
    }
  });
  video.addEventListener('waiting', () => { if (s.startTime !== null) s.stalls += 1; });
  video.addEventListener('error', () => {
    const e = video.error;
    s.fatalErrors.push(`video element error ${e ? e.code : '?'}: ${e && e.message ? e.message : ''}`);
  });
  hls.loadSource(src);
  hls.attachMedia(video);
}

// Runs inside the page: creates the <video>, attaches Shaka Player (LL-HLS on) and records what
// happens, in the same shape as `startPlayer`.
function startShaka([src]) {
  const NON_FATAL_LOG_MAX = 10;
  const s = {
    supported: shaka.Player.isBrowserSupported(), startTime: null, endTime: null,
    firstPlayingMs: null, fatalErrors: [], nonFatalErrors: 0, nonFatalDetails: {},
    nonFatalLog: [], stalls: 0, t0: performance.now(), log: [],
  };
  window.__state = s;
  if (!s.supported) { s.fatalErrors.push('shaka: browser not supported'); return; }
  const video = document.createElement('video');
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  document.body.appendChild(video);
  const player = new shaka.Player();
  window.__shaka = player;
  window.__video = video;
  // Shaka's own default for LL-HLS: lowLatencyMode (parts, blocking reloads, preload hints).
  player.configure({ streaming: { lowLatencyMode: true } });
  player.addEventListener('error', (ev) => {
    const e = ev.detail || {};
    const what = `shaka ${e.category}/${e.code}${e.data ? ` ${JSON.stringify(e.data).slice(0, 300)}` : ''}`;
    // Severity 2 is CRITICAL: the player stopped.
    if (e.severity === 2) { s.fatalErrors.push(what); return; }
    s.nonFatalErrors += 1;
    s.nonFatalDetails[String(e.code)] = (s.nonFatalDetails[String(e.code)] || 0) + 1;
    if (s.nonFatalLog.length < NON_FATAL_LOG_MAX) {
      s.nonFatalLog.push({ what, atMs: performance.now() - s.t0, currentTime: video.currentTime,
        afterStart: s.startTime !== null });
    }
  });
  video.addEventListener('playing', () => {
    if (s.startTime === null) { s.startTime = video.currentTime; s.firstPlayingMs = performance.now() - s.t0; }
  });
  video.addEventListener('waiting', () => { if (s.startTime !== null) s.stalls += 1; });
  video.addEventListener('error', () => {
    const e = video.error;
    s.fatalErrors.push(`video element error ${e ? e.code : '?'}: ${e && e.message ? e.message : ''}`);
  });
  player.attach(video)
    .then(() => player.load(src))
    .then(() => video.play())
    .catch((e) => s.fatalErrors.push(`shaka load: ${e && e.code ? `${e.category}/${e.code}` : e}`));
}

// Runs inside the page: final snapshot.
function report() {
  const s = window.__state;
  const hls = window.__hls;
  const sp = window.__shaka;
  const video = window.__video;
  // Seconds between the wall clock and the PDT of the frame playing (capture to screen, less
  // what happened before the frame reached the node), in either player.
  let playing = null;
  try { playing = hls ? hls.playingDate : (sp ? sp.getPlayheadTimeAsDate() : null); } catch (_e) { playing = null; }
  const pdtLatency = playing ? (Date.now() - playing.getTime()) / 1000 : null;
  let shakaEdge = null;
  try { shakaEdge = sp ? sp.seekRange().end - video.currentTime : null; } catch (_e) { shakaEdge = null; }
  const q = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  const endTime = video ? video.currentTime : null;
  return {
    startTime: s.startTime,
    bufferStartAtStart: Number.isFinite(s.bufferStartAtStart) ? s.bufferStartAtStart : null,
    endTime,
    advanced: s.startTime === null || endTime === null ? 0 : endTime - s.startTime,
    fatalErrors: s.fatalErrors,
    nonFatalErrors: s.nonFatalErrors,
    nonFatalDetails: s.nonFatalDetails,
    nonFatalLog: s.nonFatalLog,
    nonFatalAfterStart: s.nonFatalLog.filter((e) => e.afterStart).length
      + Math.max(0, s.nonFatalErrors - s.nonFatalLog.length),
    latency: hls && Number.isFinite(hls.latency) ? hls.latency : (Number.isFinite(shakaEdge) ? shakaEdge : null),
    targetLatency: hls && Number.isFinite(hls.targetLatency) ? hls.targetLatency : null,
    pdtLatency,
    level: hls ? hls.currentLevel : null,
    levels: hls && hls.levels ? hls.levels.length : (sp ? sp.getVariantTracks().length : 0),
    firstPlayingMs: s.firstPlayingMs,
    stalls: s.stalls,
    paused: video ? video.paused : null,
    decodedFrames: q ? q.totalVideoFrames : null,
    droppedFrames: q ? q.droppedVideoFrames : null,
    lowLatencyMode: hls ? hls.config.lowLatencyMode : (sp ? sp.getConfiguration().streaming.lowLatencyMode : null),
    player: hls ? 'hls.js' : (sp ? 'shaka' : null),
    log: s.log,
  };
}

let browser;
try {
  browser = await chromium.launch({ executablePath, headless: true, args, timeout: 60_000 });
} catch (e) {
  pageServer.close();
  console.error(`play.mjs: cannot launch ${executablePath}: ${e && e.message ? e.message : e}`);
  process.exit(3);
}
let out;
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.error(`[page ${m.type()}] ${m.text()}`); });
  page.on('pageerror', (e) => console.error(`[page exception] ${e.message}`));
  await page.goto(pageUrl);
  await page.addScriptTag({ path: path.join(here, playerScripts[playerKind]) });
  if (playerKind === 'shaka') await page.evaluate(startShaka, [url]);
  else await page.evaluate(startPlayer, [url, logLines]);
  await page.waitForTimeout(seconds * 1000);
  out = await page.evaluate(report);
} catch (e) {
  console.error(`play.mjs: page failed: ${e && e.stack ? e.stack : e}`);
  await browser.close().catch(() => {});
  process.exit(4);
}
await browser.close().catch(() => {});
if (out.log.length) console.error(`hls.js log (last ${out.log.length} lines):\n${out.log.join('\n')}`);
delete out.log;
console.log(JSON.stringify(out));
process.exit(0);
