// End-to-end SHarP handovers in network namespaces, while probe traffic runs
// in both directions: nothing lost, reordered or duplicated; VNF state
// continuous; no packet at the controller; held = released.
import t from 'tap';
import { testLab } from '../helpers/lab.js';
import { UDP, exactRules, wildcardRules, runHandovers, assertClean, assertDirectionsIntact, ThrowingMover } from '../helpers/handovers.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { VnfMapStateMover, DelayedStateMover, type StateMover } from '../../src/handover/state-mover.js';
import { Phase } from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';

t.test('exact-flow handovers back and forth with state delays of 0, 100 ms and 1 s', async (t) => {
  for (const [delay, count] of [
    [0, 12],
    [100, 4],
    [1000, 2],
  ] as const) {
    await t.test(`state delay ${delay} ms, ${count} handovers`, async (t) => {
      // the capacity check wants 2000 pps × (delay + margins) × 2 frames of ring per side
      const l = await testLab(t, { ringCapacity: 8192 });
      const rules = await exactRules(l, { src: l.lab.client.ip, dst: l.lab.server.ip, sport: 20000, dport: 9000, proto: UDP });
      const run = await runHandovers(l, { flows: 1, pps: 2000, rules, count, mover: new DelayedStateMover(new VnfMapStateMover(), delay) });
      await assertClean(t, run, l);
      for (const h of run.results) t.ok(h.stateMs >= delay - 1, `handover ${h.id}: the state move took ${h.stateMs.toFixed(1)} ms (injected ${delay})`);
    });
  }
});

t.test('quiescence in the kernel: every wait ends by the exact event (switch barrier, port tx = agent arrivals, agent barrier), with traffic or without', async (t) => {
  const l = await testLab(t, { ringCapacity: 8192 });
  const rules = await exactRules(l, { src: l.lab.client.ip, dst: l.lab.server.ip, sport: 20000, dport: 9000, proto: UDP });
  // (a state move of 20 ms: long enough for B to hold frames, which assertClean checks)
  const run = await runHandovers(l, { flows: 1, pps: 2000, rules, count: 4, mover: new DelayedStateMover(new VnfMapStateMover(), 20) });
  await assertClean(t, run, l);
  for (const h of run.results)
    t.same(
      h.waits.map((w) => `${w.step} ${w.instances.join(',')}: ${w.by}`),
      [`pre-marking ${h.from}: event`, `switching ${h.from}: event`, `draining ${h.from}: event`, `cleaning ${h.to}: event`],
      `handover ${h.id} under traffic: no wait fell back to Q`,
    );
  // idle: nothing on the wire, the counts agree at once
  const idle = await new HandoverEngine(l.dp, { mover: new VnfMapStateMover() }).handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 0 });
  t.equal(idle.outcome, 'completed', idle.reason ?? '');
  t.same(new Set(idle.waits.map((w) => w.by)), new Set(['event']), 'an idle flow: every wait ended by the event too');
});

t.test('a wildcard rule carrying 128 concurrent flows moves as one', async (t) => {
  const l = await testLab(t);
  const rules = wildcardRules(l);
  t.equal(rules.length, 2, 'the forward rule on s1 and the reverse rule on s2');
  const run = await runHandovers(l, { flows: 128, pps: 4000, rules, count: 4, mover: new DelayedStateMover(new VnfMapStateMover(), 100) });
  await assertClean(t, run, l);
  for (const h of run.results) t.equal(h.state?.records, 256, `handover ${h.id} moved the state of 128 flows in both directions`);
  t.equal(run.reports[0]!.flows.filter((f) => f.delivered > 0).length, 128, 'all 128 flows carried traffic');
});

t.test('concurrent handovers of different flows', async (t) => {
  const l = await testLab(t);
  const a = await exactRules(l, { src: l.lab.client.ip, dst: l.lab.server.ip, sport: 20000, dport: 9000, proto: UDP });
  const b = await exactRules(l, { src: l.lab.client.ip, dst: l.lab.server.ip, sport: 20001, dport: 9000, proto: UDP });
  const engine = new HandoverEngine(l.dp, { mover: new DelayedStateMover(new VnfMapStateMover(), 100) });
  const fw = l.forward(2);
  fw.gen.start(2000);
  await sleep(50);
  const results = await Promise.all([engine.handover({ rules: a, from: 'vnf1', to: 'vnf2', expectedPps: 2000 }), engine.handover({ rules: b, from: 'vnf1', to: 'vnf2', expectedPps: 2000 })]);
  await sleep(50);
  await fw.gen.stop();
  await fw.sink.drain(fw.gen.sent);
  const r = fw.sink.report(fw.gen.sentPerFlow());
  t.same(
    results.map((x) => x.outcome),
    ['completed', 'completed'],
  );
  t.not(results[0]!.id, results[1]!.id, 'distinct handover ids');
  t.equal(r.delivered, r.sent);
  t.equal(r.lost + r.reordered + r.duplicated + r.stampMismatches, 0);
});

