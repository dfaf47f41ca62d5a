// The P4Runtime client against a real BMv2 simple_switch_grpc running
// p4/sharp.p4: pipeline, entries, arbitration, counters and packet I/O with
// real frames. Skips (with the reason) when simple_switch_grpc is not on PATH.
import t, { type Test } from 'tap';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { P4Info, P4RuntimeClient, P4RuntimeError, P4RuntimeNotPrimaryError, P4RuntimeWriteError, type PacketIn, type PrimacyLost, type TableEntrySpec } from '../../src/p4runtime/index.js';
import { udpFrame } from '../../src/net/frame.js';
import { bmv2Skip, startBmv2, type Bmv2 } from '../helpers/bmv2.js';
import { repoRoot } from '../helpers/env.js';

const p4info = P4Info.load(path.join(repoRoot, 'p4/build/sharp.p4info.json'));
const deviceConfig = readFileSync(path.join(repoRoot, 'p4/build/sharp.json'));
const skip = bmv2Skip;
if (skip) t.comment(`skipping BMv2 tests: ${skip}`);

const SHIM_ETHERTYPE = 0x821c;
const PHASE_PRE = 1;
const PHASE_DIVERT = 3;
const HOST = 1;
const VNF = 2;

async function client(t: Test, sw: Bmv2, electionId = 1n): Promise<P4RuntimeClient> {
  const c = await P4RuntimeClient.connect({ address: sw.address, deviceId: sw.deviceId, electionId, timeoutMs: 10_000, p4info });
  t.teardown(() => c.close());
  return c;
}

/** A switch with sharp.p4 loaded and a primary client. */
async function loaded(t: Test): Promise<{ sw: Bmv2; c: P4RuntimeClient }> {
  const sw = await startBmv2(t, { ports: 2 });
  const c = await client(t, sw, 10n);
  await c.setPipeline(p4info, deviceConfig);
  return { sw, c };
}

/** port 1 = slot 1 (host), port 2 = slot 2 (VNF), and back. */
async function wirePorts(c: P4RuntimeClient): Promise<void> {
  await c.write([
    { type: 'INSERT', tableEntry: { table: 'port_info', match: { port: { exact: 1 } }, action: { name: 'set_port', params: { slot: 1, role: HOST } } } },
    { type: 'INSERT', tableEntry: { table: 'port_info', match: { port: { exact: 2 } }, action: { name: 'set_port', params: { slot: 2, role: VNF } } } },
    { type: 'INSERT', tableEntry: { table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } } },
    { type: 'INSERT', tableEntry: { table: 'tx_port', match: { slot: { exact: 2 } }, action: { name: 'set_tx', params: { port: 2 } } } },
  ]);
}

function frame(sw: Bmv2, src: string, sport = 1000, dport = 2000, size = 64): Buffer {
  return udpFrame({ srcMac: sw.ports[0]!.hostMac, dstMac: sw.ports[1]!.hostMac, srcIp: src, dstIp: '10.0.0.2', srcPort: sport, dstPort: dport, payload: Buffer.alloc(size, 0xab) });
}

const exact = (src: string, params: { rule_id: number; out_slot: number; hid: number; phase: number }): TableEntrySpec => ({
  table: 'rules_exact',
  match: { saddr: { exact: src }, daddr: { exact: '10.0.0.2' }, proto: { exact: 17 }, sport: { exact: 1000 }, dport: { exact: 2000 } },
  action: { name: 'exact_rule', params },
});

t.test('pipeline: sharp.json and its P4Info load; the switch reports the P4Info back', { skip }, async (t) => {
  const { c } = await loaded(t);
  t.equal(await c.capabilities(), '1.3.0', 'P4Runtime API version');
  const back = await c.getPipelineP4Info();
  t.ok(back);
  t.same(
    back!.tables.all.map((x) => x.name),
    p4info.tables.all.map((x) => x.name),
  );
  t.same(back!.toMessage(), p4info.toMessage(), 'the P4Info the switch holds is the one we sent');
});

