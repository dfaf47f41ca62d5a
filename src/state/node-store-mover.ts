/**
 * A store on the nodes' side as the state backend of a deployment of nodes
 * (Redis, or the E-State group the nodes are members of): the old
 * instance's node writes the moving flows' records to the store
 * (StageState), the new instance's node reads and imports them
 * (ObtainState), then the old node forgets its records and the store's copy
 * (DiscardStagedState). The store's address and credentials are in the
 * nodes' configs; the controller names flows, never records, and never
 * connects to the store.
 *
 * Rollback, whatever step failed: the new instance's records go back
 * through the store to the old instance where it lacks them (what it kept
 * is newer), then the new instance and the store forget them.
 */
import { InFlightMoves, type HandoverContext, type StateMover, type StateMoveResult } from '../handover/state-mover.js';
import { hasStoreStagedState, StateError, type StagingStoreKind } from './types.js';

export class NodeStoreStateMover implements StateMover {
  readonly name: string;
  /** three store round trips per node */
  readonly expectedMs = 20;
  readonly #store: StagingStoreKind;
  readonly #fallback: (StateMover & { close?(): Promise<void> }) | undefined;
  /** moves in flight, by handover: a rollback waits for its handover's to stop */
  readonly #inFlight = new InFlightMoves();

  /** fallback: the mover for instances whose nodes have no common store (e.g. the controller's own Redis manager) */
  constructor(o: { store?: StagingStoreKind; fallback?: StateMover & { close?(): Promise<void> } } = {}) {
    this.#store = o.store ?? 'redis';
    this.name = `${this.#store}-nodes`;
    this.#fallback = o.fallback;
  }

  #nodesShareStore(ctx: HandoverContext): boolean {
    return hasStoreStagedState(ctx.vnfState) && ctx.vnfState.canStageState(ctx.from, ctx.to, this.#store);
  }

  async move(ctx: HandoverContext, signal: AbortSignal): Promise<StateMoveResult> {
    const vs = ctx.vnfState;
    if (!hasStoreStagedState(vs) || !this.#nodesShareStore(ctx)) {
      if (this.#fallback !== undefined) return this.#fallback.move(ctx, signal);
      throw new StateError(`${this.name}: the nodes of ${ctx.from} and ${ctx.to} do not stage state in one ${this.#store} store (give both the same stateStore.${this.#store} in their configs)`);
    }
    return this.#inFlight.track(ctx.id, (async (): Promise<StateMoveResult> => {
      const store = this.#store;
      const staged = await vs.stageState(ctx.from, ctx.id, ctx.selection, { store });
      signal.throwIfAborted();
      const got = await vs.obtainState(ctx.to, ctx.from, ctx.id, staged.flows, { store });
      signal.throwIfAborted();
      await vs.discardStagedState(ctx.from, ctx.id, staged.flows, { deleteLocal: true, store });
      return { records: got.records, bytes: got.bytes, path: 'host-to-host', transport: 'store', peer: got.store };
    })());
  }

  async rollback(ctx: HandoverContext): Promise<void> {
    await this.#inFlight.settled(ctx.id);
    const vs = ctx.vnfState;
    if (!hasStoreStagedState(vs) || !this.#nodesShareStore(ctx)) {
      await this.#fallback?.rollback?.(ctx);
      return;
    }
    const store = this.#store;
    const back = await vs.stageState(ctx.to, ctx.id, ctx.selection, { store });
    if (back.flows.length > 0) {
      await vs.obtainState(ctx.from, ctx.to, ctx.id, back.flows, { keepExisting: true, store });
      await vs.discardStagedState(ctx.to, ctx.id, back.flows, { deleteLocal: true, store });
    }
    await vs.discardStagedState(ctx.from, ctx.id, 'all', { store });
  }

  async close(): Promise<void> {
    await this.#fallback?.close?.();
  }
}
