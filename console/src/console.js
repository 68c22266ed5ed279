// The lattice console's page: one EventSource on /events, a full
// `snapshot` of the lattice on every connection and every few seconds, and
// lattice `event`s as they happen. The topology is a cytoscape graph (hosts
// as compound nodes holding their components; links as edges; entry points
// as nodes outside the hosts), laid out by dagre from callers to callees.
// The page keeps no state the console does not send, except the recent
// samples it charts.

import cytoscape from 'cytoscape';
import dagre from 'cytoscape-dagre';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './console.css';

cytoscape.use(dagre);

/** How many samples a component's chart keeps (one per snapshot). */
const KEEP = 120;
/** How many events the timeline shows. */
const TIMELINE = 200;

const $ = (id) => document.getElementById(id);

const cy = cytoscape({
  container: $('graph'),
  wheelSensitivity: 0.2,
  style: [
    {
      selector: 'node',
      style: {
        label: 'data(label)',
        'font-size': 11,
        'text-valign': 'center',
        'text-halign': 'center',
        'text-wrap': 'wrap',
        width: 'label',
        height: 'label',
        padding: 8,
        shape: 'round-rectangle',
        'background-color': '#e8f0fb',
        'border-width': 1,
        'border-color': '#5b7db1',
      },
    },
    {
      selector: ':parent',
      style: {
        'text-valign': 'top',
        'text-halign': 'center',
        'font-weight': 'bold',
        'background-color': '#fafafa',
        'border-color': '#888',
        padding: 14,
      },
    },
    { selector: '.missing', style: { 'border-color': '#c33', 'border-width': 3, 'border-style': 'dashed' } },
    { selector: '.entry', style: { shape: 'tag', 'background-color': '#fff4d6', 'border-color': '#b08a2e' } },
    {
      selector: 'edge',
      style: {
        'curve-style': 'bezier',
        'target-arrow-shape': 'triangle',
        width: 2,
        label: 'data(label)',
        'font-size': 9,
        'text-background-color': '#fff',
        'text-background-opacity': 0.8,
        'text-rotation': 'autorotate',
      },
    },
    { selector: 'edge.local', style: { 'line-color': '#3a9a4a', 'target-arrow-color': '#3a9a4a' } },
    {
      selector: 'edge.remote',
      style: { 'line-color': '#d08020', 'target-arrow-color': '#d08020', 'line-style': 'dashed' },
    },
    { selector: 'edge.entry', style: { 'line-color': '#b08a2e', 'target-arrow-color': '#b08a2e', width: 1 } },
    { selector: '.highlighted', style: { 'overlay-color': '#ffcc00', 'overlay-opacity': 0.45, 'overlay-padding': 6 } },
  ],
});
window.cy = cy;
window.__snapshots = 0;
window.__layouts = 0;
window.__events = 0;

/** The last snapshot, and each component's recent samples by node id. */
let state = null;
const history = new Map();
let selected = null;

const fmt = (n, digits = 1) => (n == null ? '–' : Number(n).toFixed(digits));
const hostNode = (host) => `h:${host}`;
const componentNode = (host, app, name) => `c:${host}:${app}/${name}`;

