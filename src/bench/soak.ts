/**
 * The soak (`sharpctl bench soak [--handovers n]`): n handovers back and
 * forth between vnf1 and vnf2 under probe traffic in both directions, two
 * exact flows with rules of their own moving concurrently, each handover
 * with a random state delay of 0–50 ms. It must end with nothing lost,
 * reordered or duplicated (every lost frame would also be counted:
 * unaccounted = 0), held = released, every handover completed, the
 * process's resident memory flat from the first to the last window of
 * handovers (a thousand, or a tenth of a shorter run), and no file
 * descriptor, BPF map, program or link left behind.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import { execFileSync } from 'node:child_process';
import { createNetnsLab, destroyLab, installRules } from '../lab/netns-lab.js';
import { XdpDataPlane } from '../dataplane/xdp/xdp-dataplane.js';
import { Phase, localDeployment, type FlowKey } from '../dataplane/types.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { TrafficSink } from '../traffic/sink.js';
import { TrafficAccounting } from '../traffic/accounting.js';
import { HandoverEngine, flowMoved, type HandoverResult } from '../handover/engine.js';
import { DelayedStateMover, VnfMapStateMover } from '../handover/state-mover.js';
import { sleep } from '../util/mutex.js';
import { linkStates } from '../net/iproute.js';

export interface SoakOptions {
  objectsDir: string;
  /** handovers in all (split between the two flows' lanes) */
  handovers: number;
  /** probes per second per direction (default 1000) */
  pps?: number;
  /** state delays are drawn uniformly from 0..maxDelayMs (default 50) */
  maxDelayMs?: number;
  /** namespace prefix (unique per run) */
  prefix?: string;
  progress?: (line: string) => void;
}

/** This process's open descriptors by kind, and the ids of the BPF objects among them (from /proc/self/fdinfo). */
export interface FdCensus {
  total: number;
  /** pipes and sockets: a child process's stdio (the release's `ip link`) is open for a moment */
  transient: number;
  bpfMaps: number;
  bpfProgs: number;
  bpfLinks: number;
  ids: { maps: number[]; progs: number[]; links: number[] };
}

