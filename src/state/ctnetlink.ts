/**
 * ctnetlink requests the `conntrack` tool cannot make cheaply, encoded here
 * and sent, many per sendto, by the native addon's one netlink primitive
 * (`netlinkTransact`) inside the instance's namespace:
 *
 *   delete  by original tuple (IPCTNL_MSG_CT_DELETE, one hash look-up).
 *           conntrack-tools 1.4.7 implements `-D` — also inside a `-R`
 *           batch — as a dump of the whole table and a delete of what
 *           matched: a walk of every hash bucket (262 144 by default) per
 *           entry, seconds for 1000;
 *   create  an entry as it was (IPCTNL_MSG_CT_NEW): original tuple, NAT
 *           mapping (the kernel sets the binding up again, so the reply
 *           tuple is the old one), status, timeout, mark, zone, TCP state —
 *           what `conntrack -I` sends, without a process;
 *   get     by original or by reply tuple (IPCTNL_MSG_CT_GET, one hash
 *           look-up: the table hashes both directions);
 *   dump    filtered by the kernel (CTA_FILTER, Linux ≥ 5.8): exact
 *           addresses, protocol and ports of one direction; only the
 *           matching entries cross to userspace. The tool's filtered `-L`
 *           sends an unfiltered dump request and filters what it receives.
 */
import { endianness } from 'node:os';
import type { FlowKey } from '../dataplane/types.js';
import type { ConntrackEntry } from './conntrack-manager.js';
import { StateError } from './types.js';

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_NEW = 0;
const IPCTNL_MSG_CT_GET = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP = 0x300;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;
const CTA_NAT_SRC = 6;
const CTA_NAT_DST = 13;
const CTA_NAT_V4_MINIP = 1;
const CTA_NAT_PROTO = 3;
const CTA_PROTONAT_PORT_MIN = 1;
const CTA_PROTONAT_PORT_MAX = 2;
const EEXIST = 17;
const CTA_TUPLE_REPLY = 2;
const CTA_STATUS = 3;
const CTA_PROTOINFO = 4;
const CTA_TIMEOUT = 7;
const CTA_MARK = 8;
const CTA_FILTER = 25;
const CTA_FILTER_ORIG_FLAGS = 1;
const CTA_FILTER_REPLY_FLAGS = 2;
const CTA_PROTOINFO_TCP = 1;
const CTA_PROTOINFO_TCP_STATE = 1;
const IPS_SEEN_REPLY = 1 << 1;
const IPS_ASSURED = 1 << 2;
const IPS_CONFIRMED = 1 << 3;
const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 4;
const CTA_PROTOINFO_TCP_FLAGS_REPLY = 5;
/** nf_ct_tcp_flags: SACK_PERM | BE_LIBERAL, as `conntrack -I` sets them — window tracking data does not move, so the entry must not check windows */
const TCP_FLAGS_SACK_PERM_BE_LIBERAL = 0x02 | 0x08;
/** the kernel's CTA_FILTER flag bits (nf_conntrack_netlink.c) */
const FILTER_IP_SRC = 1 << 0;
const FILTER_IP_DST = 1 << 1;
const FILTER_PROTO_NUM = 1 << 3;
const FILTER_PROTO_SRC_PORT = 1 << 4;
const FILTER_PROTO_DST_PORT = 1 << 5;
/** TCP_CONNTRACK_* in order, named as the conntrack tool prints (and -I --state takes) them */
const TCP_STATES = ['NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2'] as const;
const AF_INET = 2;
const NLA_F_NESTED = 0x8000;
const CTA_TUPLE_ORIG = 1;
const CTA_ZONE = 18;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;
/** requests per sendto (their acknowledgements are read before the next) */
const WINDOW = 256;
const ENOENT = 2;

/** An entry to delete: its original tuple, and its zone when not the default. */
export interface CtTupleRef {
  orig: FlowKey;
  zone?: number;
}

export class CtNetlinkError extends StateError {
  override name = 'CtNetlinkError';
}

const LE = endianness() === 'LE';

/** netlink headers are in host byte order, addresses and ports in network order */
function u16h(b: Buffer, v: number, at: number): void {
  if (LE) b.writeUInt16LE(v, at);
  else b.writeUInt16BE(v, at);
}
function u32h(b: Buffer, v: number, at: number): void {
  if (LE) b.writeUInt32LE(v, at);
  else b.writeUInt32BE(v, at);
}

