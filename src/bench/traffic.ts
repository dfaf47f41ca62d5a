/**
 * The traffic generator's own ceiling: the natively paced generator (tg_tx,
 * live frames) offering far more than it can into one veth whose far end
 * only counts (bench_sink), and the same into the checking sink (tg_sink:
 * every probe's sequence, order, duplicates and stamp checked in the
 * kernel). Same 64-byte probes, measured side by side in one run.
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type XdpLink } from '../bpf/index.js';
import { createNetns, createVeth, deleteNetns } from '../net/iproute.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { TrafficSink } from '../traffic/sink.js';
import { sleep } from '../util/mutex.js';

export interface GeneratorCeilingResult {
  frameBytes: number;
  seconds: number;
  /** probes per second offered by one generator into a counting sink */
  generatorCeilingMpps: number;
  /** the same into the checking sink (tg_sink), with every probe checked */
  checkingSinkMpps: number;
  /** the checking sink's verdict on those probes (must all be 0) */
  checkingSinkLost: number;
  checkingSinkReordered: number;
  checkingSinkDuplicated: number;
}

/** the smallest probe frame: Ethernet 14 + IPv4 20 + UDP 8 + the 32-byte probe (64-byte frames cannot carry one) */
export const PROBE_FRAME_BYTES = 74;

const MAC_GEN = '02:00:00:00:02:01';
const MAC_SINK = '02:00:00:00:02:02';

export async function benchGeneratorCeiling(objectsDir: string, o: { seconds?: number; prefix?: string } = {}): Promise<GeneratorCeilingResult> {
  const seconds = o.seconds ?? 1;
  // sharp-bench-<pid>-: `lab down --stray` (namespaceOwner) leaves it alone while this process lives
  const prefix = o.prefix ?? `sharp-bench-${process.pid}-gen-`;
  const [genNs, sinkNs] = [`${prefix}g`, `${prefix}s`];
  const colls: BpfCollection[] = [];
  const links: XdpLink[] = [];
  try {
    createNetns(genNs);
    createNetns(sinkNs);
    createVeth({ name: 'g0', netns: genNs, mac: MAC_GEN, address: '10.9.1.1/24' }, { name: 's0', netns: sinkNs, mac: MAC_SINK, address: '10.9.1.2/24' });
    const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
    colls.push(bench);
    // the generator's own interface: whatever comes back is counted and dropped
    links.push(bench.program('bench_sink').attachXdp('g0', { netns: genNs }));
    /** Mpps one generator offers flat out for `seconds`, and its per-flow counts */
    const offer = async (): Promise<{ mpps: number; sent: number; perFlow: bigint[] }> => {
      const gen = new TrafficGenerator({ objectsDir, netns: genNs, ifname: 'g0', srcMac: MAC_GEN, dstMac: MAC_SINK, srcIp: '10.9.1.1', dstIp: '10.9.1.2', flows: 8, frameSize: PROBE_FRAME_BYTES, pacing: 'native' });
      try {
        // far above what one thread can offer: the generator runs flat out
        gen.start(50_000_000);
        await sleep(seconds * 1000);
        await gen.stop();
        return { mpps: (gen.lastPacedPps ?? 0) / 1e6, sent: gen.sent, perFlow: gen.sentPerFlow() };
      } finally {
        gen.close();
      }
    };

    const countLink = bench.program('bench_sink').attachXdp('s0', { netns: sinkNs });
    const counting = await offer();
    countLink.close();

    const sink = new TrafficSink({ objectsDir, netns: sinkNs, ifname: 's0', stamps: false, eventEvery: 0, flows: 8 });
    let checking: Awaited<ReturnType<typeof offer>>;
    let rep;
    try {
      checking = await offer();
      await sink.drain(checking.sent);
      rep = sink.report(checking.perFlow);
    } finally {
      sink.close();
    }
    return {
      frameBytes: PROBE_FRAME_BYTES,
      seconds,
      generatorCeilingMpps: +counting.mpps.toFixed(3),
      checkingSinkMpps: +checking.mpps.toFixed(3),
      checkingSinkLost: rep.lost,
      checkingSinkReordered: rep.reordered,
      checkingSinkDuplicated: rep.duplicated,
    };
  } finally {
    for (const l of links) l.close();
    for (const c of colls.reverse()) c.close();
    deleteNetns(genNs);
    deleteNetns(sinkNs);
  }
}
