/**
 * A private Redis Cluster (Debian packages redis-server and redis-tools):
 * `masters` redis-server processes with `replicas` replicas each, all on one
 * loopback (or namespace) address, made a cluster by `redis-cli --cluster
 * create`, for tests, benchmarks and labs that want a distributed store of
 * their own. No persistence. Every process and its folder (one temporary
 * folder, a subfolder per node with its config and nodes.conf) goes on
 * stop(), and on a start that fails half-way.
 *
 * The failure detection is quick by default (cluster-node-timeout 1000 ms,
 * Redis's own default is 15 s): a replica takes over a frozen or dead
 * master within a few seconds, which is what a failover test wants.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { sleep } from '../util/mutex.js';
import { findRedisServer, launchRedisServer, stopChild } from './redis-server.js';
import { StateError } from './types.js';

export interface RedisClusterOptions {
  /** executables (default: redis-server and redis-cli from PATH) */
  bin?: string;
  cliBin?: string;
  /** the address every node binds and announces (default 127.0.0.1) */
  host?: string;
  /** masters (default 3, the fewest redis-cli --cluster create accepts) */
  masters?: number;
  /** replicas per master (default 1) */
  replicas?: number;
  /** one port per node, masters first as redis-cli assigns them; each port + 10000 is its cluster bus (default: free ports, or 7000… in a namespace) */
  ports?: readonly number[];
  /** run every node inside this network namespace (/run/netns/<name>) */
  netns?: string;
  /** requirepass and masterauth: clients and replicas AUTH with it (it is in the nodes' 0600 config files, never on a command line) */
  password?: string;
  /** every node also listens on <unixSocketDir>/redis-<port>.sock (0700: for the starting user) */
  unixSocketDir?: string;
  /** cluster-node-timeout (default 1000 ms) */
  nodeTimeoutMs?: number;
  /** for the whole start: processes, cluster create, every node agreeing (default 30 s) */
  startTimeoutMs?: number;
}

export interface RedisClusterNode {
  readonly host: string;
  readonly port: number;
  /** host:port */
  readonly address: string;
  readonly pid: number;
  readonly dir: string;
  readonly unixSocket?: string;
}

/** One line of CLUSTER NODES. */
export interface RedisClusterNodeState {
  id: string;
  /** host:port */
  address: string;
  port: number;
  role: 'master' | 'replica';
  /** a replica's master */
  masterId?: string;
  /** flagged fail or fail? (as the node asked sees it) */
  failing: boolean;
  /** slot ranges a master serves, inclusive */
  slots: [number, number][];
}

export interface RedisCluster {
  readonly host: string;
  readonly nodes: readonly RedisClusterNode[];
  /** host:port of every node: what a client is given (it discovers the rest) */
  readonly startupNodes: string[];
  readonly dir: string;
  /** Runs redis-cli against one node (its port); rejects after timeoutMs (default 3000). */
  cli(port: number, args: readonly string[], timeoutMs?: number): Promise<string>;
  /** CLUSTER NODES as the first node that answers sees it */
  topology(): Promise<RedisClusterNodeState[]>;
  /** The master serving the slot of this key (a hash tag counts), and its replicas. */
  ownerOf(key: string): Promise<{ master: RedisClusterNode; replicas: RedisClusterNode[]; slot: number }>;
  /** Waits until every node that answers says cluster_state:ok and sees the same masters, and every master has a linked replica. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every node (frozen ones too) and removes the folder. */
  stop(): Promise<void>;
}

const BUS_OFFSET = 10_000;

function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

/** `n` ports whose cluster-bus ports (+10000) are free too. */
async function freeClusterPorts(host: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let tries = 0; out.length < n; tries++) {
    if (tries > 200) throw new StateError(`redis cluster: found only ${out.length} of ${n} free port pairs (port and port+${BUS_OFFSET}) on ${host}`);
    const p = 20_000 + Math.floor(Math.random() * 35_000);
    if (out.some((q) => Math.abs(q - p) < 1 || q + BUS_OFFSET === p || p + BUS_OFFSET === q)) continue;
    if ((await canBind(host, p)) && (await canBind(host, p + BUS_OFFSET))) out.push(p);
  }
  return out;
}

/** Parses CLUSTER NODES. */
export function parseClusterNodes(text: string): RedisClusterNodeState[] {
  return text
    .trim()
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const f = line.trim().split(' ');
      const addr = (f[1] ?? '').split('@')[0]!.split(',')[0]!;
      const flags = (f[2] ?? '').split(',');
      const slots: [number, number][] = f
        .slice(8)
        .filter((s) => /^\d+(-\d+)?$/.test(s))
        .map((s) => {
          const [a, b] = s.split('-').map(Number);
          return [a!, b ?? a!];
        });
      const master = f[3] !== undefined && f[3] !== '-' ? f[3] : undefined;
      return {
        id: f[0]!,
        address: addr,
        port: Number(addr.slice(addr.lastIndexOf(':') + 1)),
        role: flags.includes('master') ? ('master' as const) : ('replica' as const),
        ...(master === undefined ? {} : { masterId: master }),
        failing: flags.includes('fail') || flags.includes('fail?'),
        slots,
      };
    });
}

