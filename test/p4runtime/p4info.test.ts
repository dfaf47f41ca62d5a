// P4Info: lookups by full name, alias and id; unknown names; the message for
// SetForwardingPipelineConfig keeps every field of sharp.p4info.json.
import t from 'tap';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { P4Info, P4InfoError, decodeMessage, encodeMessage } from '../../src/p4runtime/index.js';
import { repoRoot } from '../helpers/env.js';

const file = path.join(repoRoot, 'p4/build/sharp.p4info.json');
const p4info = P4Info.load(file);

t.test('tables by full name, alias and id', async (t) => {
  const byName = p4info.table('SharpIngress.rules_exact');
  t.equal(byName.id, 48197704);
  t.equal(p4info.table('rules_exact'), byName, 'alias gives the same table');
  t.equal(p4info.tableById(48197704), byName);
  t.same(
    byName.matchFields.map((f) => [f.id, f.name, f.bitwidth, f.matchType]),
    [
      [1, 'saddr', 32, 'EXACT'],
      [2, 'daddr', 32, 'EXACT'],
      [3, 'proto', 8, 'EXACT'],
      [4, 'sport', 16, 'EXACT'],
      [5, 'dport', 16, 'EXACT'],
    ],
  );
  t.equal(byName.size, 4096, 'size "4096" read as a number');
  t.equal(byName.constDefaultActionId, 21257015);
  t.same(byName.actionRefs, [
    { id: 24576454, scope: 'TABLE_AND_DEFAULT' },
    { id: 21257015, scope: 'DEFAULT_ONLY' },
  ]);
  const wild = p4info.table('rules_wild');
  t.same(
    wild.matchFields.map((f) => f.matchType),
    ['TERNARY', 'TERNARY', 'TERNARY', 'TERNARY', 'TERNARY', 'TERNARY'],
  );
  t.equal(p4info.table('port_info').matchFields[0]!.bitwidth, 9);
});

t.test('actions, counters and packet metadata', async (t) => {
  const a = p4info.action('exact_rule');
  t.equal(a.name, 'SharpIngress.exact_rule');
  t.same(
    a.params.map((p) => [p.id, p.name, p.bitwidth]),
    [
      [1, 'rule_id', 32],
      [2, 'out_slot', 16],
      [3, 'hid', 14],
      [4, 'phase', 2],
    ],
  );
  t.equal(p4info.actionById(24588774).alias, 'set_tx');
  t.equal(p4info.action('NoAction').params.length, 0);
  const c = p4info.counter('SharpEgress.ho_pre');
  t.equal(c, p4info.counter('ho_pre'));
  t.equal(c.size, 16384);
  t.equal(c.unit, 'PACKETS');
  t.equal(p4info.counter('port_rx').unit, 'BOTH');
  t.equal(p4info.counterById(303584443).name, 'SharpEgress.divert_stats');
  const pin = p4info.controllerPacketMetadata('packet_in');
  t.same(
    pin.metadata.map((m) => [m.id, m.name, m.bitwidth]),
    [
      [1, 'in_slot', 16],
      [2, 'hid', 16],
    ],
  );
  t.same(
    p4info.controllerPacketMetadata('packet_out').metadata.map((m) => m.name),
    ['out_slot'],
  );
});

t.test('unknown names and ids throw P4InfoError naming the kind, the name and the known names', async (t) => {
  t.throws(() => p4info.table('rules_exactt'), P4InfoError);
  try {
    p4info.table('rules_exactt');
  } catch (e) {
    t.ok(e instanceof P4InfoError);
    const m = (e as Error).message;
    t.match(m, /no table 'rules_exactt'/);
    t.match(m, /SharpIngress\.rules_exact \(rules_exact\)/, 'lists the known tables');
    t.match(m, /SharpIngress\.tx_port/);
    t.equal((e as Error).name, 'P4InfoError');
  }
  t.throws(() => p4info.action('forward'), { name: 'P4InfoError', message: /no action 'forward'.*set_tx/ });
  t.throws(() => p4info.counter('port_rxx'), { message: /no counter 'port_rxx'.*SharpIngress\.port_rx/ });
  t.throws(() => p4info.controllerPacketMetadata('packet_io'), { message: /no controller packet metadata 'packet_io'.*packet_in.*packet_out/ });
  t.throws(() => p4info.tableById(1), { message: /no table with id 1/ });
});

t.test('bad input', async (t) => {
  t.throws(() => P4Info.fromJson([]), P4InfoError);
  t.throws(() => P4Info.fromJson({ tables: 'x' }), { name: 'P4InfoError', message: /not a valid P4Info/ });
  t.throws(() => P4Info.load(path.join(repoRoot, 'p4/build/missing.json')), { name: 'P4InfoError', message: /cannot read/ });
  t.throws(() => P4Info.fromJson({ tables: [{ preamble: { id: 1, name: 't' }, actionRefs: [{ id: 9 }] }] }), { message: /refers to action id 9/ });
});

t.test('toMessage keeps every field of the P4Info (nothing is dropped when it is sent)', async (t) => {
  t.same(p4info.unknownFields, [], 'every field of sharp.p4info.json is declared');
  const json = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  // protobuf JSON mapping of what we would send, built by hand from the decoded message
  const camel = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(camel);
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase()), camel(x)]));
    return v;
  };
  const wire = encodeMessage('p4.config.v1.P4Info', p4info.toMessage());
  const back = decodeMessage<Record<string, unknown>>('p4.config.v1.P4Info', wire);
  t.same(camel(back), json, 'decode(encode(P4Info)) is the JSON p4c wrote');
  const other = P4Info.fromJson({ tables: [{ preamble: { id: 1, name: 't' }, fancyNewField: 3 }] });
  t.same(other.unknownFields, ['tables[0].fancy_new_field'], 'fields this client does not know are reported');
});
