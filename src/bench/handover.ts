/**
 * Handover benchmarks in a netns lab:
 *  - the highest offered rate at which handovers stay lossless and ordered;
 *  - handover completion time minus the injected state-transfer delay;
 *  - line rate: natively paced traffic in both directions, swept up to where
 *    handovers stop being lossless, and what broke there.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { installRules, standardSpec, type NetnsLab } from '../lab/netns-lab.js';
import { openLab as openAnyLab } from '../lab/open-lab.js';
import { NodeLabDataPlane } from '../lab/lab-nodes.js';
import { NodeClient } from '../node/client.js';
import { LIMITS } from '../lab/spec/types.js';
import { localDeployment, type DataPlane } from '../dataplane/types.js';
import { TrafficAccounting } from '../traffic/accounting.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../traffic/sink.js';
import { HandoverEngine, type HandoverResult } from '../handover/engine.js';
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

export interface DirectionReport {
  name: 'client→server' | 'server→client';
  report: TrafficReport;
  /** probes per second the generator handed to its interface */
  achievedPps: number;
}

export interface BothWaysOptions {
  /** offered packets/s per direction */
  ppsPerDirection: number;
  handovers: number;
  delayMs: number;
  flows?: number;
  warmupMs?: number;
  frameSize?: number;
}

export interface LabSession {
  lab: NetnsLab;
  /** node processes (the production path), or in this process */
  via: 'nodes' | 'in-process';
  dp: DataPlane;
  rules: number[];
  ringCapacity: number;
  run(o: RunOptions): Promise<{ report: TrafficReport; results: HandoverResult[]; seconds: number }>;
  /** Natively paced traffic client→server and server→client at once, checked in the kernel, with handovers of both rules. */
  /** `refused`: a handover the engine refused to begin (and what the one before it left), which ended the run early */
  runBothWays(o: BothWaysOptions): Promise<{ directions: DirectionReport[]; results: HandoverResult[]; seconds: number; refused?: string }>;
  close(): Promise<void>;
}

/**
 * The default lab with wildcard rules through vnf1, ready to move. By
 * default a lab of node processes driven over its management network with
 * mutual TLS — the path a deployment takes (`lab up`, `make demo`);
 * in-process where a bench compares with the controller-buffer baseline
 * (the paper's experiments, kept as measured before the nodes).
 */
