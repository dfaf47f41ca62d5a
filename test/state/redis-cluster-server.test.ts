// The private Redis Cluster (src/state/redis-cluster-server.ts): real
// redis-server processes made a cluster by redis-cli, every slot served,
// every master with a replica in sync; stop() and a start that fails half
// way leave no process and no file behind.
import t from 'tap';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { findRedisServer } from '../../src/state/redis-server.js';
import { findRedisCli, parseClusterNodes, startRedisCluster } from '../../src/state/redis-cluster-server.js';

const found = findRedisServer();
const cli = findRedisCli();
const skip = 'reason' in found ? `redis-server unavailable: ${found.reason}` : 'reason' in cli ? `redis-cli unavailable: ${cli.reason}` : false;

/** pids whose working directory is under `dir` (redis-server works in its --dir) */
function processesIn(dir: string): string[] {
  return readdirSync('/proc').filter((p) => {
    if (!/^\d+$/.test(p)) return false;
    try {
      return readlinkSync(`/proc/${p}/cwd`).startsWith(dir);
    } catch {
      return false;
    }
  });
}

t.test('CLUSTER NODES lines are read with roles, masters and slot ranges', async (t) => {
  const nodes = parseClusterNodes(
    [
      'a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460',
      'b2 127.0.0.1:7001@17001 slave a1 0 1700000000000 1 connected',
      'c3 127.0.0.1:7002@17002 master,fail - 0 0 2 connected 5461-10922 10923',
    ].join('\n'),
  );
  t.same(nodes, [
    { id: 'a1', address: '127.0.0.1:7000', port: 7000, role: 'master', failing: false, slots: [[0, 5460]] },
    { id: 'b2', address: '127.0.0.1:7001', port: 7001, role: 'replica', masterId: 'a1', failing: false, slots: [] },
    { id: 'c3', address: '127.0.0.1:7002', port: 7002, role: 'master', failing: true, slots: [[5461, 10922], [10923, 10923]] },
  ]);
});

t.test('a cluster of 3 masters with a replica each; stop removes every process and file', { skip }, async (t) => {
  const c = await startRedisCluster({ password: 'sharpt-cluster-pw' });
  t.teardown(() => c.stop());
  t.equal(c.nodes.length, 6, 'six redis-server processes');
  t.ok(c.dir.startsWith(os.tmpdir()) && c.dir.includes('sharp-redis-cluster-'), `its folder: ${c.dir}`);
  for (const n of c.nodes) t.ok(existsSync(`/proc/${n.pid}`), `${n.address} running (pid ${n.pid})`);
  const top = await c.topology();
  const masters = top.filter((x) => x.role === 'master');
  t.equal(masters.length, 3);
  t.equal(masters.reduce((a, m) => a + m.slots.reduce((b, [s, e]) => b + e - s + 1, 0), 0), 16384, 'the masters serve all 16384 slots');
  for (const m of masters) t.equal(top.filter((x) => x.masterId === m.id).length, 1, `master ${m.address} has one replica`);
  const owner = await c.ownerOf('{h7}');
  t.ok(masters.some((m) => m.port === owner.master.port) && owner.replicas.length === 1, `{h7}: slot ${owner.slot} on ${owner.master.address}, replica ${owner.replicas[0]?.address}`);
  await c.stop();
  for (const n of c.nodes) t.notOk(existsSync(`/proc/${n.pid}`), `${n.address} stopped`);
  t.notOk(existsSync(c.dir), 'its folder is gone');
});

t.test('a node that cannot start: the start fails and leaves nothing behind', { skip }, async (t) => {
  // a port already taken by someone else
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
  t.teardown(() => squatter.close());
  const taken = (squatter.address() as net.AddressInfo).port;
  const before = new Set(readdirSync(os.tmpdir()).filter((d) => d.startsWith('sharp-redis-cluster-')));
  const free = [31101, 31102];
  await t.rejects(startRedisCluster({ masters: 3, replicas: 0, ports: [...free, taken] }), { name: 'StateError', message: /exited|not ready/ });
  const left = readdirSync(os.tmpdir()).filter((d) => d.startsWith('sharp-redis-cluster-') && !before.has(d));
  t.same(left, [], 'no folder left');
  t.same(left.flatMap((d) => processesIn(`${os.tmpdir()}/${d}`)), [], 'no process left');
  await t.rejects(startRedisCluster({ masters: 2 }), { message: /masters 2: at least 3/ });
  await t.rejects(startRedisCluster({ ports: [7000] }), { message: /1 ports given for 6 nodes/ });
});
