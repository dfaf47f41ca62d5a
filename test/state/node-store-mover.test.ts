// Redis as the state backend of a deployment of nodes: the old instance's
// node writes the moving flows' records to the deployment's Redis, the new
// instance's node reads them; the controller names flows and never connects
// to the store. A real redis-server (password-protected, on the link between
// the VNF hosts) shows who wrote and who read: MONITOR and CLIENT LIST. Then
// the same through a Redis Cluster (3 masters, a replica each), with the
// master of a handover's slot frozen while the handover moves its state.
import t from 'tap';
import { Redis } from 'ioredis';
import { HandoverEngine } from '../../src/handover/engine.js';
import { NodeStoreStateMover } from '../../src/state/node-store-mover.js';
import { findRedisServer } from '../../src/state/redis-server.js';
import { findRedisCli } from '../../src/state/redis-cluster-server.js';
import { flowMoved } from '../../src/handover/engine.js';
import { clusterKeys, FailingOverMover } from '../helpers/redis-cluster.js';
import { sleep } from '../../src/util/mutex.js';
import { assertIntact, controllerCalls, finishTraffic, movingRules, STATE_BYTES_METHODS, vnfNodesWorld } from '../helpers/vnf-nodes.js';

const found = findRedisServer();
const skip = 'reason' in found ? `redis-server unavailable: ${found.reason}` : false;
const cliFound = findRedisCli();
const clusterSkip = skip || ('reason' in cliFound ? `redis-cli unavailable: ${cliFound.reason}` : false);

interface Seen {
  command: string;
  args: string[];
  source: string;
}

t.test('handovers under traffic: the old node writes the state to Redis, the new node reads it; the controller never touches it', { skip }, async (t) => {
  const w = await vnfNodesWorld(t, { redis: true });
  const r = w.redis!;
  const ip = (i: 'vnf1' | 'vnf2'): string => w.stateAddress[i].split(':')[0]!;
  // the test's own look into the store: over its Unix socket, so it is never mistaken for a node
  const inspector = new Redis({ path: r.unixSocket, password: r.password, connectionName: 'test-inspector', lazyConnect: true });
  const monitor = await (async () => {
    await inspector.connect();
    return inspector.monitor();
  })();
  const marker = new Redis({ path: r.unixSocket, password: r.password, connectionName: 'test-marker' });
  t.teardown(() => {
    monitor.disconnect();
    inspector.disconnect();
    marker.disconnect();
  });
  const seen: Seen[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => seen.push({ command: String(args[0]).toLowerCase(), args: args.slice(1).map(String), source }));

  const d = await w.connect(() => undefined);
  t.equal(d.nodes.filter((n) => n.stateStore !== '').length, 2, 'both VNF nodes report the store they stage state in');
  const rules = movingRules(d);
  const engine = new HandoverEngine(d, { mover: new NodeStoreStateMover() });
  const { gens, sinks } = w.traffic(4);
  for (const g of gens) g.start(2000);
  await sleep(200);
  let at: 'vnf1' | 'vnf2' = 'vnf1';
  for (let i = 0; i < 4; i++) {
    const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const h = await engine.handover({ rules, from: at, to, expectedPps: 4000 });
    t.equal(h.outcome, 'completed', `handover ${h.id} ${h.from}→${h.to}: ${h.reason ?? 'completed'}`);
    t.match(h.state, { records: 8, path: 'host-to-host', transport: 'store' }, `handover ${h.id}: 8 records through the store`);
    if (h.outcome === 'completed') at = to;
    await sleep(30);
  }

  // every command before the marker has been seen once the marker is
  const mark = `sharpt-marker-${process.pid}`;
  const markerSeen = new Promise<void>((resolve) => monitor.on('monitor', (_t: string, args: string[]) => String(args[1]) === mark && resolve()));
  await marker.echo(mark);
  await markerSeen;
  const byInstance = (cmd: string, instance: string): Seen[] => seen.filter((s) => s.command === cmd && s.args.some((a) => a.includes(`:${instance}:flow:`)));
  for (const [from, to] of [
    ['vnf1', 'vnf2'],
    ['vnf2', 'vnf1'],
  ] as const) {
    const sets = byInstance('set', from);
    const gets = byInstance('mget', from);
    t.ok(sets.length >= 2 * 8, `${sets.length} SETs of ${from}'s records`);
    t.same([...new Set(sets.map((s) => s.source.split(':')[0]))], [ip(from)], `every SET of ${from}'s records came from ${from}'s node (${ip(from)})`);
    t.ok(gets.length >= 2, `${gets.length} MGETs of ${from}'s records`);
    t.same([...new Set(gets.map((s) => s.source.split(':')[0]))], [ip(to)], `every MGET of them came from ${to}'s node (${ip(to)})`);
  }
  const sources = new Set(seen.filter((s) => !s.source.startsWith('unix')).map((s) => s.source.split(':')[0]));
  t.same([...sources].sort(), [ip('vnf1'), ip('vnf2')].sort(), 'no one but the two VNF nodes sent the store a command (the test itself uses its Unix socket)');
  const clients = (await marker.client('LIST')) as string;
  const named = clients
    .trim()
    .split('\n')
    .map((l) => ({ name: /\bname=(\S*)/.exec(l)?.[1] ?? '', addr: /\baddr=(\S+)/.exec(l)?.[1] ?? '' }));
  t.same(
    named.filter((c) => !c.addr.startsWith('/') && !c.addr.startsWith('unix')).map((c) => `${c.name}@${c.addr.split(':')[0]}`).sort(),
    [`sharp-node-${w.nodeOf.vnf1}@${ip('vnf1')}`, `sharp-node-${w.nodeOf.vnf2}@${ip('vnf2')}`].sort(),
    'CLIENT LIST: over the network, exactly one connection from each VNF node',
  );
  t.same(await marker.keys('sharp:*'), [], 'the store forgot every staged record once it was imported');
  t.equal(controllerCalls(d, STATE_BYTES_METHODS), 0, 'the controller made no ExportState, ImportState or DeleteState call');

  // the store goes away: the move fails with its cause, the handover rolls back, vnf1 keeps its state
  const before = (await d.vnfState.exportState(at, 'all')).length;
  monitor.disconnect();
  inspector.disconnect();
  marker.disconnect();
  await r.server.stop();
  const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
  const h = await engine.handover({ rules, from: at, to, expectedPps: 4000 });
  t.equal(h.outcome, 'aborted', `with the store gone: ${h.reason}`);
  t.match(h.reason, new RegExp(`StageState: redis redis://${ip('vnf1').replace(/\./g, '\\.')}:6379 \\(keys sharp:\\*\\): cannot stage 8 records of ${at}: the server is not reachable`));
  t.equal((await d.vnfState.exportState(at, 'all')).length, before, `${at} kept all ${before} of its records`);
  t.equal((await d.vnfState.exportState(to, 'all')).length, 0, `${to} holds none`);
  const reports = await finishTraffic(gens, sinks);
  assertIntact(t, reports, '4 handovers through the store and one rolled back');
});

