// A stand-in console for working on the page alone (not used by the
// tests, which run the real `membrane ctl console`): serves dist/ and sends
// one made-up lattice of three hosts on /events.
//   node test/fixture.mjs PORT
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const dist = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'dist');
const port = Number(process.argv[2] || 7979);
const now = Date.now();
const component = (app, name, rate, p50, p99) => ({ app, name, digest: `sha256:${name}`, revision: 3, instances: 1, max_instances: 16, rate, p50_ms: p50, p99_ms: p99, faults: {} });
const snapshot = {
  lattice: 'demo',
  at_ms: now,
  hosts: [
    { id: 'host-a', labels: { node: 'a' }, alive: true, components: [component('insurance', 'gateway', 40, 2.1, 6.3)] },
    { id: 'host-b', labels: { node: 'b' }, alive: true, components: [component('insurance', 'rater', 40, 1.2, 3.9), component('insurance', 'pricing', 40, 0.2, 0.5)] },
    { id: 'host-c', labels: { node: 'c' }, alive: false, components: [component('insurance', 'pricing', 0, null, null)] },
  ],
  links: [
    { app: 'insurance', from: 'gateway', from_host: 'host-a', to: 'rater', to_host: 'host-b', where: 'remote', rate: 40, p50_ms: 1.6, p99_ms: 4.8 },
    { app: 'insurance', from: 'rater', from_host: 'host-b', to: 'pricing', to_host: 'host-b', where: 'local', rate: 40, p50_ms: 0.2, p99_ms: 0.5 },
  ],
  entries: [{ medium: 'http', address: '127.0.0.1:8080', app: 'insurance', component: 'gateway', host: 'host-a' }],
  health: [{ kind: 'missing', host: 'host-c', detail: 'host-c missed its heartbeats for 12 s' }],
};
const events = [
  { at_ms: now - 5000, kind: 'host.started', host: 'host-a' },
  { at_ms: now - 3000, kind: 'placement.adapted', host: 'host-b', app: 'insurance', component: 'pricing', reason: '40 calls/s from rater' },
];
http
  .createServer((req, res) => {
    if (req.url === '/events') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('retry: 2000\n\n');
      let id = 0;
      res.write(`id: ${++id}\nevent: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`);
      for (const e of events) res.write(`id: ${++id}\nevent: event\ndata: ${JSON.stringify(e)}\n\n`);
      return;
    }
    const file = req.url === '/' ? 'index.html' : req.url.slice(1);
    const type = file.endsWith('.js') ? 'text/javascript' : file.endsWith('.css') ? 'text/css' : 'text/html';
    fs.readFile(path.join(dist, path.basename(file)), (err, body) => {
      res.writeHead(err ? 404 : 200, { 'content-type': type });
      res.end(err ? 'not found' : body);
    });
  })
  .listen(port, '127.0.0.1');
