// The handover engine against an in-memory deployment (no root, no kernel):
// the order of its steps, both rollback branches, loss that is reported as
// such, rule locks. The real-kernel runs of the same engine are in
// engine.test.ts.
import t, { type Test } from 'tap';
import { FakeDeployment } from '../helpers/fake-deployment.js';
import { HandoverEngine, SHARP_STEPS, type HandoverResult } from '../../src/handover/engine.js';
import { DelayedStateMover, VnfMapStateMover, type StateMover } from '../../src/handover/state-mover.js';
import { GateMover } from '../helpers/gate-mover.js';
import { Phase } from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';

const UDP = 17;

async function setup(o: { ring?: number } = {}): Promise<{ d: FakeDeployment; rules: number[] }> {
  const d = new FakeDeployment(['vnf1', 'vnf2'], o.ring ?? 1024);
  const fwd = await d.switchControl.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 9000, proto: UDP } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  const rev = await d.switchControl.addRule({ switch: 's2', match: { kind: 'exact', flow: { src: '10.0.0.2', dst: '10.0.0.1', sport: 9000, dport: 1000, proto: UDP } }, action: { outPort: 's2-vnf1', phase: Phase.NONE, handoverId: 0 } });
  for (let i = 0; i < 10; i++) d.tick();
  return { d, rules: [fwd.id, rev.id] };
}

function assertIntact(t: Test, d: FakeDeployment, what: string): void {
  const r = d.report();
  t.ok(r.sent > 0, `${what}: ${r.sent} frames sent`);
  t.same({ lost: r.lost, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches, delivered: r.delivered }, { lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0, delivered: r.sent }, `${what}: nothing lost, reordered or duplicated; the VNF's counter continuous`);
}

function assertAt(t: Test, d: FakeDeployment, rules: number[], instance: string): void {
  for (const id of rules) {
    const r = d.switchControl.getRule(id)!;
    t.same(r.action, { outPort: `${r.switch}-${instance}`, phase: Phase.NONE, handoverId: 0 }, `rule ${id} sends to ${instance}, unmarked`);
  }
  t.same([...d.armed('vnf1'), ...d.armed('vnf2')], [], 'no agent keeps a handover armed');
}

class FailingMover implements StateMover {
  readonly name = 'failing';
  async move(): Promise<never> {
    throw new Error('the state store is down');
  }
}

t.test('a handover runs the seven SHarP steps in order and moves the flow losslessly', async (t) => {
  const { d, rules } = await setup();
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 20) });
  d.start(1);
  const seen: string[] = [];
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100, onEvent: (e) => seen.push(e.step) });
  await sleep(5);
  d.stop();
  for (let i = 0; i < 5; i++) d.tick();
  t.equal(r.outcome, 'completed', r.reason ?? '');
  t.same(seen, [...SHARP_STEPS, 'completed'], 'events: validating, arming, pre-marking, switching, draining, moving-state, releasing, cleaning, completed');
  t.same(
    r.events.map((e) => e.step),
    seen,
    'the result carries the same events',
  );
  const order = (c: string): number => d.calls.indexOf(c);
  t.ok(order('checkAgent vnf1') < order('armNew vnf2'), 'agents are checked before anything changes');
  t.ok(order('armNew vnf2') < order('armOld vnf1') && order('armOld vnf1') < order('setRuleAction s1'), 'B holds and A counts before the first mark');
  t.ok(order('exportState vnf1') < order('release vnf2'), 'state moves before B releases');
  t.ok(r.counts.preSent > 0n && r.counts.preSeen === r.counts.preSent, `A saw every PRE frame (${r.counts.preSent})`);
  t.ok(r.counts.held > 0n && r.counts.held === r.counts.released, `B held ${r.counts.held} frames and released them all`);
  assertAt(t, d, rules, 'vnf2');
  assertIntact(t, d, 'vnf1 → vnf2');
  t.ok(d.deliveries.at(-1)!.instance === 'vnf2', 'new frames run through vnf2');
});

