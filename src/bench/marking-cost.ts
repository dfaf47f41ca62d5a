/**
 * What marking costs the switch, broken down on the forwarding bench's path
 * (gen → veth → DUT → veth → counting sink), each DUT in alternating rounds
 * of one run:
 *   bare    the bare XDP redirect
 *   push4   bpf_xdp_adjust_head(-4) + the bare redirect, nothing written
 *   touch   the first 12 bytes stored back unchanged + the bare redirect
 *   shim    the switch's shim push (sharp_push_shim) + the bare redirect
 *   switch  the switch, its rule unmarked
 *   marked  the switch, its rule marking PRE
 * Figures per DUT: Mpps through the whole path (ratios to bare of the
 * same run); the generator's own ns per frame in that run (kernel-timed:
 * a changed frame costs it a reset when its page comes back); ns per frame
 * of a live-frames test run of the DUT at d0 (kernel-timed: the program,
 * the redirect to d1 and the sink's NAPI pass, without the generator and
 * the first veth hop). The sink drops every frame alike: it reads none of
 * the shim. And the programs alone in plain test runs (no redirect done, no
 * page recycled): bare, pushpop (two adjust_heads), 8 calls of a helper
 * doing next to nothing, and the unmarked switch.
 */
import { xdpMd, type BpfProgram } from '../bpf/index.js';
import { openForwardingPath, median } from './forwarding.js';
import { sleep } from '../util/mutex.js';

/** The count once it stops moving (the sink's NAPI may still run after the test run returned). */
async function settled(count: () => bigint): Promise<bigint> {
  let last = -1n;
  let now = count();
  while (now !== last) {
    last = now;
    await sleep(5);
    now = count();
  }
  return now;
}

export const MARKING_DUTS = ['bare', 'push4', 'touch', 'shim', 'switch', 'marked'] as const;
export type MarkingDut = (typeof MARKING_DUTS)[number];

export interface MarkingCostResult {
  framesPerRound: number;
  rounds: number;
  /** through the whole path */
  mpps: Record<MarkingDut, number>;
  vsBare: Record<MarkingDut, number>;
  /** the generator's test run during the path measurement, ns per frame */
  genNs: Record<MarkingDut, number>;
  /** live-frames test run at the DUT, ns per frame (NaN: no run got all its frames to the sink) */
  dutNs: Record<MarkingDut, number>;
  /** DUT test runs left out because frames fell short at the sink */
  dutShortRuns: Record<MarkingDut, number>;
  /** plain test runs, ns per frame (calls8: 8 calls of a helper doing next to nothing) */
  programNs: { bare: number; pushpop: number; calls8: number; switch: number };
}

export async function benchMarkingCost(objectsDir: string, o: { frames?: number; rounds?: number; prefix?: string } = {}): Promise<MarkingCostResult> {
  const frames = o.frames ?? 2_000_000;
  const rounds = o.rounds ?? 5;
  const p = openForwardingPath(objectsDir, o.prefix ?? `sharp-bench-${process.pid}-mark-`);
  try {
    const progOf: Record<MarkingDut, BpfProgram> = {
      bare: p.bench.program('bench_bare'),
      push4: p.bench.program('bench_push4'),
      touch: p.bench.program('bench_touch'),
      shim: p.bench.program('bench_shim'),
      switch: p.sw.program('sharp_switch'),
      marked: p.sw.program('sharp_switch'),
    };
    const dutCtx = xdpMd({ dataLen: p.frame.length, ingressIfindex: p.d0 });
    const mpps = Object.fromEntries(MARKING_DUTS.map((d) => [d, [] as number[]])) as Record<MarkingDut, number[]>;
    const ns = Object.fromEntries(MARKING_DUTS.map((d) => [d, [] as number[]])) as Record<MarkingDut, number[]>;
    const shortRuns = Object.fromEntries(MARKING_DUTS.map((d) => [d, 0])) as Record<MarkingDut, number>;
    const gen = Object.fromEntries(MARKING_DUTS.map((d) => [d, [] as number[]])) as Record<MarkingDut, number[]>;
    const plain = { bare: [] as number[], pushpop: [] as number[], calls8: [] as number[], switch: [] as number[] };
    const plainProg = { bare: progOf.bare, pushpop: p.bench.program('bench_pushpop'), calls8: p.bench.program('bench_calls'), switch: progOf.switch };
    for (let r = 0; r < rounds; r++)
      for (const d of MARKING_DUTS) {
        p.setAction(d === 'marked' ? 1 : 0);
        const link = progOf[d].attachXdp('d0', { netns: p.dut });
        try {
          mpps[d].push(await p.offered(frames, (n) => gen[d].push(n)));
        } finally {
          link.close();
        }
        const before = await settled(p.counter);
        const run = await progOf[d].runAsync({ data: p.frame, context: dutCtx, repeat: frames / 4, liveFrames: true, netns: p.dut, batchSize: 64 });
        // a run whose frames did not all reach the sink (a veth ring overflowed while the
        // machine's load kept the NAPI pass from running) is not a figure of forwarding;
        // the sink also counts what the kernel itself sends out of d1 (IPv6 neighbour discovery)
        const reached = (await settled(p.counter)) - before;
        if (reached < BigInt(frames / 4)) shortRuns[d]++;
        else ns[d].push(run.durationNs);
        if (d === 'bare' || d === 'switch' || d === 'push4')
          for (const k of d === 'push4' ? (['pushpop', 'calls8'] as const) : ([d] as const))
            plain[k].push(plainProg[k].run({ data: p.frame, context: dutCtx, repeat: frames / 4, netns: p.dut }).durationNs);
      }
    const r3 = (x: number): number => +x.toFixed(3);
    const m = Object.fromEntries(MARKING_DUTS.map((d) => [d, median(mpps[d])])) as Record<MarkingDut, number>;
    return {
      framesPerRound: frames,
      rounds,
      mpps: Object.fromEntries(MARKING_DUTS.map((d) => [d, r3(m[d])])) as Record<MarkingDut, number>,
      vsBare: Object.fromEntries(MARKING_DUTS.map((d) => [d, r3(m[d] / m.bare)])) as Record<MarkingDut, number>,
      genNs: Object.fromEntries(MARKING_DUTS.map((d) => [d, median(gen[d])])) as Record<MarkingDut, number>,
      dutNs: Object.fromEntries(MARKING_DUTS.map((d) => [d, ns[d].length ? median(ns[d]) : NaN])) as Record<MarkingDut, number>,
      dutShortRuns: shortRuns,
      programNs: { bare: median(plain.bare), pushpop: median(plain.pushpop), calls8: median(plain.calls8), switch: median(plain.switch) },
    };
  } finally {
    p.close();
  }
}