function ipv4(addr: string, field: string): Buffer {
  const parts = addr.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new CtNetlinkError(`${field}: '${addr}' is not an IPv4 address (ctnetlink deletes handle IPv4 only)`);
  }
  return Buffer.from(parts);
}

function attr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const b = Buffer.alloc((len + 3) & ~3);
  u16h(b, len, 0);
  u16h(b, type, 2);
  payload.copy(b, 4);
  return b;
}

const nested = (type: number, ...children: Buffer[]): Buffer => attr(type | NLA_F_NESTED, Buffer.concat(children));
const be16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};

function port(v: number, name: string): Buffer {
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw new CtNetlinkError(`${name}: ${v} is not a port (0–65535)`);
  return be16(v);
}

function protoNum(v: number): Buffer {
  if (!Number.isInteger(v) || v < 0 || v > 255) throw new CtNetlinkError(`proto: ${v} is not an IP protocol number (0–255)`);
  return Buffer.from([v]);
}

/** A whole tuple (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY). */
function tupleAttr(type: number, f: FlowKey): Buffer {
  return nested(
    type,
    nested(CTA_TUPLE_IP, attr(CTA_IP_V4_SRC, ipv4(f.src, 'src')), attr(CTA_IP_V4_DST, ipv4(f.dst, 'dst'))),
    nested(CTA_TUPLE_PROTO, attr(CTA_PROTO_NUM, protoNum(f.proto)), attr(CTA_PROTO_SRC_PORT, port(f.sport, 'sport')), attr(CTA_PROTO_DST_PORT, port(f.dport, 'dport'))),
  );
}

/** nlmsghdr + nfgenmsg (AF_INET, version 0, res_id 0) + attributes */
function message(msgType: number, flags: number, seq: number, attrs: readonly Buffer[]): Buffer {
  const body = Buffer.concat(attrs);
  const head = Buffer.alloc(16 + 4);
  u32h(head, head.length + body.length, 0);
  u16h(head, (NFNL_SUBSYS_CTNETLINK << 8) | msgType, 4);
  u16h(head, flags, 6);
  u32h(head, seq, 8);
  u32h(head, 0, 12); // to the kernel
  head.writeUInt8(AF_INET, 16);
  return Buffer.concat([head, body]);
}

const zoneAttrs = (zone: number | undefined): Buffer[] => (zone === undefined ? [] : [attr(CTA_ZONE, port(zone, 'zone'))]);

/** One IPCTNL_MSG_CT_DELETE request for `ref`'s original tuple, sequence number `seq`. */
export function deleteRequest(ref: CtTupleRef, seq: number): Buffer {
  return message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, [tupleAttr(CTA_TUPLE_ORIG, ref.orig), ...zoneAttrs(ref.zone)]);
}

const be32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};

function natAttr(type: number, addr: string, port_: number): Buffer {
  const ip = ipv4(addr, 'NAT address');
  return nested(type, attr(CTA_NAT_V4_MINIP, ip), nested(CTA_NAT_PROTO, attr(CTA_PROTONAT_PORT_MIN, port(port_, 'NAT port')), attr(CTA_PROTONAT_PORT_MAX, port(port_, 'NAT port'))));
}

