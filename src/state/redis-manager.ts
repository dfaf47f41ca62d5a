/**
 * A centralized store (Redis) as the state manager of DataPlane VNFs:
 *
 *   leaving   the old instance writes the flows' map entries to Redis
 *             (one key per flow, in one MULTI/EXEC transaction);
 *   arriving  the new instance reads them (MGET) and imports them into its
 *             map;
 *   commit    the keys are deleted, then the old map entries.
 *
 * Either connects to a given server (url, or host/port) or starts its own
 * redis-server on a free loopback port (spawn: true) and stops it on close.
 * Or a Redis Cluster: the nodes of one (cluster: [host:port, …]), or a
 * private one it starts and stops (spawnCluster); a handover's keys then
 * carry its hash tag, <prefix>{h<id>}:flow:…, so its MULTI/EXEC, MGET and
 * DEL each reach one slot (redis-stage.ts: handoverTag), and commands meet
 * a failover with retries for up to failoverMs.
 * Every command has a deadline (commandTimeout); nothing is queued while
 * the server is unreachable, so a dead server fails the move instead of
 * hanging it.
 */
import type { FlowStateEntry } from '../dataplane/types.js';
import type { HandoverContext } from '../handover/state-mover.js';
import { DataPlaneStateManager } from './dataplane-manager.js';
import { flowKeyString, parseFlowKeyString } from './flow-key.js';
import { startRedisServer, type RedisServer, type RedisServerOptions } from './redis-server.js';
import { startRedisCluster, type RedisCluster, type RedisClusterOptions } from './redis-cluster-server.js';
import { StateError, type Departure } from './types.js';
import { connectRedis, deleteKeys, handoverTag, readRecords, redisShown, scanKeys, writeRecords, type RedisClient } from './redis-stage.js';
import { Mutex } from '../util/mutex.js';

export interface RedisStateManagerOptions {
  /** redis://host:port[/db] of an existing server */
  url?: string;
  host?: string;
  port?: number;
  /** start a private redis-server instead (and stop it on close) */
  spawn?: boolean | RedisServerOptions;
  /** a Redis Cluster instead of one server: host:port of some of its nodes */
  cluster?: readonly string[];
  /** start a private Redis Cluster instead (3 masters with a replica each unless told; stopped on close) */
  spawnCluster?: boolean | RedisClusterOptions;
  /** cluster: how long a command keeps retrying while the cluster fails over (default 5000 ms) */
  failoverMs?: number;
  /** prefix of every key (default "sharp:") */
  keyPrefix?: string;
  /** per command (default 2000 ms) */
  timeoutMs?: number;
}

export class RedisStateManager extends DataPlaneStateManager {
  readonly kind = 'redis';
  readonly #o: RedisStateManagerOptions;
  readonly #prefix: string;
  readonly #lock = new Mutex();
  #client: RedisClient | undefined;
  #server: RedisServer | undefined;
  #cluster: RedisCluster | undefined;
  #closed = false;

  constructor(options: RedisStateManagerOptions = {}) {
    super();
    const given = [options.url !== undefined || options.host !== undefined || options.port !== undefined ? 'url/host/port' : '', options.spawn ? 'spawn' : '', options.cluster !== undefined ? 'cluster' : '', options.spawnCluster ? 'spawnCluster' : ''].filter((x) => x !== '');
    // spawn with a server given was always "spawn wins"; cluster options may not be mixed with anything
    if ((options.cluster !== undefined || options.spawnCluster) && given.length > 1) throw new StateError(`redis: give one of url/host/port, spawn, cluster, spawnCluster (given: ${given.join(', ')})`);
    this.#o = options;
    this.#prefix = options.keyPrefix ?? 'sharp:';
  }

