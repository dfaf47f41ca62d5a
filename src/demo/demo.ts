/**
 * `sharpctl demo`: bring up the default lab, run probe traffic both ways,
 * move the flows back and forth between vnf1 and vnf2 with a state-transfer
 * delay, report, draw the timeline, tear the lab down.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { standardSpec, installRules } from '../lab/netns-lab.js';
import { openLab, type OpenedLab } from '../lab/open-lab.js';
import { bmv2Availability, Bmv2UnavailableError } from '../lab/mininet-lab.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../traffic/sink.js';
import { TrafficAccounting } from '../traffic/accounting.js';
import { localDeployment } from '../dataplane/types.js';
import { HandoverEngine, flowMoved, type HandoverResult } from '../handover/engine.js';
import { DelayedStateMover } from '../handover/state-mover.js';
import { createStateMover, type StateKind } from '../state/factory.js';
import { svgTimeline, type TimelinePhase } from '../report/svg-timeline.js';
import { sleep } from '../util/mutex.js';

export interface DemoOptions {
  rate: number;
  handovers: number;
  stateDelayMs: number;
  /** seconds of traffic; default: enough for the handovers */
  durationS?: number;
  target: 'xdp' | 'bmv2';
  /** sharp (default) or the controller-buffer baseline */
  mode?: 'sharp' | 'controller-buffer';
  /** how VNF state moves (default: the example VNF's maps, copied directly) */
  state?: StateKind;
  outDir: string;
  flows?: number;
  objectsDir: string;
  /** namespace prefix of the lab */
  prefix?: string;
  progress?: (line: string) => void;
  signal?: AbortSignal;
}

export interface DemoHandover {
  id: number;
  from: string;
  to: string;
  durationMs: number;
  stateDelayMs: number;
  outcome: HandoverResult['outcome'];
  reason?: string;
  held: number;
  released: number;
}

export interface DemoReport {
  sent: number;
  delivered: number;
  lost: number;
  /** lost frames counted where they died, with their reason (sent = delivered + reported + unaccounted) */
  reported: number;
  /** lost frames no counter explains: must be 0 */
  unaccounted: number;
  reordered: number;
  duplicated: number;
  stampMismatches: number;
  controllerDataBytes: number;
  controllerBufferPeakBytes: number;
  mode: 'sharp' | 'controller-buffer';
  state: string;
  held: number;
  released: number;
  handovers: DemoHandover[];
  rate: number;
  flows: number;
  durationS: number;
  latencyUs: { median: number; p99: number; max: number };
  directions: { name: string; sent: number; delivered: number; lost: number; reported: number; unaccounted: number; drops: TrafficReport['drops']; reordered: number; duplicated: number; stampMismatches: number }[];
  machine: string;
  target: string;
  files: { report: string; timeline: string };
}

export class DemoError extends Error {
  override name = 'DemoError';
}