t.test('calls to different hosts go at once, and each step still begins only once every call of the one before has answered', async (t) => {
  const { d, rules } = await setup();
  // s2's and vnf2's hosts answer later than s1's and vnf1's: calls issued together end out of order
  d.latencyMs = (call) => (/s2|vnf2/.test(call) ? 4 : 1);
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 5) });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100, onEvent: (e) => d.timeline.push(`step ${e.step}`) });
  await sleep(5);
  d.stop();
  for (let i = 0; i < 5; i++) d.tick();
  t.equal(r.outcome, 'completed', r.reason ?? '');
  const tl = d.timeline;
  const at = (e: string, from = 0): number => tl.indexOf(e, from);
  const step = (s: string): number => at(`step ${s}`);
  /** calls started and not yet ended just before index i */
  const inFlight = (i: number): string[] => {
    const open = new Map<string, number>();
    for (const e of tl.slice(0, i)) {
      const m = /^(start|end) (.*)$/.exec(e);
      if (m) open.set(m[2]!, (open.get(m[2]!) ?? 0) + (m[1] === 'start' ? 1 : -1));
    }
    return [...open].filter(([, n]) => n > 0).map(([c]) => c);
  };
  // the first drop-counter reading is issued with the arming (it is awaited there: pre-marking begins with nothing in flight)
  const issuedWithArming = (s: string, c: string): boolean => s === 'arming' && c.startsWith('portCounters');
  for (const s of SHARP_STEPS.slice(1)) t.same(inFlight(step(s)).filter((c) => !issuedWithArming(s, c)), [], `${s} begins with no call of the step before in flight`);
  t.ok(at('end portCounters s2') < step('pre-marking'), 'the drop counters before the handover are read before the first mark');
  t.same(inFlight(step('completed')), [], 'the handover completes with no call in flight');
  const during = (s: string, next: string): string[] => tl.slice(step(s), step(next));
  const arming = during('arming', 'pre-marking');
  t.ok(['start armNew vnf2', 'start armOld vnf1', 'start resetHandoverCounters s1', 'start resetHandoverCounters s2'].every((e) => arming.includes(e)) && arming.indexOf('start armOld vnf1') < arming.indexOf('end armNew vnf2'), 'both arms and both mark resets are in flight at once');
  t.ok(at('end armNew vnf2') < at('start setRuleAction s1') && at('end armOld vnf1') < at('start setRuleAction s1'), 'no mark before both arms were acknowledged');
  // each quiescence wait: the agents' arrivals are read only once every switch's count is in, and the switches are read at once
  for (const s of ['pre-marking', 'switching', 'cleaning'] as const) {
    const w = tl.slice(step(s));
    const firstArrived = w.indexOf(w.find((e) => e.startsWith('start arrivedFrames'))!);
    t.ok(w.indexOf('start sentTowardsInstances s2') < w.indexOf('end sentTowardsInstances s1'), `${s}: both switches' counts are read at once`);
    t.ok(w.indexOf('end sentTowardsInstances s1') < firstArrived && w.indexOf('end sentTowardsInstances s2') < firstArrived, `${s}: the agent's arrivals are read after both switches' counts`);
    t.ok(w.lastIndexOf('end setRuleAction s2', firstArrived) < w.indexOf('start sentTowardsInstances s1'), `${s}: the counts are read after the rule writes were acknowledged`);
  }
  const switching = during('switching', 'draining');
  t.ok(switching.indexOf('start handoverCounters s1') > switching.lastIndexOf('end arrivedFrames vnf1'), 'the PRE count is read after the switch-over quiescence');
  t.ok(at('end importState vnf2') < at('start release vnf2'), 'no release before the state move finished');
  const cleaning = during('cleaning', 'completed');
  t.ok(cleaning.indexOf('start agentStatus vnf2') < cleaning.indexOf('end setRuleAction s1'), "B's counts (final since its release) are read beside the unmarking");
  t.ok(cleaning.indexOf('end agentStatus vnf2') < cleaning.indexOf('start disarm vnf2'), "B's counts are read before B forgets the handover");
  const lastArrived = cleaning.lastIndexOf('end arrivedFrames vnf2');
  t.ok(['start disarm vnf1', 'start disarm vnf2', 'start handoverCounters s1', 'start handoverCounters s2'].every((e) => cleaning.indexOf(e) > lastArrived), 'the POST count and both disarms come after the last marked frames landed');
  t.ok(cleaning.indexOf('start disarm vnf1') < cleaning.indexOf('end handoverCounters s2'), "A's disarm goes at once with the POST count");
  t.ok(r.counts.held > 0n && r.counts.held === r.counts.released, `B held ${r.counts.held} frames and released them all`);
  t.ok(r.counts.postSent > 0n, `the POST count is read (${r.counts.postSent})`);
  assertAt(t, d, rules, 'vnf2');
  assertIntact(t, d, 'vnf1 → vnf2 with calls in flight at once');
});