/** One IPCTNL_MSG_CT_NEW request (create, fail if it exists) recreating `e`. */
export function createRequest(e: ConntrackEntry, seq: number): Buffer {
  const o = e.orig;
  // the reply tuple before NAT: the original inverted; the NAT attributes make the kernel translate it
  const inverted: FlowKey = { src: o.dst, dst: o.src, sport: o.dport, dport: o.sport, proto: o.proto };
  const a: Buffer[] = [tupleAttr(CTA_TUPLE_ORIG, o), tupleAttr(CTA_TUPLE_REPLY, inverted)];
  // source NAT: replies go to another address/port than the original source
  if (e.reply.dst !== o.src || e.reply.dport !== o.sport) a.push(natAttr(CTA_NAT_SRC, e.reply.dst, e.reply.dport));
  // destination NAT: replies come from another address/port than the original destination
  if (e.reply.src !== o.dst || e.reply.sport !== o.dport) a.push(natAttr(CTA_NAT_DST, e.reply.src, e.reply.sport));
  // CONFIRMED as the kernel will have it: a status that differs from the new entry's in it is refused (EBUSY)
  a.push(attr(CTA_STATUS, be32(IPS_CONFIRMED | (e.assured ? IPS_ASSURED : 0) | (e.seenReply ? IPS_SEEN_REPLY : 0))));
  if (!Number.isInteger(e.timeout) || e.timeout < 0) throw new CtNetlinkError(`timeout: ${e.timeout} is not a whole number of seconds ≥ 0`);
  a.push(attr(CTA_TIMEOUT, be32(Math.max(1, e.timeout))));
  if (!Number.isInteger(e.mark) || e.mark < 0 || e.mark > 0xffffffff) throw new CtNetlinkError(`mark: ${e.mark} is not a 32-bit mark`);
  a.push(attr(CTA_MARK, be32(e.mark)));
  a.push(...zoneAttrs(e.zone));
  if (e.proto === 'tcp' && e.tcpState !== undefined) {
    const st = (TCP_STATES as readonly string[]).indexOf(e.tcpState);
    if (st < 0) throw new CtNetlinkError(`tcpState: '${e.tcpState}' is not one of ${TCP_STATES.join(', ')}`);
    const flags = Buffer.from([TCP_FLAGS_SACK_PERM_BE_LIBERAL, TCP_FLAGS_SACK_PERM_BE_LIBERAL]); // flags, mask
    a.push(nested(CTA_PROTOINFO, nested(CTA_PROTOINFO_TCP, attr(CTA_PROTOINFO_TCP_STATE, Buffer.from([st])), attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, flags), attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, flags))));
  }
  return message(IPCTNL_MSG_CT_NEW, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, a);
}

export interface CtCreateResult {
  created: number;
  /** already in the table (EEXIST): not replaced */
  existing: ConntrackEntry[];
  failed: { entry: ConntrackEntry; errno: number }[];
}

/** Creates the entries, 256 requests per send; one that exists is reported, not replaced. */
export async function createEntries(transport: NetlinkTransport, netns: string | undefined, entries: readonly ConntrackEntry[]): Promise<CtCreateResult> {
  const out: CtCreateResult = { created: 0, existing: [], failed: [] };
  if (entries.length === 0) return out;
  const messages = Buffer.concat(entries.map((e, i) => createRequest(e, i + 1)));
  const { errnos } = await transport(netns, NETLINK_NETFILTER, messages, entries.length, WINDOW);
  entries.forEach((entry, i) => {
    const e = errnos[i]!;
    if (e === 0) out.created++;
    else if (e === EEXIST) out.existing.push(entry);
    else out.failed.push({ entry, errno: e });
  });
  return out;
}

/**
 * A look-up: `get` one entry by a whole tuple of either direction, or
 * `dump` the entries whose tuple of one direction has the given exact
 * fields (the kernel filters; none given: every IPv4 entry).
 */
export type CtLookup =
  | { kind: 'get'; dir: 'orig' | 'reply'; tuple: FlowKey }
  | { kind: 'dump'; dir: 'orig' | 'reply'; src?: string; dst?: string; proto?: number; sport?: number; dport?: number };

export function lookupRequest(l: CtLookup, seq: number): Buffer {
  const type = l.dir === 'orig' ? CTA_TUPLE_ORIG : CTA_TUPLE_REPLY;
  if (l.kind === 'get') return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_ACK, seq, [tupleAttr(type, l.tuple)]);
  let flags = 0;
  const ip: Buffer[] = [];
  const proto: Buffer[] = [];
  if (l.src !== undefined) (flags |= FILTER_IP_SRC), ip.push(attr(CTA_IP_V4_SRC, ipv4(l.src, 'src')));
  if (l.dst !== undefined) (flags |= FILTER_IP_DST), ip.push(attr(CTA_IP_V4_DST, ipv4(l.dst, 'dst')));
  if (l.proto !== undefined) (flags |= FILTER_PROTO_NUM), proto.push(attr(CTA_PROTO_NUM, protoNum(l.proto)));
  if ((l.sport !== undefined || l.dport !== undefined) && l.proto === undefined) throw new CtNetlinkError('proto: a port filter needs the protocol');
  if (l.sport !== undefined) (flags |= FILTER_PROTO_SRC_PORT), proto.push(attr(CTA_PROTO_SRC_PORT, port(l.sport, 'sport')));
  if (l.dport !== undefined) (flags |= FILTER_PROTO_DST_PORT), proto.push(attr(CTA_PROTO_DST_PORT, port(l.dport, 'dport')));
  if (flags === 0) return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, []);
  const tuple = nested(type, ...(ip.length > 0 ? [nested(CTA_TUPLE_IP, ...ip)] : []), ...(proto.length > 0 ? [nested(CTA_TUPLE_PROTO, ...proto)] : []));
  const flagsAttr = Buffer.alloc(4);
  u32h(flagsAttr, flags, 0);
  const filter = nested(CTA_FILTER, attr(l.dir === 'orig' ? CTA_FILTER_ORIG_FLAGS : CTA_FILTER_REPLY_FLAGS, flagsAttr));
  return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, [tuple, filter]);
}

