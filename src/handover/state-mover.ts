/**
 * The state-mover hook: called by the handover engine once SHarP says the
 * old instance's state for the moving flows is final, with the handover's
 * context — the "additional information" SHarP hands to any state
 * management solution.
 */
import type { FlowKey, FlowSelection, Rule, VnfStateStore } from '../dataplane/types.js';
import { compileSelection } from '../dataplane/types.js';
import { flowKeyString } from '../state/flow-key.js';

export interface HandoverCounts {
  /** PRE packets the switches sent to the old instance */
  preSent: bigint;
  /** PRE packets the old instance's agent received */
  preSeen: bigint;
  /** POST packets the switches sent to the new instance so far */
  postSent: bigint;
}

export interface HandoverContext {
  id: number;
  rules: readonly Rule[];
  from: string;
  to: string;
  /** whether a flow belongs to the moving rules (either direction) */
  covers(flow: FlowKey): boolean;
  /** the same as data: the moving rules' matches (crosses to the instances' hosts) */
  selection: FlowSelection;
  counts: HandoverCounts;
  /** ms since the handover started, per completed step */
  timings: Readonly<Record<string, number>>;
  /** where the instances' per-flow VNF state is reached */
  vnfState: VnfStateStore;
}

export interface StateMover {
  readonly name: string;
  /** how long a move is expected to take (ms), for the hold-capacity check; unknown: the engine assumes 100 ms */
  readonly expectedMs?: number | undefined;
  /** Moves the flows' state from ctx.from to ctx.to. Must honour `signal` (timeout/abort). */
  move(ctx: HandoverContext, signal: AbortSignal): Promise<StateMoveResult>;
  /** Undoes a partial move at ctx.to after a failure (best effort). */
  rollback?(ctx: HandoverContext): Promise<void>;
}

export interface StateMoveResult {
  /** state records moved */
  records: number;
  bytes: number;
  /** 'host-to-host': the old instance's host handed the records to the new one's (they never reached the controller); 'controller': exported to and imported from the controller */
  path?: 'host-to-host' | 'controller';
  /** host-to-host: the host that acknowledged them, and how the hosts talked ('tls', 'unix', 'local') */
  peer?: string;
  transport?: string;
  /** ms per phase of the move: 'export', 'import', 'delete' through the controller, 'transfer' host to host */
  phaseMs?: Record<string, number>;
}

export function ruleCovers(rules: readonly Rule[]): (flow: FlowKey) => boolean {
  return compileSelection(rules.map((r) => r.match));
}

/**
 * Moves whose work goes on at the hosts after the engine gave up on them
 * (a host keeps to its own budget): a rollback waits for its handover's
 * move to settle before undoing it.
 */
export class InFlightMoves {
  readonly #moves = new Map<number, Promise<void>>();

  /** Remembers `p` as handover `id`'s move until it settles; returns `p`. */
  track<T>(id: number, p: Promise<T>): Promise<T> {
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.#moves.set(id, settled);
    void settled.then(() => {
      if (this.#moves.get(id) === settled) this.#moves.delete(id);
    });
    return p;
  }

  /** Resolves once handover `id`'s move (if any) has settled. */
  async settled(id: number): Promise<void> {
    await this.#moves.get(id);
  }
}

/**
 * Moves the example XDP VNF's per-flow map entries: host to host where the
 * deployment can (A's host exports, hands them to B's, deletes once B's
 * acknowledged: the controller sends only the selection), else export at
 * A, import at B, delete at A through the controller.
 */
export class VnfMapStateMover implements StateMover {
  readonly name = 'vnf-map';
  /** a few map batch operations */
  readonly expectedMs = 5;
  /** a host's budget for one host-to-host transfer */
  readonly transferTimeoutMs: number;
  /** host-to-host transfers in flight, by handover: a rollback waits for its handover's to settle */
  readonly #inFlight = new InFlightMoves();

  /** 'auto': host to host where the deployment can; 'controller': always through the controller (for comparison) */
  readonly via: 'auto' | 'controller';

  constructor(o: { transferTimeoutMs?: number; via?: 'auto' | 'controller' } = {}) {
    this.transferTimeoutMs = o.transferTimeoutMs ?? 10_000;
    this.via = o.via ?? 'auto';
  }

  async move(ctx: HandoverContext, signal: AbortSignal): Promise<StateMoveResult> {
    const vs = ctx.vnfState;
    if (this.via === 'auto' && vs.transferState !== undefined && vs.canTransferState?.(ctx.from, ctx.to) === true) {
      // not cancelled on abort: the sending host keeps to its budget, and the rollback waits for its answer
      const t0 = performance.now();
      const r = await this.#inFlight.track(ctx.id, vs.transferState(ctx.from, ctx.to, ctx.selection, { handoverId: ctx.id, timeoutMs: this.transferTimeoutMs }));
      return { records: r.records, bytes: r.bytes, path: 'host-to-host', peer: r.peer, transport: r.transport, phaseMs: { transfer: performance.now() - t0 } };
    }
    const t0 = performance.now();
    const entries = await ctx.vnfState.exportState(ctx.from, ctx.selection);
    signal.throwIfAborted();
    const t1 = performance.now();
    await ctx.vnfState.importState(ctx.to, entries);
    signal.throwIfAborted();
    const t2 = performance.now();
    await ctx.vnfState.deleteState(
      ctx.from,
      entries.map((e) => e.flow),
    );
    const phaseMs = { export: t1 - t0, import: t2 - t1, delete: performance.now() - t2 };
    return { records: entries.length, bytes: entries.reduce((a, e) => a + e.value.length, 0), path: 'controller', phaseMs };
  }

  /** Afterwards A has the flows' state and B none: records A already gave up come back from B (host to host where possible). */
  async rollback(ctx: HandoverContext): Promise<void> {
    await this.#inFlight.settled(ctx.id);
    const vs = ctx.vnfState;
    if (this.via === 'auto' && vs.transferState !== undefined && vs.canTransferState?.(ctx.to, ctx.from) === true) {
      try {
        await vs.transferState(ctx.to, ctx.from, ctx.selection, { handoverId: ctx.id, keepExisting: true, timeoutMs: this.transferTimeoutMs });
        return;
      } catch {
        // B's host cannot reach A's: the records go back through the controller below
      }
    }
    const moved = await ctx.vnfState.exportState(ctx.to, ctx.selection);
    const atFrom = new Set((await ctx.vnfState.exportState(ctx.from, ctx.selection)).map((e) => flowKeyString(e.flow)));
    const back = moved.filter((e) => !atFrom.has(flowKeyString(e.flow)));
    if (back.length > 0) await ctx.vnfState.importState(ctx.from, back);
    await ctx.vnfState.deleteState(
      ctx.to,
      moved.map((e) => e.flow),
    );
  }
}

/**
 * Wraps a mover with an injected transfer delay (as if the state crossed a
 * slow network), to show that the handover stays lossless whatever it takes.
 */
export class DelayedStateMover implements StateMover {
  readonly name: string;
  constructor(
    readonly inner: StateMover,
    readonly delayMs: number,
  ) {
    this.name = `${inner.name}+${delayMs}ms`;
  }

  get expectedMs(): number {
    return this.delayMs + (this.inner.expectedMs ?? 100);
  }

  async move(ctx: HandoverContext, signal: AbortSignal): Promise<StateMoveResult> {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, this.delayMs);
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          reject(signal.reason);
        },
        { once: true },
      );
    });
    return this.inner.move(ctx, signal);
  }

  async rollback(ctx: HandoverContext): Promise<void> {
    await this.inner.rollback?.(ctx);
  }
}

