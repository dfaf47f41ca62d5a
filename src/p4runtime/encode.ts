/**
 * P4Runtime values and entities, built from names and checked against the
 * P4Info before anything is sent (pure functions, no I/O).
 *
 * Integers travel as bytestrings (P4Runtime spec, "Bytestrings"): unsigned,
 * big-endian, in the shortest form — leading zero bytes stripped, and the
 * value 0 (which the spec says needs one bit) as the single byte 0x00. A
 * value must fit the bitwidth the P4Info gives its field.
 *
 * Table entries follow the spec's "Match Format" rules: a "don't care" match
 * (ternary mask 0, LPM prefix length 0, the full range) is omitted from the
 * match list, masked-out bits must be 0, every exact field is present, and
 * tables with ternary, range or optional fields need a priority > 0 while
 * the others need 0.
 */
import { P4EncodingError } from './errors.js';
import type { P4Info, TableInfo, ActionInfo, CounterUnit } from './p4info.js';
import type { ActionMsg, CounterDataMsg, CounterEntryMsg, FieldMatchMsg, PacketMetadataMsg, TableEntryMsg } from './proto.js';

/** An unsigned integer: a number, a bigint, big-endian bytes, or an IPv4 address "10.0.0.1". */
export type P4Value = number | bigint | Buffer | string;

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** The integer a P4Value stands for; `what` names it in errors. */
export function toBigInt(v: P4Value, what: string): bigint {
  if (typeof v === 'bigint') {
    if (v < 0n) throw new P4EncodingError(`${what}: ${v} is negative (P4Runtime values here are unsigned)`);
    return v;
  }
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v) || v < 0) throw new P4EncodingError(`${what}: ${v} is not a non-negative integer (use a bigint above 2^53)`);
    return BigInt(v);
  }
  if (Buffer.isBuffer(v)) {
    if (v.length === 0) throw new P4EncodingError(`${what}: empty bytestring`);
    return bytestringToBigInt(v);
  }
  if (typeof v === 'string') {
    const m = IPV4.exec(v);
    if (m) {
      const octets = m.slice(1).map(Number);
      if (octets.every((o) => o <= 255)) return octets.reduce((acc, o) => (acc << 8n) | BigInt(o), 0n);
    }
    throw new P4EncodingError(`${what}: '${v}' is not an IPv4 address (give other values as a number, bigint or Buffer)`);
  }
  throw new P4EncodingError(`${what}: unsupported value ${String(v)}`);
}

/** Bytestring bytes to an unsigned integer (big-endian; any length, leading zeros allowed). */
export function bytestringToBigInt(b: Uint8Array): bigint {
  let v = 0n;
  for (const byte of b) v = (v << 8n) | BigInt(byte);
  return v;
}

const maxOf = (bitwidth: number): bigint => (1n << BigInt(bitwidth)) - 1n;

/** The canonical bytestring of an unsigned integer (shortest form; 0 is one zero byte). */
export function canonicalBytes(v: bigint): Buffer {
  if (v < 0n) throw new P4EncodingError(`${v} is negative`);
  if (v === 0n) return Buffer.from([0]);
  let hex = v.toString(16);
  if (hex.length % 2 === 1) hex = `0${hex}`;
  return Buffer.from(hex, 'hex');
}

/**
 * A value as the canonical bytestring of a `bit<bitwidth>` field; a value that
 * does not fit throws a P4EncodingError naming `what` and the bitwidth.
 */
export function bytestring(v: P4Value, bitwidth: number, what: string): Buffer {
  const n = toBigInt(v, what);
  if (n > maxOf(bitwidth)) throw new P4EncodingError(`${what}: ${n} does not fit in ${bitwidth} bits (max ${maxOf(bitwidth)})`);
  return canonicalBytes(n);
}

// ------------------------------------------------------------ table entries

export type MatchSpec =
  | { exact: P4Value }
  | { ternary: { value: P4Value; mask: P4Value } }
  | { lpm: { value: P4Value; prefixLen: number } }
  | { range: { low: P4Value; high: P4Value } }
  | { optional: P4Value };

export interface ActionSpec {
  /** full name or alias */
  name: string;
  params?: Readonly<Record<string, P4Value>>;
}

export interface TableEntrySpec {
  /** full name or alias */
  table: string;
  /** by match field name; a field left out is "don't care" (not allowed for exact fields) */
  match?: Readonly<Record<string, MatchSpec>>;
  /** required for INSERT; optional for MODIFY (keeps the action) and DELETE */
  action?: ActionSpec;
  /** > 0 for tables with ternary, range or optional fields (higher wins), else 0 / absent */
  priority?: number;
  /** the entry is the table's default action (no match, no priority) */
  isDefaultAction?: boolean;
}

