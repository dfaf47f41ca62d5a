// A deployment of node daemons, each a separate `sharpctl node run` process
// in its own namespace (two switch hosts, two VNF hosts), driven by the
// handover engine over their sockets: lossless handovers under traffic both
// ways, and a data plane that keeps forwarding while a node is dead.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLabFromSpec, destroyLab, installRules, standardSpec, type NetnsLab } from '../../src/lab/netns-lab.js';
import { labNodeConfigs, startNodeProcess, connectLabNodes, type NodeProcess, type LabNode } from '../../src/lab/lab-nodes.js';
import { HandoverEngine, type HandoverResult } from '../../src/handover/engine.js';
import { DelayedStateMover, VnfMapStateMover } from '../../src/handover/state-mover.js';
import type { TrafficGenerator } from '../../src/traffic/generator.js';
import type { TrafficSink } from '../../src/traffic/sink.js';
import { sleep } from '../../src/util/mutex.js';
import type { NodeDeployment } from '../../src/node/client.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { FileJournal } from '../../src/handover/journal.js';
import { SHARP_STEPS } from '../../src/handover/engine.js';
import { assertIntact, finishTraffic, stopAndDetachNodes, twoWayTraffic } from '../helpers/node-procs.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');

interface World {
  lab: NetnsLab;
  nodes: LabNode[];
  procs: Map<string, NodeProcess>;
  d: NodeDeployment;
  traffic(flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] };
}

async function world(t: Test): Promise<World> {
  const prefix = `${uniqueName('nd')}-`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-nodes-'));
  const lab = createLabFromSpec(standardSpec({ ringCapacity: 8192 }), prefix);
  const nodes = labNodeConfigs(lab, { dir, nodePrefix: prefix.replace(/-$/, '_') });
  const procs = new Map<string, NodeProcess>();
  const closers: (() => void)[] = [];
  let d: NodeDeployment | undefined;
  t.teardown(async () => {
    for (const c of closers.reverse()) c();
    d?.close();
    await stopAndDetachNodes(procs.values(), nodes, cli);
    destroyLab(prefix);
    rmSync(dir, { recursive: true, force: true });
  });
  for (const n of nodes) procs.set(n.role, await startNodeProcess(n, { cli }));
  d = await connectLabNodes(nodes);
  await installRules(d.switchControl, lab.spec.rules);
  const traffic = (flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] } => twoWayTraffic(lab, closers, flows);
  return { lab, nodes, procs, d, traffic };
}

t.test('four node processes: handovers back and forth under traffic both ways, nothing lost', async (t) => {
  const w = await world(t);
  t.same(
    [...w.procs.values()].map((p) => p.ready.adopted),
    [false, false, false, false],
    'every node loaded its programs (nothing to adopt)',
  );
  t.same(w.d.switchControl.switches().sort(), ['s1', 's2']);
  t.same(
    w.d.agentControl.agentInstances().map((i) => i.name),
    ['vnf1', 'vnf2'],
  );
  const rules = w.d.switchControl.rules().filter((r) => r.action.outPort.endsWith('-vnf1')).map((r) => r.id);
  t.equal(rules.length, 2, 'the forward rule on s1 and the reverse rule on s2, on two different nodes');
  const engine = new HandoverEngine(w.d, { mover: new DelayedStateMover(new VnfMapStateMover(), 50) });
  const { gens, sinks } = w.traffic(4);
  for (const g of gens) g.start(2000);
  await sleep(200);
  const results: HandoverResult[] = [];
  let at = 'vnf1';
  for (let i = 0; i < 6; i++) {
    const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engine.handover({ rules, from: at, to, expectedPps: 4000 });
    results.push(r);
    if (r.outcome === 'completed') at = to;
    await sleep(30);
  }
  const reports = await finishTraffic(gens, sinks);
  for (const r of results) {
    t.equal(r.outcome, 'completed', `handover ${r.id} ${r.from}→${r.to}: ${r.outcome}${r.reason ? ` (${r.reason})` : ''}`);
    t.equal(r.counts.held, r.counts.released, `handover ${r.id}: held ${r.counts.held} = released ${r.counts.released}`);
    t.equal(r.state?.records, 8, `handover ${r.id}: the state of 4 flows each way moved between the VNF nodes`);
    t.same(new Set(r.waits.map((w) => w.by)), new Set(['event']), `handover ${r.id}: every quiescence wait ended by the event, across the node API`);
  }
  t.ok(results.some((r) => r.counts.held > 0n), 'frames were really held at the new instance');
  assertIntact(t, reports, '6 handovers across 4 nodes');
});

