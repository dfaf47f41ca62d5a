// The release's windows against the in-memory deployment (no root): towards
// switches that count what they took in from a port (P4 switches), never
// more than the window in flight at a port; a counter that stops moving
// ends the windows with a warning, and the release goes on; a controller
// killed between windows leaves the rest held, in order, for the next one's
// recovery; towards switches without the counter (XDP), one unbounded
// release as before; a host port the release crowds out: paced against where
// the switch says, its losses counted there. The BMv2 run of the same is
// release-bmv2.test.ts.
import t, { type Test } from 'tap';
import { FakeDeployment } from '../helpers/fake-deployment.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { MemoryJournal } from '../../src/handover/journal.js';
import { VnfMapStateMover } from '../../src/handover/state-mover.js';
import { GateMover } from '../helpers/gate-mover.js';
import { Phase } from '../../src/dataplane/types.js';

const UDP = 17;
const W = 100;

async function setup(): Promise<{ d: FakeDeployment; rules: number[] }> {
  const d = new FakeDeployment(['vnf1', 'vnf2'], 8192);
  const fwd = await d.switchControl.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 9000, proto: UDP } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  const rev = await d.switchControl.addRule({ switch: 's2', match: { kind: 'exact', flow: { src: '10.0.0.2', dst: '10.0.0.1', sport: 9000, dport: 1000, proto: UDP } }, action: { outPort: 's2-vnf1', phase: Phase.NONE, handoverId: 0 } });
  for (let i = 0; i < 10; i++) d.tick();
  return { d, rules: [fwd.id, rev.id] };
}

/** A handover from vnf1 to vnf2 holding `frames` frames per direction at vnf2 (sent during its state move). */
async function holdAndRelease(d: FakeDeployment, engine: HandoverEngine, rules: number[], gate: GateMover, frames: number): ReturnType<HandoverEngine['handover']> {
  const p = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1 });
  await gate.entered;
  for (let i = 0; i < frames; i++) d.tick();
  gate.open();
  return p;
}

function assertIntact(t: Test, d: FakeDeployment): void {
  for (let i = 0; i < 10; i++) d.tick();
  const r = d.report();
  t.same({ lost: r.lost, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches, delivered: r.delivered }, { lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0, delivered: r.sent }, `all ${r.sent} frames delivered once, in order, the VNF's counter continuous`);
}

t.test('towards switches that count what they took in, the release goes in windows: never more than the window in flight at a port', async (t) => {
  const { d, rules } = await setup();
  d.p4Ingest = { perRead: 30 };
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
  const res = await holdAndRelease(d, engine, rules, gate, 600);
  t.equal(res.outcome, 'completed', res.reason ?? '');
  t.ok(res.counts.held > 1000n, `${res.counts.held} frames held`);
  const bounds = d.releaseBounds;
  t.ok(bounds.length >= 1200 / W, `${bounds.length} release calls`);
  t.ok(bounds.every((b) => b !== undefined && b >= 1 && b <= W), `each call bounded by the window (${[...new Set(bounds)].join(', ')})`);
  for (const port of ['s1-vnf2', 's2-vnf2']) {
    const g = d.ingest.get(port);
    t.ok(g !== undefined && g.taken + BigInt(g.waiting) > 500n, `${port}: ${g?.taken} frames taken in, ${g?.waiting} of the last window still waiting`);
    t.ok(g !== undefined && g.mostWaiting <= W, `${port}: at most ${g?.mostWaiting} frames ever waited there (window ${W})`);
  }
  t.same(res.events.filter((e) => e.step === 'warning').map((e) => e.detail), [], 'no warning');
  assertIntact(t, d);
});

t.test('a switch whose counter stops moving: a warning, and the rest of the release goes at once', async (t) => {
  const { d, rules } = await setup();
  d.p4Ingest = { perRead: 0 };
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
  const res = await holdAndRelease(d, engine, rules, gate, 400);
  t.equal(res.outcome, 'completed', 'the fake loses nothing downstream (and its agents report no interface counts to compare)');
  // the first window half in at each port (none taken, but no more than half the window each) lets a second go; that one stalls
  t.same(d.releaseBounds, [W, W / 2, undefined], 'windows until the counter stalls, then the rest unbounded');
  t.match(
    res.events.filter((e) => e.step === 'warning').map((e) => e.detail),
    [/releasing vnf2 in windows of 100: .*s2\/s2-vnf2 took in none of \d+ frames in flight .*the rest goes at once/],
    'the stall is a warning that names the port',
  );
  assertIntact(t, d);
});

