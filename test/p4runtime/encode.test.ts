// Bytestrings and table entries, checked against the P4Info before sending.
import t from 'tap';
import path from 'node:path';
import {
  P4Info,
  P4EncodingError,
  bytestring,
  bytestringToBigInt,
  canonicalBytes,
  counterEntry,
  decodeCounterData,
  decodePacketMetadata,
  decodeTableEntry,
  packetMetadata,
  tableEntry,
  toBigInt,
  type TableEntrySpec,
} from '../../src/p4runtime/index.js';
import { repoRoot } from '../helpers/env.js';

const p4info = P4Info.load(path.join(repoRoot, 'p4/build/sharp.p4info.json'));
const hex = (b: Buffer): string => b.toString('hex');

// A made-up P4Info with the match kinds and scopes sharp.p4 does not use.
const synthetic = P4Info.fromJson({
  tables: [
    {
      preamble: { id: 33554433, name: 'Ing.routes', alias: 'routes' },
      matchFields: [
        { id: 1, name: 'dst', bitwidth: 32, matchType: 'LPM' },
        { id: 2, name: 'vrf', bitwidth: 12, matchType: 'EXACT' },
      ],
      actionRefs: [{ id: 16777217 }, { id: 16777218, scope: 'TABLE_ONLY' }],
      size: '1024',
    },
    {
      preamble: { id: 33554434, name: 'Ing.acl', alias: 'acl' },
      matchFields: [
        { id: 1, name: 'port', bitwidth: 16, matchType: 'RANGE' },
        { id: 2, name: 'vlan', bitwidth: 12, matchType: 'OPTIONAL' },
      ],
      actionRefs: [{ id: 16777217 }],
      size: '64',
    },
  ],
  actions: [
    { preamble: { id: 16777217, name: 'Ing.fwd', alias: 'fwd' }, params: [{ id: 1, name: 'port', bitwidth: 9 }] },
    { preamble: { id: 16777218, name: 'Ing.punt', alias: 'punt' } },
  ],
});

t.test('canonical bytestrings: big-endian, shortest form, 0 is one zero byte', async (t) => {
  t.equal(hex(canonicalBytes(0n)), '00', '0 needs one bit, so one byte (spec, Bytestrings)');
  t.equal(hex(canonicalBytes(1n)), '01');
  t.equal(hex(canonicalBytes(255n)), 'ff');
  t.equal(hex(canonicalBytes(256n)), '0100');
  t.equal(hex(canonicalBytes(0x1ffn)), '01ff');
  t.equal(hex(bytestring(511, 9, 'port')), '01ff', 'max of bit<9>');
  t.equal(hex(bytestring(0xffffffffn, 32, 'addr')), 'ffffffff');
  t.equal(hex(bytestring('10.0.0.1', 32, 'addr')), '0a000001');
  t.equal(hex(bytestring('0.0.0.1', 32, 'addr')), '01', 'IPv4 address, leading zeros stripped');
  t.equal(hex(bytestring('0.0.0.0', 32, 'addr')), '00');
  t.equal(hex(bytestring(Buffer.from([0, 0, 1, 2]), 32, 'x')), '0102', 'Buffers are canonicalised');
  t.equal(hex(bytestring(Buffer.from([0, 0]), 16, 'x')), '00');
  t.equal(hex(bytestring((1n << 64n) - 1n, 64, 'x')), 'ffffffffffffffff', 'bigints beyond 2^53');
  t.equal(bytestringToBigInt(Buffer.from('0a000001', 'hex')), 0x0a000001n);
  t.equal(bytestringToBigInt(Buffer.from('000001', 'hex')), 1n, 'padded strings decode too');
  t.equal(toBigInt('192.168.1.254', 'a'), 0xc0a801fen);
});

