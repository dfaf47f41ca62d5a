/**
 * The user-space end of the programs' capture hook (ebpf/include/capture.h)
 * for one loaded object: writes its capture_cfg (filters resolved to
 * ifindexes and slots), reads capture_ring on the event loop, turns records
 * into frames with names, and reads capture_stats (records the ring had no
 * room for).
 */
import { u32, type BpfCollection } from '../bpf/index.js';
import { RingBufferReader } from '../bpf/ringbuf.js';
import {
  sharpCaptureConfigCodec,
  sharpCaptureHdrCodec,
  sharpCaptureStatsCodec,
  sharpFlowKeyCodec,
  SHARP_CAP_DIR_IN,
  SHARP_CAP_DIR_OUT,
  SHARP_CAP_F_DIRECTION,
  SHARP_CAP_F_FLOW,
  SHARP_CAP_F_HID,
  SHARP_CAP_F_PORT,
  SHARP_CAP_F_RULE,
  SHARP_CAP_PROG_AGENT,
} from '../generated/abi.js';
import { ipv4Number } from '../net/frame.js';
import type { CaptureDirection, CaptureRequest } from './filter.js';

export type CaptureProgram = 'switch' | 'agent';

/** One loaded switch or agent object and the names of its interfaces. */
export interface CaptureTarget {
  program: CaptureProgram;
  /** the switch or instance name */
  object: string;
  coll: BpfCollection;
  /** switch: its ports by slot; agent: its interfaces (side 0, side 1) */
  ports: readonly { name: string; ifindex: number; slot?: number }[];
}

/** enum sharp_capture_verdict, by value */
export const VERDICTS = ['', 'forwarded', 'marked-pre', 'marked-post', 'held', 'released', 'relayed', 'dropped', 'passed', 'to-vnf', 'diverted'] as const;
/** enum sharp_capture_reason, by value */
export const REASONS = ['', 'malformed', 'no-rule', 'forged-shim', 'bad-action', 'no-headroom', 'no-tx', 'non-ip', 'shim-rejected', 'shim-malformed', 'ring-full', 'too-big', 'config-error', 'replay-error', 'unknown-hid'] as const;
export type CaptureVerdict = Exclude<(typeof VERDICTS)[number], ''>;

/** A frame as a program saw it, with what it decided. */
export interface CapturedFrame {
  program: CaptureProgram;
  /** switch or instance name */
  object: string;
  /** the port (switch) or interface (agent) the record belongs to */
  port: string;
  /** switch records of frames that left: the port they came in on */
  inPort?: string;
  direction: CaptureDirection;
  verdict: CaptureVerdict;
  /** why it was dropped or passed */
  reason?: string;
  ruleId?: number;
  handoverId?: number;
  /** agent held/released/relayed: hold ring and position in it */
  ring?: number;
  pos?: number;
  /** CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns) */
  monoNs: bigint;
  /** the frame's length (with a stripped shim put back) */
  origLen: number;
  /** the first snaplen bytes, as on the wire */
  data: Buffer;
}

export interface CaptureCounts {
  captured: bigint;
  /** records lost because capture_ring was full (the frames themselves went on) */
  ringFull: bigint;
  filtered: bigint;
}

/** The object was loaded without the capture hook (e.g. pinned by an older node). */
export class CaptureUnavailableError extends Error {
  override name = 'CaptureUnavailableError';
}

const sum = (xs: readonly bigint[]): bigint => xs.reduce((a, b) => a + b, 0n);

export function hasCaptureHook(coll: BpfCollection): boolean {
  return coll.maps.has('capture_cfg') && coll.maps.has('capture_ring') && coll.maps.has('capture_stats');
}

export function readCaptureCounts(coll: BpfCollection): CaptureCounts {
  const per = coll.map('capture_stats').typed(u32, sharpCaptureStatsCodec).getPerCpu(0) ?? [];
  return { captured: sum(per.map((p) => p.captured)), ringFull: sum(per.map((p) => p.ring_full)), filtered: sum(per.map((p) => p.filtered)) };
}

/** Turns the hook off (a node does this for every object at start: a capture killed mid-way may have left it on). */
export function disableCapture(coll: BpfCollection): void {
  if (hasCaptureHook(coll)) coll.map('capture_cfg').update(u32.encode(0), Buffer.alloc(sharpCaptureConfigCodec.size));
}

/**
 * The kernel configuration of a request for one target, or undefined when
 * the request cannot match anything there (its --port is another object's).
 */
