'use strict';
/* tone web UI: plain ES2020, no dependencies.
 *
 * One page shell is served for /, /jobs/{id} and /workers; route() picks the page from
 * location.pathname. Each page fetches its JSON once (so a 401 or 404 is seen as a plain
 * HTTP status), renders, then follows the matching Server-Sent Events stream and patches
 * the DOM in place: no reloads.
 *
 * API data is untrusted (SQL text, error messages, worker ids): the DOM is built with
 * createElement / textContent / setAttribute only, never innerHTML.
 */

const FINAL_JOB_STATES = new Set(['succeeded', 'failed', 'cancelled']);
const JOB_FILTERS = ['', 'running', 'queued', 'succeeded', 'failed', 'cancelled'];
const PAGE_SIZE = 50;

/* ------------------------------------------------------------------ DOM helpers */

const SVG_NS = 'http://www.w3.org/2000/svg';

// Build an element. attrs: functions become listeners, `style` takes an object, the rest
// go through setAttribute. Children: nodes, or anything else as a text node.
function build(ns, tag, attrs, kids) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (typeof v === 'function') e.addEventListener(k.replace(/^on/, ''), v);
    else if (k === 'style') Object.assign(e.style, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat(Infinity)) {
    if (k != null && k !== false) e.append(k instanceof Node ? k : String(k));
  }
  return e;
}
const h = (tag, attrs, ...kids) => build(null, tag, attrs, kids);
const svg = (tag, attrs, ...kids) => build(SVG_NS, tag, attrs, kids);
const $ = (sel, root = document) => root.querySelector(sel);

// Only [a-z_] survives into class names built from API values.
const token = (s) => String(s || 'unknown').toLowerCase().replace(/[^a-z_]/g, '');

// Reconcile `container`'s children with `parts` ({key, sig, build}): a child whose
// signature (its data, serialized) did not change is left untouched, so open <details>,
// text selections and scroll positions survive the frequent live updates.
const signatures = new WeakMap(); // element -> the sig it was built from
function patch(container, parts) {
  const old = new Map([...container.children].map((c) => [c.dataset.key, c]));
  const want = parts.map((p) => {
    const prev = old.get(p.key);
    if (prev && signatures.get(prev) === p.sig) return prev;
    const fresh = p.build();
    fresh.dataset.key = p.key;
    signatures.set(fresh, p.sig);
    return fresh;
  });
  const keep = new Set(want);
  for (const c of [...container.children]) if (!keep.has(c)) c.remove();
  want.forEach((node, i) => {
    const at = container.children[i];
    if (at !== node) container.insertBefore(node, at || null);
  });
}

function render(node) {
  $('#main').replaceChildren(node);
}

/* ------------------------------------------------------------------ formatting */

const numberFormat = new Intl.NumberFormat('en-US');
const fmtNum = (n) => numberFormat.format(n || 0);

function fmtBytes(n) {
  n = n || 0;
  if (n < 1000) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB', 'PB'];
  let i = -1;
  do { n /= 1000; i++; } while (n >= 1000 && i < units.length - 1);
  return `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
}

function fmtMs(ms) {
  ms = ms || 0;
  if (ms < 10) return `${+ms.toFixed(ms % 1 ? 2 : 0)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const pad = (n) => String(Math.floor(n)).padStart(2, '0');
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m ${pad(s % 60)}s` : `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
}

function fmtTime(unixMs) {
  if (!unixMs) return '—';
  const d = new Date(unixMs);
  const p = (n) => String(n).padStart(2, '0');
  const time = `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${time}`;
}

// Operator metrics arrive raw: byte counts, nanosecond timers, timestamps or counts.
function fmtMetric(name, v) {
  if (/timestamp/.test(name)) return String(v);
  if (/bytes|mem_used/.test(name)) return fmtBytes(v);
  if (/time|elapsed/.test(name)) return fmtMs(v / 1e6);
  return fmtNum(v);
}

// Table header row; numeric columns are right-aligned like their cells.
const NUMERIC_COLUMNS = new Set(['Submitted', 'Duration', 'Tasks', 'Rows', 'Read', 'Shuffled', 'Bytes in', 'Bytes out',
  'Spilled', 'Output rows', 'Compute', 'Slots', 'Running', 'Done', 'Memory', 'Shuffle disk', 'Executors', 'Heartbeat']);
const headRow = (labels) => h('thead', {}, h('tr', {}, labels.map((c) => h('th', { class: NUMERIC_COLUMNS.has(c) ? 'num' : null }, c))));

const plural = (n, word) => `${fmtNum(n)} ${word}${n === 1 ? '' : 's'}`;

const oneLine = (s) => String(s || '').replace(/\s+/g, ' ').trim();

function badge(state, title) {
  return h('span', { class: `badge st-${token(state)}`, title: title || null }, state || '?');
}

function progress(done, total) {
  const pct = total ? Math.min(100, (100 * done) / total) : 0;
  return h('span', { class: 'progress', title: `${done} of ${total}` },
    h('span', { class: 'bar' }, h('span', { class: 'fill', style: { width: `${pct}%` } })),
    h('span', { class: 'num' }, `${done}/${total}`));
}

/* ------------------------------------------------------------------ HTTP and live streams */

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// Cookie auth only: the token never reaches JS. A 401 means "log in first".
async function getJSON(url) {
  const r = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (r.status === 401) {
    location.assign('/login');
    throw new HttpError(401, 'login required');
  }
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON: keep the status text */ }
  if (!r.ok) throw new HttpError(r.status, (body && body.error) || `${r.status} ${r.statusText}`);
  clearError();
  return body;
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  return q.toString();
};

