/**
 * Probe traffic from a host, through live-frames test runs of tg_tx on the
 * host's interface: no socket, any rate the machine sustains. Each probe
 * carries its flow number and per-flow sequence number (1-based).
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type PacedRun, XdpDispatcherAnchor, ifindexOf, xdpMd, u32, u64 } from '../bpf/index.js';
import { sharpTgConfigCodec, SHARP_TG_MAX_FLOWS } from '../generated/abi.js';
import { udpFrame } from '../net/frame.js';
import { sleep } from '../util/mutex.js';

export interface GeneratorOptions {
  objectsDir: string;
  netns: string;
  ifname: string;
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  /** flows, numbered 0..flows-1, UDP source port basePort + flow */
  flows?: number;
  basePort?: number;
  dstPort?: number;
  /** frame size on the wire (without FCS), at least 74 */
  frameSize?: number;
  /** frames per test run of the JavaScript pacer; keep below the veth ring (256) */
  burst?: number;
  /**
   * Who paces start(pps): 'native' (default) a thread in the addon
   * (clock_nanosleep), past 1 Mpps here; 'js' the event loop, up to ~130 kpps.
   */
  pacing?: 'js' | 'native';
}

/** Frames the kernel sends per flush in a live-frames run: well below the veth ring (256). */
const LIVE_BATCH = 64;
/** The native pacer's test runs last about this long at the requested rate (bounded below by one frame). */
const NATIVE_RUN_SECONDS = 0.0005;
/** ...and never carry more frames than this (a run is one system call; stop() waits for it) */
const NATIVE_MAX_CHUNK = 1024;
/**
 * A generator kept off the CPU makes up at most this much lost time: the
 * traffic of a source at a constant rate, not a burst at the machine's
 * ceiling after every stall (the time skipped is in lastPacedSlippedMs).
 */
const NATIVE_MAX_LAG_MS = 5;

/** Frames per native test run at `pps`: about NATIVE_RUN_SECONDS of traffic, 1..NATIVE_MAX_CHUNK. */
export function nativeChunk(pps: number): number {
  return Math.max(1, Math.min(NATIVE_MAX_CHUNK, Math.round(pps * NATIVE_RUN_SECONDS)));
}

export class TrafficGenerator {
  readonly #coll: BpfCollection;
  readonly #o: Required<GeneratorOptions>;
  readonly #template: Buffer;
  readonly #ctx: Buffer;
  readonly #anchor: XdpDispatcherAnchor;
  #sent = 0;
  #running: Promise<void> | undefined;
  #paced: PacedRun | undefined;
  #lastPaced: { frames: number; elapsedNs: number; slippedNs: number } | undefined;
  #stop = false;

  constructor(o: GeneratorOptions) {
    this.#o = { flows: 1, basePort: 20000, dstPort: 9000, frameSize: 128, burst: 64, pacing: 'native', ...o };
    const flows = this.#o.flows;
    if (!Number.isInteger(flows) || flows < 1 || flows > SHARP_TG_MAX_FLOWS) throw new RangeError(`flows must be an integer in 1..${SHARP_TG_MAX_FLOWS}, got ${flows}`);
    this.#coll = BpfObjectSpec.open(path.join(o.objectsDir, 'trafficgen.bpf.o')).load();
    this.#coll.map('tg_config').typed(u32, sharpTgConfigCodec).set(0, { flows: this.#o.flows, base_sport: this.#o.basePort, pad: 0, next: 0n });
    const payload = Buffer.alloc(Math.max(32, this.#o.frameSize - 42));
    this.#template = udpFrame({
      srcMac: o.srcMac,
      dstMac: o.dstMac,
      srcIp: o.srcIp,
      dstIp: o.dstIp,
      srcPort: this.#o.basePort,
      dstPort: this.#o.dstPort,
      payload,
      udpChecksum: false, // tg_tx rewrites ports and probe fields without checksum updates
    });
    this.#ctx = xdpMd({ dataLen: this.#template.length, ingressIfindex: ifindexOf(o.ifname, o.netns) });
    try {
      this.#anchor = new XdpDispatcherAnchor(this.#coll.program('tg_tx'), `sharp-tg${process.pid % 1000}`, o.netns);
    } catch (e) {
      this.#coll.close();
      throw e;
    }
  }

