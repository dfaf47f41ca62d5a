/**
 * The connection tracking table of one network namespace as a VNF state
 * store: what a stack VNF (kind `linux`: a NAT, a stateful firewall) keeps
 * per flow. The host that runs the instance — its node — exports the
 * entries a handover's rules cover, imports them at the new instance and
 * deletes them at the old one, so conntrack state moves node to node
 * (TransferState) like the XDP VNF's map, never through a controller that
 * cannot reach another host's kernel.
 *
 * Each entry crosses the wire as a FlowStateEntry: the flow is its original
 * tuple, the value its JSON (tuples, NAT mapping by the reply tuple, TCP
 * state, status, mark, zone, remaining timeout). Values arriving from the
 * network are validated field by field before anything is installed.
 *
 * Look-ups, creates and deletes are ctnetlink messages (the conntrack
 * manager's: two hash look-ups for an exact rule, dumps the kernel filters
 * for a wildcard, creates and deletes by exact tuple, many per send).
 */
import { isIPv4 } from 'node:net';
import type { FlowKey, FlowSelection, FlowStateEntry } from '../dataplane/types.js';
import { ConntrackStateManager, type ConntrackEntry } from './conntrack-manager.js';
import { flowKeyString } from './flow-key.js';
import { StateError } from './types.js';

/** A conntrack entry value that cannot be installed, naming the field and why. */
export class ConntrackValueError extends StateError {
  override name = 'ConntrackValueError';
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`conntrack entry: ${field}: ${message}`);
  }
}

const TCP_STATES = new Set(['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2']);
const PROTO_NUM = { tcp: 6, udp: 17 } as const;
/** the largest timeout conntrack accepts (seconds, u32) */
const MAX_TIMEOUT_S = 0xffffffff;
/** the largest value one entry's JSON may have */
const MAX_VALUE_BYTES = 1024;

export function encodeConntrackEntry(e: ConntrackEntry): Buffer {
  return Buffer.from(JSON.stringify(e));
}

function flowField(v: unknown, field: string, proto: 6 | 17): FlowKey {
  if (typeof v !== 'object' || v === null) throw new ConntrackValueError(field, 'not an object');
  const o = v as Record<string, unknown>;
  for (const a of ['src', 'dst'] as const) if (typeof o[a] !== 'string' || !isIPv4(o[a])) throw new ConntrackValueError(`${field}.${a}`, `${JSON.stringify(o[a])} is not an IPv4 address`);
  for (const p of ['sport', 'dport'] as const) if (!Number.isInteger(o[p]) || (o[p] as number) < 1 || (o[p] as number) > 65535) throw new ConntrackValueError(`${field}.${p}`, `${JSON.stringify(o[p])} is not a port 1..65535`);
  if (o['proto'] !== proto) throw new ConntrackValueError(`${field}.proto`, `${JSON.stringify(o['proto'])}: must be ${proto}, the entry's protocol`);
  return { src: o['src'] as string, dst: o['dst'] as string, sport: o['sport'] as number, dport: o['dport'] as number, proto };
}

function uint(v: unknown, field: string, max: number): number {
  if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > max) throw new ConntrackValueError(field, `${JSON.stringify(v)} is not an integer 0..${max}`);
  return v as number;
}