t.test('values that do not fit or are not integers throw P4EncodingError naming the field and bitwidth', async (t) => {
  t.throws(() => bytestring(512, 9, 'table SharpIngress.port_info field port'), { name: 'P4EncodingError', message: /table SharpIngress\.port_info field port: 512 does not fit in 9 bits \(max 511\)/ });
  t.throws(() => bytestring(4, 2, 'phase'), P4EncodingError);
  t.throws(() => bytestring(1n << 32n, 32, 'addr'), /does not fit in 32 bits/);
  t.throws(() => bytestring('10.0.0.1', 16, 'x'), /does not fit in 16 bits/);
  t.throws(() => bytestring(-1, 8, 'x'), /not a non-negative integer/);
  t.throws(() => bytestring(1.5, 8, 'x'), /not a non-negative integer/);
  t.throws(() => bytestring(-1n, 8, 'x'), /negative/);
  t.throws(() => bytestring('10.0.0.256', 32, 'x'), /not an IPv4 address/);
  t.throws(() => bytestring('42', 32, 'x'), /not an IPv4 address/);
  t.throws(() => bytestring(Buffer.alloc(0), 8, 'x'), /empty/);
  t.throws(() => tableEntry(p4info, { table: 'port_info', match: { port: { exact: 512 } }, action: { name: 'set_port', params: { slot: 1, role: 1 } } }), {
    message: /table SharpIngress\.port_info field port: 512 does not fit in 9 bits/,
  });
  t.throws(() => tableEntry(p4info, { table: 'port_info', match: { port: { exact: 1 } }, action: { name: 'set_port', params: { slot: 1, role: 256 } } }), {
    message: /action SharpIngress\.set_port param role: 256 does not fit in 8 bits/,
  });
});

t.test('exact entries: ids, canonical values, every exact field required, priority 0', async (t) => {
  const e = tableEntry(p4info, {
    table: 'rules_exact',
    match: { saddr: { exact: '10.0.0.1' }, daddr: { exact: '10.0.0.2' }, proto: { exact: 17 }, sport: { exact: 0 }, dport: { exact: 53 } },
    action: { name: 'exact_rule', params: { rule_id: 7, out_slot: 2, hid: 16383, phase: 1 } },
  });
  t.equal(e.table_id, 48197704);
  t.same(
    e.match!.map((m) => [m.field_id, hex(m.exact!.value)]),
    [
      [1, '0a000001'],
      [2, '0a000002'],
      [3, '11'],
      [4, '00'],
      [5, '35'],
    ],
  );
  t.equal(e.action!.action!.action_id, 24576454);
  t.same(
    e.action!.action!.params!.map((p) => [p.param_id, hex(p.value)]),
    [
      [1, '07'],
      [2, '02'],
      [3, '3fff'],
      [4, '01'],
    ],
  );
  t.equal(e.priority, undefined, 'no priority on an exact table');
  t.throws(() => tableEntry(p4info, { table: 'tx_port', match: {}, action: { name: 'set_tx', params: { port: 1 } } }), { message: /field slot: exact fields cannot be left out/ });
  t.throws(() => tableEntry(p4info, { table: 'tx_port', match: { slot: { exact: 1 } }, priority: 5, action: { name: 'set_tx', params: { port: 1 } } }), { message: /priority must be 0/ });
  t.throws(() => tableEntry(p4info, { table: 'tx_port', match: { slot: { ternary: { value: 1, mask: 1 } } } }), { message: /field slot: its match type is exact, not ternary/ });
});

t.test('unknown tables, fields, actions and params list the valid ones', async (t) => {
  t.throws(() => tableEntry(p4info, { table: 'nope', match: {} }), { name: 'P4InfoError', message: /no table 'nope'.*rules_wild/ });
  t.throws(() => tableEntry(p4info, { table: 'tx_port', match: { slot: { exact: 1 }, port: { exact: 1 } } }), { name: 'P4EncodingError', message: /no match field 'port'; fields: slot \(exact\)/ });
  t.throws(() => tableEntry(p4info, { table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { prot: 1 } } }), {
    message: /action SharpIngress\.set_tx: no parameter 'prot'; parameters: port \(bit<9>\)/,
  });
  t.throws(() => tableEntry(p4info, { table: 'rule_actions', match: { rule_id: { exact: 1 } }, action: { name: 'rule_action', params: { out_slot: 1 } } }), {
    message: /missing parameters hid, phase/,
  });
  t.throws(() => tableEntry(p4info, { table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_port', params: { slot: 1, role: 1 } } }), {
    message: /action SharpIngress\.set_port is not one of its actions: set_tx, NoAction \(default only\)/,
  });
});

