// The embedded .proto definitions against bytes derived by hand from the
// P4Runtime spec's field numbers, and the per-update errors of a failed Write.
import t from 'tap';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { P4Info, P4RuntimeWriteError, decodeMessage, decodeWriteErrorDetails, encodeMessage, tableEntry, uint128, fromUint128 } from '../../src/p4runtime/index.js';
import { repoRoot } from '../helpers/env.js';

const p4info = P4Info.load(path.join(repoRoot, 'p4/build/sharp.p4info.json'));

// protobuf wire format, by hand
function varint(n: number | bigint): number[] {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const tag = (field: number, wire: number): number[] => varint((field << 3) | wire);
const vint = (field: number, n: number | bigint): number[] => [...tag(field, 0), ...varint(n)];
const lenDelim = (field: number, body: number[] | Buffer): number[] => [...tag(field, 2), ...varint(body.length), ...body];
const str = (s: string): Buffer => Buffer.from(s, 'utf8');
const hex = (b: number[] | Buffer): string => Buffer.from(b).toString('hex');

t.test('StreamMessageRequest.arbitration: MasterArbitrationUpdate(device_id 1, election_id low 1)', async (t) => {
  // MasterArbitrationUpdate: device_id = 1 (varint), election_id = 3 (Uint128: high = 1, low = 2)
  const mau = [0x08, 0x01, 0x1a, 0x02, 0x10, 0x01];
  t.equal(hex(encodeMessage('p4.v1.MasterArbitrationUpdate', { device_id: '1', election_id: uint128(1n) })), hex(mau));
  // StreamMessageRequest: arbitration = 1
  t.equal(hex(encodeMessage('p4.v1.StreamMessageRequest', { arbitration: { device_id: '1', election_id: uint128(1n) } })), hex([0x0a, mau.length, ...mau]));
  const big = (5n << 64n) | 7n;
  t.equal(hex(encodeMessage('p4.v1.Uint128', uint128(big))), hex([...vint(1, 5), ...vint(2, 7)]), 'Uint128 high = 1, low = 2');
  t.equal(fromUint128(uint128(big)), big);
});

t.test('WriteRequest with a TableEntry and a CounterEntry', async (t) => {
  const entry = tableEntry(p4info, { table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 300 } } });
  // TableEntry: table_id = 1, match = 2 (FieldMatch: field_id = 1, exact = 2 (value = 1)), action = 3 (TableAction: action = 1 (Action: action_id = 1, params = 4 (param_id = 2, value = 3)))
  const te = [
    ...vint(1, 36505044),
    ...lenDelim(2, [...vint(1, 1), ...lenDelim(2, lenDelim(1, [0x01]))]),
    ...lenDelim(3, lenDelim(1, [...vint(1, 24588774), ...lenDelim(4, [...vint(2, 1), ...lenDelim(3, [0x01, 0x2c])])])),
  ];
  t.equal(hex(encodeMessage('p4.v1.TableEntry', entry)), hex(te));
  // Entity: table_entry = 2, counter_entry = 7; Update: type = 1, entity = 2; CounterEntry: counter_id = 1, index = 2 (Index: index = 1), data = 3 (CounterData: byte_count = 1, packet_count = 2)
  const ce = [...vint(1, 303509310), ...lenDelim(2, vint(1, 5)), ...lenDelim(3, [...vint(1, 64), ...vint(2, 1)])];
  // WriteRequest: device_id = 1, election_id = 3, updates = 4, atomicity = 5 (CONTINUE_ON_ERROR = 0 is not written)
  const wr = [
    ...vint(1, 1),
    ...lenDelim(3, vint(2, 10)),
    ...lenDelim(4, [...vint(1, 1), ...lenDelim(2, lenDelim(2, te))]),
    ...lenDelim(4, [...vint(1, 2), ...lenDelim(2, lenDelim(7, ce))]),
  ];
  const got = encodeMessage('p4.v1.WriteRequest', {
    device_id: '1',
    election_id: uint128(10n),
    atomicity: 'CONTINUE_ON_ERROR',
    updates: [
      { type: 'INSERT', entity: { table_entry: entry } },
      { type: 'MODIFY', entity: { counter_entry: { counter_id: 303509310, index: { index: '5' }, data: { byte_count: '64', packet_count: '1' } } } },
    ],
  });
  t.equal(hex(got), hex(wr));
  // a ternary match with priority: ternary = 3 (value = 1, mask = 2), priority = 4
  const wild = tableEntry(p4info, { table: 'rules_wild', match: { proto: { ternary: { value: 6, mask: 0xff } } }, priority: 2, action: { name: 'wild_rule', params: { rule_id: 1 } } });
  const wte = [...vint(1, 45343131), ...lenDelim(2, [...vint(1, 3), ...lenDelim(3, [...lenDelim(1, [6]), ...lenDelim(2, [0xff])])]), ...lenDelim(3, lenDelim(1, [...vint(1, 31419607), ...lenDelim(4, [...vint(2, 1), ...lenDelim(3, [1])])])), ...vint(4, 2)];
  t.equal(hex(encodeMessage('p4.v1.TableEntry', wild)), hex(wte));
});