function nodeConfig(o: { host: string; port: number; dir: string; nodeTimeoutMs: number; password: string | undefined; unixSocket: string | undefined }): string {
  return [
    `port ${o.port}`,
    `bind ${o.host}`,
    `dir ${o.dir}`,
    'daemonize no',
    'protected-mode yes',
    'save ""',
    'appendonly no',
    'loglevel notice',
    'logfile ""',
    'cluster-enabled yes',
    `cluster-config-file nodes-${o.port}.conf`,
    `cluster-node-timeout ${o.nodeTimeoutMs}`,
    // a replica whose master is gone takes over however long it was cut off: the tests freeze masters for seconds
    'cluster-replica-validity-factor 0',
    ...(o.unixSocket === undefined ? [] : [`unixsocket ${o.unixSocket}`, 'unixsocketperm 700']),
    ...(o.password === undefined ? [] : [`requirepass "${o.password}"`, `masterauth "${o.password}"`]),
    '',
  ].join('\n');
}

/** Starts the nodes and makes them a cluster; throws with nothing left behind when any step fails. */
export async function startRedisCluster(options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const bin = options.bin ?? 'redis-server';
  const cliBin = options.cliBin ?? 'redis-cli';
  const found = findRedisServer(bin);
  if ('reason' in found) throw new StateError(found.reason);
  const cliFound = findRedisCli(cliBin);
  if ('reason' in cliFound) throw new StateError(cliFound.reason);
  const host = options.host ?? '127.0.0.1';
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 1;
  if (!Number.isInteger(masters) || masters < 3) throw new StateError(`redis cluster: masters ${masters}: at least 3 (redis-cli --cluster create refuses fewer)`);
  if (!Number.isInteger(replicas) || replicas < 0) throw new StateError(`redis cluster: replicas ${replicas}: 0 or more per master`);
  const n = masters * (1 + replicas);
  if (options.ports !== undefined && options.ports.length !== n) throw new StateError(`redis cluster: ${options.ports.length} ports given for ${n} nodes (${masters} masters × ${1 + replicas})`);
  const ports = options.ports ?? (options.netns === undefined ? await freeClusterPorts(host, n) : Array.from({ length: n }, (_, i) => 7000 + i));
  const timeoutMs = options.startTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharp-redis-cluster-'));
  const children: ChildProcess[] = [];
  const nodes: RedisClusterNode[] = [];
  const env = { ...process.env, ...(options.password === undefined ? {} : { REDISCLI_AUTH: options.password }) };

  const cli = (port: number, args: readonly string[], ms = 3000): Promise<string> => {
    const argv = ['-h', host, '-p', String(port), ...args];
    const [file, fileArgs] = options.netns === undefined ? [cliBin, argv] : ['nsenter', [`--net=/run/netns/${options.netns}`, cliBin, ...argv]];
    return new Promise((resolve, reject) =>
      execFile(file, fileArgs, { env, timeout: ms, killSignal: 'SIGKILL', maxBuffer: 16 << 20, encoding: 'utf8' }, (e, stdout, stderr) => {
        if (e) reject(new StateError(`redis-cli ${args.join(' ')} on ${host}:${port}: ${e.killed ? `no answer within ${ms} ms` : (stderr || stdout || e.message).trim()}`, { cause: e }));
        // redis-cli prints a server error on stdout with exit status 0
        else if (/^(ERR|WRONGPASS|NOAUTH|CLUSTERDOWN|LOADING)\b/.test(stdout.trim())) reject(new StateError(`redis-cli ${args.join(' ')} on ${host}:${port}: ${stdout.trim()}`));
        else resolve(stdout);
      }),
    );
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= Promise.all(children.map((c) => stopChild(c))).then(() => rmSync(dir, { recursive: true, force: true }));
    return stopping;
  };

  const topology = async (): Promise<RedisClusterNodeState[]> => {
    let last: unknown;
    for (const node of nodes) {
      try {
        return parseClusterNodes(await cli(node.port, ['CLUSTER', 'NODES'], 1500));
      } catch (e) {
        last = e;
      }
    }
    throw new StateError(`redis cluster: no node answers CLUSTER NODES: ${last instanceof Error ? last.message : String(last)}`);
  };

  const byPort = (port: number): RedisClusterNode => {
    const node = nodes.find((x) => x.port === port);
    if (node === undefined) throw new StateError(`redis cluster: no node of this cluster on port ${port}`);
    return node;
  };

  const ownerOf = async (key: string): Promise<{ master: RedisClusterNode; replicas: RedisClusterNode[]; slot: number }> => {
    let slot: number | undefined;
    for (const node of nodes) {
      try {
        slot = Number((await cli(node.port, ['CLUSTER', 'KEYSLOT', key], 1500)).trim());
        break;
      } catch {
        // frozen or gone: ask another
      }
    }
    if (slot === undefined || !Number.isInteger(slot)) throw new StateError(`redis cluster: no node answers CLUSTER KEYSLOT ${key}`);
    const top = await topology();
    const m = top.find((x) => x.role === 'master' && !x.failing && x.slots.some(([a, b]) => slot >= a && slot <= b));
    if (m === undefined) throw new StateError(`redis cluster: no live master serves slot ${slot}`);
    return { master: byPort(m.port), replicas: top.filter((x) => x.masterId === m.id && !x.failing).map((x) => byPort(x.port)), slot };
  };

  const waitHealthy = async (ms = 20_000): Promise<void> => {
    const until = Date.now() + ms;
    let why = '';
    for (;;) {
      try {
        why = await unhealthy();
        if (why === '') return;
      } catch (e) {
        why = e instanceof Error ? e.message : String(e);
      }
      if (Date.now() > until) throw new StateError(`redis cluster on ${host} not healthy within ${ms} ms: ${why}`);
      await sleep(100);
    }
  };

  /** '' when healthy, else why not */
  const unhealthy = async (): Promise<string> => {
    const views: RedisClusterNodeState[][] = [];
    for (const node of nodes) {
      let info: string;
      try {
        info = await cli(node.port, ['CLUSTER', 'INFO'], 1500);
      } catch {
        continue; // frozen or stopped: not part of the healthy cluster
      }
      if (!/cluster_state:ok/.test(info)) return `${node.address}: ${/cluster_state:\S+/.exec(info)?.[0] ?? 'no cluster_state'}`;
      views.push(parseClusterNodes(await cli(node.port, ['CLUSTER', 'NODES'], 1500)));
    }
    if (views.length === 0) return 'no node answers';
    const mastersOf = (v: RedisClusterNodeState[]): string =>
      v
        .filter((x) => x.role === 'master' && x.slots.length > 0 && !x.failing)
        .map((x) => x.address)
        .sort()
        .join(' ');
    const first = mastersOf(views[0]!);
    for (const v of views) if (mastersOf(v) !== first) return `the nodes do not agree on the masters yet (${first} vs ${mastersOf(v)})`;
    const top = views[0]!;
    const covered = top.filter((x) => x.role === 'master' && !x.failing).reduce((a, x) => a + x.slots.reduce((b, [s, e]) => b + e - s + 1, 0), 0);
    if (covered !== 16384) return `${covered} of 16384 slots served`;
    if (replicas > 0)
      for (const m of top.filter((x) => x.role === 'master' && x.slots.length > 0)) {
        const reps = top.filter((x) => x.masterId === m.id && !x.failing);
        let linked = false;
        for (const r of reps) {
          const repl = await cli(r.port, ['INFO', 'replication'], 1500).catch(() => '');
          if (/master_link_status:up/.test(repl)) linked = true;
        }
        if (!linked) return `master ${m.address} has no replica in sync`;
      }
    return '';
  };

  try {
    for (const [i, port] of ports.entries()) {
      const nodeDir = path.join(dir, `node-${port}`);
      mkdirSync(nodeDir, { mode: 0o700 });
      const unixSocket = options.unixSocketDir === undefined ? undefined : path.join(options.unixSocketDir, `redis-${port}.sock`);
      const conf = path.join(nodeDir, 'redis.conf');
      writeFileSync(conf, nodeConfig({ host, port, dir: nodeDir, nodeTimeoutMs: options.nodeTimeoutMs ?? 1000, password: options.password, unixSocket }), { mode: 0o600 });
      const child = await launchRedisServer(bin, [conf], { netns: options.netns, label: `cluster node ${i + 1}/${n} on ${host}:${port}`, timeoutMs: Math.max(1000, deadline - Date.now()) });
      children.push(child);
      nodes.push({ host, port, address: `${host}:${port}`, pid: child.pid!, dir: nodeDir, ...(unixSocket === undefined ? {} : { unixSocket }) });
    }
    await cli(ports[0]!, ['--cluster', 'create', ...nodes.map((x) => x.address), '--cluster-replicas', String(replicas), '--cluster-yes'], Math.max(1000, deadline - Date.now()));
    await waitHealthy(Math.max(1000, deadline - Date.now()));
  } catch (e) {
    await stop();
    throw e;
  }
  return { host, nodes, startupNodes: nodes.map((x) => x.address), dir, cli, topology, ownerOf, waitHealthy, stop };
}

/** redis-cli's path, or why it cannot be used. */
export function findRedisCli(bin = 'redis-cli'): { path: string } | { reason: string } {
  const found = findRedisServer(bin);
  if ('reason' in found) return { reason: found.reason.replace('install the Debian package redis-server', 'install the Debian package redis-tools') };
  return { path: found.path };
}
