/**
 * State manager `conntrack`: the state of a `linux` VNF instance (a NAT,
 * a stateful firewall) is its network namespace's connection tracking
 * table. A handover moves the moving flows' conntrack entries — tuples, NAT
 * mapping, TCP state, status, mark, remaining timeout — from the old
 * instance's namespace to the new one, through ctnetlink (Debian's
 * `conntrack` tool, run inside each namespace):
 *
 *   leaving    exact look-ups only: per moving rule, one filtered listing of
 *              the entries whose original tuple matches it and one of those
 *              whose reply tuple matches it (`conntrack -L` with
 *              --orig-src/--mask-src/… or --reply-src/…: the kernel filters,
 *              no table dump); for an exact rule `conntrack -G` (one get);
 *   arriving   `conntrack -I` per entry, NAT mapping as --src-nat/--dst-nat
 *              ip:port (the kernel sets the binding up exactly as it was);
 *   commit     `conntrack -D` of those entries at the old instance;
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
import { execFile } from 'node:child_process';
import type { FlowKey, RuleMatch } from '../dataplane/types.js';
import { compileSelection } from '../dataplane/types.js';
import type { HandoverContext, StateMoveResult } from '../handover/state-mover.js';
import { flowKeyString } from './flow-key.js';
import { emptyStats, StateError, abortable, type Departure, type StateManager, type StateManagerStats } from './types.js';

export interface ConntrackStateManagerOptions {
  /** the network namespace (name under /run/netns) of an instance; undefined: this process's own */
  netnsOf?: (instance: string) => string | undefined;
  /** the conntrack binary (default: `conntrack` on the PATH) */
  binary?: string;
  /** per command (default 5000 ms) */
  timeoutMs?: number;
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

function cidrArgs(cidr: string, addrFlag: string, maskFlag: string): string[] {
  const [addr, len] = cidr.split('/') as [string, string | undefined];
  const bits = len === undefined ? 32 : Number(len);
  if (bits === 0) return [];
  const mask = bits === 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
  const dotted = [24, 16, 8, 0].map((s) => (mask >>> s) & 0xff).join('.');
  return bits === 32 ? [addrFlag, addr] : [addrFlag, addr, maskFlag, dotted];
}

/**
 * The filtered listings that find every entry a rule match covers: one for
 * entries whose original tuple it matches, one for those whose reply tuple
 * it matches (a rule on the egress switch sees the replies, translated).
 * An exact match in the original direction is one `-G`. Ports of a wildcard
 * are filtered here afterwards (the tool filters ports only with a full tuple).
 */