t.test('entries: insert, read, modify and delete in every table', { skip }, async (t) => {
  const { c } = await loaded(t);
  await wirePorts(c);
  t.same(
    (await c.readEntries('port_info')).map((e) => [e.match, e.action]),
    [
      [{ port: { exact: 1n } }, { name: 'SharpIngress.set_port', params: { slot: 1n, role: 1n } }],
      [{ port: { exact: 2n } }, { name: 'SharpIngress.set_port', params: { slot: 2n, role: 2n } }],
    ],
  );
  t.equal((await c.readEntries('SharpIngress.tx_port')).length, 2);

  const ex = exact('10.0.0.1', { rule_id: 1, out_slot: 2, hid: 0, phase: 0 });
  await c.insertEntry(ex);
  const [readEx] = await c.readEntries('rules_exact');
  t.same(readEx, {
    table: 'SharpIngress.rules_exact',
    match: { saddr: { exact: 0x0a000001n }, daddr: { exact: 0x0a000002n }, proto: { exact: 17n }, sport: { exact: 1000n }, dport: { exact: 2000n } },
    priority: 0,
    isDefaultAction: false,
    action: { name: 'SharpIngress.exact_rule', params: { rule_id: 1n, out_slot: 2n, hid: 0n, phase: 0n } },
  });
  await c.modifyEntry(exact('10.0.0.1', { rule_id: 1, out_slot: 1, hid: 5, phase: PHASE_PRE }));
  t.same((await c.readEntries('rules_exact'))[0]!.action!.params, { rule_id: 1n, out_slot: 1n, hid: 5n, phase: 1n }, 'modified');

  const wild: TableEntrySpec = {
    table: 'rules_wild',
    match: { saddr: { ternary: { value: '10.1.0.0', mask: '255.255.0.0' } }, proto: { ternary: { value: 17, mask: 0xff } }, in_slot: { ternary: { value: 0, mask: 0 } } },
    priority: 10,
    action: { name: 'wild_rule', params: { rule_id: 100 } },
  };
  await c.insertEntry(wild);
  await c.insertEntry({ table: 'rule_actions', match: { rule_id: { exact: 100 } }, action: { name: 'rule_action', params: { out_slot: 2, hid: 0, phase: 0 } } });
  const [readWild] = await c.readEntries('rules_wild');
  t.same(readWild, {
    table: 'SharpIngress.rules_wild',
    match: { saddr: { ternary: { value: 0x0a010000n, mask: 0xffff0000n } }, proto: { ternary: { value: 17n, mask: 0xffn } } },
    priority: 10,
    isDefaultAction: false,
    action: { name: 'SharpIngress.wild_rule', params: { rule_id: 100n } },
  }, 'the switch returns the same priority and omits the don\'t-care fields (read-write symmetry)');
  await c.modifyEntry({ table: 'rule_actions', match: { rule_id: { exact: 100 } }, action: { name: 'rule_action', params: { out_slot: 1, hid: 9, phase: PHASE_PRE } } });
  t.same((await c.readEntries('rule_actions'))[0]!.action!.params, { out_slot: 1n, hid: 9n, phase: 1n });

  // a decoded entry can be given back as it is
  await c.deleteEntry(readWild!);
  t.same(await c.readEntries('rules_wild'), [], 'deleted by the entry read back');
  await c.deleteEntry({ table: 'rules_exact', match: ex.match! });
  await c.deleteEntry({ table: 'rule_actions', match: { rule_id: { exact: 100 } } });
  t.same(await c.readEntries('rules_exact'), []);
  t.same(await c.readEntries('rule_actions'), []);
});

t.test('a failed update in a batch: P4RuntimeWriteError lists it by index, the others are applied', { skip }, async (t) => {
  const { c } = await loaded(t);
  await c.insertEntry({ table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } });
  const err = await c
    .write([
      { type: 'INSERT', tableEntry: { table: 'tx_port', match: { slot: { exact: 2 } }, action: { name: 'set_tx', params: { port: 2 } } } },
      { type: 'INSERT', tableEntry: { table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } } },
      { type: 'DELETE', tableEntry: { table: 'tx_port', match: { slot: { exact: 9 } } } },
    ])
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  t.ok(err instanceof P4RuntimeWriteError, 'P4RuntimeWriteError');
  const we = err as P4RuntimeWriteError;
  t.equal(we.total, 3);
  t.same(
    we.updates.map((u) => [u.index, u.code]),
    [
      [1, status.ALREADY_EXISTS],
      [2, status.NOT_FOUND],
    ],
  );
  t.match(we.message, /2 of 3 updates failed: #1 ALREADY_EXISTS: .*; #2 NOT_FOUND: /);
  t.ok(we.cause, 'carries the gRPC error');
  t.same(
    (await c.readEntries('tx_port')).map((e) => e.match['slot']),
    [{ exact: 1n }, { exact: 2n }],
    'update #0 was applied',
  );
});