t.test('a failure before switch-over: the rules go back unmarked, nothing armed, nothing lost', async (t) => {
  const { d, rules } = await setup();
  d.faults.push({ method: 'armOld', target: 'vnf1', message: 'agent map write refused' });
  const engine = new HandoverEngine(d, { mover: new VnfMapStateMover() });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  d.stop();
  t.equal(r.outcome, 'aborted');
  t.match(r.reason, /arming: .*agent map write refused; traffic stays on vnf1/);
  t.notOk(d.calls.some((c) => c.startsWith('release')), 'nothing to release or relay: nothing was held');
  assertAt(t, d, rules, 'vnf1');
  assertIntact(t, d, 'rolled back before switch-over');
});

t.test('a failure after switch-over: B relays its ring back to A, A releases, nothing lost', async (t) => {
  const { d, rules } = await setup();
  const engine = new HandoverEngine(d, { mover: new FailingMover() });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  await sleep(5);
  d.stop();
  t.equal(r.outcome, 'aborted');
  t.match(r.reason, /moving-state: the state store is down; traffic stays on vnf1/);
  t.same(
    r.events.map((e) => e.step).slice(-2),
    ['rolling-back', 'aborted'],
    'a rollback reports rolling-back, then aborted',
  );
  t.ok(d.calls.includes('release vnf2->vnf1'), "B's ring was relayed to A");
  for (const sw of ['s1', 's2']) {
    t.ok(d.calls.indexOf(`setRelay ${sw}`) >= 0 && d.calls.indexOf(`setRelay ${sw}`) < d.calls.indexOf('release vnf2->vnf1'), `${sw} had its relay route before B relayed`);
    t.ok(d.calls.indexOf(`clearRelay ${sw}`) > d.calls.lastIndexOf('release vnf1'), `${sw} dropped its relay route once A had released`);
  }
  t.same(d.relayRoutes(), {}, 'no relay route is left');
  t.equal(d.relayDropped, 0, 'no relayed frame was dropped for want of a route');
  t.ok(d.calls.indexOf('release vnf2->vnf1') < d.calls.lastIndexOf('release vnf1'), "then A released what it held meanwhile");
  t.ok(r.counts.relayed > 0n, `B relayed ${r.counts.relayed} held frames back to A`);
  t.equal(r.counts.held, r.counts.released, 'every frame B held left its ring (relayed to A)');
  assertAt(t, d, rules, 'vnf1');
  assertIntact(t, d, 'rolled back after switch-over');
  t.equal(d.deliveries.at(-1)!.instance, 'vnf1');
});