t.test('a @defaultonly action is refused for a match entry', async (t) => {
  t.throws(() => tableEntry(p4info, { table: 'port_info', match: { port: { exact: 1 } }, action: { name: 'not_a_switch_port' } }), {
    name: 'P4EncodingError',
    message: /not_a_switch_port is @defaultonly; entries can use: set_port, not_a_switch_port \(default only\)/,
  });
  const d = tableEntry(p4info, { table: 'rules_exact', isDefaultAction: true, action: { name: 'NoAction' } });
  t.same(d, { table_id: 48197704, is_default_action: true, action: { action: { action_id: 21257015, params: [] } } }, 'but it can be the default action');
  t.throws(() => tableEntry(synthetic, { table: 'routes', isDefaultAction: true, action: { name: 'punt' } }), { message: /punt is @tableonly/ });
  t.throws(() => tableEntry(p4info, { table: 'rules_exact', isDefaultAction: true, match: { saddr: { exact: 1 } } }), { message: /default-action entry has no match/ });
});

t.test('ternary: mask 0 is omitted, bits outside the mask are refused, priority > 0 required', async (t) => {
  const spec: TableEntrySpec = {
    table: 'rules_wild',
    match: {
      saddr: { ternary: { value: '10.1.0.0', mask: '255.255.0.0' } },
      daddr: { ternary: { value: 0, mask: 0 } },
      proto: { ternary: { value: 17, mask: 0xff } },
      in_slot: { ternary: { value: 0, mask: 0 } },
    },
    priority: 100,
    action: { name: 'wild_rule', params: { rule_id: 9 } },
  };
  const e = tableEntry(p4info, spec);
  t.same(
    e.match!.map((m) => [m.field_id, hex(m.ternary!.value), hex(m.ternary!.mask)]),
    [
      [1, '0a010000', 'ffff0000'],
      [3, '11', 'ff'],
    ],
    'daddr and in_slot (mask 0) are not in the match list; sport, dport not given',
  );
  t.equal(e.priority, 100);
  t.throws(() => tableEntry(p4info, { ...spec, priority: 0 }), { message: /needs a priority in 1\.\.2147483647/ });
  t.throws(() => tableEntry(p4info, { ...spec, priority: undefined as unknown as number }), { message: /needs a priority/ });
  t.throws(() => tableEntry(p4info, { ...spec, priority: 2 ** 31 }), { message: /needs a priority/ });
  t.throws(() => tableEntry(p4info, { ...spec, match: { saddr: { ternary: { value: '10.1.2.3', mask: '255.255.0.0' } } } }), {
    name: 'P4EncodingError',
    message: /table SharpIngress\.rules_wild field saddr: value 0xa010203 has bits outside mask 0xffff0000/,
  });
  t.throws(() => tableEntry(p4info, { ...spec, match: { dport: { ternary: { value: 5, mask: 0 } } } }), { message: /field dport: value 0x5 has bits outside mask 0x0/ });
  t.throws(() => tableEntry(p4info, { ...spec, match: { in_slot: { ternary: { value: 1, mask: 0x1ffff } } } }), { message: /in_slot mask: 131071 does not fit in 16 bits/ });
  const all = tableEntry(p4info, { table: 'rules_wild', match: {}, priority: 1, action: { name: 'wild_rule', params: { rule_id: 1 } } });
  t.same(all.match, [], 'a match-all wildcard has an empty match list');
});

t.test('lpm, range and optional', async (t) => {
  const e = tableEntry(synthetic, { table: 'routes', match: { dst: { lpm: { value: '10.1.0.0', prefixLen: 16 } }, vrf: { exact: 1 } }, action: { name: 'fwd', params: { port: 3 } } });
  t.same(e.match![0], { field_id: 1, lpm: { value: Buffer.from('0a010000', 'hex'), prefix_len: 16 } });
  t.equal(e.priority, undefined, 'lpm tables take no priority');
  const dc = tableEntry(synthetic, { table: 'routes', match: { dst: { lpm: { value: 0, prefixLen: 0 } }, vrf: { exact: 1 } } });
  t.same(
    dc.match!.map((m) => m.field_id),
    [2],
    'prefix length 0 is omitted',
  );
  t.throws(() => tableEntry(synthetic, { table: 'routes', match: { dst: { lpm: { value: '10.1.2.0', prefixLen: 16 } }, vrf: { exact: 1 } } }), { message: /bits set beyond its \/16 prefix/ });
  t.throws(() => tableEntry(synthetic, { table: 'routes', match: { dst: { lpm: { value: 0, prefixLen: 33 } }, vrf: { exact: 1 } } }), { message: /prefix length 33 is not in 0\.\.32/ });
  const r = tableEntry(synthetic, { table: 'acl', match: { port: { range: { low: 1000, high: 2000 } }, vlan: { optional: 10 } }, priority: 3 });
  t.same(r.match, [
    { field_id: 1, range: { low: Buffer.from('03e8', 'hex'), high: Buffer.from('07d0', 'hex') } },
    { field_id: 2, optional: { value: Buffer.from('0a', 'hex') } },
  ]);
  const full = tableEntry(synthetic, { table: 'acl', match: { port: { range: { low: 0, high: 65535 } } }, priority: 3 });
  t.same(full.match, [], 'the full range is omitted');
  t.throws(() => tableEntry(synthetic, { table: 'acl', match: { port: { range: { low: 5, high: 4 } } }, priority: 1 }), { message: /low 5 is above high 4/ });
  t.throws(() => tableEntry(synthetic, { table: 'acl', match: {} }), { message: /needs a priority/, name: 'P4EncodingError' });
});

