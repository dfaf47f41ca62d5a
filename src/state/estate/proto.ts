/**
 * The E-State peer protocol: one service every instance's store serves,
 * with protobuf messages (so a peer written in another language can join a
 * group), carried by transport.ts. The .proto text below is the only definition; it is parsed
 * at load time by protobufjs.
 */
import protobuf from 'protobufjs';

export const ESTATE_PROTO = `
syntax = "proto3";
package sharp.estate.v1;

// One instance's item of a key.
message Item {
  string key = 1;
  string owner = 2;   // id of the instance whose local view holds it
  double ts = 3;      // microseconds since the epoch, from the owner's hybrid logical clock (clock.ts)
  oneof value {
    double num = 4;
    sint64 int = 5;
    string str = 6;
    bytes raw = 7;
  }
}

message Member {
  string id = 1;
  string address = 2;  // host:port of its EState service
}

// Every message carries its sender's hybrid logical clock (µs since the
// epoch; 0 or absent: none): the receiver's clock moves past it, so its
// next writes are later than every write the sender had made.

message GetRequest {
  string key = 1;
  string from = 2;     // asking instance
  double clock = 15;
}
message GetReply {
  string node = 1;
  bool found = 2;
  Item item = 3;
  double clock = 15;
}

// Items of the answering instance's local view: the listed keys, and/or
// every key starting with prefix (prefix "" with no keys: nothing).
message FetchRequest {
  repeated string keys = 1;
  string prefix = 2;
  bool by_prefix = 3;
  string from = 4;
  double clock = 15;
}
message FetchReply {
  string node = 1;
  repeated Item items = 2;
  double clock = 15;
}

message DropRequest {
  repeated string keys = 1;
  string from = 2;
  double clock = 15;
}
message DropReply {
  string node = 1;
  uint32 dropped = 2;
  double clock = 15;
}

message JoinRequest {
  Member member = 1;
  double clock = 15;
}
message Members {
  string node = 1;
  repeated Member members = 2;  // the answering node and every peer it knows
  double clock = 15;
}
message LeaveRequest {
  string id = 1;
  double clock = 15;
}
message LeaveReply {
  string node = 1;
  double clock = 15;
}

// On the framed transport (transport.ts) a frame names its method by
// number: the rpcs below in order, from 1 (Get = 1 … Leave = 5).
service EState {
  rpc Get(GetRequest) returns (GetReply);
  rpc Fetch(FetchRequest) returns (FetchReply);
  rpc Drop(DropRequest) returns (DropReply);
  rpc Join(JoinRequest) returns (Members);
  rpc Leave(LeaveRequest) returns (LeaveReply);
}
`;

export const ESTATE_SERVICE = 'sharp.estate.v1.EState';

const root = protobuf.parse(ESTATE_PROTO, { keepCase: true }).root;

export type StateValue = number | bigint | string | Buffer;

/** A state item: one instance's value of a key. */
export interface StateItem {
  key: string;
  value: StateValue;
  /** microseconds since the epoch, from the writer's hybrid logical clock (clock.ts): later than every write it knew of (also across handovers) */
  ts: number;
  /** id of the instance whose local view holds it */
  owner: string;
}

export interface Member {
  id: string;
  address: string;
}

/** Every message carries its sender's hybrid logical clock (µs; 0 or absent: none). */
export interface Clocked {
  clock?: number;
}

export interface GetRequest extends Clocked {
  key: string;
  from: string;
}
export interface GetReply extends Clocked {
  node: string;
  item: StateItem | undefined;
}
export interface FetchRequest extends Clocked {
  keys: string[];
  prefix: string | undefined;
  from: string;
}
export interface FetchReply extends Clocked {
  node: string;
  items: StateItem[];
}
export interface DropRequest extends Clocked {
  keys: string[];
  from: string;
}
export interface DropReply extends Clocked {
  node: string;
  dropped: number;
}
export interface JoinRequest extends Clocked {
  member: Member;
}
export interface Members extends Clocked {
  node: string;
  members: Member[];
}
export interface LeaveRequest extends Clocked {
  id: string;
}
export interface LeaveReply extends Clocked {
  node: string;
}

type Obj = Record<string, unknown>;

/** a 64-bit integer as protobufjs takes and gives it (two's complement halves) */
interface LongLike {
  low: number;
  high: number;
  unsigned: boolean;
}

function longBits(v: bigint): LongLike {
  if (v < -(1n << 63n) || v >= 1n << 63n) throw new RangeError(`E-State integer ${v} does not fit a sint64 (from -2^63 to 2^63-1)`);
  return { low: Number(v & 0xffffffffn) | 0, high: Number((v >> 32n) & 0xffffffffn) | 0, unsigned: false };
}

function bigintOf(l: LongLike | number): bigint {
  if (typeof l === 'number') return BigInt(l);
  return BigInt.asIntN(64, (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0));
}

function wireItem(i: StateItem): Obj {
  const o: Obj = { key: i.key, owner: i.owner, ts: i.ts };
  const v = i.value;
  if (typeof v === 'number') o['num'] = v;
  else if (typeof v === 'bigint') o['int'] = longBits(v);
  else if (typeof v === 'string') o['str'] = v;
  else o['raw'] = v;
  return o;
}