for (const [name, fault, reason] of [
  ['the relay itself fails', { method: 'release', target: 'vnf2->vnf1', message: 'relay target unreachable', always: true }, /rollback failed: vnf2's ring could not be brought back \(relay target unreachable\)/],
  ["s2's relay route cannot be written", { method: 'setRelay', target: 's2', message: 'relays map full', always: true }, /rollback failed: vnf2's ring could not be brought back \(relays map full\)/],
] as const) {
  t.test(`a rollback that fails (${name}) leaves no rule marked and no relay route, and says so`, async (t) => {
    const { d, rules } = await setup();
    d.faults.push(fault);
    const engine = new HandoverEngine(d, { mover: new FailingMover() });
    const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
    t.equal(r.outcome, 'failed');
    t.match(r.reason, reason);
    for (const id of rules) t.equal(d.switchControl.getRule(id)!.action.phase, Phase.NONE, `rule ${id} is not left marked`);
    t.ok(d.calls.includes('clearRelay s1'), "s1's relay route was cleared");
    t.same(d.relayRoutes(), {}, 'no relay route is left');
    if (fault.method === 'setRelay') t.notOk(d.calls.includes('release vnf2->vnf1'), 'B did not relay without every route in place');
  });
}

t.test("B does not answer the rollback's relay: A releases what it held, B's frames are counted as stranded, B's ring id stays reserved until B answers", async (t) => {
  const { d, rules } = await setup();
  for (const method of ['release', 'agentStatus', 'disarm', 'arrivedFrames', 'interfaceDrops', 'deleteState', 'exportState', 'importState']) d.faults.push({ method, target: method === 'release' ? 'vnf2->vnf1' : 'vnf2', message: `vnf2's node did not answer ${method}`, always: true, unanswered: true });
  const engine = new HandoverEngine(d, { mover: new FailingMover() });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  await sleep(5);
  d.stop();
  t.equal(r.outcome, 'failed', `failed: ${r.reason}`);
  t.match(r.reason ?? '', /^moving-state: the state store is down; rollback failed: vnf2's ring could not be brought back \(vnf2's node did not answer/, 'the reason names the failed step once, then why the rollback failed');
  const stranded = r.stranded.reduce((a, x) => a + x.frames, 0n);
  t.ok(stranded > 0n && r.stranded.every((x) => x.reason === 'stranded' && /^s[12]\/s[12]-vnf2$/.test(x.where)), `the frames left in vnf2's ring are counted at the ports that sent them there: ${r.stranded.map((x) => `${x.frames} at ${x.where}`).join(', ')}`);
  const rep = d.report();
  t.equal(rep.sent, rep.delivered + Number(stranded), `sent ${rep.sent} = delivered ${rep.delivered} + stranded ${stranded}: vnf1 released everything it held`);
  t.same({ reordered: rep.reordered, duplicated: rep.duplicated }, { reordered: 0, duplicated: 0 }, 'nothing reordered or duplicated');
  t.same(d.armed('vnf1'), [], 'vnf1 keeps nothing armed');
  t.same(d.armed('vnf2'), [r.id], "vnf2's ring is still armed (its node never answered the disarm)");
  for (const id of rules) t.same(d.switchControl.getRule(id)!.action, { outPort: `${d.switchControl.getRule(id)!.switch}-vnf1`, phase: Phase.NONE, handoverId: 0 }, `rule ${id} sends to vnf1, unmarked`);
  // vnf2 answers again: the next handover into it disarms the stranded ring first, and never reuses its id meanwhile
  d.faults.length = 0;
  const next = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100, mover: new VnfMapStateMover() });
  t.equal(next.outcome, 'completed', `the next handover: ${next.outcome} ${next.reason ?? ''}`);
  t.not(next.id, r.id, 'with another handover id');
  t.same(d.armed('vnf2'), [], "the stranded ring was disarmed once vnf2 answered");
});

t.test('a relay route that cannot be removed is reported as a warning; the rollback itself succeeds', async (t) => {
  const { d, rules } = await setup();
  d.faults.push({ method: 'clearRelay', target: 's1', message: 'switch unreachable' });
  const engine = new HandoverEngine(d, { mover: new FailingMover() });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  await sleep(5);
  d.stop();
  t.equal(r.outcome, 'aborted');
  t.ok(r.events.some((e) => e.step === 'warning' && /relay route of handover \d+ on s1 could not be removed: switch unreachable/.test(e.detail ?? '')), 'a warning names the switch and the cause');
  assertIntact(t, d, 'rolled back after switch-over');
});

t.test('frames that overflow the hold ring: outcome lossy with the count, never completed', async (t) => {
  const { d, rules } = await setup({ ring: 4 });
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 30) });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1, capacityPolicy: 'warn' });
  d.stop();
  t.equal(r.outcome, 'lossy');
  t.ok(r.counts.overflow > 0n, `${r.counts.overflow} frames overflowed`);
  t.match(r.reason, new RegExp(`${r.counts.overflow} frames were lost: ${r.counts.overflow} frames overflowed the hold ring of vnf2`));
  const rep = d.report();
  t.equal(rep.lost, Number(r.counts.overflow), 'every lost frame is the reported overflow: sent = delivered + reported');
});

