/**
 * ctnetlink requests the `conntrack` tool cannot make cheaply: an exact
 * delete by original tuple (IPCTNL_MSG_CT_DELETE with CTA_TUPLE_ORIG, one
 * hash look-up in the kernel). conntrack-tools 1.4.7 implements `-D` — also
 * inside a `-R` batch — as a filtered dump of the whole table followed by a
 * delete of what matched: the kernel walks every hash bucket (262 144 by
 * default) once per entry, so 1000 deletes cost seconds. Here the requests
 * are encoded in TypeScript and sent, many per sendto, by the native addon's
 * one netlink primitive (`netlinkTransact`), inside the instance's namespace.
 */
import { endianness } from 'node:os';
import type { FlowKey } from '../dataplane/types.js';
import { StateError } from './types.js';

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_DELETE = 2;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
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

/** One IPCTNL_MSG_CT_DELETE request for `ref`'s original tuple, sequence number `seq`. */
export function deleteRequest(ref: CtTupleRef, seq: number): Buffer {
  const f = ref.orig;
  for (const [name, port] of [['sport', f.sport], ['dport', f.dport]] as const) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CtNetlinkError(`${name}: ${port} is not a port (0–65535)`);
  }
  if (!Number.isInteger(f.proto) || f.proto < 0 || f.proto > 255) throw new CtNetlinkError(`proto: ${f.proto} is not an IP protocol number (0–255)`);
  const tuple = nested(
    CTA_TUPLE_ORIG,
    nested(CTA_TUPLE_IP, attr(CTA_IP_V4_SRC, ipv4(f.src, 'src')), attr(CTA_IP_V4_DST, ipv4(f.dst, 'dst'))),
    nested(CTA_TUPLE_PROTO, attr(CTA_PROTO_NUM, Buffer.from([f.proto])), attr(CTA_PROTO_SRC_PORT, be16(f.sport)), attr(CTA_PROTO_DST_PORT, be16(f.dport))),
  );
  const attrs = ref.zone === undefined ? [tuple] : [tuple, attr(CTA_ZONE, be16(ref.zone))];
  const body = Buffer.concat(attrs);
  const head = Buffer.alloc(16 + 4);
  u32h(head, head.length + body.length, 0);
  u16h(head, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE, 4);
  u16h(head, NLM_F_REQUEST | NLM_F_ACK, 6);
  u32h(head, seq, 8);
  u32h(head, 0, 12); // to the kernel
  head.writeUInt8(AF_INET, 16); // nfgenmsg: family, version 0, res_id 0
  return Buffer.concat([head, body]);
}

export interface CtDeleteResult {
  deleted: number;
  /** not in the table (ENOENT) */
  missing: number;
  /** any other refusal, with its errno */
  failed: { ref: CtTupleRef; errno: number }[];
}

/** Sends framed netlink requests in a namespace; the addon's primitive, replaceable in unit tests. */
export type NetlinkTransport = (netns: string | undefined, protocol: number, messages: Buffer, count: number, window: number) => Int32Array;

/** The real transport: the native addon, entered into the namespace on the JS thread for the (synchronous) exchange. */
export async function nativeNetlinkTransport(): Promise<NetlinkTransport> {
  // loaded on first use: commands that never move conntrack state never load the addon for it
  const [{ bpfNative }, { withNetns }] = await Promise.all([import('../bpf/native.js'), import('../bpf/netns.js')]);
  return (netns, protocol, messages, count, window) => withNetns(netns, () => bpfNative.netlinkTransact(protocol, messages, count, window));
}

/** Deletes the entries by exact original tuple; an absent entry counts as missing, not as an error. */
export function deleteEntries(transport: NetlinkTransport, netns: string | undefined, refs: readonly CtTupleRef[]): CtDeleteResult {
  const out: CtDeleteResult = { deleted: 0, missing: 0, failed: [] };
  if (refs.length === 0) return out;
  const messages = Buffer.concat(refs.map((r, i) => deleteRequest(r, i + 1)));
  const errnos = transport(netns, NETLINK_NETFILTER, messages, refs.length, WINDOW);
  refs.forEach((ref, i) => {
    const e = errnos[i]!;
    if (e === 0) out.deleted++;
    else if (e === ENOENT) out.missing++;
    else out.failed.push({ ref, errno: e });
  });
  return out;
}