/** The graph's elements for snapshot `s`. */
function elements(s) {
  const out = [];
  for (const h of s.hosts) {
    const labels = Object.entries(h.labels || {})
      .map(([k, v]) => `${k}=${v}`)
      .join(' ');
    out.push({
      group: 'nodes',
      data: { id: hostNode(h.id), label: `${h.id}${labels ? `\n${labels}` : ''}`, host: h.id },
      classes: h.alive ? '' : 'missing',
    });
    for (const c of h.components || []) {
      out.push({
        group: 'nodes',
        data: {
          id: componentNode(h.id, c.app, c.name),
          parent: hostNode(h.id),
          label: c.fused_into
            ? `${c.name}\ncomposed into ${c.fused_into}`
            : `${c.name} ×${c.instances}\n${fmt(c.rate)}/s`,
          host: h.id,
          app: c.app,
          component: c.name,
        },
        classes: 'component',
      });
    }
  }
  const nodes = new Set(out.map((e) => e.data.id));
  for (const l of s.links) {
    const from = componentNode(l.from_host, l.app, l.from);
    const to = componentNode(l.to_host, l.app, l.to);
    if (!nodes.has(from) || !nodes.has(to)) continue;
    out.push({
      group: 'edges',
      data: {
        id: `l:${from}->${to}`,
        source: from,
        target: to,
        label:
          l.where === 'composed'
            ? `composed ≤${fmt(l.rate)}/s`
            : `${fmt(l.rate)}/s p50 ${fmt(l.p50_ms)} p99 ${fmt(l.p99_ms)} ms`,
        app: l.app,
        from: l.from,
        to: l.to,
      },
      classes: l.where === 'local' || l.where === 'composed' ? 'local' : 'remote',
    });
  }
  for (const e of s.entries || []) {
    const target = componentNode(e.host, e.app, e.component);
    if (!nodes.has(target)) continue;
    const id = `e:${e.medium}:${e.address}:${e.host}`;
    if (!nodes.has(id)) {
      nodes.add(id);
      out.push({ group: 'nodes', data: { id, label: `${e.medium}\n${e.address}` }, classes: 'entry' });
    }
    out.push({ group: 'edges', data: { id: `${id}->${target}`, source: id, target }, classes: 'entry' });
  }
  return out;
}

/** Applies snapshot `s`: data and classes in place; a new layout only when
 * nodes or edges came or went. */
function render(s) {
  const started = performance.now();
  state = s;
  window.__snapshots += 1;
  $('lattice').textContent = s.lattice;
  $('updated').textContent = new Date(s.at_ms).toLocaleTimeString();
  const wanted = elements(s);
  const ids = new Set(wanted.map((e) => e.data.id));
  const changed = cy.elements().some((e) => !ids.has(e.id())) || wanted.some((e) => cy.getElementById(e.data.id).empty());
  cy.batch(() => {
    cy.elements().filter((e) => !ids.has(e.id())).remove();
    for (const e of wanted) {
      const existing = cy.getElementById(e.data.id);
      if (existing.empty()) {
        cy.add(e);
      } else {
        existing.data(e.data);
        existing.classes(e.classes || '');
      }
    }
  });
  if (changed) {
    cy.layout({
      name: 'dagre',
      rankDir: 'LR',
      // Room on each link for its rate and latency label.
      rankSep: 190,
      nodeSep: 30,
      nodeDimensionsIncludeLabels: true,
      fit: true,
      padding: 20,
      stop: () => {
        window.__layouts += 1;
      },
    }).run();
  }
  for (const h of s.hosts) {
    for (const c of h.components || []) {
      const id = componentNode(h.id, c.app, c.name);
      const samples = history.get(id) || { t: [], rate: [], p50: [], p99: [] };
      samples.t.push(s.at_ms / 1000);
      samples.rate.push(c.rate ?? null);
      samples.p50.push(c.p50_ms ?? null);
      samples.p99.push(c.p99_ms ?? null);
      for (const k of Object.keys(samples)) if (samples[k].length > KEEP) samples[k].shift();
      history.set(id, samples);
    }
  }
  health(s);
  if (selected) details(selected);
  // What a test reads: how long the last snapshot took to apply, layout
  // included.
  window.__renderMs = performance.now() - started;
}

/** The health list: missing hosts, unsatisfied placement, refusals. */
function health(s) {
  const list = $('health');
  list.replaceChildren();
  const problems = s.health || [];
  $('health-count').textContent = problems.length ? `${problems.length}` : 'all well';
  $('health-count').className = problems.length ? 'badge bad' : 'badge ok';
  for (const p of problems) {
    const li = document.createElement('li');
    li.className = `problem ${p.kind}`;
    li.textContent = `${p.kind}: ${p.detail}`;
    li.onclick = () => highlight({ host: p.host, app: p.app, component: p.component });
    list.append(li);
  }
}