t.test('frames lost downstream of the VNFs during a handover (the far switch could not send them to their host): outcome lossy, naming the port, never completed', async (t) => {
  const { d, rules } = await setup();
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate });
  const pending = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  await gate.entered;
  // a burst (a release, say) finds the far switch's port towards h2 full: 3 frames of the forward flow die there
  d.loseAtHostPort.set('s2-h2', 3);
  for (let i = 0; i < 5; i++) d.tick();
  gate.open();
  const r = await pending;
  for (let i = 0; i < 5; i++) d.tick();
  t.equal(r.outcome, 'lossy', r.reason ?? '');
  t.equal(r.counts.dropped, 3n, 'the 3 frames are the handover\'s drops');
  t.match(r.reason, /3 frames were lost/);
  t.ok(r.drops.some((x) => x.where === 's2/s2-h2' && x.reason === 'xmitFailed' && x.frames === 3n), `counted where they died: ${JSON.stringify(r.drops, (_, v) => (typeof v === 'bigint' ? Number(v) : v))}`);
  t.equal(d.report().lost, 3, 'sent = delivered + the 3 reported');
});

t.test('the capacity check uses the expected state time and refuses by default, changing nothing', async (t) => {
  const { d, rules } = await setup({ ring: 100 });
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 5000) });
  const before = d.calls.length;
  await t.rejects(engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 200 }), { name: 'CapacityError', message: /holds 100 frames per side, but 100 pps per side over 5075 ms/ });
  t.notOk(d.calls.slice(before).some((c) => c.startsWith('setRuleAction') || c.startsWith('arm')), 'no rule or agent was touched');
});

t.test('rules under handover are locked; a second handover of them names the first', async (t) => {
  const { d, rules } = await setup();
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate });
  const first = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  await gate.entered;
  const hid = engine.active()[0]!.id;
  t.equal(engine.ruleLock(rules[0]!), hid, `rule ${rules[0]} is locked by handover ${hid}`);
  await t.rejects(engine.handover({ rules, from: 'vnf2', to: 'vnf1', expectedPps: 100 }), { message: new RegExp(`rule ${rules[0]} is being moved by handover ${hid}`) });
  await t.rejects(engine.handover({ rules, from: 'vnf2', to: 'vnf2', expectedPps: 100 }), { message: /is being moved by handover/ }, 'the lock is named before any other check');
  gate.open();
  const r: HandoverResult = await first;
  t.equal(r.outcome, 'completed');
  t.equal(engine.ruleLock(rules[0]!), undefined, 'unlocked once done');
});

t.test('a switch-over that took effect on one rule and failed on the next: B is emptied back to A, nothing lost', async (t) => {
  const { d, rules } = await setup();
  // s2's rule: its pre-mark write passes, its switch-over write fails (s1's went through)
  d.faults.push({ method: 'setRuleAction', target: 's2', skip: 1, message: 'switch s2 refused the write' });
  const engine = new HandoverEngine(d, { mover: new VnfMapStateMover() });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  await sleep(5);
  d.stop();
  t.equal(r.outcome, 'aborted');
  t.match(r.reason, /switching: .*switch s2 refused the write; traffic stays on vnf1/);
  t.ok(d.calls.includes('release vnf2->vnf1'), 'what B held for the switched rule went back to A');
  assertAt(t, d, rules, 'vnf1');
  assertIntact(t, d, 'half a switch-over');
});