export function fdCensus(): FdCensus {
  const c: FdCensus = { total: 0, transient: 0, bpfMaps: 0, bpfProgs: 0, bpfLinks: 0, ids: { maps: [], progs: [], links: [] } };
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // the descriptor readdir itself used, closed meanwhile
    }
    c.total++;
    if (target.startsWith('pipe:') || target.startsWith('socket:')) c.transient++;
    const info = (key: string): number | undefined => {
      try {
        const m = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+)`, 'm'));
        return m ? Number(m[1]) : undefined;
      } catch {
        return undefined;
      }
    };
    if (target === 'anon_inode:bpf-map') {
      c.bpfMaps++;
      const id = info('map_id');
      if (id !== undefined) c.ids.maps.push(id);
    } else if (target === 'anon_inode:bpf-prog') {
      c.bpfProgs++;
      const id = info('prog_id');
      if (id !== undefined) c.ids.progs.push(id);
    } else if (target === 'anon_inode:bpf_link' || target === 'anon_inode:bpf-link') {
      c.bpfLinks++;
      const id = info('link_id');
      if (id !== undefined) c.ids.links.push(id);
    }
  }
  return c;
}

/** Ids of every BPF map, program and link in the kernel (bpftool), any process's. */
export function kernelBpfIds(): { maps: Set<number>; progs: Set<number>; links: Set<number> } {
  const ids = (what: 'map' | 'prog' | 'link'): Set<number> => new Set((JSON.parse(execFileSync('bpftool', ['-j', what, 'show'], { encoding: 'utf8' })) as { id: number }[]).map((x) => x.id));
  return { maps: ids('map'), progs: ids('prog'), links: ids('link') };
}

export interface SoakDirection {
  name: string;
  sent: number;
  delivered: number;
  lost: number;
  reordered: number;
  duplicated: number;
  stampMismatches: number;
  reported: number;
  unaccounted: number;
}

export interface SoakResult {
  handovers: number;
  outcomes: Record<string, number>;
  /** handovers whose outcome was not completed, first few */
  notCompleted: { id: number; outcome: string; reason?: string }[];
  pps: number;
  maxDelayMs: number;
  seconds: number;
  handoverMs: { median: number; p99: number; max: number };
  directions: SoakDirection[];
  held: number;
  released: number;
  /** resident memory of this (the sharpctl) process after a full GC, median over the samples in the first and in the last window of handovers */
  rss: { window: number; firstMiB: number; lastMiB: number; growthMiB: number; peakMiB: number };
  /** V8's used heap after the same collections (what JavaScript retains: a leak grows it; allocator pages do not) */
  heap: { firstMiB: number; lastMiB: number; growthMiB: number };
  /** memory of Buffers and other objects outside V8's heap (process.memoryUsage().external), same samples */
  external: { firstMiB: number; lastMiB: number; growthMiB: number };
  /** descriptors before and after the run; at the first and the last handover without pipes and sockets (a child process's, for a moment) */
  fds: { before: number; firstWindow: number; lastWindow: number; after: number };
  bpf: {
    /** this process's BPF descriptors at the first and the last handover */
    first: { maps: number; progs: number; links: number };
    last: { maps: number; progs: number; links: number };
    /** the ids this process held during the run that still exist in the kernel after it closed the lab */
    leaked: { maps: number[]; progs: number[]; links: number[] };
  };
  clean: boolean;
  /** why not clean, one line each */
  problems: string[];
}

const MiB = 2 ** 20;

/** A full garbage collection, so that resident memory shows what is retained, not what awaits collection. */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as (() => void) | undefined;
  gc?.();
}
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : 0;
};

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const pps = o.pps ?? 1000;
  const maxDelayMs = o.maxDelayMs ?? 50;
  const n = Math.max(2, o.handovers);
  const say = o.progress ?? (() => undefined);
  // a benchmark's prefix (sharp-bench-<pid>-): `lab down --stray` leaves it alone while this process lives
  const prefix = o.prefix ?? `sharp-bench-${process.pid}-soak-`;
  // Node opens /dev/null once, at its first asynchronous child process (a release's `ip link`), and
  // keeps it: spawn one before counting, so that the count before is comparable with the one after
  await linkStates();
  const fdsBefore = fdCensus();
  destroyLab(prefix);
  const lab = createNetnsLab({ prefix, ringCapacity: 8192, ringCount: 4 });
  let dp: XdpDataPlane | undefined;
  const closers: (() => void)[] = [];
  const t0 = performance.now();
  /** what the soak keeps of each handover: a whole HandoverResult (events, timings) would be memory the harness, not sharpctl, retains */
  const results: Pick<HandoverResult, 'id' | 'from' | 'to' | 'outcome' | 'reason' | 'durationMs' | 'ringLoss'>[] = [];
  let held = 0;
  let released = 0;
  const rss: number[] = [];
  const heap: number[] = [];
  const external: number[] = [];
  /** the handover count at each sample */
  const sampledAt: number[] = [];
  const fdSeries: FdCensus[] = [];
  let directions: SoakDirection[] = [];
  const ours = { maps: new Set<number>(), progs: new Set<number>(), links: new Set<number>() };
  try {
    dp = await XdpDataPlane.create(lab.topology, { objectsDir: o.objectsDir });
    await installRules(dp, lab.spec.rules);
    // two flows each way, each with an exact rule of its own on s1 (forward) and s2 (reverse)
    const flows = 2;
    const c = lab.client;
    const s = lab.server;
    const lanes: number[][] = [];
    for (let f = 0; f < flows; f++) {
      const fwd: FlowKey = { src: c.ip, dst: s.ip, sport: 20000 + f, dport: 9000, proto: 17 };
      const rev: FlowKey = { src: s.ip, dst: c.ip, sport: 20000 + f, dport: 9000, proto: 17 };
      const a = await dp.addRule({ switch: 's1', match: { kind: 'exact', flow: fwd }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
      const b = await dp.addRule({ switch: 's2', match: { kind: 'exact', flow: rev }, action: { outPort: 's2-vnf1', phase: Phase.NONE, handoverId: 0 } });
      lanes.push([a.id, b.id]);
    }
    const mk = (from: typeof c, to: typeof c, name: string): { name: string; gen: TrafficGenerator; sink: TrafficSink } => {
      const sink = new TrafficSink({ objectsDir: o.objectsDir, netns: to.netns, ifname: to.ifname, sampleEvery: 1000 });
      closers.push(() => sink.close());
      const gen = new TrafficGenerator({ objectsDir: o.objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows, burst: 64 });
      closers.push(() => gen.close());
      return { name, gen, sink };
    };
    const dirs = [mk(c, s, 'client→server'), mk(s, c, 'server→client')];
    const accounting = new TrafficAccounting(localDeployment(dp), lab.topology, [
      { name: 'client→server', from: c.name, to: s.name },
      { name: 'server→client', from: s.name, to: c.name },
    ]);
    await accounting.start();
    const engine = new HandoverEngine(dp, { mover: new VnfMapStateMover() });
    for (const d of dirs) d.gen.start(pps);
    // every flow has VNF state before the first move
    await sleep(200);
    say(`soak: ${n} handovers, 2 flows each way with their own rules moving concurrently, ${pps} pps per direction, state delays 0–${maxDelayMs} ms`);
    let started = 0;
    // about 200 samples a run, each after a full collection (it takes tens of ms)
    const every = Math.max(1, Math.floor(n / 200));
    const sample = (): void => {
      const i = results.length;
      if (i !== 1 && i % every !== 0 && i < n) return;
      collectGarbage();
      const mem = process.memoryUsage();
      rss.push(mem.rss);
      heap.push(mem.heapUsed);
      external.push(mem.external);
      sampledAt.push(i);
      const census = fdCensus();
      fdSeries.push(census);
      census.ids.maps.forEach((id) => ours.maps.add(id));
      census.ids.progs.forEach((id) => ours.progs.add(id));
      census.ids.links.forEach((id) => ours.links.add(id));
    };
    const lane = async (rules: number[]): Promise<void> => {
      let at = 'vnf1';
      while (started < n) {
        started++;
        const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
        const delay = Math.floor(Math.random() * (maxDelayMs + 1));
        const r = await engine.handover({ rules, from: at, to, expectedPps: 2 * pps, expectedStateMs: delay, capacityPolicy: 'warn', mover: new DelayedStateMover(new VnfMapStateMover(), delay) });
        results.push({ id: r.id, from: r.from, to: r.to, outcome: r.outcome, durationMs: r.durationMs, ringLoss: r.ringLoss, ...(r.reason === undefined ? {} : { reason: r.reason }) });
        held += Number(r.counts.held);
        released += Number(r.counts.released);
        if (flowMoved(r)) at = to;
        sample();
        if (results.length % Math.max(1, Math.floor(n / 10)) === 0 && rss.length > 0) say(`  ${results.length}/${n} handovers, rss ${(rss.at(-1)! / MiB).toFixed(1)} MiB, ${fdSeries.at(-1)!.total} fds`);
      }
    };
    await Promise.all(lanes.map((rules) => lane(rules)));
    await sleep(100);
    for (const d of dirs) await d.gen.stop();
    for (const d of dirs) await d.sink.drain(d.gen.sent);
    const acc = await accounting.read(results);
    directions = dirs.map((d) => {
      const r = d.sink.report(d.gen.sentPerFlow(), { accounting: acc.directions.get(d.name)! });
      return { name: d.name, sent: r.sent, delivered: r.delivered, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches, reported: r.reported, unaccounted: r.unaccounted };
    });
  } finally {
    for (const close of closers.reverse()) close();
    await dp?.close();
    destroyLab(prefix);
  }
  const seconds = (performance.now() - t0) / 1000;
  const fdsAfter = fdCensus();
  // the kernel frees a map or program after its last reference went, in deferred work (RCU): give it a moment
  let leaked = { maps: [] as number[], progs: [] as number[], links: [] as number[] };
  for (let attempt = 0; attempt < 50; attempt++) {
    const kernel = kernelBpfIds();
    leaked = {
      maps: [...ours.maps].filter((id) => kernel.maps.has(id) && !fdsBefore.ids.maps.includes(id)),
      progs: [...ours.progs].filter((id) => kernel.progs.has(id) && !fdsBefore.ids.progs.includes(id)),
      links: [...ours.links].filter((id) => kernel.links.has(id) && !fdsBefore.ids.links.includes(id)),
    };
    if (leaked.maps.length + leaked.progs.length + leaked.links.length === 0) break;
    await sleep(100);
  }
  // the first and the last thousand handovers (a tenth of a shorter run)
  const window = Math.max(1, Math.min(1000, Math.floor(results.length / 10)));
  const first = rss.filter((_, k) => sampledAt[k]! <= window);
  const last = rss.filter((_, k) => sampledAt[k]! > results.length - window);
  const fdFirst = fdSeries[0];
  const fdLast = fdSeries.at(-1);
  const outcomes: Record<string, number> = {};
  for (const r of results) outcomes[r.outcome] = (outcomes[r.outcome] ?? 0) + 1;
  const durations = results.map((r) => r.durationMs).sort((a, b) => a - b);
  const firstMiB = median(first) / MiB;
  const lastMiB = median(last) / MiB;
  const windows = (xs: readonly number[]): { firstMiB: number; lastMiB: number; growthMiB: number } => {
    const f = median(xs.filter((_, k) => sampledAt[k]! <= window)) / MiB;
    const l = median(xs.filter((_, k) => sampledAt[k]! > results.length - window)) / MiB;
    return { firstMiB: +f.toFixed(1), lastMiB: +l.toFixed(1), growthMiB: +(l - f).toFixed(1) };
  };
  const problems: string[] = [];
  if ((outcomes['completed'] ?? 0) !== results.length) problems.push(`${results.length - (outcomes['completed'] ?? 0)} handovers not completed: ${JSON.stringify(outcomes)}`);
  for (const d of directions) {
    if (d.lost + d.reordered + d.duplicated + d.stampMismatches > 0) problems.push(`${d.name}: lost ${d.lost}, reordered ${d.reordered}, duplicated ${d.duplicated}, stamp mismatches ${d.stampMismatches}`);
    if (d.unaccounted !== 0) problems.push(`${d.name}: ${d.unaccounted} lost frames no counter explains`);
    if (d.sent === 0) problems.push(`${d.name}: nothing sent`);
  }
  if (held !== released) problems.push(`held ${held} ≠ released ${released}`);
  // flat: a heap that settles grows by a few MiB early (JIT, pools); a leak per handover grows on
  if (lastMiB - firstMiB > Math.max(16, firstMiB * 0.1)) problems.push(`resident memory grew from ${firstMiB.toFixed(1)} to ${lastMiB.toFixed(1)} MiB`);
  if (fdsAfter.total !== fdsBefore.total) problems.push(`file descriptors: ${fdsBefore.total} before, ${fdsAfter.total} after`);
  const steady = (c: FdCensus): number => c.total - c.transient;
  if (fdFirst !== undefined && fdLast !== undefined && (steady(fdFirst) !== steady(fdLast) || fdFirst.bpfMaps !== fdLast.bpfMaps || fdFirst.bpfProgs !== fdLast.bpfProgs || fdFirst.bpfLinks !== fdLast.bpfLinks))
    problems.push(`descriptors during the run: ${JSON.stringify({ total: fdFirst.total, maps: fdFirst.bpfMaps, progs: fdFirst.bpfProgs, links: fdFirst.bpfLinks })} at the first handover, ${JSON.stringify({ total: fdLast.total, maps: fdLast.bpfMaps, progs: fdLast.bpfProgs, links: fdLast.bpfLinks })} at the last`);
  if (leaked.maps.length + leaked.progs.length + leaked.links.length > 0) problems.push(`BPF objects left in the kernel: ${JSON.stringify(leaked)}`);
  const notCompleted = results.filter((r) => r.outcome !== 'completed').slice(0, 5).map((r) => ({ id: r.id, outcome: r.outcome, ...(r.reason === undefined ? {} : { reason: r.reason }) }));
  const q = (p: number): number => +(durations[Math.min(durations.length - 1, Math.floor(p * durations.length))] ?? 0).toFixed(2);
  return {
    handovers: results.length,
    outcomes,
    notCompleted,
    pps,
    maxDelayMs,
    seconds: +seconds.toFixed(1),
    handoverMs: { median: q(0.5), p99: q(0.99), max: q(1) },
    directions,
    held,
    released,
    rss: { window, firstMiB: +firstMiB.toFixed(1), lastMiB: +lastMiB.toFixed(1), growthMiB: +(lastMiB - firstMiB).toFixed(1), peakMiB: +(Math.max(0, ...rss) / MiB).toFixed(1) },
    heap: windows(heap),
    external: windows(external),
    fds: { before: fdsBefore.total, firstWindow: fdFirst === undefined ? 0 : steady(fdFirst), lastWindow: fdLast === undefined ? 0 : steady(fdLast), after: fdsAfter.total },
    bpf: {
      first: { maps: fdFirst?.bpfMaps ?? 0, progs: fdFirst?.bpfProgs ?? 0, links: fdFirst?.bpfLinks ?? 0 },
      last: { maps: fdLast?.bpfMaps ?? 0, progs: fdLast?.bpfProgs ?? 0, links: fdLast?.bpfLinks ?? 0 },
      leaked,
    },
    clean: problems.length === 0,
    problems,
  };
}
