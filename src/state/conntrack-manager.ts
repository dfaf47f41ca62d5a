/**
 * State manager `conntrack`: the state of a `linux` VNF instance (a NAT,
 * a stateful firewall) is its network namespace's connection tracking
 * table. A handover moves the moving flows' conntrack entries — tuples, NAT
 * mapping, TCP state, status, mark, remaining timeout — from the old
 * instance's namespace to the new one, through ctnetlink (src/state/
 * ctnetlink.ts, and Debian's `conntrack` tool for inserts, run inside each
 * namespace):
 *
 *   leaving    exact look-ups only (`lookupsFor`): an exact rule is two hash
 *              look-ups (its flow as an entry's original or reply tuple); a
 *              wildcard one dump per direction that the kernel filters by
 *              the rule's exact fields (CTA_FILTER), all at once, no process
 *              (the tool's filtered `-L` is a whole-table dump filtered in
 *              userspace);
 *   arriving   one `conntrack -R -` (a batch of `-I` lines on stdin, one
 *              process for every entry), NAT mapping as --src-nat/--dst-nat
 *              ip:port (the kernel sets the binding up exactly as it was);
 *              stale copies at the new instance (an earlier visit of the
 *              flow) are deleted first;
 *   commit     the entries deleted at the old instance;
 *   rollback   deletes what arriving installed at the new instance and, if
 *              the old one had already forgotten them, puts them back there.
 *
 * Deletes go through ctnetlink directly (src/state/ctnetlink.ts: exact
 * delete by original tuple, many requests per send, the native addon's one
 * netlink primitive): the tool's `-D`, batched or not, is a dump of the
 * whole hash table per entry — at 1000 entries, seconds.
 *
 * What ctnetlink does not carry: TCP window tracking (td_end, td_maxwin,
 * window scale), helpers, labels. The NAT instances of the lab therefore run
 * nf_conntrack_tcp_be_liberal=1 in their own namespace (what conntrackd's
 * manual asks for the same reason); mid-stream pickup stays off
 * (nf_conntrack_tcp_loose=0), so a packet of a flow whose entry did not
 * move is INVALID and dropped.
 *
 * Where the instances are: `netnsOf(instance)` (the lab: its namespace; a
 * node daemon on the VNF's host: undefined = this process's namespace).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FlowKey, RuleMatch } from '../dataplane/types.js';
import { selects } from '../dataplane/types.js';
import type { HandoverContext, StateMoveResult } from '../handover/state-mover.js';
import { flowKeyString } from './flow-key.js';
import { deleteEntries, describeLookup, lookupEntries, nativeNetlinkTransport, type CtLookup, type NetlinkTransport } from './ctnetlink.js';
import { emptyStats, StateError, abortable, type Departure, type StateManager, type StateManagerStats } from './types.js';

export interface ConntrackStateManagerOptions {
  /** the network namespace (name under /run/netns) of an instance; undefined: this process's own */
  netnsOf?: (instance: string) => string | undefined;
  /** the conntrack binary (default: `conntrack` on the PATH) */
  binary?: string;
  /** per command (default 5000 ms); a batch gets 1 ms more per line */
  timeoutMs?: number;
  /** how ctnetlink requests reach an instance's namespace (default: the native addon) */
  netlink?: NetlinkTransport;
}

/** One conntrack entry, as far as a move needs it. */
export interface ConntrackEntry {
  proto: 'tcp' | 'udp';
  /** original direction (the flow as its first packet saw it) */
  orig: FlowKey;
  /** reply direction (with the NAT mapping applied) */
  reply: FlowKey;
  /** seconds left */
  timeout: number;
  /** TCP only: ESTABLISHED, FIN_WAIT, … */
  tcpState?: string;
  assured: boolean;
  /** a reply was seen (not [UNREPLIED]) */
  seenReply: boolean;
  mark: number;
  zone?: number;
}

