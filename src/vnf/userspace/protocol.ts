/**
 * What the controller side (fleet.ts) and a userspace VNF process
 * (vnf-process.ts) say to each other: the process's start-up spec (its one
 * argument, JSON), its ready line, and one JSON command per line on its
 * standard input, each answered by one line (same n) on its standard
 * output. Small on purpose: the packets never cross it, and E-State items
 * move between the processes' nodes directly (the controller names keys
 * and peers only).
 */
import type { JsonItem, JsonValue } from '../../state/estate/peer-process.js';

export interface VnfProcessSpec {
  /** instance name: the id of its E-State node */
  name: string;
  /** the TUN interface to create in the process's namespace */
  tun: string;
  /** the address the barrier datagram is sent to (routed into the TUN; never written back) */
  barrierAddress: string;
  /** join the E-State group of this member's address (the instances' nodes peer with each other) */
  seed?: string;
  /** E-State request deadline (ms) */
  timeoutMs?: number;
}

export interface VnfProcessReady {
  ready: true;
  name: string;
  /** its E-State node's address */
  address: string;
  /** the TUN interface as the kernel named it */
  tun: string;
  pid: number;
}

export interface VnfProcessStats {
  /** packets read from the TUN */
  read: number;
  /** packets written back to the TUN */
  written: number;
  /** packets UserspaceVnf counted (IPv4) */
  processed: number;
  /** probes stamped */
  stamped: number;
  /** packets passed on unchanged (not IPv4, or headers it cannot read) */
  passedUnparsed: number;
  /** barrier datagrams seen coming back through the TUN */
  barriers: number;
  /** failed TUN writes (each one a lost packet) */
  writeErrors: number;
  /** packets the kernel dropped in front of the TUN (its ring full: the process fell behind), from the TUN's tx_dropped; -1 if unreadable */
  tunDropped: number;
  /** E-State items in the local view */
  items: number;
}

export type VnfCommand =
  /** resolves once every packet the TUN had queued when it was called has been processed (a datagram sent through the TUN behind them came back) */
  | { op: 'barrier' }
  /** the local view's items under a prefix (key, value, the value's size) */
  | { op: 'items'; prefix: string }
  /** fetch the keys from peer `from` and adopt them (all-or-nothing); `missingOnly`: only those not held here */
  | { op: 'obtain'; from: string; keys: string[]; missingOnly?: boolean; timeoutMs?: number }
  /** ask peer `from` to drop the keys */
  | { op: 'drop'; from: string; keys: string[]; timeoutMs?: number }
  /** delete local items */
  | { op: 'del'; keys: string[] }
  /** delete every local item under a prefix (a traffic run starts its counters over) */
  | { op: 'clear'; prefix: string }
  /** the E-State peer group as this node knows it */
  | { op: 'members' }
  /** fault injection for tests: stop reading the TUN for `ms` (packets queue in front of it meanwhile) */
  | { op: 'pause'; ms: number }
  | { op: 'stats' };

export interface VnfAnswer {
  n: number;
  error?: string;
  items?: { key: string; value: JsonValue; bytes: number }[];
  adopted?: JsonItem[];
  count?: number;
  members?: { id: string; address: string }[];
  stats?: VnfProcessStats;
}