/** Highlights what an event or problem touched: a host, a component (on
 * every host), or both. */
function highlight(t) {
  cy.elements().removeClass('highlighted');
  const hits = cy.nodes().filter((n) => {
    const d = n.data();
    if (t.component) return d.component === t.component && (!t.app || d.app === t.app) && (!t.host || d.host === t.host);
    if (t.app && !t.host) return d.app === t.app;
    return t.host && d.id === hostNode(t.host);
  });
  hits.addClass('highlighted');
  if (t.component && t.to) {
    cy.edges().filter((e) => e.data('from') === t.component && e.data('to') === t.to).addClass('highlighted');
  }
  return hits;
}

/** Adds lattice event `e` to the top of the timeline. */
function timeline(e) {
  window.__events += 1;
  const list = $('timeline');
  const li = document.createElement('li');
  li.className = `event ${e.kind.replace('.', '-')}`;
  const at = new Date(e.at_ms).toLocaleTimeString();
  const what = [e.app, e.component].filter(Boolean).join('/');
  li.textContent = `${at} ${e.kind} ${what} on ${e.host}${e.reason ? ` — ${e.reason}` : ''}`;
  li.dataset.kind = e.kind;
  li.onclick = () => {
    for (const other of list.children) other.classList.remove('selected');
    li.classList.add('selected');
    highlight({ host: e.host, app: e.app, component: e.component });
  };
  list.prepend(li);
  while (list.children.length > TIMELINE) list.lastChild.remove();
}

let chart = null;
/** The side panel of component node `id`: version, faults, and its chart. */
function details(id) {
  selected = id;
  const node = cy.getElementById(id);
  const panel = $('details');
  if (node.empty() || !state) {
    panel.hidden = true;
    return;
  }
  const d = node.data();
  const c = state.hosts.find((h) => h.id === d.host)?.components.find((x) => x.app === d.app && x.name === d.component);
  if (!c) return;
  panel.hidden = false;
  $('d-name').textContent = `${d.app}/${d.component} on ${d.host}`;
  $('d-digest').textContent = c.digest;
  $('d-revision').textContent = c.revision ?? '–';
  $('d-instances').textContent = `${c.instances} of ${c.max_instances}`;
  $('d-faults').textContent =
    Object.entries(c.faults || {})
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none';
  const h = history.get(id);
  const data = [h.t, h.rate, h.p50, h.p99];
  if (!chart) {
    chart = new uPlot(
      {
        width: 300,
        height: 140,
        legend: { show: true },
        scales: { ms: { auto: true } },
        axes: [{}, { scale: 'ms', label: 'ms' }, { side: 1, scale: '/s', grid: { show: false }, label: '/s' }],
        series: [
          {},
          { label: 'calls/s', scale: '/s', stroke: '#36c' },
          { label: 'p50', scale: 'ms', stroke: '#3a9a4a' },
          { label: 'p99', scale: 'ms', stroke: '#c33' },
        ],
      },
      data,
      $('d-chart'),
    );
  } else {
    chart.setData(data);
  }
}

cy.on('tap', 'node.component', (e) => details(e.target.id()));
cy.on('tap', (e) => {
  if (e.target === cy) {
    cy.elements().removeClass('highlighted');
    selected = null;
    $('details').hidden = true;
  }
});

/** The live feed: the console sends `retry`, a snapshot on connect, then
 * snapshots and events; the browser reconnects on its own. */
function connect() {
  const source = new EventSource('events');
  source.addEventListener('snapshot', (m) => {
    window.__bytes = m.data.length;
    render(JSON.parse(m.data));
  });
  source.addEventListener('event', (m) => timeline(JSON.parse(m.data)));
  source.onopen = () => {
    $('link').textContent = 'live';
    $('link').className = 'badge ok';
  };
  source.onerror = () => {
    $('link').textContent = 'reconnecting';
    $('link').className = 'badge bad';
  };
}
connect();