t.test('decoding gives back the entry by names; it encodes to the same message', async (t) => {
  const specs: TableEntrySpec[] = [
    {
      table: 'SharpIngress.rules_wild',
      match: { saddr: { ternary: { value: '10.1.0.0', mask: '255.255.0.0' } }, dport: { ternary: { value: 80, mask: 0xffff } } },
      priority: 7,
      action: { name: 'wild_rule', params: { rule_id: 4095 } },
    },
    { table: 'port_info', match: { port: { exact: 0 } }, action: { name: 'set_port', params: { slot: 0, role: 2 } } },
  ];
  for (const spec of specs) {
    const msg = tableEntry(p4info, spec);
    const decoded = decodeTableEntry(p4info, msg);
    t.equal(decoded.table, p4info.table(spec.table).name);
    t.same(tableEntry(p4info, decoded), msg, `${spec.table}: round trip`);
  }
  const d = decodeTableEntry(p4info, tableEntry(p4info, specs[0]!));
  t.same(d, {
    table: 'SharpIngress.rules_wild',
    match: { saddr: { ternary: { value: 0x0a010000n, mask: 0xffff0000n } }, dport: { ternary: { value: 80n, mask: 0xffffn } } },
    priority: 7,
    isDefaultAction: false,
    action: { name: 'SharpIngress.wild_rule', params: { rule_id: 4095n } },
  });
  t.throws(() => decodeTableEntry(p4info, { table_id: 48197704, match: [{ field_id: 9, exact: { value: Buffer.from([1]) } }] }), { message: /match field id 9/ });
});

t.test('counter entries and packet metadata', async (t) => {
  t.same(counterEntry(p4info, 'ho_pre', 5), { counter_id: 303509310, index: { index: '5' } });
  t.same(counterEntry(p4info, 'port_rx'), { counter_id: 309172696 });
  t.same(counterEntry(p4info, 'port_rx', 1, { packets: 0n, bytes: 0n }), { counter_id: 309172696, index: { index: '1' }, data: { byte_count: '0', packet_count: '0' } });
  t.throws(() => counterEntry(p4info, 'divert_stats', 1), { message: /index 1 is out of range \(size 1\)/ });
  const md = packetMetadata(p4info, 'packet_out', { out_slot: 2 });
  t.same(md, [{ metadata_id: 1, value: Buffer.from([2]) }]);
  t.throws(() => packetMetadata(p4info, 'packet_out', {}), { message: /missing field out_slot/ });
  t.throws(() => packetMetadata(p4info, 'packet_out', { out_slot: 1, slot: 2 }), { message: /no field 'slot'; fields: out_slot \(bit<16>\)/ });
  t.same(decodePacketMetadata(p4info, 'packet_in', [
    { metadata_id: 1, value: Buffer.from([0, 1]) },
    { metadata_id: 2, value: Buffer.from([5]) },
  ]), { in_slot: 1n, hid: 5n });
});

t.test('counter data: the count a counter unit does not keep reads as 0', async (t) => {
  const d = { packet_count: '2', byte_count: '212' };
  t.same(decodeCounterData(d, 'PACKETS'), { packets: 2n, bytes: 0n });
  t.same(decodeCounterData(d, 'BYTES'), { packets: 0n, bytes: 212n });
  t.same(decodeCounterData(d, 'BOTH'), { packets: 2n, bytes: 212n });
  t.same(decodeCounterData(undefined), { packets: 0n, bytes: 0n });
});
