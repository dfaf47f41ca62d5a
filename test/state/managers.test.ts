// The state managers behind one interface, driven through the engine's
// StateMover adapter, on the real XDP data plane: the records are the
// example VNF's per-flow entries in its BPF `flow_state` map, in a lab of
// network namespaces. Every backend moves exactly the covered flows, byte
// for byte, and rolls back.
import t from 'tap';
import type { Test } from 'tap';
import { existsSync } from 'node:fs';
import { testLab, type TestLab } from '../helpers/lab.js';
import { ruleCovers, type HandoverContext } from '../../src/handover/state-mover.js';
import { StateManagerMover } from '../../src/state/mover.js';
import { createStateManager, createStateMover, parseStateKind, STATE_KINDS, type StateKind } from '../../src/state/factory.js';
import { EStateManager } from '../../src/state/estate-manager.js';
import { CopyStateManager } from '../../src/state/copy-manager.js';
import { RedisStateManager } from '../../src/state/redis-manager.js';
import { VnfMapStateManager } from '../../src/state/vnf-map-manager.js';
import { findRedisServer, startRedisServer, type RedisServer } from '../../src/state/redis-server.js';
import { findRedisCli, startRedisCluster } from '../../src/state/redis-cluster-server.js';
import { handoverTag, STAGED_TTL_MS } from '../../src/state/redis-stage.js';
import { flowItemKey, flowKeyString } from '../../src/state/flow-key.js';
import type { StateManager } from '../../src/state/types.js';
import { Phase, type FlowKey, type Rule } from '../../src/dataplane/types.js';

const UDP = 17;
const INSTANCES = ['vnf1', 'vnf2'] as const;

const redisFound = findRedisServer();
const redisSkip = 'reason' in redisFound ? `redis-server unavailable: ${redisFound.reason}` : false;
if (redisSkip) console.log(`# ${redisSkip}`);
const cliFound = findRedisCli();
const clusterSkip = redisSkip || ('reason' in cliFound ? `redis-cli unavailable: ${cliFound.reason}` : false);

async function redisServer(t: Test): Promise<RedisServer> {
  const s = await startRedisServer();
  t.teardown(() => s.stop());
  return s;
}

/** a manager of each kind, closed on teardown */
async function manager(t: Test, kind: StateKind): Promise<StateManager> {
  const m = kind === 'redis' ? new RedisStateManager({ url: (await redisServer(t)).url }) : createStateManager(kind);
  t.teardown(() => m.close());
  return m;
}

/** struct sharp_vnf_flow_state: packets, bytes (u64, host order) */
function record(packets: bigint, bytes: bigint): Buffer {
  const v = Buffer.alloc(16);
  v.writeBigUInt64LE(packets, 0);
  v.writeBigUInt64LE(bytes, 8);
  return v;
}

/**
 * The example VNF's flow_state maps of vnf1 and vnf2 in one lab, read and
 * written through the XDP data plane, and handover contexts over it. Five
 * client→server flows (sport 20000..20004) start with records at vnf1;
 * exact rules on s1 carry the first three: they are the moving flows.
 */
class VnfState {
  /** the rules of the moving flows (sport 20000..20002) */
  readonly rules: Rule[] = [];
  /** a rule for a flow that has no record anywhere */
  idleRule!: Rule;

  constructor(readonly l: TestLab) {}

