// End-to-end SHarP handovers in network namespaces with E-State, Redis and
// direct copy as the state mover, while probe traffic runs both ways: the
// same guarantees as test/handover/engine.test.ts (nothing lost, reordered
// or duplicated; stamp == sequence number; held == released; no packet at
// the controller), and the VNF's per-flow records really crossed the
// backend. Redis also as a Redis Cluster (3 masters, a replica each; real
// redis-server processes on loopback), and with a master failing over
// while handovers run.
import t from 'tap';
import type { Test } from 'tap';
import { testLab, type TestLab } from '../helpers/lab.js';
import { UDP, exactRules, wildcardRules, runHandovers, assertClean, type HandoverRun as Run } from '../helpers/handovers.js';
import { createStateMover, type StateKind } from '../../src/state/factory.js';
import { StateManagerMover } from '../../src/state/mover.js';
import { EStateManager } from '../../src/state/estate-manager.js';
import { RedisStateManager } from '../../src/state/redis-manager.js';
import { findRedisServer, startRedisServer } from '../../src/state/redis-server.js';
import { findRedisCli, startRedisCluster, type RedisCluster } from '../../src/state/redis-cluster-server.js';
import { flowMoved } from '../../src/handover/engine.js';
import { clusterKeys, FailingOverMover } from '../helpers/redis-cluster.js';

const redisFound = findRedisServer();
const redisSkip = 'reason' in redisFound ? `redis-server unavailable: ${redisFound.reason}` : false;
if (redisSkip) console.log(`# ${redisSkip}`);
const cliFound = findRedisCli();
const clusterSkip = redisSkip || ('reason' in cliFound ? `redis-cli unavailable: ${cliFound.reason}` : false);

async function redisCluster(t: Test): Promise<RedisCluster> {
  const c = await startRedisCluster();
  t.teardown(() => c.stop());
  return c;
}

/** After the run the flows' records are at `run.at` only. */
async function assertStateAt(t: Test, l: TestLab, run: Run, rules: number[], records: number): Promise<void> {
  const covers = rules.map((id) => l.dp.getRule(id)!.match);
  const other = run.at === 'vnf1' ? 'vnf2' : 'vnf1';
  t.equal((await l.dp.exportState(run.at, covers)).length, records, `${records} records at ${run.at}`);
  t.equal((await l.dp.exportState(other, covers)).length, 0, `none left at ${other}`);
}

async function moverFor(t: Test, kind: StateKind | 'redis-cluster'): Promise<StateManagerMover> {
  let mover: StateManagerMover;
  if (kind === 'redis') {
    const server = await startRedisServer();
    t.teardown(() => server.stop());
    mover = createStateMover('redis', { redis: { url: server.url } });
  } else if (kind === 'redis-cluster') {
    const c = await redisCluster(t);
    mover = createStateMover('redis', { redis: { cluster: c.startupNodes.slice(0, 1) } });
  } else mover = createStateMover(kind);
  t.teardown(() => mover.close());
  return mover;
}

for (const kind of ['estate', 'redis', 'redis-cluster', 'copy'] as const) {
  t.test(`--state ${kind}: handovers stay lossless, ordered and stateful`, { skip: kind === 'redis' ? redisSkip : kind === 'redis-cluster' ? clusterSkip : false }, async (t) => {
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
      if (mover.manager instanceof RedisStateManager && kind === 'redis') t.equal(await (await mover.manager.client()).dbsize(), 0, 'nothing left in Redis');
      if (mover.manager instanceof RedisStateManager && kind === 'redis-cluster') {
        const c = await mover.manager.client();
        const masters = 'nodes' in c ? c.nodes('master') : [];
        t.equal(masters.length, 3, 'the client sees the 3 masters');
        const sizes = await Promise.all(masters.map((n) => n.dbsize()));
        t.same(sizes, [0, 0, 0], 'nothing left on any master');
      }
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

t.test('--state redis on a cluster: a master fails over while handovers run; nothing is lost or duplicated', { skip: clusterSkip }, async (t) => {
  const l = await testLab(t);
  const cluster = await redisCluster(t);
  // 1 s per command: a frozen master costs a timed-out attempt, then the client retries on the new slot map
  const inner = createStateMover('redis', { redis: { cluster: cluster.startupNodes, timeoutMs: 1000, failoverMs: 15_000 } });
  t.teardown(() => inner.close());
  // handover 3: its slot's master frozen (an automatic failover); handover 6: a manual failover during the move
  const mover = new FailingOverMover(inner, cluster, new Map([[3, 'freeze'], [6, 'manual']]));
  const rules = wildcardRules(l);
  // 300 probes/s per direction: a failover of a few seconds stays well inside the hold rings (8192 frames)
  const run = await runHandovers(l, { flows: 32, pps: 300, rules, count: 8, mover, gapMs: 50 });
  for (const e of mover.events) t.comment(e);
  t.equal(mover.failovers.length, 2, 'two failovers happened during handovers');
  for (const f of mover.failovers) t.not(f.after, f.before, `handover ${f.id} (${f.kind}): the slot moved from ${f.before} to ${f.after}; the move took ${f.moveMs.toFixed(0)} ms`);
  run.reports.forEach((r, i) => {
    const dir = i === 0 ? 'client→server' : 'server→client';
    t.ok(r.sent > 0, `${dir}: ${r.sent} probes sent`);
    t.equal(r.delivered, r.sent, `${dir}: every probe delivered`);
    t.equal(r.lost + r.reordered + r.duplicated, 0, `${dir}: nothing lost, reordered or duplicated`);
    t.equal(r.stampMismatches, 0, `${dir}: the VNF's counter equals the sequence number on every probe (state continuous)`);
  });
  for (const h of run.results) {
    const ms = h.stateMs.toFixed(0);
    if (h.outcome === 'completed') t.equal(h.state?.records, 64, `handover ${h.id} ${h.from}→${h.to} completed, 64 records moved in ${ms} ms`);
    else t.match(h.reason, /redis|cluster|timed out|state move/i, `handover ${h.id} ${h.outcome} with its reason: ${h.reason}`);
    t.equal(h.counts.held, h.counts.released, `handover ${h.id}: held ${h.counts.held} = released ${h.counts.released}`);
    t.equal(h.counts.overflow, 0n, `handover ${h.id}: no hold-ring overflow`);
  }
  for (const id of [4, 7]) t.ok(flowMoved(run.results[id - 1]!), `handover ${id}, the first after a failover, completed`);
  const top = await cluster.topology();
  t.equal(top.filter((x) => x.role === 'master' && x.slots.length > 0).length, 3, 'still 3 masters serving the slots');
  await assertStateAt(t, l, run, rules, 64);
  await cluster.waitHealthy();
  t.same(await clusterKeys(cluster, 'sharp:*'), [], 'no staged record left on any node of the cluster');
  const c = await l.dp.controllerDataPackets();
  t.equal(c.packets, 0n, 'the controller received 0 data packets');
});
