/** The line-rate sweep's files: every step as JSON, and the sweep as an SVG chart. */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { svgChart } from '../report/svg-chart.js';
import type { LineRateResult } from './handover.js';

/** results/linerate.json (every step, with the load average: other work on the machine lowers every figure) and results/linerate.svg (the sweep). */
export function writeLineRate(repoRoot: string, r: LineRateResult, bareMpps: number, machine: string): void {
  mkdirSync(path.join(repoRoot, 'results'), { recursive: true });
  writeFileSync(path.join(repoRoot, 'results/linerate.json'), JSON.stringify({ machine, date: new Date().toISOString(), loadAverage1m: +os.loadavg()[0]!.toFixed(1), bareMpps, ...r }, null, 2) + '\n');
  const svg = svgChart({
    title: `Handovers at line rate: lossless up to ${r.maxLosslessAggregatePps} pps aggregate (${(r.maxLosslessAggregatePps / (bareMpps * 1e6)).toFixed(2)} of bare forwarding)`,
    xLabel: 'offered rate, both directions (packets/s)',
    yLabel: 'packets/s',
    series: [
      { name: 'achieved by the generators', points: r.steps.map((st) => [st.offeredAggregatePps, st.achievedAggregatePps]) },
      { name: 'lost + reordered + duplicated (packets)', points: r.steps.map((st) => [st.offeredAggregatePps, st.lost + st.reordered + st.duplicated]) },
      { name: 'release drain rate (frames/s, median)', points: r.steps.map((st) => [st.offeredAggregatePps, st.releasedPerSecMedian]) },
    ],
  });
  writeFileSync(path.join(repoRoot, 'results/linerate.svg'), svg);
}