export async function openLab(
  objectsDir: string,
  prefix: string,
  ringCapacity = 8192,
  o: { via?: 'nodes' | 'in-process'; ringCount?: number; target?: 'xdp' | 'bmv2'; simpleSwitchGrpc?: string } = {},
): Promise<LabSession> {
  const via = o.via ?? 'nodes';
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'sharp-bench-'));
  let opened: Awaited<ReturnType<typeof openAnyLab>>;
  try {
    opened = await openAnyLab(standardSpec({ ringCapacity, ringCount: o.ringCount ?? 2 }), prefix, {
      objectsDir,
      workDir,
      target: o.target ?? 'xdp',
      via,
      ...(o.simpleSwitchGrpc === undefined ? {} : { simpleSwitchGrpc: o.simpleSwitchGrpc }),
    });
  } catch (e) {
    rmSync(workDir, { recursive: true, force: true });
    throw e;
  }
  const { lab, dp } = opened;
  const rules = await installRules(dp, lab.spec.rules);
  const f = rules.find((x) => x.action.outPort === 's1-vnf1')!;
  const r = rules.find((x) => x.action.outPort === 's2-vnf1')!;
  let at = 'vnf1';
  // where the rules send now, whatever the outcome said: a handover that failed after its commit leaves them at B
  const where = (was: string): string => dp.instances().find((i) => dp.portTowards('s1', i.name) === dp.getRule(f.id)?.action.outPort)?.name ?? was;
  let runs = 0;
  const nextBasePort = (): number => 20000 + 100 * runs++;
  return {
    lab,
    via,
    dp,
    rules: [f.id, r.id],
    ringCapacity,
    async runBothWays({ ppsPerDirection, handovers, delayMs, flows = 8, warmupMs = 200, frameSize = 74 }) {
      const basePort = nextBasePort();
      const closers: (() => void)[] = [];
      const accounting = new TrafficAccounting(localDeployment(dp), lab.topology, [
        { name: 'client→server', from: lab.client.name, to: lab.server.name },
        { name: 'server→client', from: lab.server.name, to: lab.client.name },
      ]);
      // a few thousand latency events a second at most: the checks themselves cover every probe in the kernel
      const eventEvery = Math.max(1, Math.ceil(ppsPerDirection / 5000));
      const mk = (name: DirectionReport['name'], from: typeof lab.client, to: typeof lab.client): { name: DirectionReport['name']; gen: TrafficGenerator; sink: TrafficSink } => {
        const sink = new TrafficSink({ objectsDir, netns: to.netns, ifname: to.ifname, sampleEvery: 50, eventEvery, flows });
        closers.push(() => sink.close());
        const gen = new TrafficGenerator({ objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows, basePort, frameSize, pacing: 'native' });
        closers.push(() => gen.close());
        return { name, gen, sink };
      };
      try {
        const dirs = [mk('client→server', lab.client, lab.server), mk('server→client', lab.server, lab.client)];
        await accounting.start();
        const engine = new HandoverEngine(dp, { mover: new DelayedStateMover(new VnfMapStateMover(), delayMs) });
        const t0 = performance.now();
        for (const d of dirs) d.gen.start(ppsPerDirection);
        await sleep(warmupMs);
        const results: HandoverResult[] = [];
        let refused: string | undefined;
        for (let i = 0; i < handovers; i++) {
          const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
          let res: HandoverResult;
          try {
            res = await engine.handover({ rules: [f.id, r.id], from: at, to, expectedPps: 2 * ppsPerDirection, expectedStateMs: delayMs, capacityPolicy: 'warn' });
          } catch (e) {
            // refused before it began (validation): what the handover before left is the finding
            const before = results.at(-1);
            refused = `handover ${i + 1} refused: ${e instanceof Error ? e.message : String(e)}${before === undefined ? '' : `; the one before ended ${before.outcome}${before.reason === undefined ? '' : ` (${before.reason})`}`}`;
            break;
          }
          at = where(at);
          results.push(res);
          await sleep(10);
        }
        for (const d of dirs) await d.gen.stop();
        const seconds = (performance.now() - t0) / 1000;
        for (const d of dirs) await d.sink.drain(d.gen.sent);
        const acc = await accounting.read(results);
        const directions = dirs.map((d) => ({ name: d.name, report: d.sink.report(d.gen.sentPerFlow(), { accounting: acc.directions.get(d.name)! }), achievedPps: Math.round(d.gen.lastPacedPps ?? d.gen.sent / seconds) }));
        return { directions, results, seconds, ...(refused === undefined ? {} : { refused }) };
      } finally {
        for (const c of closers.reverse()) c();
      }
    },
    async run({ pps, handovers, delayMs, mode = 'sharp', flows = 8, warmupMs = 100, onResult }) {
      const sink = new TrafficSink({ objectsDir, netns: lab.server.netns, ifname: lab.server.ifname, sampleEvery: 50, flows });
      // new flows for every run: the VNF's counters of earlier runs' flows go on from where they were
      const basePort = nextBasePort();
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
          at = where(at);
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
      await opened.close();
      rmSync(workDir, { recursive: true, force: true });
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
  /** every handover's overhead (its duration minus the state delay), ms, ascending */
  overheadsMs: number[];
  /** the same, in the order the handovers ran (a slow first one is its connections' set-up) */
  overheadsInOrderMs: number[];
  /** the median and p99 without the first WARM_HANDOVERS (the nodes' first calls compile their code, the first state move opens its connection) */
  warmMedianMs?: number;
  warmP99Ms?: number;
  /** the issue's measure: each handover's duration minus its whole state move (the delay and the transfer itself, as the engine timed it), median and p99, ms */
  beyondStateMoveMedianMs: number;
  beyondStateMoveP99Ms: number;
  allClean: boolean;
  /** with `breakdown` on a lab of node processes: where a handover's overhead goes */
  breakdown?: OverheadBreakdown;
}

/** Per handover, on a lab of node processes: the node API calls by method, and the CPU they cost on each side. */
export interface OverheadBreakdown {
  /** method -> calls per handover that crossed to the nodes (every node together; calls that went inside a Batch count in `batchedPerHandover`, their Batch here) */
  callsPerHandover: Record<string, number>;
  /** method -> calls per handover carried inside a Batch (one round trip for the calls made to one node at once) */
  batchedPerHandover: Record<string, number>;
  /** method -> mean wall time of one call, ms (call to answer, at the controller; alone or in a Batch) */
  callMs: Record<string, number>;
  /** round trips to the nodes per handover (a Batch is one) */
  callsTotalPerHandover: number;
  /** calls per handover, a Batch's counted one by one (what callsTotalPerHandover was before Batch) */
  logicalCallsPerHandover: number;
  /** the controller's (this process's) CPU per handover, ms, less what the traffic alone costs it */
  controllerCpuMsPerHandover: number;
  /** every node process's CPU together per handover, ms, less what they cost without handovers */
  nodeCpuMsPerHandover: number;
  /** the same per node */
  nodeCpuMsPerHandoverByNode: Record<string, number>;
  /** step -> median ms from its start to the next step's ('start': to arming; 'wait <step>': one quiescence wait in it) */
  stepMedianMs: Record<string, number>;
  /** the same for each of the first WARM_HANDOVERS handovers, where the set-up goes */
  firstStepsMs: Record<string, number>[];
}

/** ns a process spent on a CPU (/proc/PID/schedstat: exact, unlike the 10 ms ticks of /proc/PID/stat) */
function cpuNs(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
}

async function withCpu<T>(pids: readonly number[], f: () => Promise<T>): Promise<{ v: T; ms: number; ownMs: number; nodesMs: number; perNodeMs: number[] }> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const n0 = pids.map(cpuNs);
  const v = await f();
  const c = process.cpuUsage(c0);
  const perNodeMs = pids.map((p, i) => (cpuNs(p) - n0[i]!) / 1e6);
  return { v, ms: performance.now() - t0, ownMs: (c.user + c.system) / 1000, nodesMs: perNodeMs.reduce((a, x) => a + x, 0), perNodeMs };
}

