/**
 * BMv2 in `make bench`: for each BMv2 build given, the standard lab on
 * BMv2 (Mininet, two switches, one node process per VNF namespace), its
 * lossless forwarding ceiling (probes both ways, no handovers), then
 * handovers swept at fractions of that ceiling up to where they stop being
 * lossless. Builds are compared side by side in one run (the default build
 * keeps BMv2's logging macros; a throughput build compiles them out: README
 * "P4 on BMv2").
 */
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import { openLab } from './handover.js';
import { bmv2Availability } from '../lab/mininet-lab.js';
import type { TrafficReport } from '../traffic/sink.js';
import type { HandoverResult } from '../handover/engine.js';

export interface Bmv2Build {
  /** a short name for results/bench.json keys: bmv2.<name>.* */
  name: string;
  simpleSwitchGrpc: string;
}

export class Bmv2BuildsError extends Error {
  override name = 'Bmv2BuildsError';
}

/**
 * The builds to measure: SHARP_BMV2_BUILDS="name=/path/to/simple_switch_grpc,…"
 * (e.g. default=/opt/p4/bin/simple_switch_grpc,fast=/opt/p4-fast/bin/simple_switch_grpc),
 * else the simple_switch_grpc on PATH as "path". A reason instead when there is none.
 */
export function bmv2Builds(env: NodeJS.ProcessEnv = process.env): Bmv2Build[] | { reason: string } {
  const avail = bmv2Availability();
  const spec = env['SHARP_BMV2_BUILDS'];
  if (spec === undefined || spec.trim() === '') return avail.ok ? [{ name: 'path', simpleSwitchGrpc: avail.simpleSwitchGrpc }] : { reason: avail.reason };
  const builds: Bmv2Build[] = [];
  for (const entry of spec.split(',').map((x) => x.trim()).filter((x) => x !== '')) {
    const m = /^([A-Za-z][A-Za-z0-9_-]{0,31})=(.+)$/.exec(entry);
    if (m === null) throw new Bmv2BuildsError(`SHARP_BMV2_BUILDS: '${entry}' is not name=/path/to/simple_switch_grpc (name: a letter, then up to 31 letters, digits, _ or -)`);
    const file = path.resolve(m[2]!);
    try {
      accessSync(file, constants.X_OK);
      if (!statSync(file).isFile()) throw new Error('not a file');
    } catch {
      throw new Bmv2BuildsError(`SHARP_BMV2_BUILDS: ${m[1]}: ${file} is not an executable file`);
    }
    if (builds.some((b) => b.name === m[1])) throw new Bmv2BuildsError(`SHARP_BMV2_BUILDS: the name '${m[1]}' is given twice`);
    builds.push({ name: m[1]!, simpleSwitchGrpc: file });
  }
  if (builds.length === 0) throw new Bmv2BuildsError('SHARP_BMV2_BUILDS is set but names no build');
  // Mininet is needed whichever binary runs
  if (!avail.ok && avail.reason.includes('ininet')) return { reason: avail.reason };
  return builds;
}

export interface Bmv2RateTry {
  /** offered probes/s per direction */
  pps: number;
  handovers: number;
  lost: number;
  reordered: number;
  duplicated: number;
  /** every handover completed (handover tries only) */
  completed: boolean;
  /** the handovers' outcomes, e.g. "completed 3, lossy 1" ('' without handovers) */
  outcomes: string;
  /** lost probes the counters explain (the handovers' and the switches' drop counts), and those none does (must be 0) */
  reported: number;
  unaccounted: number;
  clean: boolean;
  /** one-way latency client→server, ms (sampled probes) */
  latencyP50Ms: number;
  latencyP99Ms: number;
}

export interface Bmv2BuildResult {
  build: Bmv2Build;
  /** the highest rate per direction forwarded with nothing lost, reordered or duplicated */
  ceilingPps: number;
  forwarding: Bmv2RateTry[];
  /** the highest rate per direction at which every handover was lossless (0: none was) */
  handoverMaxLosslessPps: number;
  /** handoverMaxLosslessPps ÷ ceilingPps */
  handoverVsCeiling: number;
  handovers: Bmv2RateTry[];
  /** median handover duration at the highest lossless rate, ms */
  handoverMedianMs: number;
  /** why the sweep stopped (the first rate that was not clean, and how) */
  brokeAt?: string;
}

export interface Bmv2BenchOptions {
  /** rates per direction to try for the forwarding ceiling, ascending */
  rates: readonly number[];
  /** seconds of traffic per forwarding rate */
  secondsPerRate: number;
  /** bisection steps between the last clean rate and the first one that was not */
  refine: number;
  /** fractions of the ceiling at which to run handovers, ascending */
  handoverFractions: readonly number[];
  handoversPerRate: number;
  objectsDir: string;
  log?: (line: string) => void;
}

