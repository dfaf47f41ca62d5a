/**
 * Handover benchmarks in a netns lab:
 *  - the highest offered rate at which handovers stay lossless and ordered;
 *  - handover completion time minus the injected state-transfer delay.
 */
import { createNetnsLab, destroyLab, installRules } from '../lab/netns-lab.js';
import { XdpDataPlane } from '../dataplane/xdp/xdp-dataplane.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../traffic/sink.js';
import { HandoverEngine, flowMoved, type HandoverResult } from '../handover/engine.js';
import { DelayedStateMover, VnfMapStateMover } from '../handover/state-mover.js';
import { sleep } from '../util/mutex.js';

export interface RunOptions {
  pps: number;
  handovers: number;
  delayMs: number;
  mode?: 'sharp' | 'controller-buffer';
  flows?: number;
  /** traffic before the first handover (every flow should have state by then) */
  warmupMs?: number;
  onResult?: (r: HandoverResult) => void;
}

export interface LabSession {
  dp: XdpDataPlane;
  rules: number[];
  run(o: RunOptions): Promise<{ report: TrafficReport; results: HandoverResult[]; seconds: number }>;
  close(): Promise<void>;
}

/** The default lab with wildcard rules through vnf1, ready to move. */
export async function openLab(objectsDir: string, prefix: string, ringCapacity = 8192): Promise<LabSession> {
  destroyLab(prefix);
  const lab = createNetnsLab({ prefix, ringCapacity, ringCount: 2 });
  let dp: XdpDataPlane;
  try {
    dp = await XdpDataPlane.create(lab.topology, { objectsDir });
  } catch (e) {
    destroyLab(prefix);
    throw e;
  }
  const rules = await installRules(dp, lab.spec.rules);
  const f = rules.find((x) => x.action.outPort === 's1-vnf1')!;
  const r = rules.find((x) => x.action.outPort === 's2-vnf1')!;
  let at = 'vnf1';
  let runs = 0;
  return {
    dp,
    rules: [f.id, r.id],
    async run({ pps, handovers, delayMs, mode = 'sharp', flows = 8, warmupMs = 100, onResult }) {
      const sink = new TrafficSink({ objectsDir, netns: lab.server.netns, ifname: lab.server.ifname, sampleEvery: 50 });
      // new flows for every run: the VNF's counters of earlier runs' flows go on from where they were
      const basePort = 20000 + 100 * runs++;
      const gen = new TrafficGenerator({ objectsDir, netns: lab.client.netns, ifname: lab.client.ifname, srcMac: lab.client.mac, dstMac: lab.server.mac, srcIp: lab.client.ip, dstIp: lab.server.ip, flows, basePort, burst: 128 });
      try {
        const engine = new HandoverEngine(dp, { mover: new DelayedStateMover(new VnfMapStateMover(), delayMs) });
        const t0 = performance.now();
        gen.start(pps);
        await sleep(warmupMs);
        const results: HandoverResult[] = [];
        for (let i = 0; i < handovers; i++) {
          const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
          const res = await engine.handover({ rules: [f.id, r.id], from: at, to, expectedPps: pps, expectedStateMs: delayMs, capacityPolicy: 'warn', mode });
          if (flowMoved(res)) at = to;
          results.push(res);
          onResult?.(res);
          await sleep(10);
        }
        await gen.stop();
        const seconds = (performance.now() - t0) / 1000;
        await sink.drain(gen.sent);
        return { report: sink.report(gen.sentPerFlow()), results, seconds };
      } finally {
        sink.close();
        gen.close();
      }
    },
    async close() {
      await dp.close();
      destroyLab(prefix);
    },
  };
}

const clean = (r: TrafficReport): boolean => r.lost === 0 && r.reordered === 0 && r.duplicated === 0 && r.stampMismatches === 0 && r.sent > 0;

export interface MaxRateResult {
  maxLosslessPps: number;
  /** every rate tried and what happened */
  tried: { pps: number; achievedPps: number; handovers: number; lost: number; reordered: number; duplicated: number; clean: boolean }[];
}

export async function benchMaxLosslessRate(objectsDir: string, rates: readonly number[], handoversPerRate = 5): Promise<MaxRateResult> {
  const s = await openLab(objectsDir, `sharp-bench-rate-${process.pid}-`);
  const tried: MaxRateResult['tried'] = [];
  let best = 0;
  try {
    for (const pps of rates) {
      const { report, results, seconds: secs } = await s.run({ pps, handovers: handoversPerRate, delayMs: 0 });
      const ok = clean(report) && results.every((x) => x.outcome === 'completed' && x.counts.overflow === 0n);
      tried.push({ pps, achievedPps: Math.round(report.sent / secs), handovers: results.length, lost: report.lost, reordered: report.reordered, duplicated: report.duplicated, clean: ok });
      if (ok) best = Math.max(best, Math.round(report.sent / secs));
      else break;
    }
  } finally {
    await s.close();
  }
  return { maxLosslessPps: best, tried };
}

export interface OverheadResult {
  handovers: number;
  pps: number;
  stateDelayMs: number;
  overheadMedianMs: number;
  overheadP99Ms: number;
  allClean: boolean;
}

export async function benchOverhead(objectsDir: string, o: { handovers: number; pps: number; delayMs: number }): Promise<OverheadResult> {
  const s = await openLab(objectsDir, `sharp-bench-ovh-${process.pid}-`);
  try {
    const { report, results } = await s.run({ pps: o.pps, handovers: o.handovers, delayMs: o.delayMs });
    const over = results.map((r) => r.durationMs - o.delayMs).sort((a, b) => a - b);
    const q = (p: number): number => over[Math.min(over.length - 1, Math.floor(p * over.length))]!;
    return {
      handovers: results.length,
      pps: o.pps,
      stateDelayMs: o.delayMs,
      overheadMedianMs: +q(0.5).toFixed(2),
      overheadP99Ms: +q(0.99).toFixed(2),
      allClean: clean(report) && results.every((r) => r.outcome === 'completed'),
    };
  } finally {
    await s.close();
  }
}