/** step -> median ms from its start to the next step's; 'start' from the run's start to arming (the drop counters read first); 'wait <step>' the quiescence waits in it */
/** One handover's step times: step -> ms from its start to the next step's ('start': to arming; 'wait <step>': its quiescence wait). */
function stepTimes(r: HandoverResult): [string, number][] {
  const out: [string, number][] = [['start', r.timings['arming'] ?? 0]];
  for (const w of r.waits) out.push([`wait ${w.step}`, w.ms ?? 0]);
  const steps = Object.entries(r.timings).sort((a, b) => a[1] - b[1]);
  steps.forEach(([step, t], i) => out.push([step, (i + 1 < steps.length ? steps[i + 1]![1] : r.durationMs) - t]));
  return out;
}

function stepMedians(results: readonly HandoverResult[]): Record<string, number> {
  const per = new Map<string, number[]>();
  for (const r of results) for (const [k, ms] of stepTimes(r)) per.set(k, [...(per.get(k) ?? []), ms]);
  return Object.fromEntries([...per].map(([k, xs]) => [k, +[...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!.toFixed(2)]));
}

/** Handovers a lab's first run pays for set-up (JIT, connections): left out of the warm figures. */
export const WARM_HANDOVERS = 2;

export async function benchOverhead(objectsDir: string, o: { handovers: number; pps: number; delayMs: number; breakdown?: boolean; nodeFrames?: boolean }): Promise<OverheadResult> {
  const s = await withNodeFrames(o.nodeFrames ?? true, () => openLab(objectsDir, `sharp-bench-ovh-${process.pid}-`));
  try {
    const clients = s.dp instanceof NodeLabDataPlane && o.breakdown === true ? s.dp.deployment.nodes : [];
    const pids = clients.map((c) => c.health.pid);
    // what the traffic alone costs both sides (the generator runs in this process), over the same kind of run
    const idle = clients.length > 0 ? await withCpu(pids, () => s.run({ pps: o.pps, handovers: 0, delayMs: o.delayMs, warmupMs: 1000 })) : undefined;
    const calls0 = clients.map((c) => new Map(c.calls));
    const ms0 = clients.map((c) => new Map(c.callMs));
    const batched0 = clients.map((c) => new Map(c.batched));
    const run = await withCpu(pids, () => s.run({ pps: o.pps, handovers: o.handovers, delayMs: o.delayMs }));
    const { report, results } = run.v;
    const over = results.map((r) => r.durationMs - o.delayMs).sort((a, b) => a - b);
    const quantile = (xs: readonly number[], p: number): number => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
    const q = (p: number): number => quantile(over, p);
    const beyond = results.map((r) => r.durationMs - r.stateMs).sort((a, b) => a - b);
    let breakdown: OverheadBreakdown | undefined;
    if (idle !== undefined) {
      const calls: Record<string, number> = {};
      const batched: Record<string, number> = {};
      const callMs: Record<string, number> = {};
      clients.forEach((c, i) => {
        for (const [m, n] of c.calls) calls[m] = (calls[m] ?? 0) + n - (calls0[i]!.get(m) ?? 0);
        for (const [m, n] of c.batched) batched[m] = (batched[m] ?? 0) + n - (batched0[i]!.get(m) ?? 0);
        for (const [m, t] of c.callMs) callMs[m] = (callMs[m] ?? 0) + t - (ms0[i]!.get(m) ?? 0);
      });
      const n = results.length;
      const used = Object.keys(calls).filter((m) => calls[m]! > 0).sort();
      const inBatch = Object.keys(batched).filter((m) => batched[m]! > 0).sort();
      const each = (m: string): number => (calls[m] ?? 0) + (batched[m] ?? 0);
      const logical = [...new Set([...used, ...inBatch])].filter((m) => m !== 'Batch').sort();
      breakdown = {
        callsPerHandover: Object.fromEntries(used.map((m) => [m, +(calls[m]! / n).toFixed(2)])),
        batchedPerHandover: Object.fromEntries(inBatch.map((m) => [m, +(batched[m]! / n).toFixed(2)])),
        callMs: Object.fromEntries([...new Set([...used, ...inBatch])].sort().map((m) => [m, +(callMs[m]! / each(m)).toFixed(3)])),
        callsTotalPerHandover: +(used.reduce((a, m) => a + calls[m]!, 0) / n).toFixed(2),
        logicalCallsPerHandover: +(logical.reduce((a, m) => a + each(m), 0) / n).toFixed(2),
        controllerCpuMsPerHandover: +((run.ownMs - (idle.ownMs / idle.ms) * run.ms) / n).toFixed(2),
        nodeCpuMsPerHandover: +((run.nodesMs - (idle.nodesMs / idle.ms) * run.ms) / n).toFixed(2),
        nodeCpuMsPerHandoverByNode: Object.fromEntries(clients.map((c, i) => [c.name, +((run.perNodeMs[i]! - (idle.perNodeMs[i]! / idle.ms) * run.ms) / n).toFixed(2)])),
        stepMedianMs: stepMedians(results),
        firstStepsMs: results.slice(0, WARM_HANDOVERS).map((r) => Object.fromEntries(stepTimes(r).map(([k, ms]) => [k, +ms.toFixed(2)]))),
      };
    }
    return {
      handovers: results.length,
      pps: o.pps,
      stateDelayMs: o.delayMs,
      overheadMedianMs: +q(0.5).toFixed(2),
      overheadP99Ms: +q(0.99).toFixed(2),
      overheadsMs: over.map((x) => +x.toFixed(2)),
      overheadsInOrderMs: results.map((r) => +(r.durationMs - o.delayMs).toFixed(2)),
      ...(results.length > 2 * WARM_HANDOVERS
        ? (() => {
            const warm = results.slice(WARM_HANDOVERS).map((r) => r.durationMs - o.delayMs).sort((a, b) => a - b);
            return { warmMedianMs: +quantile(warm, 0.5).toFixed(2), warmP99Ms: +quantile(warm, 0.99).toFixed(2) };
          })()
        : {}),
      beyondStateMoveMedianMs: +quantile(beyond, 0.5).toFixed(2),
      beyondStateMoveP99Ms: +quantile(beyond, 0.99).toFixed(2),
      allClean: clean(report) && results.every((r) => r.outcome === 'completed'),
      ...(breakdown === undefined ? {} : { breakdown }),
    };
  } finally {
    await s.close();
  }
}

/** One kind of node call, alone: mean wall time and CPU per call at the controller and at the node answering. */
/** Runs `f` with the lab's node clients made on the framed channel (true) or on gRPC only (SHARP_NODE_FRAMES, read when a client is made). */
async function withNodeFrames<T>(on: boolean, f: () => Promise<T>): Promise<T> {
  const before = process.env['SHARP_NODE_FRAMES'];
  if (!on) process.env['SHARP_NODE_FRAMES'] = '0';
  try {
    return await f();
  } finally {
    if (before === undefined) delete process.env['SHARP_NODE_FRAMES'];
    else process.env['SHARP_NODE_FRAMES'] = before;
  }
}

/** What one call of a kind costs over the framed channel, and (`grpc`) the same call over gRPC in the same run. */
export interface CallCost {
  call: string;
  wallMs: number;
  controllerCpuMs: number;
  nodeCpuMs: number;
  grpc: { wallMs: number; controllerCpuMs: number; nodeCpuMs: number };
}

/**
 * One call of each kind a handover makes, `n` times, on an idle lab: wall
 * time and the CPU it costs the controller and the node that answers; over
 * the node's framed channel and over gRPC, in alternating rounds on the same
 * nodes (a second client per node, gRPC only).
 */
export async function benchCallCosts(objectsDir: string, n: number): Promise<CallCost[]> {
  const s = await openLab(objectsDir, `sharp-bench-calls-${process.pid}-`);
  const grpcOnly: NodeClient[] = [];
  try {
    if (!(s.dp instanceof NodeLabDataPlane)) throw new Error('benchCallCosts needs a lab of node processes');
    const d = s.dp.deployment;
    for (const c of d.nodes) grpcOnly.push(await NodeClient.connect({ channel: c.channel, frames: false }));
    const rule = d.switchControl.getRule(s.rules[0]!)!;
    const kinds: [string, string, (c: NodeClient) => Promise<unknown>][] = [
      ['HandoverCounters', rule.switch, (c) => c.handoverCounters(rule.switch, 1)],
      ['SetRuleActions (1 rule)', rule.switch, (c) => c.setRuleActions([{ id: rule.id, action: rule.action }])],
      ['PortCounters', rule.switch, (c) => c.portCounters(rule.switch)],
      ['SentTowardsInstances', rule.switch, (c) => c.sentTowardsInstances(rule.switch)],
      ['AgentStatus', 'vnf1', (c) => c.agentStatus('vnf1', 1)],
      ['ArrivedFrames', 'vnf1', (c) => c.arrivedFrames('vnf1')],
      ['InterfaceDrops', 'vnf1', (c) => c.interfaceDrops('vnf1')],
    ];
    const out: CallCost[] = [];
    const rounds = 4;
    for (const [call, on, f] of kinds) {
      const i = d.nodes.findIndex((c) => c.switches().includes(on) || c.agentInstances().some((x) => x.name === on));
      const framed = d.nodes[i]!;
      const grpcClient = grpcOnly[i]!;
      if (framed.transport !== 'frames') throw new Error(`benchCallCosts: node ${framed.name} calls go over gRPC: ${framed.transportNote ?? ''}`);
      const sum = { frames: { ms: 0, own: 0, node: 0 }, grpc: { ms: 0, own: 0, node: 0 } };
      for (const c of [framed, grpcClient]) for (let k = 0; k < 20; k++) await f(c); // warm
      for (let r = 0; r < rounds; r++)
        for (const [which, c] of [['frames', framed], ['grpc', grpcClient]] as const) {
          const m = await withCpu([framed.health.pid], async () => {
            for (let k = 0; k < Math.ceil(n / rounds); k++) await f(c);
          });
          sum[which].ms += m.ms;
          sum[which].own += m.ownMs;
          sum[which].node += m.nodesMs;
        }
      const per = (x: number): number => +(x / (Math.ceil(n / rounds) * rounds)).toFixed(3);
      out.push({
        call,
        wallMs: per(sum.frames.ms),
        controllerCpuMs: per(sum.frames.own),
        nodeCpuMs: per(sum.frames.node),
        grpc: { wallMs: per(sum.grpc.ms), controllerCpuMs: per(sum.grpc.own), nodeCpuMs: per(sum.grpc.node) },
      });
    }
    return out;
  } finally {
    for (const c of grpcOnly) c.close();
    await s.close();
  }
}

/**
 * The hold ring a handover needs: every frame arriving from switch-over to
 * release is held, i.e. `ppsPerSide` × `holdMs`, times `margin`, rounded up
 * to a power of two (the agent's ring indexing wants one).
 */
export function holdRingCapacity(ppsPerSide: number, holdMs: number, margin = 2): number {
  const needed = Math.ceil(ppsPerSide * (holdMs / 1000) * margin);
  const cap = 2 ** Math.ceil(Math.log2(Math.max(LIMITS.ringCapacity.min, needed)));
  if (cap > LIMITS.ringCapacity.max)
    throw new RangeError(`ringCapacity: ${ppsPerSide} pps per side held for ${holdMs} ms with margin ${margin} needs ${needed} frames, above the limit of ${LIMITS.ringCapacity.max}`);
  return cap;
}

export interface LineRateStep {
  /** offered, both directions together */
  offeredAggregatePps: number;
  achievedAggregatePps: number;
  handovers: number;
  completed: number;
  overflow: number;
  lost: number;
  reordered: number;
  duplicated: number;
  stampMismatches: number;
  /** probes beyond the sink's duplicate window or of unchecked flows: the verdict is incomplete */
  unchecked: number;
  /** counted drops, `where reason frames`, both directions */
  drops: string[];
  handoverMedianMs: number;
  handoverMaxMs: number;
  /** frames per second B's release replayed (released ÷ time in 'releasing'), median over the handovers */
  releasedPerSecMedian: number;
  clean: boolean;
  /** what made this step not clean ('' when clean) */
  broke: string;
}

export interface LineRateResult {
  flows: number;
  ringCapacity: number;
  handoversPerRate: number;
  stateDelayMs: number;
  /** the highest aggregate rate (as achieved) at which every handover of a step was lossless */
  maxLosslessAggregatePps: number;
  /** the first offered aggregate rate that was not clean (0: none in the sweep) */
  brokeAtAggregatePps: number;
  /** what broke there ('' when nothing did) */
  broke: string;
  steps: LineRateStep[];
}

const median = (xs: number[]): number => (xs.length ? Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!) : 0);