t.test('arbitration: a lower election id is not primary; a higher one takes over', { skip }, async (t) => {
  const { sw, c } = await loaded(t);
  t.ok(c.isPrimary);
  const low = await P4RuntimeClient.connect({ address: sw.address, deviceId: sw.deviceId, electionId: 5n, p4info }).then(
    (x) => {
      x.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  t.ok(low instanceof P4RuntimeNotPrimaryError, 'election id 5 < 10: P4RuntimeNotPrimaryError');
  t.equal((low as P4RuntimeNotPrimaryError).primaryElectionId, 10n, 'names the primary');
  t.equal((low as P4RuntimeNotPrimaryError).code, status.ALREADY_EXISTS);

  const same = await P4RuntimeClient.connect({ address: sw.address, deviceId: sw.deviceId, electionId: 10n, p4info }).then(
    (x) => {
      x.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  t.ok(same instanceof P4RuntimeError && same.code === status.INVALID_ARGUMENT, 'the same election id as a live client: INVALID_ARGUMENT');

  const lost = new Promise<PrimacyLost>((resolve) => c.once('primacy-lost', resolve));
  const high = await client(t, sw, 20n);
  t.ok(high.isPrimary, 'election id 20 is primary');
  const l = await lost;
  t.equal(l.primaryElectionId, 20n, "the old primary hears 'primacy-lost' with the new primary's id");
  t.equal(l.code, status.ALREADY_EXISTS);
  t.notOk(c.isPrimary);
  const started = Date.now();
  await t.rejects(c.insertEntry({ table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } }), P4RuntimeNotPrimaryError, 'writes of the old primary fail fast');
  t.ok(Date.now() - started < 100, 'without a round trip');
  t.throws(() => c.sendPacketOut(Buffer.alloc(60), { out_slot: 1 }), P4RuntimeNotPrimaryError);
  await high.insertEntry({ table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } });
  t.equal((await c.readEntries('tx_port')).length, 1, 'a backup can still read');

  const gained = new Promise<void>((resolve) => c.once('primacy-gained', resolve));
  high.close();
  await gained;
  t.comment('BMv2 (PI) makes the highest live election id primary again when the primary leaves');
  t.ok(c.isPrimary);
});

t.test('frames through the switch: counters, PRE shim, wildcard priority, counter reset', { skip }, async (t) => {
  const { sw, c } = await loaded(t);
  await wirePorts(c);
  await c.insertEntry(exact('10.0.0.1', { rule_id: 3, out_slot: 2, hid: 0, phase: 0 }));
  const f = frame(sw, '10.0.0.1');

  let got = await sw.exchange({ send: [{ ifname: 'h1', frames: [f, f, f] }], capture: ['h2'], expect: 3 });
  t.equal(got['h2']!.length, 3, 'three frames out of port 2');
  t.same(got['h2']![0], f, 'unchanged');
  t.same(await c.readCounter('port_rx', 1), { packets: 3n, bytes: BigInt(3 * f.length) }, 'port_rx[slot 1]');
  t.same(await c.readCounter('port_tx', 2), { packets: 3n, bytes: BigInt(3 * f.length) }, 'port_tx[slot 2]');
  t.same(await c.readCounter('rule_stats', 3), { packets: 3n, bytes: BigInt(3 * f.length) }, 'rule_stats[rule 3]');

  // PRE with hid 5: the frame leaves with the shim, ho_pre[5] counts it
  await c.modifyEntry(exact('10.0.0.1', { rule_id: 3, out_slot: 2, hid: 5, phase: PHASE_PRE }));
  got = await sw.exchange({ send: [{ ifname: 'h1', frames: [f, f] }], capture: ['h2'], expect: 2 });
  t.equal(got['h2']!.length, 2);
  const out = got['h2']![0]!;
  t.equal(out.readUInt16BE(12), SHIM_ETHERTYPE, 'shim EtherType 0x821C');
  t.equal(out.readUInt16BE(14), (PHASE_PRE << 14) | 5, 'tag = phase << 14 | hid');
  t.equal(out.readUInt16BE(16), 0x0800, 'inner EtherType IPv4');
  t.same(out.subarray(18), f.subarray(14), 'the IPv4 packet follows unchanged');
  t.same(out.subarray(0, 12), f.subarray(0, 12), 'MAC addresses unchanged');
  t.same(await c.readCounter('ho_pre', 5), { packets: 2n, bytes: 0n }, 'ho_pre[5] (a packets counter: bytes reported as 0)');
  t.same(await c.readCounter('ho_post', 5), { packets: 0n, bytes: 0n });

  // no rule: dropped and counted
  got = await sw.exchange({ send: [{ ifname: 'h1', frames: [frame(sw, '10.9.9.9')] }], capture: ['h2'], expect: 0, lingerMs: 500 });
  t.equal(got['h2']!.length, 0, 'no rule: nothing out');
  t.equal((await c.readCounter('drop_no_rule', 1)).packets, 1n, 'drop_no_rule[slot 1]');

  // overlapping wildcard rules: the higher P4Runtime priority wins
  await c.write([
    { type: 'INSERT', tableEntry: { table: 'rules_wild', match: { saddr: { ternary: { value: '10.1.0.0', mask: '255.255.0.0' } } }, priority: 10, action: { name: 'wild_rule', params: { rule_id: 10 } } } },
    { type: 'INSERT', tableEntry: { table: 'rules_wild', match: { saddr: { ternary: { value: '10.1.0.5', mask: '255.255.255.255' } } }, priority: 20, action: { name: 'wild_rule', params: { rule_id: 20 } } } },
    { type: 'INSERT', tableEntry: { table: 'rule_actions', match: { rule_id: { exact: 10 } }, action: { name: 'rule_action', params: { out_slot: 2, hid: 0, phase: 0 } } } },
    { type: 'INSERT', tableEntry: { table: 'rule_actions', match: { rule_id: { exact: 20 } }, action: { name: 'rule_action', params: { out_slot: 2, hid: 0, phase: 0 } } } },
  ]);
  got = await sw.exchange({ send: [{ ifname: 'h1', frames: [frame(sw, '10.1.0.5'), frame(sw, '10.1.0.6')] }], capture: ['h2'], expect: 2 });
  t.equal(got['h2']!.length, 2);
  t.equal((await c.readCounter('rule_stats', 20)).packets, 1n, '10.1.0.5 matched the priority-20 rule');
  t.equal((await c.readCounter('rule_stats', 10)).packets, 1n, '10.1.0.6 matched the priority-10 rule');

  const all = await c.readCounters('port_rx');
  t.equal(all.size, 64, 'every index of port_rx');
  t.equal(all.get(1)!.packets, 8n);
  t.equal(all.get(2)!.packets, 0n);

  // reset with a counter MODIFY
  await c.writeCounter('port_rx', 1, { packets: 0n, bytes: 0n });
  await c.writeCounter('ho_pre', 5, { packets: 0n, bytes: 0n });
  t.same(await c.readCounter('port_rx', 1), { packets: 0n, bytes: 0n }, 'port_rx[1] reset');
  t.same(await c.readCounter('ho_pre', 5), { packets: 0n, bytes: 0n }, 'ho_pre[5] reset');
  await c.writeCounter('port_tx', 2, { packets: 7n, bytes: 700n });
  t.same(await c.readCounter('port_tx', 2), { packets: 7n, bytes: 700n }, 'any value can be written');
  await sw.exchange({ send: [{ ifname: 'h1', frames: [f] }], capture: ['h2'], expect: 1 });
  t.same(await c.readCounter('port_rx', 1), { packets: 1n, bytes: BigInt(f.length) }, 'counting goes on from the written value');
  t.same(await c.readCounter('port_tx', 2), { packets: 8n, bytes: BigInt(700 + f.length) });
});

t.test('packet-in (DIVERT) with its metadata, and packet-out to a slot', { skip }, async (t) => {
  const { sw, c } = await loaded(t);
  await wirePorts(c);
  await c.insertEntry(exact('10.0.0.1', { rule_id: 4, out_slot: 2, hid: 7, phase: PHASE_DIVERT }));
  const f = frame(sw, '10.0.0.1', 1000, 2000, 100);
  const packetIn = new Promise<PacketIn>((resolve) => c.once('packet-in', resolve));
  const got = await sw.exchange({ send: [{ ifname: 'h1', frames: [f] }], capture: ['h2'], expect: 0, lingerMs: 300 });
  t.equal(got['h2']!.length, 0, 'a DIVERT frame does not go out of a port');
  const p = await packetIn;
  t.same(p.payload, f, 'the controller gets the frame as it arrived');
  t.same(p.metadata, { in_slot: 1n, hid: 7n }, 'packet_in metadata by name');
  t.same(await c.readCounter('divert_stats', 0), { packets: 1n, bytes: BigInt(f.length) });

  const out = frame(sw, '10.0.0.77', 5, 6, 40);
  const seen = await sw.exchange({ capture: ['h1', 'h2'], expect: 1, onReady: () => c.sendPacketOut(out, { out_slot: 2 }) });
  t.equal(seen['h2']!.length, 1, 'packet-out with out_slot 2 leaves port 2');
  t.same(seen['h2']![0], out, 'as it was sent');
  t.equal(seen['h1']!.length, 0, 'and no other port');
  t.throws(() => c.sendPacketOut(out, { slot: 2 }), { name: 'P4EncodingError', message: /no field 'slot'/ });
});
