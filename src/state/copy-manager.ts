/**
 * Direct copy between instances: every instance has a state endpoint (a TCP
 * server on loopback). No store in between:
 *
 *   leaving   the old instance's endpoint exports the flows' map entries
 *             and pushes them over one TCP connection straight to the new
 *             instance's endpoint, which acknowledges them;
 *   arriving  the new instance imports what it received;
 *   commit    the old map entries are deleted.
 *
 * Wire format (all integers big endian), one message per connection:
 *   push  u32 length | "SHCP" | u32 handover | u32 count |
 *         count × (u16 keyLen | flow key (utf8) | u32 valueLen | value)
 *   ack   u32 length | "SHCA" | u32 handover | u32 count
 */
import net from 'node:net';
import type { FlowStateEntry } from '../dataplane/types.js';
import type { HandoverContext } from '../handover/state-mover.js';
import { Mutex } from '../util/mutex.js';
import { DataPlaneStateManager } from './dataplane-manager.js';
import { flowKeyString, parseFlowKeyString } from './flow-key.js';
import { StateError, type Departure } from './types.js';

const PUSH = 0x53484350; // "SHCP"
const ACK = 0x53484341; // "SHCA"
const MAX_MESSAGE = 256 << 20;

export function encodePush(handoverId: number, entries: readonly FlowStateEntry[]): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(16);
  parts.push(head);
  for (const e of entries) {
    const k = Buffer.from(flowKeyString(e.flow));
    const h = Buffer.alloc(2);
    h.writeUInt16BE(k.length);
    const l = Buffer.alloc(4);
    l.writeUInt32BE(e.value.length);
    parts.push(h, k, l, e.value);
  }
  const msg = Buffer.concat(parts);
  msg.writeUInt32BE(msg.length - 4, 0);
  msg.writeUInt32BE(PUSH, 4);
  msg.writeUInt32BE(handoverId, 8);
  msg.writeUInt32BE(entries.length, 12);
  return msg;
}

export function decodePush(body: Buffer): { handoverId: number; entries: FlowStateEntry[] } {
  if (body.length < 12 || body.readUInt32BE(0) !== PUSH) throw new StateError('copy: not a state push');
  const handoverId = body.readUInt32BE(4);
  const count = body.readUInt32BE(8);
  const entries: FlowStateEntry[] = [];
  let o = 12;
  for (let i = 0; i < count; i++) {
    if (o + 2 > body.length) throw new StateError('copy: truncated state push');
    const kl = body.readUInt16BE(o);
    o += 2;
    const key = body.toString('utf8', o, o + kl);
    o += kl;
    if (o + 4 > body.length) throw new StateError('copy: truncated state push');
    const vl = body.readUInt32BE(o);
    o += 4;
    if (o + vl > body.length) throw new StateError('copy: truncated state push');
    entries.push({ flow: parseFlowKeyString(key), value: Buffer.from(body.subarray(o, o + vl)) });
    o += vl;
  }
  return { handoverId, entries };
}

/** Reads one length-prefixed message from a socket. */
function readMessage(sock: net.Socket, onBody: (body: Buffer) => void, onError: (e: Error) => void): void {
  let buf = Buffer.alloc(0);
  const onData = (d: Buffer): void => {
    buf = Buffer.concat([buf, d]);
    if (buf.length < 4) return;
    const len = buf.readUInt32BE(0);
    if (len > MAX_MESSAGE) {
      sock.off('data', onData);
      onError(new StateError(`copy: message of ${len} bytes is too large`));
      return;
    }
    if (buf.length < 4 + len) return;
    sock.off('data', onData);
    onBody(buf.subarray(4, 4 + len));
  };
  sock.on('data', onData);
}

/** One instance's state endpoint. */
export class CopyEndpoint {
  readonly #inbox = new Map<number, FlowStateEntry[]>();
  readonly #sockets = new Set<net.Socket>();
  bytesIn = 0;
  bytesOut = 0;

  private constructor(
    readonly instance: string,
    readonly server: net.Server,
  ) {}

  static async start(instance: string, host = '127.0.0.1', port = 0): Promise<CopyEndpoint> {
    const server = net.createServer();
    const ep = new CopyEndpoint(instance, server);
    server.on('connection', (s) => ep.#serve(s));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    void ep.address;
    return ep;
  }

  #address: { host: string; port: number } | undefined;

  /** where it listens */
  get address(): { host: string; port: number } {
    if (this.#address === undefined) {
      const a = this.server.address() as net.AddressInfo;
      this.#address = { host: a.address, port: a.port };
    }
    return this.#address;
  }

  #serve(s: net.Socket): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
    s.on('error', () => s.destroy());
    s.setTimeout(30_000, () => s.destroy());
    readMessage(
      s,
      (body) => {
        try {
          const { handoverId, entries } = decodePush(body);
          this.bytesIn += body.length + 4;
          this.#inbox.set(handoverId, entries);
          const ack = Buffer.alloc(16);
          ack.writeUInt32BE(12, 0);
          ack.writeUInt32BE(ACK, 4);
          ack.writeUInt32BE(handoverId, 8);
          ack.writeUInt32BE(entries.length, 12);
          this.bytesOut += ack.length;
          s.end(ack);
        } catch {
          s.destroy();
        }
      },
      () => s.destroy(),
    );
  }

