// VNF state moves node to node: the old instance's node hands the moving
// flows' records to the new instance's node itself (mutual TLS with its own
// node certificate over a link between the two VNF hosts, or the peer's Unix
// socket), and the controller only sends the selection and the peer's
// address. Node daemons are separate `sharpctl node run` processes in their
// own namespaces; traffic is real frames through veths.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLabFromSpec, destroyLab, installRules, standardSpec, type NetnsLab } from '../../src/lab/netns-lab.js';
import { labNodeConfigs, startNodeProcess, type LabNode, type NodeProcess } from '../../src/lab/lab-nodes.js';
import { HandoverEngine, type HandoverResult } from '../../src/handover/engine.js';
import { DelayedStateMover, VnfMapStateMover } from '../../src/handover/state-mover.js';
import { NodeClient, NodeDeployment, type StatePeerVia } from '../../src/node/client.js';
import { caFiles, createCa, createNodeCert, nodeChannel, nodeTlsFiles, unixEndpoint } from '../../src/node/transport/index.js';
import type { NodeMethod } from '../../src/node/api.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../../src/traffic/sink.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { stopAndDetachNodes } from '../helpers/node-procs.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');
const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const STATE_PORT = 7450;

interface World {
  lab: NetnsLab;
  nodes: LabNode[];
  procs: Map<string, NodeProcess>;
  /** node name of each VNF instance's node */
  nodeOf: Record<'vnf1' | 'vnf2', string>;
  /** the address each VNF node's mutual-TLS API has on the state link */
  stateAddress: Record<'vnf1' | 'vnf2', string>;
  /** a controller whose nodes reach each other as `via` says (its own clients: what it sent is counted) */
  connect(via: (instance: 'vnf1' | 'vnf2') => StatePeerVia | undefined): Promise<NodeDeployment>;
  /** rewrites a VNF node's config and restarts its process (it adopts its pinned data plane) */
  restart(instance: 'vnf1' | 'vnf2', edit: (n: LabNode) => void): Promise<void>;
  traffic(flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] };
}

async function world(t: Test): Promise<World> {
  const prefix = `${uniqueName('nx')}-`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-nodestate-'));
  const certs = path.join(dir, 'certs');
  // node names go into certificates: DNS labels (no '_')
  const lab = createLabFromSpec(standardSpec({ ringCapacity: 8192 }), prefix);
  const nodes = labNodeConfigs(lab, { dir, nodePrefix: prefix });
  const procs = new Map<string, NodeProcess>();
  const closers: (() => void)[] = [];
  const deployments: NodeDeployment[] = [];
  const ns = (i: string): string => lab.topology.instances.find((x) => x.name === i)!.netns!;
  // the state link between the two VNF hosts (their management network, as it were)
  const tag = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const link = { a: `sa${tag}`, b: `sb${tag}` };
  const net = `10.${200 + (process.pid % 50)}.${randomBytes(1)[0]!}`;
  t.teardown(async () => {
    for (const c of closers.reverse()) c();
    for (const d of deployments) d.close();
    await stopAndDetachNodes(procs.values(), nodes, cli);
    try {
      execFileSync('ip', ['-n', ns('vnf1'), 'link', 'del', link.a], { stdio: 'ignore' });
    } catch {
      // gone with its namespace
    }
    destroyLab(prefix);
    rmSync(dir, { recursive: true, force: true });
  });
  execFileSync('ip', ['-n', ns('vnf1'), 'link', 'add', link.a, 'type', 'veth', 'peer', 'name', link.b, 'netns', ns('vnf2')]);
  const stateAddress = { vnf1: `${net}.1:${STATE_PORT}`, vnf2: `${net}.2:${STATE_PORT}` };
  for (const [i, ifname, ipAddr] of [
    ['vnf1', link.a, `${net}.1`],
    ['vnf2', link.b, `${net}.2`],
  ] as const) {
    execFileSync('ip', ['-n', ns(i), 'addr', 'add', `${ipAddr}/30`, 'dev', ifname]);
    execFileSync('ip', ['-n', ns(i), 'link', 'set', ifname, 'up']);
  }
  const node = (i: 'vnf1' | 'vnf2'): LabNode => nodes.find((n) => n.role === i)!;
  const nodeOf = { vnf1: node('vnf1').config.name, vnf2: node('vnf2').config.name };
  await createCa(certs);
  for (const i of ['vnf1', 'vnf2'] as const) {
    await createNodeCert(certs, nodeOf[i], { ips: [stateAddress[i].split(':')[0]!] });
    const n = node(i);
    const other = i === 'vnf1' ? 'vnf2' : 'vnf1';
    // over TCP only peers: no controller is on tls.allow (the controller uses the Unix socket)
    n.config = { ...n.config, listen: { ...n.config.listen, tcp: stateAddress[i] }, tls: { ...nodeTlsFiles(certs, nodeOf[i]), allow: [] }, peers: { ca: caFiles(certs).cert, allow: [nodeOf[other]] } };
    writeFileSync(n.configFile, JSON.stringify(n.config, null, 2));
  }
  for (const n of nodes) procs.set(n.role, await startNodeProcess(n, { cli }));
  const connect = async (via: (instance: 'vnf1' | 'vnf2') => StatePeerVia | undefined): Promise<NodeDeployment> => {
    const clients: NodeClient[] = [];
    for (const n of nodes) {
      const v = n.role === 'vnf1' || n.role === 'vnf2' ? via(n.role) : undefined;
      clients.push(await NodeClient.connect({ channel: nodeChannel(unixEndpoint(n.config.listen.unix!, n.config.name)), ...(v === undefined ? {} : { statePeer: v }) }));
    }
    const d = new NodeDeployment(clients);
    deployments.push(d);
    return d;
  };
  const d0 = await connect(() => undefined);
  await installRules(d0.switchControl, lab.spec.rules);
  const restart = async (i: 'vnf1' | 'vnf2', edit: (n: LabNode) => void): Promise<void> => {
    const p = procs.get(i)!;
    const exited = new Promise((r) => p.child.once('exit', r));
    p.child.kill('SIGTERM');
    await exited;
    const n = node(i);
    edit(n);
    writeFileSync(n.configFile, JSON.stringify(n.config, null, 2));
    procs.set(i, await startNodeProcess(n, { cli }));
  };
  const traffic = (flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] } => {
    const gens: TrafficGenerator[] = [];
    const sinks: TrafficSink[] = [];
    for (const [from, to] of [
      [lab.client, lab.server],
      [lab.server, lab.client],
    ] as const) {
      const sink = new TrafficSink({ objectsDir, netns: to.netns, ifname: to.ifname });
      const gen = new TrafficGenerator({ objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows });
      closers.push(() => sink.close(), () => gen.close());
      gens.push(gen);
      sinks.push(sink);
    }
    return { gens, sinks };
  };
  return { lab, nodes, procs, nodeOf, stateAddress, connect, restart, traffic };
}

