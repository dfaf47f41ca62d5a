/**
 * The `conntrack` tool's view of a namespace's table, for tests: an oracle
 * independent of the state manager's ctnetlink code. Parses `conntrack -L
 * -o extended` lines, turns an entry into the `conntrack -I` arguments that
 * recreate it, inserts entries with one `conntrack -R FILE` batch and lists
 * a namespace's table.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FlowKey } from '../../src/dataplane/types.js';
import type { ConntrackEntry } from '../../src/state/conntrack-manager.js';

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


/** Inserts entries into a namespace with one `conntrack -R FILE` (a file: the tool opens /dev/stdin, which fails for a socket). */
export function toolInsert(netns: string, entries: readonly ConntrackEntry[]): void {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-conntrack-'));
  try {
    const file = path.join(dir, 'batch');
    writeFileSync(file, entries.map((e) => insertArgs(e).join(' ')).join('\n') + '\n');
    execFileSync('ip', ['netns', 'exec', netns, 'conntrack', '-R', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A namespace's TCP and UDP entries as the tool lists them. */
export function toolList(netns: string): ConntrackEntry[] {
  return execFileSync('ip', ['netns', 'exec', netns, 'conntrack', '-L', '-o', 'extended'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 })
    .split('\n')
    .flatMap((l) => parseConntrackLine(l) ?? []);
}