  /** Pushes records to another endpoint; resolves when it acknowledged all of them. */
  push(to: { host: string; port: number }, handoverId: number, entries: readonly FlowStateEntry[], signal: AbortSignal, timeoutMs: number): Promise<void> {
    const msg = encodePush(handoverId, entries);
    return new Promise<void>((resolve, reject) => {
      const s = net.connect(to.port, to.host);
      const fail = (e: Error): void => {
        signal.removeEventListener('abort', onAbort);
        s.destroy();
        reject(e);
      };
      const onAbort = (): void => fail(signal.reason as Error);
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      s.setTimeout(timeoutMs, () => fail(new StateError(`copy: ${to.host}:${to.port} did not acknowledge the state within ${timeoutMs} ms`)));
      s.on('error', (e) => fail(new StateError(`copy: pushing the state to ${to.host}:${to.port} failed: ${e.message}`, { cause: e })));
      s.on('close', () => fail(new StateError(`copy: ${to.host}:${to.port} closed the connection before acknowledging`)));
      readMessage(
        s,
        (body) => {
          this.bytesIn += body.length + 4;
          if (body.length < 12 || body.readUInt32BE(0) !== ACK || body.readUInt32BE(4) !== handoverId || body.readUInt32BE(8) !== entries.length) {
            fail(new StateError('copy: bad acknowledgement'));
            return;
          }
          signal.removeEventListener('abort', onAbort);
          s.removeAllListeners('close');
          s.end();
          resolve();
        },
        fail,
      );
      this.bytesOut += msg.length;
      s.write(msg);
    });
  }

  /** The records pushed to this endpoint for a handover (and forgets them). */
  take(handoverId: number): FlowStateEntry[] | undefined {
    const e = this.#inbox.get(handoverId);
    this.#inbox.delete(handoverId);
    return e;
  }

  forget(handoverId: number): void {
    this.#inbox.delete(handoverId);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

export interface CopyStateManagerOptions {
  host?: string;
  /** per push (default 5000 ms) */
  timeoutMs?: number;
}

export class CopyStateManager extends DataPlaneStateManager {
  readonly kind = 'copy';
  readonly #o: CopyStateManagerOptions;
  readonly #eps = new Map<string, CopyEndpoint>();
  readonly #lock = new Mutex();
  #closed = false;

  constructor(options: CopyStateManagerOptions = {}) {
    super();
    this.#o = options;
  }

  async start(): Promise<void> {
    if (this.#closed) throw new StateError('copy: the state manager is closed');
  }

  /** The state endpoint of an instance (started on first use). */
  endpoint(instance: string): Promise<CopyEndpoint> {
    return this.#lock.run(async () => {
      if (this.#closed) throw new StateError('copy: the state manager is closed');
      let ep = this.#eps.get(instance);
      if (ep === undefined) {
        ep = await CopyEndpoint.start(instance, this.#o.host ?? '127.0.0.1');
        this.#eps.set(instance, ep);
      }
      return ep;
    });
  }

  protected async stage(ctx: HandoverContext, entries: readonly FlowStateEntry[], signal: AbortSignal): Promise<string[]> {
    const a = await this.endpoint(ctx.from);
    const b = await this.endpoint(ctx.to);
    const before = a.bytesIn + a.bytesOut;
    await a.push(b.address, ctx.id, entries, signal, this.#o.timeoutMs ?? 5000);
    this.counters.transportBytes += a.bytesIn + a.bytesOut - before;
    return entries.map((e) => flowKeyString(e.flow));
  }

  protected async obtain(ctx: HandoverContext): Promise<FlowStateEntry[]> {
    const b = await this.endpoint(ctx.to);
    const e = b.take(ctx.id);
    if (e === undefined) throw new StateError(`copy: ${ctx.to} received no state from ${ctx.from} for handover ${ctx.id}`);
    return e;
  }

  protected async discard(ctx: HandoverContext, departure: Departure): Promise<void> {
    this.#eps.get(ctx.to)?.forget(departure.handoverId);
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#lock.run(async () => {
      await Promise.all([...this.#eps.values()].map((e) => e.close()));
      this.#eps.clear();
    });
  }
}
