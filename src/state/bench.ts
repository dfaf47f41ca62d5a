/**
 * State-store benchmark after the E-State paper (Peuster & Karl, NetSoft
 * 2016): operations per second of the local view, latency of the global
 * view with 1, 2, 4 and 8 peers, and the same workload against a
 * centralized store (a private redis-server), all in one run. Peers run in
 * processes of their own (as instances would), on Unix sockets. Beside
 * them, the cost of one peer round trip on E-State's transport and on a
 * bare grpc-js unary call (the transport before), measured in one process
 * so that the CPU figure covers both ends. And a handover's state move
 * (the Redis manager's leaving → arriving → commit of 256 records, the VNF's
 * map held in memory here) through one redis-server and through a Redis
 * Cluster of 3 masters with a replica each, side by side in the same run.
 * Nothing here asserts.
 */
import * as grpc from '@grpc/grpc-js';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { EStateNode } from './estate/node.js';
import { defaultSocketDir } from './estate/transport.js';
import { spawnPeer, type PeerProcess } from './estate/peer-process.js';
import type { FlowKey, FlowSelection, FlowStateEntry, VnfStateStore } from '../dataplane/types.js';
import { selects } from '../dataplane/types.js';
import type { HandoverContext } from '../handover/state-mover.js';
import { flowKeyString } from './flow-key.js';
import { StateManagerMover } from './mover.js';
import { findRedisCli } from './redis-cluster-server.js';
import { RedisStateManager, type RedisStateManagerOptions } from './redis-manager.js';
import { findRedisServer } from './redis-server.js';

export interface StateBenchRow {
  backend: 'estate' | 'redis' | 'grpc';
  /** what was measured */
  op: string;
  /** peers asked (global operations), else null */
  peers: number | null;
  opsPerSec: number | null;
  medianMs: number | null;
  p99Ms: number | null;
  samples: number;
  /** CPU time of this process per operation (µs), where measured */
  cpuUsPerOp?: number;
  note?: string;
}

export interface StateBenchOptions {
  /** local get/set operations per measurement (default 1 000 000; each measured 5 times, the median kept) */
  localOps?: number;
  /** Redis GET/SET round trips per measurement (default 20 000) */
  redisOps?: number;
  /** global reads per peer count (default 500) */
  samples?: number;
  /** default [1, 2, 4, 8] */
  peerCounts?: number[];
  /** include Redis (default: if redis-server is installed) */
  redis?: boolean;
  /** state moves per Redis setup (one server, cluster; default 200) */
  moves?: number;
  /** records per state move (default 256, as in the end-to-end tests) */
  moveRecords?: number;
  /** progress lines */
  log?: (line: string) => void;
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

const round = (x: number, d = 3): number => +x.toFixed(d);

function rate(n: number, fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return (n / Number(process.hrtime.bigint() - t0)) * 1e9;
}

/** the median of `rounds` measurements (the machine is shared: single runs are noisy) */
function medianRate(rounds: number, n: number, fn: () => void): number {
  const rs = Array.from({ length: rounds }, () => rate(n, fn)).sort((a, b) => a - b);
  return rs[rounds >> 1]!;
}

async function rateAsync(n: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await fn(i);
  return (n / Number(process.hrtime.bigint() - t0)) * 1e9;
}

async function latencies(n: number, warmup: number, fn: () => Promise<unknown>): Promise<{ medianMs: number; p99Ms: number; cpuUsPerOp: number }> {
  for (let i = 0; i < warmup; i++) await fn();
  const ms: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    ms.push(performance.now() - t);
  }
  const cpu = process.cpuUsage(cpu0);
  ms.sort((a, b) => a - b);
  return { medianMs: round(percentile(ms, 0.5)), p99Ms: round(percentile(ms, 0.99)), cpuUsPerOp: round((cpu.user + cpu.system) / n, 1) };
}

/**
 * One unary call on a bare grpc-js server and client in this process (the
 * payload passed through as bytes: no protobuf), the transport E-State used
 * before: the baseline of its own round trip.
 */