let stream = null; // the page's one EventSource; replaced when the page changes its query
function setStream(es) {
  if (stream) stream.close();
  stream = es;
}

function setLive(state) {
  const el = $('#live');
  const text = { live: 'live', connecting: 'connecting…', ended: 'final', off: 'not live' };
  el.dataset.live = state;
  el.textContent = text[state] || state;
}

// Follow an SSE stream. EventSource retries by itself after a dropped connection, but
// gives up for good when the server answers with an error status (say 401 once the token
// is revoked); then `onGiveUp` runs a little later: it re-fetches the JSON (which sends
// us to /login on 401) and follows again if there is still something to follow.
function follow(url, eventName, onData, onGiveUp) {
  setLive('connecting');
  const es = new EventSource(url, { withCredentials: true });
  es.addEventListener(eventName, (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch (_) { return; }
    setLive('live');
    clearError();
    onData(data);
  });
  es.addEventListener('error', () => {
    if (es.readyState !== EventSource.CLOSED) return setLive('connecting');
    setLive('off');
    if (stream === es) setTimeout(() => stream === es && onGiveUp(), 3000);
  });
  return es;
}

// Show a failed load above the page, and try again later unless retrying cannot help
// (401: on the way to /login; 404: the thing does not exist).
function failed(e, retry) {
  if (e.status === 401) return;
  const main = $('#main');
  const banner = $('.banner.transient', main) || main.insertBefore(h('div', { class: 'banner transient' }), main.firstChild);
  banner.textContent = `Could not load data: ${e.message}`;
  if (retry && e.status !== 404) setTimeout(retry, 5000);
}

function clearError() {
  const banner = $('#main > .banner.transient');
  if (banner) banner.remove();
}

/* ------------------------------------------------------------------ jobs page */

function jobsPage() {
  document.title = 'Jobs · tone';
  const filters = h('nav', { class: 'filters', 'aria-label': 'state filter' });
  const info = h('span', { class: 'muted' });
  const tbody = h('tbody');
  const newer = h('button', { type: 'button', onclick: () => go(view.state, view.newer[view.newer.length - 1] || 0, view.newer.slice(0, -1)) }, '← Newer');
  const older = h('button', { type: 'button', onclick: () => go(view.state, nextBefore, [...view.newer, view.before]) }, 'Older →');
  const head = ['ID', 'Name', 'State', 'Submitted', 'Duration', 'Stages', 'Tasks', 'Rows', 'Read', 'Shuffled'];
  render(h('section', {},
    h('div', { class: 'page-head' }, h('h1', {}, 'Jobs'), filters, info),
    h('div', { class: 'table-wrap' }, h('table', { class: 'grid jobs' },
      headRow(head), tbody)),
    h('div', { class: 'pager' }, newer, older)));

  let view = null;
  let nextBefore = 0;

  // The filter and the page cursor live in the URL (?state=&before=); the stack of
  // newer cursors lives in history.state so Back/Forward work too.
  function readView() {
    const q = new URLSearchParams(location.search);
    const state = JOB_FILTERS.includes(q.get('state')) ? q.get('state') : '';
    return { state, before: Number(q.get('before')) || 0, newer: (history.state && history.state.newer) || [] };
  }
  function go(state, before, newerStack) {
    const q = query({ state, before });
    history.pushState({ newer: newerStack }, '', q ? `/?${q}` : '/');
    load();
  }

  async function load() {
    const v = (view = readView());
    renderFilters();
    setStream(null);
    const params = { state: v.state, limit: PAGE_SIZE };
    let data;
    try {
      data = await getJSON(`/api/jobs?${query({ ...params, before: v.before })}`);
    } catch (e) {
      return failed(e, () => view === v && load());
    }
    if (view !== v) return; // the user moved on while we waited
    show(data);
    // The stream has no `before`: on an older page it only tells us when to re-fetch.
    const onData = (data) => (view.before ? refetch() : show(data));
    setStream(follow(`/api/jobs/events?${query(params)}`, 'jobs', onData, load));
  }

  let fetching = false;
  let again = false;
  async function refetch() {
    if (fetching) { again = true; return; }
    fetching = true;
    const v = view;
    try {
      const data = await getJSON(`/api/jobs?${query({ state: v.state, limit: PAGE_SIZE, before: v.before })}`);
      if (view === v) show(data);
    } catch (e) { failed(e); }
    fetching = false;
    if (again) { again = false; refetch(); }
  }

  function show(data) {
    const jobs = data.jobs || [];
    nextBefore = data.next_before || 0;
    const parts = jobs.map((j) => ({ key: j.id, sig: JSON.stringify(j), build: () => jobRow(j) }));
    if (!jobs.length) {
      parts.push({ key: '', sig: '', build: () => h('tr', {}, h('td', { colspan: head.length, class: 'muted' }, 'No jobs.')) });
    }
    patch(tbody, parts);
    info.textContent = `${jobs.length} shown · ${fmtNum(data.total)} total`;
    older.disabled = !nextBefore || jobs.length < PAGE_SIZE;
    newer.disabled = !view.before;
  }

  function renderFilters() {
    filters.replaceChildren(...JOB_FILTERS.map((st) => h('a', {
      href: st ? `/?state=${st}` : '/',
      class: st === view.state ? 'chip active' : 'chip',
      onclick: (ev) => { ev.preventDefault(); go(st, 0, []); },
    }, st || 'all')));
  }

  window.addEventListener('popstate', load);
  load();
}

