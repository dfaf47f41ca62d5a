// The TypeScript VNF on E-State on the packet path (VNF kind 'userspace'):
// two instances, each the SHarP agent in front of its own stack, which routes
// the probes into a TUN device read by the instance's VNF process
// (src/vnf/userspace/vnf-process.ts: UserspaceVnf stamps the flow's packet
// counter into every probe and writes it back; the stack forwards it on).
// The processes' E-State nodes peer with each other; a handover moves the
// moving flows' items between them (UserspaceVnfProcessStateManager).
//
//   1. IPv4/UDP parsing and the UDP checksum after a stamp (no kernel).
//   2. Probe traffic both ways, handovers back and forth: 0 lost /
//      reordered / duplicated, stamps == sequence numbers on every probe,
//      held = released; every probe went through a VNF process; the
//      counters end at the last instance, equal to what was sent.
//   3. One handover WITHOUT the E-State move: the new instance starts its
//      counters from 0 and the sink sees stamp mismatches (what the move
//      prevents).
//   4. The barrier: the old instance's process stops reading its TUN for 1 s
//      just before a handover; with the barrier the state leaves only after
//      it processed its queue (0 mismatches), without it the counters leave
//      stale (mismatches) and its queued probes leave after the new
//      instance's (reordered).
import t from 'tap';
import { testLab } from '../helpers/lab.js';
import { wildcardRules, runHandovers, assertClean } from '../helpers/handovers.js';
import { DelayedStateMover, VnfMapStateMover } from '../../src/handover/state-mover.js';
import { StateManagerMover } from '../../src/state/mover.js';
import { inNetns, ip } from '../../src/net/iproute.js';
import { checksumsValid, udpFrame } from '../../src/net/frame.js';
import { SHARP_PROBE_LEN, SHARP_PROBE_MAGIC, sharpProbeLayout } from '../../src/generated/abi.js';
import { FLOW_PREFIX, parseFlowItemKey } from '../../src/state/flow-key.js';
import { UserspaceVnfProcessStateManager, parseIpv4, fixUdpChecksum, TUN_NAME, TUN_TABLE, type UserspaceVnfFleet } from '../../src/vnf/userspace/index.js';
import { fromJsonValue } from '../../src/state/estate/peer-process.js';
import { vnfKind } from '../../src/node/vnf-kinds.js';
import { bpfNative } from '../../src/bpf/native.js';
import { UserspaceVnfProcess, UserspaceVnfError } from '../../src/vnf/userspace/fleet.js';
import { uniqueName } from '../helpers/env.js';
import { listNetns } from '../../src/net/iproute.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { sleep } from '../../src/util/mutex.js';
import { TrafficAccounting } from '../../src/traffic/accounting.js';
import { localDeployment } from '../../src/dataplane/types.js';

const offsetOf = (name: string): number => sharpProbeLayout.fields.find((f) => f.name === name)!.offset;

t.test('an IPv4/UDP probe: its flow and payload are found, and a stamp leaves a valid UDP checksum', async (t) => {
  const payload = Buffer.alloc(SHARP_PROBE_LEN);
  payload.writeUInt32BE(SHARP_PROBE_MAGIC, offsetOf('magic'));
  const frame = udpFrame({ srcMac: '02:00:00:00:00:01', dstMac: '02:00:00:00:00:02', srcIp: '10.0.0.1', dstIp: '10.0.0.2', srcPort: 20003, dstPort: 9000, payload });
  const pkt = frame.subarray(14);
  const p = parseIpv4(pkt)!;
  t.same(p.flow, { src: '10.0.0.1', dst: '10.0.0.2', sport: 20003, dport: 9000, proto: 17 });
  t.equal(p.payloadLength, SHARP_PROBE_LEN);
  pkt.writeBigUInt64BE(12345n, p.payloadOffset + offsetOf('stamp'));
  t.notOk(checksumsValid(pkt, 0), 'the stamp breaks the checksum');
  fixUdpChecksum(pkt, p);
  t.ok(checksumsValid(pkt, 0), 'fixed');
  t.equal(parseIpv4(pkt.subarray(0, 19)), undefined, 'a truncated header is not parsed');
  const v6 = Buffer.from(pkt);
  v6[0] = 0x60;
  t.equal(parseIpv4(v6), undefined, 'IPv6 is not parsed');
});

