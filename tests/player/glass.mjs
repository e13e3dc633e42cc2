// Glass-to-glass latency: plays an HLS URL with hls.js (lowLatencyMode, default config
// otherwise), with --player shaka Shaka Player (streaming.lowLatencyMode), or with --player
// videojs video.js 8 and its HLS engine VHS (llhls, its default), or with --player native
// Chromium's own HLS player (`video.src` set to the URL, no script: what a page that hands an
// HLS URL to a <video> gets in Chrome since its built-in HLS support), in Debian's headless
// Chromium, and reads the capture time that the publisher burnt into every frame back from the displayed
// frame. Prints one JSON line.
//
//   node glass.mjs URL SECONDS [--warmup S] [--level HEIGHT] [--block PX] [--bits N]
//                              [--source WxH] [--samples FILE] [--player hlsjs|shaka|videojs|native]
//
// The strip (benches/glass.rs draws it with ffmpeg's `geq` from `time(0)`): at the top left of
// the source picture (--source, default 1280x720), one row of square blocks of --block pixels
// (default 40): block 0 white and block 1 black (references for the threshold), then --bits
// (default 24) blocks, most significant first, holding the Gray code of the wall clock in
// milliseconds modulo 2^bits, white for 1. A frame drawn across a tick of the clock differs
// from either neighbour in one block only, so it reads as one of the two values.
//
// Every frame the compositor is handed (requestVideoFrameCallback; a 4 ms timer if the browser
// lacks it) is drawn to a canvas at the video's own size, the strip is read (the centre half
// of each block, averaged), decoded, and compared with Date.now() at the frame's expected
// display time: glass to glass on one machine clock, modulo 2^bits.
//
// Samples are kept from --warmup seconds (default 10) after the first `playing` event for
// SECONDS seconds; the start-up (joining the live edge, the first stall-free seconds) is not
// measured. --level HEIGHT pins the variant of that height (hls.startLevel and hls.loadLevel at
// MANIFEST_PARSED, then hls.startLoad: with --level, autoStartLoad is off;
// Shaka: ABR off and selectVariantTrack once loaded; video.js: every other representation of
// VHS disabled at `loadedmetadata`, the first moment VHS lists them, so its first parts may be
// another variant's: the warm-up covers the switch; native: refused, Chromium's player chooses).
// --samples FILE writes the measured samples as JSON ([display wall ms, latency ms] pairs).
// The report's `join` times the start from the browser's resource timing and the page's own
// marks, in ms after the first media playlist arrived: each media playlist's first arrival,
// the first media request, when each track first had media buffered, `seeking`, `seeked` and
// `playing` (any player).
// With EDGE_PLAYER_LOG=N in the environment, the last N lines of hls.js's own log are printed
// to stderr after the run (as play.mjs does). Stalls are logged with their length and buffers,
// and media loads slower than 1 s with their URL. With EDGE_GLASS_REQUESTS=1, every request the
// player makes is printed to stderr as it starts and ends (ms after the page opens), with the
// page's console and, at `playing`, the position, the player's seek range and the buffer;
// with EDGE_GLASS_PLAYLISTS=1, every playlist the player receives; with EDGE_GLASS_APPENDS=1,
// every SourceBuffer append (printed with EDGE_GLASS_REQUESTS=1); with EDGE_GLASS_SHAKA_DEBUG=1
// (or =v1, more), Shaka's debug build and its debug log. EDGE_GLASS_SHAKA_CONFIG and
// EDGE_GLASS_VHS_CONFIG (JSON) add to Shaka's configuration and to video.js's VHS options.
// EDGE_GLASS_HLSJS=PATH (relative to this directory) plays another hls.js build, for example
// node_modules/hls.js/dist/hls.js (unminified) or a patched copy of it.
//
// Exit code 0 whenever the browser ran, even if the player reported errors (the caller reads
// the report); non-zero when the harness itself failed (bad args, no browser, never played).
import { chromium } from 'playwright-core';
import { fileURLToPath } from 'node:url';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import http from 'node:http';

const here = path.dirname(fileURLToPath(import.meta.url));
const usage = 'usage: node glass.mjs URL SECONDS [--warmup S] [--level HEIGHT] [--block PX] [--bits N] [--source WxH] [--samples FILE] [--player hlsjs|shaka|videojs|native]';
// The script each player runs from (pinned in package.json; EDGE_GLASS_HLSJS replaces hls.js's);
// the browser's own player needs none.
const PLAYER_SCRIPTS = {
  hlsjs: process.env.EDGE_GLASS_HLSJS || 'node_modules/hls.js/dist/hls.min.js',
  shaka: 'node_modules/shaka-player/dist/shaka-player.compiled.js',
  videojs: 'node_modules/video.js/dist/video.min.js',
  native: null,
};

