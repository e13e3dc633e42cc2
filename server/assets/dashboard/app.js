// The edge dashboard: the admin token is exchanged for a session cookie (HttpOnly,
// SameSite=Strict) at POST /dashboard/session; from then on the page reads the same JSON API as
// `edge ctl` with that cookie, every POLL_MS, and sends actions with the session's CSRF token.
// Works against a balancer (the cluster) and against a node (that node). Everything shown is
// set as text (never parsed as HTML).
'use strict';

const POLL_MS = 2000;
// A kick with a block refuses the key this long (OBS reconnects within seconds).
const KICK_BLOCK_SECONDS = 300;

const state = { csrf: null, kind: null, info: null, timer: null, hls: null, preview: null, open: new Set() };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function badge(text) {
  return el('span', { class: `badge s-${text}` }, text);
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s % 60}s` : `${s}s`;
}

function bar(used, capacity) {
  const pct = capacity > 0 ? Math.min(100, (100 * used) / capacity) : 0;
  const fill = el('span');
  fill.style.width = `${pct.toFixed(1)}%`;
  return el('div', { class: 'bar', title: `${used} of ${capacity} milli-units used` }, fill,
    el('em', {}, `${(used / 1000).toFixed(1)} / ${(capacity / 1000).toFixed(1)} units`));
}

class Unauthorized extends Error {}

async function api(method, path) {
  const headers = {};
  if (method !== 'GET') headers['X-CSRF-Token'] = state.csrf;
  const r = await fetch(path, { method, headers, credentials: 'same-origin', cache: 'no-store' });
  if (r.status === 401) throw new Unauthorized('session ended');
  const isJson = (r.headers.get('content-type') || '').includes('json');
  const body = isJson ? await r.json() : await r.text();
  if (!r.ok) throw new Error(isJson ? JSON.stringify(body) : String(body).trim());
  return body;
}

function showLogin(message) {
  stopPolling();
  closePreview();
  state.csrf = null;
  $('#app-view').hidden = true;
  $('#logout').hidden = true;
  $('#login-view').hidden = false;
  $('#login-error').textContent = message || '';
  $('#who').textContent = '';
  $('#updated').textContent = '';
  $('#token').focus();
}

async function login(ev) {
  ev.preventDefault();
  const input = $('#token');
  const token = input.value;
  input.value = '';
  const r = await fetch('/dashboard/session', {
    method: 'POST', headers: { Authorization: `Bearer ${token}` }, credentials: 'same-origin',
  });
  if (!r.ok) {
    showLogin(r.status === 401 ? 'Wrong token.' : `Login failed: ${(await r.text()).trim()}`);
    return;
  }
  state.csrf = (await r.json()).csrf;
  await start();
}

async function logout() {
  try { await api('DELETE', '/dashboard/session'); } catch (_e) { /* gone already */ }
  showLogin('Logged out.');
}

async function start() {
  $('#login-view').hidden = true;
  $('#app-view').hidden = false;
  $('#logout').hidden = false;
  try {
    try {
      state.info = await api('GET', '/api/v1/balancer');
      state.kind = 'balancer';
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      state.info = await api('GET', '/api/v1/node');
      state.kind = 'node';
    }
  } catch (e) {
    showLogin(e instanceof Unauthorized ? 'Log in again.' : `Cannot read the API: ${e.message}`);
    return;
  }
  $('#nodes-title').textContent = state.kind === 'balancer' ? 'Nodes' : 'This node';
  await refresh();
  stopPolling();
  state.timer = setInterval(refresh, POLL_MS);
}

function stopPolling() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

async function act(method, path, what) {
  const note = $('#action-result');
  try {
    await api(method, path);
    note.textContent = `${what}: sent.`;
    note.className = 'notice';
  } catch (e) {
    if (e instanceof Unauthorized) { showLogin('Log in again.'); return; }
    note.textContent = `${what}: ${e.message}`;
    note.className = 'notice failed';
  }
  note.hidden = false;
  await refresh();
}

function nodeActions(id) {
  const base = state.kind === 'balancer' ? `/api/v1/nodes/${encodeURIComponent(id)}` : '/api/v1/node';
  const button = (action, label, confirmText, cls) => el('button', {
    type: 'button', class: cls, 'data-action': action, 'data-node': id,
    onclick: () => {
      if (confirmText && !window.confirm(confirmText)) return;
      act('POST', `${base}/${action}`, `${label} ${id}`);
    },
  }, label);
  return [
    button('cordon', 'Cordon'),
    button('uncordon', 'Uncordon'),
    button('drain', 'Drain', `Drain ${id}? It takes no new streams; live streams continue until they end.`, 'danger'),
  ];
}

// Each cell carries its column's name, shown before it when a narrow window stacks the rows.
function labelCells(table) {
  const names = Array.from(document.querySelectorAll(`${table} thead th`), (th) => th.textContent);
  for (const tr of document.querySelectorAll(`${table} tbody tr`)) {
    Array.from(tr.cells).forEach((td, i) => td.setAttribute('data-label', names[i] || ''));
  }
}

function renderNodes(nodes) {
  const body = $('#nodes tbody');
  body.replaceChildren(...nodes.map((n) => el('tr', { 'data-node': n.id },
    el('td', {}, n.id),
    el('td', {}, badge(n.status)),
    el('td', {}, bar(n.used_milli_units, n.capacity_milli_units)),
    el('td', {}, n.cpu === null || n.cpu === undefined ? '–' : `${Math.round(n.cpu * 100)}%`),
    el('td', {}, n.streams),
    el('td', {}, n.report_age_ms === undefined ? 'this node' : `${(n.report_age_ms / 1000).toFixed(1)} s ago`),
    el('td', {}, ...nodeActions(n.id)))));
  labelCells('#nodes');
}

function streamActions(s) {
  const path = `/api/v1/streams/${encodeURIComponent(s.playback_id)}`;
  return [
    el('button', { type: 'button', 'data-action': 'preview', onclick: () => openPreview(s.playback_id) }, 'Preview'),
    el('button', {
      type: 'button', class: 'danger', 'data-action': 'kick',
      onclick: () => {
        if (!window.confirm(`Kick ${s.playback_id}? The encoder is disconnected (it may reconnect at once).`)) return;
        act('DELETE', path, `Kick ${s.playback_id}`);
      },
    }, 'Kick'),
    el('button', {
      type: 'button', class: 'danger', 'data-action': 'kick-block',
      onclick: () => {
        if (!window.confirm(`Kick ${s.playback_id} and refuse its key for ${KICK_BLOCK_SECONDS / 60} minutes?`)) return;
        act('DELETE', `${path}?block_seconds=${KICK_BLOCK_SECONDS}`, `Kick and block ${s.playback_id}`);
      },
    }, `Kick + block ${KICK_BLOCK_SECONDS / 60} min`),
  ];
}

// A stream's figures beyond the table's columns (audio, timing, each transcoded rung), folded
// under its renditions; stays open across polls.
function figures(s) {
  const st = s.stats;
  if (!st) return null;
  const lines = [
    st.codec ? `video ${st.codec}` : null,
    st.audio_codec ? `audio ${st.audio_codec}${st.audio_kbps ? `, ${st.audio_kbps} kbit/s` : ''}` : null,
    st.av_drift_ms === undefined ? null : `A/V drift ${(st.av_drift_ms / 1000).toFixed(2)} s`,
    `last minute: ${st.late_frames ?? 0} late frames, ${st.timestamp_jumps ?? 0} jumps, ${st.timestamp_gaps ?? 0} gaps`,
    `last 5 s: ${st.dropped_frames ?? 0} frames dropped by the encoder`,
    ...(st.rungs || []).map((r) => `${r.name}: ${r.kbps} kbit/s, ${r.fps.toFixed(1)} fps, `
      + `${r.speed.toFixed(2)}× real time, ${r.lag_ms} ms behind`),
  ].filter(Boolean);
  const d = el('details', { class: 'figures' }, el('summary', {}, 'figures'),
    el('ul', {}, ...lines.map((l) => el('li', {}, l))));
  d.open = state.open.has(s.playback_id);
  d.addEventListener('toggle', () => {
    if (d.open) state.open.add(s.playback_id); else state.open.delete(s.playback_id);
  });
  return d;
}

function renderStreams(streams) {
  const now = Date.now();
  const body = $('#streams tbody');
  body.replaceChildren(...streams.map((s) => {
    const st = s.stats || {};
    const issues = (s.issues || []).map((i) => (typeof i === 'string' ? i : i.message));
    const health = el('td', { class: 'wrap' }, badge(s.health || 'unknown'),
      s.health_reason && !issues.length ? el('div', { class: 'muted' }, s.health_reason) : null,
      issues.length ? el('ul', { class: 'issues' }, ...issues.map((m) => el('li', {}, m))) : null);
    return el('tr', { 'data-stream': s.playback_id },
      el('td', {}, s.playback_id),
      el('td', {}, s.node_id || (state.info && state.info.id) || ''),
      el('td', {}, s.protocol),
      el('td', {}, s.client_addr || '–'),
      el('td', {}, s.started_unix_ms ? duration(now - s.started_unix_ms) : '–'),
      el('td', {}, st.video_kbps === undefined ? '–' : `${st.video_kbps} kbit/s`),
      el('td', {}, st.fps === undefined ? '–' : st.fps.toFixed(1)),
      el('td', {}, st.keyframe_interval_ms === undefined || st.keyframe_interval_ms === null
        ? '–' : `${(st.keyframe_interval_ms / 1000).toFixed(1)} s`),
      el('td', { class: 'wrap' }, [s.source, ...(s.renditions || [])].filter(Boolean).join(', ') || '–',
        figures(s)),
      health,
      el('td', {}, ...streamActions(s)));
  }));
  labelCells('#streams');
  $('#no-streams').hidden = streams.length > 0;
}

async function refresh() {
  try {
    if (state.kind === 'balancer') {
      const [info, nodes, streams] = await Promise.all([
        api('GET', '/api/v1/balancer'), api('GET', '/api/v1/nodes'), api('GET', '/api/v1/streams')]);
      state.info = info;
      $('#who').textContent = `balancer ${info.id}${info.ready ? '' : ' (draining)'}`;
      renderNodes(nodes);
      renderStreams(streams);
    } else {
      const [info, streams] = await Promise.all([api('GET', '/api/v1/node'), api('GET', '/api/v1/streams')]);
      state.info = info;
      $('#who').textContent = `node ${info.id}`;
      renderNodes([{ ...info, status: info.state }]);
      renderStreams(streams);
    }
    $('#updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e instanceof Unauthorized) showLogin('Session ended: log in again.');
    else $('#updated').textContent = `update failed: ${e.message}`;
  }
}

function playbackUrl(id) {
  const port = state.info && state.info.playback_port;
  const host = window.location.hostname.includes(':') ? `[${window.location.hostname}]` : window.location.hostname;
  return `${window.location.protocol}//${host}${port ? `:${port}` : ''}/live/${encodeURIComponent(id)}/index.m3u8`;
}