export function queriesFor(m: RuleMatch): string[][] {
  if (m.kind === 'exact') {
    const f = m.flow;
    const proto = PROTO[f.proto];
    if (proto === undefined) return [];
    return [
      ['-G', ...origArgs(f)],
      ['-L', '-p', proto, '--reply-src', f.src, '--reply-dst', f.dst, '--reply-port-src', String(f.sport), '--reply-port-dst', String(f.dport)],
    ];
  }
  // any protocol: no -p (the listing is still filtered by address; tcp/udp are kept afterwards)
  const protos = m.proto === undefined || m.proto === 0 ? [undefined] : PROTO[m.proto] === undefined ? [] : [PROTO[m.proto]!];
  const out: string[][] = [];
  for (const p of protos) {
    const pa = p === undefined ? [] : ['-p', p];
    const orig = ['-L', ...pa, ...(m.src ? cidrArgs(m.src, '--orig-src', '--mask-src') : []), ...(m.dst ? cidrArgs(m.dst, '--orig-dst', '--mask-dst') : [])];
    // the tool has no masks for reply addresses: a /32 is filtered by the kernel, wider prefixes afterwards
    const exactOnly = (c: string | undefined): boolean => c === undefined || !c.includes('/') || c.endsWith('/32');
    const reply = ['-L', ...pa];
    if (m.src && exactOnly(m.src)) reply.push('--reply-src', m.src.split('/')[0]!);
    if (m.dst && exactOnly(m.dst)) reply.push('--reply-dst', m.dst.split('/')[0]!);
    out.push(orig, reply);
  }
  return out;
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
  /** a few ctnetlink round trips per entry, one process each */
  readonly expectedMs = 50;
  readonly #o: ConntrackStateManagerOptions;
  readonly #moves = new Map<number, Staged>();
  readonly #stats: StateManagerStats = emptyStats();
  /** commands run (tests read it to check there was no full-table dump) */
  readonly commands: string[][] = [];

  constructor(o: ConntrackStateManagerOptions = {}) {
    this.#o = o;
  }

  async start(): Promise<void> {}

  /** Runs conntrack in an instance's namespace; resolves stdout (exit 0) or rejects with ConntrackError. */
  run(instance: string, args: readonly string[], o: { allowMissing?: boolean; signal?: AbortSignal } = {}): Promise<string> {
    const ns = this.#o.netnsOf?.(instance);
    const bin = this.#o.binary ?? 'conntrack';
    const [cmd, argv] = ns === undefined ? [bin, [...args]] : ['nsenter', [`--net=/run/netns/${ns}`, bin, ...args]];
    this.commands.push([instance, ...args]);
    return abortable(
      new Promise<string>((resolve, reject) => {
        execFile(cmd, argv, { encoding: 'utf8', timeout: this.#o.timeoutMs ?? 5000 }, (err, stdout, stderr) => {
          if (err === null) return resolve(stdout);
          // -G/-D of an absent entry: exit 1, "0 flow entries"
          if (o.allowMissing && /0 flow entries|No such file or directory/.test(stderr)) return resolve('');
          reject(new ConntrackError(`conntrack ${args.join(' ')} in ${instance}${ns === undefined ? '' : ` (netns ${ns})`} failed: ${stderr.trim() || err.message}`, args, stderr, { cause: err }));
        });
      }),
      o.signal,
    );
  }

  /** The entries of `instance` that the handover's selection covers (either direction), each once. */
  async entriesFor(instance: string, ctx: Pick<HandoverContext, 'selection'>, signal?: AbortSignal): Promise<ConntrackEntry[]> {
    const sel = ctx.selection;
    const queries = sel === 'all' ? [['-L']] : sel.flatMap((m) => queriesFor(m));
    const found = new Map<string, ConntrackEntry>();
    const selected = compileSelection(sel);
    // the look-ups are independent: all at once
    const outs = await Promise.all(queries.map((q) => this.run(instance, [...q, '-o', 'extended'], { allowMissing: true, ...(signal === undefined ? {} : { signal }) })));
    for (const out of outs) {
      for (const line of out.split('\n')) {
        const e = line.trim() === '' ? undefined : parseConntrackLine(line);
        if (e === undefined) continue;
        // exactly the covered flows: the tool's filters are coarser for wildcard ports and wide reply prefixes
        if (!selected(e.orig) && !selected(e.reply)) continue;
        found.set(flowKeyString(e.orig), e);
      }
    }
    return [...found.values()];
  }

  async leaving(ctx: HandoverContext, signal: AbortSignal): Promise<Departure> {
    const entries = await this.entriesFor(ctx.from, ctx, signal);
    this.#moves.set(ctx.id, { entries, installed: [], deleted: [] });
    return { handoverId: ctx.id, from: ctx.from, to: ctx.to, keys: entries.map((e) => flowKeyString(e.orig)), flows: entries.map((e) => e.orig), records: entries.length, bytes: 0 };
  }

  async arriving(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<StateMoveResult> {
    const st = this.#moves.get(departure.handoverId);
    if (st === undefined) throw new StateError(`conntrack: nothing was exported for handover ${departure.handoverId}`);
    await Promise.all(
      st.entries.map(async (e) => {
        signal.throwIfAborted();
        try {
          await this.run(ctx.to, insertArgs(e), { signal });
        } catch (x) {
          if (!(x instanceof ConntrackError) || !/exists/i.test(x.stderr)) throw x;
          // an entry the new instance still has (from an earlier visit of the flow) is replaced
          await this.run(ctx.to, ['-D', ...origArgs(e.orig)], { allowMissing: true, signal });
          await this.run(ctx.to, insertArgs(e), { signal });
        }
        st.installed.push(e);
      }),
    );
    return { records: st.entries.length, bytes: 0 };
  }

  async commit(ctx: HandoverContext, departure: Departure, signal: AbortSignal): Promise<void> {
    const st = this.#moves.get(departure.handoverId);
    if (st === undefined) return;
    await Promise.all(
      st.entries.map(async (e) => {
        await this.run(ctx.from, ['-D', ...origArgs(e.orig)], { allowMissing: true, signal });
        st.deleted.push(e);
      }),
    );
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
    for (const e of st.installed) await this.run(ctx.to, ['-D', ...origArgs(e.orig)], { allowMissing: true }).catch((x: unknown) => errors.push(x));
    for (const e of st.deleted) await this.run(ctx.from, insertArgs(e)).catch((x: unknown) => errors.push(x));
    if (errors.length > 0) throw new StateError(`conntrack: rollback of handover ${id} incomplete (${errors.length} commands failed)`, { cause: errors[0] });
  }

  stats(): StateManagerStats {
    return { ...this.#stats };
  }

  async close(): Promise<void> {
    this.#moves.clear();
    this.#committed.clear();
  }
}
