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
 * Every command has a deadline (commandTimeout); nothing is queued while
 * the server is unreachable, so a dead server fails the move instead of
 * hanging it.
 */
import { Redis } from 'ioredis';
import type { FlowStateEntry } from '../dataplane/types.js';
import type { HandoverContext } from '../handover/state-mover.js';
import { DataPlaneStateManager } from './dataplane-manager.js';
import { flowKeyString, parseFlowKeyString } from './flow-key.js';
import { startRedisServer, type RedisServer, type RedisServerOptions } from './redis-server.js';
import { StateError, type Departure } from './types.js';
import { connectRedis, deleteKeys, readRecords, writeRecords } from './redis-stage.js';
import { Mutex } from '../util/mutex.js';

export interface RedisStateManagerOptions {
  /** redis://host:port[/db] of an existing server */
  url?: string;
  host?: string;
  port?: number;
  /** start a private redis-server instead (and stop it on close) */
  spawn?: boolean | RedisServerOptions;
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
  #client: Redis | undefined;
  #server: RedisServer | undefined;
  #closed = false;

  constructor(options: RedisStateManagerOptions = {}) {
    super();
    this.#o = options;
    this.#prefix = options.keyPrefix ?? 'sharp:';
  }

  /** the server in use (host:port) once started */
  get endpoint(): string | undefined {
    const c = this.#client;
    return c ? `${c.options.host ?? '?'}:${c.options.port ?? '?'}` : undefined;
  }

  /** the client (for inspection and benchmarks); starts the manager if needed */
  async client(): Promise<Redis> {
    await this.start();
    return this.#client!;
  }

  async start(): Promise<void> {
    if (this.#client !== undefined) return;
    await this.#lock.run(async () => {
      if (this.#closed) throw new StateError('redis: the state manager is closed');
      if (this.#client !== undefined) return;
      const o = this.#o;
      let host = o.host ?? '127.0.0.1';
      let port = o.port ?? 6379;
      if (o.spawn) {
        this.#server = await startRedisServer(typeof o.spawn === 'object' ? o.spawn : {});
        host = this.#server.host;
        port = this.#server.port;
      }
      try {
        this.#client = await connectRedis(o.url !== undefined && !o.spawn ? { url: o.url, ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }) } : { host, port, ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }) });
      } catch (e) {
        await this.#server?.stop();
        this.#server = undefined;
        throw e;
      }
    });
  }

  #key(flowStr: string): string {
    return `${this.#prefix}flow:${flowStr}`;
  }

  protected async stage(_ctx: HandoverContext, entries: readonly FlowStateEntry[], signal: AbortSignal): Promise<string[]> {
    const c = this.#client!;
    if (entries.length === 0) return [];
    const keys = entries.map((e) => this.#key(flowKeyString(e.flow)));
    try {
      await this.#write(c, keys, entries, signal);
    } catch (e) {
      // no departure will name these keys: do not leave a part of them behind
      await c.del(...keys).catch(() => undefined);
      throw e;
    }
    return keys;
  }

  async #write(c: Redis, keys: readonly string[], entries: readonly FlowStateEntry[], signal: AbortSignal): Promise<void> {
    this.counters.transportBytes += await writeRecords(
      c,
      keys,
      entries.map((e) => e.value),
      signal,
    );
  }

  protected async obtain(_ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<FlowStateEntry[]> {
    const c = this.#client!;
    const out: FlowStateEntry[] = [];
    const values = await readRecords(c, departure.keys, signal);
    departure.keys.forEach((k, j) => {
      const v = values[j];
      this.counters.transportBytes += k.length + (v?.length ?? 0);
      if (v === null || v === undefined) return;
      out.push({ flow: parseFlowKeyString(k.slice(this.#key('').length)), value: v });
    });
    return out;
  }

  protected async discard(_ctx: HandoverContext, departure: Departure, signal: AbortSignal | undefined): Promise<void> {
    const c = this.#client;
    if (c === undefined) return;
    this.counters.transportBytes += departure.keys.reduce((a, k) => a + k.length, 0);
    await deleteKeys(c, departure.keys, signal);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#lock.run(async () => {
      const c = this.#client;
      this.#client = undefined;
      if (c !== undefined) await c.quit().catch(() => c.disconnect());
      await this.#server?.stop();
      this.#server = undefined;
    });
  }
}