async function grpcRoundTrip(samples: number, payload: Buffer): Promise<{ medianMs: number; p99Ms: number; cpuUsPerOp: number }> {
  const pass = (b: Buffer): Buffer => b;
  const def: grpc.MethodDefinition<Buffer, Buffer> = { path: '/sharp.bench.Echo/Get', requestStream: false, responseStream: false, requestSerialize: pass, requestDeserialize: pass, responseSerialize: pass, responseDeserialize: pass };
  const server = new grpc.Server();
  server.addService({ Get: def } as grpc.ServiceDefinition, { Get: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) });
  // a Unix socket in the user's private folder (nothing on the network), like E-State's
  const sock = path.join(defaultSocketDir(), `bench-grpc-${process.pid}.sock`);
  await new Promise<number>((resolve, reject) => server.bindAsync(`unix:${sock}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const client = new grpc.Client(`unix:${sock}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  try {
    const call = (): Promise<Buffer> =>
      new Promise((resolve, reject) => client.makeUnaryRequest(def.path, pass, pass, payload, new grpc.Metadata(), { deadline: Date.now() + 5000 }, (e, v) => (e ? reject(e) : resolve(v!))));
    return await latencies(samples, 200, call);
  } finally {
    client.close();
    server.forceShutdown();
    rmSync(sock, { force: true });
  }
}

export async function benchState(options: StateBenchOptions = {}): Promise<StateBenchRow[]> {
  const log = options.log ?? ((): void => undefined);
  const localOps = options.localOps ?? 1_000_000;
  const redisOps = options.redisOps ?? 20_000;
  const samples = options.samples ?? 500;
  const peerCounts = options.peerCounts ?? [1, 2, 4, 8];
  const maxPeers = Math.max(...peerCounts);
  const rows: StateBenchRow[] = [];
  const KEYS = 1000;
  const key = (i: number): string => `flow/17/10.0.${(i >> 8) & 255}.${i & 255}:20000>10.1.0.1:9000/packets`;

  // ---------------------------------------------------------------- E-State
  const asker = await EStateNode.start({ id: 'bench-asker', timeoutMs: 2000, retries: 1 });
  const peers: PeerProcess[] = [];
  try {
    // keys and values made beforehand: the loops time the store, not string building
    const keys = Array.from({ length: KEYS }, (_, i) => key(i));
    const values = Array.from({ length: KEYS }, (_, i) => BigInt(i));
    log(`E-State local view: ${localOps} set, ${localOps} setMany, ${localOps} get (median of 5 rounds each)`);
    const setRate = medianRate(5, localOps, () => {
      for (let i = 0; i < localOps; i++) asker.set(keys[i % KEYS]!, values[i % KEYS]!);
    });
    const BATCH = 1000;
    const batch = keys.map((k, i) => [k, values[i]!] as const);
    const setManyRate = medianRate(5, localOps, () => {
      for (let i = 0; i < localOps; i += BATCH) asker.setMany(batch);
    });
    let sink = 0n;
    const getRate = medianRate(5, localOps, () => {
      for (let i = 0; i < localOps; i++) sink += asker.get(keys[i % KEYS]!) as bigint;
    });
    void sink;
    rows.push({ backend: 'estate', op: 'local set', peers: null, opsPerSec: Math.round(setRate), medianMs: null, p99Ms: null, samples: localOps, note: 'one wall-clock reading per write' });
    rows.push({ backend: 'estate', op: `local setMany (${BATCH} per call)`, peers: null, opsPerSec: Math.round(setManyRate), medianMs: null, p99Ms: null, samples: localOps, note: 'one wall-clock reading per call' });
    rows.push({ backend: 'estate', op: 'local get', peers: null, opsPerSec: Math.round(getRate), medianMs: null, p99Ms: null, samples: localOps });

    // one peer round trip, both ends in this process: E-State's transport against a bare grpc-js call
    log('transport: one Get round trip in process, E-State framing on a Unix socket vs a bare grpc-js unary call');
    const inProc = await EStateNode.start({ id: 'bench-inproc', timeoutMs: 2000, retries: 0 });
    try {
      inProc.set(key(0), 1n);
      asker.addPeer({ id: inProc.id, address: inProc.address });
      const l = await latencies(samples * 4, 200, () => asker.getGlobal(key(0), 'sum', { self: false }));
      rows.push({ backend: 'estate', op: 'peer round trip (Get, in process)', peers: 1, opsPerSec: null, ...l, samples: samples * 4, note: 'cpu: both ends' });
      asker.removePeer(inProc.id);
    } finally {
      await inProc.close();
    }
    // the same fan-out to peers in this process: JavaScript and socket cost without 8 processes to wake and schedule
    const local: EStateNode[] = [];
    try {
      for (let i = 0; i < maxPeers; i++) {
        const n = await EStateNode.start({ id: `bench-local${i + 1}`, timeoutMs: 2000, retries: 0 });
        n.set(key(0), BigInt(i + 1));
        local.push(n);
        asker.addPeer({ id: n.id, address: n.address });
      }
      const l = await latencies(samples, 20, () => asker.getGlobal(key(0), 'sum'));
      rows.push({ backend: 'estate', op: 'getGlobal (sum), peers in this process', peers: maxPeers, opsPerSec: null, ...l, samples, note: 'cpu: asker and peers' });
    } finally {
      for (const n of local) asker.removePeer(n.id);
      await Promise.all(local.map((n) => n.close()));
    }
    const g = await grpcRoundTrip(samples * 4, Buffer.alloc(80));
    rows.push({ backend: 'grpc', op: 'unary round trip (80 bytes, in process, Unix socket)', peers: 1, opsPerSec: null, ...g, samples: samples * 4, note: 'cpu: both ends; no protobuf' });

    log(`E-State global view: starting ${maxPeers} peer processes`);
    for (let i = 0; i < maxPeers; i++) peers.push(await spawnPeer({ id: `bench-peer${i + 1}`, items: [[key(0), { int: String(i + 1) }]] }));
    for (const p of peerCounts) {
      for (const m of asker.members()) asker.removePeer(m.id);
      for (const peer of peers.slice(0, p)) asker.addPeer({ id: peer.id, address: peer.address });
      let partial = 0;
      const l = await latencies(samples, 20, async () => {
        const r = await asker.getGlobal(key(0), 'sum');
        if (r.partial) partial++;
      });
      log(`  getGlobal with ${p} peer(s): median ${l.medianMs} ms, p99 ${l.p99Ms} ms`);
      rows.push({ backend: 'estate', op: 'getGlobal (sum)', peers: p, opsPerSec: null, ...l, samples, ...(partial ? { note: `${partial} partial answers` } : {}) });
    }
  } finally {
    await Promise.all(peers.map((p) => p.stop()));
    await asker.close();
  }

  // ---------------------------------------------------------------- Redis
  const found = findRedisServer();
  const wantRedis = options.redis ?? !('reason' in found);
  if (!wantRedis) return rows;
  if ('reason' in found) {
    rows.push({ backend: 'redis', op: 'skipped', peers: null, opsPerSec: null, medianMs: null, p99Ms: null, samples: 0, note: found.reason });
    return rows;
  }
  const mgr = new RedisStateManager({ spawn: true, timeoutMs: 5000 });
  try {
    const c = await mgr.client();
    log(`Redis (${found.version}): ${redisOps} SET and ${redisOps} GET, one round trip each`);
    const setRate = await rateAsync(redisOps, (i) => c.set(key(i % KEYS), String(i)));
    const getRate = await rateAsync(redisOps, (i) => c.get(key(i % KEYS)));
    rows.push({ backend: 'redis', op: 'set', peers: null, opsPerSec: Math.round(setRate), medianMs: null, p99Ms: null, samples: redisOps });
    rows.push({ backend: 'redis', op: 'get', peers: null, opsPerSec: Math.round(getRate), medianMs: null, p99Ms: null, samples: redisOps });
    // the global view on a centralized store: every instance's item under its own key, read in one MGET and reduced here
    for (let i = 0; i < maxPeers + 1; i++) await c.set(`${key(0)}@inst${i}`, String(i + 1));
    for (const p of peerCounts) {
      const keys = Array.from({ length: p + 1 }, (_, i) => `${key(0)}@inst${i}`);
      const l = await latencies(samples, 20, async () => {
        const vs = await c.mget(...keys);
        return vs.reduce((a, v) => a + Number(v ?? 0), 0);
      });
      log(`  global read (MGET of ${p + 1} instance keys, summed): median ${l.medianMs} ms, p99 ${l.p99Ms} ms`);
      rows.push({ backend: 'redis', op: 'global read (MGET + sum)', peers: p, opsPerSec: null, ...l, samples });
    }
  } finally {
    await mgr.close();
  }

  // a handover's state move: one server against a cluster, in this run
  const moves = options.moves ?? 200;
  const moveRecords = options.moveRecords ?? 256;
  const op = (where: string): string => `state move (${moveRecords} records), ${where}`;
  log(`Redis state moves: ${moves} handovers of ${moveRecords} records each, one redis-server, then a cluster of 3 masters + 3 replicas`);
  const one = await redisStateMoves({ spawn: true, timeoutMs: 5000 }, moves, moveRecords);
  rows.push({ backend: 'redis', op: op('one server'), peers: null, opsPerSec: null, ...one, samples: moves, note: 'MULTI/EXEC, MGET, DEL' });
  const cli = findRedisCli();
  if ('reason' in cli) rows.push({ backend: 'redis', op: op('cluster'), peers: null, opsPerSec: null, medianMs: null, p99Ms: null, samples: 0, note: `skipped: ${cli.reason}` });
  else {
    const cl = await redisStateMoves({ spawnCluster: true, timeoutMs: 5000 }, moves, moveRecords);
    rows.push({ backend: 'redis', op: op('cluster of 3 masters + 3 replicas'), peers: null, opsPerSec: null, ...cl, samples: moves, note: 'one hash tag per handover; ioredis Cluster' });
  }
  return rows;
}

/** Two instances' per-flow maps in memory: what the manager moves, without a kernel. */
class MemoryVnfState implements VnfStateStore {
  readonly maps = new Map<string, Map<string, FlowStateEntry>>();
  #map(instance: string): Map<string, FlowStateEntry> {
    let m = this.maps.get(instance);
    if (m === undefined) this.maps.set(instance, (m = new Map()));
    return m;
  }
  async exportState(instance: string, select: FlowSelection): Promise<FlowStateEntry[]> {
    return [...this.#map(instance).values()].filter((e) => selects(select, e.flow));
  }
  async importState(instance: string, entries: readonly FlowStateEntry[]): Promise<void> {
    for (const e of entries) this.#map(instance).set(flowKeyString(e.flow), e);
  }
  async deleteState(instance: string, flows: readonly FlowKey[]): Promise<void> {
    for (const f of flows) this.#map(instance).delete(flowKeyString(f));
  }
}

/**
 * `moves` state moves of `records` records (16 bytes each, the example
 * VNF's), back and forth between two instances, through a Redis manager:
 * each handover its own id (on a cluster: its own hash tag, so the moves
 * spread over the masters).
 */
async function redisStateMoves(o: RedisStateManagerOptions, moves: number, records: number): Promise<{ medianMs: number; p99Ms: number; cpuUsPerOp: number }> {
  const vs = new MemoryVnfState();
  const flows: FlowKey[] = Array.from({ length: records }, (_, i) => ({ src: `10.0.${(i >> 8) & 255}.${i & 255}`, dst: '10.1.0.1', sport: 20000 + (i % 1000), dport: 9000, proto: 17 }));
  await vs.importState(
    'vnf1',
    flows.map((flow, i) => {
      const v = Buffer.alloc(16);
      v.writeBigUInt64LE(BigInt(i), 0);
      return { flow, value: v };
    }),
  );
  const m = new RedisStateManager(o);
  const mover = new StateManagerMover(m);
  try {
    await m.start();
    let id = 0;
    let at = 'vnf1';
    const ctx = (): HandoverContext => {
      const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
      return { id: ++id, rules: [], from: at, to, covers: () => true, selection: 'all', counts: { preSent: 0n, preSeen: 0n, postSent: 0n }, timings: {}, vnfState: vs };
    };
    const signal = new AbortController().signal;
    return await latencies(moves, Math.min(20, moves), async () => {
      const c = ctx();
      const r = await mover.move(c, signal);
      if (r.records !== records) throw new Error(`a state move through Redis moved ${r.records} of ${records} records`);
      at = c.to;
    });
  } finally {
    await m.close();
  }
}

/** Prints the rows as a table (for `make bench` and by hand: node dist/src/state/bench.js). */
export function printStateBench(rows: readonly StateBenchRow[]): void {
  console.table(
    rows.map((r) => ({
      backend: r.backend,
      op: r.op,
      peers: r.peers ?? '',
      'ops/s': r.opsPerSec ?? '',
      'median ms': r.medianMs ?? '',
      'p99 ms': r.p99Ms ?? '',
      'cpu µs/op': r.cpuUsPerOp ?? '',
      samples: r.samples,
      note: r.note ?? '',
    })),
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const quick = process.argv.includes('--quick');
  const rows = await benchState({ log: (l) => console.log(l), ...(quick ? { localOps: 50_000, redisOps: 5_000, samples: 100 } : {}) });
  printStateBench(rows);
}