export type DecodedMatch =
  | { exact: bigint }
  | { ternary: { value: bigint; mask: bigint } }
  | { lpm: { value: bigint; prefixLen: number } }
  | { range: { low: bigint; high: bigint } }
  | { optional: bigint };

/** A table entry read back, by names; it can be given back to tableEntry() as it is. */
export interface DecodedTableEntry {
  /** full name */
  table: string;
  match: Record<string, DecodedMatch>;
  action?: { name: string; params: Record<string, bigint> };
  priority: number;
  isDefaultAction: boolean;
}

const MATCH_KINDS = { exact: 'EXACT', ternary: 'TERNARY', lpm: 'LPM', range: 'RANGE', optional: 'OPTIONAL' } as const;
type MatchKind = keyof typeof MATCH_KINDS;

function matchKind(spec: MatchSpec, what: string): MatchKind {
  const keys = Object.keys(spec).filter((k): k is MatchKind => k in MATCH_KINDS);
  if (keys.length !== 1) throw new P4EncodingError(`${what}: give exactly one of exact, ternary, lpm, range, optional`);
  return keys[0]!;
}

const needsPriority = (t: TableInfo): boolean => t.matchFields.some((f) => f.matchType === 'TERNARY' || f.matchType === 'RANGE' || f.matchType === 'OPTIONAL');

function encodeMatch(table: TableInfo, match: Readonly<Record<string, MatchSpec>>): FieldMatchMsg[] {
  const out: FieldMatchMsg[] = [];
  const byName = new Map(table.matchFields.map((f) => [f.name, f]));
  for (const name of Object.keys(match)) {
    if (!byName.has(name)) throw new P4EncodingError(`table ${table.name}: no match field '${name}'; fields: ${table.matchFields.map((f) => `${f.name} (${f.matchType.toLowerCase()})`).join(', ')}`);
  }
  for (const f of table.matchFields) {
    const what = `table ${table.name} field ${f.name}`;
    const spec = match[f.name];
    if (spec === undefined) {
      if (f.matchType === 'EXACT') throw new P4EncodingError(`${what}: exact fields cannot be left out ("don't care" does not exist for exact matches)`);
      continue;
    }
    const kind = matchKind(spec, what);
    if (MATCH_KINDS[kind] !== f.matchType) throw new P4EncodingError(`${what}: its match type is ${f.matchType.toLowerCase()}, not ${kind}`);
    if ('exact' in spec) {
      out.push({ field_id: f.id, exact: { value: bytestring(spec.exact, f.bitwidth, what) } });
    } else if ('ternary' in spec) {
      const value = toBigInt(spec.ternary.value, `${what} value`);
      const mask = toBigInt(spec.ternary.mask, `${what} mask`);
      const v = bytestring(value, f.bitwidth, `${what} value`);
      const m = bytestring(mask, f.bitwidth, `${what} mask`);
      if ((value & ~mask) !== 0n) throw new P4EncodingError(`${what}: value 0x${value.toString(16)} has bits outside mask 0x${mask.toString(16)} (masked-out bits must be 0)`);
      if (mask === 0n) continue; // don't care: omitted
      out.push({ field_id: f.id, ternary: { value: v, mask: m } });
    } else if ('lpm' in spec) {
      const plen = spec.lpm.prefixLen;
      if (!Number.isInteger(plen) || plen < 0 || plen > f.bitwidth) throw new P4EncodingError(`${what}: prefix length ${plen} is not in 0..${f.bitwidth}`);
      const value = toBigInt(spec.lpm.value, what);
      const v = bytestring(value, f.bitwidth, what);
      const hostBits = maxOf(f.bitwidth - plen);
      if ((value & hostBits) !== 0n) throw new P4EncodingError(`${what}: value 0x${value.toString(16)} has bits set beyond its /${plen} prefix (they must be 0)`);
      if (plen === 0) continue; // don't care: omitted
      out.push({ field_id: f.id, lpm: { value: v, prefix_len: plen } });
    } else if ('range' in spec) {
      const low = toBigInt(spec.range.low, `${what} low`);
      const high = toBigInt(spec.range.high, `${what} high`);
      const l = bytestring(low, f.bitwidth, `${what} low`);
      const h = bytestring(high, f.bitwidth, `${what} high`);
      if (low > high) throw new P4EncodingError(`${what}: range low ${low} is above high ${high}`);
      if (low === 0n && high === maxOf(f.bitwidth)) continue; // don't care: omitted
      out.push({ field_id: f.id, range: { low: l, high: h } });
    } else {
      out.push({ field_id: f.id, optional: { value: bytestring(spec.optional, f.bitwidth, what) } });
    }
  }
  return out;
}

