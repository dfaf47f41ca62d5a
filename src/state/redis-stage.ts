/**
 * Redis as the meeting point of two hosts' VNF state: the connection every
 * Redis user of sharpctl makes (deadlines on every command, no offline
 * queue: a dead server fails a move instead of hanging it), the chunked
 * transactions that write and read records, and NodeRedisStore, which a
 * node daemon uses to stage its instances' records for a handover (the old
 * instance's node writes them, the new one's reads them; the controller
 * sees only the flows).
 *
 * Keys: <prefix>h<handover>:<instance>:flow:<proto/src:sport>dst:dport>,
 * so a rollback's records (staged by the new instance) never meet the
 * forward move's. On a Redis Cluster the handover part is a hash tag,
 * <prefix>{h<handover>}:…: see handoverTag.
 *
 * A Redis Cluster (ioredis' Cluster client) is used the same way; a command
 * that meets a failover (a master that stopped answering, CLUSTERDOWN, a
 * closed connection, TRYAGAIN; MOVED and ASK ioredis follows itself) is
 * tried again on a fresh slot map until `failoverMs` is spent. Every
 * command here may be repeated: SETs of the same values, MGETs and DELs.
 */
import { Cluster, Redis } from 'ioredis';
import type { FlowKey, FlowStateEntry } from '../dataplane/types.js';
import { sleep } from '../util/mutex.js';
import { flowKeyString } from './flow-key.js';
import { abortable, StateError } from './types.js';

/** one server or a cluster: both speak the commands used here */
export type RedisClient = Redis | Cluster;

/** how long a cluster operation keeps retrying through a failover unless told (ms) */
export const DEFAULT_FAILOVER_MS = 5000;

/**
 * The hash tag of a handover's keys on a cluster: every key of one
 * handover (both instances', the rollback's too) hashes to one slot, so
 * one MULTI/EXEC stages a chunk atomically and one MGET or DEL reaches all
 * of them, while successive handovers spread over the masters. The tag
 * sits after the prefix, not around it, so every key still starts with the
 * prefix (ACLs like ~sharp:*, SCAN MATCH sharp:*). Deployments sharing a
 * cluster under other prefixes only share slots, never keys.
 */
export function handoverTag(handoverId: number): string {
  return `{h${handoverId}}`;
}

/** commands per MULTI/EXEC or MGET */
export const REDIS_CHUNK = 512;

export interface RedisConnectOptions {
  /** redis://host:port[/db] (rediss:// for TLS); without it host/port */
  url?: string;
  host?: string;
  port?: number;
  /** a Redis Cluster instead: host:port of some of its nodes (the client learns the others from them) */
  cluster?: readonly string[];
  /** cluster only: how long an operation keeps retrying while the cluster fails over (default 5000 ms) */
  failoverMs?: number;
  username?: string;
  password?: string;
  /** per command and for the connection (default 2000 ms) */
  timeoutMs?: number;
  /** CLIENT SETNAME: how this client shows in CLIENT LIST and MONITOR */
  connectionName?: string;
}

/** the retry budget of each cluster client, given when it connected */
const failoverBudget = new WeakMap<Cluster, number>();

function redisOptionsOf(o: RedisConnectOptions): { commandTimeout: number; connectTimeout: number; maxRetriesPerRequest: number; username?: string; password?: string; connectionName?: string } {
  return {
    maxRetriesPerRequest: 1,
    commandTimeout: o.timeoutMs ?? 2000,
    connectTimeout: o.timeoutMs ?? 2000,
    ...(o.username === undefined ? {} : { username: o.username }),
    ...(o.password === undefined ? {} : { password: o.password }),
    ...(o.connectionName === undefined ? {} : { connectionName: o.connectionName }),
  };
}

/** "host:port" (or "[v6]:port") as ioredis' cluster takes it */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):([0-9]{1,5})$/.exec(s);
  const port = Number(m?.[3]);
  if (m === null || !(port > 0 && port < 65536)) throw new StateError(`redis cluster node '${s.slice(0, 80)}': give host:port`);
  return { host: m[1] ?? m[2]!, port };
}

