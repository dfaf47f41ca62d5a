/**
 * The adapter between SHarP and any state manager: the handover engine
 * calls a StateMover; StateManagerMover turns that one call into the
 * manager's leaving → arriving → commit, and the engine's rollback into the
 * manager's, so the protocol stays independent of how state moves.
 */
import type { HandoverContext, StateMover, StateMoveResult } from '../handover/state-mover.js';
import type { Departure, FlowMoveContext, StateManager } from './types.js';

/**
 * One state move with any manager: leaving → arriving → commit. `onDeparture`
 * sees the departure as soon as the old instance handed over (for a later
 * rollback).
 */
export async function moveState<C extends FlowMoveContext>(
  m: StateManager<C>,
  ctx: C,
  signal: AbortSignal,
  onDeparture?: (d: Departure) => void,
): Promise<StateMoveResult & { departure: Departure }> {
  await m.start();
  signal.throwIfAborted();
  const departure = await m.leaving(ctx, signal);
  onDeparture?.(departure);
  signal.throwIfAborted();
  const result = await m.arriving(ctx, departure, signal);
  signal.throwIfAborted();
  await m.commit(ctx, departure, signal);
  return { ...result, departure };
}

interface MoveRecord {
  departure: Departure | undefined;
  committed: boolean;
  /** settles (never rejects) when move() has finished either way */
  done: Promise<void>;
}

/** How long rollback waits for an aborted move to stop before undoing it. */
const SETTLE_MS = 5_000;
/** moves remembered for a later rollback (the engine may roll back after a successful move, if the release fails) */
const REMEMBER = 64;

export class StateManagerMover implements StateMover {
  readonly #moves = new Map<number, MoveRecord>();

  constructor(readonly manager: StateManager<HandoverContext>) {}

  get name(): string {
    return this.manager.name;
  }

  /** read by the engine's hold-ring capacity check */
  get expectedMs(): number | undefined {
    return this.manager.expectedMs;
  }

  async move(ctx: HandoverContext, signal: AbortSignal): Promise<StateMoveResult> {
    const m = this.manager;
    const rec: MoveRecord = { departure: undefined, committed: false, done: Promise.resolve() };
    const run = async (): Promise<StateMoveResult> => {
      const r = await moveState(m, ctx, signal, (d) => (rec.departure = d));
      rec.committed = true;
      return { records: r.records, bytes: r.bytes };
    };
    const p = run();
    rec.done = p.then(
      () => undefined,
      () => undefined,
    );
    this.#moves.delete(ctx.id);
    this.#moves.set(ctx.id, rec);
    while (this.#moves.size > REMEMBER) this.#moves.delete(this.#moves.keys().next().value!);
    return p;
  }

  async rollback(ctx: HandoverContext): Promise<void> {
    const rec = this.#moves.get(ctx.id);
    this.#moves.delete(ctx.id);
    if (rec !== undefined) {
      // an aborted move honours its signal; do not undo it under its feet
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([rec.done, new Promise<void>((r) => (timer = setTimeout(r, SETTLE_MS)))]);
      clearTimeout(timer);
    }
    await this.manager.rollback(ctx, rec?.departure, rec?.committed ?? false);
  }

  close(): Promise<void> {
    return this.manager.close();
  }
}
