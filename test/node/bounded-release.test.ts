// A bounded release over the node API (the engine's windows towards P4
// switches use it): on the XDP lab's node processes, an agent holding a
// flow releases at most maxFrames per call, says what it released, what is
// still held and which side passes; a later call (bounded or not) goes on
// where it stopped, and every frame arrives once, in order.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openLab } from '../../src/lab/open-lab.js';
import { installRules, standardSpec, type NetnsLab } from '../../src/lab/netns-lab.js';
import { Phase } from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';
import { uniqueName } from '../helpers/env.js';
import { objectsDir } from '../helpers/lab.js';
import { twoWayProbes } from '../helpers/handovers.js';

type Held = { dp: Awaited<ReturnType<typeof openLab>>['dp']; fwd: { id: number }; probes: ReturnType<typeof twoWayProbes> };

/**
 * A node-process lab whose forward flow goes to vnf2 and is held there under
 * handover `hid` (as after a switch-over), probes both ways at `pps`; the
 * reverse flow stays on vnf1. Everything goes on teardown.
 */
async function heldFlow(t: Test, o: { ringCapacity: number; pps: number; hid: number; holdMs: number }): Promise<Held> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-bounded-release-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const opened = await openLab(standardSpec({ ringCapacity: o.ringCapacity }), `${uniqueName('brl')}-`, { objectsDir, workDir: path.join(dir, 'work'), target: 'xdp' });
  t.teardown(() => opened.close());
  const dp = opened.dp;
  const installed = await installRules(dp, opened.lab.spec.rules);
  const fwd = installed.find((r) => r.switch === 's1' && r.action.outPort === 's1-vnf1');
  if (fwd === undefined) throw new Error('the standard lab has no forward rule on s1 towards vnf1');
  const probes = twoWayProbes(t, opened.lab as NetnsLab, { objectsDir, flows: 1 });
  probes.start(o.pps);
  await sleep(300);
  await dp.armNew('vnf2', o.hid, 0);
  await dp.setRuleAction(fwd.id, { outPort: 's1-vnf2', phase: Phase.POST, handoverId: o.hid });
  await sleep(o.holdMs);
  return { dp, fwd, probes };
}

/** The flow unmarked at vnf2, the handover forgotten, the probes stopped: every one delivered once, in order. */
async function finishIntact(t: Test, h: Held, hid: number): Promise<void> {
  await h.dp.setRuleAction(h.fwd.id, { outPort: 's1-vnf2', phase: Phase.NONE, handoverId: 0 });
  await sleep(200);
  await h.dp.disarm('vnf2', hid);
  await sleep(200);
  const reports = await h.probes.stop();
  reports.forEach((r, i) =>
    t.same({ delivered: r.delivered, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated }, { delivered: r.sent, lost: 0, reordered: 0, duplicated: 0 }, `direction ${i}: all ${r.sent} probes delivered once, in order`),
  );
}

t.test('a release bounded per call goes on where the last one stopped, in order, over the node API', async (t) => {
  const hid = 4242;
  const h = await heldFlow(t, { ringCapacity: 8192, pps: 500, hid, holdMs: 1000 });
  const dp = h.dp;
  await t.rejects(dp.release('vnf2', hid, { maxFrames: 0 }), { message: /maxFrames 0: must be an integer 1\.\./ }, 'a bound of 0 is refused');

  const a = await dp.release('vnf2', hid, { maxFrames: 100 });
  t.same(a.releasedNow, [100n, 0n], 'the first call released 100 frames of the held side');
  t.same(a.passing, [false, true], 'that side still holds; the other (nothing held) passes');
  t.ok(a.queued !== undefined && a.queued[0] > 100, `${a.queued?.[0]} frames still held`);
  await sleep(200);
  const b = await dp.release('vnf2', hid, { maxFrames: 100 });
  t.same([b.releasedNow, b.passing], [[100n, 0n], [false, true]], 'the second call 100 more');
  const c = await dp.release('vnf2', hid);
  t.same(c.passing, [true, true], 'unbounded: the rest, and the side passes');
  t.ok(c.releasedNow !== undefined && c.releasedNow[0] >= BigInt(b.queued![0]), `${c.releasedNow?.[0]} frames released by the last call`);
  const st = await dp.agentStatus('vnf2', hid);
  t.ok(st !== undefined && st.released[0] === st.held[0] && st.queued[0] === 0, `all ${st?.held[0]} held frames released, none left`);

  await finishIntact(t, h, hid);
});

t.test('a release given less time than its backlog needs ends at its deadline, says so, and keeps the rest held in order', async (t) => {
  const hid = 4343;
  const h = await heldFlow(t, { ringCapacity: 65536, pps: 20_000, hid, holdMs: 2000 });
  const dp = h.dp;
  const held = (await dp.agentStatus('vnf2', hid))!;
  t.ok(held.queued[0] > 20_000, `${held.queued[0]} frames held`);
  // 20 ms for the call, 10 of them the node's: far less than tens of thousands of frames take
  const t0 = performance.now();
  await t.rejects(dp.release('vnf2', hid, { timeoutMs: 20 }), { message: /releasing handover 4343 did not finish within 10 ms: \d+ frames still held on side 0 \(\d+ sent in this call; they stay in the ring, in order\)/ }, 'the call ends at its deadline and says what is still held');
  const took = performance.now() - t0;
  const mid = (await dp.agentStatus('vnf2', hid))!;
  t.ok(mid.queued[0] > 0 && mid.released[0] < mid.held[0], `the rest is still held (${mid.queued[0]} frames; ${mid.released[0]} released), answered in ${took.toFixed(0)} ms`);
  const done = await dp.release('vnf2', hid, { timeoutMs: 10_000 });
  t.same(done.passing, [true, true], 'a release with time enough finishes');
  await finishIntact(t, h, hid);
});