t.test('bad input: a TUN name over the kernel limit, a VNF process in a namespace that does not exist', async (t) => {
  t.throws(() => bpfNative.tunOpen('x'.repeat(16)), { name: 'RangeError', message: /interface name must be 1 to 15 bytes/ });
  const netns = uniqueName('nons');
  await t.rejects(UserspaceVnfProcess.start({ name: 'vnfx', netns, ifaces: ['eth0', 'eth1'] }), UserspaceVnfError, 'a typed error');
  await t.rejects(UserspaceVnfProcess.start({ name: 'vnfx', netns, ifaces: ['eth0', 'eth1'] }), { message: /userspace VNF vnfx: exited \(\d+\) before it served/ });
  t.same(listNetns(netns), [], 'nothing was created');
});

/** every flow item of an instance, as key → value */
async function flowItems(fleet: UserspaceVnfFleet, name: string): Promise<Map<string, bigint>> {
  const items = (await fleet.get(name).command({ op: 'items', prefix: FLOW_PREFIX })).items ?? [];
  return new Map(items.map((i) => [i.key, fromJsonValue(i.value) as bigint]));
}

t.test('userspace instances: the E-State VNF stamps every probe through a TUN, handovers back and forth keep its counters continuous', async (t) => {
  t.ok(vnfKind('userspace').stamps, 'the kind stamps: the sinks check stamps');
  const l = await testLab(t, { vnfType: 'userspace', ringCapacity: 8192 });
  const fleet = l.userspaceVnfs!;
  t.ok(fleet, 'the lab started the instances\' VNF processes');
  const [v1, v2] = l.lab.topology.instances;
  t.equal(v1!.kind, 'userspace');
  for (const v of [v1!, v2!]) {
    t.match(ip(['link', 'show', TUN_NAME], v.netns!), /<POINTOPOINT,[^>]*UP/, `${v.name}: its VNF process's TUN is up`);
    t.match(ip(['rule', 'show'], v.netns!), new RegExp(`iif eth0 lookup ${TUN_TABLE}[\\s\\S]*iif eth1 lookup ${TUN_TABLE}`), `${v.name}: what arrives on either side is routed into the TUN`);
    t.match(inNetns(v.netns!, 'tc', ['qdisc', 'show', 'dev', TUN_NAME]), /pfifo/, `${v.name}: one FIFO in front of the TUN`);
  }
  const members = (await fleet.get('vnf2').command({ op: 'members' })).members ?? [];
  t.same(members.map((m) => m.id), ['vnf1'], 'vnf2\'s E-State node peers with vnf1\'s');
  t.not(fleet.get('vnf1').pid, fleet.get('vnf2').pid, 'one process per instance');

  const manager = new UserspaceVnfProcessStateManager(fleet);
  const rules = wildcardRules(l);
  const count = 6;
  const run = await runHandovers(l, { flows: 8, pps: 1000, rules, count, mover: new DelayedStateMover(new StateManagerMover(manager), 50), gapMs: 100 });
  await assertClean(t, run, l);
  for (const r of run.reports) t.equal(r.stampsChecked, true, 'stamps were checked');
  t.equal(manager.stats().moves, count, `${count} state moves over E-State`);
  t.ok(manager.stats().records > 0, `${manager.stats().records} flow states moved`);

  const s1 = await fleet.get('vnf1').stats();
  const s2 = await fleet.get('vnf2').stats();
  const sent = run.reports.reduce((a, r) => a + r.sent, 0);
  t.equal(s1.stamped + s2.stamped, sent, `every probe was stamped by a VNF process (vnf1 ${s1.stamped}, vnf2 ${s2.stamped})`);
  for (const [name, s] of [['vnf1', s1], ['vnf2', s2]] as const) {
    t.equal(s.written, s.read - s.barriers, `${name}: wrote back every packet it read (${s.read}, ${s.barriers} of them barriers)`);
    t.equal(s.writeErrors, 0, `${name}: no failed write`);
    t.equal(s.tunDropped, 0, `${name}: the kernel dropped nothing in front of its TUN`);
    t.ok(s.barriers >= count / 2, `${name}: passed a barrier before each state move it gave (${s.barriers})`);
  }
  const at = await flowItems(fleet, run.at);
  const other = await flowItems(fleet, run.at === 'vnf1' ? 'vnf2' : 'vnf1');
  t.equal(other.size, 0, `the instance the flows left holds none of their items`);
  let packets = 0n;
  for (const [k, v] of at) if (parseFlowItemKey(k)?.field === 'packets') packets += v;
  t.equal(packets, BigInt(sent), `${run.at}'s packet counters sum to every probe sent, both ways (${sent})`);

  // traffic has stopped: the manager's moments one by one, and a rollback after commit
  const ctx = { id: 9999, from: run.at, to: run.at === 'vnf1' ? 'vnf2' : 'vnf1', covers: () => true };
  const signal = new AbortController().signal;
  const dep = await manager.leaving(ctx, signal);
  t.equal(dep.keys.length, at.size, `leaving names every flow item of ${ctx.from} (${dep.keys.length})`);
  await manager.arriving(ctx, dep, signal);
  await manager.commit(ctx, dep, signal);
  t.equal((await flowItems(fleet, ctx.from)).size, 0, 'after commit the old instance has none of them');
  t.same(await flowItems(fleet, ctx.to), at, 'the new instance has them, values unchanged');
  await manager.rollback(ctx, dep, true);
  t.same(await flowItems(fleet, ctx.from), at, 'a rollback after commit brings them back to the old instance over E-State');
  t.equal((await flowItems(fleet, ctx.to)).size, 0, '…and removes them at the new one');
  t.comment(`sent ${run.reports.map((r) => r.sent).join(' / ')}; held per handover ${run.results.map((h) => h.counts.held).join(', ')}; durations ${run.results.map((h) => `${h.durationMs.toFixed(1)} ms`).join(', ')}`);

});