t.test('a controller killed between windows: the rest stays held in order, the next controller releases it', async (t) => {
  const { d, rules } = await setup();
  d.p4Ingest = { perRead: 1000 };
  const journal = new MemoryJournal();
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W, journal });
  // the third window's call never answers: as if the controller died in it (the frames before were released)
  d.hangs.push({ method: 'release', target: 'vnf2', skip: 2 });
  void holdAndRelease(d, engine, rules, gate, 300);
  await gate.entered;
  while (d.calls.filter((c) => c === 'release vnf2').length < 3) await new Promise((r) => setTimeout(r, 5));
  t.equal(journal.entries()[0]?.committed, true, 'the journal says the release had begun');
  const st = await d.agentControl.agentStatus('vnf2', journal.entries()[0]!.id);
  t.ok(st !== undefined && st.released[0] === 2n * BigInt(W) && st.queued[0] > 0, `two windows released (${st?.released[0]}), ${st?.queued[0]} frames still held`);
  const next = new HandoverEngine(d, { mover: new VnfMapStateMover(), releaseWindow: W, journal });
  const [rec] = await next.recover();
  t.equal(rec?.outcome, 'completed', rec?.reason ?? '');
  t.ok(d.releaseBounds.slice(2).every((b) => b !== undefined && b <= W), 'the recovery released in windows too');
  assertIntact(t, d);
});

t.test('towards switches without the counter (XDP), one unbounded release as before', async (t) => {
  const { d, rules } = await setup();
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
  const res = await holdAndRelease(d, engine, rules, gate, 300);
  t.equal(res.outcome, 'completed');
  t.same(d.releaseBounds, [undefined], 'one release call, unbounded');
  t.notOk(d.calls.includes('ingestedFromInstances s1'), 'no counter asked for');
  assertIntact(t, d);
});

t.test('the window is checked', async (t) => {
  const { d } = await setup();
  for (const w of [0, 1, 1.5, -3]) t.throws(() => new HandoverEngine(d, { mover: new VnfMapStateMover(), releaseWindow: w }), { message: /releaseWindow .*: must be an integer 2\.\./ }, `window ${w} refused`);
});

t.test("frames a P4 switch's input buffer drops at a host port during the handover: counted there, the outcome lossy", async (t) => {
  const { d, rules } = await setup();
  d.p4Ingest = { perRead: 1000 };
  d.readsHosts = true;
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
  const p = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1 });
  await gate.entered;
  // h2's live traffic while the switch is busy: 7 frames its port's ring has no room for
  d.loseAtHostInput.set('s2-h2', 7);
  for (let i = 0; i < 50; i++) d.tick();
  gate.open();
  const res = await p;
  t.equal(res.outcome, 'lossy', res.reason ?? '');
  t.same(
    res.drops.filter((x) => x.reason === 'notIngested'),
    [{ where: 's2/s2-h2', reason: 'notIngested', frames: 7n }],
    'the 7 frames, at the port they were lost at, once',
  );
  t.match(res.reason, /7 frames were lost/);
  for (let i = 0; i < 10; i++) d.tick();
  const r = d.report();
  t.equal(r.lost, 7, 'the sink misses exactly those');
  t.equal(r.delivered + Number(res.counts.dropped), r.sent, `sent ${r.sent} = delivered ${r.delivered} + reported ${res.counts.dropped}`);
});

t.test('a P4 switch whose hosts are read: the release waits while a host port holds more than a window more than before it', async (t) => {
  const most = async (readsHosts: boolean): Promise<{ host: number; warnings: string[]; windows: number }> => {
    const { d, rules } = await setup();
    // every frame the release puts in leaves 2 of the host's waiting
    d.p4Ingest = { perRead: 40, crowdOut: 2 };
    d.readsHosts = readsHosts;
    const gate = new GateMover();
    const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
    const p = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1 });
    await gate.entered;
    for (let i = 0; i < 400; i++) d.tick();
    // from the release on (the frames before went through vnf1)
    for (const port of ['s1-h1', 's2-h2']) d.ingest.delete(port);
    gate.open();
    const res = await p;
    t.equal(res.outcome, 'completed', res.reason ?? '');
    assertIntact(t, d);
    return {
      host: Math.max(...['s1-h1', 's2-h2'].map((port) => d.ingest.get(port)?.mostWaiting ?? 0)),
      warnings: res.events.filter((e) => e.step === 'warning').map((e) => e.detail ?? ''),
      windows: d.releaseBounds.length,
    };
  };
  const blind = await most(false);
  const paced = await most(true);
  // a window of W puts 2W at the host port; the next waits until at most W more than at the start is left there
  t.ok(paced.host <= W + 2 * W, `paced: at most ${paced.host} frames waited at a host port (window ${W})`);
  t.ok(blind.host > paced.host, `without the host ports read, ${blind.host} waited there`);
  t.same(paced.warnings, [], 'no warning');
  t.ok(paced.windows >= 800 / W, `${paced.windows} windows`);
});