function jobRow(j) {
  return h('tr', { class: 'job-row', 'data-job': j.id, 'data-state': j.state },
    h('td', { class: 'mono' }, h('a', { href: `/jobs/${encodeURIComponent(j.id)}` }, j.id)),
    h('td', { class: 'name', title: j.name },
      h('span', { class: 'kind' }, j.kind === 'program' ? 'prog' : 'sql'), oneLine(j.name)),
    h('td', {}, badge(j.state, j.error)),
    h('td', { class: 'num' }, fmtTime(j.submitted_unix_ms)),
    h('td', { class: 'num' }, fmtMs(j.duration_ms)),
    h('td', {}, progress(j.stages_done, j.stages_total)),
    h('td', { class: 'num', title: `${j.tasks_running} running` },
      `${fmtNum(j.tasks_done)}/${fmtNum(j.tasks_total)}`, j.tasks_running ? h('span', { class: 'running-n' }, ` · ${j.tasks_running} running`) : null),
    h('td', { class: 'num' }, fmtNum(j.rows)),
    h('td', { class: 'num' }, fmtBytes(j.bytes_read)),
    h('td', { class: 'num' }, fmtBytes(j.bytes_shuffled)));
}

/* ------------------------------------------------------------------ job page */

function jobPage(id) {
  const url = `/api/jobs/${encodeURIComponent(id)}`;
  const root = h('div', { class: 'job' });
  render(root);
  const hashStage = /^#stage-(\d+)$/.exec(location.hash);
  let selected = hashStage ? Number(hashStage[1]) : null;
  let scrolledToHash = false;
  const openDetails = new Set(); // data-open-key of the <details> the user expanded

  document.addEventListener('toggle', (ev) => {
    const key = ev.target.dataset && ev.target.dataset.openKey;
    if (key) ev.target.open ? openDetails.add(key) : openDetails.delete(key);
  }, true);

  async function start() {
    let job;
    try {
      job = await getJSON(url);
    } catch (e) {
      if (e.status === 404) return render(h('div', { class: 'banner' }, `No job with id ${id}.`));
      return failed(e, start);
    }
    update(job);
    if (FINAL_JOB_STATES.has(job.state)) return setLive('ended');
    setStream(follow(`${url}/events`, 'job', (j) => {
      update(j);
      // The server ends the stream after the final state; EventSource would reconnect.
      if (FINAL_JOB_STATES.has(j.state)) { setStream(null); setLive('ended'); }
    }, start));
  }

  function update(raw) {
    const job = normalizeJob(raw);
    document.title = `${job.id} · ${job.state} · tone`;
    const now = jobNow(job);
    const summary = { ...job, name: undefined, error: undefined, stages: undefined, failures: undefined };
    const parts = [
      { key: 'head', sig: JSON.stringify(summary), build: () => jobHeader(job) },
      // Apart from the ever-changing numbers, so the SQL text can be selected while it runs.
      { key: 'query', sig: JSON.stringify([job.name, job.error]), build: () => queryPanel(job) },
      { key: 'dag', sig: JSON.stringify(job.stages.map(dagSig)), build: () => dagPanel(job.stages, selectStage) },
    ];
    if (job.failures.length) {
      parts.push({ key: 'failures', sig: JSON.stringify(job.failures), build: () => failuresPanel(job.failures) });
    }
    for (const s of job.stages) {
      const live = s.tasks.some((t) => !t.ended_ms);
      parts.push({ key: `stage-${s.id}`, sig: JSON.stringify(s) + (live ? now : ''), build: () => stagePanel(s, now, openDetails) });
    }
    patch(root, parts);
    applySelection();
    if (!scrolledToHash && selected != null) {
      scrolledToHash = true;
      const sec = document.getElementById(`stage-${selected}`);
      if (sec) sec.scrollIntoView();
    }
  }

  function selectStage(stageId) {
    selected = stageId;
    history.replaceState(history.state, '', `#stage-${stageId}`);
    applySelection();
    const sec = document.getElementById(`stage-${stageId}`);
    if (sec) sec.scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  // Selection is applied after each patch so it survives rebuilt parts.
  function applySelection() {
    for (const el of root.querySelectorAll('[data-stage]')) {
      el.classList.toggle('selected', Number(el.dataset.stage) === selected);
    }
  }

  start();
}

// Tolerate a server that leaves out empty lists.
function normalizeJob(job) {
  const stages = (job.stages || []).map((s) => ({
    ...s, inputs: s.inputs || [], plan: s.plan || [], operators: s.operators || [], tasks: s.tasks || [],
  }));
  return { ...job, stages, failures: job.failures || [] };
}

// "Now" on the job's clock (ms since submission), taken from the server's numbers so a
// skewed browser clock cannot stretch the timelines of running tasks.
function jobNow(job) {
  let now = job.duration_ms || 0;
  for (const s of job.stages) {
    for (const t of s.tasks) now = Math.max(now, t.started_ms, t.ended_ms);
  }
  return now;
}

function jobHeader(job) {
  const fact = (label, value) => h('div', { class: 'fact' }, h('span', { class: 'label' }, label), h('span', { class: 'value' }, value));
  return h('section', { class: 'panel job-head' },
    h('div', { class: 'title-row' },
      h('h1', { class: 'mono' }, job.id),
      h('span', { id: 'job-state', class: `badge big st-${token(job.state)}`, 'data-state': job.state }, job.state),
      h('span', { class: 'kind' }, job.kind === 'program' ? 'program' : 'sql')),
    h('div', { class: 'facts' },
      fact('Submitted', fmtTime(job.submitted_unix_ms)),
      fact('Duration', fmtMs(job.duration_ms)),
      fact('Stages', progress(job.stages_done, job.stages_total)),
      fact('Tasks', `${fmtNum(job.tasks_done)}/${fmtNum(job.tasks_total)}${job.tasks_running ? ` (${job.tasks_running} running)` : ''}`),
      fact('Rows', fmtNum(job.rows)),
      fact('Bytes read', fmtBytes(job.bytes_read)),
      fact('Bytes shuffled', fmtBytes(job.bytes_shuffled))));
}

function queryPanel(job) {
  return h('section', { class: 'panel job-query' },
    h('pre', { class: 'sql' }, job.name),
    job.error ? h('div', { id: 'job-error', class: 'error-box' }, h('strong', {}, 'Error: '), job.error) : null);
}

function failuresPanel(failures) {
  return h('section', { class: 'panel' },
    h('h2', {}, `Failed attempts (${failures.length})`),
    h('ul', { class: 'failures' }, failures.map((f) => h('li', {},
      h('span', { class: 'mono' }, `stage ${f.stage} · partition ${f.partition} · attempt ${f.attempt} · ${f.worker || '?'}`),
      ' ', badge(f.kind), h('pre', { class: 'message' }, f.message)))));
}

/* ---------- stage DAG */

// Only what the DAG draws, so task-level churn does not rebuild the SVG.
const dagSig = (s) => [s.id, s.state, s.partitions, s.tasks_done, s.tasks_total, s.inputs, !s.output];

const NODE_W = 160, NODE_H = 64, DUMMY_H = 8, GAP_X = 136, GAP_Y = 24, PAD = 14;

// Layered (Sugiyama-style) layout, left to right:
//  1. a stage's column is its rank, the longest path from a source stage, so every edge
//     points right;
//  2. an edge spanning several columns gets a thin invisible waypoint in each column it
//     crosses, so it is routed between the stages there instead of through them;
//  3. each column is ordered by the mean position of its neighbours (barycenter sweeps
//     left-right, right-left, left-right), which removes most crossings;
//  4. columns are stacked top-down and centred vertically.
function dagLayout(stages) {
  const byId = new Map(stages.map((s) => [s.id, s]));
  const rank = new Map();
  const visiting = new Set();
  const rankOf = (id) => {
    if (rank.has(id)) return rank.get(id);
    if (visiting.has(id)) return 0; // a cycle would be a server bug: do not recurse forever
    visiting.add(id);
    const r = byId.get(id).inputs.filter((i) => byId.has(i.stage))
      .reduce((m, i) => Math.max(m, rankOf(i.stage) + 1), 0);
    visiting.delete(id);
    rank.set(id, r);
    return r;
  };
  stages.forEach((s) => rankOf(s.id));

  const cols = Array.from({ length: Math.max(0, ...rank.values()) + 1 }, () => []);
  const item = (rk, h, stage) => {
    const it = { rank: rk, h, stage, preds: [], succs: [] };
    cols[rk].push(it);
    return it;
  };
  const nodes = new Map([...stages].sort((a, b) => a.id - b.id).map((s) => [s.id, item(rank.get(s.id), NODE_H, s)]));
  const edges = [];
  for (const s of stages) {
    for (const input of s.inputs) {
      if (!byId.has(input.stage) || rank.get(input.stage) >= rank.get(s.id)) continue;
      const chain = [nodes.get(input.stage)];
      for (let r = rank.get(input.stage) + 1; r < rank.get(s.id); r++) chain.push(item(r, DUMMY_H, null));
      chain.push(nodes.get(s.id));
      for (let k = 1; k < chain.length; k++) {
        chain[k - 1].succs.push(chain[k]);
        chain[k].preds.push(chain[k - 1]);
      }
      edges.push({ from: input.stage, to: s.id, input, chain });
    }
  }

  const order = new Map();
  const number = (col) => col.forEach((it, i) => order.set(it, i));
  cols.forEach(number);
  const sweep = (col, side) => {
    const mean = (it) => (it[side].length ? it[side].reduce((a, n) => a + order.get(n), 0) / it[side].length : order.get(it));
    const m = new Map(col.map((it) => [it, mean(it)]));
    col.sort((a, b) => m.get(a) - m.get(b)); // stable: ties keep their order
    number(col);
  };
  for (let r = 1; r < cols.length; r++) sweep(cols[r], 'preds');
  for (let r = cols.length - 2; r >= 0; r--) sweep(cols[r], 'succs');
  for (let r = 1; r < cols.length; r++) sweep(cols[r], 'preds');

  const colHeight = (col) => col.reduce((a, it) => a + it.h, 0) + GAP_Y * Math.max(0, col.length - 1);
  const tallest = Math.max(NODE_H, ...cols.map(colHeight));
  cols.forEach((col, r) => {
    let y = PAD + (tallest - colHeight(col)) / 2;
    for (const it of col) {
      it.x = PAD + r * (NODE_W + GAP_X);
      it.y = y;
      y += it.h + GAP_Y;
    }
  });
  return {
    nodes,
    edges,
    width: 2 * PAD + cols.length * NODE_W + (cols.length - 1) * GAP_X,
    height: 2 * PAD + tallest,
  };
}

// Points of each edge: it leaves its source's right side and enters its consumer's left
// side (several edges on one side are spread over its height, ordered by where their
// other end lies), crossing each waypoint's column straight.
function edgePoints(nodes, edges) {
  const mid = (it) => it.y + it.h / 2;
  const spread = (node, list, next, port) => {
    list.sort((a, b) => mid(next(a)) - mid(next(b)));
    list.forEach((e, k) => { e[port] = node.y + (NODE_H * (k + 1)) / (list.length + 1); });
  };
  for (const [id, node] of nodes) {
    spread(node, edges.filter((e) => e.from === id), (e) => e.chain[1], 'y1');
    spread(node, edges.filter((e) => e.to === id), (e) => e.chain[e.chain.length - 2], 'y2');
  }
  for (const e of edges) {
    const first = e.chain[0];
    const last = e.chain[e.chain.length - 1];
    e.points = [[first.x + NODE_W, e.y1]];
    for (const w of e.chain.slice(1, -1)) e.points.push([w.x, mid(w)], [w.x + NODE_W, mid(w)]);
    e.points.push([last.x, e.y2]);
  }
}

// Between columns a cubic with horizontal tangents; across a waypoint's column a line.
function edgePath(points) {
  let d = `M${points[0]}`;
  for (let k = 1; k < points.length; k++) {
    const [x0, y0] = points[k - 1];
    const [x1, y1] = points[k];
    if (k % 2 === 0) { d += ` L${x1},${y1}`; continue; }
    const dx = (x1 - x0) / 2;
    d += ` C${x0 + dx},${y0} ${x1 - dx},${y1} ${x1 - (k === points.length - 1 ? 2 : 0)},${y1}`;
  }
  return d;
}

function dagPanel(stages, onSelect) {
  const { nodes, edges, width, height } = dagLayout(stages);
  edgePoints(nodes, edges);
  const edgeEls = edges.map((e) => {
    const bytes = fmtBytes(e.input.bytes);
    const partitioning = (nodes.get(e.from).stage.output || {}).partitioning;
    // The label sits in the last gap, next to the consumer: no stage is ever under it.
    // The midpoint of that symmetric cubic is the midpoint of its end points.
    const [[xa, ya], [xb, yb]] = e.points.slice(-2);
    return svg('g', { class: 'edge', 'data-from': e.from, 'data-to': e.to },
      svg('title', {}, `Stage ${e.from} → Stage ${e.to}: ${e.input.exchange} exchange, ${bytes}${partitioning ? `\n${partitioning}` : ''}`),
      svg('path', { d: edgePath(e.points), 'marker-end': 'url(#dag-arrow)' }),
      svg('text', { x: (xa + xb) / 2, y: (ya + yb) / 2 - 4, 'text-anchor': 'middle', class: 'edge-label' }, `${e.input.exchange} · ${bytes}`));
  });
  const nodeEls = [...nodes.values()].map((n) => stageNode(n.stage, n, onSelect));
  // Large DAGs shrink to the page down to 70 %, then scroll sideways.
  return h('section', { class: 'panel' },
    h('h2', {}, 'Stage DAG'),
    h('div', { class: 'dag-wrap' },
      svg('svg', {
        class: 'dag', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'stage graph',
        style: { minWidth: `${Math.round(width * 0.7)}px` },
      },
      svg('defs', {}, svg('marker', { id: 'dag-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
        svg('path', { d: 'M0,0 L10,5 L0,10 z' }))),
      edgeEls, nodeEls)));
}

function stageNode(s, p, onSelect) {
  const pct = s.tasks_total ? s.tasks_done / s.tasks_total : 0;
  return svg('g', {
    class: `stage-node st-${token(s.state)}${s.output ? '' : ' final'}`,
    'data-stage': s.id,
    transform: `translate(${p.x},${p.y})`,
    tabindex: 0,
    role: 'button',
    onclick: () => onSelect(s.id),
    onkeydown: (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); onSelect(s.id); } },
  },
  svg('title', {}, `Stage ${s.id} (${s.state})${s.output ? '' : ', final stage'}: click for details`),
  svg('rect', { class: 'box', width: NODE_W, height: NODE_H, rx: 6 }),
  svg('text', { x: 10, y: 18, class: 'title' }, `Stage ${s.id}`),
  svg('text', { x: NODE_W - 10, y: 18, class: 'state', 'text-anchor': 'end' }, s.output ? s.state : `${s.state} · final`),
  svg('text', { x: 10, y: 35 }, plural(s.partitions, 'partition')),
  svg('text', { x: 10, y: 50 }, `tasks ${s.tasks_done}/${s.tasks_total}`),
  svg('rect', { class: 'track', x: 10, y: 55, width: NODE_W - 20, height: 4, rx: 2 }),
  svg('rect', { class: 'fill', x: 10, y: 55, width: (NODE_W - 20) * pct, height: 4, rx: 2 }));
}