  /** the server in use (host:port), or "cluster host:port,…", once started */
  get endpoint(): string | undefined {
    const c = this.#client;
    if (c === undefined) return undefined;
    if ('startupNodes' in c) return redisShown({ cluster: this.#cluster?.startupNodes ?? this.#o.cluster ?? [] });
    return `${c.options.host ?? '?'}:${c.options.port ?? '?'}`;
  }

  /** the private cluster (spawnCluster) once started */
  get spawnedCluster(): RedisCluster | undefined {
    return this.#cluster;
  }

  /** the client (for inspection and benchmarks); starts the manager if needed */
  async client(): Promise<RedisClient> {
    await this.start();
    return this.#client!;
  }

  async start(): Promise<void> {
    if (this.#client !== undefined) return;
    await this.#lock.run(async () => {
      if (this.#closed) throw new StateError('redis: the state manager is closed');
      if (this.#client !== undefined) return;
      const o = this.#o;
      const timeout = o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs };
      if (o.cluster !== undefined || o.spawnCluster) {
        if (o.spawnCluster) this.#cluster = await startRedisCluster(typeof o.spawnCluster === 'object' ? o.spawnCluster : {});
        try {
          this.#client = await connectRedis({ cluster: this.#cluster?.startupNodes ?? o.cluster!, ...timeout, ...(o.failoverMs === undefined ? {} : { failoverMs: o.failoverMs }), ...(this.#cluster !== undefined && typeof o.spawnCluster === 'object' && o.spawnCluster.password !== undefined ? { password: o.spawnCluster.password } : {}) });
        } catch (e) {
          await this.#cluster?.stop();
          this.#cluster = undefined;
          throw e;
        }
        return;
      }
      let host = o.host ?? '127.0.0.1';
      let port = o.port ?? 6379;
      if (o.spawn) {
        this.#server = await startRedisServer(typeof o.spawn === 'object' ? o.spawn : {});
        host = this.#server.host;
        port = this.#server.port;
      }
      try {
        this.#client = await connectRedis(o.url !== undefined && !o.spawn ? { url: o.url, ...timeout } : { host, port, ...timeout });
      } catch (e) {
        await this.#server?.stop();
        this.#server = undefined;
        throw e;
      }
    });
  }

  get #clustered(): boolean {
    return this.#o.cluster !== undefined || Boolean(this.#o.spawnCluster);
  }

  /** one server: <prefix>flow:<flow>; a cluster: <prefix>{h<id>}:flow:<flow>, one slot per handover */
  #key(handoverId: number, flowStr: string): string {
    return this.#clustered ? `${this.#prefix}${handoverTag(handoverId)}:flow:${flowStr}` : `${this.#prefix}flow:${flowStr}`;
  }

  protected async stage(ctx: HandoverContext, entries: readonly FlowStateEntry[], signal: AbortSignal): Promise<string[]> {
    const c = this.#client!;
    if (entries.length === 0) return [];
    const keys = entries.map((e) => this.#key(ctx.id, flowKeyString(e.flow)));
    try {
      await this.#write(c, keys, entries, signal);
    } catch (e) {
      // no departure will name these keys: do not leave a part of them behind
      await deleteKeys(c, keys).catch(() => undefined);
      throw e;
    }
    return keys;
  }

  async #write(c: RedisClient, keys: readonly string[], entries: readonly FlowStateEntry[], signal: AbortSignal): Promise<void> {
    this.counters.transportBytes += await writeRecords(
      c,
      keys,
      entries.map((e) => e.value),
      signal,
    );
  }

  protected async obtain(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<FlowStateEntry[]> {
    const c = this.#client!;
    const out: FlowStateEntry[] = [];
    const values = await readRecords(c, departure.keys, signal);
    departure.keys.forEach((k, j) => {
      const v = values[j];
      this.counters.transportBytes += k.length + (v?.length ?? 0);
      if (v === null || v === undefined) return;
      out.push({ flow: parseFlowKeyString(k.slice(this.#key(ctx.id, '').length)), value: v });
    });
    return out;
  }

  protected async discard(_ctx: HandoverContext, departure: Departure, signal: AbortSignal | undefined): Promise<void> {
    const c = this.#client;
    if (c === undefined) return;
    this.counters.transportBytes += departure.keys.reduce((a, k) => a + k.length, 0);
    await deleteKeys(c, departure.keys, signal);
  }

  /**
   * On a cluster also every key under the handover's tag: a write that
   * timed out on a frozen master may have landed after the move gave up
   * (its departure never named the keys).
   */
  override async rollback(ctx: HandoverContext, departure: Departure | undefined, committed: boolean): Promise<void> {
    await super.rollback(ctx, departure, committed);
    const c = this.#client;
    if (c === undefined || !this.#clustered) return;
    const pattern = `${this.#prefix}${handoverTag(ctx.id)}:flow:`.replace(/[*?[\]\\]/g, '\\$&') + '*';
    await scanKeys(c, pattern)
      .then((keys) => deleteKeys(c, keys))
      .catch(() => undefined);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#lock.run(async () => {
      const c = this.#client;
      this.#client = undefined;
      if (c !== undefined) await c.quit().catch(() => c.disconnect());
      await this.#server?.stop();
      this.#server = undefined;
      await this.#cluster?.stop();
      this.#cluster = undefined;
    });
  }
}