const argv = process.argv.slice(2);
const opts = {
  url: null, seconds: NaN, warmup: 10, level: 0, block: 40, bits: 24,
  sourceWidth: 1280, sourceHeight: 720, samples: null, player: 'hlsjs',
  // How many hls.js log lines to keep and print to stderr (0: hls.js logs nothing).
  logLines: Math.max(0, Number(process.env.EDGE_PLAYER_LOG) || 0),
  // EDGE_GLASS_APPENDS=1: every SourceBuffer append logged (type, bytes, the boxes it starts with).
  logAppends: Boolean(process.env.EDGE_GLASS_APPENDS),
  // EDGE_GLASS_VHS_CONFIG: JSON merged into video.js's VHS options (e.g. {"llhls":false}).
  vhsConfig: process.env.EDGE_GLASS_VHS_CONFIG ? JSON.parse(process.env.EDGE_GLASS_VHS_CONFIG) : null,
  // EDGE_GLASS_SHAKA_CONFIG: JSON given to Shaka's configure() after its defaults and ours.
  shakaConfig: process.env.EDGE_GLASS_SHAKA_CONFIG ? JSON.parse(process.env.EDGE_GLASS_SHAKA_CONFIG) : null,
};
for (let i = 0; i < argv.length; i += 1) {
  const a = argv[i];
  const next = () => {
    i += 1;
    if (i >= argv.length) { console.error(`${a} needs a value\n${usage}`); process.exit(2); }
    return argv[i];
  };
  if (a === '--warmup') opts.warmup = Number(next());
  else if (a === '--level') opts.level = Number(next());
  else if (a === '--block') opts.block = Number(next());
  else if (a === '--bits') opts.bits = Number(next());
  else if (a === '--samples') opts.samples = next();
  else if (a === '--player') opts.player = next();
  else if (a === '--source') {
    const [w, h] = next().split('x').map(Number);
    opts.sourceWidth = w; opts.sourceHeight = h;
  } else if (a.startsWith('--')) { console.error(`unknown option ${a}\n${usage}`); process.exit(2); }
  else if (opts.url === null) opts.url = a;
  else opts.seconds = Number(a);
}
const numbersOk = [opts.seconds, opts.warmup, opts.level, opts.block, opts.bits, opts.sourceWidth, opts.sourceHeight]
  .every(Number.isFinite);
if (!opts.url || !numbersOk || opts.seconds <= 0 || opts.warmup < 0 || opts.bits < 8 || opts.bits > 30 || !(opts.player in PLAYER_SCRIPTS)
  || (opts.player === 'native' && opts.level)) {
  console.error(usage);
  process.exit(2);
}

const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
  // Keep rendering and timers at full rate in a page nobody looks at.
  '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