/** How a store shows in messages and in a node's Health: one server's URL or the cluster's nodes (never credentials). */
export function redisShown(o: Pick<RedisConnectOptions, 'url' | 'host' | 'port' | 'cluster'>): string {
  if (o.cluster !== undefined) return `cluster ${[...o.cluster].sort().join(',')}`;
  return o.url !== undefined ? redisUrlShown(o.url) : `${o.host ?? '127.0.0.1'}:${o.port ?? 6379}`;
}

/** Connects and PINGs; a server (or cluster) that does not answer within the deadline is a StateError naming it. */
export async function connectRedis(o: RedisConnectOptions): Promise<RedisClient> {
  if (o.cluster !== undefined) return connectRedisCluster({ ...o, cluster: o.cluster });
  const common = {
    lazyConnect: true,
    enableOfflineQueue: false,
    retryStrategy: (times: number): number => Math.min(50 * times, 500),
    ...redisOptionsOf(o),
  };
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? 6379;
  const c = o.url !== undefined ? new Redis(o.url, common) : new Redis({ ...common, host, port });
  // errors surface on the commands; without a listener ioredis prints them
  c.on('error', () => undefined);
  try {
    await c.connect();
    const pong = await c.ping();
    if (pong !== 'PONG') throw new StateError(`redis: PING answered ${pong}`);
  } catch (e) {
    c.disconnect();
    throw new StateError(`redis: cannot reach ${o.url ?? `${host}:${port}`}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return c;
}

/** Connects to a Redis Cluster and waits until it is ready (its slot map read, CLUSTER INFO ok). */
export async function connectRedisCluster(o: RedisConnectOptions & { cluster: readonly string[] }): Promise<Cluster> {
  if (o.cluster.length === 0) throw new StateError('redis cluster: name at least one of its nodes (host:port)');
  const nodes = o.cluster.map(parseHostPort);
  const timeoutMs = o.timeoutMs ?? 2000;
  const c = new Cluster(nodes, {
    lazyConnect: true,
    // nothing queued while the cluster is not ready: a command fails, and the retry below decides
    enableOfflineQueue: false,
    enableReadyCheck: true,
    // reads after writes: from the masters only
    scaleReads: 'master',
    slotsRefreshTimeout: Math.min(timeoutMs, 1000),
    slotsRefreshInterval: 2000,
    clusterRetryStrategy: (times: number): number => Math.min(50 * times, 500),
    redisOptions: redisOptionsOf(o),
  });
  c.on('error', () => undefined);
  c.on('node error', () => undefined);
  failoverBudget.set(c, o.failoverMs ?? DEFAULT_FAILOVER_MS);
  try {
    await abortable(c.connect(), AbortSignal.timeout(Math.max(timeoutMs, 1000) * 2));
    const pong = await c.ping();
    if (pong !== 'PONG') throw new StateError(`redis: PING answered ${pong}`);
  } catch (e) {
    c.disconnect();
    const msg = e instanceof Error ? (e.name === 'TimeoutError' ? `not ready within ${Math.max(timeoutMs, 1000) * 2} ms` : e.message) : String(e);
    throw new StateError(`redis: cannot reach the ${redisShown(o)}: ${msg}`, { cause: e });
  }
  return c;
}

/** what a failover looks like to a client: worth another try on a fresh slot map */
const FAILOVER_ERRORS = /timed out|Connection is closed|Stream isn't writeable|CLUSTERDOWN|TRYAGAIN|MOVED|ASK |LOADING|READONLY|MASTERDOWN|Too many Cluster redirections|Cluster isn't ready|ECONNREFUSED|ECONNRESET|EPIPE|Failed to refresh slots cache|None of startup nodes is available/;

function errorText(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  // a transaction's EXECABORT carries the errors of its commands: name each one once
  const prev = [...new Set(((e as Error & { previousErrors?: unknown[] }).previousErrors ?? []).map((x) => (x instanceof Error ? x.message : String(x))))].filter((m) => m !== e.message);
  return prev.length ? `${e.message} (${prev.join('; ')})` : e.message;
}

function refreshSlots(c: Cluster): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, 2000);
    c.refreshSlotsCache(() => {
      clearTimeout(t);
      resolve();
    });
  });
}

/**
 * Runs one step (one transaction, one MGET, one DEL); on a cluster, tries it
 * again through a failover until the client's budget is spent or `signal`
 * aborts. One server: once, as before.
 */
async function step<T>(c: RedisClient, f: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!(c instanceof Cluster)) return abortable(f(), signal);
  const budget = failoverBudget.get(c) ?? DEFAULT_FAILOVER_MS;
  const t0 = Date.now();
  let delay = 50;
  for (let attempt = 1; ; attempt++) {
    try {
      return await abortable(f(), signal);
    } catch (e) {
      signal?.throwIfAborted();
      const msg = errorText(e);
      const spent = Date.now() - t0;
      if (!FAILOVER_ERRORS.test(msg) || c.status === 'end') throw e;
      if (spent + delay > budget) throw new StateError(`redis: ${msg} (the cluster did not recover within ${budget} ms: ${attempt} attempts)`, { cause: e });
      await refreshSlots(c);
      await abortable(sleep(delay), signal);
      delay = Math.min(delay * 2, 400);
    }
  }
}

/**
 * How long a staged record lives in the store unless a handover deletes it
 * first: far beyond any handover's budget. A write that timed out (a frozen
 * master) can land after the rollback swept the handover's keys; it then
 * expires instead of staying forever. The records are copies in transit,
 * never the VNF's state.
 */
export const STAGED_TTL_MS = 15 * 60_000;

/** SETs keys[i] = values[i] (expiring after STAGED_TTL_MS) in transactions of REDIS_CHUNK; returns the bytes sent (keys and values). */
export async function writeRecords(c: RedisClient, keys: readonly string[], values: readonly Buffer[], signal?: AbortSignal): Promise<number> {
  let bytes = 0;
  for (let i = 0; i < keys.length; i += REDIS_CHUNK) {
    const end = Math.min(i + REDIS_CHUNK, keys.length);
    for (let j = i; j < end; j++) bytes += keys[j]!.length + values[j]!.length;
    await step(
      c,
      async () => {
        const m = c.multi();
        for (let j = i; j < end; j++) m.set(keys[j]!, values[j]!, 'PX', STAGED_TTL_MS);
        const res = await m.exec();
        const failed = res?.find(([err]) => err !== null);
        if (res === null || failed) throw new StateError(`redis: writing the state failed: ${failed?.[0]?.message ?? 'transaction aborted'}`);
      },
      signal,
    );
  }
  return bytes;
}

/** MGETs the keys in chunks of REDIS_CHUNK; null where a key is absent. */
export async function readRecords(c: RedisClient, keys: readonly string[], signal?: AbortSignal): Promise<(Buffer | null)[]> {
  const out: (Buffer | null)[] = [];
  for (let i = 0; i < keys.length; i += REDIS_CHUNK) out.push(...(await step(c, () => c.mgetBuffer(...keys.slice(i, i + REDIS_CHUNK)), signal)));
  return out;
}

/** DELs the keys in chunks of REDIS_CHUNK. */
export async function deleteKeys(c: RedisClient, keys: readonly string[], signal?: AbortSignal): Promise<void> {
  for (let i = 0; i < keys.length; i += REDIS_CHUNK) await step(c, () => c.del(...keys.slice(i, i + REDIS_CHUNK)), signal);
}

/** The keys matching a SCAN pattern: on a cluster, on every master (SCAN has no key to route by). */
export async function scanKeys(c: RedisClient, pattern: string, signal?: AbortSignal): Promise<string[]> {
  return step(
    c,
    async () => {
      const keys = new Set<string>();
      for (const n of c instanceof Cluster ? c.nodes('master') : [c]) {
        let cursor = '0';
        do {
          const [next, batch] = await n.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
          for (const k of batch) keys.add(k);
          cursor = next;
        } while (cursor !== '0');
      }
      return [...keys];
    },
    signal,
  );
}

export interface NodeRedisStoreOptions extends Omit<RedisConnectOptions, 'host' | 'port'> {
  /** one server: redis://host:port[/db]; or cluster (RedisConnectOptions) */
  url?: string;
  /** prefix of every key (default "sharp:") */
  keyPrefix?: string;
}

/** The part of a Redis URL safe to show: scheme, host, port, db (never credentials). */
export function redisUrlShown(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname === '/' ? '' : u.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}

/** A node's connection to the deployment's Redis, staging its instances' records for handovers. */
export class NodeRedisStore {
  readonly kind = 'redis';
  readonly #o: NodeRedisStoreOptions;
  readonly #prefix: string;
  #client: Promise<RedisClient> | undefined;

  constructor(o: NodeRedisStoreOptions) {
    if ((o.url === undefined) === (o.cluster === undefined)) throw new StateError('redis store: give url (one server) or cluster (its nodes), one of them');
    this.#o = o;
    this.#prefix = o.keyPrefix ?? 'sharp:';
  }

  /** what the node tells the controller: two nodes meet only in the same store (a cluster: the same list of nodes) */
  describe(): string {
    return `redis ${redisShown(this.#o)} (keys ${this.#prefix}*)`;
  }

  /** the handover part of a key: a hash tag on a cluster (handoverTag) */
  #handover(handoverId: number): string {
    return this.#o.cluster === undefined ? `h${handoverId}` : handoverTag(handoverId);
  }

  #redis(): Promise<RedisClient> {
    if (this.#client === undefined) {
      const c = connectRedis(this.#o);
      this.#client = c;
      // a failed connection is not kept: the next handover tries again
      c.catch(() => {
        if (this.#client === c) this.#client = undefined;
      });
    }
    return this.#client;
  }

  key(instance: string, handoverId: number, flow: FlowKey): string {
    return `${this.#prefix}${this.#handover(handoverId)}:${instance}:flow:${flowKeyString(flow)}`;
  }

  /** Runs one operation; its failure is a StateError naming the store and what was being done. */
  async #op<T>(what: string, f: (c: RedisClient) => Promise<T>): Promise<T> {
    try {
      return await f(await this.#redis());
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      const down = /Stream isn't writeable|Connection is closed|ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|cannot reach|did not recover|CLUSTERDOWN/.test(msg);
      throw new StateError(`${this.describe()}: cannot ${what}: ${down ? `the server is not reachable (${msg})` : msg}`, { cause: e });
    }
  }

  /** Writes the records; on failure removes whatever part of them it wrote. */
  async stage(instance: string, handoverId: number, entries: readonly FlowStateEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.#op(`stage ${entries.length} records of ${instance}`, (c) => this.#stage(c, instance, handoverId, entries));
  }

  async #stage(c: RedisClient, instance: string, handoverId: number, entries: readonly FlowStateEntry[]): Promise<void> {
    const keys = entries.map((e) => this.key(instance, handoverId, e.flow));
    try {
      await writeRecords(
        c,
        keys,
        entries.map((e) => e.value),
      );
    } catch (e) {
      await deleteKeys(c, keys).catch(() => undefined);
      throw e;
    }
  }

  /** Reads the records `instance` staged for these flows. */
  async obtain(instance: string, handoverId: number, flows: readonly FlowKey[]): Promise<{ found: FlowStateEntry[]; missing: FlowKey[] }> {
    const values = await this.#op(`read ${flows.length} records of ${instance}`, (c) =>
      readRecords(
        c,
        flows.map((f) => this.key(instance, handoverId, f)),
      ),
    );
    const found: FlowStateEntry[] = [];
    const missing: FlowKey[] = [];
    flows.forEach((flow, i) => {
      const v = values[i];
      if (v === null || v === undefined) missing.push(flow);
      else found.push({ flow, value: v });
    });
    return { found, missing };
  }

  /** Deletes what `instance` staged under the handover: these flows', or every one of them (SCAN). Returns the keys deleted. */
  async discard(instance: string, handoverId: number, flows: readonly FlowKey[] | 'all'): Promise<number> {
    return this.#op(`discard the records ${instance} staged`, (c) => this.#discard(c, instance, handoverId, flows));
  }

  async #discard(c: RedisClient, instance: string, handoverId: number, flows: readonly FlowKey[] | 'all'): Promise<number> {
    let keys: string[];
    if (flows === 'all') {
      const pattern = `${this.#prefix}${this.#handover(handoverId)}:${instance}:flow:`.replace(/[*?[\]\\]/g, '\\$&') + '*';
      keys = await scanKeys(c, pattern);
    } else keys = flows.map((f) => this.key(instance, handoverId, f));
    await deleteKeys(c, keys);
    return keys.length;
  }

  async close(): Promise<void> {
    const c = this.#client;
    this.#client = undefined;
    const r = await c?.catch(() => undefined);
    if (r !== undefined) await r.quit().catch(() => r.disconnect());
  }
}