t.test('a host port whose backlog does not go down with the release held: a warning, the release goes on, and what never went in is lost there', async (t) => {
  const { d, rules } = await setup();
  d.p4Ingest = { perRead: 1000, crowdOut: 3 };
  d.readsHosts = true;
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
  const p = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1 });
  await gate.entered;
  for (let i = 0; i < 300; i++) d.tick();
  // the switch takes nothing in from its host ports any more: reads drain only the ports facing instances
  d.p4Ingest = { perRead: 1000, crowdOut: 3, hostStalled: true };
  gate.open();
  const res = await p;
  t.equal(res.outcome, 'lossy', 'the hosts\' frames that never went in are lost');
  t.same(
    res.drops.map((x) => `${x.where} ${x.reason}`).sort(),
    ['s1/s1-h1 notIngested', 's2/s2-h2 notIngested'],
    'counted at the host ports',
  );
  t.match(
    res.events.filter((e) => e.step === 'warning').map((e) => e.detail),
    [/s\d\/s\d-h\d has \d+ frames waiting to go in, more than a window for \d+ ms with the release held: the switch takes in little more than arrives there; the release goes on/],
    'one warning naming the port',
  );
  assertIntact(t, d);
});

t.test("windows that would outlast the handover's time: the rest goes at once, with a warning, and the flow is not left held", async (t) => {
  const { d, rules } = await setup();
  // a switch that takes in one frame per read: hundreds of windows' worth of reads
  d.p4Ingest = { perRead: 1 };
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W, timeoutMs: 3600 });
  const res = await holdAndRelease(d, engine, rules, gate, 600);
  t.equal(res.outcome, 'completed', res.reason ?? '');
  t.equal(d.releaseBounds.at(-1), undefined, 'the last release unbounded');
  t.ok(d.releaseBounds.length >= 2, `${d.releaseBounds.length - 1} windows before it`);
  t.match(
    res.events.filter((e) => e.step === 'warning').map((e) => e.detail),
    [/releasing vnf2 in windows of 100: the handover has \d+ ms left: the rest goes at once/],
    'one warning, saying why',
  );
  assertIntact(t, d);
});

t.test("B's release waits until the switches have taken in A's last frames at the ports facing A (BMv2 reads its ports in turn: the release would overtake them)", async (t) => {
  const { d, rules } = await setup();
  d.p4Ingest = { perRead: 1 };
  d.readsHosts = true;
  // vnf1's frames pile up at the far switches' ports facing it: taken in one per read from now on
  for (let i = 0; i < 60; i++) d.tick();
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
  const p = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1 });
  await gate.entered;
  const waitingAtA = (): number => (d.ingest.get('s1-vnf1')?.waiting ?? 0) + (d.ingest.get('s2-vnf1')?.waiting ?? 0);
  const before = waitingAtA();
  let atRelease: number | undefined;
  d.onCall = (call) => {
    if (call === 'release' && atRelease === undefined) atRelease = waitingAtA();
  };
  for (let i = 0; i < 100; i++) d.tick();
  gate.open();
  const res = await p;
  t.equal(res.outcome, 'completed', res.reason ?? '');
  t.ok(before > 0, `${before} frames from vnf1 waited at the switches' ports facing it when the state move began`);
  t.equal(atRelease, 0, 'none when the first release went in');
  t.same(res.events.filter((e) => e.step === 'warning').map((e) => e.detail), [], 'no warning');
  assertIntact(t, d);
});

t.test('a ring the flow fills faster than the switch takes the windows in: the rest goes at once, with a warning, and nothing is lost on the way', async (t) => {
  const { d, rules } = await setup();
  // one frame taken in per read, while the flow goes on arriving (a tick a ms): the ring never drains in windows
  d.p4Ingest = { perRead: 1 };
  const gate = new GateMover();
  const engine = new HandoverEngine(d, { mover: gate, releaseWindow: W });
  const p = engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 1 });
  await gate.entered;
  for (let i = 0; i < 300; i++) d.tick();
  d.start(1);
  gate.open();
  const res = await p;
  d.stop();
  t.equal(res.outcome, 'completed', res.reason ?? '');
  t.equal(d.releaseBounds.at(-1), undefined, 'the last release unbounded');
  t.match(
    res.events.filter((e) => e.step === 'warning').map((e) => e.detail),
    [/releasing vnf2 in windows of 100: the ring still holds \d+ frames, not fewer for 1000 ms: the flow fills it faster than the switch takes the windows in; the rest goes at once/],
    'one warning, saying why',
  );
  assertIntact(t, d);
});
