// A long hold released into BMv2: at 400 pps both ways a 6 s state move
// holds about 2,400 frames per direction in vnf2's ring, more than the
// 1,310 frame slots of the libpcap ring BMv2 reads each port with. Released
// as fast as the agent replays them, the ring overflows silently (no
// counter anywhere) and the handover used to say "completed" with frames
// lost. Released in windows against the switch's port_rx counter, nothing
// is lost; released unbounded, the loss is counted (notIngested), never
// "completed" silently. Skipped, with the reason printed, where BMv2 or Mininet is missing.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openLab } from '../../src/lab/open-lab.js';
import { installRules, standardSpec } from '../../src/lab/netns-lab.js';
import type { MininetLab } from '../../src/lab/mininet-lab.js';
import { HandoverEngine, type HandoverResult } from '../../src/handover/engine.js';
import { MAX_RELEASE_FRAMES } from '../../src/dataplane/types.js';
import type { TrafficReport } from '../../src/traffic/sink.js';
import { VnfMapStateMover, DelayedStateMover } from '../../src/handover/state-mover.js';
import { sleep } from '../../src/util/mutex.js';
import { uniqueName } from '../helpers/env.js';
import { bmv2Skip, objectsDir } from '../helpers/lab.js';
import { twoWayProbes } from '../helpers/handovers.js';

const skip = bmv2Skip();
if (skip) t.comment(`BMv2 release test skipped: ${skip}`);
const PPS = 400;
const STATE_DELAY_MS = 6000;

t.test('on BMv2, a handover holding more frames than BMv2 takes in at once releases them all, in order', { skip }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-release-bmv2-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const opened = await openLab(standardSpec({ ringCapacity: 8192 }), `${uniqueName('rlb')}-`, { objectsDir, workDir: path.join(dir, 'work'), target: 'bmv2' });
  t.teardown(() => opened.close());
  const dp = opened.dp;
  const installed = await installRules(dp, opened.lab.spec.rules);
  const rules = installed.filter((r) => r.action.outPort === dp.portTowards(r.switch, 'vnf1')).map((r) => r.id);
  t.ok(rules.length >= 2, `rules ${rules.join(', ')} carry the traffic through vnf1`);
  const mover = new DelayedStateMover(new VnfMapStateMover(), STATE_DELAY_MS);
  const handover = async (from: string, to: string, releaseWindow?: number): Promise<{ res: HandoverResult; reports: TrafficReport[] }> => {
    const engine = new HandoverEngine(dp, { mover, timeoutMs: 60_000, ...(releaseWindow === undefined ? {} : { releaseWindow }) });
    const probes = twoWayProbes(t, opened.lab as MininetLab, { objectsDir, flows: 1 });
    probes.start(PPS);
    await sleep(2000);
    const res = await engine.handover({ rules, from, to, expectedPps: 2 * PPS, capacityPolicy: 'warn' });
    await sleep(3000);
    const reports = await probes.stop();
    const releaseMs = res.timings['cleaning'] !== undefined && res.timings['releasing'] !== undefined ? res.timings['cleaning'] - res.timings['releasing'] : undefined;
    t.comment(`${from} → ${to}: outcome ${res.outcome}${res.reason === undefined ? '' : ` (${res.reason})`}; held ${res.counts.held}, released ${res.counts.released}, dropped ${res.counts.dropped}, release ${releaseMs?.toFixed(0) ?? '?'} ms`);
    for (const [i, r] of reports.entries()) t.comment(`direction ${i}: sent ${r.sent}, delivered ${r.delivered}, lost ${r.lost}, reordered ${r.reordered}, duplicated ${r.duplicated}`);
    for (const ev of res.events.filter((e) => e.step === 'warning')) t.comment(`warning: ${ev.detail ?? ''}`);
    t.ok(reports.every((r) => r.sent > 2 * PPS * (STATE_DELAY_MS / 1000) * 0.5), 'thousands of probes sent each way');
    return { res, reports };
  };

  // windowed: nothing lost
  const w = await handover('vnf1', 'vnf2');
  t.equal(w.res.outcome, 'completed', `the handover completed${w.res.reason === undefined ? '' : ` (${w.res.reason})`}`);
  w.reports.forEach((r, i) =>
    t.same({ delivered: r.delivered, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated }, { delivered: r.sent, lost: 0, reordered: 0, duplicated: 0 }, `direction ${i}: every probe delivered once, in order`),
  );

  // unbounded (as before windows): whatever BMv2 did not take in is counted where it died, and the outcome says so
  const u = await handover('vnf2', 'vnf1', MAX_RELEASE_FRAMES);
  const lost = u.reports.reduce((a, r) => a + r.lost, 0);
  const notIngested = u.res.drops.filter((d) => d.reason === 'notIngested');
  t.equal(u.res.outcome, lost > 0 ? 'lossy' : 'completed', `${lost} probes lost: outcome ${u.res.outcome}`);
  // the count reads tx before port_rx, so probes the flow sends between the two reads count as taken in: it may fall
  // short (by the frames of a P4Runtime read's time; 12 and 18 of 571 and 180 on the loaded lab), never over
  const counted = Number(notIngested.reduce((a, d) => a + d.frames, 0n));
  t.ok(counted <= lost && counted >= lost * 0.9 && (lost === 0) === (counted === 0), `the ${lost} probes lost are the ${counted} frames counted as not taken in (${notIngested.map((d) => `${d.frames} at ${d.where}`).join(', ') || 'none'})`);
  t.ok(notIngested.every((d) => d.where === 's1/s1-vnf1' || d.where === 's2/s2-vnf1'), 'counted at the switch ports facing vnf1, where its release entered');
  t.same(u.reports.map((r) => r.reordered + r.duplicated), [0, 0], 'nothing reordered or duplicated');
});
