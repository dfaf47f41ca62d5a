/** The overhead bench's distribution as an SVG chart: the share of handovers whose overhead is at most x (a CDF), beside the 5 ms target. */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { svgChart } from '../report/svg-chart.js';
import type { OverheadResult } from './handover.js';

/** the target: a handover costs at most this beyond its state move (p99) */
export const OVERHEAD_TARGET_MS = 5;

/** results/overhead.svg: one point per handover (its overhead, the share at or below it). */
export function writeOverheadDistribution(repoRoot: string, r: OverheadResult, machine: string): string {
  mkdirSync(path.join(repoRoot, 'results'), { recursive: true });
  const n = r.overheadsMs.length;
  const cdf = r.overheadsMs.map((ms, i): [number, number] => [ms, (i + 1) / n]);
  const svg = svgChart({
    title: `Handover overhead beyond the state move: median ${r.overheadMedianMs} ms, p99 ${r.overheadP99Ms} ms`,
    xLabel: `duration − state delay (ms); ${n} handovers, ${r.pps} pps, ${r.stateDelayMs} ms state delay; ${machine}`,
    yLabel: 'share of handovers at or below',
    series: [
      { name: 'handovers (cumulative share)', points: cdf },
      { name: `target p99 ≤ ${OVERHEAD_TARGET_MS} ms`, points: [[OVERHEAD_TARGET_MS, 0], [OVERHEAD_TARGET_MS, 1]] },
    ],
  });
  const file = path.join(repoRoot, 'results/overhead.svg');
  writeFileSync(file, svg);
  return file;
}