t.test('userspace instances without the E-State move: the new instance counts from 0, the sink sees stamp mismatches', async (t) => {
  const l = await testLab(t, { vnfType: 'userspace', ringCapacity: 8192 });
  // vnf-map moves nothing of a stack VNF: the flows arrive at vnf2 without their counters
  const run = await runHandovers(l, { flows: 4, pps: 500, rules: wildcardRules(l), count: 1, mover: new VnfMapStateMover(), gapMs: 200 });
  t.equal(run.results[0]!.outcome, 'completed');
  for (const r of run.reports) {
    t.equal(r.delivered, r.sent, 'every probe delivered');
    t.equal(r.lost + r.reordered + r.duplicated, 0, 'nothing lost, reordered or duplicated: only the state is wrong');
    t.ok(r.stampMismatches > 0, `${r.stampMismatches} stamp mismatches`);
  }
  const items = (await l.userspaceVnfs!.get('vnf1').command({ op: 'items', prefix: FLOW_PREFIX })).items ?? [];
  t.ok(items.length > 0, 'vnf1 kept the state it had');
});

t.test('the barrier: a process behind on its TUN queue gives its state only once it has processed every packet the drain counted', async (t) => {
  const l = await testLab(t, { vnfType: 'userspace', ringCapacity: 8192 });
  const fleet = l.userspaceVnfs!;
  const engine = new HandoverEngine(l.dp, { mover: new StateManagerMover(new UserspaceVnfProcessStateManager(fleet)) });
  const bare = new HandoverEngine(l.dp, { mover: new StateManagerMover(new UserspaceVnfProcessStateManager(fleet, { barrier: false })) });
  const fw = l.forward(4);
  const rv = l.reverse(4);
  fw.gen.start(500);
  rv.gen.start(500);
  await sleep(300);
  // vnf1 stops reading for 1 s: the probes the drain counts at its agent wait in its TUN's queue
  const rules = wildcardRules(l);
  await fleet.get('vnf1').command({ op: 'pause', ms: 1000 });
  const h1 = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1000 });
  t.equal(h1.outcome, 'completed', 'with the barrier: completed');
  await sleep(300);
  const mid = [fw.sink.report(fw.gen.sentPerFlow()), rv.sink.report(rv.gen.sentPerFlow())];
  t.same(mid.map((r) => r.stampMismatches), [0, 0], 'with the barrier: 0 stamp mismatches');
  t.same(mid.map((r) => r.reordered + r.duplicated), [0, 0], 'with the barrier: 0 reordered or duplicated');
  // the same behind vnf2, without the barrier: vnf2's counters leave before it has counted its queue
  await fleet.get('vnf2').command({ op: 'pause', ms: 1000 });
  const h2 = await bare.handover({ rules, from: 'vnf2', to: 'vnf1', expectedPps: 1000 });
  t.equal(h2.outcome, 'completed', 'without the barrier: completed (SHarP itself lost nothing)');
  await sleep(1200);
  await Promise.all([fw.gen.stop(), rv.gen.stop()]);
  await Promise.all([fw.sink.drain(fw.gen.sent), rv.sink.drain(rv.gen.sent)]);
  const end = [fw.sink.report(fw.gen.sentPerFlow()), rv.sink.report(rv.gen.sentPerFlow())];
  for (const r of end) {
    t.equal(r.delivered, r.sent, 'every probe delivered');
    t.equal(r.lost + r.duplicated, 0, 'nothing lost or duplicated');
    t.ok(r.stampMismatches > 0, `without the barrier: ${r.stampMismatches} stamp mismatches (stale counters moved)`);
    // the probes queued at vnf2 leave it after vnf1 has forwarded later ones: the barrier keeps order too
    t.comment(`without the barrier: ${r.reordered} reordered`);
  }
});

