// Bmv2DataPlane: the DataPlane contract on BMv2 switches over P4Runtime.
// The pure mapping (priorities, ternary fields) always runs; the rest runs
// against simple_switch_grpc in a Mininet lab, or skips with the reason.
import t from 'tap';
import { p4rtPriority, wildMatch, exactMatch } from '../../../src/dataplane/bmv2/bmv2-dataplane.js';
import { Phase, type Rule } from '../../../src/dataplane/types.js';
import { testLab, bmv2Skip } from '../../helpers/lab.js';
import { sleep } from '../../../src/util/mutex.js';
import type { Bmv2DataPlane } from '../../../src/dataplane/bmv2/bmv2-dataplane.js';

t.test('P4Runtime priorities keep the XDP order: higher priority first, then the lower rule id', async (t) => {
  const order = (rules: { priority: number; id: number }[]): number[] => [...rules].sort((a, b) => p4rtPriority(b.priority, b.id) - p4rtPriority(a.priority, a.id)).map((r) => r.id);
  t.same(order([{ priority: 1, id: 5 }, { priority: 2, id: 9 }, { priority: 1, id: 3 }]), [9, 3, 5]);
  t.ok(p4rtPriority(0, 4095) > 0, 'priority 0 and the largest rule id still give a P4Runtime priority > 0');
  t.ok(p4rtPriority(65535, 1) <= 0x7fffffff, 'the largest priority fits an int32');
  t.ok(p4rtPriority(1, 4095) > p4rtPriority(0, 1), 'a higher priority beats any rule id');
});

t.test('a wildcard rule leaves every field that matches anything out of the ternary match', async (t) => {
  t.same(wildMatch({ kind: 'wildcard', priority: 1, dst: '10.0.0.0/24' }, undefined), { daddr: { ternary: { value: 0x0a000000, mask: 0xffffff00 } } });
  t.same(wildMatch({ kind: 'wildcard', priority: 1, src: '10.0.0.7/32', proto: 17, sport: 0, dport: 9000 }, 2), {
    saddr: { ternary: { value: 0x0a000007, mask: 0xffffffff } },
    proto: { ternary: { value: 17, mask: 0xff } },
    dport: { ternary: { value: 9000, mask: 0xffff } },
    in_slot: { ternary: { value: 2, mask: 0xffff } },
  });
  t.same(wildMatch({ kind: 'wildcard', priority: 0, src: '0.0.0.0/0' }, undefined), {}, 'a /0 prefix matches anything');
  t.same(wildMatch({ kind: 'wildcard', priority: 0, src: '10.1.2.3/16' }, undefined), { saddr: { ternary: { value: 0x0a010000, mask: 0xffff0000 } } }, 'host bits are cleared');
  t.throws(() => wildMatch({ kind: 'wildcard', priority: 0, src: '10.0.0.0/33' }, undefined), /prefix 10.0.0.0\/33: length must be 0..32/);
  t.same(exactMatch({ src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 2, proto: 17 }), {
    saddr: { exact: 0x0a000001 },
    daddr: { exact: 0x0a000002 },
    proto: { exact: 17 },
    sport: { exact: 1 },
    dport: { exact: 2 },
  });
});

const skip = bmv2Skip();
if (skip) t.comment(`BMv2 data plane tests skipped: ${skip}`);