/* ---------- one stage: facts, plan with metrics, tasks, timeline */

function stagePanel(s, now, openDetails) {
  const ran = s.started_ms || s.ended_ms || s.tasks.length;
  const dur = ran ? (s.ended_ms || now) - s.started_ms : 0;
  const inputs = s.inputs.map((i) => `stage ${i.stage} (${i.exchange}, ${fmtBytes(i.bytes)})`).join(', ');
  return h('section', { class: 'panel stage', id: `stage-${s.id}`, 'data-stage': s.id },
    h('div', { class: 'title-row' }, h('h2', {}, `Stage ${s.id}`), badge(s.state),
      h('span', { class: 'muted' },
        `${plural(s.partitions, 'partition')} · tasks ${s.tasks_done}/${s.tasks_total} · ${fmtNum(s.rows)} rows · ` +
        `${fmtBytes(s.bytes_written)} written · ${fmtBytes(s.spilled_bytes)} spilled · ${ran ? fmtMs(dur) : 'not started'}`)),
    h('p', { class: 'io' },
      h('span', {}, 'Inputs: ', inputs || 'none (reads sources)'),
      h('span', { class: 'mono' }, 'Output: ', s.output ? `${s.output.exchange} — ${s.output.partitioning}` : 'job result (final stage)')),
    h('h3', {}, 'Plan and operator metrics'), planTable(s, openDetails),
    s.tasks.length ? [
      h('h3', {}, `Tasks (${plural(s.tasks.length, 'attempt')})`), taskTable(s, now),
      h('h3', {}, 'Task timeline by worker (time since job submission)'), timeline(s, now),
    ] : h('p', { class: 'muted' }, 'No task has started yet.'));
}