t.test('a VNF process that falls behind: what its TUN cannot queue is counted (vnfDropped), so sent = delivered + reported', async (t) => {
  const l = await testLab(t, { vnfType: 'userspace', ringCapacity: 8192 });
  const fleet = l.userspaceVnfs!;
  const accounting = new TrafficAccounting(localDeployment(l.dp), l.lab.topology, [{ name: 'client→server', from: l.lab.client.name, to: l.lab.server.name }], { extraDrops: () => fleet.tunDrops() });
  const fw = l.forward(4);
  await accounting.start();
  // a short TUN queue (the lab's is TUN_QUEUE_LEN, sized for a release's burst): what a pause overfills is small and quick to send
  const queue = 1000;
  ip(['link', 'set', TUN_NAME, 'txqueuelen', String(queue)], l.lab.topology.instances.find((i) => i.name === 'vnf1')!.netns!);
  fw.gen.start(5000);
  await sleep(100);
  // vnf1 stops reading for 1 s: ~5000 probes arrive, more than its TUN queues
  await fleet.get('vnf1').command({ op: 'pause', ms: 1000 });
  await sleep(1000);
  await fw.gen.stop();
  // the process works through its queue at its own pace
  await fw.sink.drain(fw.gen.sent, 2000);
  const r = fw.sink.report(fw.gen.sentPerFlow());
  const a = await accounting.read([]);
  const tun = a.unattributed.drops.filter((x) => x.where === 'vnf1/tun' && x.reason === 'vnfDropped');
  t.ok(r.sent > queue, `${r.sent} probes sent, more than the TUN queues (${queue})`);
  t.ok(r.lost > 0, `${r.lost} of ${r.sent} probes lost while vnf1 did not read`);
  t.equal(tun.length, 1, "counted at vnf1's TUN");
  t.equal(a.unattributed.reported + a.directions.get('client→server')!.reported, r.lost, `sent ${r.sent} = delivered ${r.delivered} + reported ${r.lost}: every lost probe counted with its reason`);
  t.equal(r.reordered + r.duplicated, 0, 'nothing reordered or duplicated');
});