const cleanReport = (r: TrafficReport): boolean => r.sent > 0 && r.lost === 0 && r.reordered === 0 && r.duplicated === 0 && r.stampMismatches === 0 && r.unaccounted === 0;

function what(t: Bmv2RateTry): string {
  const bad = [
    t.lost && `${t.lost} lost (${t.unaccounted === 0 ? 'all' : t.reported} counted where they were lost${t.unaccounted === 0 ? '' : `, ${t.unaccounted} unaccounted`})`,
    t.reordered && `${t.reordered} reordered`,
    t.duplicated && `${t.duplicated} duplicated`,
    !t.completed && `handovers ${t.outcomes}`,
  ].filter(Boolean);
  return `${t.pps} pps per direction: ${bad.join(', ') || 'stamps differ'}`;
}

const median = (xs: readonly number[]): number => (xs.length === 0 ? 0 : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!);

export async function benchBmv2Build(build: Bmv2Build, o: Bmv2BenchOptions): Promise<Bmv2BuildResult> {
  const log = o.log ?? (() => undefined);
  // short: node names are the prefix plus the node's, at most 32 characters
  const s = await openLab(o.objectsDir, `sharp-bv${process.pid % 10000}-${build.name.slice(0, 8)}-`, 8192, { target: 'bmv2', simpleSwitchGrpc: build.simpleSwitchGrpc });
  const tryRate = async (pps: number, handovers: number): Promise<Bmv2RateTry & { results: HandoverResult[] }> => {
    const { directions, results } = await s.runBothWays({ ppsPerDirection: pps, handovers, delayMs: 0, flows: 4, warmupMs: handovers === 0 ? o.secondsPerRate * 1000 : 500 });
    const sum = (k: 'lost' | 'reordered' | 'duplicated'): number => directions.reduce((a, d) => a + d.report[k], 0);
    const completed = results.every((r) => r.outcome === 'completed');
    const outcomes = new Map<string, number>();
    for (const r of results) outcomes.set(r.outcome, (outcomes.get(r.outcome) ?? 0) + 1);
    const lat = directions[0]!.report.latencyUs;
    const t: Bmv2RateTry & { results: HandoverResult[] } = {
      pps,
      handovers: results.length,
      lost: sum('lost'),
      reordered: sum('reordered'),
      duplicated: sum('duplicated'),
      completed,
      outcomes: [...outcomes].map(([k, n]) => `${k} ${n}`).join(', '),
      reported: directions.reduce((a, d) => a + d.report.reported, 0),
      unaccounted: directions.reduce((a, d) => a + d.report.unaccounted, 0),
      clean: completed && directions.every((d) => cleanReport(d.report)),
      latencyP50Ms: +(lat.median / 1000).toFixed(2),
      latencyP99Ms: +(lat.p99 / 1000).toFixed(2),
      results,
    };
    log(`  ${build.name}: ${pps} pps per direction, ${handovers} handovers: ${t.clean ? 'clean' : what(t)}`);
    return t;
  };
  const strip = ({ results: _r, ...t }: Bmv2RateTry & { results: HandoverResult[] }): Bmv2RateTry => t;
  try {
    const forwarding: Bmv2RateTry[] = [];
    let ceiling = 0;
    let failedAt: number | undefined;
    for (const pps of o.rates) {
      const t = await tryRate(pps, 0);
      forwarding.push(strip(t));
      if (!t.clean) {
        failedAt = pps;
        break;
      }
      ceiling = pps;
    }
    for (let i = 0; i < o.refine && failedAt !== undefined && failedAt - ceiling > Math.max(50, ceiling * 0.05); i++) {
      const pps = Math.round((ceiling + failedAt) / 2);
      const t = await tryRate(pps, 0);
      forwarding.push(strip(t));
      if (t.clean) ceiling = pps;
      else failedAt = pps;
    }
    const handovers: Bmv2RateTry[] = [];
    let best = 0;
    let bestMs: number[] = [];
    let brokeAt: string | undefined;
    for (const f of o.handoverFractions) {
      const pps = Math.max(1, Math.round(f * ceiling));
      const t = await tryRate(pps, o.handoversPerRate);
      handovers.push(strip(t));
      if (!t.clean) {
        brokeAt = `${f} of the ceiling, ${what(t)}`;
        break;
      }
      best = pps;
      bestMs = t.results.map((r) => r.durationMs);
    }
    return {
      build,
      ceilingPps: ceiling,
      forwarding,
      handoverMaxLosslessPps: best,
      handoverVsCeiling: ceiling === 0 ? 0 : +(best / ceiling).toFixed(3),
      handovers,
      handoverMedianMs: +median(bestMs).toFixed(1),
      ...(brokeAt === undefined ? {} : { brokeAt }),
    };
  } finally {
    await s.close();
  }
}