t.test('PacketOut / PacketIn and SetForwardingPipelineConfigRequest', async (t) => {
  // StreamMessageRequest: packet = 2 (PacketOut: payload = 1, metadata = 2 (PacketMetadata: metadata_id = 1, value = 2))
  const po = [...lenDelim(1, [0xaa, 0xbb]), ...lenDelim(2, [...vint(1, 1), ...lenDelim(2, [0x02])])];
  t.equal(hex(encodeMessage('p4.v1.StreamMessageRequest', { packet: { payload: Buffer.from([0xaa, 0xbb]), metadata: [{ metadata_id: 1, value: Buffer.from([2]) }] } })), hex(lenDelim(2, po)));
  // StreamMessageResponse: packet = 2 (PacketIn), error = 6 (StreamError: canonical_code = 1, message = 2)
  const pin = decodeMessage<{ packet?: { payload: Buffer; metadata: { metadata_id: number; value: Buffer }[] } }>('p4.v1.StreamMessageResponse', Buffer.from(lenDelim(2, po)));
  t.same(pin.packet, { payload: Buffer.from([0xaa, 0xbb]), metadata: [{ metadata_id: 1, value: Buffer.from([2]) }] });
  const err = decodeMessage<{ error?: { canonical_code: number; message: string } }>('p4.v1.StreamMessageResponse', Buffer.from(lenDelim(6, [...vint(1, 3), ...lenDelim(2, str('bad'))])));
  t.same(err.error, { canonical_code: 3, message: 'bad' });
  // SetForwardingPipelineConfigRequest: device_id = 1, election_id = 3, action = 4 (VERIFY_AND_COMMIT = 3), config = 5 (ForwardingPipelineConfig: p4info = 1, p4_device_config = 2, cookie = 3)
  const sfp = encodeMessage('p4.v1.SetForwardingPipelineConfigRequest', {
    device_id: '1',
    election_id: uint128(1n),
    action: 'VERIFY_AND_COMMIT',
    config: { p4info: { pkg_info: { arch: 'v1model' } }, p4_device_config: Buffer.from('{}'), cookie: { cookie: '9' } },
  });
  const cfg = [...lenDelim(1, lenDelim(1, lenDelim(5, str('v1model')))), ...lenDelim(2, str('{}')), ...lenDelim(3, vint(1, 9))];
  t.equal(hex(sfp), hex([...vint(1, 1), ...lenDelim(3, vint(2, 1)), ...vint(4, 3), ...lenDelim(5, cfg)]));
});

t.test('grpc-status-details-bin: one p4.v1.Error per update, the failed ones become P4RuntimeWriteError.updates', async (t) => {
  // p4.v1.Error: canonical_code = 1, message = 2, space = 3, code = 4; google.protobuf.Any: type_url = 1, value = 2; google.rpc.Status: code = 1, message = 2, details = 3
  const anyError = (body: number[]): number[] => lenDelim(3, [...lenDelim(1, str('type.googleapis.com/p4.v1.Error')), ...lenDelim(2, body)]);
  const statusBin = Buffer.from([
    ...vint(1, status.UNKNOWN),
    ...lenDelim(2, str('Write failure.')),
    ...anyError([]), // update 0: OK (all fields default)
    ...anyError([...vint(1, status.ALREADY_EXISTS), ...lenDelim(2, str('Match entry exists')), ...lenDelim(3, str('ALL-sswitch-p4org')), ...vint(4, 7)]),
    ...anyError([...vint(1, status.OK)]),
    ...anyError([...vint(1, status.NOT_FOUND), ...lenDelim(2, str('No such entry'))]),
  ]);
  const d = decodeWriteErrorDetails(statusBin);
  t.ok(d);
  t.equal(d!.total, 4);
  t.equal(d!.code, status.UNKNOWN);
  t.same(d!.updates, [
    { index: 1, code: status.ALREADY_EXISTS, message: 'Match entry exists', space: 'ALL-sswitch-p4org', targetCode: 7 },
    { index: 3, code: status.NOT_FOUND, message: 'No such entry' },
  ]);
  const e = new P4RuntimeWriteError(status.UNKNOWN, 'Write failure.', d!.updates, d!.total);
  t.equal(e.name, 'P4RuntimeWriteError');
  t.equal(e.code, status.UNKNOWN);
  t.equal(e.message, 'P4Runtime Write: 2 of 4 updates failed: #1 ALREADY_EXISTS: Match entry exists; #3 NOT_FOUND: No such entry');
  t.equal(decodeWriteErrorDetails(Buffer.from([...vint(1, 2), ...lenDelim(2, str('x'))])), undefined, 'no p4.v1.Error details: undefined');
});
