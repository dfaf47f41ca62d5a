/**
 * What the capture hook costs the switch: the same veth path as the
 * forwarding bench, measured in alternating rounds of one run,
 *   gen (live frames) → veth → DUT → veth → counting sink,
 * with the DUT a bare XDP redirect, the switch built without the hook
 * (-DSHARP_CAPTURE_DISABLED), the switch with the hook off (what every
 * lab and node runs), and the hook on with a filter no frame matches (the
 * cost of a capture of other frames). Ratios are to the bare redirect of
 * the same round set; "off" must equal "compiled out".
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type BpfProgram, ifindexOf, withNetns, xdpMd, u32, u64 } from '../bpf/index.js';
import { sharpPortInfoCodec, sharpRuleActionCodec, sharpFlowKeyCodec, sharpExactRuleCodec, SHARP_PORT_HOST, SHARP_PORT_VNF } from '../generated/abi.js';
import { createNetns, createVeth, deleteNetns } from '../net/iproute.js';
import { udpFrame, ipv4Number } from '../net/frame.js';
import { sleep } from '../util/mutex.js';
import { disableCapture, kernelConfig } from '../capture/tap.js';
import { offeredThroughDut } from './forwarding.js';

export interface CaptureCostResult {
  framesPerRound: number;
  rounds: number;
  bareMpps: number;
  compiledOutMpps: number;
  offMpps: number;
  onFilteredMpps: number;
  compiledOutVsBare: number;
  offVsBare: number;
  onFilteredVsBare: number;
  /** off ÷ compiled out: 1 means the hook costs nothing when off */
  offVsCompiledOut: number;
  /** the program alone: ns per frame by BPF_PROG_TEST_RUN (kernel-timed, repeat), medians of alternating rounds */
  testRunNs: { compiledOut: number; off: number; onFiltered: number };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

type Dut = 'bare' | 'compiledOut' | 'off' | 'onFiltered';