t.test('kill -9 of every node under traffic: forwarding never stops; restarted nodes adopt and the next handover succeeds', async (t) => {
  const w = await world(t);
  const rules = w.d.switchControl.rules().filter((r) => r.action.outPort.endsWith('-vnf1')).map((r) => r.id);
  const { gens, sinks } = w.traffic(2);
  for (const g of gens) g.start(2000);
  await sleep(200);
  const before = gens.map((g) => g.sent);
  for (const p of w.procs.values()) p.child.kill('SIGKILL');
  await Promise.all([...w.procs.values()].map((p) => new Promise((r) => (p.child.exitCode !== null || p.child.signalCode !== null ? r(undefined) : p.child.once('exit', r)))));
  // a second of traffic with no sharpctl process on any host
  await sleep(1000);
  const during = gens.map((g, i) => g.sent - before[i]!);
  t.ok(during.every((n) => n > 1000), `frames sent while every node was dead: ${during.join(', ')}`);
  for (const n of w.nodes) w.procs.set(n.role, await startNodeProcess(n, { cli }));
  t.same(
    [...w.procs.values()].map((p) => p.ready.adopted),
    [true, true, true, true],
    'every restarted node adopted its pinned data plane',
  );
  const ruleIds = w.d.switchControl.rules().map((r) => r.id);
  w.d.close();
  const d = await connectLabNodes(w.nodes);
  t.teardown(() => d.close());
  t.same(
    d.switchControl.rules().map((r) => r.id),
    ruleIds,
    'the restarted nodes read their rules back from the pinned maps',
  );
  const counters = await d.switchControl.ruleCounters(rules[0]!);
  t.ok(counters.packets > BigInt(before[0]!), `the rule counter went on counting across the restart (${counters.packets})`);
  const engine = new HandoverEngine(d, { mover: new VnfMapStateMover() });
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000 });
  t.equal(r.outcome, 'completed', `the first handover after the restart: ${r.reason ?? 'completed'}`);
  const reports = await finishTraffic(gens, sinks);
  assertIntact(t, reports, 'nodes killed and restarted');
});

t.test('kill -9 of the controller process at each step: a restarted controller completes or rolls back from its journal, nothing lost', async (t) => {
  const w = await world(t);
  const journalDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-journal-'));
  t.teardown(() => rmSync(journalDir, { recursive: true, force: true }));
  const rules = w.d.switchControl.rules().filter((r) => r.action.outPort.endsWith('-vnf1')).map((r) => r.id);
  const sockets = w.nodes.map((n) => n.config.listen.unix!);
  const fixture = path.join(repoRoot, 'dist/test/node/fixtures/controller.js');
  const { gens, sinks } = w.traffic(2);
  for (const g of gens) g.start(2000);
  await sleep(200);
  let at = 'vnf1';
  for (const step of SHARP_STEPS.filter((s) => s !== 'validating')) {
    const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const child = spawn(process.execPath, [fixture, '--sockets', JSON.stringify(sockets), '--journal', journalDir, '--rules', JSON.stringify(rules), '--from', at, '--to', to, '--pause-at', step], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((r) => child.once('exit', r));
    const paused = await new Promise<boolean>((resolve) => {
      createInterface({ input: child.stdout! }).on('line', (l) => {
        if (l.includes('"paused"')) resolve(true);
      });
      child.once('exit', () => resolve(false));
    });
    t.ok(paused, `the controller reached ${step}`);
    child.kill('SIGKILL');
    await exited;
    await sleep(100); // traffic goes on with no controller
    const engine = new HandoverEngine(w.d, { mover: new VnfMapStateMover(), journal: new FileJournal(journalDir) });
    const [r] = await engine.recover();
    const expect = step === 'releasing' || step === 'cleaning' ? 'completed' : 'aborted';
    t.equal(r?.outcome, expect, `killed in ${step}: ${r?.reason ?? 'nothing to recover'}`);
    if (r?.outcome === 'completed') at = to;
    const marked = w.d.switchControl.rules().filter((x) => x.action.phase !== 0);
    t.same(marked, [], `after recovering from ${step}: no rule is marked`);
  }
  const reports = await finishTraffic(gens, sinks);
  assertIntact(t, reports, 'a controller killed at every step');
});

t.test("an instance's interface drops cross the node API: a VNF whose egress link is down is seen dropping", async (t) => {
  const w = await world(t);
  const agents = w.d.agentControl;
  const before = await agents.interfaceDrops!('vnf1');
  t.same(before.map((d) => d.side), [0, 1], 'one entry per side of vnf1');
  const { gens, sinks } = w.traffic(1);
  const vnf1 = w.lab.topology.instances.find((i) => i.name === 'vnf1')!;
  execFileSync('ip', ['-n', vnf1.netns!, 'link', 'set', 'eth1', 'down']);
  gens[0]!.start(1000);
  await sleep(300);
  await gens[0]!.stop();
  execFileSync('ip', ['-n', vnf1.netns!, 'link', 'set', 'eth1', 'up']);
  await sinks[0]!.drain(gens[0]!.sent);
  const r = sinks[0]!.report(gens[0]!.sentPerFlow());
  const after = await agents.interfaceDrops!('vnf1');
  const grew = after.reduce((a, d, i) => a + (d.xmitFailed - before[i]!.xmitFailed) + (d.redirectFailed - before[i]!.redirectFailed), 0n);
  t.ok(r.lost > 0, `${r.lost} probes lost while vnf1's egress link was down`);
  t.equal(Number(grew), r.lost, `every one of them is in vnf1's interface drops, read over the node API (${grew})`);
});
