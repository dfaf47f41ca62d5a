/**
 * Probe traffic from a host, through live-frames test runs of tg_tx on the
 * host's interface: no socket, any rate the machine sustains. Each probe
 * carries its flow number and per-flow sequence number (1-based).
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, XdpDispatcherAnchor, ifindexOf, xdpMd, u32, u64 } from '../bpf/index.js';
import { sharpTgConfigCodec } from '../generated/abi.js';
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
  /** frames per test run; keep below the veth ring (256) */
  burst?: number;
}

export class TrafficGenerator {
  readonly #coll: BpfCollection;
  readonly #o: Required<GeneratorOptions>;
  readonly #template: Buffer;
  readonly #ctx: Buffer;
  readonly #anchor: XdpDispatcherAnchor;
  #sent = 0;
  #running: Promise<void> | undefined;
  #stop = false;

  constructor(o: GeneratorOptions) {
    this.#o = { flows: 1, basePort: 20000, dstPort: 9000, frameSize: 128, burst: 64, ...o };
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
    return this.#sent;
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

  /** Starts sending at `pps` until stop(); returns at once. */
  start(pps: number): void {
    if (this.#running) throw new Error('generator already running');
    this.#stop = false;
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
    await this.#running;
    this.#running = undefined;
  }

  /** probes sent per flow (read back from the generator's own counters) */
  sentPerFlow(): bigint[] {
    const m = this.#coll.map('tg_seq');
    return Array.from({ length: this.#o.flows }, (_, f) => u64.decode(m.lookup(u32.encode(f))!));
  }

  close(): void {
    this.#anchor.close();
    this.#coll.close();
  }
}