export class ConntrackError extends StateError {
  override name = 'ConntrackError';
  constructor(
    message: string,
    readonly args: readonly string[],
    readonly stderr: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

const PROTO: Readonly<Record<number, 'tcp' | 'udp'>> = { 6: 'tcp', 17: 'udp' };
const PROTO_NUM = { tcp: 6, udp: 17 } as const;

/** Parses one line of `conntrack -L/-G -o extended` (tcp and udp; other protocols: undefined). */
export function parseConntrackLine(line: string): ConntrackEntry | undefined {
  const tok = line.trim().split(/\s+/);
  let i = 0;
  if (tok[i] === 'ipv4') i += 2;
  const proto = tok[i];
  if (proto !== 'tcp' && proto !== 'udp') return undefined;
  i += 2; // name, number
  const timeout = Number(tok[i++]);
  let tcpState: string | undefined;
  if (proto === 'tcp' && tok[i] !== undefined && !tok[i]!.includes('=')) tcpState = tok[i++];
  const tuples: Record<string, string>[] = [{}, {}];
  let dir = 0;
  let assured = false;
  let unreplied = false;
  let mark = 0;
  let zone: number | undefined;
  for (; i < tok.length; i++) {
    const t = tok[i]!;
    if (t === '[ASSURED]') assured = true;
    else if (t === '[UNREPLIED]') unreplied = true;
    else if (t.startsWith('mark=')) mark = Number(t.slice(5));
    else if (t.startsWith('zone=')) zone = Number(t.slice(5));
    else {
      const m = /^(src|dst|sport|dport)=(.+)$/.exec(t);
      if (m === null) continue;
      if (tuples[dir]![m[1]!] !== undefined) dir = 1;
      if (dir > 1) break;
      tuples[dir]![m[1]!] = m[2]!;
    }
  }
  const key = (x: Record<string, string>): FlowKey | undefined =>
    x['src'] === undefined || x['dst'] === undefined || x['sport'] === undefined || x['dport'] === undefined
      ? undefined
      : { src: x['src'], dst: x['dst'], sport: Number(x['sport']), dport: Number(x['dport']), proto: PROTO_NUM[proto] };
  const orig = key(tuples[0]!);
  const reply = key(tuples[1]!);
  if (orig === undefined || reply === undefined || !Number.isFinite(timeout)) return undefined;
  return { proto, orig, reply, timeout, ...(tcpState === undefined ? {} : { tcpState }), assured, seenReply: !unreplied, mark, ...(zone === undefined ? {} : { zone }) };
}

const origArgs = (f: FlowKey): string[] => ['-p', PROTO[f.proto] ?? String(f.proto), '-s', f.src, '-d', f.dst, '--sport', String(f.sport), '--dport', String(f.dport)];

/** `conntrack -I` arguments recreating an entry (NAT mapping from its reply tuple). */
export function insertArgs(e: ConntrackEntry): string[] {
  const a = ['-I', ...origArgs(e.orig)];
  if (e.tcpState !== undefined) a.push('--state', e.tcpState);
  a.push('-t', String(Math.max(1, e.timeout)));
  const status = [e.assured ? 'ASSURED' : undefined, e.seenReply ? 'SEEN_REPLY' : undefined].filter((x): x is string => x !== undefined);
  if (status.length > 0) a.push('-u', status.join(','));
  a.push('-m', String(e.mark));
  if (e.zone !== undefined) a.push('-w', String(e.zone));
  // source NAT: replies go to another address/port than the original source
  if (e.reply.dst !== e.orig.src || e.reply.dport !== e.orig.sport) a.push('--src-nat', `${e.reply.dst}:${e.reply.dport}`);
  // destination NAT: replies come from another address/port than the original destination
  if (e.reply.src !== e.orig.dst || e.reply.sport !== e.orig.dport) a.push('--dst-nat', `${e.reply.src}:${e.reply.sport}`);
  return a;
}

/** A /32 (or bare) address; undefined for a wider prefix, which the kernel cannot filter (the entries are filtered afterwards). */
const exactAddress = (cidr: string | undefined): string | undefined =>
  cidr === undefined || (cidr.includes('/') && !cidr.endsWith('/32')) ? undefined : cidr.split('/')[0];

/**
 * The ctnetlink look-ups that find every entry a selection covers, in
 * either direction (a rule on the egress switch sees the replies,
 * translated): an exact rule is two hash look-ups (its flow as an entry's
 * original tuple, and as its reply tuple); a wildcard two dumps the kernel
 * filters by its exact fields, one per direction. Identical look-ups run
 * once. Only a wildcard with neither a /32 address nor a protocol lists
 * every entry (the kernel has no prefix filter); entries are always checked
 * against the selection afterwards.
 */
export function lookupsFor(sel: readonly RuleMatch[]): CtLookup[] {
  const out = new Map<string, CtLookup>();
  const add = (l: CtLookup): void => void out.set(describeLookup(l), l);
  for (const m of sel) {
    if (m.kind === 'exact') {
      if (PROTO[m.flow.proto] === undefined) continue;
      add({ kind: 'get', dir: 'orig', tuple: m.flow });
      add({ kind: 'get', dir: 'reply', tuple: m.flow });
      continue;
    }
    const proto = m.proto === undefined || m.proto === 0 ? undefined : m.proto;
    if (proto !== undefined && PROTO[proto] === undefined) continue;
    const src = exactAddress(m.src);
    const dst = exactAddress(m.dst);
    const fields = {
      ...(src === undefined ? {} : { src }),
      ...(dst === undefined ? {} : { dst }),
      ...(proto === undefined ? {} : { proto, ...(m.sport === undefined ? {} : { sport: m.sport }), ...(m.dport === undefined ? {} : { dport: m.dport }) }),
    };
    add({ kind: 'dump', dir: 'orig', ...fields });
    add({ kind: 'dump', dir: 'reply', ...fields });
  }
  return [...out.values()];
}

interface Staged {
  entries: ConntrackEntry[];
  /** entries installed at ctx.to (for rollback) */
  installed: ConntrackEntry[];
  /** entries deleted at ctx.from (commit done) */
  deleted: ConntrackEntry[];
}

export class ConntrackStateManager implements StateManager<HandoverContext> {
  readonly kind = 'conntrack';
  readonly name = 'conntrack';
  /** a few processes per move (listings, one insert batch) and two ctnetlink exchanges */
  readonly expectedMs = 50;
  readonly #o: ConntrackStateManagerOptions;
  readonly #moves = new Map<number, Staged>();
  readonly #stats: StateManagerStats = emptyStats();
  /** commands run (tests read it to check there was no full-table dump); a batch is [instance, '-R', '-', lines], a ctnetlink delete [instance, 'ctnetlink-delete', entries] */
  readonly commands: string[][] = [];
  #netlink: Promise<NetlinkTransport> | undefined;

  constructor(o: ConntrackStateManagerOptions = {}) {
    this.#o = o;
  }

  async start(): Promise<void> {}

  /**
   * Runs one `conntrack -R FILE` in an instance's namespace (`-I`/`-U`
   * lines: the tool refuses -L/-G in a batch). A file, not stdin: the tool
   * opens /dev/stdin, which fails for the socket Node gives a child. The tool
   * stops at the first line the kernel refuses.
   */
  async runBatch(instance: string, lines: readonly (readonly string[])[], o: { signal?: AbortSignal } = {}): Promise<string> {
    if (lines.length === 0) return '';
    const dir = await mkdtemp(path.join(tmpdir(), 'sharp-conntrack-'));
    try {
      const file = path.join(dir, 'batch');
      await writeFile(file, lines.map((l) => l.join(' ')).join('\n') + '\n', { mode: 0o600 });
      return await this.#runFile(instance, file, lines.length, o.signal);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  #runFile(instance: string, file: string, lines: number, signal: AbortSignal | undefined): Promise<string> {
    const ns = this.#o.netnsOf?.(instance);
    const bin = this.#o.binary ?? 'conntrack';
    const args = ['-R', file];
    const [cmd, argv] = ns === undefined ? [bin, args] : ['nsenter', [`--net=/run/netns/${ns}`, bin, ...args]];
    this.commands.push([instance, '-R', '-', String(lines)]);
    const timeoutMs = (this.#o.timeoutMs ?? 5000) + lines;
    return abortable(
      new Promise<string>((resolve, reject) => {
        execFile(cmd, argv, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
          if (err === null) return resolve(stdout);
          reject(new ConntrackError(`conntrack -R (${lines} lines) in ${instance}${ns === undefined ? '' : ` (netns ${ns})`} failed: ${stderr.trim() || err.message}`, args, stderr, { cause: err }));
        });
      }),
      signal,
    );
  }

  /** Deletes entries at an instance by exact original tuple (ctnetlink); absent ones are skipped. */
  async deleteAt(instance: string, entries: readonly ConntrackEntry[]): Promise<{ deleted: number; missing: number }> {
    if (entries.length === 0) return { deleted: 0, missing: 0 };
    const transport = await this.#transport();
    const ns = this.#o.netnsOf?.(instance);
    this.commands.push([instance, 'ctnetlink-delete', String(entries.length)]);
    let r;
    try {
      r = await deleteEntries(transport, ns, entries.map((e) => ({ orig: e.orig, ...(e.zone === undefined ? {} : { zone: e.zone }) })));
    } catch (x) {
      throw new ConntrackError(`ctnetlink delete of ${entries.length} entries in ${instance}${ns === undefined ? '' : ` (netns ${ns})`} failed: ${(x as Error).message}`, [], '', { cause: x });
    }
    if (r.failed.length > 0) {
      const f = r.failed[0]!;
      throw new ConntrackError(`ctnetlink delete in ${instance}: ${r.failed.length} of ${entries.length} entries refused, first ${flowKeyString(f.ref.orig)} (errno ${f.errno})`, [], '');
    }
    return { deleted: r.deleted, missing: r.missing };
  }

  /** The entries of `instance` that the handover's selection covers (either direction), each once: ctnetlink look-ups, no process. */
  async entriesFor(instance: string, ctx: Pick<HandoverContext, 'selection'>, signal?: AbortSignal): Promise<ConntrackEntry[]> {
    const sel = ctx.selection;
    const lookups: CtLookup[] = sel === 'all' ? [{ kind: 'dump', dir: 'orig' }] : lookupsFor(sel);
    const ns = this.#o.netnsOf?.(instance);
    const gets = lookups.filter((l) => l.kind === 'get').length;
    this.commands.push([instance, 'ctnetlink-lookup', ...(gets > 0 ? [`${gets} gets`] : []), ...lookups.filter((l) => l.kind === 'dump').map(describeLookup)]);
    const transport = await this.#transport();
    let results: ConntrackEntry[][];
    try {
      results = await abortable(lookupEntries(transport, ns, lookups), signal);
    } catch (x) {
      if (signal?.aborted) throw x;
      throw new ConntrackError(`ctnetlink look-ups in ${instance}${ns === undefined ? '' : ` (netns ${ns})`} failed: ${(x as Error).message}`, [], '', { cause: x });
    }
    const found = new Map<string, ConntrackEntry>();
    for (const e of results.flat()) {
      // exactly the covered flows: the kernel's filters are coarser for prefixes
      if (sel !== 'all' && !selects(sel, e.orig) && !selects(sel, e.reply)) continue;
      found.set(flowKeyString(e.orig), e);
    }
    return [...found.values()];
  }

  #transport(): Promise<NetlinkTransport> {
    return (this.#netlink ??= this.#o.netlink === undefined ? nativeNetlinkTransport() : Promise.resolve(this.#o.netlink));
  }

  async leaving(ctx: HandoverContext, signal: AbortSignal): Promise<Departure> {
    const entries = await this.entriesFor(ctx.from, ctx, signal);
    this.#moves.set(ctx.id, { entries, installed: [], deleted: [] });
    return { handoverId: ctx.id, from: ctx.from, to: ctx.to, keys: entries.map((e) => flowKeyString(e.orig)), flows: entries.map((e) => e.orig), records: entries.length, bytes: 0 };
  }

  async arriving(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<StateMoveResult> {
    const st = this.#moves.get(departure.handoverId);
    if (st === undefined) throw new StateError(`conntrack: nothing was exported for handover ${departure.handoverId}`);
    // counted as installed before the batch runs: a batch that stops half-way leaves an unknown prefix, which a rollback deletes (absent ones are skipped)
    st.installed = st.entries;
    signal.throwIfAborted();
    // an entry the new instance still has (from an earlier visit of the flow) is replaced
    await this.deleteAt(ctx.to, st.entries);
    await this.runBatch(ctx.to, st.entries.map(insertArgs), { signal });
    return { records: st.entries.length, bytes: 0 };
  }

  async commit(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<void> {
    const st = this.#moves.get(departure.handoverId);
    if (st === undefined) return;
    signal.throwIfAborted();
    // counted before: a delete that fails half-way is undone by a rollback re-creating them all
    st.deleted = st.entries;
    await this.deleteAt(ctx.from, st.entries);
    this.#stats.moves++;
    this.#stats.records += st.entries.length;
    this.#moves.delete(departure.handoverId);
    // keep the record of a committed move for a rollback the engine may still ask for
    this.#committed.set(departure.handoverId, st);
    while (this.#committed.size > 64) this.#committed.delete(this.#committed.keys().next().value!);
  }

  readonly #committed = new Map<number, Staged>();

  async rollback(ctx: HandoverContext, departure: Departure | undefined, _committed: boolean): Promise<void> {
    this.#stats.rollbacks++;
    const id = departure?.handoverId ?? ctx.id;
    const st = this.#moves.get(id) ?? this.#committed.get(id);
    this.#moves.delete(id);
    this.#committed.delete(id);
    if (st === undefined) return;
    const errors: unknown[] = [];
    await this.deleteAt(ctx.to, st.installed).catch((x: unknown) => errors.push(x));
    if (st.deleted.length > 0) {
      // whatever part of them the old instance still has is replaced by the exported copy
      await this.deleteAt(ctx.from, st.deleted)
        .then(() => this.runBatch(ctx.from, st.deleted.map(insertArgs)))
        .catch((x: unknown) => errors.push(x));
    }
    if (errors.length > 0) throw new StateError(`conntrack: rollback of handover ${id} incomplete (${errors.length} steps failed)`, { cause: errors[0] });
  }

  stats(): StateManagerStats {
    return { ...this.#stats };
  }

  async close(): Promise<void> {
    this.#moves.clear();
    this.#committed.clear();
  }
}
