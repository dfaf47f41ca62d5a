/**
 * State manager `conntrack`: the state of a `linux` VNF instance (a NAT,
 * a stateful firewall) is its network namespace's connection tracking
 * table. A handover moves the moving flows' conntrack entries — tuples, NAT
 * mapping, TCP state, status, mark, remaining timeout — from the old
 * instance's namespace to the new one, through ctnetlink inside each
 * instance's namespace (src/state/ctnetlink.ts; no process — Debian's
 * `conntrack` tool makes look-ups and deletes as whole-table dumps):
 *
 *   leaving    exact look-ups only (`lookupsFor`): an exact rule is two hash
 *              look-ups (its flow as an entry's original or reply tuple); a
 *              wildcard one dump per direction that the kernel filters by
 *              the rule's exact fields (CTA_FILTER), all at once, no process
 *              (the tool's filtered `-L` is a whole-table dump filtered in
 *              userspace);
 *   arriving   stale copies at the new instance (an earlier visit of the
 *              flow) deleted by original tuple, then every entry created as
 *              it was, NAT mapping included (the kernel sets the binding up
 *              again, so the reply tuple is the old one); 256 requests per
 *              send;
 *   commit     the entries deleted at the old instance by original tuple
 *              (the tool's `-D`, batched or not, walks the whole hash table
 *              per entry: seconds at 1000);
 *   rollback   deletes what arriving installed at the new instance and, if
 *              the old one had already forgotten them, puts them back there.
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
import type { FlowKey, RuleMatch } from '../dataplane/types.js';
import { compileSelection } from '../dataplane/types.js';
import type { HandoverContext, StateMoveResult } from '../handover/state-mover.js';
import { flowKeyString } from './flow-key.js';
import { createEntries, deleteEntries, describeLookup, lookupEntries, nativeNetlinkTransport, type CtLookup, type NetlinkTransport } from './ctnetlink.js';
import { emptyStats, StateError, abortable, type Departure, type StateManager, type StateManagerStats } from './types.js';

export interface ConntrackStateManagerOptions {
  /** the network namespace (name under /run/netns) of an instance; undefined: this process's own */
  netnsOf?: (instance: string) => string | undefined;
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
  /** for a failed run of the tool: its arguments and stderr (empty for a ctnetlink exchange) */
  constructor(
    message: string,
    readonly args: readonly string[] = [],
    readonly stderr = '',
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

// the tool's formats, for code that runs the tool (their home: conntrack-tool.ts)
export { insertArgs, parseConntrackLine, queriesFor } from './conntrack-tool.js';

const PROTO: Readonly<Record<number, 'tcp' | 'udp'>> = { 6: 'tcp', 17: 'udp' };

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
  /** a few ctnetlink exchanges per move, no process */
  readonly expectedMs = 50;
  readonly #o: ConntrackStateManagerOptions;
  readonly #moves = new Map<number, Staged>();
  readonly #stats: StateManagerStats = emptyStats();
  /** the ctnetlink exchanges made (tests read it to check there was no full-table dump): [instance, 'ctnetlink-lookup', 'N gets', …dumps], [instance, 'ctnetlink-create' | 'ctnetlink-delete', entries] */
  readonly commands: string[][] = [];
  #netlink: Promise<NetlinkTransport> | undefined;

  constructor(o: ConntrackStateManagerOptions = {}) {
    this.#o = o;
  }

  async start(): Promise<void> {}

  /** Creates entries at an instance as they were (ctnetlink); one that exists or is refused fails the call. */
  async createAt(instance: string, entries: readonly ConntrackEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const transport = await this.#transport();
    const ns = this.#o.netnsOf?.(instance);
    const where = `${instance}${ns === undefined ? '' : ` (netns ${ns})`}`;
    this.commands.push([instance, 'ctnetlink-create', String(entries.length)]);
    let r;
    try {
      r = await createEntries(transport, ns, entries);
    } catch (x) {
      throw new ConntrackError(`ctnetlink create of ${entries.length} entries in ${where} failed: ${(x as Error).message}`, [], '', { cause: x });
    }
    const bad = [...r.existing.map((e) => `${flowKeyString(e.orig)} exists`), ...r.failed.map((f) => `${flowKeyString(f.entry.orig)} errno ${f.errno}`)];
    if (bad.length > 0) throw new ConntrackError(`ctnetlink create in ${where}: ${bad.length} of ${entries.length} entries refused, first ${bad[0]}`);
  }

  /** Deletes entries at an instance by exact original tuple (ctnetlink); absent ones are skipped. */
  async deleteAt(instance: string, entries: readonly Pick<ConntrackEntry, 'orig' | 'zone'>[]): Promise<{ deleted: number; missing: number }> {
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
      throw new ConntrackError(`ctnetlink delete in ${instance}: ${r.failed.length} of ${entries.length} entries refused, first ${flowKeyString(f.ref.orig)} (errno ${f.errno})`);
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
    const selected = compileSelection(sel);
    for (const e of results.flat()) {
      // exactly the covered flows: the kernel's filters are coarser for prefixes
      if (sel !== 'all' && !selected(e.orig) && !selected(e.reply)) continue;
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
    // counted as installed before the creates: if some are refused, a rollback deletes them all (absent ones are skipped)
    st.installed = st.entries;
    signal.throwIfAborted();
    // an entry the new instance still has (from an earlier visit of the flow) is replaced
    await this.deleteAt(ctx.to, st.entries);
    signal.throwIfAborted();
    await this.createAt(ctx.to, st.entries);
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
        .then(() => this.createAt(ctx.from, st.deleted))
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
