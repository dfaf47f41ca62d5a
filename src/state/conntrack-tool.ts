/**
 * The `conntrack` tool's formats (conntrack-tools 1.4.7): its `-o extended`
 * listing lines, the `-I` arguments that recreate an entry, and the `-L`/`-G`
 * look-ups that find the entries a rule match covers. The state manager
 * talks ctnetlink itself (src/state/ctnetlink.ts); these serve code that runs
 * the tool (and the tests, which compare with the tool's own view). Note that
 * the tool's filtered `-L` sends an unfiltered dump request and filters in
 * userspace, and its `-D` walks the whole table per entry.
 */
import type { FlowKey, RuleMatch } from '../dataplane/types.js';
import type { ConntrackEntry } from './conntrack-manager.js';

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