function tableActionNames(p4info: P4Info, table: TableInfo): string {
  return table.actionRefs.map((r) => `${p4info.actionById(r.id).alias}${r.scope === 'DEFAULT_ONLY' ? ' (default only)' : r.scope === 'TABLE_ONLY' ? ' (table only)' : ''}`).join(', ');
}

/** An Action message for `spec` (checks the parameters, not the table). */
export function encodeAction(action: ActionInfo, params: Readonly<Record<string, P4Value>>): ActionMsg {
  const byName = new Map(action.params.map((p) => [p.name, p]));
  for (const name of Object.keys(params)) {
    if (!byName.has(name)) throw new P4EncodingError(`action ${action.name}: no parameter '${name}'; parameters: ${action.params.map((p) => `${p.name} (bit<${p.bitwidth}>)`).join(', ') || '(none)'}`);
  }
  const missing = action.params.filter((p) => params[p.name] === undefined).map((p) => p.name);
  if (missing.length > 0) throw new P4EncodingError(`action ${action.name}: missing parameter${missing.length === 1 ? '' : 's'} ${missing.join(', ')} (P4Runtime has no default parameter values)`);
  return {
    action_id: action.id,
    params: action.params.map((p) => ({ param_id: p.id, value: bytestring(params[p.name]!, p.bitwidth, `action ${action.name} param ${p.name}`) })),
  };
}

/** A p4.v1.TableEntry for `spec`, checked against the P4Info. */
export function tableEntry(p4info: P4Info, spec: TableEntrySpec): TableEntryMsg {
  const table = p4info.table(spec.table);
  const isDefault = spec.isDefaultAction === true;
  const msg: TableEntryMsg = { table_id: table.id };
  if (isDefault) {
    if (spec.match !== undefined && Object.keys(spec.match).length > 0) throw new P4EncodingError(`table ${table.name}: a default-action entry has no match`);
    if (spec.priority !== undefined && spec.priority !== 0) throw new P4EncodingError(`table ${table.name}: a default-action entry has no priority`);
    msg.is_default_action = true;
  } else {
    msg.match = encodeMatch(table, spec.match ?? {});
    const priority = spec.priority ?? 0;
    if (needsPriority(table)) {
      if (!Number.isInteger(priority) || priority < 1 || priority > 0x7fffffff) {
        throw new P4EncodingError(`table ${table.name}: has ternary, range or optional fields, so an entry needs a priority in 1..2147483647 (higher wins), not ${priority}`);
      }
    } else if (priority !== 0) {
      throw new P4EncodingError(`table ${table.name}: has only exact/lpm fields, so the priority must be 0 (or absent), not ${priority}`);
    }
    if (priority !== 0) msg.priority = priority;
  }
  if (spec.action !== undefined) {
    const action = p4info.action(spec.action.name);
    const ref = table.actionRefs.find((r) => r.id === action.id);
    if (!ref) throw new P4EncodingError(`table ${table.name}: action ${action.name} is not one of its actions: ${tableActionNames(p4info, table)}`);
    if (!isDefault && ref.scope === 'DEFAULT_ONLY') throw new P4EncodingError(`table ${table.name}: action ${action.name} is @defaultonly; entries can use: ${tableActionNames(p4info, table)}`);
    if (isDefault && ref.scope === 'TABLE_ONLY') throw new P4EncodingError(`table ${table.name}: action ${action.name} is @tableonly; it cannot be the default action`);
    msg.action = { action: encodeAction(action, spec.action.params ?? {}) };
  }
  return msg;
}

