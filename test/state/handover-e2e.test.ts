// End-to-end SHarP handovers in network namespaces with E-State, Redis and
// direct copy as the state mover, while probe traffic runs both ways: the
// same guarantees as test/handover/engine.test.ts (nothing lost, reordered
// or duplicated; stamp == sequence number; held == released; no packet at
// the controller), and the VNF's per-flow records really crossed the
// backend.
import t from 'tap';
import type { Test } from 'tap';
import { testLab, type TestLab } from '../helpers/lab.js';
import { HandoverEngine, type HandoverResult } from '../../src/handover/engine.js';
import { ruleCovers } from '../../src/handover/state-mover.js';
import { Phase, type FlowKey } from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';
import type { TrafficReport } from '../../src/traffic/sink.js';
import { createStateMover, type StateKind } from '../../src/state/factory.js';
import { StateManagerMover } from '../../src/state/mover.js';
import { EStateManager } from '../../src/state/estate-manager.js';
import { RedisStateManager } from '../../src/state/redis-manager.js';
import { findRedisServer, startRedisServer } from '../../src/state/redis-server.js';

const UDP = 17;
const redisFound = findRedisServer();
const redisSkip = 'reason' in redisFound ? `redis-server unavailable: ${redisFound.reason}` : false;
if (redisSkip) console.log(`# ${redisSkip}`);

function wildcardRules(l: TestLab): number[] {
  return l.dp
    .rules()
    .filter((r) => r.action.outPort === 's1-vnf1' || r.action.outPort === 's2-vnf1')
    .map((r) => r.id);
}

