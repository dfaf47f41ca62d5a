/**
 * E-State as the state manager of DataPlane VNFs (the example XDP VNF):
 * every instance gets an E-State node (serving on a Unix socket of its own,
 * or on TCP with mutual TLS when host/basePort are given), and all of them
 * form one group.
 *
 *   leaving   the old instance's node takes the flows' map entries
 *             (exportState) as its local items "flow/<flow>";
 *   arriving  the new instance's node fetches them from the old peer
 *             and imports them into its map (importState);
 *   commit    the new node drops the items at the old peer,
 *             and the old map entries are deleted.
 *
 * The map stays the VNF's authoritative state; the node's local view only
 * carries the records across the move.
 */
import type { FlowStateEntry } from '../dataplane/types.js';
import type { HandoverContext } from '../handover/state-mover.js';
import { Mutex } from '../util/mutex.js';
import { DataPlaneStateManager } from './dataplane-manager.js';
import type { TlsMaterial } from '../node/transport/certs.js';
import { EStateNode, type EStateNodeOptions } from './estate/node.js';
import { flowItemKey, parseFlowItemKey } from './flow-key.js';
import { StateError, type Departure } from './types.js';

export interface EStateManagerOptions {
  /** serve the instances' nodes on TCP at this address (needs tls; default: each on a Unix socket) */
  host?: string;
  /** first TCP port; instance i listens on basePort + i (0: any free port each; needs tls) */
  basePort?: number;
  /** mutual TLS material of the nodes (a node certificate: serverAuth and clientAuth), for TCP */
  tls?: TlsMaterial;
  /** per request (default 1000 ms) */
  timeoutMs?: number;
  /** (default 2) */
  retries?: number;
  /** further options for every node */
  node?: Omit<EStateNodeOptions, 'id' | 'host' | 'port' | 'peers' | 'tls'>;
}

export class EStateManager extends DataPlaneStateManager {
  readonly kind = 'estate';
  readonly #o: EStateManagerOptions;
  readonly #nodes = new Map<string, EStateNode>();
  readonly #lock = new Mutex();
  #closed = false;

  constructor(options: EStateManagerOptions = {}) {
    super();
    this.#o = options;
  }

  async start(): Promise<void> {
    if (this.#closed) throw new StateError('estate: the state manager is closed');
  }

  /** The E-State node embedded in `instance` (started and joined to the group on first use). */
  async node(instance: string): Promise<EStateNode> {
    const have = this.#nodes.get(instance);
    if (have !== undefined) return have;
    return this.#lock.run(async () => {
      const again = this.#nodes.get(instance);
      if (again !== undefined) return again;
      if (this.#closed) throw new StateError('estate: the state manager is closed');
      const index = this.#nodes.size;
      const n = await EStateNode.start({
        timeoutMs: this.#o.timeoutMs ?? 1000,
        retries: this.#o.retries ?? 2,
        ...this.#o.node,
        id: instance,
        ...(this.#o.tls === undefined ? {} : { tls: this.#o.tls }),
        ...(this.#o.host === undefined && this.#o.basePort === undefined ? {} : { host: this.#o.host ?? '127.0.0.1', port: this.#o.basePort ? this.#o.basePort + index : 0 }),
      });
      const seed = this.#nodes.values().next().value;
      try {
        if (seed !== undefined) {
          const r = await n.join(seed.address);
          if (r.unreached.length > 0) throw new StateError(`estate: ${instance} could not reach ${r.unreached.join(', ')} when joining`);
        }
      } catch (e) {
        await n.close();
        throw e;
      }
      this.#nodes.set(instance, n);
      return n;
    });
  }

  /** The nodes started so far, by instance. */
  nodes(): ReadonlyMap<string, EStateNode> {
    return this.#nodes;
  }

  protected async stage(ctx: HandoverContext, entries: readonly FlowStateEntry[], signal: AbortSignal): Promise<string[]> {
    const a = await this.node(ctx.from);
    await this.node(ctx.to);
    signal.throwIfAborted();
    return entries.map((e) => a.set(flowItemKey(e.flow), e.value).key);
  }

  protected async obtain(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<FlowStateEntry[]> {
    const b = await this.node(ctx.to);
    const before = b.stats();
    const items = await b.fetch(ctx.from, { keys: departure.keys }, { signal });
    const after = b.stats();
    this.counters.transportBytes += after.bytesIn - before.bytesIn + after.bytesOut - before.bytesOut;
    return items.map((i) => {
      const f = parseFlowItemKey(i.key);
      if (f === undefined || !Buffer.isBuffer(i.value)) throw new StateError(`estate: ${ctx.from} answered an item '${i.key}' that is not a flow record`);
      return { flow: f.flow, value: i.value };
    });
  }

  protected async discard(ctx: HandoverContext, departure: Departure, signal: AbortSignal | undefined): Promise<void> {
    const b = await this.node(ctx.to);
    const before = b.stats();
    await b.drop(ctx.from, departure.keys, signal === undefined ? {} : { signal });
    const after = b.stats();
    this.counters.transportBytes += after.bytesIn - before.bytesIn + after.bytesOut - before.bytesOut;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#lock.run(async () => {
      await Promise.all([...this.#nodes.values()].map((n) => n.close()));
      this.#nodes.clear();
    });
  }
}
