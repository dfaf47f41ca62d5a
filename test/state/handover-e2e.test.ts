// End-to-end SHarP handovers in network namespaces with E-State, Redis and
// direct copy as the state mover, while probe traffic runs both ways: the
// same guarantees as test/handover/engine.test.ts (nothing lost, reordered
// or duplicated; stamp == sequence number; held == released; no packet at
// the controller), and the VNF's per-flow records really crossed the
// backend.
import t from 'tap';
import type { Test } from 'tap';
import { testLab, type TestLab } from '../helpers/lab.js';
import { UDP, exactRules, wildcardRules, runHandovers, assertClean, type HandoverRun as Run } from '../helpers/handovers.js';
import { createStateMover, type StateKind } from '../../src/state/factory.js';
import { StateManagerMover } from '../../src/state/mover.js';
import { EStateManager } from '../../src/state/estate-manager.js';
import { RedisStateManager } from '../../src/state/redis-manager.js';
import { findRedisServer, startRedisServer } from '../../src/state/redis-server.js';

const redisFound = findRedisServer();
const redisSkip = 'reason' in redisFound ? `redis-server unavailable: ${redisFound.reason}` : false;
if (redisSkip) console.log(`# ${redisSkip}`);

/** After the run the flows' records are at `run.at` only. */
async function assertStateAt(t: Test, l: TestLab, run: Run, rules: number[], records: number): Promise<void> {
  const covers = rules.map((id) => l.dp.getRule(id)!.match);
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
