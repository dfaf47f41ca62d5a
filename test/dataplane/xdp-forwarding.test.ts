// Real traffic through switch → agent → VNF → switch in both directions,
// inside network namespaces.
import t from 'tap';
import { testLab } from '../helpers/lab.js';
import { Phase } from '../../src/dataplane/types.js';
import { BpfCollection, xdpMd, ifindexOf } from '../../src/bpf/index.js';
import { udpFrame } from '../../src/net/frame.js';
import { testObject } from '../helpers/env.js';

t.test('probes cross client → s1 → vnf1 → s2 → server and back, stamped by the VNF', async (t) => {
  const { dp, forward, reverse } = await testLab(t);
  const fw = forward(4);
  const rv = reverse(4);
  await Promise.all([fw.gen.send(2000), rv.gen.send(2000)]);
  await Promise.all([fw.sink.drain(2000), rv.sink.drain(2000)]);
  for (const [name, p] of [['forward', fw], ['reverse', rv]] as const) {
    const r = p.sink.report(p.gen.sentPerFlow());
    t.equal(r.sent, 2000, `${name}: sent`);
    t.equal(r.delivered, 2000, `${name}: every probe delivered`);
    t.equal(r.lost + r.reordered + r.duplicated, 0, `${name}: nothing lost, reordered or duplicated`);
    t.equal(r.stampMismatches, 0, `${name}: the VNF's per-flow counter equals the sequence number on every probe`);
  }
  const s1 = await dp.portCounters('s1');
  t.equal(s1.find((p) => p.port === 's1-client')!.packets, 2000n, 's1 received exactly the client probes on its host port');
  t.equal(s1.find((p) => p.port === 's1-vnf1')!.txPackets, 2000n, 'and sent them to vnf1');
  const toVnf1 = dp.rules().find((r) => r.switch === 's1' && r.action.outPort === 's1-vnf1')!;
  t.same(await dp.ruleCounters(toVnf1.id), { packets: 2000n, bytes: 2000n * 128n }, 'the rule counted packets and bytes');
  const state = await dp.exportState('vnf1', 'all');
  t.equal(state.length, 8, 'vnf1 keeps one state record per flow and direction');
});

t.test('marked full-size frames still fit the links', async (t) => {
  const { dp, forward } = await testLab(t);
  const rule = dp.rules().find((r) => r.switch === 's1' && r.action.outPort === 's1-vnf1')!;
  await dp.armOld('vnf1', 77);
  await dp.setRuleAction(rule.id, { outPort: 's1-vnf1', phase: Phase.PRE, handoverId: 77 });
  const fw = forward(1, 1514); // 1500-byte IP packets: 1518 bytes with the shim
  await fw.gen.send(500);
  await fw.sink.drain(500);
  const r = fw.sink.report(fw.gen.sentPerFlow());
  t.equal(r.delivered, 500, 'every marked 1518-byte frame crossed the 1500-MTU veth links');
  t.equal(r.lost, 0);
  t.equal((await dp.handoverCounters('s1', 77)).pre, 500n, 's1 marked all of them PRE');
  t.equal((await dp.agentStatus('vnf1', 77))!.preSeen, 500n, "vnf1's agent counted all of them");
  t.equal(r.marked, 0, 'no frame reached the server with a shim');
});

t.test('a frame with a forged shim from a host is dropped and counted', async (t) => {
  const { dp, lab, forward } = await testLab(t);
  const fx = BpfCollection.load(testObject('binding_fixture'));
  t.teardown(() => fx.close());
  const fw = forward(1);
  // a probe frame as the client would send it, then wrapped in a shim (POST, hid 5)
  const probe = udpFrame({ srcMac: lab.client.mac, dstMac: lab.server.mac, srcIp: lab.client.ip, dstIp: lab.server.ip, srcPort: 20000, dstPort: 9000, payload: Buffer.alloc(40) });
  const shim = Buffer.from([0x82, 0x1c, 0x80, 0x05]);
  const forged = Buffer.concat([probe.subarray(0, 12), shim, probe.subarray(12)]);
  await fx.program('xdp_tx_raw').runAsync({
    data: forged,
    context: xdpMd({ dataLen: forged.length, ingressIfindex: ifindexOf(lab.client.ifname, lab.client.netns) }),
    repeat: 25,
    liveFrames: true,
    netns: lab.client.netns,
  });
  // a few genuine probes after them, to know the forged ones have been processed
  await fw.gen.send(10);
  await fw.sink.drain(10);
  const port = (await dp.portCounters('s1')).find((p) => p.port === 's1-client')!;
  t.equal(port.dropShim, 25n, 'all 25 forged frames dropped at the host port and counted');
  t.equal(fw.sink.report(fw.gen.sentPerFlow()).delivered, 10, 'genuine traffic still flows');
  t.equal((await dp.handoverCounters('s1', 5)).post, 0n, 'no handover counter moved');
});