function itemFromWire(o: Obj): StateItem {
  let value: StateValue;
  switch (o['value']) {
    case 'num':
      value = o['num'] as number;
      break;
    case 'int':
      value = bigintOf(o['int'] as LongLike | number);
      break;
    case 'str':
      value = o['str'] as string;
      break;
    case 'raw': {
      const r = o['raw'] as Uint8Array;
      value = Buffer.isBuffer(r) ? r : Buffer.from(r.buffer, r.byteOffset, r.byteLength);
      break;
    }
    default:
      throw new Error(`E-State item '${String(o['key'])}' carries no value`);
  }
  return { key: String(o['key'] ?? ''), owner: String(o['owner'] ?? ''), ts: Number(o['ts'] ?? 0), value };
}

interface MessageCodec<T> {
  serialize(v: T): Buffer;
  deserialize(b: Buffer): T;
}

/**
 * The message's `clock` field is handled here, for every message type.
 * Encodes the wire objects as they are and reads the decoded message
 * directly: protobufjs's fromObject / toObject conversions were most of a
 * Get's serialisation cost (~25 µs of ~35 per round trip here).
 */
function codec<T extends Clocked>(typeName: string, toWire: (v: T) => Obj, fromWire: (o: Obj) => T): MessageCodec<T> {
  const type = root.lookupType(`sharp.estate.v1.${typeName}`);
  return {
    serialize(v: T): Buffer {
      const o = toWire(v);
      if (v.clock !== undefined) o['clock'] = v.clock;
      const w = type.encode(o).finish();
      return Buffer.from(w.buffer, w.byteOffset, w.byteLength);
    },
    deserialize(b: Buffer): T {
      // unset fields read as their proto3 defaults (the message prototype's); `value` names the oneof member set
      const o = type.decode(b) as unknown as Obj;
      const v = fromWire(o);
      const clock = Number(o['clock'] ?? 0);
      if (clock > 0) v.clock = clock;
      return v;
    },
  };
}

const members = (o: Obj): Member[] => ((o['members'] as Obj[] | undefined) ?? []).map((m) => ({ id: String(m['id']), address: String(m['address']) }));

export const codecs = {
  GetRequest: codec<GetRequest>(
    'GetRequest',
    (v) => ({ key: v.key, from: v.from }),
    (o) => ({ key: String(o['key']), from: String(o['from']) }),
  ),
  GetReply: codec<GetReply>(
    'GetReply',
    (v) => ({ node: v.node, found: v.item !== undefined, ...(v.item ? { item: wireItem(v.item) } : {}) }),
    (o) => ({ node: String(o['node']), item: o['found'] === true && o['item'] ? itemFromWire(o['item'] as Obj) : undefined }),
  ),
  FetchRequest: codec<FetchRequest>(
    'FetchRequest',
    (v) => ({ keys: v.keys, prefix: v.prefix ?? '', by_prefix: v.prefix !== undefined, from: v.from }),
    (o) => ({ keys: (o['keys'] as string[]) ?? [], prefix: o['by_prefix'] === true ? String(o['prefix']) : undefined, from: String(o['from']) }),
  ),
  FetchReply: codec<FetchReply>(
    'FetchReply',
    (v) => ({ node: v.node, items: v.items.map(wireItem) }),
    (o) => ({ node: String(o['node']), items: ((o['items'] as Obj[]) ?? []).map(itemFromWire) }),
  ),
  DropRequest: codec<DropRequest>(
    'DropRequest',
    (v) => ({ keys: v.keys, from: v.from }),
    (o) => ({ keys: (o['keys'] as string[]) ?? [], from: String(o['from']) }),
  ),
  DropReply: codec<DropReply>(
    'DropReply',
    (v) => ({ node: v.node, dropped: v.dropped }),
    (o) => ({ node: String(o['node']), dropped: Number(o['dropped']) }),
  ),
  JoinRequest: codec<JoinRequest>(
    'JoinRequest',
    (v) => ({ member: v.member }),
    (o) => {
      const m = (o['member'] as Obj | undefined) ?? {};
      return { member: { id: String(m['id'] ?? ''), address: String(m['address'] ?? '') } };
    },
  ),
  Members: codec<Members>(
    'Members',
    (v) => ({ node: v.node, members: v.members }),
    (o) => ({ node: String(o['node']), members: members(o) }),
  ),
  LeaveRequest: codec<LeaveRequest>(
    'LeaveRequest',
    (v) => ({ id: v.id }),
    (o) => ({ id: String(o['id']) }),
  ),
  LeaveReply: codec<LeaveReply>(
    'LeaveReply',
    (v) => ({ node: v.node }),
    (o) => ({ node: String(o['node']) }),
  ),
} as const;

/** Size of a value on the wire, roughly (for statistics). */
export function valueBytes(v: StateValue): number {
  if (typeof v === 'number' || typeof v === 'bigint') return 8;
  if (typeof v === 'string') return Buffer.byteLength(v);
  return v.length;
}
