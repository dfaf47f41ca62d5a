/**
 * One entry point for the CLI's `--state`: a state manager by name, and the
 * mover the handover engine takes.
 */
import { ConntrackStateManager, type ConntrackStateManagerOptions } from './conntrack-manager.js';
import { CopyStateManager, type CopyStateManagerOptions } from './copy-manager.js';
import { EStateManager, type EStateManagerOptions } from './estate-manager.js';
import { StateManagerMover } from './mover.js';
import { RedisStateManager, type RedisStateManagerOptions } from './redis-manager.js';
import { StateError, type StateManager } from './types.js';
import { VnfMapStateManager } from './vnf-map-manager.js';
import { VnfMapStateMover, type HandoverContext, type StateMover } from '../handover/state-mover.js';
import { NodeStoreStateMover } from './node-store-mover.js';

export const STATE_KINDS = ['estate', 'redis', 'copy', 'vnf-map', 'conntrack'] as const;
export type StateKind = (typeof STATE_KINDS)[number];

export interface StateManagerOptions {
  estate?: EStateManagerOptions;
  /** without url/host/port or a cluster the manager starts its own redis-server (spawn: true) */
  redis?: RedisStateManagerOptions;
  copy?: CopyStateManagerOptions;
  /** where the instances' namespaces are (the lab: their netns) */
  conntrack?: ConntrackStateManagerOptions;
}

export function isStateKind(s: string): s is StateKind {
  return (STATE_KINDS as readonly string[]).includes(s);
}

export function parseStateKind(s: string): StateKind {
  if (!isStateKind(s)) throw new StateError(`unknown state manager '${s}' (choose one of ${STATE_KINDS.join(', ')})`);
  return s;
}

export function createStateManager(kind: StateKind, options: StateManagerOptions = {}): StateManager<HandoverContext> {
  switch (kind) {
    case 'estate':
      return new EStateManager(options.estate);
    case 'redis': {
      const r = options.redis ?? {};
      const given = r.url !== undefined || r.host !== undefined || r.port !== undefined || r.cluster !== undefined || Boolean(r.spawnCluster);
      return new RedisStateManager(given || r.spawn !== undefined ? r : { ...r, spawn: true });
    }
    case 'copy':
      return new CopyStateManager(options.copy);
    case 'vnf-map':
      return new VnfMapStateManager();
    case 'conntrack':
      return new ConntrackStateManager(options.conntrack);
    default:
      throw new StateError(`unknown state manager '${String(kind)}' (choose one of ${STATE_KINDS.join(', ')})`);
  }
}

/** createStateManager wrapped for the handover engine; close() it when done. */
export function createStateMover(kind: StateKind, options: StateManagerOptions = {}): StateManagerMover {
  return new StateManagerMover(createStateManager(kind, options));
}

/**
 * The mover a controller uses for a backend. Where the instances' hosts can
 * move the state themselves, they do: vnf-map and conntrack are the VNF's
 * own state (its map, or a stack VNF's conntrack table), moved node to node
 * between peers (TransferState) and otherwise exported and imported through
 * the node API; redis goes through the nodes' common store, else through
 * the controller's own Redis manager; estate through the E-State group the
 * nodes are members of, else through E-State nodes in the controller. The
 * others are state managers that run in the controller.
 */
export function controllerStateMover(kind: StateKind, options: StateManagerOptions = {}): StateMover & { close?(): Promise<void> } {
  if (kind === 'vnf-map' || kind === 'conntrack') return new VnfMapStateMover();
  if (kind === 'redis' || kind === 'estate') return new NodeStoreStateMover({ store: kind, fallback: createStateMover(kind, options) });
  return createStateMover(kind, options);
}