async function finish(gens: TrafficGenerator[], sinks: TrafficSink[]): Promise<TrafficReport[]> {
  await Promise.all(gens.map((g) => g.stop()));
  await Promise.all(sinks.map((s, i) => s.drain(gens[i]!.sent)));
  return sinks.map((s, i) => s.report(gens[i]!.sentPerFlow()));
}

function assertIntact(t: Test, reports: TrafficReport[], what: string): void {
  reports.forEach((r, i) => {
    const dir = `${what}, ${i === 0 ? 'client→server' : 'server→client'}`;
    t.ok(r.sent > 0, `${dir}: ${r.sent} probes sent`);
    t.same({ delivered: r.delivered, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches }, { delivered: r.sent, lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0 }, `${dir}: every probe delivered once, in order, the VNF's counter continuous`);
  });
}

/** calls of these methods the controller's clients made */
const controllerCalls = (d: NodeDeployment, methods: readonly NodeMethod[]): number => d.nodes.reduce((a, n) => a + methods.reduce((b, m) => b + (n.calls.get(m) ?? 0), 0), 0);
const STATE_BYTES_METHODS: readonly NodeMethod[] = ['ExportState', 'ImportState', 'DeleteState'];

const movingRules = (d: NodeDeployment): number[] => d.switchControl.rules().filter((r) => r.action.outPort.endsWith('-vnf1')).map((r) => r.id);

t.test('handovers under traffic move the state node to node over mutual TLS (and over Unix sockets): the controller never carries it', async (t) => {
  const w = await world(t);
  const d = await w.connect((i) => ({ address: w.stateAddress[i] }));
  const rules = movingRules(d);
  t.same(
    d.nodes.filter((n) => n.agentInstances().length > 0).map((n) => n.statePeers),
    [[w.nodeOf.vnf2], [w.nodeOf.vnf1]],
    "each VNF node's Health names the other as its state peer",
  );
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 50) });
  const { gens, sinks } = w.traffic(4);
  for (const g of gens) g.start(2000);
  await sleep(200);
  const results: HandoverResult[] = [];
  let at: 'vnf1' | 'vnf2' = 'vnf1';
  for (let i = 0; i < 4; i++) {
    const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engine.handover({ rules, from: at, to, expectedPps: 4000 });
    results.push(r);
    t.equal(r.outcome, 'completed', `handover ${r.id} ${r.from}→${r.to}: ${r.outcome}${r.reason ? ` (${r.reason})` : ''}`);
    t.match(r.state, { records: 8, path: 'host-to-host', transport: 'tls', peer: w.nodeOf[to] }, `handover ${r.id}: 8 records went from ${w.nodeOf[at]} to ${w.nodeOf[to]} over mutual TLS`);
    if (r.outcome === 'completed') at = to;
    await sleep(30);
  }
  // the same nodes, reached by a controller that lets them use each other's Unix socket (one host)
  const du = await w.connect(() => undefined);
  const engineU = new HandoverEngine(du, { mover: new VnfMapStateMover() });
  for (let i = 0; i < 2; i++) {
    const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engineU.handover({ rules, from: at, to, expectedPps: 4000 });
    t.equal(r.outcome, 'completed', `handover ${r.id} ${r.from}→${r.to} over Unix sockets: ${r.reason ?? 'completed'}`);
    t.match(r.state, { records: 8, path: 'host-to-host', transport: 'unix', peer: w.nodeOf[to] });
    if (r.outcome === 'completed') at = to;
  }
  const reports = await finish(gens, sinks);
  t.ok(results.some((r) => r.counts.held > 0n), 'frames were really held at the new instance');
  t.equal(controllerCalls(d, STATE_BYTES_METHODS) + controllerCalls(du, STATE_BYTES_METHODS), 0, 'the controller made no ExportState, ImportState or DeleteState call: no state byte passed through it');
  t.equal(controllerCalls(d, ['TransferState']) + controllerCalls(du, ['TransferState']), 6, 'one TransferState per handover, to the old instance\'s node');
  assertIntact(t, reports, '6 handovers with state moved node to node');
});