t.test('a failure once the release began is retried forward: the flow stays with B, nothing lost', async (t) => {
  const { d, rules } = await setup();
  d.faults.push({ method: 'release', target: 'vnf2', message: 'the node did not answer Release' });
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 10) });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  await sleep(5);
  d.stop();
  t.equal(r.outcome, 'completed', r.reason ?? '');
  t.ok(r.events.some((e) => e.step === 'warning' && /releasing failed once \(the node did not answer Release\) and was retried/.test(e.detail ?? '')), 'a warning says the release was retried');
  t.notOk(r.events.some((e) => e.step === 'rolling-back'), 'no rollback: B may have run released frames');
  assertAt(t, d, rules, 'vnf2');
  assertIntact(t, d, 'release retried');
});

t.test('a release that keeps failing: outcome failed, the flow left with B and its frames held, never sent back to stale A', async (t) => {
  const { d, rules } = await setup();
  d.faults.push({ method: 'release', target: 'vnf2', message: 'the node is gone', always: true });
  const engine = new HandoverEngine(d, { mover: new VnfMapStateMover() });
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100, timeoutMs: 2000 });
  t.equal(r.outcome, 'failed');
  t.match(r.reason, /releasing: .*the node is gone; the flow stays on vnf2/);
  for (const id of rules) t.equal(d.switchControl.getRule(id)!.action.outPort.endsWith('-vnf2'), true, `rule ${id} still leads to vnf2`);
  t.notOk(d.calls.includes('release vnf2->vnf1'), 'nothing relayed back to A');
});

t.test("the vnf-map mover's rollback gives A back the records it had given up", async (t) => {
  const { d, rules } = await setup();
  const mover = new VnfMapStateMover();
  const ctx = { id: 1, rules: rules.map((id) => d.switchControl.getRule(id)!), from: 'vnf1', to: 'vnf2', covers: () => true, selection: rules.map((id) => d.switchControl.getRule(id)!.match), counts: { preSent: 0n, preSeen: 0n, postSent: 0n }, timings: {}, vnfState: d.vnfState };
  const before = await d.vnfState.exportState('vnf1', 'all');
  t.equal(before.length, 2, 'A has a record per direction');
  await mover.move(ctx, new AbortController().signal);
  t.equal((await d.vnfState.exportState('vnf1', 'all')).length, 0, 'the move took them from A');
  await mover.rollback(ctx);
  t.same(await d.vnfState.exportState('vnf1', 'all'), before, 'A has its records back, unchanged');
  t.same(await d.vnfState.exportState('vnf2', 'all'), [], 'B has none');
});

t.test('a controller that dies at any step: a new one recovers from the journal, nothing lost, nothing left marked or armed', async (t) => {
  const { MemoryJournal } = await import('../../src/handover/journal.js');
  const crashes: [string, { method: string; target?: string; skip?: number }, 'completed' | 'aborted'][] = [
    ['arming', { method: 'armOld', target: 'vnf1' }, 'aborted'],
    ['pre-marking', { method: 'setRuleAction', target: 's2' }, 'aborted'],
    ['switching', { method: 'setRuleAction', target: 's2', skip: 1 }, 'aborted'],
    ['draining', { method: 'agentStatus', target: 'vnf1' }, 'aborted'],
    ['moving-state', { method: 'exportState', target: 'vnf1' }, 'aborted'],
    ['releasing', { method: 'release', target: 'vnf2' }, 'completed'],
    ['cleaning', { method: 'disarm', target: 'vnf1' }, 'completed'],
  ];
  for (const [step, hang, outcome] of crashes) {
    await t.test(`dies in ${step}: ${outcome === 'completed' ? 'finished' : 'rolled back'}`, async (t) => {
      const { d, rules } = await setup();
      const journal = new MemoryJournal();
      const dead = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 5), journal });
      d.hangs.push(hang);
      d.start(1);
      void dead.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
      for (let i = 0; i < 500 && journal.entries()[0]?.step !== step; i++) await sleep(2);
      t.equal(journal.entries()[0]?.step, step, `the journal says the controller was in ${step}`);
      await sleep(20); // frames keep coming while no controller runs
      const engine = new HandoverEngine(d, { mover: new VnfMapStateMover(), journal });
      await t.rejects(engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 }), { message: /left unfinished are in the journal: recover\(\) them first/ }, 'no new handover before recovery');
      const [r] = await engine.recover();
      await sleep(5);
      d.stop();
      for (let i = 0; i < 5; i++) d.tick();
      t.equal(r?.outcome, outcome, r?.reason ?? '');
      t.match(r?.reason, new RegExp(`left at ${step} by a previous controller`));
      t.same(journal.entries(), [], 'the journal is empty');
      assertAt(t, d, rules, outcome === 'completed' ? 'vnf2' : 'vnf1');
      assertIntact(t, d, `controller died in ${step}`);
      const next = await engine.handover({ rules, from: outcome === 'completed' ? 'vnf2' : 'vnf1', to: outcome === 'completed' ? 'vnf1' : 'vnf2', expectedPps: 100 });
      t.equal(next.outcome, 'completed', 'the next handover succeeds');
    });
  }
});

