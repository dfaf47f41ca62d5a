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
 * forward move's.
 */
import { Redis } from 'ioredis';
import type { FlowKey, FlowStateEntry } from '../dataplane/types.js';
import { flowKeyString } from './flow-key.js';
import { abortable, StateError } from './types.js';

/** commands per MULTI/EXEC or MGET */
export const REDIS_CHUNK = 512;

export interface RedisConnectOptions {
  /** redis://host:port[/db] (rediss:// for TLS); without it host/port */
  url?: string;
  host?: string;
  port?: number;
  username?: string;
  password?: string;
  /** per command and for the connection (default 2000 ms) */
  timeoutMs?: number;
  /** CLIENT SETNAME: how this client shows in CLIENT LIST and MONITOR */
  connectionName?: string;
}

/** Connects and PINGs; a server that does not answer within the deadline is a StateError naming it. */
export async function connectRedis(o: RedisConnectOptions): Promise<Redis> {
  const common = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: o.timeoutMs ?? 2000,
    connectTimeout: o.timeoutMs ?? 2000,
    retryStrategy: (times: number): number => Math.min(50 * times, 500),
    ...(o.username === undefined ? {} : { username: o.username }),
    ...(o.password === undefined ? {} : { password: o.password }),
    ...(o.connectionName === undefined ? {} : { connectionName: o.connectionName }),
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

/** SETs keys[i] = values[i] in transactions of REDIS_CHUNK; returns the bytes sent (keys and values). */
export async function writeRecords(c: Redis, keys: readonly string[], values: readonly Buffer[], signal?: AbortSignal): Promise<number> {
  let bytes = 0;
  for (let i = 0; i < keys.length; i += REDIS_CHUNK) {
    const m = c.multi();
    for (let j = i; j < Math.min(i + REDIS_CHUNK, keys.length); j++) {
      m.set(keys[j]!, values[j]!);
      bytes += keys[j]!.length + values[j]!.length;
    }
    const res = await abortable(m.exec(), signal);
    const failed = res?.find(([err]) => err !== null);
    if (res === null || failed) throw new StateError(`redis: writing the state failed: ${failed?.[0]?.message ?? 'transaction aborted'}`);
  }
  return bytes;
}

/** MGETs the keys in chunks of REDIS_CHUNK; null where a key is absent. */
export async function readRecords(c: Redis, keys: readonly string[], signal?: AbortSignal): Promise<(Buffer | null)[]> {
  const out: (Buffer | null)[] = [];
  for (let i = 0; i < keys.length; i += REDIS_CHUNK) out.push(...(await abortable(c.mgetBuffer(...keys.slice(i, i + REDIS_CHUNK)), signal)));
  return out;
}

/** DELs the keys in chunks of REDIS_CHUNK. */
export async function deleteKeys(c: Redis, keys: readonly string[], signal?: AbortSignal): Promise<void> {
  for (let i = 0; i < keys.length; i += REDIS_CHUNK) await abortable(c.del(...keys.slice(i, i + REDIS_CHUNK)), signal);
}

export interface NodeRedisStoreOptions extends Omit<RedisConnectOptions, 'host' | 'port'> {
  url: string;
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
  #client: Promise<Redis> | undefined;

  constructor(o: NodeRedisStoreOptions) {
    this.#o = o;
    this.#prefix = o.keyPrefix ?? 'sharp:';
  }

  /** what the node tells the controller: two nodes meet only in the same store */
  describe(): string {
    return `redis ${redisUrlShown(this.#o.url)} (keys ${this.#prefix}*)`;
  }

  #redis(): Promise<Redis> {
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
    return `${this.#prefix}h${handoverId}:${instance}:flow:${flowKeyString(flow)}`;
  }

  /** Runs one operation; its failure is a StateError naming the store and what was being done. */
  async #op<T>(what: string, f: (c: Redis) => Promise<T>): Promise<T> {
    try {
      return await f(await this.#redis());
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      const down = /Stream isn't writeable|Connection is closed|ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH|cannot reach/.test(msg);
      throw new StateError(`${this.describe()}: cannot ${what}: ${down ? `the server is not reachable (${msg})` : msg}`, { cause: e });
    }
  }

  /** Writes the records; on failure removes whatever part of them it wrote. */
  async stage(instance: string, handoverId: number, entries: readonly FlowStateEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await this.#op(`stage ${entries.length} records of ${instance}`, (c) => this.#stage(c, instance, handoverId, entries));
  }

  async #stage(c: Redis, instance: string, handoverId: number, entries: readonly FlowStateEntry[]): Promise<void> {
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

  async #discard(c: Redis, instance: string, handoverId: number, flows: readonly FlowKey[] | 'all'): Promise<number> {
    let keys: string[];
    if (flows === 'all') {
      keys = [];
      const pattern = `${this.#prefix.replace(/[*?[\]\\]/g, '\\$&')}h${handoverId}:${instance}:flow:*`;
      let cursor = '0';
      do {
        const [next, batch] = await c.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        keys.push(...batch);
        cursor = next;
      } while (cursor !== '0');
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