function openPreview(id) {
  closePreview();
  const video = $('#preview-video');
  const url = playbackUrl(id);
  $('#preview').hidden = false;
  $('#preview-id').textContent = id;
  $('#preview-status').textContent = `loading ${url}`;
  state.preview = id;
  if (window.Hls && window.Hls.isSupported()) {
    const hls = new window.Hls({ lowLatencyMode: true });
    state.hls = hls;
    hls.on(window.Hls.Events.ERROR, (_ev, data) => {
      if (data.fatal) $('#preview-status').textContent = `player error: ${data.type}/${data.details}`;
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = url;
  } else {
    $('#preview-status').textContent = 'this browser cannot play HLS';
    return;
  }
  video.play().catch(() => { /* autoplay policy: the controls remain */ });
  video.addEventListener('playing', () => { $('#preview-status').textContent = `playing ${url}`; }, { once: true });
}

function closePreview() {
  if (state.hls) { state.hls.destroy(); state.hls = null; }
  const video = $('#preview-video');
  if (video) { video.removeAttribute('src'); video.load(); }
  if ($('#preview')) $('#preview').hidden = true;
  state.preview = null;
}

async function boot() {
  $('#login-form').addEventListener('submit', login);
  $('#logout').addEventListener('click', logout);
  $('#preview-close').addEventListener('click', closePreview);
  const r = await fetch('/dashboard/session', { credentials: 'same-origin', cache: 'no-store' });
  if (r.ok) {
    state.csrf = (await r.json()).csrf;
    await start();
  } else {
    showLogin('');
  }
}

boot();
