// Prometheus metrics of node daemons: `sharpctl node run` processes in the
// namespaces of a lab (as test/node/node-deployment does), s1 serving its
// metrics over HTTPS with mutual TLS on a management veth and on a Unix
// socket, vnf2 on a Unix socket. Real frames (probes from the generator,
// crafted frames sent out of the client's interface by an XDP_TX live-frames
// run) and a real handover move the counters; every scrape is a real
// HTTP(S) request, parsed as exposition text, and the deltas are checked
// exactly. A client without a certificate, with one not on `allow`, or
// speaking plain HTTP gets no metrics.
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLabFromSpec, destroyLab, installRules, standardSpec } from '../../src/lab/netns-lab.js';
import { labNodeConfigs, startNodeProcess, connectLabNodes, type NodeProcess } from '../../src/lab/lab-nodes.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { DelayedStateMover, VnfMapStateMover } from '../../src/handover/state-mover.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import { TrafficSink } from '../../src/traffic/sink.js';
import { BpfObjectSpec, XdpDispatcherAnchor, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { createVeth, deleteLink, linkExists } from '../../src/net/iproute.js';
import { ethernet, udpFrame, ETH_P_IPV4 } from '../../src/net/frame.js';
import { createCa, createControllerCert, createNodeCert, controllerTlsFiles, nodeTlsFiles } from '../../src/node/transport/index.js';
import { sleep } from '../../src/util/mutex.js';
import type { NodeDeployment } from '../../src/node/client.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { stopAndDetachNodes } from '../helpers/node-procs.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');
const cli = path.join(repoRoot, 'dist/src/cli/main.js');

// ------------------------------------------------------------------ exposition

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the text exposition format (0.0.4): samples, with HELP/TYPE checked to come first and once. */
function parseExposition(t: Test, text: string): Sample[] {
  const out: Sample[] = [];
  const typed = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta !== null) {
      if (meta[1] === 'TYPE') {
        if (typed.has(meta[2]!)) t.fail(`TYPE of ${meta[2]} twice`);
        typed.set(meta[2]!, meta[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) {
      t.fail(`not an exposition line: ${line}`);
      continue;
    }
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
    const family = m[1]!.replace(/_(bucket|sum|count)$/, '');
    if (!typed.has(m[1]!) && !typed.has(family)) t.fail(`${m[1]} has no TYPE before it`);
    if (typed.get(m[1]!) === 'counter' && !m[1]!.endsWith('_total')) t.fail(`counter ${m[1]} does not end in _total`);
    out.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) });
  }
  return out;
}

/** The one sample of `name` whose labels include `labels` (0 if absent). */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (hits.length > 1) throw new Error(`${name}${JSON.stringify(labels)}: ${hits.length} samples`);
  return hits[0]?.value ?? 0;
}

interface Scraped {
  status: number;
  contentType: string;
  body: string;
}

function collect(res: http.IncomingMessage): Promise<Scraped> {
  return new Promise((resolve, reject) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d: string) => (body += d));
    res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body }));
    res.on('error', reject);
  });
}

function scrapeHttps(address: string, tls: { ca: Buffer; cert?: Buffer; key?: Buffer }, servername: string): Promise<Scraped> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const req = https.get({ host, port: Number(port), path: '/metrics', ca: tls.ca, cert: tls.cert, key: tls.key, servername, agent: false, timeout: 5000 }, (res) => collect(res).then(resolve, reject));
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

function scrapeUnix(socketPath: string, urlPath = '/metrics'): Promise<Scraped> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path: urlPath, agent: false, timeout: 5000 }, (res) => collect(res).then(resolve, reject));
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

// ------------------------------------------------------------------ the world