t.test("recovery moves state with the journalled handover's backend, not the engine's default", async (t) => {
  const { MemoryJournal } = await import('../../src/handover/journal.js');
  const { d, rules } = await setup();
  const journal = new MemoryJournal();
  const dead = new HandoverEngine(d, { mover: new VnfMapStateMover(), journal });
  d.hangs.push({ method: 'exportState', target: 'vnf1' });
  d.start(1);
  void dead.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100, stateBackend: 'other', mover: new DelayedStateMover(new VnfMapStateMover(), 5) });
  for (let i = 0; i < 500 && journal.entries()[0]?.step !== 'moving-state'; i++) await sleep(2);
  t.equal(journal.entries()[0]?.stateBackend, 'other', 'the backend is in the journal');
  await sleep(20); // the dead controller's move reaches its hang (frames keep coming)
  t.same(d.hangs, [], 'the dead controller is stuck in its state move');
  const used: string[] = [];
  const fallback = new VnfMapStateMover();
  const other = new VnfMapStateMover();
  const watch = (name: string, m: VnfMapStateMover): VnfMapStateMover => {
    const rollback = m.rollback.bind(m);
    m.rollback = async (ctx) => {
      used.push(name);
      await rollback(ctx);
    };
    return m;
  };
  const engine = new HandoverEngine(d, { mover: watch('default', fallback), journal });
  const asked: string[] = [];
  const [r] = await engine.recover({ moverFor: (b) => (asked.push(b), b === 'other' ? watch('other', other) : undefined) });
  d.stop();
  for (let i = 0; i < 5; i++) d.tick();
  t.equal(r?.outcome, 'aborted', r?.reason ?? '');
  t.same(asked, ['other'], 'the engine asked for the journalled backend');
  t.same(used, ['other'], "the state move was rolled back by that backend's mover");
  assertAt(t, d, rules, 'vnf1');
  assertIntact(t, d, 'recovered with the journalled backend');
});

t.test("concurrent handovers: each request's onEvent sees its own handover's events only", async (t) => {
  const d = new FakeDeployment(['vnf1', 'vnf2']);
  const mk = async (sport: number): Promise<number[]> => {
    const f = await d.switchControl.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport, dport: 9000, proto: UDP } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
    return [f.id];
  };
  const a = await mk(1000);
  const b = await mk(1001);
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 10) });
  const seenA: number[] = [];
  const seenB: number[] = [];
  const [ra, rb] = await Promise.all([
    engine.handover({ rules: a, from: 'vnf1', to: 'vnf2', expectedPps: 1, onEvent: (e) => seenA.push(e.id) }),
    engine.handover({ rules: b, from: 'vnf1', to: 'vnf2', expectedPps: 1, onEvent: (e) => seenB.push(e.id) }),
  ]);
  t.not(ra.id, rb.id);
  t.ok(seenA.length > 5 && seenA.every((id) => id === ra.id), `the first request saw ${seenA.length} events, all of handover ${ra.id}`);
  t.ok(seenB.length > 5 && seenB.every((id) => id === rb.id), `the second request saw ${seenB.length} events, all of handover ${rb.id}`);
});