t.test('a Redis Cluster as the nodes\' store: handovers under traffic, a master failing over mid-run, nothing lost or duplicated', { skip: clusterSkip }, async (t) => {
  const w = await vnfNodesWorld(t, { redis: 'cluster' });
  const cluster = w.redisCluster!.cluster;
  const d = await w.connect(() => undefined);
  const stores = d.nodes.filter((n) => n.stateStore !== '').map((n) => n.stateStore);
  t.equal(stores.length, 2, 'both VNF nodes report the store they stage state in');
  t.match(stores[0], /^redis cluster \d+\.\d+\.\d+\.\d+:7000 \(keys sharp:\*\)$/, `the store shows as the cluster: ${stores[0]}`);
  t.equal(stores[0], stores[1], 'one and the same store');
  const rules = movingRules(d);
  // handover 3: the master of its slot frozen just before its move (the replica takes over); handover 6: a manual failover during the move
  const mover = new FailingOverMover(new NodeStoreStateMover(), cluster, new Map([[3, 'freeze'], [6, 'manual']]));
  const engine = new HandoverEngine(d, { mover });
  const { gens, sinks } = w.traffic(4);
  // 500 probes/s per direction: a failover of a few seconds stays inside the hold rings
  for (const g of gens) g.start(500);
  await sleep(200);
  let at: 'vnf1' | 'vnf2' = 'vnf1';
  const results = [];
  for (let i = 0; i < 8; i++) {
    const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const h = await engine.handover({ rules, from: at, to, expectedPps: 1000 });
    results.push(h);
    if (h.outcome === 'completed') t.match(h.state, { records: 8, path: 'host-to-host', transport: 'store' }, `handover ${h.id} ${h.from}→${h.to} completed: 8 records through the cluster in ${h.stateMs.toFixed(0)} ms`);
    else t.match(h.reason, /redis|cluster|StageState|ObtainState|DiscardStagedState/, `handover ${h.id} ${h.outcome}: ${h.reason}`);
    t.equal(h.counts.overflow, 0n, `handover ${h.id}: no hold-ring overflow`);
    if (flowMoved(h)) at = to;
    await sleep(50);
  }
  for (const e of mover.events) t.comment(e);
  t.equal(mover.failovers.length, 2, 'two failovers happened during handovers');
  for (const f of mover.failovers) t.not(f.after, f.before, `handover ${f.id} (${f.kind}): the slot moved from ${f.before} to ${f.after}; the move took ${f.moveMs.toFixed(0)} ms`);
  for (const id of [4, 7]) t.ok(flowMoved(results[id - 1]!), `handover ${id}, the first after a failover, completed`);
  t.equal(controllerCalls(d, STATE_BYTES_METHODS), 0, 'the controller made no ExportState, ImportState or DeleteState call');
  const other: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
  t.equal((await d.vnfState.exportState(at, 'all')).length, 8, `the 8 records are at ${at}`);
  t.equal((await d.vnfState.exportState(other, 'all')).length, 0, `none at ${other}`);
  await cluster.waitHealthy();
  t.same(await clusterKeys(cluster, 'sharp:*'), [], 'no staged record left on any node of the cluster');
  const reports = await finishTraffic(gens, sinks);
  assertIntact(t, reports, '8 handovers through the cluster, two of them during a failover');
});
