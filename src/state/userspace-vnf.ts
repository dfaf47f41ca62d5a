/**
 * A stateful VNF written in TypeScript on top of E-State: the userspace
 * twin of the example XDP VNF (ebpf/vnf_counter.bpf.c). It counts the
 * packets and bytes of every flow and stamps the packet counter into each
 * probe (struct sharp_probe), so a receiver can check stamp == seq.
 *
 * Its whole state lives in the local view of its E-State node
 * ("flow/<flow>/packets", "flow/<flow>/bytes"), which is what lets it
 * survive a handover: UserspaceVnfStateManager moves a flow's items from
 * the old instance's node to the new one's over E-State, and the counters
 * continue. The global view gives, e.g., a flow's packets over all
 * instances.
 *
 * It processes probe payloads handed to it (process()); bind() optionally
 * serves a UDP socket and forwards what it stamped.
 */
import dgram from 'node:dgram';
import type { FlowKey } from '../dataplane/types.js';
import type { StateMoveResult } from '../handover/state-mover.js';
import { SHARP_PROBE_LEN, SHARP_PROBE_MAGIC, sharpProbeLayout } from '../generated/abi.js';
import { EStateNode, type EStateNodeOptions, type GlobalOptions, type GlobalResult } from './estate/node.js';
import { FLOW_PREFIX, flowItemKey, flowKeyString, parseFlowItemKey } from './flow-key.js';
import { emptyStats, StateError, type Departure, type FlowMoveContext, type StateManager, type StateManagerStats } from './types.js';
import { valueBytes } from './estate/proto.js';

const field = (name: string): number => {
  const f = sharpProbeLayout.fields.find((x) => x.name === name);
  if (f === undefined) throw new Error(`struct sharp_probe has no field ${name}`);
  return f.offset;
};
const MAGIC_OFF = field('magic');
const STAMP_OFF = field('stamp');

export interface ProcessResult {
  /** the flow's packet counter after this packet */
  counter: bigint;
  /** whether the payload was a probe (and now carries the counter) */
  stamped: boolean;
}

export interface UserspaceVnfOptions {
  /** instance name; also the id of its E-State node */
  name: string;
  /** options of the E-State node it embeds */
  estate?: Omit<EStateNodeOptions, 'id'>;
}

export class UserspaceVnf {
  #socket: dgram.Socket | undefined;
  processed = 0;
  stamped = 0;
  forwarded = 0;

  private constructor(
    readonly name: string,
    readonly store: EStateNode,
  ) {}

  static async start(options: UserspaceVnfOptions): Promise<UserspaceVnf> {
    const store = await EStateNode.start({ ...options.estate, id: options.name });
    return new UserspaceVnf(options.name, store);
  }

  /**
   * Processes one packet of `flow` (its UDP payload): counts it in the local
   * view and, if it is a probe, writes the counter into its stamp field (in
   * place).
   */
  process(flow: FlowKey, payload: Buffer): ProcessResult {
    const base = flowItemKey(flow);
    const kp = `${base}/packets`;
    const kb = `${base}/bytes`;
    const counter = ((this.store.get(kp) as bigint | undefined) ?? 0n) + 1n;
    this.store.set(kp, counter);
    this.store.set(kb, ((this.store.get(kb) as bigint | undefined) ?? 0n) + BigInt(payload.length));
    this.processed++;
    const isProbe = payload.length >= SHARP_PROBE_LEN && payload.readUInt32BE(MAGIC_OFF) === SHARP_PROBE_MAGIC;
    if (isProbe) {
      payload.writeBigUInt64BE(counter, STAMP_OFF);
      this.stamped++;
    }
    return { counter, stamped: isProbe };
  }

  /** this instance's packet counter of a flow (0n if it has none) */
  counter(flow: FlowKey): bigint {
    return (this.store.get(flowItemKey(flow, 'packets')) as bigint | undefined) ?? 0n;
  }

  bytes(flow: FlowKey): bigint {
    return (this.store.get(flowItemKey(flow, 'bytes')) as bigint | undefined) ?? 0n;
  }

  /** the flows this instance holds state of */
  flows(): FlowKey[] {
    const seen = new Map<string, FlowKey>();
    for (const k of this.store.keys(FLOW_PREFIX)) {
      const p = parseFlowItemKey(k);
      if (p) seen.set(flowKeyString(p.flow), p.flow);
    }
    return [...seen.values()];
  }

  /** a flow's packets summed over every instance of the group (global view) */
  globalPackets(flow: FlowKey, options: GlobalOptions = {}): Promise<GlobalResult<number | bigint>> {
    return this.store.getGlobal(flowItemKey(flow, 'packets'), 'sum', options);
  }

