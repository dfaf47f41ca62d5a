// The state benchmark runs end to end on a tiny workload and returns its
// rows (figures are not checked: they depend on the machine).
import t from 'tap';
import { benchState } from '../../src/state/bench.js';
import { findRedisServer } from '../../src/state/redis-server.js';
import { findRedisCli } from '../../src/state/redis-cluster-server.js';

t.test('benchState returns local, global and Redis rows', async (t) => {
  const rows = await benchState({ localOps: 2000, redisOps: 200, samples: 10, peerCounts: [1, 2], moves: 5, moveRecords: 64 });
  const find = (backend: string, op: string, peers: number | null = null) => rows.find((r) => r.backend === backend && r.op === op && r.peers === peers);
  for (const op of ['local set', 'local setMany (1000 per call)', 'local get']) t.ok((find('estate', op)?.opsPerSec ?? 0) > 0, `estate ${op}: ${find('estate', op)?.opsPerSec} ops/s`);
  for (const p of [1, 2]) {
    const r = find('estate', 'getGlobal (sum)', p);
    t.ok(r && r.medianMs! > 0 && r.p99Ms! >= r.medianMs!, `getGlobal with ${p} peer(s): median ${r?.medianMs} ms, p99 ${r?.p99Ms} ms`);
    t.equal(r?.note, undefined, 'no partial answers');
  }
  const transport = [find('estate', 'peer round trip (Get, in process)', 1), find('grpc', 'unary round trip (80 bytes, in process, Unix socket)', 1)];
  for (const r of transport) t.ok(r && r.medianMs! > 0 && r.cpuUsPerOp! > 0, `${r?.backend} ${r?.op}: median ${r?.medianMs} ms, ${r?.cpuUsPerOp} µs CPU per call`);
  if ('reason' in findRedisServer()) {
    t.comment('redis-server unavailable: Redis rows not checked');
    return;
  }
  for (const op of ['set', 'get']) t.ok((find('redis', op)?.opsPerSec ?? 0) > 0, `redis ${op}: ${find('redis', op)?.opsPerSec} ops/s`);
  for (const p of [1, 2]) t.ok(find('redis', 'global read (MGET + sum)', p)?.medianMs, `redis global read with ${p} peer(s)`);
  // a handover's state move, one server beside a cluster, in the same run
  for (const where of 'reason' in findRedisCli() ? ['one server'] : ['one server', 'cluster of 3 masters + 3 replicas']) {
    const r = find('redis', `state move (64 records), ${where}`);
    t.ok(r && r.medianMs! > 0 && r.p99Ms! >= r.medianMs! && r.samples === 5, `state move through ${where}: median ${r?.medianMs} ms, p99 ${r?.p99Ms} ms`);
  }
});