  get flows(): number {
    return this.#o.flows;
  }

  /** probes handed to the interface so far */
  get sent(): number {
    return this.#sent + (this.#paced?.sent ?? 0);
  }

  /** the last natively paced run's rate, as its thread measured it (frames / its running time); undefined before one ended */
  get lastPacedPps(): number | undefined {
    const r = this.#lastPaced;
    return r === undefined || r.elapsedNs === 0 ? undefined : r.frames / (r.elapsedNs / 1e9);
  }

  /** how far the last natively paced run fell behind its schedule for good (kept off the CPU), ms */
  get lastPacedSlippedMs(): number | undefined {
    return this.#lastPaced === undefined ? undefined : this.#lastPaced.slippedNs / 1e6;
  }

  get pacing(): 'js' | 'native' {
    return this.#o.pacing;
  }

  /** Sends `n` probes now (in bursts). */
  async send(n: number): Promise<void> {
    while (n > 0) {
      const b = Math.min(n, this.#o.burst);
      await this.#coll.program('tg_tx').runAsync({ data: this.#template, context: this.#ctx, repeat: b, liveFrames: true, netns: this.#o.netns });
      this.#sent += b;
      n -= b;
    }
  }

  /**
   * Sends exactly `frames` probes at `pps`, paced natively (whatever
   * `pacing` says), and resolves once they are all handed to the interface.
   */
  async sendPaced(frames: number, pps: number): Promise<void> {
    if (!Number.isSafeInteger(frames) || frames < 1) throw new RangeError(`frames must be a positive integer, got ${frames}`);
    this.#startNative(pps, frames);
    try {
      await this.#running;
    } finally {
      this.#running = undefined;
    }
  }

  #startNative(pps: number, maxFrames: number): void {
    if (this.#running) throw new Error('generator already running');
    if (!(pps > 0) || !Number.isFinite(pps)) throw new RangeError(`pps must be a positive number, got ${pps}`);
    const run = this.#coll.program('tg_tx').runPaced({ data: this.#template, context: this.#ctx, batchSize: LIVE_BATCH, netns: this.#o.netns }, { framesPerSecond: pps, chunk: nativeChunk(pps), maxFrames, maxLagMs: NATIVE_MAX_LAG_MS });
    this.#paced = run;
    this.#running = run.done.then(
      (r) => {
        this.#paced = undefined;
        this.#sent += r.frames;
        this.#lastPaced = { frames: r.frames, elapsedNs: r.elapsedNs, slippedNs: r.slippedNs };
      },
      (e: unknown) => {
        this.#sent += run.sent;
        this.#paced = undefined;
        throw e;
      },
    );
    // a failed run is reported by stop() (or sendPaced), not as an unhandled rejection meanwhile
    this.#running.catch(() => undefined);
  }

  /** Starts sending at `pps` until stop(); returns at once. */
  start(pps: number): void {
    if (this.#running) throw new Error('generator already running');
    if (!(pps > 0) || !Number.isFinite(pps)) throw new RangeError(`pps must be a positive number, got ${pps}`);
    this.#stop = false;
    if (this.#o.pacing === 'native') {
      this.#startNative(pps, 0);
      return;
    }
    this.#running = (async () => {
      const t0 = performance.now();
      const base = this.#sent;
      while (!this.#stop) {
        const due = Math.floor(((performance.now() - t0) / 1000) * pps) - (this.#sent - base);
        if (due > 0) await this.send(Math.min(due, this.#o.burst));
        else await sleep(1);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    this.#paced?.stop();
    try {
      await this.#running;
    } finally {
      this.#running = undefined;
    }
  }

  /** probes sent per flow (read back from the generator's own counters) */
  sentPerFlow(): bigint[] {
    const m = this.#coll.map('tg_seq');
    return Array.from({ length: this.#o.flows }, (_, f) => u64.decode(m.lookup(u32.encode(f))!));
  }

  /**
   * Releases the programs. A native run still going is stopped first, and
   * the programs are released once its thread let go of them (its fd must
   * not be reused under a running test run).
   */
  close(): void {
    const release = (): void => {
      this.#anchor.close();
      this.#coll.close();
    };
    if (this.#paced !== undefined && this.#running !== undefined) {
      this.#paced.stop();
      this.#running.then(release, release);
      return;
    }
    release();
  }
}