/** Frames/s of a handover's release: released over the time from 'releasing' to the next phase. */
function releaseRate(r: HandoverResult): number | undefined {
  const start = r.timings['releasing'];
  if (start === undefined) return undefined;
  const end = Math.min(...Object.values(r.timings).filter((t) => t > start));
  return Number.isFinite(end) && end > start ? Number(r.counts.released) / ((end - start) / 1000) : undefined;
}

/**
 * A step whose generators reached less than this share of the offered rate
 * and no more than GENERATOR_STALLS × the previous step's rate: offering
 * more no longer brings more, the generators (or the CPUs they share with
 * everything else) are the limit. A step merely short of its rate still
 * tests handovers at the rate it reached: that is the rate reported.
 */
const GENERATOR_KEEPS_UP = 0.9;
const GENERATOR_STALLS = 1.05;
const GENERATOR_CEILING = 'generator ceiling';

/** What makes a step not clean, most telling first; '' when clean. `previousAchievedPps`: the step before's achieved rate (none for the first). */
export function whatBroke(step: Omit<LineRateStep, 'clean' | 'broke'>, results: readonly HandoverResult[], previousAchievedPps?: number): string {
  if (step.overflow > 0) return `hold ring overflow (${step.overflow} frames): the release drained ${step.releasedPerSecMedian} frames/s (median) while ${step.offeredAggregatePps} pps arrived`;
  const failed = results.find((r) => r.outcome !== 'completed');
  if (failed !== undefined) return `handover ${failed.outcome}${failed.reason === undefined ? '' : `: ${failed.reason}`}`;
  if (step.lost > 0) return `lost ${step.lost}${step.drops.length ? ` (${step.drops.join(', ')})` : ' (no counter explains them)'}`;
  if (step.reordered > 0) return `reordered ${step.reordered}`;
  if (step.duplicated > 0) return `duplicated ${step.duplicated}`;
  if (step.stampMismatches > 0) return `stamp mismatches ${step.stampMismatches}`;
  if (step.unchecked > 0) return `unchecked probes ${step.unchecked}`;
  if (previousAchievedPps !== undefined && step.achievedAggregatePps < GENERATOR_KEEPS_UP * step.offeredAggregatePps && step.achievedAggregatePps <= GENERATOR_STALLS * previousAchievedPps)
    return `${GENERATOR_CEILING} (${step.achievedAggregatePps} of ${step.offeredAggregatePps} pps offered; the generators' threads also carry every frame through the lab's XDP hops, so this is the CPUs' ceiling for the whole path)`;
  return '';
}