async function exactRules(l: TestLab, flow: FlowKey): Promise<number[]> {
  const fwd = await l.dp.addRule({ switch: 's1', match: { kind: 'exact', flow }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  const rev = await l.dp.addRule({
    switch: 's2',
    match: { kind: 'exact', flow: { src: flow.dst, dst: flow.src, sport: flow.dport, dport: flow.sport, proto: flow.proto } },
    action: { outPort: 's2-vnf1', phase: Phase.NONE, handoverId: 0 },
  });
  return [fwd.id, rev.id];
}

interface Run {
  reports: TrafficReport[];
  results: HandoverResult[];
  at: string;
}

async function runHandovers(l: TestLab, opts: { flows: number; pps: number; rules: number[]; count: number; mover: StateManagerMover }): Promise<Run> {
  const engine = new HandoverEngine(l.dp, { mover: opts.mover });
  const fw = l.forward(opts.flows);
  const rv = l.reverse(opts.flows);
  fw.gen.start(opts.pps);
  rv.gen.start(opts.pps);
  await sleep(200);
  const results: HandoverResult[] = [];
  let at = 'vnf1';
  for (let i = 0; i < opts.count; i++) {
    const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engine.handover({ rules: opts.rules, from: at, to, expectedPps: opts.pps * 2 });
    results.push(r);
    if (r.outcome === 'completed') at = to;
    await sleep(20);
  }
  await Promise.all([fw.gen.stop(), rv.gen.stop()]);
  await Promise.all([fw.sink.drain(fw.gen.sent), rv.sink.drain(rv.gen.sent)]);
  return { reports: [fw.sink.report(fw.gen.sentPerFlow()), rv.sink.report(rv.gen.sentPerFlow())], results, at };
}

async function assertClean(t: Test, run: Run, l: TestLab): Promise<void> {
  run.reports.forEach((r, i) => {
    const dir = i === 0 ? 'client→server' : 'server→client';
    t.ok(r.sent > 0, `${dir}: ${r.sent} probes sent`);
    t.equal(r.delivered, r.sent, `${dir}: every probe delivered`);
    t.equal(r.lost, 0, `${dir}: 0 lost`);
    t.equal(r.reordered, 0, `${dir}: 0 reordered`);
    t.equal(r.duplicated, 0, `${dir}: 0 duplicated`);
    t.equal(r.stampMismatches, 0, `${dir}: the VNF's counter equals the sequence number on every probe`);
    t.equal(r.marked, 0, `${dir}: no probe arrived with a shim`);
  });
  for (const h of run.results) {
    t.equal(h.outcome, 'completed', `handover ${h.id} ${h.from}→${h.to} completed${h.reason ? ` (${h.reason})` : ''}`);
    t.equal(h.counts.held, h.counts.released, `handover ${h.id}: held ${h.counts.held} = released ${h.counts.released}`);
    t.equal(h.counts.overflow, 0n);
    t.equal(h.counts.preSeen >= h.counts.preSent, true, `handover ${h.id}: ${h.counts.preSent} PRE frames drained`);
  }
  t.ok(
    run.results.some((h) => h.counts.held > 0n),
    'frames were really held at the new instance during the moves',
  );
  const c = await l.dp.controllerDataPackets();
  t.equal(c.packets, 0n, 'the controller received 0 data packets');
}

/** After the run the flows' records are at `run.at` only. */
async function assertStateAt(t: Test, l: TestLab, run: Run, rules: number[], records: number): Promise<void> {
  const covers = ruleCovers(rules.map((id) => l.dp.getRule(id)!));
  const other = run.at === 'vnf1' ? 'vnf2' : 'vnf1';
  t.equal((await l.dp.exportState(run.at, covers)).length, records, `${records} records at ${run.at}`);
  t.equal((await l.dp.exportState(other, covers)).length, 0, `none left at ${other}`);
}

async function moverFor(t: Test, kind: StateKind): Promise<StateManagerMover> {
  let mover: StateManagerMover;
  if (kind === 'redis') {
    const server = await startRedisServer();
    t.teardown(() => server.stop());
    mover = createStateMover('redis', { redis: { url: server.url } });
  } else mover = createStateMover(kind);
  t.teardown(() => mover.close());
  return mover;
}

for (const kind of ['estate', 'redis', 'copy'] as const) {
  t.test(`--state ${kind}: handovers stay lossless, ordered and stateful`, { skip: kind === 'redis' ? redisSkip : false }, async (t) => {
    await t.test('a wildcard rule carrying 128 flows, 4 handovers back and forth', async (t) => {
      const l = await testLab(t);
      const mover = await moverFor(t, kind);
      const rules = wildcardRules(l);
      t.equal(rules.length, 2);
      const run = await runHandovers(l, { flows: 128, pps: 4000, rules, count: 4, mover });
      await assertClean(t, run, l);
      for (const h of run.results) {
        t.equal(h.state?.records, 256, `handover ${h.id}: the state of 128 flows in both directions moved through ${kind}`);
        t.equal(h.state?.bytes, 256 * 16, `handover ${h.id}: 256 records × 16 bytes`);
      }
      await assertStateAt(t, l, run, rules, 256);
      const ms = run.results.map((h) => h.stateMs).sort((a, b) => a - b);
      t.comment(`${kind}: state move of 256 records took ${ms.map((x) => x.toFixed(1)).join(', ')} ms`);
      const s = mover.manager.stats();
      t.equal(s.moves, 4, `${kind} committed 4 moves`);
      t.ok(s.transportBytes >= 4 * 256 * 16, `${s.transportBytes} bytes crossed the ${kind} transport`);
      if (mover.manager instanceof EStateManager) {
        const nodes = mover.manager.nodes();
        t.same([...nodes.keys()].sort(), ['vnf1', 'vnf2'], 'one E-State node per instance');
        const fetches = [...nodes.values()].reduce((a, n) => a + (n.stats().served['Fetch'] ?? 0), 0);
        t.equal(fetches, 4, 'each new instance fetched the records from the old one over gRPC');
        t.equal([...nodes.values()].reduce((a, n) => a + n.size, 0), 0, 'no record left in any local view');
      }
      if (mover.manager instanceof RedisStateManager) t.equal(await (await mover.manager.client()).dbsize(), 0, 'nothing left in Redis');
    });

    await t.test('one exact flow, 6 handovers back and forth', async (t) => {
      const l = await testLab(t);
      const mover = await moverFor(t, kind);
      const rules = await exactRules(l, { src: l.lab.client.ip, dst: l.lab.server.ip, sport: 20000, dport: 9000, proto: UDP });
      const run = await runHandovers(l, { flows: 1, pps: 2000, rules, count: 6, mover });
      await assertClean(t, run, l);
      // the reverse probes (server:20000 → client:9000) are another 5-tuple, carried by the wildcard rule: one record moves
      for (const h of run.results) t.equal(h.state?.records, 1, `handover ${h.id}: the flow's record moved through ${kind}`);
      await assertStateAt(t, l, run, rules, 1);
    });
  });
}