t.test('node metrics: counters move by exactly what the frames did; mutual TLS only on TCP', async (t) => {
  const prefix = `${uniqueName('mt')}-`;
  const nodePrefix = prefix; // node names become DNS names in s1's certificate: no '_'
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-metrics-'));
  const lab = createLabFromSpec(standardSpec({ ringCapacity: 8192 }), prefix);
  const nodes = labNodeConfigs(lab, { dir, nodePrefix });
  const procs: NodeProcess[] = [];
  const closers: (() => void)[] = [];
  const mgmtHost = `sharptm${randomBytes(3).toString('hex')}`;
  let d: NodeDeployment | undefined;
  t.teardown(async () => {
    for (const c of closers.reverse()) c();
    d?.close();
    await stopAndDetachNodes(procs, nodes, cli);
    if (linkExists(mgmtHost)) deleteLink(mgmtHost);
    destroyLab(prefix);
    rmSync(dir, { recursive: true, force: true });
  });

  // certificates: s1's node certificate, a scraper on s1's allow list, one that is not
  const s1Name = `${nodePrefix}s1`;
  const net = `10.${200 + (process.pid % 50)}.${randomBytes(1)[0]! % 250}`;
  const s1Addr = `${net}.2`;
  await createCa(dir);
  await createNodeCert(dir, s1Name, { ips: [s1Addr] });
  await createControllerCert(dir, 'prom');
  await createControllerCert(dir, 'intruder');
  const s1 = nodes.find((n) => n.role === 's1')!;
  const vnf2 = nodes.find((n) => n.role === 'vnf2')!;
  // a management link from this namespace to s1's
  createVeth({ name: mgmtHost, address: `${net}.1/30` }, { name: 'mgmt0', netns: s1.netns, address: `${s1Addr}/30` });
  const s1Metrics = { unix: path.join(dir, 's1.metrics.sock'), tcp: `${s1Addr}:9441`, allow: ['prom'] };
  s1.config = { ...s1.config, tls: nodeTlsFiles(dir, s1Name), metrics: s1Metrics };
  writeFileSync(s1.configFile, JSON.stringify(s1.config, null, 2));
  vnf2.config = { ...vnf2.config, metrics: { unix: path.join(dir, 'vnf2.metrics.sock') } };
  writeFileSync(vnf2.configFile, JSON.stringify(vnf2.config, null, 2));
  const vnf1 = nodes.find((n) => n.role === 'vnf1')!;
  vnf1.config = { ...vnf1.config, metrics: { unix: path.join(dir, 'vnf1.metrics.sock') } };
  writeFileSync(vnf1.configFile, JSON.stringify(vnf1.config, null, 2));

  for (const n of nodes) procs.push(await startNodeProcess(n, { cli }));
  const s1Ready = procs.find((p) => p.node.role === 's1')!.ready as NodeProcess['ready'] & { metrics: { unix: string | null; tcp: string | null } | null };
  t.same(s1Ready.metrics, { unix: s1Metrics.unix, tcp: s1Metrics.tcp }, 's1 says where it serves metrics');
  d = await connectLabNodes(nodes);
  await installRules(d.switchControl, lab.spec.rules);

  const ca = readFileSync(path.join(dir, 'ca.crt'));
  const prom = controllerTlsFiles(dir, 'prom');
  const promTls = { ca, cert: readFileSync(prom.cert), key: readFileSync(prom.key) };
  const scrapeS1 = async (): Promise<Sample[]> => {
    const r = await scrapeHttps(s1Metrics.tcp, promTls, s1Name);
    t.equal(r.status, 200, 'scrape of s1 over mutual TLS: 200');
    t.match(r.contentType, /^text\/plain; version=0\.0\.4/);
    return parseExposition(t, r.body);
  };
  const scrapeVnf2 = async (): Promise<Sample[]> => {
    const r = await scrapeUnix(vnf2.config.metrics!.unix!);
    t.equal(r.status, 200, 'scrape of vnf2 on its Unix socket: 200');
    return parseExposition(t, r.body);
  };

  // ---- refusals
  await t.rejects(scrapeHttps(s1Metrics.tcp, { ca }, s1Name), 'a client without a certificate is refused (TLS handshake)');
  const intruder = controllerTlsFiles(dir, 'intruder');
  const notAllowed = await scrapeHttps(s1Metrics.tcp, { ca, cert: readFileSync(intruder.cert), key: readFileSync(intruder.key) }, s1Name);
  t.equal(notAllowed.status, 403, 'a certificate of the CA that is not on metrics.allow: 403');
  t.notMatch(notAllowed.body, /sharp_/, 'and no metric in the answer');
  const plain = await new Promise<string>((resolve) => {
    const req = http.get({ host: s1Addr, port: 9441, path: '/metrics', agent: false, timeout: 3000 }, (res) => collect(res).then((r) => resolve(`HTTP ${r.status}: ${r.body.slice(0, 60)}`)));
    req.on('error', (e) => resolve(`error: ${e.message}`));
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
  t.notMatch(plain, /sharp_switch/, `plain HTTP on the TCP port gets no metrics (${plain})`);
  t.equal((await scrapeUnix(s1Metrics.unix, '/nothing')).status, 404, 'other paths: 404');
  t.equal((await scrapeUnix(s1Metrics.unix)).status, 200, 'the same metrics on s1\'s Unix socket');

  const before = await scrapeS1();
  const ports = ['s1-client', 's1-vnf1', 's1-vnf2'].filter((p) => before.some((s) => s.labels['port'] === p));
  t.ok(ports.includes('s1-client') && ports.includes('s1-vnf1'), `per-port series of s1 (${ports.join(', ')})`);
  const fwdRule = d.switchControl.rules().find((r) => r.switch === 's1' && r.action.outPort.endsWith('vnf1'))!;
  t.equal(value(before, 'sharp_node_api_request_duration_seconds_count', { method: 'AddRule', code: 'OK' }), 2, 'the API histogram counted s1\'s two AddRule calls');
  t.equal(value(before, 'sharp_node_api_request_duration_seconds_bucket', { method: 'AddRule', code: 'OK', le: '+Inf' }), 2, 'its +Inf bucket too');

  // ---- probes: N frames client -> s1 -> vnf1 -> s2 -> server
  const { client, server } = lab;
  const sink = new TrafficSink({ objectsDir, netns: server.netns, ifname: server.ifname });
  const gen = new TrafficGenerator({ objectsDir, netns: client.netns, ifname: client.ifname, srcMac: client.mac, dstMac: server.mac, srcIp: client.ip, dstIp: server.ip, flows: 2 });
  closers.push(() => sink.close(), () => gen.close());
  const N = 500;
  const FRAME = 128; // the generator's default frame size
  await gen.send(N);
  await sink.drain(N);
  t.equal(sink.report(gen.sentPerFlow()).delivered, N, `${N} probes delivered`);
  const afterProbes = await scrapeS1();
  const delta = (a: Sample[], b: Sample[], name: string, labels: Record<string, string>): number => value(b, name, labels) - value(a, name, labels);
  const cl = { switch: 's1', port: 's1-client' };
  const v1 = { switch: 's1', port: 's1-vnf1' };
  t.equal(delta(before, afterProbes, 'sharp_switch_port_rx_packets_total', cl), N, 'rx packets on s1-client: +N');
  t.equal(delta(before, afterProbes, 'sharp_switch_port_rx_bytes_total', cl), N * FRAME, 'rx bytes on s1-client: +N × 128');
  t.equal(delta(before, afterProbes, 'sharp_switch_port_tx_packets_total', v1), N, 'tx packets on s1-vnf1: +N');
  t.equal(delta(before, afterProbes, 'sharp_switch_port_tx_bytes_total', v1), N * FRAME, 'tx bytes on s1-vnf1: +N × 128');
  t.equal(delta(before, afterProbes, 'sharp_switch_rule_packets_total', { switch: 's1', rule: String(fwdRule.id) }), N, `rule ${fwdRule.id} packets: +N`);
  t.equal(delta(before, afterProbes, 'sharp_switch_rule_bytes_total', { switch: 's1', rule: String(fwdRule.id) }), N * FRAME, `rule ${fwdRule.id} bytes: +N × 128`);
  for (const reason of ['no_rule', 'shim', 'malformed', 'bad_action', 'no_headroom', 'no_tx']) t.equal(delta(before, afterProbes, 'sharp_switch_port_drops_total', { ...cl, reason }), 0, `no ${reason} drop from probes`);

  // ---- crafted frames out of the client's interface (XDP_TX in a live-frames run): each drop reason
  const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
  closers.push(() => bench.close());
  const anchor = new XdpDispatcherAnchor(bench.program('bench_tx'), `sharptx${process.pid % 1000}`, client.netns);
  closers.push(() => anchor.close());
  const clientIfindex = ifindexOf(client.ifname, client.netns);
  const send = async (frame: Buffer, times: number): Promise<void> => {
    await bench.program('bench_tx').runAsync({ data: frame, context: xdpMd({ dataLen: frame.length, ingressIfindex: clientIfindex }), repeat: times, liveFrames: true, netns: client.netns });
  };
  const probeLike = udpFrame({ srcMac: client.mac, dstMac: server.mac, srcIp: client.ip, dstIp: server.ip, srcPort: 20000, dstPort: 9000, payload: Buffer.alloc(32) });
  const forged = Buffer.concat([probeLike.subarray(0, 12), Buffer.from([0x82, 0x1c, 0x40, 0x09]), probeLike.subarray(12)]); // shim(PRE, 9) from a host
  const noRule = udpFrame({ srcMac: client.mac, dstMac: server.mac, srcIp: client.ip, dstIp: '10.0.0.77', srcPort: 1, dstPort: 2, payload: Buffer.alloc(32) });
  const truncated = ethernet({ dst: server.mac, src: client.mac, etherType: ETH_P_IPV4, payload: Buffer.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17]) });
  await send(forged, 3);
  await send(noRule, 5);
  await send(truncated, 2);
  await sleep(100);
  const afterDrops = await scrapeS1();
  t.equal(delta(afterProbes, afterDrops, 'sharp_switch_port_drops_total', { ...cl, reason: 'shim' }), 3, 'forged shims: drops{reason="shim"} +3');
  t.equal(delta(afterProbes, afterDrops, 'sharp_switch_port_drops_total', { ...cl, reason: 'no_rule' }), 5, 'no rule: drops{reason="no_rule"} +5');
  t.equal(delta(afterProbes, afterDrops, 'sharp_switch_port_drops_total', { ...cl, reason: 'malformed' }), 2, 'truncated IPv4: drops{reason="malformed"} +2');
  t.equal(delta(afterProbes, afterDrops, 'sharp_switch_port_rx_packets_total', cl), 10, 'rx counts them too: +10');
  t.equal(delta(afterProbes, afterDrops, 'sharp_switch_port_tx_packets_total', v1), 0, 'none of them forwarded');

  const scrapeVnf1 = async (): Promise<Sample[]> => {
    const r = await scrapeUnix(vnf1.config.metrics!.unix!);
    t.equal(r.status, 200, 'scrape of vnf1 on its Unix socket: 200');
    return parseExposition(t, r.body);
  };

  // ---- a handover under traffic: vnf2's hold ring fills and is released
  const v1Before = await scrapeVnf1();
  const vBefore = await scrapeVnf2();
  const v2 = { instance: 'vnf2' };
  t.equal(value(vBefore, 'sharp_agent_hold_ring_capacity_frames', v2), 8192, 'ring capacity of vnf2');
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 100) });
  const rules = d.switchControl.rules().filter((r) => r.action.outPort.endsWith('-vnf1')).map((r) => r.id);
  gen.start(2000);
  await sleep(100);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2000 });
  await gen.stop();
  await sink.drain(gen.sent);
  t.equal(r.outcome, 'completed', `handover ${r.id}: ${r.outcome}${r.reason ? ` (${r.reason})` : ''}`);
  t.ok(r.counts.held > 0n, `${r.counts.held} frames held at vnf2`);
  const rep = sink.report(gen.sentPerFlow());
  t.same({ lost: rep.lost, reordered: rep.reordered, duplicated: rep.duplicated }, { lost: 0, reordered: 0, duplicated: 0 }, 'nothing lost, reordered or duplicated');
  const vAfter = await scrapeVnf2();
  const v1After = await scrapeVnf1();
  t.equal(delta(vBefore, vAfter, 'sharp_agent_held_total', v2), Number(r.counts.held), `sharp_agent_held_total +${r.counts.held} (the handover's held count)`);
  t.equal(delta(vBefore, vAfter, 'sharp_agent_released_total', v2), Number(r.counts.released), `sharp_agent_released_total +${r.counts.released}`);
  t.equal(delta(vBefore, vAfter, 'sharp_agent_hold_overflow_total', { ...v2, reason: 'ring_full' }), 0, 'no overflow');
  t.equal(delta(vBefore, vAfter, 'sharp_agent_replay_failures_total', v2), 0, 'no replay failure');
  t.ok(delta(vBefore, vAfter, 'sharp_agent_stripped_total', v2) >= Number(r.counts.held), 'every held (POST) frame was stripped');
  t.equal(value(vAfter, 'sharp_agent_handovers_armed', { ...v2, role: 'new' }), 0, 'disarmed after the handover: no ring series left');
  t.equal(vAfter.filter((s) => s.name === 'sharp_agent_hold_ring_frames').length, 0);

  // release work on vnf2: as many observations as Release calls the node answered, each with its rounds
  const apiCalls = (a: Sample[], b: Sample[], method: string): number => delta(a, b, 'sharp_node_api_request_duration_seconds_count', { method, code: 'OK' });
  const releases = apiCalls(vBefore, vAfter, 'Release');
  t.equal(releases, 1, 'the handover released vnf2\'s ring with one Release call');
  t.equal(delta(vBefore, vAfter, 'sharp_agent_release_duration_seconds_count', { ...v2, mode: 'vnf' }), releases, 'the release histogram counted exactly the Release calls');
  t.equal(delta(vBefore, vAfter, 'sharp_agent_release_duration_seconds_bucket', { ...v2, mode: 'vnf', le: '+Inf' }), releases, 'its +Inf bucket too');
  t.equal(value(vAfter, 'sharp_agent_release_duration_seconds_count', { ...v2, mode: 'relay' }), 0, 'no relay release (nothing rolled back)');
  t.ok(delta(vBefore, vAfter, 'sharp_agent_release_duration_seconds_sum', { ...v2, mode: 'vnf' }) > 0, 'the release took some time');
  const rounds = delta(vBefore, vAfter, 'sharp_agent_release_rounds_total', v2);
  t.ok(rounds >= 1, `release rounds on vnf2: +${rounds}`);
  t.equal(value(v1After, 'sharp_agent_release_rounds_total', { instance: 'vnf1' }), 0, 'vnf1 released nothing: its rounds series reads 0');

  // state operations on both VNF nodes: one observation per state call, by operation, under the instances' backend (counter: an XDP VNF's map)
  const STATE_METHODS = { ExportState: 'export', ImportState: 'import', DeleteState: 'delete', TransferState: 'transfer' } as const;
  let stateCalls = 0;
  for (const [node, before, after] of [['vnf1', v1Before, v1After], ['vnf2', vBefore, vAfter]] as const) {
    for (const [method, operation] of Object.entries(STATE_METHODS)) {
      const calls = apiCalls(before, after, method);
      stateCalls += calls;
      t.equal(delta(before, after, 'sharp_node_state_duration_seconds_count', { backend: 'vnf-map', operation }), calls, `${node}: ${operation} observed ${calls} times, as many as ${method} calls`);
    }
    t.equal(after.filter((x) => x.name === 'sharp_node_state_duration_seconds_count' && x.labels['backend'] !== 'vnf-map').length, 0, `${node}: no other backend`);
  }
  t.ok(stateCalls >= 2, `the state move made ${stateCalls} state calls on the VNF nodes`);
  const sAfter = await scrapeS1();
  // the engine writes a step's actions in one SetRuleActions per switch (SetRuleAction where a node lacks it)
  const actionCalls = ['SetRuleAction', 'SetRuleActions'].reduce((a, method) => a + value(sAfter, 'sharp_node_api_request_duration_seconds_count', { method, code: 'OK' }), 0);
  t.ok(actionCalls >= 2, `the handover's rule action calls in the histogram: ${actionCalls}`);
  t.equal(value(sAfter, 'sharp_node_info', { node: s1Name }), 1, 'sharp_node_info');
});

