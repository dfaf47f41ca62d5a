/**
 * The SHarP paper's evaluation, reproduced side by side with the approach it
 * replaced (`sharpctl bench buffer|rate|duration|forwarding|wildcard`).
 * Every experiment returns {experiment, machine, rows}; one row per measured
 * point, with at least `mode` and the swept parameter.
 */
import os from 'node:os';
import { openLab, type LabSession } from './handover.js';
import { benchForwarding } from './forwarding.js';
import { svgChart, type ChartSeries } from '../report/svg-chart.js';
import type { HandoverResult } from '../handover/engine.js';
import { runSoak } from './soak.js';

export type Mode = 'sharp' | 'controller-buffer';
export const MODES: readonly Mode[] = ['sharp', 'controller-buffer'];
import type { ExperimentName } from './experiment-names.js';
export { EXPERIMENTS, type ExperimentName } from './experiment-names.js';

export type Row = Record<string, number | string | boolean>;

export interface ExperimentResult {
  experiment: ExperimentName;
  machine: string;
  rows: Row[];
  /** SVG plots, by file name */
  plots: Record<string, string>;
}

export interface ExperimentOptions {
  objectsDir: string;
  quick?: boolean;
  progress?: (line: string) => void;
  /** namespace prefix (unique per run) */
  prefix?: string;
  /** soak: handovers in all (default 10,000; --quick: 200) */
  handovers?: number;
}

export function machine(): string {
  return `${os.cpus().length} vCPU ${os.cpus()[0]?.model.trim() ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}`;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : 0;
};