/** A table entry read from the switch, back into names and integers. */
export function decodeTableEntry(p4info: P4Info, msg: TableEntryMsg): DecodedTableEntry {
  const table = p4info.tableById(msg.table_id);
  const fields = new Map(table.matchFields.map((f) => [f.id, f]));
  const match: Record<string, DecodedMatch> = {};
  for (const m of msg.match ?? []) {
    const f = fields.get(m.field_id);
    if (!f) throw new P4EncodingError(`table ${table.name}: the switch returned match field id ${m.field_id}, which the P4Info does not have`);
    const n = (b: Buffer | undefined): bigint => bytestringToBigInt(b ?? Buffer.alloc(0));
    if (m.exact) match[f.name] = { exact: n(m.exact.value) };
    else if (m.ternary) match[f.name] = { ternary: { value: n(m.ternary.value), mask: n(m.ternary.mask) } };
    else if (m.lpm) match[f.name] = { lpm: { value: n(m.lpm.value), prefixLen: m.lpm.prefix_len ?? 0 } };
    else if (m.range) match[f.name] = { range: { low: n(m.range.low), high: n(m.range.high) } };
    else if (m.optional) match[f.name] = { optional: n(m.optional.value) };
  }
  const out: DecodedTableEntry = { table: table.name, match, priority: msg.priority ?? 0, isDefaultAction: msg.is_default_action === true };
  const a = msg.action?.action;
  if (a) {
    const action = p4info.actionById(a.action_id);
    const byId = new Map(action.params.map((p) => [p.id, p]));
    const params: Record<string, bigint> = {};
    for (const p of a.params ?? []) {
      const info = byId.get(p.param_id);
      if (!info) throw new P4EncodingError(`action ${action.name}: the switch returned param id ${p.param_id}, which the P4Info does not have`);
      params[info.name] = bytestringToBigInt(p.value ?? Buffer.alloc(0));
    }
    out.action = { name: action.name, params };
  }
  return out;
}

// ------------------------------------------------------------ counters

export interface CounterValue {
  packets: bigint;
  bytes: bigint;
}

/** A p4.v1.CounterEntry: one index, or all of them (index undefined), with data for a write. */
export function counterEntry(p4info: P4Info, counter: string, index?: number | bigint, data?: CounterValue): CounterEntryMsg {
  const info = p4info.counter(counter);
  const msg: CounterEntryMsg = { counter_id: info.id };
  if (index !== undefined) {
    const i = toBigInt(index, `counter ${info.name} index`);
    if (i >= BigInt(info.size)) throw new P4EncodingError(`counter ${info.name}: index ${i} is out of range (size ${info.size})`);
    msg.index = { index: i.toString() };
  }
  if (data !== undefined) {
    for (const [k, v] of Object.entries(data)) {
      if (typeof v !== 'bigint' || v < 0n || v > 0x7fffffffffffffffn) throw new P4EncodingError(`counter ${info.name}: ${k} must be a bigint in 0..2^63-1`);
    }
    msg.data = { byte_count: data.bytes.toString(), packet_count: data.packets.toString() };
  }
  return msg;
}

/**
 * Counter data read from the switch. With the counter's unit, the count it
 * does not keep is 0: BMv2 counts packets and bytes for every counter and
 * returns both, but only the unit's count can be written (a MODIFY of a
 * PACKETS counter leaves its bytes as they were), so the other is noise.
 */
export function decodeCounterData(d: CounterDataMsg | undefined, unit?: CounterUnit): CounterValue {
  const packets = BigInt(d?.packet_count ?? '0');
  const bytes = BigInt(d?.byte_count ?? '0');
  if (unit === 'PACKETS') return { packets, bytes: 0n };
  if (unit === 'BYTES') return { packets: 0n, bytes };
  return { packets, bytes };
}

// ------------------------------------------------------------ packet I/O metadata

/** Packet-out (or packet-in) metadata by name; every field of the header must be given. */
export function packetMetadata(p4info: P4Info, header: string, values: Readonly<Record<string, P4Value>>): PacketMetadataMsg[] {
  const h = p4info.controllerPacketMetadata(header);
  const byName = new Map(h.metadata.map((m) => [m.name, m]));
  for (const name of Object.keys(values)) {
    if (!byName.has(name)) throw new P4EncodingError(`${h.name} header: no field '${name}'; fields: ${h.metadata.map((m) => `${m.name} (bit<${m.bitwidth}>)`).join(', ')}`);
  }
  const missing = h.metadata.filter((m) => values[m.name] === undefined).map((m) => m.name);
  if (missing.length > 0) throw new P4EncodingError(`${h.name} header: missing field${missing.length === 1 ? '' : 's'} ${missing.join(', ')}`);
  return h.metadata.map((m) => ({ metadata_id: m.id, value: bytestring(values[m.name]!, m.bitwidth, `${h.name} field ${m.name}`) }));
}

/** Packet-in (or packet-out) metadata back into names and integers. */
export function decodePacketMetadata(p4info: P4Info, header: string, metadata: readonly PacketMetadataMsg[]): Record<string, bigint> {
  const h = p4info.controllerPacketMetadata(header);
  const byId = new Map(h.metadata.map((m) => [m.id, m]));
  const out: Record<string, bigint> = {};
  for (const m of metadata) {
    const info = byId.get(m.metadata_id);
    out[info ? info.name : `#${m.metadata_id}`] = bytestringToBigInt(m.value ?? Buffer.alloc(0));
  }
  return out;
}