t.test('config: metrics on TCP only with tls; exposition escaping', async (t) => {
  const { validateNodeConfig, NodeConfigError } = await import('../../src/node/config.js');
  const { Exposition, Histogram } = await import('../../src/node/metrics.js');
  const base = { name: 'n1', listen: { unix: '/run/x.sock' }, instances: [{ name: 'v', kind: 'counter', ifaces: ['a', 'b'] }] };
  t.throws(() => validateNodeConfig({ ...base, metrics: { tcp: '10.0.0.1:9441' } }), NodeConfigError, 'metrics.tcp without tls is refused');
  t.match(String((() => { try { validateNodeConfig({ ...base, metrics: { tcp: '10.0.0.1:9441' } }); } catch (e) { return (e as Error).message; } return ''; })()), /HTTPS with mutual TLS/);
  t.throws(() => validateNodeConfig({ ...base, metrics: { allow: ['p'] } }), NodeConfigError, 'metrics without an endpoint is refused');
  t.throws(() => validateNodeConfig({ ...base, metrics: { unix: '/run/x.sock' } }), NodeConfigError, 'metrics on the API socket is refused');
  t.same(validateNodeConfig({ ...base, metrics: { unix: '/run/m.sock' } }).metrics, { unix: '/run/m.sock' });
  const e = new Exposition().counter('x_total', 'h', [[{ a: 'q"b\\c\nd' }, 3n]]);
  t.equal(e.text(), '# HELP x_total h\n# TYPE x_total counter\nx_total{a="q\\"b\\\\c\\nd"} 3\n', 'label values escaped');
  const h = new Histogram('lat_seconds', 'l', [0.1, 1]);
  h.observe({ m: 'A' }, 0.05);
  h.observe({ m: 'A' }, 0.5);
  h.observe({ m: 'A' }, 5);
  const out = new Exposition();
  h.write(out);
  t.match(out.text(), /lat_seconds_bucket\{m="A",le="0.1"\} 1\nlat_seconds_bucket\{m="A",le="1"\} 2\nlat_seconds_bucket\{m="A",le="\+Inf"\} 3\nlat_seconds_sum\{m="A"\} 5.55\nlat_seconds_count\{m="A"\} 3/, 'cumulative buckets, sum, count');
});