async function withLab<T>(o: ExperimentOptions, tag: string, fn: (s: LabSession) => Promise<T>, ringCapacity?: number): Promise<T> {
  // in-process: the experiments compare SHarP with the controller-buffer baseline on one path, and the baseline's packet path is not part of the node API
  const s = await openLab(o.objectsDir, `${o.prefix ?? `sharp-exp${process.pid}`}-${tag}-`, ringCapacity, { via: 'in-process' });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

function clean(report: { lost: number; reordered: number; duplicated: number }, results: HandoverResult[]): boolean {
  return report.lost === 0 && report.reordered === 0 && report.duplicated === 0 && results.every((r) => r.outcome === 'completed');
}

/** 1 and 3: controller buffer and handover duration vs state-transfer delay, both modes. */
async function delaySweep(o: ExperimentOptions): Promise<Row[]> {
  const delays = o.quick ? [0, 100, 500] : [0, 50, 100, 250, 500, 1000, 2000, 5000];
  const reps = o.quick ? 1 : 3;
  const pps = 1000;
  const rows: Row[] = [];
  await withLab(o, 'delay', async (s) => {
    for (const mode of MODES)
      for (const delay of delays) {
        const peaksB: number[] = [];
        const peaksP: number[] = [];
        const durations: number[] = [];
        let lost = 0;
        let reordered = 0;
        let duplicated = 0;
        let ctlBytes = 0;
        let ok = true;
        for (let r = 0; r < reps; r++) {
          const before = await s.dp.controllerDataPackets();
          const { report, results } = await s.run({ pps, handovers: 1, delayMs: delay, mode, warmupMs: 100 });
          const after = await s.dp.controllerDataPackets();
          ctlBytes += Number(after.bytes - before.bytes);
          for (const h of results) {
            peaksB.push(h.controllerBuffer.peakBytes);
            peaksP.push(h.controllerBuffer.peakPackets);
            durations.push(h.durationMs);
          }
          lost += report.lost;
          reordered += report.reordered;
          duplicated += report.duplicated;
          ok &&= clean(report, results);
        }
        o.progress?.(`${mode} state delay ${delay} ms: buffer peak ${median(peaksP)} packets, handover ${median(durations).toFixed(1)} ms${ok ? '' : ' — NOT CLEAN'}`);
        rows.push({
          mode,
          stateDelayMs: delay,
          pps,
          repetitions: reps,
          controllerBufferPeakBytes: median(peaksB),
          controllerBufferPeakPackets: median(peaksP),
          controllerBufferPeakBytesMin: Math.min(...peaksB),
          controllerBufferPeakBytesMax: Math.max(...peaksB),
          controllerDataBytes: ctlBytes,
          handoverMs: +median(durations).toFixed(2),
          handoverMsMin: +Math.min(...durations).toFixed(2),
          handoverMsMax: +Math.max(...durations).toFixed(2),
          lost,
          reordered,
          duplicated,
        });
      }
  });
  return rows;
}

async function rateSweep(o: ExperimentOptions): Promise<Row[]> {
  const rates = o.quick ? [100, 1000, 5000] : [100, 1000, 10_000, 50_000, 100_000];
  const rows: Row[] = [];
  await withLab(o, 'rate', async (s) => {
    for (const mode of MODES)
      for (const pps of rates) {
        const { report, results, seconds } = await s.run({ pps, handovers: o.quick ? 2 : 4, delayMs: 20, mode, warmupMs: 100 });
        const peak = Math.max(0, ...results.map((r) => r.controllerBuffer.peakPackets));
        const overflow = results.reduce((a, r) => a + Number(r.counts.overflow), 0);
        o.progress?.(`${mode} ${pps} pps: sent ${report.sent}, lost ${report.lost}, reordered ${report.reordered}, duplicated ${report.duplicated}`);
        rows.push({
          mode,
          pps,
          achievedPps: Math.round(report.sent / seconds),
          handovers: results.length,
          completed: results.filter((r) => r.outcome === 'completed').length,
          sent: report.sent,
          lost: report.lost,
          reordered: report.reordered,
          duplicated: report.duplicated,
          stampMismatches: report.stampMismatches,
          controllerBufferPeakPackets: peak,
          /** frames dropped because the new instance's hold ring was full (reported, part of lost) */
          reportedOverflow: overflow,
        });
      }
  }, 16384);
  return rows;
}

async function wildcardSweep(o: ExperimentOptions): Promise<Row[]> {
  const counts = o.quick ? [1, 10, 100] : [1, 10, 100, 1000];
  const rows: Row[] = [];
  await withLab(o, 'wild', async (s) => {
    for (const flows of counts) {
      const pps = Math.max(1000, flows * 4);
      // every flow must have sent (and so have state) before the move
      const warmupMs = Math.ceil((flows / pps) * 1000 * 3) + 100;
      const { report, results } = await s.run({ pps, handovers: 1, delayMs: 0, flows, warmupMs });
      const h = results[0]!;
      o.progress?.(`${flows} flows: handover ${h.durationMs.toFixed(1)} ms, ${h.state?.records ?? 0} state records`);
      rows.push({ mode: 'sharp', flows, pps, handoverMs: +h.durationMs.toFixed(2), stateMs: +h.stateMs.toFixed(2), stateRecords: h.state?.records ?? 0, lost: report.lost, reordered: report.reordered, duplicated: report.duplicated });
    }
  });
  return rows;
}

function series(rows: Row[], x: string, y: string, spread?: [string, string]): ChartSeries[] {
  const modes = [...new Set(rows.map((r) => String(r['mode'])))];
  return modes.map((m) => {
    const rs = rows.filter((r) => r['mode'] === m);
    return {
      name: m,
      points: rs.map((r) => [Number(r[x]), Number(r[y])] as const),
      ...(spread ? { spread: rs.map((r) => [Number(r[spread[0]]), Number(r[spread[1]])] as const) } : {}),
    };
  });
}

export async function runExperiment(name: ExperimentName, o: ExperimentOptions): Promise<ExperimentResult> {
  const base = { experiment: name, machine: machine() };
  switch (name) {
    case 'buffer': {
      const rows = (await delaySweep(o)).map((r) => ({ ...r }));
      return {
        ...base,
        rows,
        plots: {
          'buffer.svg': svgChart({ title: 'Controller buffer peak vs state-transfer delay (1000 pps)', xLabel: 'state-transfer delay (ms)', yLabel: 'controller buffer peak (bytes)', series: series(rows, 'stateDelayMs', 'controllerBufferPeakBytes', ['controllerBufferPeakBytesMin', 'controllerBufferPeakBytesMax']) }),
        },
      };
    }
    case 'duration': {
      const rows = (await delaySweep(o)).map((r) => ({ mode: r['mode']!, stateDelayMs: r['stateDelayMs']!, handoverMs: r['handoverMs']!, handoverMsMin: r['handoverMsMin']!, handoverMsMax: r['handoverMsMax']!, lost: r['lost']!, reordered: r['reordered']!, duplicated: r['duplicated']! }));
      return {
        ...base,
        rows,
        plots: { 'duration.svg': svgChart({ title: 'Handover duration vs state-transfer delay', xLabel: 'state-transfer delay (ms)', yLabel: 'handover duration (ms)', series: series(rows, 'stateDelayMs', 'handoverMs', ['handoverMsMin', 'handoverMsMax']) }) },
      };
    }
    case 'rate': {
      const rows = await rateSweep(o);
      const lossRows = rows.map((r) => ({ ...r, disorder: Number(r['lost']) + Number(r['reordered']) + Number(r['duplicated']) }));
      return {
        ...base,
        rows,
        plots: { 'rate.svg': svgChart({ title: 'Lost + reordered + duplicated vs offered rate (4 handovers, 20 ms state)', xLabel: 'offered rate (packets/s)', yLabel: 'packets lost, reordered or duplicated', xLog: true, series: series(lossRows, 'pps', 'disorder') }) },
      };
    }
    case 'forwarding': {
      const f = await benchForwarding(o.objectsDir, o.quick ? { frames: 500_000, rounds: 1 } : { frames: 2_000_000, rounds: 3 });
      const rows: Row[] = [
        { mode: 'bare-redirect', marking: false, mpps: f.bareMpps, vsBare: 1 },
        { mode: 'switch', marking: false, mpps: f.switchMpps, vsBare: f.switchVsBareRatio },
        { mode: 'switch', marking: true, mpps: f.switchMarkedMpps, vsBare: f.switchMarkedVsBareRatio },
      ];
      o.progress?.(`bare ${f.bareMpps} Mpps, switch ${f.switchMpps} (${f.switchVsBareRatio}), marking ${f.switchMarkedMpps} (${f.switchMarkedVsBareRatio})`);
      return { ...base, rows, plots: {} };
    }
    case 'soak': {
      const r = await runSoak({ objectsDir: o.objectsDir, handovers: o.handovers ?? (o.quick ? 200 : 10_000), ...(o.prefix === undefined ? {} : { prefix: `${o.prefix}-soak-` }), ...(o.progress === undefined ? {} : { progress: o.progress }) });
      for (const p of r.problems) o.progress?.(`NOT CLEAN: ${p}`);
      const row: Row = {
        handovers: r.handovers,
        completed: r.outcomes['completed'] ?? 0,
        pps: r.pps,
        maxStateDelayMs: r.maxDelayMs,
        seconds: r.seconds,
        handoverMsMedian: r.handoverMs.median,
        handoverMsP99: r.handoverMs.p99,
        sent: r.directions.reduce((a, d) => a + d.sent, 0),
        lost: r.directions.reduce((a, d) => a + d.lost, 0),
        reordered: r.directions.reduce((a, d) => a + d.reordered, 0),
        duplicated: r.directions.reduce((a, d) => a + d.duplicated, 0),
        stampMismatches: r.directions.reduce((a, d) => a + d.stampMismatches, 0),
        unaccounted: r.directions.reduce((a, d) => a + d.unaccounted, 0),
        held: r.held,
        released: r.released,
        rssWindow: r.rss.window,
        rssFirstMiB: r.rss.firstMiB,
        rssLastMiB: r.rss.lastMiB,
        rssPeakMiB: r.rss.peakMiB,
        heapFirstMiB: r.heap.firstMiB,
        heapLastMiB: r.heap.lastMiB,
        externalFirstMiB: r.external.firstMiB,
        externalLastMiB: r.external.lastMiB,
        fdsBefore: r.fds.before,
        fdsAfter: r.fds.after,
        bpfFdsFirst: r.bpf.first.maps + r.bpf.first.progs + r.bpf.first.links,
        bpfFdsLast: r.bpf.last.maps + r.bpf.last.progs + r.bpf.last.links,
        bpfLeaked: r.bpf.leaked.maps.length + r.bpf.leaked.progs.length + r.bpf.leaked.links.length,
        clean: r.clean,
      };
      return { ...base, rows: [row], plots: {} };
    }
    case 'manyflows': {
      const { benchManyFlows } = await import('./many-flows.js');
      const r = await benchManyFlows({
        objectsDir: o.objectsDir,
        prefix: `${o.prefix ?? `sharp-exp${process.pid}`}-mf`,
        ...(o.quick ? { exactFlows: 2000, wildcardFlows: 20_000 } : {}),
        ...(o.progress === undefined ? {} : { progress: o.progress }),
      });
      // one row per figure: the bench.json keys and their values
      return { ...base, rows: Object.entries(r.figures).map(([figure, value]) => ({ figure, value })), plots: {} };
    }
    case 'wildcard': {
      const rows = await wildcardSweep(o);
      return {
        ...base,
        rows,
        plots: { 'wildcard.svg': svgChart({ title: 'Time to move a wildcard rule vs flows it carries', xLabel: 'flows', yLabel: 'handover duration (ms)', xLog: true, series: series(rows, 'flows', 'handoverMs') }) },
      };
    }
  }
}