t.test('rules, actions and counters on BMv2 switches, with real traffic', { skip }, async (t) => {
  const l = await testLab(t, { target: 'bmv2' });
  const dp = l.dp as Bmv2DataPlane;
  const wild = dp.rules().find((r) => r.action.outPort === 's1-vnf1')!;
  const flow = { src: l.lab.client.ip, dst: l.lab.server.ip, sport: 20000, dport: 9000, proto: 17 };
  const exact = await dp.addRule({ switch: 's1', match: { kind: 'exact', flow }, action: { outPort: 's1-vnf1', phase: Phase.PRE, handoverId: 77 } });
  await t.rejects(dp.addRule({ switch: 's1', match: { kind: 'exact', flow }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } }), { name: 'RuleError', message: /exact rule for this flow already/ });
  await t.rejects(dp.addRule({ switch: 's1', match: { kind: 'exact', flow: { ...flow, sport: 1 } }, action: { outPort: 's1-nowhere', phase: Phase.NONE, handoverId: 0 } }), { name: 'RuleError', message: /no port 's1-nowhere'/ });
  const entries = await dp.client('s1').readEntries('rules_exact');
  t.equal(entries.length, 1, 'one rules_exact entry on the switch');
  t.same(entries[0]!.action?.params, { rule_id: BigInt(exact.id), out_slot: 1n, hid: 77n, phase: BigInt(Phase.PRE) }, 'carrying the rule id and the action');

  // two flows: sport 20000 hits the exact rule, 20001 only the wildcard
  const fw = l.forward(2);
  await fw.gen.send(40);
  await fw.sink.drain(40);
  t.equal(fw.sink.report(fw.gen.sentPerFlow()).delivered, 40, 'both flows delivered');
  t.same(await dp.ruleCounters(exact.id), { packets: 20n, bytes: 20n * 128n }, 'the exact rule won for its flow');
  t.equal((await dp.ruleCounters(wild.id)).packets, 20n, 'the wildcard carried the other flow');
  t.same(await dp.handoverCounters('s1', 77), { pre: 20n, post: 0n }, 'PRE frames counted for handover 77');
  const vnf1 = await l.dp.agentStatus('vnf1', 77);
  t.equal(vnf1, undefined, 'vnf1 is not armed: the shim was stripped and the frames passed');
  await dp.resetHandoverCounters('s1', 77);
  t.same(await dp.handoverCounters('s1', 77), { pre: 0n, post: 0n }, 'reset over P4Runtime');

  // moving the wildcard rule's action moves its flows at once
  await dp.setRuleAction(wild.id, { outPort: 's1-vnf2', phase: Phase.NONE, handoverId: 0 });
  const before = (await dp.portCounters('s1')).find((p) => p.port === 's1-vnf2')!.txPackets;
  await fw.gen.send(20);
  await fw.sink.drain(60);
  const after = (await dp.portCounters('s1')).find((p) => p.port === 's1-vnf2')!.txPackets;
  t.equal(after - before, 10n, 'the wildcard flow now leaves towards vnf2');
  t.equal(fw.sink.report(fw.gen.sentPerFlow()).delivered, 60, 'still delivered (vnf2 forwards too)');

  await dp.deleteRule(exact.id);
  t.equal((await dp.client('s1').readEntries('rules_exact')).length, 0, 'the entry is gone from the switch');
  t.equal(dp.getRule(exact.id), undefined);
  const ports = await dp.portCounters('s1');
  t.same(
    ports.map((p) => p.port),
    ['s1-client', 's1-vnf1', 's1-vnf2'],
  );
  t.equal(ports[0]!.packets, 60n, 'port_rx of the client port counted every frame');
  t.equal(ports.reduce((a, p) => a + p.dropNoRule + p.dropShim + p.dropOther, 0n), 0n, 'nothing dropped');
});

t.test('the baseline path on BMv2: DIVERT rules reach the controller as packet-ins, packet-outs leave a port', { skip }, async (t) => {
  const l = await testLab(t, { target: 'bmv2' });
  const dp = l.dp as Bmv2DataPlane;
  const wild: Rule = dp.rules().find((r) => r.action.outPort === 's1-vnf1')!;
  const got: { switch: string; handoverId: number; frame: Buffer }[] = [];
  const ch = dp.openControllerChannel((f) => got.push(f));
  t.teardown(() => ch.close());
  await dp.setRuleAction(wild.id, { outPort: 's1-vnf1', phase: Phase.DIVERT, handoverId: 12 });
  const fw = l.forward(1);
  await fw.gen.send(25);
  await sleep(100);
  await ch.drain();
  t.equal(got.length, 25, 'every diverted frame reached the controller');
  t.ok(got.every((f) => f.switch === 's1' && f.handoverId === 12), 'tagged with switch and handover id');
  t.equal((await dp.controllerDataPackets()).packets, 25n, 'divert_stats counted them');
  t.equal(fw.sink.report(fw.gen.sentPerFlow()).delivered, 0, 'nothing reached the server meanwhile');
  await dp.setRuleAction(wild.id, { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 });
  await dp.sendFromController('s1', 's1-vnf1', got.map((f) => f.frame));
  await fw.sink.drain(25);
  const r = fw.sink.report(fw.gen.sentPerFlow());
  t.equal(r.delivered, 25, 'the controller sent them on through vnf1');
  t.equal(r.reordered + r.duplicated, 0, 'in order, once');
});
