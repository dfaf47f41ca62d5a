/**
 * The receiving side: tg_sink on the host's interface checks every probe in
 * the kernel (per flow: delivered, reordered, duplicated, stamp = sequence
 * number; see struct sharp_tg_flow_check), so nothing is sampled at any
 * rate; here those per-flow records are read and turned into a report (loss
 * = sent − delivered). One probe in `eventEvery` also reaches this process
 * through a ring buffer, for latencies and the timeline.
 *
 * The stamp check needs a VNF that stamps (the example XDP VNF, `counter`).
 * Through a VNF that does not (`linux`: the stack forwards probes as they
 * are), construct the sink with `stamps: false`: stamps are then not
 * compared at all, and the report says so (stampsChecked: false,
 * stampMismatches 0). See VNF_KINDS[kind].stamps.
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type XdpLink, RingBufferReader, u32 } from '../bpf/index.js';
import { sharpTgEventCodec, sharpTgSinkStatsCodec, sharpTgSinkConfigCodec, sharpTgFlowCheckCodec, sharpTgCheckStatsCodec, SHARP_TG_CHECK_FLOWS, SHARP_TG_MAX_FLOWS, SHARP_TG_SEEN_BUDGET, SHARP_TG_MIN_WINDOW, SHARP_TG_MAX_WINDOW } from '../generated/abi.js';
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
  /** probes the sink saw but could not report as events (its ring was full): they are still checked and counted */
  unreported: number;
  /** sequence numbers per flow within which duplicates are recognised exactly */
  seqWindow: number;
  /**
   * probes that arrived more than seqWindow behind their flow's
   * highest sequence number: counted delivered and reordered, but whether
   * they were duplicates is not known (must be 0 for a clean verdict)
   */
  beyondWindow: number;
  /** probes of flows the sink has no record for (flows beyond its `flows`): not checked (must be 0) */
  unchecked: number;
  flows: FlowReport[];
  latencyUs: { median: number; p99: number; max: number };
  /** per-probe (rx time ms since start, one-way latency µs), sampled for plots */
  timeline: [number, number][];
}

/** latencies kept for the percentiles (a uniform sample beyond that) */
const LATENCY_SAMPLES = 65536;

/** The per-flow duplicate window for `flows` flows: a power of two, flows × window within SHARP_TG_SEEN_BUDGET where it can be. */
export function seqWindowFor(flows: number): number {
  let w = SHARP_TG_MAX_WINDOW;
  while (w > SHARP_TG_MIN_WINDOW && flows * w > SHARP_TG_SEEN_BUDGET) w /= 2;
  return w;
}

export class TrafficSink {
  readonly #coll: BpfCollection;
  readonly #link: XdpLink;
  readonly #reader: RingBufferReader;
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
  readonly #stamps: boolean;
  /** sequence numbers per flow within which duplicates are recognised exactly */
  readonly seqWindow: number;
  /** flows 0..checkedFlows-1 have a check record in the kernel */
  readonly checkedFlows: number;

