/**
 * The traffic generator's own ceiling: the natively paced generator (tg_tx,
 * live frames) offering far more than it can into one veth whose far end
 * only counts (bench_sink), and the same into the checking sink (tg_sink:
 * every probe's sequence, order, duplicates and stamp checked in the
 * kernel). Same 64-byte probes, measured side by side in one run.
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type XdpLink, u32, u64 } from '../bpf/index.js';
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

/** 64-byte probes: 14 eth + 20 ip + 8 udp + 32 probe = 74 is the least a probe needs; 64 is below it, so the smallest probe */
export const PROBE_FRAME_BYTES = 74;

const MAC_GEN = '02:00:00:00:02:01';
const MAC_SINK = '02:00:00:00:02:02';

export async function benchGeneratorCeiling(objectsDir: string, o: { seconds?: number; prefix?: string } = {}): Promise<GeneratorCeilingResult> {
  const seconds = o.seconds ?? 1;
  const prefix = o.prefix ?? `sharp-bench-gen-${process.pid}-`;
  const [genNs, sinkNs] = [`${prefix}g`, `${prefix}s`];
  const colls: BpfCollection[] = [];
  const links: XdpLink[] = [];
  try {
    createNetns(genNs);
    createNetns(sinkNs);
    createVeth({ name: 'g0', netns: genNs, mac: MAC_GEN, address: '10.9.1.1/24' }, { name: 's0', netns: sinkNs, mac: MAC_SINK, address: '10.9.1.2/24' });
    const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
    colls.push(bench);
    // the generator's own interface gets frames back only if something answers; count those too
    links.push(bench.program('bench_sink').attachXdp('g0', { netns: genNs }));
    const counted = (): bigint => (bench.map('bench_count').lookupPerCpu(u32.encode(0)) ?? []).reduce((a, b) => a + u64.decode(b), 0n);
    const offer = async (): Promise<number> => {
      const gen = new TrafficGenerator({ objectsDir, netns: genNs, ifname: 'g0', srcMac: MAC_GEN, dstMac: MAC_SINK, srcIp: '10.9.1.1', dstIp: '10.9.1.2', flows: 8, frameSize: PROBE_FRAME_BYTES, pacing: 'native' });
      try {
        const t0 = process.hrtime.bigint();
        // far above what one thread can offer: the generator runs flat out
        gen.start(50_000_000);
        await sleep(seconds * 1000);
        await gen.stop();
        const secs = Number(process.hrtime.bigint() - t0) / 1e9;
        return gen.sent / secs / 1e6;
      } finally {
        gen.close();
      }
    };

    const countLink = bench.program('bench_sink').attachXdp('s0', { netns: sinkNs });
    const before = counted();
    const genMpps = await offer();
    countLink.close();
    void before;

    const sink = new TrafficSink({ objectsDir, netns: sinkNs, ifname: 's0', stamps: false, eventEvery: 0 });
    let checking: number;
    let rep;
    try {
      const gen = new TrafficGenerator({ objectsDir, netns: genNs, ifname: 'g0', srcMac: MAC_GEN, dstMac: MAC_SINK, srcIp: '10.9.1.1', dstIp: '10.9.1.2', flows: 8, frameSize: PROBE_FRAME_BYTES, pacing: 'native' });
      try {
        const t0 = process.hrtime.bigint();
        gen.start(50_000_000);
        await sleep(seconds * 1000);
        await gen.stop();
        const secs = Number(process.hrtime.bigint() - t0) / 1e9;
        checking = gen.sent / secs / 1e6;
        await sink.drain(gen.sent);
        rep = sink.report(gen.sentPerFlow());
      } finally {
        gen.close();
      }
    } finally {
      sink.close();
    }
    return {
      frameBytes: PROBE_FRAME_BYTES,
      seconds,
      generatorCeilingMpps: +genMpps.toFixed(3),
      checkingSinkMpps: +checking.toFixed(3),
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