/** The entry a value carries, checked field by field; `flow` is the FlowStateEntry's key, which must be the entry's original tuple. */
export function decodeConntrackEntry(value: Buffer, flow?: FlowKey): ConntrackEntry {
  if (value.length > MAX_VALUE_BYTES) throw new ConntrackValueError('value', `${value.length} bytes, at most ${MAX_VALUE_BYTES}`);
  let v: unknown;
  try {
    v = JSON.parse(value.toString('utf8'));
  } catch {
    throw new ConntrackValueError('value', 'not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConntrackValueError('value', 'not an object');
  const o = v as Record<string, unknown>;
  if (o['proto'] !== 'tcp' && o['proto'] !== 'udp') throw new ConntrackValueError('proto', `${JSON.stringify(o['proto'])}: only tcp and udp entries move`);
  const proto = o['proto'];
  const num = PROTO_NUM[proto];
  const orig = flowField(o['orig'], 'orig', num);
  const reply = flowField(o['reply'], 'reply', num);
  if (flow !== undefined && flowKeyString(flow) !== flowKeyString(orig)) throw new ConntrackValueError('orig', `${flowKeyString(orig)} is not the entry's flow ${flowKeyString(flow)}`);
  const timeout = uint(o['timeout'], 'timeout', MAX_TIMEOUT_S);
  if (typeof o['assured'] !== 'boolean') throw new ConntrackValueError('assured', 'not a boolean');
  if (typeof o['seenReply'] !== 'boolean') throw new ConntrackValueError('seenReply', 'not a boolean');
  const mark = uint(o['mark'], 'mark', 0xffffffff);
  const e: ConntrackEntry = { proto, orig, reply, timeout, assured: o['assured'], seenReply: o['seenReply'], mark };
  if (o['tcpState'] !== undefined) {
    if (proto !== 'tcp' || typeof o['tcpState'] !== 'string' || !TCP_STATES.has(o['tcpState'])) throw new ConntrackValueError('tcpState', `${JSON.stringify(o['tcpState'])}: one of ${[...TCP_STATES].join(', ')}, tcp entries only`);
    e.tcpState = o['tcpState'];
  }
  if (o['zone'] !== undefined) e.zone = uint(o['zone'], 'zone', 0xffff);
  return e;
}

export interface ConntrackTableOptions {
  /** the namespace (under /run/netns); undefined: this process's own (a node on the VNF's host) */
  netns?: string;
}

/** One namespace's table through ctnetlink (the conntrack manager's look-ups, creates and deletes: no process, no unfiltered dump where the kernel can filter). */
export class ConntrackTable {
  readonly #netns: string | undefined;
  readonly #m: ConntrackStateManager;
  /** how the table is named in errors and in `commands` */
  readonly #label: string;

  constructor(o: ConntrackTableOptions = {}) {
    this.#netns = o.netns;
    this.#label = o.netns ?? 'this namespace';
    this.#m = new ConntrackStateManager({ netnsOf: () => o.netns });
  }

  get netns(): string | undefined {
    return this.#netns;
  }

  /** the ctnetlink exchanges made: [table, 'ctnetlink-lookup' | 'ctnetlink-create' | 'ctnetlink-delete', …] */
  get commands(): readonly (readonly string[])[] {
    return this.#m.commands;
  }

  /** The entries the selection covers in either direction (a rule on the egress switch sees replies), each once. */
  entries(sel: FlowSelection): Promise<ConntrackEntry[]> {
    return this.#m.entriesFor(this.#label, { selection: sel });
  }

  async exportState(sel: FlowSelection): Promise<FlowStateEntry[]> {
    return (await this.entries(sel)).map((e) => ({ flow: e.orig, value: encodeConntrackEntry(e) }));
  }

  /** Installs every entry, replacing one the table still has for the flow; all are checked before any is installed. */
  async importState(entries: readonly FlowStateEntry[]): Promise<void> {
    const decoded = entries.map((x, i) => {
      try {
        return decodeConntrackEntry(x.value, x.flow);
      } catch (e) {
        if (e instanceof ConntrackValueError) throw new ConntrackValueError(`entries[${i}].${e.field}`, e.message.replace(/^conntrack entry: [^:]+: /, ''));
        throw e;
      }
    });
    await this.#m.deleteAt(this.#label, decoded);
    await this.#m.createAt(this.#label, decoded);
  }

  async deleteState(flows: readonly FlowKey[]): Promise<void> {
    await this.#m.deleteAt(
      this.#label,
      flows.filter((f) => f.proto === 6 || f.proto === 17).map((orig) => ({ orig })),
    );
  }
}
