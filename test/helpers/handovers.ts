/**
 * Shared end-to-end handover scenario: probe traffic both ways through a
 * test lab, handovers back and forth between vnf1 and vnf2, and the
 * assertions every such run must pass.
 */
import type { Test } from 'tap';
import type { TestLab } from './lab.js';
import { HandoverEngine, flowMoved, type HandoverResult } from '../../src/handover/engine.js';
import type { StateMover } from '../../src/handover/state-mover.js';
import { Phase, type FlowKey } from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';
import { TrafficSink, type TrafficReport } from '../../src/traffic/sink.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import type { NetnsLab } from '../../src/lab/netns-lab.js';

export const UDP = 17;

/** The standard lab's rules through vnf1: the forward one on s1, the reverse one on s2. */
export function wildcardRules(l: TestLab): number[] {
  return l.dp
    .rules()
    .filter((r) => r.action.outPort === 's1-vnf1' || r.action.outPort === 's2-vnf1')
    .map((r) => r.id);
}

/** Exact rules for one flow each way: client→server on s1, server→client on s2. */
export async function exactRules(l: TestLab, flow: FlowKey): Promise<number[]> {
  const fwd = await l.dp.addRule({ switch: 's1', match: { kind: 'exact', flow }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  const rev = await l.dp.addRule({
    switch: 's2',
    match: { kind: 'exact', flow: { src: flow.dst, dst: flow.src, sport: flow.dport, dport: flow.sport, proto: flow.proto } },
    action: { outPort: 's2-vnf1', phase: Phase.NONE, handoverId: 0 },
  });
  return [fwd.id, rev.id];
}

export interface HandoverRun {
  reports: TrafficReport[];
  results: HandoverResult[];
  /** where the flows are after the run */
  at: string;
}

/** Traffic both ways at `pps` each; `count` handovers back and forth between vnf1 and vnf2. */
export async function runHandovers(l: TestLab, opts: { flows: number; pps: number; rules: number[]; count: number; mover: StateMover; gapMs?: number }): Promise<HandoverRun> {
  const engine = new HandoverEngine(l.dp, { mover: opts.mover });
  const fw = l.forward(opts.flows);
  const rv = l.reverse(opts.flows);
  fw.gen.start(opts.pps);
  rv.gen.start(opts.pps);
  // every flow has sent (and so has VNF state) before the first move
  await sleep(200);
  const results: HandoverResult[] = [];
  let at = 'vnf1';
  for (let i = 0; i < opts.count; i++) {
    const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engine.handover({ rules: opts.rules, from: at, to, expectedPps: opts.pps * 2 });
    results.push(r);
    if (flowMoved(r)) at = to;
    await sleep(opts.gapMs ?? 20);
  }
  await Promise.all([fw.gen.stop(), rv.gen.stop()]);
  await Promise.all([fw.sink.drain(fw.gen.sent), rv.sink.drain(rv.gen.sent)]);
  return { reports: [fw.sink.report(fw.gen.sentPerFlow()), rv.sink.report(rv.gen.sentPerFlow())], results, at };
}

/** Nothing lost, reordered or duplicated; stamps continuous; held = released; no packet at the controller. */
export async function assertClean(t: Test, run: HandoverRun, l: TestLab): Promise<void> {
  run.reports.forEach((r, i) => {
    const dir = i === 0 ? 'client→server' : 'server→client';
    t.ok(r.sent > 0, `${dir}: ${r.sent} probes sent`);
    t.equal(r.delivered, r.sent, `${dir}: every probe delivered`);
    t.equal(r.lost, 0, `${dir}: 0 lost`);
    t.equal(r.reordered, 0, `${dir}: 0 reordered`);
    t.equal(r.duplicated, 0, `${dir}: 0 duplicated`);
    if (r.stampsChecked) t.equal(r.stampMismatches, 0, `${dir}: the VNF's counter equals the sequence number on every probe`);
    else t.comment(`${dir}: stamps not checked (the lab's VNFs do not stamp probes)`);
    t.equal(r.marked, 0, `${dir}: no probe arrived with a shim`);
  });
  for (const h of run.results) {
    t.equal(h.outcome, 'completed', `handover ${h.id} ${h.from}→${h.to} completed${h.reason ? ` (${h.reason})` : ''}`);
    t.equal(h.counts.held, h.counts.released, `handover ${h.id}: held ${h.counts.held} = released ${h.counts.released}`);
    t.equal(h.counts.overflow, 0n);
    t.equal(h.counts.preSeen >= h.counts.preSent, true, `handover ${h.id}: ${h.counts.preSent} PRE frames drained`);
  }
  t.ok(
    run.results.some((h) => h.counts.held > 0n),
    'frames were really held at the new instance during the moves',
  );
  const c = await l.dp.controllerDataPackets();
  t.equal(c.packets, 0n, 'the controller received 0 data packets');
}

/** Every probe of each direction delivered once, in order, with the VNF state continuous at `instance`. */
export function assertDirectionsIntact(t: Test, reports: readonly (readonly [string, TrafficReport])[], instance: string): void {
  for (const [dir, r] of reports) {
    t.equal(r.delivered, r.sent, `${dir}: every probe delivered`);
    t.equal(r.lost + r.reordered + r.duplicated, 0, `${dir}: nothing lost, reordered or duplicated`);
    t.equal(r.stampMismatches, 0, `${dir}: ${instance}'s state stayed continuous`);
  }
}

/** A state move that fails after switch-over (50 ms in): the handover must roll back. */
export class ThrowingMover implements StateMover {
  readonly name = 'throws';
  async move(): Promise<never> {
    await sleep(50);
    throw new Error('state store unreachable');
  }
}

/**
 * Probe traffic both ways between a lab's client and server (closed when
 * stopped, or on teardown): start it, then stop it for the reports, or stop
 * it and assert every probe of each direction arrived once, in order, with
 * continuous stamps.
 */
export function twoWayProbes(
  t: Test,
  lab: Pick<NetnsLab, 'client' | 'server'>,
  o: { objectsDir: string; flows: number; stamps?: boolean },
): { start(pps: number): void; delivered(): number[]; stop(): Promise<TrafficReport[]>; stopAndAssertIntact(minSent: number): Promise<void> } {
  const pairs = [
    [lab.client, lab.server],
    [lab.server, lab.client],
  ] as const;
  // stamps: the sinks check the VNF's counter on every probe (a VNF that stamps)
  const sinks = pairs.map(([, to]) => new TrafficSink({ objectsDir: o.objectsDir, netns: to.netns, ifname: to.ifname, flows: o.flows, ...(o.stamps === true ? { stamps: true } : {}) }));
  const gens = pairs.map(([from, to]) => new TrafficGenerator({ objectsDir: o.objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows: o.flows }));
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    for (const g of gens) g.close();
    for (const s of sinks) s.close();
  };
  t.teardown(close);
  // stopped, the probes' programs go: the interfaces are free for the next probes
  const stop = async (): Promise<TrafficReport[]> => {
    await Promise.all(gens.map((g) => g.stop()));
    await Promise.all(sinks.map((s, i) => s.drain(gens[i]!.sent)));
    const reports = sinks.map((s, i) => s.report(gens[i]!.sentPerFlow()));
    close();
    return reports;
  };
  return {
    start: (pps) => gens.forEach((g) => g.start(pps)),
    /** probes delivered so far, each direction (while they run) */
    delivered: () => sinks.map((s, i) => s.report(gens[i]!.sentPerFlow(), { running: true }).delivered),
    stop,
    stopAndAssertIntact: async (minSent) => {
      (await stop()).forEach((r, i) => {
        t.ok(r.sent > minSent, `${r.sent} probes sent`);
        t.same({ delivered: r.delivered, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches }, { delivered: r.sent, lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0 }, `direction ${i}: nothing lost, reordered or duplicated`);
      });
    },
  };
}
