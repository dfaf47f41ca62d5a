/**
 * Pluggable VNF state management: the interface every state manager
 * implements (E-State, Redis, direct copy, the VNF's own map access), and
 * the small vocabulary they share.
 *
 * A handover moves flows from an old instance to a new one. SHarP calls the
 * state manager once the old instance's state for those flows is final and
 * hands it the handover's context. The manager sees three moments:
 *
 *   leaving(ctx)           on the OLD instance: "these flows are leaving
 *                          you" — take their final state and make it
 *                          available (stage it in a store, push it, …);
 *   arriving(ctx, dep)     on the NEW instance: "these flows are arriving" —
 *                          obtain their state and install it;
 *   commit(ctx, dep)       the new instance has it: the old one forgets it.
 *
 * and rollback(ctx, dep) when the handover is undone.
 */
import type { FlowKey, FlowSelection, VnfStateStore } from '../dataplane/types.js';
import type { HandoverContext, StateMoveResult } from '../handover/state-mover.js';

export type { StateMoveResult } from '../handover/state-mover.js';

/**
 * The part of a handover's context a state manager needs at least. The
 * handover engine passes a full HandoverContext (which extends this); a
 * manager of userspace VNFs needs nothing more than this.
 */
export interface FlowMoveContext {
  /** handover id */
  id: number;
  /** old instance */
  from: string;
  /** new instance */
  to: string;
  /** whether a flow belongs to the moving rules (either direction) */
  covers(flow: FlowKey): boolean;
}

/** What the old instance handed over: the "manifest" of a move in progress. */
export interface Departure {
  handoverId: number;
  from: string;
  to: string;
  /** the backend's keys of the moving state items */
  keys: string[];
  /** the flows whose state moves */
  flows: FlowKey[];
  /** state records (one per flow for the XDP example VNF) */
  records: number;
  /** state bytes in the VNF's own encoding */
  bytes: number;
}

export interface StateManagerStats {
  /** handovers whose state this manager moved (committed) */
  moves: number;
  /** records moved */
  records: number;
  /** VNF state bytes moved */
  bytes: number;
  /** bytes that crossed the backend's transport (requests and replies), where the manager can tell */
  transportBytes: number;
  rollbacks: number;
}

export interface StateManager<C extends FlowMoveContext = HandoverContext> {
  /** 'estate' | 'redis' | 'copy' | 'vnf-map' | … */
  readonly kind: string;
  /** for logs and the engine's "moving-state" event */
  readonly name: string;
  /** expected duration of one move (the engine's hold-ring capacity check reads it) */
  readonly expectedMs?: number;
  /** Connects / starts servers. Idempotent; the other methods call it when needed. */
  start(): Promise<void>;
  /** Old instance: the flows are leaving you; their state is final. */
  leaving(ctx: C, signal: AbortSignal): Promise<Departure>;
  /** New instance: the flows are arriving; obtain and install their state. */
  arriving(ctx: C, departure: Departure, signal: AbortSignal): Promise<StateMoveResult>;
  /** The new instance has the state: the old instance and the backend forget it. */
  commit(ctx: C, departure: Departure, signal: AbortSignal): Promise<void>;
  /**
   * Undoes a move (best effort): the old instance ends up with the flows'
   * state, the new one without it. `departure` is undefined if leaving() never
   * finished; `committed` says whether commit() had completed.
   */
  rollback(ctx: C, departure: Departure | undefined, committed: boolean): Promise<void>;
  stats(): StateManagerStats;
  /** Stops every server, socket and child process the manager started. */
  close(): Promise<void>;
}

export class StateError extends Error {
  override name = 'StateError';
}

export function emptyStats(): StateManagerStats {
  return { moves: 0, records: 0, bytes: 0, transportBytes: 0, rollbacks: 0 };
}

/** Rejects with the signal's reason once it aborts; resolves/rejects with `p` otherwise. */
export function abortable<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return p;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

/**
 * A deployment whose hosts stage VNF state in a shared store themselves
 * (the nodes' Redis, or the E-State group the nodes are members of): the
 * old instance's host writes, the new one's reads; the caller handles
 * flows, never records. `store`: which of the hosts' stores (default redis).
 */
export interface StoreStagedState {
  /** whether both instances' hosts stage state in one and the same store of that kind */
  canStageState(from: string, to: string, store?: StagingStoreKind): boolean;
  /** `instance`'s host writes the selection's records to the store under the handover */
  stageState(instance: string, handoverId: number, select: FlowSelection, o?: { store?: StagingStoreKind }): Promise<{ flows: FlowKey[]; bytes: number; store: string }>;
  /** `instance`'s host reads what `fromInstance` staged for these flows and imports it */
  obtainState(instance: string, fromInstance: string, handoverId: number, flows: readonly FlowKey[], o?: { keepExisting?: boolean; store?: StagingStoreKind }): Promise<{ records: number; bytes: number; store: string }>;
  /** removes what `instance` staged under the handover (these flows or all); deleteLocal: and its own records of these flows */
  discardStagedState(instance: string, handoverId: number, flows: readonly FlowKey[] | 'all', o?: { deleteLocal?: boolean; store?: StagingStoreKind }): Promise<number>;
}

/** the kinds of store hosts stage state in (the node API's StagingStore) */
export type StagingStoreKind = 'redis' | 'estate';

export function hasStoreStagedState(v: VnfStateStore): v is VnfStateStore & StoreStagedState {
  const s = v as Partial<StoreStagedState>;
  return typeof s.canStageState === 'function' && typeof s.stageState === 'function' && typeof s.obtainState === 'function' && typeof s.discardStagedState === 'function';
}
