/**
 * Moves flows between userspace VNF processes through E-State — the
 * process-per-instance form of UserspaceVnfStateManager
 * (src/state/userspace-vnf.ts). The controller names keys and peers; the
 * items go from the old instance's node to the new one's over the E-State
 * transport, never through the controller.
 *
 *   leaving: the old instance's process passes a barrier (every packet the
 *     stack had queued in its TUN when the drain ended is processed: SHarP's
 *     drain counts frames at the agent, before the stack and the process
 *     have seen them; and until the process has written them back, they
 *     are still on their way through the old instance, so the barrier also
 *     keeps them ahead of the frames the new instance will release), then
 *     lists its items of the moving flows;
 *   arriving: the new instance's process fetches them from the old one's
 *     node and adopts them (all-or-nothing), before SHarP releases the
 *     frames it holds;
 *   commit: the new instance's process has the old one drop them;
 *   rollback: items the old instance gave up come back from the new one.
 */
import type { StateMoveResult } from '../../handover/state-mover.js';
import { FLOW_PREFIX, flowKeyString, parseFlowItemKey } from '../../state/flow-key.js';
import { abortable, emptyStats, StateError, type Departure, type FlowMoveContext, type StateManager, type StateManagerStats } from '../../state/types.js';
import type { FlowKey } from '../../dataplane/types.js';
import type { UserspaceVnfFleet } from './fleet.js';

export class UserspaceVnfProcessStateManager implements StateManager<FlowMoveContext> {
  readonly kind = 'estate';
  readonly name = 'estate (userspace VNF processes)';
  readonly #counters: StateManagerStats = emptyStats();

  readonly #barrier: boolean;

  /** `barrier: false` skips the barrier (only to show, in a test, what it prevents) */
  constructor(
    readonly fleet: UserspaceVnfFleet,
    o: { barrier?: boolean } = {},
  ) {
    this.#barrier = o.barrier ?? true;
  }

  async start(): Promise<void> {}

  #pair(ctx: FlowMoveContext): void {
    for (const n of [ctx.from, ctx.to]) if (!this.fleet.has(n)) throw new StateError(`no userspace VNF process '${n}' (known: ${this.fleet.names().join(', ') || 'none'})`);
  }

  async leaving(ctx: FlowMoveContext, signal: AbortSignal): Promise<Departure> {
    this.#pair(ctx);
    const a = this.fleet.get(ctx.from);
    if (this.#barrier) await abortable(a.command({ op: 'barrier' }), signal);
    const items = (await abortable(a.command({ op: 'items', prefix: FLOW_PREFIX }), signal)).items ?? [];
    const flows = new Map<string, FlowKey>();
    const keys: string[] = [];
    let bytes = 0;
    for (const item of items) {
      const p = parseFlowItemKey(item.key);
      if (p === undefined || !ctx.covers(p.flow)) continue;
      keys.push(item.key);
      flows.set(flowKeyString(p.flow), p.flow);
      bytes += item.bytes;
    }
    return { handoverId: ctx.id, from: ctx.from, to: ctx.to, keys, flows: [...flows.values()], records: flows.size, bytes };
  }

  async arriving(ctx: FlowMoveContext, dep: Departure, signal: AbortSignal): Promise<StateMoveResult> {
    this.#pair(ctx);
    if (dep.keys.length === 0) return { records: 0, bytes: 0 };
    await abortable(this.fleet.get(ctx.to).command({ op: 'obtain', from: ctx.from, keys: dep.keys }), signal);
    return { records: dep.records, bytes: dep.bytes };
  }

  async commit(ctx: FlowMoveContext, dep: Departure, signal: AbortSignal): Promise<void> {
    if (dep.keys.length > 0) await abortable(this.fleet.get(ctx.to).command({ op: 'drop', from: ctx.from, keys: dep.keys }), signal);
    this.#counters.moves++;
    this.#counters.records += dep.records;
    this.#counters.bytes += dep.bytes;
  }

  async rollback(ctx: FlowMoveContext, dep: Departure | undefined, _committed = false): Promise<void> {
    this.#counters.rollbacks++;
    if (dep === undefined || dep.keys.length === 0) return;
    await this.fleet.get(ctx.from).command({ op: 'obtain', from: ctx.to, keys: dep.keys, missingOnly: true });
    await this.fleet.get(ctx.to).command({ op: 'del', keys: dep.keys });
  }

  stats(): StateManagerStats {
    return { ...this.#counters };
  }

  /** The fleet belongs to the lab that started it: nothing to close here. */
  async close(): Promise<void> {}
}
