// The overhead distribution chart (results/overhead.svg): one point per
// handover on a cumulative curve, the 5 ms target beside it, the median and
// p99 in the title.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeOverheadDistribution } from '../../src/bench/overhead-report.js';

t.test('a CDF of the handovers\' overheads, with the target', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-ovh-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = writeOverheadDistribution(dir, { handovers: 4, pps: 5000, stateDelayMs: 100, overheadMedianMs: 12.5, overheadP99Ms: 40, overheadsMs: [8, 12.5, 20, 40], overheadsInOrderMs: [40, 8, 20, 12.5], beyondStateMoveMedianMs: 10, beyondStateMoveP99Ms: 35, allClean: true }, 'test box');
  t.equal(file, path.join(dir, 'results/overhead.svg'));
  const svg = readFileSync(file, 'utf8');
  t.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  t.match(svg, /median 12.5 ms, p99 40 ms/);
  t.match(svg, /target p99 ≤ 5 ms/);
  t.equal((svg.match(/<circle /g) ?? []).length >= 4 || /<polyline /.test(svg), true, 'the handovers are drawn');
});