/** attributes of a payload: type (flag bits cleared) → payload */
function attrsOf(b: Buffer): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (let at = 0; at + 4 <= b.length; ) {
    const len = LE ? b.readUInt16LE(at) : b.readUInt16BE(at);
    if (len < 4 || at + len > b.length) break;
    out.set((LE ? b.readUInt16LE(at + 2) : b.readUInt16BE(at + 2)) & 0x3fff, b.subarray(at + 4, at + len));
    at += (len + 3) & ~3;
  }
  return out;
}

function tupleOf(b: Buffer | undefined): FlowKey | undefined {
  if (b === undefined) return undefined;
  const t = attrsOf(b);
  const ip = t.get(CTA_TUPLE_IP);
  const pr = t.get(CTA_TUPLE_PROTO);
  if (ip === undefined || pr === undefined) return undefined;
  const a = attrsOf(ip);
  const p = attrsOf(pr);
  const src = a.get(CTA_IP_V4_SRC);
  const dst = a.get(CTA_IP_V4_DST);
  const num = p.get(CTA_PROTO_NUM);
  const sp = p.get(CTA_PROTO_SRC_PORT);
  const dp = p.get(CTA_PROTO_DST_PORT);
  if (src?.length !== 4 || dst?.length !== 4 || num === undefined || sp === undefined || dp === undefined) return undefined;
  return { src: [...src].join('.'), dst: [...dst].join('.'), sport: sp.readUInt16BE(0), dport: dp.readUInt16BE(0), proto: num[0]! };
}