export async function runDemo(o: DemoOptions): Promise<DemoReport> {
  if (o.target === 'bmv2') {
    const avail = bmv2Availability();
    if (!avail.ok) throw new Bmv2UnavailableError(`--target bmv2: ${avail.reason}`);
  }
  const say = o.progress ?? (() => undefined);
  const flows = o.flows ?? 4;
  const durationS = o.durationS ?? Math.max(3, (o.handovers * (o.stateDelayMs + 250)) / 1000 + 1);
  const prefix = o.prefix ?? `sharp-demo${process.pid}-`;
  say(
    o.target === 'bmv2'
      ? `lab: client — s1 — {vnf1, vnf2} — s2 — server in Mininet, s1 and s2 are BMv2 (simple_switch_grpc) in namespaces ${prefix}*`
      : `lab: client — s1 — {vnf1, vnf2} — s2 — server in namespaces ${prefix}*`,
  );
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'sharpctl-demo-'));
  let opened: OpenedLab;
  try {
    // the baseline needs the controller on the packet path, which only an in-process lab has
    opened = await openLab(standardSpec({ ringCapacity: 8192, ringCount: 2 }), prefix, { objectsDir: o.objectsDir, workDir, target: o.target, via: 'nodes' });
  } catch (e) {
    rmSync(workDir, { recursive: true, force: true });
    throw e;
  }
  const { lab, dp } = opened;
  const closers: (() => void)[] = [];
  try {
    say(
      o.target === 'bmv2'
        ? 'P4 pipeline loaded on s1/s2 over P4Runtime; agent + stateful VNF (XDP) on vnf1/vnf2'
        : 'programs loaded: switch on s1/s2 ports, agent + stateful VNF on vnf1/vnf2',
    );
    const rules = await installRules(dp, lab.spec.rules);
    const fwd = rules.find((x) => x.action.outPort === 's1-vnf1')!;
    const rev = rules.find((x) => x.action.outPort === 's2-vnf1')!;

    const mk = (from: typeof lab.client, to: typeof lab.client, name: string): { name: string; gen: TrafficGenerator; sink: TrafficSink } => {
      const sink = new TrafficSink({ objectsDir: o.objectsDir, netns: to.netns, ifname: to.ifname, sampleEvery: Math.max(1, Math.floor(o.rate / 500)), flows });
      closers.push(() => sink.close());
      const gen = new TrafficGenerator({ objectsDir: o.objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows, burst: 128 });
      closers.push(() => gen.close());
      return { name, gen, sink };
    };
    const dirs = [mk(lab.client, lab.server, 'client→server'), mk(lab.server, lab.client, 'server→client')];
    // every frame the data plane drops from now on is counted against the run, per direction
    const accounting = new TrafficAccounting(localDeployment(dp), lab.topology, dirs.map((d, i) => ({ name: d.name, from: i === 0 ? lab.client.name : lab.server.name, to: i === 0 ? lab.server.name : lab.client.name })));
    await accounting.start();
    const t0 = Date.now();
    for (const d of dirs) d.gen.start(o.rate);
    say(`traffic: ${flows} flows each way at ${o.rate} pps per direction, ${durationS.toFixed(1)} s`);

    const stateMover = createStateMover(o.state ?? 'vnf-map');
    closers.push(() => void stateMover.close());
    const engine = new HandoverEngine(dp, { mover: new DelayedStateMover(stateMover, o.stateDelayMs) });
    const results: HandoverResult[] = [];
    let at = 'vnf1';
    const gap = (durationS * 1000) / (o.handovers + 1);
    for (let i = 0; i < o.handovers; i++) {
      const due = t0 + gap * (i + 1) - (o.stateDelayMs + 50) / 2;
      while (Date.now() < due) {
        if (o.signal?.aborted) break;
        await sleep(Math.min(100, due - Date.now()));
      }
      if (o.signal?.aborted) break;
      const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
      const r = await engine.handover({ rules: [fwd.id, rev.id], from: at, to, expectedPps: 2 * o.rate, expectedStateMs: o.stateDelayMs, capacityPolicy: 'warn', mode: o.mode ?? 'sharp' });
      results.push(r);
      if (flowMoved(r)) at = to;
      say(`handover ${i + 1}/${o.handovers}: ${r.from} → ${r.to} ${r.outcome} in ${r.durationMs.toFixed(1)} ms (state ${r.stateMs.toFixed(0)} ms, held ${r.counts.held}, released ${r.counts.released})${r.reason ? ` — ${r.reason}` : ''}`);
    }
    while (!o.signal?.aborted && Date.now() < t0 + durationS * 1000) await sleep(Math.min(100, t0 + durationS * 1000 - Date.now()));
    for (const d of dirs) await d.gen.stop();
    for (const d of dirs) await d.sink.drain(d.gen.sent);
    const acc = await accounting.read(results);
    const reports: TrafficReport[] = dirs.map((d) => d.sink.report(d.gen.sentPerFlow(), { accounting: acc.directions.get(d.name)! }));
    const ctl = await dp.controllerDataPackets();
    const sum = (k: 'sent' | 'delivered' | 'lost' | 'reported' | 'unaccounted' | 'reordered' | 'duplicated' | 'stampMismatches'): number => reports.reduce((a, r) => a + r[k], 0);

    mkdirSync(o.outDir, { recursive: true });
    const files = { report: path.join(o.outDir, 'report.json'), timeline: path.join(o.outDir, 'timeline.svg') };
    // the timeline: the forward direction's probes, each handover's phases behind them
    const sinkStart = dirs[0]!.sink.startedAt;
    const phases: TimelinePhase[] = [];
    for (const r of results) {
      const ev = (step: string): number | undefined => r.events.find((e) => e.step === step)?.at;
      const end = r.events[r.events.length - 1]!.at;
      const seq: [TimelinePhase['kind'], string, string | undefined][] = [
        ['marking', 'pre-marking', 'draining'],
        ['draining', 'draining', 'moving-state'],
        ['moving-state', 'moving-state', 'releasing'],
        ['releasing', 'releasing', 'cleaning'],
        ['rolling-back', 'rolling-back', undefined],
      ];
      for (const [kind, from, to] of seq) {
        const s = ev(from);
        if (s === undefined) continue;
        const e = (to === undefined ? undefined : ev(to)) ?? end;
        phases.push({ kind, start: s - sinkStart, end: e - sinkStart, label: `handover ${r.id} ${r.from}→${r.to}: ${kind}` });
      }
    }
    writeFileSync(
      files.timeline,
      svgTimeline({ title: `sharpctl demo: ${o.handovers} handovers at ${o.rate} pps, state delay ${o.stateDelayMs} ms — ${sum('lost')} lost, ${sum('reordered')} reordered`, points: reports[0]!.timeline, phases }),
    );
    const lat = reports[0]!.latencyUs;
    const report: DemoReport = {
      sent: sum('sent'),
      delivered: sum('delivered'),
      lost: sum('lost'),
      reported: sum('reported'),
      unaccounted: sum('unaccounted'),
      reordered: sum('reordered'),
      duplicated: sum('duplicated'),
      stampMismatches: sum('stampMismatches'),
      controllerDataBytes: Number(ctl.bytes),
      controllerBufferPeakBytes: Math.max(0, ...results.map((r) => r.controllerBuffer.peakBytes)),
      mode: o.mode ?? 'sharp',
      state: o.state ?? 'vnf-map',
      held: results.reduce((a, r) => a + Number(r.counts.held), 0),
      released: results.reduce((a, r) => a + Number(r.counts.released), 0),
      handovers: results.map((r) => ({
        id: r.id,
        from: r.from,
        to: r.to,
        durationMs: +r.durationMs.toFixed(2),
        stateDelayMs: o.stateDelayMs,
        outcome: r.outcome,
        ...(r.reason === undefined ? {} : { reason: r.reason }),
        held: Number(r.counts.held),
        released: Number(r.counts.released),
      })),
      rate: o.rate,
      flows,
      durationS: +((Date.now() - t0) / 1000).toFixed(2),
      latencyUs: { median: +lat.median.toFixed(1), p99: +lat.p99.toFixed(1), max: +lat.max.toFixed(1) },
      directions: dirs.map((d, i) => {
        const r = reports[i]!;
        return { name: d.name, sent: r.sent, delivered: r.delivered, lost: r.lost, reported: r.reported, unaccounted: r.unaccounted, drops: r.drops, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches };
      }),
      machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, Linux ${os.release()}`,
      target: o.target,
      files,
    };
    writeFileSync(files.report, JSON.stringify(report, null, 2) + '\n');
    return report;
  } finally {
    for (const c of closers.reverse()) c();
    await opened.close();
    rmSync(workDir, { recursive: true, force: true });
    say('lab torn down');
  }
}