  /**
   * Serves a UDP socket: every datagram is processed as a packet of the
   * flow (sender → this socket) and, with `forwardTo`, sent on from the same
   * socket. Resolves with the bound address.
   */
  async bind(options: { host?: string; port?: number; forwardTo?: { host: string; port: number } } = {}): Promise<{ host: string; port: number }> {
    if (this.#socket !== undefined) throw new StateError(`${this.name} is bound already`);
    const s = dgram.createSocket('udp4');
    this.#socket = s;
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(options.port ?? 0, options.host ?? '127.0.0.1', () => {
        s.off('error', reject);
        resolve();
      });
    });
    const local = s.address();
    s.on('message', (msg, rinfo) => {
      this.process({ src: rinfo.address, sport: rinfo.port, dst: local.address, dport: local.port, proto: 17 }, msg);
      if (options.forwardTo) {
        this.forwarded++;
        s.send(msg, options.forwardTo.port, options.forwardTo.host);
      }
    });
    s.on('error', () => undefined);
    return { host: local.address, port: local.port };
  }

  async close(): Promise<void> {
    const s = this.#socket;
    this.#socket = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
    await this.store.close();
  }
}

/**
 * Moves flows between UserspaceVnf instances through E-State: their state
 * is in the instances' local views already, so "leaving" only names the
 * items; "arriving" fetches them from the old instance's node over gRPC and
 * adopts them; "commit" drops them at the old instance.
 */
export class UserspaceVnfStateManager implements StateManager<FlowMoveContext> {
  readonly kind = 'estate';
  readonly name = 'estate (userspace VNF)';
  readonly #vnfs = new Map<string, UserspaceVnf>();
  readonly #counters: StateManagerStats = emptyStats();

  constructor(vnfs: Iterable<UserspaceVnf> = []) {
    for (const v of vnfs) this.add(v);
  }

  add(vnf: UserspaceVnf): void {
    this.#vnfs.set(vnf.name, vnf);
  }

  #vnf(name: string): UserspaceVnf {
    const v = this.#vnfs.get(name);
    if (v === undefined) throw new StateError(`no userspace VNF instance '${name}' (known: ${[...this.#vnfs.keys()].join(', ') || 'none'})`);
    return v;
  }

  async start(): Promise<void> {}

  async leaving(ctx: FlowMoveContext): Promise<Departure> {
    const a = this.#vnf(ctx.from);
    this.#vnf(ctx.to);
    const flows = new Map<string, FlowKey>();
    const keys: string[] = [];
    let bytes = 0;
    for (const item of a.store.items(FLOW_PREFIX)) {
      const p = parseFlowItemKey(item.key);
      if (p === undefined || !ctx.covers(p.flow)) continue;
      keys.push(item.key);
      flows.set(flowKeyString(p.flow), p.flow);
      bytes += valueBytes(item.value);
    }
    return { handoverId: ctx.id, from: ctx.from, to: ctx.to, keys, flows: [...flows.values()], records: flows.size, bytes };
  }

  async arriving(ctx: FlowMoveContext, dep: Departure, signal: AbortSignal): Promise<StateMoveResult> {
    const b = this.#vnf(ctx.to);
    const before = b.store.stats();
    const items = await b.store.fetch(ctx.from, { keys: dep.keys }, { signal });
    const got = new Set(items.map((i) => i.key));
    const absent = dep.keys.filter((k) => !got.has(k));
    if (absent.length > 0) throw new StateError(`estate: ${ctx.from} no longer has ${absent.length} of the items it handed over (e.g. '${absent[0]}')`);
    signal.throwIfAborted();
    b.store.adopt(items);
    const after = b.store.stats();
    this.#counters.transportBytes += after.bytesIn - before.bytesIn + after.bytesOut - before.bytesOut;
    return { records: dep.records, bytes: items.reduce((a, i) => a + valueBytes(i.value), 0) };
  }

  async commit(ctx: FlowMoveContext, dep: Departure, signal: AbortSignal): Promise<void> {
    const b = this.#vnf(ctx.to);
    await b.store.drop(ctx.from, dep.keys, { signal });
    this.#counters.moves++;
    this.#counters.records += dep.records;
    this.#counters.bytes += dep.bytes;
  }

  async rollback(ctx: FlowMoveContext, dep: Departure | undefined): Promise<void> {
    this.#counters.rollbacks++;
    if (dep === undefined) return;
    const a = this.#vnf(ctx.from);
    const b = this.#vnf(ctx.to);
    // items the old instance already gave up come back from the new one, over E-State
    const lost = dep.keys.filter((k) => !a.store.has(k));
    if (lost.length > 0) a.store.adopt((await a.store.fetch(ctx.to, { keys: lost })).filter((i) => !a.store.has(i.key)));
    for (const k of dep.keys) b.store.del(k);
  }

  stats(): StateManagerStats {
    return { ...this.#counters };
  }

  /** Closes the VNFs it was given. */
  async close(): Promise<void> {
    await Promise.all([...this.#vnfs.values()].map((v) => v.close()));
    this.#vnfs.clear();
  }
}