/**
 * Offered aggregate rates (half per direction), lowest first, each with
 * `handoversPerRate` handovers at state delay `delayMs`; stops at the first
 * rate that is not clean. The hold ring is sized for the top rate
 * (holdRingCapacity over `holdMs`: by default the state delay + 150 ms, what
 * a handover holds and releases near 1 Mpps), capped at the spec's limit;
 * one ring per instance (the sweep's handovers run one at a time), so that a
 * ring of 131072 frames costs what two of 65536 did: 405 MB per instance.
 */
export async function benchLineRate(
  objectsDir: string,
  o: { aggregateRates: readonly number[]; handoversPerRate?: number; delayMs?: number; flows?: number; holdMs?: number; onStep?: (s: LineRateStep) => void },
): Promise<LineRateResult> {
  const handoversPerRate = o.handoversPerRate ?? 5;
  const delayMs = o.delayMs ?? 0;
  const flows = o.flows ?? 8;
  const top = Math.max(...o.aggregateRates);
  let ringCapacity: number;
  try {
    ringCapacity = holdRingCapacity(top / 2, o.holdMs ?? delayMs + 150, 1.5);
  } catch {
    ringCapacity = LIMITS.ringCapacity.max;
  }
  // sharp-bench-<pid>-: `lab down --stray` (namespaceOwner) leaves it alone while this process lives
  const s = await openLab(objectsDir, `sharp-bench-${process.pid}-line-`, ringCapacity, { ringCount: 1 });
  const steps: LineRateStep[] = [];
  let best = 0;
  let brokeAt = 0;
  let broke = '';
  try {
    for (const agg of o.aggregateRates) {
      const { directions, results, refused } = await s.runBothWays({ ppsPerDirection: agg / 2, handovers: handoversPerRate, delayMs, flows });
      const sum = (k: 'lost' | 'reordered' | 'duplicated' | 'stampMismatches' | 'beyondWindow' | 'unchecked'): number => directions.reduce((a, d) => a + d.report[k], 0);
      const durations = results.map((r) => r.durationMs).sort((a, b) => a - b);
      const step: Omit<LineRateStep, 'clean' | 'broke'> = {
        offeredAggregatePps: agg,
        achievedAggregatePps: directions.reduce((a, d) => a + d.achievedPps, 0),
        handovers: results.length,
        completed: results.filter((r) => r.outcome === 'completed').length,
        overflow: results.reduce((a, r) => a + Number(r.counts.overflow), 0),
        lost: sum('lost'),
        reordered: sum('reordered'),
        duplicated: sum('duplicated'),
        stampMismatches: sum('stampMismatches'),
        unchecked: sum('beyondWindow') + sum('unchecked'),
        drops: directions.flatMap((d) => d.report.drops.map((x) => `${x.where} ${x.reason} ${x.frames}`)),
        handoverMedianMs: +(durations[Math.floor(durations.length / 2)] ?? 0).toFixed(2),
        handoverMaxMs: +(durations.at(-1) ?? 0).toFixed(2),
        releasedPerSecMedian: median(results.map(releaseRate).filter((x): x is number => x !== undefined)),
      };
      const why = refused ?? whatBroke(step, results, steps.at(-1)?.achievedAggregatePps);
      const full: LineRateStep = { ...step, clean: why === '', broke: why };
      steps.push(full);
      o.onStep?.(full);
      // a step the generator could not fully offer still had lossless handovers, at the rate it reached
      if (why === '' || why.startsWith(GENERATOR_CEILING)) best = Math.max(best, full.achievedAggregatePps);
      if (why !== '') {
        brokeAt = agg;
        broke = why;
        break;
      }
    }
  } finally {
    await s.close();
  }
  return { flows, ringCapacity, handoversPerRate, stateDelayMs: delayMs, maxLosslessAggregatePps: best, brokeAtAggregatePps: brokeAt, broke, steps };
}
