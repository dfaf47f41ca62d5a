/**
 * Common part of the state managers for VNFs whose per-flow state the
 * DataPlane reaches (the example XDP VNF keeps its counters in a kernel
 * map): export at the old instance, move through a backend, import at the
 * new instance, delete at the old one. Subclasses only say how the records
 * travel: stage() on the old instance's side, obtain() on the new
 * instance's side, discard() to forget the backend's copy.
 */
import type { FlowStateEntry } from '../dataplane/types.js';
import type { HandoverContext, StateMoveResult } from '../handover/state-mover.js';
import { flowKeyString } from './flow-key.js';
import { emptyStats, StateError, type Departure, type StateManager, type StateManagerStats } from './types.js';

export const entryBytes = (entries: readonly FlowStateEntry[]): number => entries.reduce((a, e) => a + e.value.length, 0);

export abstract class DataPlaneStateManager implements StateManager<HandoverContext> {
  abstract readonly kind: string;
  expectedMs?: number;
  protected readonly counters: StateManagerStats = emptyStats();

  get name(): string {
    return this.kind;
  }

  abstract start(): Promise<void>;
  abstract close(): Promise<void>;

  /** Old instance's side: make the exported records available to ctx.to; returns their backend keys. */
  protected abstract stage(ctx: HandoverContext, entries: readonly FlowStateEntry[], signal: AbortSignal): Promise<string[]>;
  /** New instance's side: get the records staged for this departure. */
  protected abstract obtain(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<FlowStateEntry[]>;
  /** Forget the backend's copy (after import, or on rollback). */
  protected abstract discard(ctx: HandoverContext, departure: Departure, signal: AbortSignal | undefined): Promise<void>;

  async leaving(ctx: HandoverContext, signal: AbortSignal): Promise<Departure> {
    await this.start();
    const entries = await ctx.vnfState.exportState(ctx.from, ctx.selection);
    signal.throwIfAborted();
    const keys = await this.stage(ctx, entries, signal);
    return { handoverId: ctx.id, from: ctx.from, to: ctx.to, keys, flows: entries.map((e) => e.flow), records: entries.length, bytes: entryBytes(entries) };
  }

  async arriving(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<StateMoveResult> {
    const entries = await this.obtain(ctx, departure, signal);
    const want = new Set(departure.flows.map(flowKeyString));
    const got = new Set(entries.map((e) => flowKeyString(e.flow)));
    const absent = [...want].filter((f) => !got.has(f));
    if (absent.length > 0 || got.size !== want.size)
      throw new StateError(`${this.kind}: ${ctx.to} obtained ${got.size} of the ${want.size} records ${ctx.from} handed over${absent.length ? ` (missing e.g. ${absent[0]})` : ''}`);
    signal.throwIfAborted();
    await ctx.vnfState.importState(ctx.to, entries);
    return { records: entries.length, bytes: entryBytes(entries) };
  }

  async commit(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<void> {
    // the backend's copy first: if that fails, the old instance still has everything
    await this.discard(ctx, departure, signal);
    await ctx.vnfState.deleteState(ctx.from, departure.flows);
    this.counters.moves++;
    this.counters.records += departure.records;
    this.counters.bytes += departure.bytes;
  }

  /**
   * Whatever happened, afterwards the old instance has the flows' state and
   * the new one has none: records the old instance already lost (a commit
   * that completed) come back from the new one.
   */
  async rollback(ctx: HandoverContext, departure: Departure | undefined, _committed: boolean): Promise<void> {
    this.counters.rollbacks++;
    const dp = ctx.vnfState;
    const atFrom = new Set((await dp.exportState(ctx.from, ctx.selection)).map((e) => flowKeyString(e.flow)));
    const atTo = await dp.exportState(ctx.to, ctx.selection);
    const back = atTo.filter((e) => !atFrom.has(flowKeyString(e.flow)));
    if (back.length > 0) await dp.importState(ctx.from, back);
    if (atTo.length > 0)
      await dp.deleteState(
        ctx.to,
        atTo.map((e) => e.flow),
      );
    if (departure !== undefined) await this.discard(ctx, departure, undefined).catch(() => undefined);
  }

  stats(): StateManagerStats {
    return { ...this.counters };
  }
}