// EXPLAIN ANALYZE-style: the plan tree with each operator's metrics, summed over the
// stage's succeeded tasks (operators[i] belongs to plan[i]).
function planTable(s, openDetails) {
  const ops = s.operators || [];
  const rows = (s.plan || []).map((p, i) => {
    const op = ops[i];
    const detail = String(p.detail || '');
    const rest = detail.startsWith(p.name) ? detail.slice(p.name.length).replace(/^:\s*/, '') : detail;
    const metrics = Object.entries((op && op.metrics) || {});
    const key = `${s.id}:${i}`;
    return h('tr', {},
      h('td', { class: 'op', style: { paddingLeft: `${0.5 + 1.3 * p.depth}em` }, title: detail },
        p.depth ? h('span', { class: 'tree' }, '└ ') : null, h('span', { class: 'op-name' }, p.name),
        rest ? h('span', { class: 'op-detail' }, ` ${rest}`) : null),
      h('td', { class: 'num' }, op ? fmtNum(op.output_rows) : '—'),
      h('td', { class: 'num' }, op ? fmtMs(op.elapsed_compute_ms) : '—'),
      h('td', { class: 'num' }, op ? fmtBytes(op.spilled_bytes) : '—'),
      h('td', { class: 'metrics-cell' }, metrics.length ? h('details', { 'data-open-key': key, open: openDetails.has(key) },
        h('summary', {}, `${metrics.length} metrics`),
        h('dl', { class: 'metrics' }, metrics.map(([k, v]) => [h('dt', {}, k), h('dd', {}, fmtMetric(k, v))]))) : null));
  });
  return h('div', { class: 'table-wrap' }, h('table', { class: 'grid plan' },
    headRow(['Operator', 'Output rows', 'Compute', 'Spilled', '']),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No plan.')))));
}

function taskTable(s, now) {
  const tasks = [...s.tasks].sort((a, b) => a.partition - b.partition || a.attempt - b.attempt);
  const head = ['Partition', 'Attempt', 'Worker', 'State', 'Duration', 'Rows', 'Bytes in', 'Bytes out', 'Spilled', 'Error'];
  const rows = tasks.map((t) => h('tr', { class: 'task-row', 'data-state': t.state, 'data-partition': t.partition, 'data-attempt': t.attempt },
    h('td', { class: 'mono' }, t.partition),
    h('td', { class: 'mono' }, t.attempt),
    h('td', { class: 'mono' }, t.worker || '—'),
    h('td', {}, badge(t.state)),
    h('td', { class: 'num' }, fmtMs(t.ended_ms ? t.duration_ms : Math.max(t.duration_ms, now - t.started_ms))),
    h('td', { class: 'num' }, fmtNum(t.rows)),
    h('td', { class: 'num' }, fmtBytes(t.bytes_in)),
    h('td', { class: 'num' }, fmtBytes(t.bytes_out)),
    h('td', { class: 'num' }, fmtBytes(t.spilled_bytes)),
    h('td', { class: 'error', title: t.error || null }, t.error || '')));
  return h('div', { class: 'table-wrap' }, h('table', { class: 'grid tasks' }, headRow(head), h('tbody', {}, rows)));
}

// One lane per worker; attempts that overlap in time (a worker has several slots) are
// stacked in sub-rows of the lane, placed greedily in start order.
function timeline(s, now) {
  // Sized to the page once per build: SVG text must not scale with the drawing.
  const W = Math.max(600, Math.min(1400, $('#main').clientWidth - 70)), LABEL = 130, BAR = 10, ROW = 13, AXIS = 18;
  const end = (t) => Math.max(t.ended_ms || now, t.started_ms + 1);
  const t0 = Math.min(...s.tasks.map((t) => t.started_ms));
  const t1 = Math.max(...s.tasks.map(end));
  const x = (ms) => LABEL + ((ms - t0) / Math.max(1, t1 - t0)) * (W - LABEL - 12);

  const lanes = new Map(); // worker -> per sub-row: the end of its last bar
  const rowOf = new Map(); // task -> its sub-row
  for (const t of [...s.tasks].sort((a, b) => a.started_ms - b.started_ms)) {
    const w = t.worker || '?';
    if (!lanes.has(w)) lanes.set(w, []);
    const rows = lanes.get(w);
    let r = rows.findIndex((busyUntil) => busyUntil <= t.started_ms);
    if (r < 0) r = rows.push(0) - 1;
    rows[r] = end(t);
    rowOf.set(t, r);
  }
  const names = [...lanes.keys()].sort();
  let y = 4;
  const laneTop = new Map(names.map((n) => {
    const top = y;
    y += lanes.get(n).length * ROW + 8;
    return [n, top];
  }));
  const height = y + AXIS;

  const ticks = [0, 0.25, 0.5, 0.75, 1];
  return h('div', { class: 'timeline-wrap' }, svg('svg', { class: 'timeline', width: W, height, viewBox: `0 0 ${W} ${height}` },
    names.map((n, i) => svg('g', { class: 'lane' },
      svg('rect', { class: i % 2 ? 'lane-bg odd' : 'lane-bg', x: 0, y: laneTop.get(n) - 4, width: W, height: lanes.get(n).length * ROW + 8 }),
      svg('text', { x: 6, y: laneTop.get(n) + 9, class: 'lane-label' }, n))),
    ticks.map((f) => {
      const t = t0 + f * (t1 - t0);
      return svg('g', { class: 'tick' },
        svg('line', { x1: x(t), x2: x(t), y1: 0, y2: y }),
        svg('text', { x: x(t), y: y + 13, 'text-anchor': f === 1 ? 'end' : 'middle' }, fmtMs(t)));
    }),
    s.tasks.map((t) => svg('rect', {
      class: `bar st-${token(t.state)}`,
      x: x(t.started_ms), y: laneTop.get(t.worker || '?') + rowOf.get(t) * ROW,
      width: Math.max(2, x(end(t)) - x(t.started_ms)), height: BAR, rx: 2,
    }, svg('title', {}, `partition ${t.partition} attempt ${t.attempt} · ${t.state} · ${fmtMs(t.started_ms)} → ${t.ended_ms ? fmtMs(t.ended_ms) : 'now'}`)))));
}

/* ------------------------------------------------------------------ workers page */

function workersPage() {
  document.title = 'Workers · tone';
  const tbody = h('tbody');
  const info = h('span', { class: 'muted' });
  const head = ['ID', 'Address', 'State', 'Slots', 'Running', 'Done', 'Memory', 'Shuffle disk', 'Spilled', 'Executors', 'Heartbeat', 'Excluded from'];
  render(h('section', {},
    h('div', { class: 'page-head' }, h('h1', {}, 'Workers'), info),
    h('div', { class: 'table-wrap' }, h('table', { class: 'grid workers' },
      headRow(head), tbody))));

  function show(data) {
    const workers = [...(data.workers || [])].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const parts = workers.map((w) => ({ key: w.id, sig: JSON.stringify(w), build: () => workerRow(w) }));
    if (!workers.length) parts.push({ key: '', sig: '', build: () => h('tr', {}, h('td', { colspan: head.length, class: 'muted' }, 'No workers.')) });
    patch(tbody, parts);
    const live = workers.filter((w) => w.state === 'live');
    info.textContent = `${live.length} live of ${workers.length} · ${live.reduce((n, w) => n + w.slots, 0)} live slots`;
  }

  async function load() {
    try { show(await getJSON('/api/workers')); } catch (e) { return failed(e, load); }
    setStream(follow('/api/workers/events', 'workers', show, load));
  }
  load();
}

function workerRow(w) {
  const mem = w.memory_limit_bytes
    ? h('span', { class: 'progress' },
      h('span', { class: 'bar' }, h('span', { class: 'fill', style: { width: `${Math.min(100, (100 * w.memory_used_bytes) / w.memory_limit_bytes)}%` } })),
      h('span', { class: 'num' }, `${fmtBytes(w.memory_used_bytes)} / ${fmtBytes(w.memory_limit_bytes)}`))
    : `${fmtBytes(w.memory_used_bytes)} / no limit`;
  const excluded = w.excluded_from || [];
  return h('tr', { class: 'worker-row', 'data-worker': w.id, 'data-state': w.state },
    h('td', { class: 'mono' }, w.id),
    h('td', { class: 'mono' }, w.address),
    h('td', {}, badge(w.state)),
    h('td', { class: 'num' }, w.slots),
    h('td', { class: 'num' }, w.running_tasks),
    h('td', { class: 'num' }, fmtNum(w.tasks_done)),
    h('td', { class: 'num' }, mem),
    h('td', { class: 'num' }, fmtBytes(w.shuffle_disk_bytes)),
    h('td', { class: 'num' }, fmtBytes(w.operator_spilled_bytes)),
    h('td', { class: 'num' }, `${w.executors} / ${w.max_executors || '—'}`),
    h('td', { class: w.heartbeat_age_ms > 10000 ? 'num stale' : 'num' }, `${fmtMs(w.heartbeat_age_ms)} ago`),
    h('td', { class: 'mono' }, excluded.length
      ? excluded.flatMap((j, i) => [i ? ', ' : null, h('a', { href: `/jobs/${encodeURIComponent(j)}` }, j)])
      : '—'));
}

/* ------------------------------------------------------------------ routing */

function safeDecode(s) {
  try { return decodeURIComponent(s); } catch (_) { return s; }
}

function route() {
  const path = location.pathname;
  const jobMatch = /^\/jobs\/([^/]+)\/?$/.exec(path);
  const section = path === '/workers' ? 'workers' : 'jobs';
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === section);
  if (path === '/') jobsPage();
  else if (path === '/workers' || path === '/workers/') workersPage();
  else if (jobMatch) jobPage(safeDecode(jobMatch[1]));
  else render(h('div', { class: 'banner' }, 'Page not found. ', h('a', { href: '/' }, 'Jobs')));
}

route();
