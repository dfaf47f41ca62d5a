/**
 * The receiving side: tg_sink on the host's interface reports every probe
 * through a ring buffer; here they are checked for loss, reordering,
 * duplication and VNF state continuity (stamp = sequence number).
 *
 * The stamp check needs a VNF that stamps (the example XDP VNF, `counter`).
 * Through a VNF that does not (`linux`: the stack forwards probes as they
 * are), construct the sink with `stamps: false`: stamps are then not
 * compared at all, and the report says so (stampsChecked: false,
 * stampMismatches 0). See VNF_KINDS[kind].stamps.
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type XdpLink, RingBufferReader, u32 } from '../bpf/index.js';
import { sharpTgEventCodec, sharpTgSinkStatsCodec } from '../generated/abi.js';
import { sleep } from '../util/mutex.js';

export interface FlowReport {
  flow: number;
  sent: bigint;
  delivered: number;
  lost: number;
  reordered: number;
  duplicated: number;
  stampMismatches: number;
}

export interface TrafficReport {
  sent: number;
  delivered: number;
  /**
   * Stopped: sent − delivered. Running: only the probes known to be lost (the
   * counted drops, `reported`); held and in-flight probes are not lost.
   */
  lost: number;
  /** probes in the kernel's hold rings right now (a handover holds them; 0 once traffic stopped) */
  held: number;
  /** running: sent − delivered − held − reported, probes on their way; 0 once stopped */
  inFlight: number;
  /** probes counted as dropped on this direction's path, with their reasons in `drops` */
  reported: number;
  /** stopped: sent − delivered − reported, lost probes no counter explains (must be 0); 0 while running */
  unaccounted: number;
  drops: { where: string; reason: string; frames: number }[];
  reordered: number;
  duplicated: number;
  stampMismatches: number;
  /** whether stamps were compared with sequence numbers (false: the VNFs on the path do not stamp) */
  stampsChecked: boolean;
  /** probes that arrived still carrying a shim (must be 0) */
  marked: number;
  /** probes the sink saw but could not report (its ring was full) */
  unreported: number;
  flows: FlowReport[];
  latencyUs: { median: number; p99: number; max: number };
  /** per-probe (rx time ms since start, one-way latency µs), sampled for plots */
  timeline: [number, number][];
}

/** latencies kept for the percentiles (a uniform sample beyond that) */
const LATENCY_SAMPLES = 65536;

class FlowTrack {
  seen = new Uint8Array(1024);
  maxSeq = 0;
  delivered = 0;
  reordered = 0;
  duplicated = 0;
  stampMismatches = 0;

  constructor(readonly checkStamps: boolean) {}

  add(seq: number, stamp: number): void {
    if (seq >= this.seen.length) {
      const next = new Uint8Array(Math.max(seq + 1, this.seen.length * 2));
      next.set(this.seen);
      this.seen = next;
    }
    if (this.checkStamps && stamp !== seq) this.stampMismatches++;
    if (this.seen[seq]) {
      this.duplicated++;
      return;
    }
    this.seen[seq] = 1;
    this.delivered++;
    if (seq < this.maxSeq) this.reordered++;
    else this.maxSeq = seq;
  }
}

export class TrafficSink {
  readonly #coll: BpfCollection;
  readonly #link: XdpLink;
  readonly #reader: RingBufferReader;
  readonly #flows = new Map<number, FlowTrack>();
  /**
   * A uniform sample of the latencies (reservoir sampling), bounded: a sink
   * that runs for hours keeps its memory flat; median and p99 come from the
   * sample, max is exact.
   */
  readonly #latencies: number[] = [];
  #latencyMax = 0;
  readonly #timeline: [number, number][] = [];
  readonly #t0 = process.hrtime.bigint();
  /** wall clock (ms since the epoch) of the timeline's zero */
  readonly startedAt = Date.now();
  #events = 0;
  #lastEventAt = performance.now();
  readonly #stamps: boolean;

