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
 * Look-ups are filtered by the kernel (see queriesFor: one get for an exact
 * rule, filtered listings for a wildcard), never a full-table dump.
 */
import { execFile } from 'node:child_process';
import { isIPv4 } from 'node:net';
import type { FlowKey, FlowSelection, FlowStateEntry } from '../dataplane/types.js';
import { selects } from '../dataplane/types.js';
import { ConntrackError, insertArgs, parseConntrackLine, queriesFor, type ConntrackEntry } from './conntrack-manager.js';
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
  /** the conntrack binary (default: `conntrack` on the PATH) */
  binary?: string;
  /** per command (default 5000 ms) */
  timeoutMs?: number;
}

/** conntrack processes run at once per table: enough to overlap their start-up, not a process per entry at once */
const PARALLEL = 8;

/** fn over xs, at most `limit` at a time */
async function eachLimited<T>(xs: readonly T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < xs.length) await fn(xs[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, xs.length) }, worker));
}

const deleteArgs = (f: FlowKey): string[] => ['-D', '-p', f.proto === 6 ? 'tcp' : 'udp', '-s', f.src, '-d', f.dst, '--sport', String(f.sport), '--dport', String(f.dport)];

export class ConntrackTable {
  readonly #o: ConntrackTableOptions;
  /** commands run (tests check there was no unfiltered dump) */
  readonly commands: string[][] = [];

  constructor(o: ConntrackTableOptions = {}) {
    this.#o = o;
  }

  get netns(): string | undefined {
    return this.#o.netns;
  }

  /** Runs conntrack in the table's namespace; resolves stdout, or rejects with ConntrackError. */
  run(args: readonly string[], o: { allowMissing?: boolean } = {}): Promise<string> {
    const ns = this.#o.netns;
    const bin = this.#o.binary ?? 'conntrack';
    const [cmd, argv] = ns === undefined ? [bin, [...args]] : ['nsenter', [`--net=/run/netns/${ns}`, bin, ...args]];
    this.commands.push([...args]);
    return new Promise<string>((resolve, reject) => {
      execFile(cmd, argv, { encoding: 'utf8', timeout: this.#o.timeoutMs ?? 5000 }, (err, stdout, stderr) => {
        if (err === null) return resolve(stdout);
        // -G/-D of an absent entry: exit 1 ("0 flow entries", "such conntrack doesn't exist")
        if (o.allowMissing === true && /0 flow entries|such conntrack doesn't exist|No such file or directory/.test(stderr)) return resolve('');
        reject(new ConntrackError(`conntrack ${args.join(' ')}${ns === undefined ? '' : ` (netns ${ns})`} failed: ${stderr.trim() || err.message}`, args, stderr, { cause: err }));
      });
    });
  }

  /** The entries the selection covers in either direction (a rule on the egress switch sees replies), each once. */
  async entries(sel: FlowSelection): Promise<ConntrackEntry[]> {
    const queries = sel === 'all' ? [['-L']] : sel.flatMap((m) => queriesFor(m));
    const outs: string[] = [];
    await eachLimited(queries, PARALLEL, async (q) => void outs.push(await this.run([...q, '-o', 'extended'], { allowMissing: true })));
    const found = new Map<string, ConntrackEntry>();
    for (const out of outs)
      for (const line of out.split('\n')) {
        const e = line.trim() === '' ? undefined : parseConntrackLine(line);
        // exactly the covered flows: the tool's filters are coarser for wildcard ports and wide reply prefixes
        if (e !== undefined && (selects(sel, e.orig) || selects(sel, e.reply))) found.set(flowKeyString(e.orig), e);
      }
    return [...found.values()];
  }

  async exportState(sel: FlowSelection): Promise<FlowStateEntry[]> {
    return (await this.entries(sel)).map((e) => ({ flow: e.orig, value: encodeConntrackEntry(e) }));
  }

  /** Installs every entry (replacing one the table still has for the flow); all are checked before any is installed. */
  async importState(entries: readonly FlowStateEntry[]): Promise<void> {
    const decoded = entries.map((x, i) => {
      try {
        return decodeConntrackEntry(x.value, x.flow);
      } catch (e) {
        if (e instanceof ConntrackValueError) throw new ConntrackValueError(`entries[${i}].${e.field}`, e.message.replace(/^conntrack entry: [^:]+: /, ''));
        throw e;
      }
    });
    await eachLimited(decoded, PARALLEL, async (e) => {
      try {
        await this.run(insertArgs(e));
      } catch (x) {
        if (!(x instanceof ConntrackError) || !/exists/i.test(x.stderr)) throw x;
        await this.run(deleteArgs(e.orig), { allowMissing: true });
        await this.run(insertArgs(e));
      }
    });
  }

  async deleteState(flows: readonly FlowKey[]): Promise<void> {
    await eachLimited(
      flows.filter((f) => f.proto === 6 || f.proto === 17),
      PARALLEL,
      async (f) => void (await this.run(deleteArgs(f), { allowMissing: true })),
    );
  }
}