export async function benchCaptureCost(objectsDir: string, o: { frames?: number; rounds?: number } = {}): Promise<CaptureCostResult> {
  const frames = o.frames ?? 2_000_000;
  const rounds = o.rounds ?? 5;
  const prefix = `sharp-bench-${process.pid}-cap-`;
  const [gen, dut, sink] = (['gen', 'dut', 'sink'] as const).map((r) => `${prefix}${r}`) as [string, string, string];
  const colls: BpfCollection[] = [];
  try {
    for (const n of [gen, dut, sink]) createNetns(n);
    createVeth({ name: 'g0', netns: gen, mac: '02:00:00:00:02:01' }, { name: 'd0', netns: dut });
    createVeth({ name: 'd1', netns: dut }, { name: 's0', netns: sink, mac: '02:00:00:00:02:02' });
    const load = (f: string): BpfCollection => {
      const c = BpfObjectSpec.open(path.join(objectsDir, f)).load();
      colls.push(c);
      return c;
    };
    const bench = load('bench.bpf.o');
    const withHook = load('switch.bpf.o');
    const without = load('switch-nocapture.bpf.o');
    const links = [bench.program('bench_sink').attachXdp('s0', { netns: sink }), bench.program('bench_sink').attachXdp('g0', { netns: gen })];
    const d0 = ifindexOf('d0', dut);
    const d1 = ifindexOf('d1', dut);
    const flow = { saddr: ipv4Number('10.9.0.1'), daddr: ipv4Number('10.9.0.2'), sport: 20000, dport: 9000, proto: 17, pad: Buffer.alloc(3) };
    withNetns(dut, () => bench.map('bench_tx_port').update(u32.encode(0), u32.encode(d1)));
    // both switches configured alike: one exact rule, unmarked, d0 → d1
    for (const sw of [withHook, without]) {
      withNetns(dut, () => {
        sw.map('tx_ports').update(u32.encode(0), u32.encode(d0));
        sw.map('tx_ports').update(u32.encode(1), u32.encode(d1));
      });
      sw.map('ports').update(u32.encode(d0), sharpPortInfoCodec.encode({ slot: 0, role: SHARP_PORT_HOST }));
      sw.map('ports').update(u32.encode(d1), sharpPortInfoCodec.encode({ slot: 1, role: SHARP_PORT_VNF }));
      sw.map('rules_exact').update(sharpFlowKeyCodec.encode(flow), sharpExactRuleCodec.encode({ rule_id: 1, action: sharpRuleActionCodec.encode({ out_slot: 1, hid: 0, phase: 0, flags: 0 }) }));
    }
    // a filter no frame matches: handover 16383 is never used here
    const filtered = kernelConfig({ program: 'switch', object: 'dut', coll: withHook, ports: [] }, { handover: 16383, snaplen: 256, count: 0, durationMs: 0 })!;
    const frame = udpFrame({ srcMac: '02:00:00:00:02:01', dstMac: '02:00:00:00:02:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 20000, dstPort: 9000, payload: Buffer.alloc(18), udpChecksum: false });
    const ctx = xdpMd({ dataLen: frame.length, ingressIfindex: ifindexOf('g0', gen) });
    const counter = (): bigint => (bench.map('bench_count').lookupPerCpu(u32.encode(0)) ?? []).reduce((a, b) => a + u64.decode(b), 0n);
    const progOf: Record<Dut, BpfProgram> = { bare: bench.program('bench_bare'), compiledOut: without.program('sharp_switch'), off: withHook.program('sharp_switch'), onFiltered: withHook.program('sharp_switch') };

    const measure = async (d: Dut): Promise<number> => {
      if (d === 'onFiltered') withHook.map('capture_cfg').update(u32.encode(0), filtered);
      else disableCapture(withHook);
      const link = progOf[d].attachXdp('d0', { netns: dut });
      try {
        return await offeredThroughDut({ tx: bench.program('bench_tx'), netns: gen, frame, ctx }, frames, counter);
      } finally {
        link.close();
        disableCapture(withHook);
      }
    };
    const runs: Record<Dut, number[]> = { bare: [], compiledOut: [], off: [], onFiltered: [] };
    for (let r = 0; r < rounds; r++) for (const d of Object.keys(runs) as Dut[]) runs[d].push(await measure(d));
    for (const l of links) l.close();
    // the program alone, timed by the kernel: less exposed to other load on the machine than the veth path
    const ns: Record<Exclude<Dut, 'bare'>, number[]> = { compiledOut: [], off: [], onFiltered: [] };
    const inCtx = xdpMd({ dataLen: frame.length, ingressIfindex: d0 });
    for (let r = 0; r < rounds; r++)
      for (const d of Object.keys(ns) as Exclude<Dut, 'bare'>[]) {
        if (d === 'onFiltered') withHook.map('capture_cfg').update(u32.encode(0), filtered);
        ns[d].push(progOf[d].run({ data: frame, context: inCtx, repeat: 1_000_000, netns: dut }).durationNs);
        disableCapture(withHook);
      }
    const m = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, median(v)])) as Record<Dut, number>;
    const r3 = (x: number): number => +x.toFixed(3);
    return {
      framesPerRound: frames,
      rounds,
      bareMpps: r3(m.bare),
      compiledOutMpps: r3(m.compiledOut),
      offMpps: r3(m.off),
      onFilteredMpps: r3(m.onFiltered),
      compiledOutVsBare: r3(m.compiledOut / m.bare),
      offVsBare: r3(m.off / m.bare),
      onFilteredVsBare: r3(m.onFiltered / m.bare),
      offVsCompiledOut: r3(m.off / m.compiledOut),
      testRunNs: { compiledOut: median(ns.compiledOut), off: median(ns.off), onFiltered: median(ns.onFiltered) },
    };
  } finally {
    for (const c of colls.reverse()) c.close();
    for (const n of [gen, dut, sink]) deleteNetns(n);
  }
}