  /** stamps: compare each probe's stamp with its sequence number (default true; false when the VNFs do not stamp) */
  constructor(o: { objectsDir: string; netns: string; ifname: string; sampleEvery?: number; stamps?: boolean }) {
    this.#stamps = o.stamps ?? true;
    this.#coll = BpfObjectSpec.open(path.join(o.objectsDir, 'trafficgen.bpf.o')).load();
    const every = o.sampleEvery ?? 1;
    this.#reader = new RingBufferReader(this.#coll.map('tg_events'));
    this.#reader.on('data', (b: Buffer) => {
      const ev = sharpTgEventCodec.decode(b);
      let f = this.#flows.get(ev.flow);
      if (f === undefined) this.#flows.set(ev.flow, (f = new FlowTrack(this.#stamps)));
      f.add(Number(ev.seq), Number(ev.stamp));
      const lat = Number(ev.rx_ns - ev.tx_ns) / 1000;
      if (this.#latencies.length < LATENCY_SAMPLES) this.#latencies.push(lat);
      else {
        const k = Math.floor(Math.random() * (this.#events + 1));
        if (k < LATENCY_SAMPLES) this.#latencies[k] = lat;
      }
      if (lat > this.#latencyMax) this.#latencyMax = lat;
      if (this.#events % every === 0) this.#timeline.push([Number(process.hrtime.bigint() - this.#t0) / 1e6, lat]);
      this.#events++;
      this.#lastEventAt = performance.now();
    });
    this.#link = this.#coll.program('tg_sink').attachXdp(o.ifname, { netns: o.netns });
  }

  get received(): number {
    return this.#events;
  }

  /** Waits until `expected` probes arrived or nothing arrived for `quietMs`. */
  async drain(expected: number, quietMs = 300): Promise<void> {
    this.#lastEventAt = performance.now();
    while (this.#events < expected && performance.now() - this.#lastEventAt < quietMs) await sleep(5);
  }

  /**
   * The numbers so far. `running`: traffic still flows, so a probe not yet
   * delivered is held (`held`, the agents' queued counts), counted as dropped
   * (`accounting`) or in flight, never called lost by guess.
   */
  report(sentPerFlow: readonly bigint[], o: { running?: boolean; held?: number; accounting?: { reported: number; drops: { where: string; reason: string; frames: number }[] } } = {}): TrafficReport {
    const running = o.running === true;
    const st = this.#coll.map('tg_sink_stats').typed(u32, sharpTgSinkStatsCodec).getPerCpu(0) ?? [];
    const marked = st.reduce((a, s) => a + Number(s.marked), 0);
    const unreported = st.reduce((a, s) => a + Number(s.lost_events), 0);
    const flows: FlowReport[] = sentPerFlow.map((sent, flow) => {
      const t = this.#flows.get(flow) ?? new FlowTrack(this.#stamps);
      // per flow, loss is known once traffic stopped
      return { flow, sent, delivered: t.delivered, lost: running ? 0 : Math.max(0, Number(sent) - t.delivered), reordered: t.reordered, duplicated: t.duplicated, stampMismatches: t.stampMismatches };
    });
    const lat = [...this.#latencies].sort((a, b) => a - b);
    const q = (p: number): number => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]! : 0);
    const total = (k: 'delivered' | 'lost' | 'reordered' | 'duplicated' | 'stampMismatches'): number => flows.reduce((a, f) => a + f[k], 0);
    const sent = flows.reduce((a, f) => a + Number(f.sent), 0);
    const delivered = total('delivered');
    const reported = o.accounting?.reported ?? 0;
    const held = running ? (o.held ?? 0) : 0;
    return {
      sent,
      delivered,
      lost: running ? reported : total('lost'),
      held,
      inFlight: running ? Math.max(0, sent - delivered - held - reported) : 0,
      reported,
      unaccounted: running ? 0 : sent - delivered - reported,
      drops: o.accounting?.drops ?? [],
      reordered: total('reordered'),
      duplicated: total('duplicated'),
      stampMismatches: total('stampMismatches'),
      stampsChecked: this.#stamps,
      marked,
      unreported,
      flows,
      latencyUs: { median: q(0.5), p99: q(0.99), max: lat.length ? this.#latencyMax : 0 },
      timeline: this.#timeline,
    };
  }

  close(): void {
    this.#reader.close();
    this.#link.close();
    this.#coll.close();
  }
}