export function kernelConfig(t: CaptureTarget, r: CaptureRequest): Buffer | undefined {
  let filters = 0;
  let portIfindex = 0;
  let portSlot = 0;
  if (r.port !== undefined) {
    const p = t.ports.find((x) => x.name === r.port);
    if (p === undefined) return undefined;
    filters |= SHARP_CAP_F_PORT;
    portIfindex = p.ifindex;
    portSlot = p.slot === undefined ? 0 : p.slot + 1;
  }
  if (r.direction !== undefined) filters |= SHARP_CAP_F_DIRECTION;
  if (r.rule !== undefined) {
    // agents know no rules: a rule filter selects switch records only
    if (t.program === 'agent') return undefined;
    filters |= SHARP_CAP_F_RULE;
  }
  if (r.handover !== undefined) filters |= SHARP_CAP_F_HID;
  const f = r.flow;
  if (f !== undefined && Object.values(f).some((v) => v !== undefined)) filters |= SHARP_CAP_F_FLOW;
  return sharpCaptureConfigCodec.encode({
    enabled: 1,
    snaplen: r.snaplen,
    filters,
    direction: r.direction === 'out' ? SHARP_CAP_DIR_OUT : SHARP_CAP_DIR_IN,
    port_ifindex: portIfindex,
    port_slot: portSlot,
    rule_id: r.rule ?? 0,
    hid: r.handover ?? 0,
    flow: sharpFlowKeyCodec.encode({ saddr: f?.src ? ipv4Number(f.src) : 0, daddr: f?.dst ? ipv4Number(f.dst) : 0, sport: f?.sport ?? 0, dport: f?.dport ?? 0, proto: f?.proto ?? 0, pad: Buffer.alloc(3) }),
  });
}

/** Decodes one capture_ring record of target t. */
export function decodeRecord(t: CaptureTarget, rec: Buffer): CapturedFrame {
  const h = sharpCaptureHdrCodec.decode(rec);
  const byIfindex = (i: number): string => t.ports.find((p) => p.ifindex === i)?.name ?? `ifindex ${i}`;
  const bySlot = (s: number): string => t.ports.find((p) => p.slot === s)?.name ?? `slot ${s}`;
  const out = h.direction === SHARP_CAP_DIR_OUT && h.out_slot_plus1 !== 0;
  const agent = h.program === SHARP_CAP_PROG_AGENT;
  const verdict = VERDICTS[h.verdict];
  return {
    program: agent ? 'agent' : 'switch',
    object: t.object,
    port: out ? bySlot(h.out_slot_plus1 - 1) : byIfindex(h.ifindex),
    ...(out ? { inPort: byIfindex(h.ifindex) } : {}),
    direction: h.direction === SHARP_CAP_DIR_IN ? 'in' : 'out',
    verdict: verdict === undefined || verdict === '' ? 'dropped' : verdict,
    ...(h.reason ? { reason: REASONS[h.reason] ?? `reason ${h.reason}` } : {}),
    ...(h.rule_id ? { ruleId: h.rule_id } : {}),
    ...(h.hid ? { handoverId: h.hid } : {}),
    ...(agent && (verdict === 'held' || verdict === 'released' || verdict === 'relayed') ? { ring: h.ring, pos: h.pos } : {}),
    monoNs: h.ts_ns,
    origLen: h.orig_len,
    data: Buffer.from(rec.subarray(sharpCaptureHdrCodec.size, sharpCaptureHdrCodec.size + h.cap_len)),
  };
}

/** A running capture on one object: on at construction, off at stop(). */
export class CaptureTap {
  readonly #reader: RingBufferReader;
  readonly #base: CaptureCounts;
  #stopped = false;

  private constructor(
    readonly target: CaptureTarget,
    onFrame: (f: CapturedFrame) => void,
  ) {
    this.#base = readCaptureCounts(target.coll);
    this.#reader = new RingBufferReader(target.coll.map('capture_ring'));
    this.#reader.on('data', (rec: Buffer) => onFrame(decodeRecord(target, rec)));
  }

  /** Starts capturing on t; undefined when the request cannot match there. */
  static start(t: CaptureTarget, r: CaptureRequest, onFrame: (f: CapturedFrame) => void): CaptureTap | undefined {
    if (!hasCaptureHook(t.coll)) throw new CaptureUnavailableError(`${t.program} ${t.object} was loaded without the capture hook (pinned by an older sharpctl? sharpctl node detach, then start the node again)`);
    const cfg = kernelConfig(t, r);
    if (cfg === undefined) return undefined;
    const tap = new CaptureTap(t, onFrame);
    // drop what an earlier capture left in the ring
    tap.#reader.consume();
    t.coll.map('capture_cfg').update(u32.encode(0), cfg);
    return tap;
  }

  /** Counts since start. */
  counts(): CaptureCounts {
    const now = readCaptureCounts(this.target.coll);
    return { captured: now.captured - this.#base.captured, ringFull: now.ringFull - this.#base.ringFull, filtered: now.filtered - this.#base.filtered };
  }

  /** Drains what is in the ring now (its frames reach onFrame synchronously). */
  drain(): void {
    if (!this.#stopped) this.#reader.consume();
  }

  /** Turns the hook off, delivers what is left in the ring, closes the reader. */
  stop(): CaptureCounts {
    if (!this.#stopped) {
      disableCapture(this.target.coll);
      this.#reader.consume();
      this.#reader.close();
      this.#stopped = true;
    }
    return this.counts();
  }
}