t.test('quiescence: each wait ends when every frame the switches sent has been through the agent, not after Q', async (t) => {
  const { d, rules } = await setup();
  // a Q no test would wait out: a wait that fell back to it would hang the test
  d.setQuiescenceMs(600_000);
  d.inFlight = true;
  d.tick();
  // the wire delivers only on the agents' second count read of each wait: the engine must look again
  let reads = 0;
  d.onCall = (c) => {
    if (c === 'arrivedFrames' && ++reads % 2 === 0) d.deliverWire();
  };
  let onWireAtMove = -1;
  const mover: StateMover = {
    name: 'checking',
    move: async (ctx, signal) => {
      onWireAtMove = d.onWire('vnf1');
      return new VnfMapStateMover().move(ctx, signal);
    },
  };
  const engine = new HandoverEngine(d, { mover });
  // (the hold-capacity check counts on Q windows: this Q would fail it)
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100, capacityPolicy: 'warn' });
  d.onCall = undefined;
  d.deliverWire();
  t.equal(r.outcome, 'completed', r.reason ?? '');
  t.same(
    r.waits.map((w) => [w.step, w.instances, w.by]),
    [
      ['pre-marking', ['vnf1'], 'event'],
      ['switching', ['vnf1'], 'event'],
      ['draining', ['vnf1'], 'event'],
      ['cleaning', ['vnf2'], 'event'],
    ],
    'four waits, each ended by the event: A after pre-marking, switch-over and the drain, B in clean-up',
  );
  t.equal(onWireAtMove, 0, 'when the state moved, no frame sent to A was still on its way');
  t.ok(reads > r.waits.length, `the engine read the arrivals again while frames were on the wire (${reads} reads)`);
  assertAt(t, d, rules, 'vnf2');
  assertIntact(t, d, 'vnf1 → vnf2 with frames in flight');
});

t.test('quiescence without the event (a data plane like BMv2): every wait is Q', async (t) => {
  const { d, rules } = await setup();
  d.exactQuiescence = false;
  const engine = new HandoverEngine(d, { mover: new VnfMapStateMover() });
  d.start(1);
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  d.stop();
  d.tick();
  t.equal(r.outcome, 'completed', r.reason ?? '');
  t.same(new Set(r.waits.map((w) => w.by)), new Set(['unsupported']), 'no wait claims the event');
  t.equal(r.waits.length, 4);
  assertIntact(t, d, 'vnf1 → vnf2, timed waits');
});

t.test('quiescence with a frame lost on the wire to A: the waits for A end after Q, the wait for B by the event', async (t) => {
  const { d, rules } = await setup();
  const engine = new HandoverEngine(d, { mover: new VnfMapStateMover() });
  // an unmarked frame dies between s1 and A before the handover (a lost PRE frame would fail the drain instead)
  d.loseOnWire = 1;
  d.tick();
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  t.equal(r.outcome, 'completed', r.reason ?? '');
  t.same(
    r.waits.map((w) => [w.instances[0], w.by]),
    [
      ['vnf1', 'timeout'],
      ['vnf1', 'timeout'],
      ['vnf1', 'timeout'],
      ['vnf2', 'event'],
    ],
    'A never takes in as many frames as s1 sent it: its waits fall back to Q; B is counted exactly',
  );
  t.equal(d.report().lost, 1, 'the sink misses exactly the frame lost on the wire');
});

t.test('quiescence with counters of different incarnations (a switch reloaded under running agents): the event is not trusted, Q decides', async (t) => {
  const { d, rules } = await setup();
  for (let i = 0; i < 5; i++) d.tick();
  d.resetPortCounters();
  const engine = new HandoverEngine(d, { mover: new VnfMapStateMover() });
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  t.equal(r.outcome, 'completed', r.reason ?? '');
  t.same(
    r.waits.map((w) => [w.instances[0], w.by]),
    [
      ['vnf1', 'mismatch'],
      ['vnf1', 'mismatch'],
      ['vnf1', 'mismatch'],
      ['vnf2', 'event'],
    ],
    'A has taken in more than s1 now counts as sent: its waits fall back to Q; B, counted from the same start, by the event',
  );
  t.ok(r.events.some((e) => e.step === 'warning' && /counters of different incarnations/.test(e.detail ?? '')), 'the handover says why');
  assertIntact(t, d, 'vnf1 → vnf2 after a switch reload');
});