  /**
   * stamps: compare each probe's stamp with its sequence number (default true; false when the VNFs do not stamp).
   * sampleEvery: one event in this many goes into the timeline (default 1).
   * eventEvery: the kernel reports probes whose seq % eventEvery == 0 as events (default 1: all; 0: none); the checks cover every probe regardless.
   * flows: flows 0..flows-1 are checked (default SHARP_TG_CHECK_FLOWS); more flows, a shorter duplicate window (seqWindowFor).
   */
  constructor(o: { objectsDir: string; netns: string; ifname: string; sampleEvery?: number; stamps?: boolean; eventEvery?: number; flows?: number }) {
    this.#stamps = o.stamps ?? true;
    const flows = o.flows ?? SHARP_TG_CHECK_FLOWS;
    if (!Number.isInteger(flows) || flows < 1 || flows > SHARP_TG_MAX_FLOWS) throw new RangeError(`flows must be an integer in 1..${SHARP_TG_MAX_FLOWS}, got ${flows}`);
    this.checkedFlows = flows;
    this.seqWindow = seqWindowFor(flows);
    const eventEvery = o.eventEvery ?? 1;
    if (!Number.isInteger(eventEvery) || eventEvery < 0 || eventEvery > 0xffffffff) throw new RangeError(`eventEvery must be an integer in 0..${0xffffffff}, got ${eventEvery}`);
    const spec = BpfObjectSpec.open(path.join(o.objectsDir, 'trafficgen.bpf.o'));
    try {
      this.#coll = spec.setMaxEntries('tg_flow_checks', flows).setMaxEntries('tg_seen', flows * this.seqWindow).load();
    } finally {
      spec.close();
    }
    this.#coll.map('tg_sink_config').typed(u32, sharpTgSinkConfigCodec).set(0, { event_every: eventEvery, seq_window: this.seqWindow });
    const every = o.sampleEvery ?? 1;
    this.#reader = new RingBufferReader(this.#coll.map('tg_events'));
    this.#reader.on('data', (b: Buffer) => {
      const ev = sharpTgEventCodec.decode(b);
      const lat = Number(ev.rx_ns - ev.tx_ns) / 1000;
      if (this.#latencies.length < LATENCY_SAMPLES) this.#latencies.push(lat);
      else {
        const k = Math.floor(Math.random() * (this.#events + 1));
        if (k < LATENCY_SAMPLES) this.#latencies[k] = lat;
      }
      if (lat > this.#latencyMax) this.#latencyMax = lat;
      if (this.#events % every === 0) this.#timeline.push([Number(process.hrtime.bigint() - this.#t0) / 1e6, lat]);
      this.#events++;
    });
    this.#link = this.#coll.program('tg_sink').attachXdp(o.ifname, { netns: o.netns });
  }

  /** probes that reached the sink (checked in the kernel; duplicates included) */
  get received(): number {
    const st = this.#coll.map('tg_sink_stats').typed(u32, sharpTgSinkStatsCodec).getPerCpu(0) ?? [];
    return st.reduce((a, x) => a + Number(x.probes), 0);
  }

  /** probes reported to this process as events so far */
  get events(): number {
    return this.#events;
  }

  /** Waits until `expected` probes arrived or none arrived for `quietMs`. */
  async drain(expected: number, quietMs = 300): Promise<void> {
    let last = this.received;
    let lastAt = performance.now();
    while (last < expected && performance.now() - lastAt < quietMs) {
      await sleep(5);
      const now = this.received;
      if (now !== last) {
        last = now;
        lastAt = performance.now();
      }
    }
  }

  /** The kernel's per-flow check records, flows 0..n-1 (zeros for a flow never seen). */
  #flowChecks(n: number): { delivered: number; reordered: number; duplicated: number; stampMismatches: number; beyondWindow: number }[] {
    const m = this.#coll.map('tg_flow_checks');
    const max = m.info.maxEntries;
    return Array.from({ length: n }, (_, f) => {
      const raw = f < max ? m.lookup(u32.encode(f)) : undefined;
      if (raw === undefined) return { delivered: 0, reordered: 0, duplicated: 0, stampMismatches: 0, beyondWindow: 0 };
      const c = sharpTgFlowCheckCodec.decode(raw);
      return { delivered: Number(c.delivered), reordered: Number(c.reordered), duplicated: Number(c.duplicated), stampMismatches: Number(c.stamp_mismatches), beyondWindow: Number(c.beyond_window) };
    });
  }

  /**
   * The numbers so far. `running`: traffic still flows, so a probe not yet
   * delivered is held (`held`, the agents' queued counts), counted as dropped
   * (`accounting`) or in flight, never called lost by guess.
   */
  report(sentPerFlow: readonly bigint[], o: { running?: boolean; held?: number; accounting?: { reported: number; drops: { where: string; reason: string; frames: number }[] } } = {}): TrafficReport {
    // a generator of more flows than the sink checks: those probes would all look lost
    if (sentPerFlow.length > this.checkedFlows) throw new RangeError(`the sink checks ${this.checkedFlows} flows, the traffic has ${sentPerFlow.length}: construct it with flows: ${sentPerFlow.length}`);
    const running = o.running === true;
    const st = this.#coll.map('tg_sink_stats').typed(u32, sharpTgSinkStatsCodec).getPerCpu(0) ?? [];
    const marked = st.reduce((a, s) => a + Number(s.marked), 0);
    const unreported = st.reduce((a, s) => a + Number(s.lost_events), 0);
    const unchecked = (this.#coll.map('tg_check_stats').typed(u32, sharpTgCheckStatsCodec).getPerCpu(0) ?? []).reduce((a, s) => a + Number(s.unchecked), 0);
    const checks = this.#flowChecks(sentPerFlow.length);
    const flows: FlowReport[] = sentPerFlow.map((sent, flow) => {
      const t = checks[flow]!;
      // per flow, loss is known once traffic stopped
      return {
        flow,
        sent,
        delivered: t.delivered,
        lost: running ? 0 : Math.max(0, Number(sent) - t.delivered),
        reordered: t.reordered,
        duplicated: t.duplicated,
        stampMismatches: this.#stamps ? t.stampMismatches : 0,
      };
    });
    const beyondWindow = checks.reduce((a, c) => a + c.beyondWindow, 0);
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
      seqWindow: this.seqWindow,
      beyondWindow,
      unchecked,
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