t.test('a transfer to an unreachable or unauthorized peer fails naming the peer and the cause; the handover rolls back and the old instance keeps its state', async (t) => {
  const w = await world(t);
  const d = await w.connect((i) => ({ address: w.stateAddress[i] }));
  const rules = movingRules(d);
  const { gens, sinks } = w.traffic(2);
  for (const g of gens) g.start(2000);
  await sleep(200);
  const records = async (i: string): Promise<number> => (await d.vnfState.exportState(i, 'all')).length;

  // a controller that believes vnf2's node listens where nothing does
  const closedPort = `${w.stateAddress.vnf2.split(':')[0]}:1`;
  const dBad = await w.connect((i) => ({ address: i === 'vnf2' ? closedPort : w.stateAddress[i] }));
  const r1 = await new HandoverEngine(dBad, { mover: new VnfMapStateMover() }).handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000 });
  t.equal(r1.outcome, 'aborted', `unreachable peer: ${r1.reason}`);
  t.match(r1.reason, new RegExp(`node ${w.nodeOf.vnf1}: TransferState: moving 4 state records of vnf1 to vnf2 on node ${w.nodeOf.vnf2} at ${closedPort.replace(/\./g, '\\.')} failed, vnf1 keeps them: .*unreachable`));
  t.equal(await records('vnf1'), 4, 'vnf1 kept the state of its 2 flows each way');
  t.equal(await records('vnf2'), 0, 'vnf2 holds none of it');

  // the peer's node does not list the old instance's node: it refuses its certificate
  await w.restart('vnf2', (n) => {
    n.config = { ...n.config, peers: { ...n.config.peers!, allow: ['someone-else'] } };
  });
  const r2 = await new HandoverEngine(d, { mover: new VnfMapStateMover() }).handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000 });
  t.equal(r2.outcome, 'aborted', `unauthorized: ${r2.reason}`);
  t.match(r2.reason, new RegExp(`on node ${w.nodeOf.vnf2} at ${w.stateAddress.vnf2.replace(/\./g, '\\.')} failed, vnf1 keeps them: node ${w.nodeOf.vnf2} at [^ ]+ refused node '${w.nodeOf.vnf1}'.*not on its peers\\.allow`));
  t.equal(await records('vnf1'), 4, 'vnf1 still has its state');
  t.equal(await records('vnf2'), 0);

  // the old instance's node sends nowhere it was not told to
  const vnf1Node = d.nodes.find((n) => n.name === w.nodeOf.vnf1)!;
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'vnf2', { node: 'intruder', via: { address: w.stateAddress.vnf2 } }, 'all'), { name: 'NodeCallError', message: new RegExp(`does not send state to node 'intruder': it is not on its peers\\.allow \\(${w.nodeOf.vnf2}\\)`) });
  // a peer whose certificate names another node (here: vnf1's own API, claimed to be vnf2's)
  await w.restart('vnf2', (n) => {
    n.config = { ...n.config, peers: { ...n.config.peers!, allow: [w.nodeOf.vnf1] } };
  });
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'vnf2', { node: w.nodeOf.vnf2, via: { address: w.stateAddress.vnf1 } }, 'all'), { message: new RegExp(`the server's certificate names '${w.nodeOf.vnf1}'.*expected '${w.nodeOf.vnf2}'`) });
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'vnf2', { node: w.nodeOf.vnf2, via: { address: 'no-port' } }, 'all'), { message: /peer\.address 'no-port': host:port/ });
  t.equal(await records('vnf1'), 4, 'none of the refused transfers took anything from vnf1');

  // with the peers agreeing again, the same handover completes node to node
  const r3 = await new HandoverEngine(d, { mover: new VnfMapStateMover() }).handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000 });
  t.equal(r3.outcome, 'completed', `after the fix: ${r3.reason ?? 'completed'}`);
  t.match(r3.state, { records: 4, path: 'host-to-host', transport: 'tls' });
  const reports = await finish(gens, sinks);
  t.equal(controllerCalls(d, ['ImportState']), 0, 'no record went through the controller, not even in the rollbacks');
  assertIntact(t, reports, 'two rolled-back handovers and one completed');
});