  static async create(t: Test): Promise<VnfState> {
    const w = new VnfState(await testLab(t, { defaultRules: false }));
    for (let i = 0; i < 3; i++) w.rules.push(await w.#exactRule(w.flow(20000 + i)));
    w.idleRule = await w.#exactRule(w.flow(30000));
    return w;
  }

  #exactRule(flow: FlowKey): Promise<Rule> {
    return this.l.dp.addRule({ switch: 's1', match: { kind: 'exact', flow }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  }

  get dp(): TestLab['dp'] {
    return this.l.dp;
  }

  flow(sport: number, dport = 9000): FlowKey {
    return { src: this.l.lab.client.ip, dst: this.l.lab.server.ip, sport, dport, proto: UDP };
  }

  /** the instance's map, read from the kernel: flow string → record bytes */
  async records(instance: string): Promise<Map<string, Buffer>> {
    return new Map((await this.dp.exportState(instance, 'all')).map((e) => [flowKeyString(e.flow), e.value]));
  }

  /** the map as plain data, for comparisons */
  async snapshot(instance: string): Promise<Record<string, string>> {
    const m = await this.records(instance);
    return Object.fromEntries([...m.keys()].sort().map((k) => [k, m.get(k)!.toString('hex')]));
  }

  async record(instance: string, flow: FlowKey): Promise<Buffer | undefined> {
    return (await this.records(instance)).get(flowKeyString(flow));
  }

  async packets(instance: string, flow: FlowKey): Promise<bigint | undefined> {
    return (await this.record(instance, flow))?.readBigUInt64LE(0);
  }

  async count(instance: string): Promise<number> {
    return (await this.dp.exportState(instance, 'all')).length;
  }

  async put(instance: string, flow: FlowKey, packets: bigint, bytes = packets * 100n): Promise<void> {
    await this.dp.importState(instance, [{ flow, value: record(packets, bytes) }]);
  }

  /** both maps emptied, then the five records at vnf1 */
  async reset(): Promise<void> {
    for (const i of INSTANCES) {
      const all = await this.dp.exportState(i, 'all');
      if (all.length > 0)
        await this.dp.deleteState(
          i,
          all.map((e) => e.flow),
        );
    }
    for (let i = 0; i < 5; i++) await this.put('vnf1', this.flow(20000 + i), BigInt(100 + i));
  }

  /** a context as the engine builds it, over the real data plane */
  context(id: number, from: string, to: string, rules: readonly Rule[] = this.rules): HandoverContext {
    return { id, rules, from, to, covers: ruleCovers(rules), selection: rules.map((r) => r.match), counts: { preSent: 0n, preSeen: 0n, postSent: 0n }, timings: {}, vnfState: this.dp };
  }
}

/** One lab per top-level test; every subtest starts from the five records at vnf1. */
async function sharedLab(t: Test): Promise<VnfState> {
  const w = await VnfState.create(t);
  t.beforeEach(() => w.reset());
  return w;
}

/** The tests every kind passes (make: the manager under test, when not the kind's default). */
async function commonTests(t: Test, kind: StateKind, w: VnfState, make: (t: Test) => Promise<StateManager> = (t) => manager(t, kind)): Promise<void> {
  await t.test(`${kind}: moves exactly the covered flows' records, and back`, async (t) => {
    const m = await make(t);
    const mover = new StateManagerMover(m);
    t.equal(mover.name, kind);
    const before = await w.snapshot('vnf1');
    t.equal(Object.keys(before).length, 5, 'five records in vnf1’s map');
    t.same(await w.snapshot('vnf2'), {}, 'none in vnf2’s');
    const r = await mover.move(w.context(1, 'vnf1', 'vnf2'), new AbortController().signal);
    t.same(r, { records: 3, bytes: 48 }, '3 records of 16 bytes');
    const at1 = await w.records('vnf1');
    const at2 = await w.records('vnf2');
    t.equal(at1.size, 2);
    t.equal(at2.size, 3);
    for (let i = 0; i < 5; i++) {
      const f = w.flow(20000 + i);
      const k = flowKeyString(f);
      if (i < 3) {
        t.equal(at2.get(k)?.readBigUInt64LE(0), BigInt(100 + i), `flow ${i} arrived intact`);
        t.equal(at2.get(k)?.toString('hex'), before[k], `flow ${i}: vnf2's map entry is vnf1's, byte for byte`);
        t.equal(at1.get(k), undefined, `flow ${i} left vnf1`);
      } else {
        t.equal(at1.get(k)?.readBigUInt64LE(0), BigInt(100 + i), `flow ${i} stays`);
        t.equal(at1.get(k)?.toString('hex'), before[k]);
        t.equal(at2.get(k), undefined);
      }
    }
    const back = await mover.move(w.context(2, 'vnf2', 'vnf1'), new AbortController().signal);
    t.equal(back.records, 3);
    t.equal(await w.count('vnf1'), 5);
    t.equal(await w.count('vnf2'), 0);
    t.same(await w.snapshot('vnf1'), before, 'vnf1’s map is as it was, byte for byte');
    const s = m.stats();
    t.equal(s.moves, 2);
    t.equal(s.records, 6);
    t.equal(s.bytes, 96);
    if (kind !== 'vnf-map') t.ok(s.transportBytes >= 96, `${s.transportBytes} bytes crossed the ${kind} transport`);
  });

  await t.test(`${kind}: a move of flows that have no state yet moves nothing, fine`, async (t) => {
    const m = await make(t);
    const before = await w.snapshot('vnf1');
    const r = await new StateManagerMover(m).move(w.context(11, 'vnf1', 'vnf2', [w.idleRule]), new AbortController().signal);
    t.same(r, { records: 0, bytes: 0 });
    t.equal(await w.count('vnf1'), 5);
    t.same(await w.snapshot('vnf1'), before, 'vnf1’s map untouched');
    t.equal(await w.count('vnf2'), 0);
  });

  await t.test(`${kind}: a move aborted half-way rolls back to the old instance`, async (t) => {
    const m = await make(t);
    const mover = new StateManagerMover(m);
    const before = await w.snapshot('vnf1');
    const ctx = w.context(3, 'vnf1', 'vnf2');
    // abort right after the old instance exported (the signal is checked after every step)
    const ac = new AbortController();
    const dp = w.dp;
    const exportState = dp.exportState.bind(dp);
    let exported = 0;
    dp.exportState = async (...a) => {
      const r = await exportState(...a);
      exported += r.length;
      ac.abort(new Error('state timeout'));
      return r;
    };
    try {
      await t.rejects(mover.move(ctx, ac.signal), { message: 'state timeout' });
    } finally {
      Reflect.deleteProperty(dp, 'exportState'); // the data plane's own method again
    }
    t.equal(exported, 3, 'the old instance had exported the 3 moving records');
    await mover.rollback(ctx);
    t.equal(await w.count('vnf1'), 5, 'vnf1 keeps every record');
    t.same(await w.snapshot('vnf1'), before, 'vnf1’s map is as before, byte for byte');
    t.equal(await w.count('vnf2'), 0, 'vnf2 has none');
    t.equal(m.stats().rollbacks, 1);
  });

  await t.test(`${kind}: rolling back a completed move gives the state back`, async (t) => {
    const m = await make(t);
    const mover = new StateManagerMover(m);
    const before = await w.snapshot('vnf1');
    const ctx = w.context(4, 'vnf1', 'vnf2');
    await mover.move(ctx, new AbortController().signal);
    t.equal(await w.count('vnf2'), 3, 'the move completed');
    await w.put('vnf2', w.flow(20000), 999n); // the new instance counted on after the release
    await mover.rollback(ctx);
    t.equal(await w.count('vnf1'), 5);
    t.equal(await w.count('vnf2'), 0);
    t.equal(await w.packets('vnf1', w.flow(20000)), 999n, 'with what the new instance had counted');
    t.same(
      await w.snapshot('vnf1'),
      { ...before, [flowKeyString(w.flow(20000))]: record(999n, 99900n).toString('hex') },
      'every other record as before, byte for byte',
    );
  });
}

t.test('vnf-map', async (t) => {
  const w = await sharedLab(t);
  await commonTests(t, 'vnf-map', w);
});

t.test('estate', async (t) => {
  const w = await sharedLab(t);
  await commonTests(t, 'estate', w);

  await t.test('estate: the old instance’s node holds the records between leaving and arriving; they cross over gRPC', async (t) => {
    const m = new EStateManager({ timeoutMs: 1000 });
    t.teardown(() => m.close());
    const ctx = w.context(5, 'vnf1', 'vnf2');
    const at1 = await w.records('vnf1');
    const ac = new AbortController();
    const dep = await m.leaving(ctx, ac.signal);
    const n1 = await m.node('vnf1');
    const n2 = await m.node('vnf2');
    t.not(n1.address, n2.address, `one node per instance: ${n1.address}, ${n2.address}`);
    t.same(n1.keys('flow/').sort(), dep.keys.slice().sort());
    t.same(n1.get(flowItemKey(w.flow(20001))), at1.get(flowKeyString(w.flow(20001))), 'the map entry, byte for byte');
    t.equal(await w.count('vnf2'), 0, 'nothing at vnf2 yet');
    t.equal(await w.count('vnf1'), 5, 'vnf1 still has them until commit');
    await m.arriving(ctx, dep, ac.signal);
    t.equal(await w.count('vnf2'), 3, 'imported into vnf2’s map');
    t.same(await w.record('vnf2', w.flow(20001)), at1.get(flowKeyString(w.flow(20001))), 'vnf2’s map entry, byte for byte');
    t.equal(n2.stats().served['Fetch'] ?? 0, 0);
    t.equal(n1.stats().served['Fetch'], 1, 'vnf2 fetched them from vnf1’s node');
    await m.commit(ctx, dep, ac.signal);
    t.same(n1.keys('flow/'), [], 'vnf1’s node forgot them (dropped over gRPC)');
    t.equal(n1.stats().served['Drop'], 1);
    t.equal(n2.size, 0, 'vnf2’s map is the state; its node keeps no copy');
    t.equal(await w.count('vnf1'), 2);
  });

  await t.test('estate: a peer that cannot be reached fails the move (no hang); rollback restores', async (t) => {
    const m = new EStateManager({ timeoutMs: 200, retries: 1 });
    t.teardown(() => m.close());
    const mover = new StateManagerMover(m);
    const before = await w.snapshot('vnf1');
    await m.node('vnf1');
    await (await m.node('vnf2')).close(); // vnf2 gone
    const ctx = w.context(6, 'vnf1', 'vnf2');
    // vnf2's own node is closed: its requests fail at once
    await t.rejects(mover.move(ctx, new AbortController().signal), { message: /closed|did not answer/ });
    await mover.rollback(ctx);
    t.equal(await w.count('vnf1'), 5);
    t.same(await w.snapshot('vnf1'), before, 'vnf1’s map is as before');
    t.equal(await w.count('vnf2'), 0);
  });
});

t.test('copy', async (t) => {
  const w = await sharedLab(t);
  await commonTests(t, 'copy', w);

  await t.test('copy: an instance endpoint that refuses the connection fails the push', async (t) => {
    const m = new CopyStateManager({ timeoutMs: 1000 });
    t.teardown(() => m.close());
    const before = await w.snapshot('vnf1');
    const b = await m.endpoint('vnf2');
    await b.close();
    const ctx = w.context(7, 'vnf1', 'vnf2');
    await t.rejects(m.leaving(ctx, new AbortController().signal), { name: 'StateError', message: /copy: pushing the state to 127\.0\.0\.1:\d+ failed: connect ECONNREFUSED/ });
    t.same(await w.snapshot('vnf1'), before, 'vnf1’s map untouched');
    t.equal(await w.count('vnf2'), 0);
  });
});

t.test('redis', { skip: redisSkip }, async (t) => {
  const w = await sharedLab(t);
  await commonTests(t, 'redis', w);

  await t.test('redis: the records are in the server between leaving and arriving, and gone after commit', async (t) => {
    const server = await redisServer(t);
    const m = new RedisStateManager({ url: server.url, keyPrefix: 'test:' });
    t.teardown(() => m.close());
    const c = await m.client();
    const ctx = w.context(8, 'vnf1', 'vnf2');
    const at1 = await w.records('vnf1');
    const ac = new AbortController();
    const dep = await m.leaving(ctx, ac.signal);
    t.same((await c.keys('test:*')).sort(), dep.keys.slice().sort());
    const f = flowKeyString(w.flow(20002));
    t.equal(f, '17/10.0.0.1:20002>10.0.0.2:9000');
    t.same(await c.getBuffer(`test:flow:${f}`), at1.get(f), 'the map entry, byte for byte');
    const ttls = await Promise.all(dep.keys.map((k) => c.pttl(k)));
    t.ok(ttls.every((ms) => ms > 0 && ms <= STAGED_TTL_MS), `every staged record expires by itself (a write landing after a rollback swept the keys is not kept forever): PTTL ${Math.min(...ttls)}–${Math.max(...ttls)} ms`);
    await m.arriving(ctx, dep, ac.signal);
    await m.commit(ctx, dep, ac.signal);
    t.equal(await c.dbsize(), 0, 'nothing left in Redis');
    t.equal(await w.count('vnf2'), 3);
    t.same(await w.record('vnf2', w.flow(20002)), at1.get(f), 'vnf2’s map entry, byte for byte');
    t.equal(await w.count('vnf1'), 2);
  });

  await t.test('redis: a server that went away fails the move promptly, and a missing record is reported', async (t) => {
    const server = await redisServer(t);
    const m = new RedisStateManager({ url: server.url, timeoutMs: 500 });
    t.teardown(() => m.close());
    const before = await w.snapshot('vnf1');
    const ctx = w.context(9, 'vnf1', 'vnf2');
    const ac = new AbortController();
    const dep = await m.leaving(ctx, ac.signal);
    const c = await m.client();
    await c.del(dep.keys[0]!);
    await t.rejects(m.arriving(ctx, dep, ac.signal), { name: 'StateError', message: /redis: vnf2 obtained 2 of the 3 records vnf1 handed over \(missing e\.g\. 17\// });
    t.equal(await w.count('vnf2'), 0, 'nothing imported');
    await server.stop();
    await t.rejects(m.leaving(ctx, ac.signal), /Stream isn't writeable|Connection is closed|ECONNREFUSED|timed out/);
    await new StateManagerMover(m).rollback(ctx);
    t.equal(await w.count('vnf1'), 5, 'the old instance still has its state');
    t.same(await w.snapshot('vnf1'), before, 'byte for byte');
    t.equal(await w.count('vnf2'), 0);
  });

  await t.test('redis: unreachable server is reported with its address', async (t) => {
    const server = await redisServer(t);
    const url = server.url;
    await server.stop();
    const m = new RedisStateManager({ url, timeoutMs: 500 });
    t.teardown(() => m.close());
    await t.rejects(m.start(), { name: 'StateError', message: new RegExp(`redis: cannot reach ${url.replace(/[/.]/g, '\\$&')}`) });
  });
});

t.test('redis on a Redis Cluster (3 masters, a replica each)', { skip: clusterSkip }, async (t) => {
  const w = await sharedLab(t);
  const cluster = await startRedisCluster();
  t.teardown(() => cluster.stop());
  const clustered = async (t: Test): Promise<RedisStateManager> => {
    // one node named: the client learns the others
    const m = new RedisStateManager({ cluster: cluster.startupNodes.slice(0, 1) });
    t.teardown(() => m.close());
    return m;
  };
  await commonTests(t, 'redis', w, clustered);

  await t.test('redis cluster: a handover\'s records share its hash tag, one slot, one master; gone after commit', async (t) => {
    const m = await clustered(t);
    const ctx = w.context(8, 'vnf1', 'vnf2');
    const at1 = await w.records('vnf1');
    const ac = new AbortController();
    const dep = await m.leaving(ctx, ac.signal);
    t.equal(dep.keys.length, 3);
    for (const k of dep.keys) t.ok(k.startsWith(`sharp:${handoverTag(8)}:flow:`), `${k}: the prefix, then the handover's tag`);
    const slots = new Set(await Promise.all(dep.keys.map(async (k) => (await cluster.cli(cluster.nodes[0]!.port, ['CLUSTER', 'KEYSLOT', k])).trim())));
    t.equal(slots.size, 1, `every key in one slot (${[...slots].join()})`);
    const owner = await cluster.ownerOf(dep.keys[0]!);
    const top = await cluster.topology();
    for (const n of top.filter((x) => x.role === 'master')) {
      const size = Number((await cluster.cli(n.port, ['DBSIZE'])).trim());
      t.equal(size, n.port === owner.master.port ? 3 : 0, `master ${n.address}: ${size} keys${n.port === owner.master.port ? ' (the slot\'s owner)' : ''}`);
    }
    const f = flowKeyString(w.flow(20002));
    t.same(await cluster.cli(owner.master.port, ['--no-raw', 'STRLEN', `sharp:${handoverTag(8)}:flow:${f}`]).then((s) => s.trim()), '(integer) 16', 'the 16-byte map entry is on the owner');
    await m.arriving(ctx, dep, ac.signal);
    await m.commit(ctx, dep, ac.signal);
    for (const n of top.filter((x) => x.role === 'master')) t.equal(Number((await cluster.cli(n.port, ['DBSIZE'])).trim()), 0, `nothing left on ${n.address}`);
    t.same(await w.record('vnf2', w.flow(20002)), at1.get(f), 'vnf2’s map entry, byte for byte');
  });

  await t.test('redis cluster: a failover that outlasts failoverMs fails the move with its reason; the rollback leaves the state at the old instance', async (t) => {
    const m = new RedisStateManager({ cluster: cluster.startupNodes.slice(0, 1), timeoutMs: 300, failoverMs: 600 });
    t.teardown(() => m.close());
    await m.start();
    const mover = new StateManagerMover(m);
    const before = await w.snapshot('vnf1');
    const ctx = w.context(20, 'vnf1', 'vnf2');
    const owner = await cluster.ownerOf(handoverTag(20));
    // the slot's replicas too: no failover can end the outage within failoverMs, however slow this machine runs
    const frozen = [owner.master, ...owner.replicas];
    for (const n of frozen) process.kill(n.pid, 'SIGSTOP');
    try {
      const err = await mover.move(ctx, new AbortController().signal).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      t.comment(`the move failed: ${err?.name}: ${err?.message}`);
      t.match(err, { name: 'StateError', message: /^redis: .+ \(the cluster did not recover within 600 ms: \d+ attempts?\)$/ }, 'the move failed, saying why');
      await mover.rollback(ctx);
    } finally {
      for (const n of frozen) process.kill(n.pid, 'SIGCONT');
    }
    t.same(await w.snapshot('vnf1'), before, 'vnf1 keeps every record, byte for byte');
    t.equal(await w.count('vnf2'), 0, 'vnf2 has none');
    await cluster.waitHealthy();
    const next = await mover.move(w.context(21, 'vnf1', 'vnf2'), new AbortController().signal);
    t.equal(next.records, 3, 'the next move, after the cluster recovered, completes');
    t.equal(await w.count('vnf2'), 3);
  });

  await t.test('redis cluster: one that cannot be reached is reported with its nodes', async (t) => {
    const m = new RedisStateManager({ cluster: ['127.0.0.1:1'], timeoutMs: 300 });
    t.teardown(() => m.close());
    await t.rejects(m.start(), { name: 'StateError', message: /^redis: cannot reach the cluster 127\.0\.0\.1:1: / });
  });

  await t.test('redis cluster: options that mix one server and a cluster are refused', async (t) => {
    t.throws(() => new RedisStateManager({ url: 'redis://127.0.0.1:6379', cluster: ['127.0.0.1:7000'] }), { name: 'StateError', message: 'redis: give one of url/host/port, spawn, cluster, spawnCluster (given: url/host/port, cluster)' });
  });

  await t.test('redis cluster: spawnCluster starts a private cluster, and close stops every process and removes its folder', async (t) => {
    const m = createStateManager('redis', { redis: { spawnCluster: { masters: 3, replicas: 0 } } }) as RedisStateManager;
    t.teardown(() => m.close());
    const r = await new StateManagerMover(m).move(w.context(12, 'vnf1', 'vnf2'), new AbortController().signal);
    t.equal(r.records, 3);
    const own = m.spawnedCluster!;
    t.equal(own.nodes.length, 3, '3 masters, no replica');
    t.match(m.endpoint, /^cluster 127\.0\.0\.1:\d+,127\.0\.0\.1:\d+,127\.0\.0\.1:\d+$/);
    for (const n of own.nodes) t.ok(existsSync(`/proc/${n.pid}`), `node ${n.address} running (pid ${n.pid})`);
    await m.close();
    for (const n of own.nodes) t.notOk(existsSync(`/proc/${n.pid}`), `node ${n.address} stopped`);
    t.notOk(existsSync(own.dir), `${own.dir} removed`);
  });
});

t.test('the factory: every kind by name; redis without a server starts its own and stops it on close', async (t) => {
  t.same([...STATE_KINDS], ['estate', 'redis', 'copy', 'vnf-map', 'conntrack']);
  t.type(createStateManager('estate'), EStateManager);
  t.type(createStateManager('copy'), CopyStateManager);
  t.type(createStateManager('vnf-map'), VnfMapStateManager);
  t.type(createStateManager('redis', { redis: { url: 'redis://127.0.0.1:1' } }), RedisStateManager);
  t.equal(parseStateKind('copy'), 'copy');
  t.throws(() => parseStateKind('zookeeper'), { message: "unknown state manager 'zookeeper' (choose one of estate, redis, copy, vnf-map, conntrack)" });
  const mover = createStateMover('estate');
  t.type(mover, StateManagerMover);
  t.equal(mover.name, 'estate');
  await mover.close();

  if (redisSkip) return;
  const w = await VnfState.create(t);
  await w.reset();
  const m = createStateManager('redis') as RedisStateManager;
  t.teardown(() => m.close());
  await m.start();
  const endpoint = m.endpoint!;
  t.match(endpoint, /^127\.0\.0\.1:\d+$/, `own redis-server on ${endpoint}`);
  const r = await new StateManagerMover(m).move(w.context(10, 'vnf1', 'vnf2'), new AbortController().signal);
  t.equal(r.records, 3);
  t.equal(await w.count('vnf2'), 3, 'vnf2’s map has them');
  const pid = (await import('node:child_process')).execFileSync('pgrep', ['-f', `redis-server 127.0.0.1:${endpoint.split(':')[1]}`], { encoding: 'utf8' }).trim();
  t.ok(pid, `redis-server running (pid ${pid})`);
  await m.close();
  t.notOk(existsSync(`/proc/${pid}`), 'stopped on close');
});
