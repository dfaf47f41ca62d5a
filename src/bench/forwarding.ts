/**
 * Switch forwarding rate vs a bare XDP redirect, on the same veth path,
 * measured alternately in one run:
 *   gen (live frames, XDP_TX) → veth → DUT (switch | bare redirect) → veth → sink (count, drop)
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type BpfProgram, ifindexOf, withNetns, xdpMd, u32, u64 } from '../bpf/index.js';
import { sharpPortInfoCodec, sharpRuleActionCodec, sharpFlowKeyCodec, sharpExactRuleCodec, SHARP_PORT_HOST, SHARP_PORT_VNF } from '../generated/abi.js';
import { createNetns, createVeth, deleteNetns } from '../net/iproute.js';
import { udpFrame, ipv4Number } from '../net/frame.js';
import { sleep } from '../util/mutex.js';

export interface ForwardingResult {
  frameBytes: number;
  framesPerRound: number;
  rounds: number;
  bareMpps: number;
  switchMpps: number;
  switchMarkedMpps: number;
  switchVsBareRatio: number;
  switchMarkedVsBareRatio: number;
}

/**
 * Mpps through a DUT: `frames` live frames from the generator's bench_tx,
 * counted by the sink's bench_count once the count stops moving (the last
 * frames may still be queued at the DUT). `genNs`, if given, gets the
 * generator's own test run, kernel-timed, in ns per frame.
 */
export async function offeredThroughDut(gen: { tx: BpfProgram; netns: string; frame: Buffer; ctx: Buffer }, frames: number, count: () => bigint, genNs?: (ns: number) => void): Promise<number> {
  await sleep(20);
  const before = count();
  const t0 = process.hrtime.bigint();
  const run = await gen.tx.runAsync({ data: gen.frame, context: gen.ctx, repeat: frames, liveFrames: true, netns: gen.netns, batchSize: 64 });
  genNs?.(run.durationNs);
  let last = -1n;
  let now = count();
  while (now !== last) {
    last = now;
    await sleep(5);
    now = count();
  }
  return Number(now - before) / (Number(process.hrtime.bigint() - t0) / 1e9) / 1e6;
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The bench's path, set up: gen → veth → DUT (nothing attached yet) → veth → counting sink; the switch holds one exact rule d0 → d1. */
export interface ForwardingPath {
  gen: string;
  dut: string;
  bench: BpfCollection;
  sw: BpfCollection;
  d0: number;
  frame: Buffer;
  /** the generator's context (ingress g0) */
  genCtx: Buffer;
  /** frames the sink has counted */
  counter(): bigint;
  /** the switch's rule: unmarked (phase 0) or marked phase with hid 1 */
  setAction(phase: number): void;
  /** the generator's frames through whatever is attached at d0, in Mpps */
  offered(frames: number, genNs?: (ns: number) => void): Promise<number>;
  close(): void;
}

export function openForwardingPath(objectsDir: string, prefix: string): ForwardingPath {
  const [gen, dut, sink] = ['gen', 'dut', 'sink'].map((r) => `${prefix}${r}`) as [string, string, string];
  const colls: BpfCollection[] = [];
  const links: { close(): void }[] = [];
  const close = (): void => {
    for (const l of links) l.close();
    for (const c of colls.reverse()) c.close();
    for (const n of [gen, dut, sink]) deleteNetns(n);
  };
  const load = (f: string): BpfCollection => {
    const c = BpfObjectSpec.open(path.join(objectsDir, f)).load();
    colls.push(c);
    return c;
  };
  try {
    for (const n of [gen, dut, sink]) createNetns(n);
    createVeth({ name: 'g0', netns: gen, mac: '02:00:00:00:01:01' }, { name: 'd0', netns: dut });
    createVeth({ name: 'd1', netns: dut }, { name: 's0', netns: sink, mac: '02:00:00:00:01:02' });
    const bench = load('bench.bpf.o');
    const sw = load('switch.bpf.o');
    links.push(bench.program('bench_sink').attachXdp('s0', { netns: sink }), bench.program('bench_sink').attachXdp('g0', { netns: gen }));
    const d0 = ifindexOf('d0', dut);
    const d1 = ifindexOf('d1', dut);
    withNetns(dut, () => {
      bench.map('bench_tx_port').update(u32.encode(0), u32.encode(d1));
      sw.map('tx_ports').update(u32.encode(0), u32.encode(d0));
      sw.map('tx_ports').update(u32.encode(1), u32.encode(d1));
    });
    sw.map('ports').update(u32.encode(d0), sharpPortInfoCodec.encode({ slot: 0, role: SHARP_PORT_HOST }));
    sw.map('ports').update(u32.encode(d1), sharpPortInfoCodec.encode({ slot: 1, role: SHARP_PORT_VNF }));
    const flow = { saddr: ipv4Number('10.9.0.1'), daddr: ipv4Number('10.9.0.2'), sport: 20000, dport: 9000, proto: 17, pad: Buffer.alloc(3) };
    const setAction = (phase: number): void =>
      sw.map('rules_exact').update(sharpFlowKeyCodec.encode(flow), sharpExactRuleCodec.encode({ rule_id: 1, action: sharpRuleActionCodec.encode({ out_slot: 1, hid: phase ? 1 : 0, phase, flags: 0 }) }));
    setAction(0);
    const frame = udpFrame({ srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 20000, dstPort: 9000, payload: Buffer.alloc(18), udpChecksum: false });
    const genCtx = xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf('g0', gen) });
    const counter = (): bigint => (bench.map('bench_count').lookupPerCpu(u32.encode(0)) ?? []).reduce((a, b) => a + u64.decode(b), 0n);
    const offered = (frames: number, genNs?: (ns: number) => void): Promise<number> => offeredThroughDut({ tx: bench.program('bench_tx'), netns: gen, frame, ctx: genCtx }, frames, counter, genNs);
    return { gen, dut, bench, sw, d0, frame, genCtx, counter, setAction, offered, close };
  } catch (e) {
    close();
    throw e;
  }
}

export async function benchForwarding(objectsDir: string, o: { frames?: number; rounds?: number; prefix?: string } = {}): Promise<ForwardingResult> {
  const frames = o.frames ?? 2_000_000;
  const rounds = o.rounds ?? 3;
  const p = openForwardingPath(objectsDir, o.prefix ?? `sharp-bench-${process.pid}-`);
  try {
    const measure = async (dutProg: 'bare' | 'switch' | 'marked'): Promise<number> => {
      const prog = dutProg === 'bare' ? p.bench.program('bench_bare') : p.sw.program('sharp_switch');
      if (dutProg !== 'bare') p.setAction(dutProg === 'marked' ? 1 : 0);
      const link = prog.attachXdp('d0', { netns: p.dut });
      try {
        return await p.offered(frames);
      } finally {
        link.close();
      }
    };
    const bare: number[] = [];
    const plain: number[] = [];
    const marked: number[] = [];
    for (let r = 0; r < rounds; r++) {
      bare.push(await measure('bare'));
      plain.push(await measure('switch'));
      marked.push(await measure('marked'));
    }
    const b = median(bare);
    const s = median(plain);
    const m = median(marked);
    return {
      frameBytes: p.frame.length,
      framesPerRound: frames,
      rounds,
      bareMpps: +b.toFixed(3),
      switchMpps: +s.toFixed(3),
      switchMarkedMpps: +m.toFixed(3),
      switchVsBareRatio: +(s / b).toFixed(3),
      switchMarkedVsBareRatio: +(m / b).toFixed(3),
    };
  } finally {
    p.close();
  }
}