// The page comes from a throwaway server on loopback (see play.mjs: Chromium refuses loopback
// fetches from about:blank), an origin distinct from the HLS origin.
const pageServer = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/html' });
  res.end('<!doctype html><html><head><title>edge glass</title></head><body style="margin:0"></body></html>');
});
await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${pageServer.address().port}/`;

// Runs inside the page: the <video>, hls.js, and the strip reader on every displayed frame.
function startGlass(o) {
  const MOD = 2 ** o.bits;
  const REJECTED_LOG_MAX = 10;
  // Stalls logged in full, and media loads slower than SLOW_LOAD_MS (the first SLOW_LOG_MAX).
  const STALL_LOG_MAX = 10;
  const SLOW_LOAD_MS = 1000;
  const SLOW_LOG_MAX = 20;
  // How often the player's own latency estimate is read while measuring (it is a median over
  // the window; 10 readings a second are plenty, and reading it costs Shaka a whole report).
  const OWN_LATENCY_EVERY_MS = 100;
  const s = {
    t0: performance.now(), startWall: null, firstPlayingMs: null, measureFrom: null, measureTo: null,
    fatalErrors: [], nonFatalErrors: 0, nonFatalDetails: {}, nonFatalLog: [], stalls: 0, stallsMeasured: 0, stallAt: [],
    samples: [], ownLatency: [], lastOwnAt: 0, warmupSamples: 0, frames: 0, duplicates: 0,
    rejected: { noFrame: 0, reference: 0, ambiguous: 0, range: 0 }, rejectedLog: [], videoSizes: {},
    targetLatencyAtStart: null, atPlaying: null, mode: null, lastCode: null,
    stallLog: [], stalledSince: null, slowLoads: [], beforePlaying: 0, log: [], logLines: o.logLines,
    // The join, ms after t0 (performance.now() clock): when each track first had media
    // buffered, the first `seeking` and `seeked`; `report` adds the requests from the
    // browser's resource timing.
    join: { video: null, audio: null, seeking: null, seeked: null },
    url: o.url,
  };
  window.__glass = s;
  const shakaMode = o.player === 'shaka';
  const vjsMode = o.player === 'videojs';
  const nativeMode = o.player === 'native';
  const video = document.createElement('video');
  const supported = shakaMode ? shaka.Player.isBrowserSupported()
    : (vjsMode ? Boolean(window.MediaSource)
      : (nativeMode ? video.canPlayType('application/vnd.apple.mpegurl') !== '' : Hls.isSupported()));
  if (!supported) {
    s.fatalErrors.push(nativeMode ? 'native: this browser has no HLS player of its own' : `${o.player}: MediaSource not supported`);
    return;
  }
  video.muted = true;
  video.autoplay = true;
  video.playsInline = true;
  video.style.width = '640px';
  document.body.appendChild(video);
  const canvas = document.createElement('canvas');
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  // hls.js's log, kept in a ring of the last o.logLines lines when asked for (EDGE_PLAYER_LOG).
  const keep = (level) => (...a) => {
    s.log.push(`${(performance.now() - s.t0).toFixed(0)} ${level} ${a.map(String).join(' ')}`);
    if (s.log.length > o.logLines) s.log.shift();
  };
  const debug = o.logLines > 0
    ? { log: keep('log'), debug: keep('debug'), info: keep('info'), warn: keep('warn'), error: keep('error') }
    : false;
  // Pinned (--level): loading starts once the variant is chosen, so the first fragment is
  // already the pinned variant's (with autoStartLoad, hls.js had chosen its start level and
  // sometimes loaded a fragment of it before hls.loadLevel took effect: a play that showed
  // 720p frames first and switched). Otherwise hls.js's defaults.
  const hls = shakaMode || vjsMode || nativeMode ? null : new Hls({ lowLatencyMode: true, debug, autoStartLoad: !o.level });
  const sp = shakaMode ? new shaka.Player() : null;
  window.__hls = hls;
  window.__shaka = sp;
  window.__video = video;
  // The player's own latency estimate (s), read while measuring: hls.js's `latency`
  // (its live edge, extrapolated, minus the position), Shaka's `liveLatency` (the wall clock
  // minus the PDT of the frame on display), video.js's live tracker (its seekable end,
  // extrapolated, minus the position). Not glass to glass; kept beside it.
  const playerLatency = () => {
    let v = null;
    if (hls) v = hls.latency;
    else if (sp) v = sp.getStats().liveLatency;
    else if (window.__vjs && window.__vjs.liveTracker) v = window.__vjs.liveTracker.liveCurrentTime() - window.__vjs.currentTime();
    return Number.isFinite(v) ? v : null;
  };
  if (sp) {
    sp.configure({ streaming: { lowLatencyMode: true } });
    if (o.level) sp.configure({ abr: { enabled: false } });
    if (o.shakaConfig) sp.configure(o.shakaConfig);
    sp.addEventListener('error', (ev) => {
      const e = ev.detail || {};
      const what = `shaka ${e.category}/${e.code}`;
      // Severity 2 is CRITICAL: the player stopped.
      if (e.severity === 2) s.fatalErrors.push(what);
      else {
        s.nonFatalErrors += 1;
        s.nonFatalDetails[String(e.code)] = (s.nonFatalDetails[String(e.code)] || 0) + 1;
      }
    });
  }
  if (hls) hls.on(Hls.Events.ERROR, (_ev, data) => {
    const what = `${data.type}/${data.details}` + (data.response && data.response.code ? ` (HTTP ${data.response.code})` : '')
      + (data.error && data.error.message ? `: ${data.error.message}` : '') + (data.url ? ` ${data.url}` : '');
    if (data.fatal) s.fatalErrors.push(what);
    else {
      s.nonFatalErrors += 1;
      s.nonFatalDetails[data.details] = (s.nonFatalDetails[data.details] || 0) + 1;
      // The first few, with the fragment or part they concern, to tell what went wrong.
      if (s.nonFatalLog.length < 10) {
        const f = data.frag ? ` frag ${data.frag.type} sn ${data.frag.sn}` : '';
        const p = data.part ? ` part ${data.part.index}` : '';
        s.nonFatalLog.push(`${(performance.now() - s.t0).toFixed(0)} ms: ${what}${f}${p}`);
      }
    }
  });
  if (hls) hls.on(Hls.Events.MANIFEST_PARSED, () => {
    if (o.level) {
      const i = hls.levels.findIndex((l) => l.height === o.level);
      if (i < 0) s.fatalErrors.push(`no variant of height ${o.level} in ${hls.levels.map((l) => l.height).join(',')}`);
      else {
        hls.startLevel = i;
        hls.loadLevel = i;
      }
      hls.startLoad();
    }
    video.play().catch((e) => s.fatalErrors.push(`video.play(): ${e}`));
  });
  video.addEventListener('playing', () => {
    if (s.startWall !== null) return;
    console.log(`PLAYING ct=${video.currentTime} seekRange=${sp ? JSON.stringify(sp.seekRange()) : ''} buffered=${video.buffered.length ? video.buffered.start(0) + '-' + video.buffered.end(0) : ''}`);
    s.startWall = Date.now();
    s.firstPlayingMs = performance.now() - s.t0;
    s.measureFrom = s.startWall + o.warmup * 1000;
    s.measureTo = s.measureFrom + o.seconds * 1000;
    // Where hls.js joined: its own latency estimate and target, and what was buffered.
    const b = video.buffered;
    s.atPlaying = {
      currentTime: video.currentTime,
      buffered: b.length ? [b.start(0), b.end(b.length - 1)] : null,
      latency: hls && Number.isFinite(hls.latency) ? hls.latency : null,
      targetLatency: hls && Number.isFinite(hls.targetLatency) ? hls.targetLatency : null,
      liveSyncPosition: hls && Number.isFinite(hls.liveSyncPosition) ? hls.liveSyncPosition : null,
    };
  });
  // Buffered ranges of the media element and of each SourceBuffer (a stall on an empty buffer
  // is told apart from one on a hole by these).
  const ranges = (sb) => {
    try { return Array.from({ length: sb.buffered.length }, (_, i) => [sb.buffered.start(i), sb.buffered.end(i)]); } catch (_e) { return null; }
  };
  // Every SourceBuffer the player creates, by its MIME type (either player; hls.js's own
  // track names are not reachable in Shaka).
  const sourceBuffers = [];
  for (const MS of [window.MediaSource, window.ManagedMediaSource]) {
    if (!MS) continue;
    const addSourceBuffer = MS.prototype.addSourceBuffer;
    MS.prototype.addSourceBuffer = function add(mime) {
      const sb = addSourceBuffer.call(this, mime);
      sourceBuffers.push([mime.split(';')[0], sb]);
      // The first append that leaves media in the buffer (an init segment leaves none).
      const kind = mime.startsWith('audio') ? 'audio' : 'video';
      const first = () => {
        if (s.join[kind] !== null || !sb.buffered.length) return;
        s.join[kind] = performance.now() - s.t0;
        sb.removeEventListener('updateend', first);
      };
      sb.addEventListener('updateend', first);
      return sb;
    };
  }
  // With EDGE_GLASS_APPENDS, each append: its SourceBuffer's type, its size, the top-level
  // boxes it holds (an init segment appended before a part that does not start with a
  // keyframe makes the browser drop that part's frames), and the buffer after it.
  if (o.logAppends) {
    const boxes = (data) => {
      const u8 = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      const names = [];
      for (let at = 0; at + 8 <= u8.length && names.length < 8;) {
        const size = ((u8[at] << 24) >>> 0) + (u8[at + 1] << 16) + (u8[at + 2] << 8) + u8[at + 3];
        names.push(String.fromCharCode(u8[at + 4], u8[at + 5], u8[at + 6], u8[at + 7]));
        if (size < 8) break;
        at += size;
      }
      return names.join(',');
    };
    const append = SourceBuffer.prototype.appendBuffer;
    SourceBuffer.prototype.appendBuffer = function logged(data) {
      const entry = sourceBuffers.find(([, sb]) => sb === this);
      const what = entry ? entry[0] : '?';
      console.log(`append ${what} ${data.byteLength} B [${boxes(data)}]`);
      this.addEventListener('updateend', () => console.log(`appended ${what}: ${JSON.stringify(ranges(this))}`), { once: true });
      return append.call(this, data);
    };
  }
  const buffers = () => {
    const b = { media: ranges(video) };
    for (const [mime, sb] of sourceBuffers) b[mime] = ranges(sb);
    return b;
  };
  video.addEventListener('seeking', () => { if (s.join.seeking === null) s.join.seeking = performance.now() - s.t0; });
  video.addEventListener('seeked', () => { if (s.join.seeked === null) s.join.seeked = performance.now() - s.t0; });
  video.addEventListener('waiting', () => {
    // A second `waiting` before `playing` (video.js fires two) is the same stall.
    if (s.startWall === null || s.stalledSince !== null) return;
    const now = Date.now();
    s.stalls += 1;
    s.stallAt.push(Math.round((now - s.startWall) / 100) / 10);
    if (now >= s.measureFrom && now < s.measureTo) s.stallsMeasured += 1;
    if (s.stallLog.length < STALL_LOG_MAX) {
      const entry = { afterStartMs: now - s.startWall, currentTime: video.currentTime, buffers: buffers(), ms: null };
      // In the request log (EDGE_GLASS_REQUESTS) as well, on the same time line.
      console.log(`stall ${JSON.stringify(entry)}`);
      s.stallLog.push(entry);
    }
    s.stalledSince = now;
  });
  video.addEventListener('playing', () => {
    if (s.stalledSince === null) return;
    const last = s.stallLog[s.stallLog.length - 1];
    if (last && last.ms === null) last.ms = Date.now() - s.stalledSince;
    s.stalledSince = null;
  });
  // Media requests (parts, segments, init) that took longer than SLOW_LOAD_MS.
  if (hls) hls.on(Hls.Events.FRAG_LOADED, (_ev, data) => {
    const st = (data.part || data.frag).stats;
    if (!st || !st.loading) return;
    const ms = st.loading.end - st.loading.start;
    if (ms < SLOW_LOAD_MS || s.slowLoads.length >= SLOW_LOG_MAX) return;
    const url = (data.part || data.frag).url || '';
    s.slowLoads.push({
      url: url.split('/').slice(-2).join('/'), ms: Math.round(ms),
      firstByteMs: Math.round(st.loading.first - st.loading.start),
      atMs: Math.round(performance.now() - s.t0 - (s.firstPlayingMs || 0)),
    });
  });
  video.addEventListener('error', () => {
    const e = video.error;
    s.fatalErrors.push(`video element error ${e ? e.code : '?'}: ${e && e.message ? e.message : ''}`);
  });

  // Mean luma of the centre half of block `b` of the strip in `img` (canvas pixels).
  const lumaOf = (img, w, sx, sy, b) => {
    const cx = (b + 0.5) * o.block * sx;
    const cy = 0.5 * o.block * sy;
    const rx = Math.max(1, Math.floor(o.block * sx / 4));
    const ry = Math.max(1, Math.floor(o.block * sy / 4));
    let sum = 0;
    let n = 0;
    for (let y = Math.round(cy - ry); y <= Math.round(cy + ry); y += 1) {
      for (let x = Math.round(cx - rx); x <= Math.round(cx + rx); x += 1) {
        const p = (y * w + x) * 4;
        sum += 0.299 * img[p] + 0.587 * img[p + 1] + 0.114 * img[p + 2];
        n += 1;
      }
    }
    return sum / n;
  };

  // Reads the frame on display; `displayWall` is when it is (expected to be) on the glass.
  const readFrame = (displayWall) => {
    s.frames += 1;
    const vw = video.videoWidth;
    const vh = video.videoHeight;
    if (s.startWall === null) { s.beforePlaying += 1; return; }
    if (!vw || !vh) { s.rejected.noFrame += 1; return; }
    const sx = vw / o.sourceWidth;
    const sy = vh / o.sourceHeight;
    const w = Math.ceil((o.bits + 2) * o.block * sx);
    const h = Math.ceil(o.block * sy);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.drawImage(video, 0, 0, w, h, 0, 0, w, h);
    const img = ctx.getImageData(0, 0, w, h).data;
    const luma = Array.from({ length: o.bits + 2 }, (_, b) => lumaOf(img, w, sx, sy, b));
    // The first few rejected frames in full: why, when, and each block's luma.
    const reject = (why) => {
      s.rejected[why] += 1;
      if (s.rejectedLog.length < REJECTED_LOG_MAX) {
        s.rejectedLog.push({ why, afterStartMs: displayWall - s.startWall, size: `${vw}x${vh}`, luma: luma.map(Math.round) });
      }
    };
    const [white, black] = luma;
    if (white - black < 100) { reject('reference'); return; }
    const mid = (white + black) / 2;
    const margin = (white - black) / 4;
    let gray = 0;
    let ambiguous = 0;
    for (let k = 0; k < o.bits; k += 1) {
      const v = luma[2 + k];
      if (Math.abs(v - mid) < margin) ambiguous += 1;
      gray = gray * 2 + (v > mid ? 1 : 0);
    }
    // One block may be caught mid-change (the bit that changes at a tick); more is damage.
    if (ambiguous > 1) { reject('ambiguous'); return; }
    let code = gray;
    for (let shift = gray >>> 1; shift; shift >>>= 1) code ^= shift;
    if (code === s.lastCode) { s.duplicates += 1; return; }
    s.lastCode = code;
    const latency = (((displayWall % MOD) - code) % MOD + MOD) % MOD;
    // Negative (a capture time after the display) or beyond a minute: a misread strip.
    if (latency > 60000) { reject('range'); return; }
    if (displayWall < s.measureFrom) { s.warmupSamples += 1; return; }
    if (displayWall >= s.measureTo) return;
    if (s.samples.length === 0) s.targetLatencyAtStart = hls && Number.isFinite(hls.targetLatency) ? hls.targetLatency : null;
    s.samples.push([displayWall, Math.round(latency)]);
    // Read at most every OWN_LATENCY_EVERY_MS: Shaka's getStats() builds a whole report.
    if (displayWall - s.lastOwnAt >= OWN_LATENCY_EVERY_MS) {
      s.lastOwnAt = displayWall;
      const own = playerLatency();
      if (own !== null) s.ownLatency.push(own * 1000);
    }
    const size = `${vw}x${vh}`;
    s.videoSizes[size] = (s.videoSizes[size] || 0) + 1;
  };

  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    s.mode = 'requestVideoFrameCallback';
    const onFrame = (_now, meta) => {
      readFrame(Date.now() + Math.max(0, meta.expectedDisplayTime - performance.now()));
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  } else {
    s.mode = 'timer 4 ms';
    setInterval(() => { if (video.readyState >= 2) readFrame(Date.now()); }, 4);
  }
  if (hls) {
    hls.loadSource(o.url);
    hls.attachMedia(video);
    return;
  }
  if (nativeMode) {
    // The browser's own HLS player: what it does with the URL is all its own. Fetched in CORS
    // mode (the origin allows any), or the frames could not be read back from the canvas.
    video.crossOrigin = 'anonymous';
    video.src = o.url;
    video.play().catch((e) => s.fatalErrors.push(`video.play(): ${e}`));
    return;
  }
  if (vjsMode) {
    // video.js with its defaults but muted autoplay, no controls; VHS (its HLS engine) takes
    // HLS even where the browser has its own. With EDGE_PLAYER_LOG, its debug log.
    if (o.logLines > 0) videojs.log.level('debug');
    const vhsOptions = { overrideNative: true, ...(o.vhsConfig || {}) };
    const vp = videojs(video, { muted: true, autoplay: 'muted', controls: false, html5: { vhs: vhsOptions } });
    window.__vjs = vp;
    vp.on('error', () => {
      const e = vp.error();
      s.fatalErrors.push(`video.js ${e ? `${e.code}: ${e.message}` : 'error'}`);
    });
    vp.on('loadedmetadata', () => {
      if (!o.level) return;
      const vhs = vp.tech({ IWillNotUseThisInPlugins: true }).vhs;
      const reps = vhs ? vhs.representations() : [];
      const pin = reps.find((r) => r.height === o.level);
      if (!pin) s.fatalErrors.push(`no variant of height ${o.level} in ${reps.map((r) => r.height).join(',')}`);
      else reps.forEach((r) => r.enabled(r === pin));
    });
    vp.src({ src: o.url, type: 'application/x-mpegURL' });
    return;
  }
  sp.attach(video)
    .then(() => sp.load(o.url))
    .then(() => {
      if (o.level) {
        const t = sp.getVariantTracks().find((v) => v.height === o.level);
        if (!t) s.fatalErrors.push(`no variant of height ${o.level} in ${sp.getVariantTracks().map((v) => v.height).join(',')}`);
        else sp.selectVariantTrack(t, true);
      }
      return video.play();
    })
    .catch((e) => s.fatalErrors.push(`shaka load: ${e && e.code ? `${e.category}/${e.code}` : e}`));
}

// Runs inside the page: the final report.
function report() {
  const s = window.__glass;
  const hls = window.__hls;
  const video = window.__video;
  const sorted = (a) => a.slice().sort((x, y) => x - y);
  const rank = (a, q) => (a.length ? a[Math.max(0, Math.ceil(q * a.length) - 1)] : null);
  const lat = sorted(s.samples.map((p) => p[1]));
  const est = sorted(s.ownLatency);
  const q = video && video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  const sp = window.__shaka;
  const active = sp ? sp.getVariantTracks().find((t) => t.active) : null;
  const vp = window.__vjs;
  const vhs = vp ? vp.tech({ IWillNotUseThisInPlugins: true }).vhs : null;
  const reps = vhs ? vhs.representations() : [];
  const level = hls && hls.levels && hls.currentLevel >= 0 ? hls.levels[hls.currentLevel]
    : (active || (vhs && vhs.playlists.media() ? vhs.playlists.media().attributes.RESOLUTION : null));
  const playerName = hls ? 'hls.js' : (sp ? 'shaka' : (vp ? 'video.js' : 'chromium'));
  // The join from the browser's resource timing (the earliest entries are kept when its buffer
  // fills): the first media playlist's arrival (any playlist but the one played, which is the
  // multivariant), the first media request (part or segment, not the init segment), then the
  // page's own marks; each in ms after that playlist arrived.
  const res = performance.getEntriesByType('resource');
  const playedPath = new URL(s.url).pathname;
  const isPlaylist = (e) => e.name.includes('.m3u8') && new URL(e.name).pathname !== playedPath;
  const isMedia = (e) => /\.(m4s|mp4|ts|aac)(\?|$)/.test(e.name) && !/init\.mp4/.test(e.name);
  // The first response of each media playlist (video and audio), in the order they arrived.
  const firstOfEach = new Map();
  for (const e of res.filter(isPlaylist)) {
    const key = new URL(e.name).pathname;
    if (!firstOfEach.has(key) || e.responseEnd < firstOfEach.get(key).responseEnd) firstOfEach.set(key, e);
  }
  const playlists = [...firstOfEach.entries()].sort((a, b) => a[1].responseEnd - b[1].responseEnd);
  const firstMedia = res.find(isMedia);
  const from = playlists.length ? playlists[0][1].responseEnd - s.t0 : null;
  const rel = (t) => (t === null || from === null ? null : Math.round(t - from));
  const join = from === null ? null : {
    playlistMs: Math.round(from),
    playlists: playlists.map(([k, e]) => `${k.split('/').slice(-2).join('/')} ${rel(e.responseEnd - s.t0)}`),
    firstMediaRequest: firstMedia ? rel(firstMedia.startTime - s.t0) : null,
    videoBuffered: rel(s.join.video),
    audioBuffered: rel(s.join.audio),
    seeking: rel(s.join.seeking),
    seeked: rel(s.join.seeked),
    playing: rel(s.firstPlayingMs),
  };
  return {
    join,
    samples: lat.length,
    p50: rank(lat, 0.5),
    p90: rank(lat, 0.9),
    p99: rank(lat, 0.99),
    min: lat.length ? lat[0] : null,
    max: lat.length ? lat[lat.length - 1] : null,
    mean: lat.length ? Math.round(lat.reduce((x, y) => x + y, 0) / lat.length) : null,
    ownLatencyP50: est.length ? Math.round(rank(est, 0.5)) : null,
    warmupSamples: s.warmupSamples,
    frames: s.frames,
    duplicates: s.duplicates,
    rejected: s.rejected,
    rejectedLog: s.rejectedLog,
    frameClock: s.mode,
    stalls: s.stalls,
    stallsMeasured: s.stallsMeasured,
    stallAt: s.stallAt,
    stallLog: s.stallLog,
    slowLoads: s.slowLoads,
    beforePlaying: s.beforePlaying,
    targetLatencyAtStart: s.targetLatencyAtStart,
    targetLatency: hls && Number.isFinite(hls.targetLatency) ? hls.targetLatency : null,
    latency: hls && Number.isFinite(hls.latency) ? hls.latency : null,
    level: hls ? hls.currentLevel : null,
    // Chromium's own player says nothing of its variants: the size of the frame on display.
    levelHeight: level ? level.height : (!hls && !sp && !vp && video ? video.videoHeight : null),
    levels: hls && hls.levels ? hls.levels.map((l) => l.height) : (sp ? sp.getVariantTracks().map((t) => t.height) : reps.map((r) => r.height)),
    player: playerName,
    videoSizes: s.videoSizes,
    firstPlayingMs: s.firstPlayingMs,
    atPlaying: s.atPlaying,
    fatalErrors: s.fatalErrors,
    nonFatalErrors: s.nonFatalErrors,
    nonFatalDetails: s.nonFatalDetails,
    nonFatalLog: s.nonFatalLog,
    decodedFrames: q ? q.totalVideoFrames : null,
    droppedFrames: q ? q.droppedVideoFrames : null,
    lowLatencyMode: hls ? hls.config.lowLatencyMode : (sp ? sp.getConfiguration().streaming.lowLatencyMode : (vhs ? vhs.options_.llhls : null)),
    rawSamples: s.samples,
    log: vp && s.logLines > 0 ? window.videojs.log.history().slice(-s.logLines).map((l) => l.map(String).join(' ')) : s.log,
  };
}

// How long playback may take to start (join, first parts) before the run is given up.
const START_TIMEOUT_MS = 60_000;

let browser;
try {
  browser = await chromium.launch({ executablePath, headless: true, args, timeout: 60_000 });
} catch (e) {
  pageServer.close();
  console.error(`glass.mjs: cannot launch ${executablePath}: ${e && e.message ? e.message : e}`);
  process.exit(3);
}
let out;
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.error(`[page ${m.type()}] ${m.text()}`); });
  page.on('pageerror', (e) => console.error(`[page exception] ${e.message}`));
  const T0 = Date.now();
  if (process.env.EDGE_GLASS_REQUESTS) {
    page.on('request', (r) => { if (!r.url().startsWith(pageUrl)) console.error(`[req ${Date.now() - T0}] ${r.url().replace(/^http:\/\/[^/]+/, '')}`); });
    page.on('requestfinished', (r) => { if (!r.url().startsWith(pageUrl)) console.error(`[fin ${Date.now() - T0}] ${r.url().replace(/^http:\/\/[^/]+/, '')}`); });
    page.on('console', (m) => console.error(`[con ${Date.now() - T0}] ${m.text()}`));
  }
  // With EDGE_GLASS_PLAYLISTS=1, the body of every playlist the player receives, as received.
  if (process.env.EDGE_GLASS_PLAYLISTS) {
    page.on('response', async (r) => {
      if (!r.url().includes('.m3u8')) return;
      const body = await r.text().catch(() => '(no body)');
      console.error(`[m3u8 ${Date.now() - T0}] ${r.url().replace(/^http:\/\/[^/]+/, '')}\n${body}`);
    });
  }
  await page.goto(pageUrl);
  // With EDGE_GLASS_SHAKA_DEBUG=1 (and --player shaka), Shaka's debug build, logging at its
  // debug level into the page's console (printed with EDGE_GLASS_REQUESTS=1).
  const shakaDebug = opts.player === 'shaka' && process.env.EDGE_GLASS_SHAKA_DEBUG;
  const script = shakaDebug ? PLAYER_SCRIPTS.shaka.replace(/\.js$/, '.debug.js') : PLAYER_SCRIPTS[opts.player];
  if (script) await page.addScriptTag({ path: path.join(here, script) });
  if (shakaDebug) {
    await page.evaluate((v1) => shaka.log.setLevel(v1 ? shaka.log.Level.V1 : shaka.log.Level.DEBUG), shakaDebug === 'v1');
  }
  await page.evaluate(startGlass, opts);
  // Shaka's debug log also gets the segment index of each stream of the variant playing (first
  // position, start and end of each reference, its part count) whenever it changes. The
  // manifest is fetched once (Shaka updates it in place; each getManifest() logs a warning).
  if (shakaDebug) {
    await page.evaluate(() => {
      const last = {};
      let m = null;
      setInterval(() => {
        const sp = window.__shaka;
        const active = sp && sp.getVariantTracks().find((t) => t.active);
        if (!m && active) m = sp.getManifest();
        const v = m && active && m.variants.find((x) => x.id === active.id);
        if (!v) return;
        for (const st of [v.video, v.audio]) {
          const ix = st && st.segmentIndex;
          if (!ix) continue;
          const refs = [];
          const first = ix.getNumEvicted();
          for (let i = first; i < first + ix.getNumReferences(); i += 1) {
            const r = ix.get(i);
            if (r) refs.push(`${i}:${r.startTime.toFixed(4)}-${r.endTime.toFixed(4)}/${r.partialReferences.length}`);
          }
          const line = refs.join(' ');
          if (last[st.type] !== line) console.log(`index ${st.type} ${line}`);
          last[st.type] = line;
        }
      }, 5);
    });
  }
  // Until playback starts (or fails), then the warm-up and the measured window.
  const started = await page.waitForFunction(
    () => window.__glass.startWall !== null || window.__glass.fatalErrors.length > 0,
    null, { timeout: START_TIMEOUT_MS, polling: 100 },
  ).then(() => page.evaluate(() => window.__glass.startWall !== null)).catch(() => false);
  if (started) {
    const left = await page.evaluate(() => window.__glass.measureTo - Date.now());
    await page.waitForTimeout(Math.max(0, left) + 500);
  }
  out = await page.evaluate(report);
  out.started = started;
} catch (e) {
  console.error(`glass.mjs: page failed: ${e && e.stack ? e.stack : e}`);
  await browser.close().catch(() => {});
  process.exit(4);
}
await browser.close().catch(() => {});
pageServer.close();
if (opts.samples) writeFileSync(opts.samples, JSON.stringify(out.rawSamples));
delete out.rawSamples;
if (out.log.length) console.error(`${out.player} log (last ${out.log.length} lines):\n${out.log.join('\n')}`);
delete out.log;
console.log(JSON.stringify(out));
process.exit(0);