t.test('a handover to an instance whose agent is missing is refused; traffic keeps flowing through the old one', async (t) => {
  const l = await testLab(t);
  const rules = wildcardRules(l);
  const engine = new HandoverEngine(l.dp, { mover: new VnfMapStateMover() });
  const fw = l.forward(2);
  fw.gen.start(2000);
  await sleep(50);
  l.dp.detachAgent('vnf2');
  await t.rejects(engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2000 }), { name: 'HandoverError', message: /vnf2 has no working SHarP agent: the agent program is not attached to eth0/ });
  await sleep(100);
  await fw.gen.stop();
  await fw.sink.drain(fw.gen.sent);
  const r = fw.sink.report(fw.gen.sentPerFlow());
  t.equal(r.delivered, r.sent, 'every probe still delivered');
  t.equal(r.stampMismatches, 0, 'through vnf1, whose state is untouched');
  t.equal(l.dp.getRule(rules[0]!)!.action.outPort, 's1-vnf1', 'the rule still points at vnf1');
  t.equal(engine.active().length, 0, 'nothing left in flight');
});

class HangingMover implements StateMover {
  readonly name = 'hangs';
  move(_ctx: unknown, signal: AbortSignal): Promise<never> {
    return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
  }
}

for (const [name, mover, stateTimeoutMs] of [
  ['throws', new ThrowingMover(), undefined],
  ['times out', new HangingMover(), 300],
] as const) {
  t.test(`a state mover that ${name} rolls back after switch-over with nothing lost`, async (t) => {
    const l = await testLab(t);
    const rules = wildcardRules(l);
    const engine = new HandoverEngine(l.dp, { mover });
    const fw = l.forward(4);
    const rv = l.reverse(4);
    fw.gen.start(2000);
    rv.gen.start(2000);
    await sleep(50);
    const res = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000, ...(stateTimeoutMs ? { stateTimeoutMs } : {}) });
    await sleep(100);
    await Promise.all([fw.gen.stop(), rv.gen.stop()]);
    await Promise.all([fw.sink.drain(fw.gen.sent), rv.sink.drain(rv.gen.sent)]);
    t.equal(res.outcome, 'aborted');
    t.match(res.reason, name === 'throws' ? /moving-state: .*state store unreachable; traffic stays on vnf1/ : /did not finish within 300 ms; traffic stays on vnf1/);
    t.ok(res.counts.relayed > 0n, `${res.counts.relayed} frames held at vnf2 went back to vnf1 in the kernel`);
    // through the switches: each relayed frame came back in on a switch's port towards vnf2
    const relayedAt = async (sw: string): Promise<bigint> => (await l.dp.portCounters(sw)).reduce((a, p) => a + p.relayed, 0n);
    t.equal((await relayedAt('s1')) + (await relayedAt('s2')), res.counts.relayed, 'the switches relayed exactly the frames vnf2 released back (port_stats.relayed)');
    const vnf2Ports = (await Promise.all(['s1', 's2'].map(async (sw) => (await l.dp.portCounters(sw)).find((p) => p.port === `${sw}-vnf2`)!)));
    t.equal(vnf2Ports.reduce((a, p) => a + p.dropShim, 0n), 0n, 'no relayed frame was dropped as forged');
    if ('switchObject' in l.dp) for (const sw of ['s1', 's2']) t.same([...l.dp.switchObject(sw).map('relays').keys()], [], `${sw}: no relay route is left`);
    t.ok(res.events.some((e) => e.step === 'rolling-back'));
    assertDirectionsIntact(
      t,
      [
        ['client→server', fw.sink.report(fw.gen.sentPerFlow())],
        ['server→client', rv.sink.report(rv.gen.sentPerFlow())],
      ],
      'vnf1',
    );
    t.equal(fw.sink.report(fw.gen.sentPerFlow()).marked + rv.sink.report(rv.gen.sentPerFlow()).marked, 0, 'no probe arrived marked');
    for (const id of rules) t.same(l.dp.getRule(id)!.action, { outPort: l.dp.getRule(id)!.switch === 's1' ? 's1-vnf1' : 's2-vnf1', phase: Phase.NONE, handoverId: 0 }, `rule ${id} is back on vnf1, unmarked`);
  });
}

t.test('ring overflow is reported and reconciles: sent = delivered + dropped', async (t) => {
  const l = await testLab(t, { ringCapacity: 64 });
  const rules = wildcardRules(l);
  const engine = new HandoverEngine(l.dp, { mover: new DelayedStateMover(new VnfMapStateMover(), 400) });
  await t.rejects(engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2000, expectedStateMs: 400 }), { name: 'CapacityError', message: /holds 64 frames per side.*refusing/ }, 'refused up front by default');
  const fw = l.forward(1);
  fw.gen.start(2000);
  await sleep(50);
  const res = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 2000, expectedStateMs: 400, capacityPolicy: 'warn' });
  await sleep(50);
  await fw.gen.stop();
  await fw.sink.drain(fw.gen.sent);
  const r = fw.sink.report(fw.gen.sentPerFlow());
  t.equal(res.outcome, 'lossy', 'a handover that lost frames is not called completed');
  t.ok(res.counts.overflow > 0n, `${res.counts.overflow} frames overflowed the 64-frame ring`);
  t.match(res.reason, /overflowed the hold ring/);
  t.ok(res.events.some((e) => e.step === 'warning'), 'a warning event was emitted');
  // the ring filled up; frames arriving while the release drains it are held behind the rest (held may pass 64 by those)
  t.ok(res.counts.held >= 64n, `the ring filled to its capacity: ${res.counts.held} held`);
  t.equal(res.counts.released, res.counts.held, 'every held frame was released');
  t.equal(r.sent, r.delivered + Number(res.counts.overflow), `sent ${r.sent} = delivered ${r.delivered} + dropped ${res.counts.overflow}`);
  t.equal(r.reordered + r.duplicated, 0, 'what was delivered is in order, once');
});
