// The same handover engine on BMv2 switches in Mininet, driven over
// P4Runtime: the end-to-end assertions of the XDP path, at rates BMv2
// sustains here (a software switch: about 1000 packets/s per direction).
// Skipped, with the reason printed, where BMv2 or Mininet is missing.
import t from 'tap';
import { testLab, bmv2Skip } from '../helpers/lab.js';
import { UDP, exactRules, wildcardRules, runHandovers, assertClean, assertDirectionsIntact, ThrowingMover } from '../helpers/handovers.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { VnfMapStateMover, DelayedStateMover, type StateMover } from '../../src/handover/state-mover.js';
import { Phase } from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';

const skip = bmv2Skip();
if (skip) t.comment(`BMv2 handover tests skipped: ${skip}`);
const PPS = 300;

t.test('exact-flow handovers back and forth on BMv2 with state delays of 0, 100 ms and 1 s', { skip }, async (t) => {
  for (const [delay, count] of [
    [0, 6],
    [100, 3],
    [1000, 2],
  ] as const) {
    await t.test(`state delay ${delay} ms, ${count} handovers`, async (t) => {
      const l = await testLab(t, { target: 'bmv2' });
      const rules = await exactRules(l, { src: l.lab.client.ip, dst: l.lab.server.ip, sport: 20000, dport: 9000, proto: UDP });
      const run = await runHandovers(l, { flows: 1, pps: PPS, rules, count, mover: new DelayedStateMover(new VnfMapStateMover(), delay) });
      await assertClean(t, run, l);
      for (const h of run.results) t.ok(h.stateMs >= delay - 1, `handover ${h.id}: the state move took ${h.stateMs.toFixed(1)} ms (injected ${delay})`);
    });
  }
});

t.test('a wildcard rule carrying 32 flows moves as one on BMv2', { skip }, async (t) => {
  const l = await testLab(t, { target: 'bmv2' });
  const rules = wildcardRules(l);
  t.equal(rules.length, 2, 'the forward rule on s1 and the reverse rule on s2');
  const run = await runHandovers(l, { flows: 32, pps: PPS, rules, count: 4, mover: new DelayedStateMover(new VnfMapStateMover(), 100) });
  await assertClean(t, run, l);
  for (const h of run.results) t.equal(h.state?.records, 64, `handover ${h.id} moved the state of 32 flows in both directions`);
});

t.test('on BMv2, a handover to an instance whose agent is missing is refused; traffic keeps flowing', { skip }, async (t) => {
  const l = await testLab(t, { target: 'bmv2' });
  const rules = wildcardRules(l);
  const engine = new HandoverEngine(l.dp, { mover: new VnfMapStateMover() });
  const fw = l.forward(2);
  fw.gen.start(PPS);
  await sleep(100);
  l.dp.detachAgent('vnf2');
  await t.rejects(engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: PPS }), { name: 'HandoverError', message: /vnf2 has no working SHarP agent/ });
  await sleep(200);
  await fw.gen.stop();
  await fw.sink.drain(fw.gen.sent);
  const r = fw.sink.report(fw.gen.sentPerFlow());
  t.equal(r.delivered, r.sent, 'every probe still delivered');
  t.equal(r.stampMismatches, 0, 'through vnf1, whose state is untouched');
  t.equal(l.dp.getRule(rules[0]!)!.action.outPort, 's1-vnf1', 'the rule still points at vnf1');
});

t.test('on BMv2, a failing state move rolls back after switch-over with nothing lost', { skip }, async (t) => {
  const l = await testLab(t, { target: 'bmv2' });
  const rules = wildcardRules(l);
  const engine = new HandoverEngine(l.dp, { mover: new ThrowingMover() });
  const fw = l.forward(4);
  const rv = l.reverse(4);
  fw.gen.start(PPS);
  rv.gen.start(PPS);
  await sleep(200);
  const res = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2 * PPS });
  await sleep(200);
  await Promise.all([fw.gen.stop(), rv.gen.stop()]);
  await Promise.all([fw.sink.drain(fw.gen.sent), rv.sink.drain(rv.gen.sent)]);
  t.equal(res.outcome, 'aborted');
  t.match(res.reason, /state store unreachable; traffic stays on vnf1/);
  t.ok(res.counts.relayed > 0n, `${res.counts.relayed} frames held at vnf2 went back to vnf1 (out of the BMv2 switch's veth)`);
  assertDirectionsIntact(
    t,
    [
      ['client→server', fw.sink.report(fw.gen.sentPerFlow())],
      ['server→client', rv.sink.report(rv.gen.sentPerFlow())],
    ],
    'vnf1',
  );
  for (const id of rules) t.same(l.dp.getRule(id)!.action, { outPort: l.dp.getRule(id)!.switch === 's1' ? 's1-vnf1' : 's2-vnf1', phase: Phase.NONE, handoverId: 0 }, `rule ${id} is back on vnf1, unmarked`);
});