/** The conntrack entries (TCP and UDP over IPv4) among netlink messages; with the sequence number each answered. */
export function parseEntries(replies: Buffer): { seq: number; entry: ConntrackEntry }[] {
  const out: { seq: number; entry: ConntrackEntry }[] = [];
  for (let at = 0; at + 16 <= replies.length; ) {
    const len = LE ? replies.readUInt32LE(at) : replies.readUInt32BE(at);
    if (len < 16 || at + len > replies.length) break;
    const type = LE ? replies.readUInt16LE(at + 4) : replies.readUInt16BE(at + 4);
    const seq = LE ? replies.readUInt32LE(at + 8) : replies.readUInt32BE(at + 8);
    const msg = replies.subarray(at, at + len);
    at += (len + 3) & ~3;
    if (type !== ((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW) || msg[16] !== AF_INET) continue;
    const a = attrsOf(msg.subarray(20));
    const orig = tupleOf(a.get(CTA_TUPLE_ORIG));
    const reply = tupleOf(a.get(CTA_TUPLE_REPLY));
    if (orig === undefined || reply === undefined || (orig.proto !== 6 && orig.proto !== 17)) continue;
    const status = a.get(CTA_STATUS)?.readUInt32BE(0) ?? 0;
    const zone = a.get(CTA_ZONE)?.readUInt16BE(0);
    let tcpState: string | undefined;
    if (orig.proto === 6) {
      const tcp = attrsOf(a.get(CTA_PROTOINFO) ?? Buffer.alloc(0)).get(CTA_PROTOINFO_TCP);
      const st = tcp === undefined ? undefined : attrsOf(tcp).get(CTA_PROTOINFO_TCP_STATE)?.[0];
      tcpState = st === undefined ? undefined : TCP_STATES[st];
    }
    out.push({
      seq,
      entry: {
        proto: orig.proto === 6 ? 'tcp' : 'udp',
        orig,
        reply,
        timeout: a.get(CTA_TIMEOUT)?.readUInt32BE(0) ?? 0,
        ...(tcpState === undefined ? {} : { tcpState }),
        assured: (status & IPS_ASSURED) !== 0,
        seenReply: (status & IPS_SEEN_REPLY) !== 0,
        mark: a.get(CTA_MARK)?.readUInt32BE(0) ?? 0,
        ...(zone === undefined || zone === 0 ? {} : { zone }),
      },
    });
  }
  return out;
}

/**
 * Runs the look-ups: the gets in one exchange (256 per send), each dump on
 * its own socket, all at once (a socket runs one dump at a time). Returns
 * the entries each found (a get of an absent entry finds none).
 */
export async function lookupEntries(transport: NetlinkTransport, netns: string | undefined, lookups: readonly CtLookup[]): Promise<ConntrackEntry[][]> {
  const found: ConntrackEntry[][] = lookups.map(() => []);
  const run = async (idx: number[], window: number): Promise<void> => {
    if (idx.length === 0) return;
    const messages = Buffer.concat(idx.map((i, k) => lookupRequest(lookups[i]!, k + 1)));
    const { errnos, replies } = await transport(netns, NETLINK_NETFILTER, messages, idx.length, window);
    idx.forEach((i, k) => {
      const e = errnos[k]!;
      if (e !== 0 && !(e === ENOENT && lookups[i]!.kind === 'get')) throw new CtNetlinkError(`ctnetlink ${describeLookup(lookups[i]!)} failed (errno ${e})`);
    });
    for (const r of parseEntries(replies)) found[idx[r.seq - 1]!]?.push(r.entry);
  };
  const all = lookups.map((_, i) => i);
  await Promise.all([run(all.filter((i) => lookups[i]!.kind === 'get'), WINDOW), ...all.filter((i) => lookups[i]!.kind === 'dump').map((i) => run([i], 1))]);
  return found;
}

/** 'get orig 10.0.0.1:1 → 10.0.0.2:2/6', 'dump reply dst=10.0.0.100', 'dump orig (unfiltered)' */
export function describeLookup(l: CtLookup): string {
  if (l.kind === 'get') return `get ${l.dir} ${l.tuple.src}:${l.tuple.sport} → ${l.tuple.dst}:${l.tuple.dport}/${l.tuple.proto}`;
  const f = (['src', 'dst', 'proto', 'sport', 'dport'] as const).flatMap((k) => (l[k] === undefined ? [] : [`${k}=${l[k]}`]));
  return `dump ${l.dir} ${f.length === 0 ? '(unfiltered)' : f.join(' ')}`;
}

export interface CtDeleteResult {
  deleted: number;
  /** not in the table (ENOENT) */
  missing: number;
  /** any other refusal, with its errno */
  failed: { ref: CtTupleRef; errno: number }[];
}

/** Sends framed netlink requests in a namespace; the addon's primitive, replaceable in unit tests. */
export type NetlinkTransport = (netns: string | undefined, protocol: number, messages: Buffer, count: number, window: number) => Promise<{ errnos: Int32Array; replies: Buffer }>;

/** The real transport: the native addon, on a worker thread that enters the namespace. */
export async function nativeNetlinkTransport(): Promise<NetlinkTransport> {
  // loaded on first use: commands that never move conntrack state never load the addon for it
  const [{ bpfNative }, { netnsPath }] = await Promise.all([import('../bpf/native.js'), import('../bpf/netns.js')]);
  return (netns, protocol, messages, count, window) => bpfNative.netlinkTransactAsync(netns === undefined ? '' : netnsPath(netns), protocol, messages, count, window);
}

/** Deletes the entries by exact original tuple; an absent entry counts as missing, not as an error. */
export async function deleteEntries(transport: NetlinkTransport, netns: string | undefined, refs: readonly CtTupleRef[]): Promise<CtDeleteResult> {
  const out: CtDeleteResult = { deleted: 0, missing: 0, failed: [] };
  if (refs.length === 0) return out;
  const messages = Buffer.concat(refs.map((r, i) => deleteRequest(r, i + 1)));
  const { errnos } = await transport(netns, NETLINK_NETFILTER, messages, refs.length, WINDOW);
  refs.forEach((ref, i) => {
    const e = errnos[i]!;
    if (e === 0) out.deleted++;
    else if (e === ENOENT) out.missing++;
    else out.failed.push({ ref, errno: e });
  });
  return out;
}
