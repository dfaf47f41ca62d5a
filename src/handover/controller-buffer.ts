/**
 * The baseline SHarP replaced (OpenNF-style), as its own procedure over a
 * handover run: during the state move the switches divert the flow to the
 * controller, which buffers the packets and sends them to the new instance
 * once the state has moved. Kept to measure what SHarP saves: its
 * controller buffer grows with rate × state time, SHarP's is 0.
 */
import { Phase, type Deployment, type ControllerChannel, type ControllerPacketPath } from '../dataplane/types.js';
import { DataPlaneError } from '../dataplane/types.js';
import type { HandoverRun } from './run.js';

/** What the controller itself held during a handover (0 in sharp mode). */
export interface ControllerBufferStats {
  packets: number;
  bytes: number;
  peakPackets: number;
  peakBytes: number;
}

const NO_BUFFER: ControllerBufferStats = { packets: 0, bytes: 0, peakPackets: 0, peakBytes: 0 };

/** One handover's buffer: frames in arrival order per switch. */
class ControllerBuffer {
  readonly frames = new Map<string, Buffer[]>();
  readonly stats: ControllerBufferStats = { ...NO_BUFFER };
  #packets = 0;
  #bytes = 0;

  push(sw: string, frame: Buffer): void {
    const list = this.frames.get(sw) ?? [];
    list.push(frame);
    this.frames.set(sw, list);
    this.#packets++;
    this.#bytes += frame.length;
    this.stats.packets++;
    this.stats.bytes += frame.length;
    this.stats.peakPackets = Math.max(this.stats.peakPackets, this.#packets);
    this.stats.peakBytes = Math.max(this.stats.peakBytes, this.#bytes);
  }

  take(sw: string): Buffer[] {
    const list = this.frames.get(sw) ?? [];
    this.frames.delete(sw);
    this.#packets -= list.length;
    this.#bytes -= list.reduce((a, f) => a + f.length, 0);
    return list;
  }
}

export class ControllerBufferProcedure {
  readonly #d: Deployment;
  /** one channel for all handovers (a ring buffer has one consumer) */
  #channel: ControllerChannel | undefined;
  readonly #buffers = new Map<number, ControllerBuffer>();
  /** diverted frames no handover claimed (must stay 0) */
  unclaimedFrames = 0;

  constructor(d: Deployment) {
    this.#d = d;
  }

  #path(): ControllerPacketPath {
    const p = this.#d.packetPath;
    if (p === undefined) throw new DataPlaneError('this deployment has no controller packet path: the controller-buffer baseline cannot run on it');
    return p;
  }

  #open(hid: number): ControllerBuffer {
    const path = this.#path();
    this.#channel ??= path.openControllerChannel((f) => {
      const b = this.#buffers.get(f.handoverId);
      if (b === undefined) this.unclaimedFrames++;
      else b.push(f.switch, f.frame);
    });
    const b = new ControllerBuffer();
    this.#buffers.set(hid, b);
    return b;
  }

  stats(hid: number): ControllerBufferStats {
    return this.#buffers.get(hid)?.stats ?? NO_BUFFER;
  }

  /** The handover is over: its buffer goes, and the channel with the last one. */
  forget(hid: number): void {
    if (!this.#buffers.delete(hid)) return;
    if (this.#buffers.size === 0) {
      this.#channel?.close();
      this.#channel = undefined;
    }
  }

  /** Arm B, divert to the controller, move state, send the buffer to B, release B, clean up. */
  async run(h: HandoverRun, stateTimeoutMs: number | undefined): Promise<void> {
    const agents = this.#d.agentControl;
    // B will hold frames that arrive while the controller flushes its buffer
    h.enter('arming');
    await agents.armNew(h.to.name, h.id, h.ring);
    // the switches divert the flow to the controller, which buffers it
    h.enter('diverting');
    const buffer = this.#open(h.id);
    h.switchedOver = true;
    await h.route(h.fromPorts, Phase.DIVERT);
    // frames sent to A before the divert are through A: its state is final
    await h.quiesce([h.from.name]);

    await h.moveState(stateTimeoutMs);

    // new frames go to B and are held there; the buffer goes first
    h.enter('flushing', `${buffer.stats.packets} frames buffered at the controller`);
    await h.route(h.toPorts, Phase.POST);
    // the last diverted frames are in the controller's ring
    await h.quiesce([]);
    await this.flushTo(h, h.toPorts);
    // B's agent has passed the flushed frames to its VNF before its ring is released
    await h.quiesce([h.to.name]);

    h.committed = true;
    h.enter('releasing');
    await agents.release(h.to.name, h.id, { timeoutMs: h.remaining() });

    await h.cleanUp();
  }

  /** Sends a handover's buffered frames out of the switch ports in `ports`, in order. */
  async flushTo(h: HandoverRun, ports: ReadonlyMap<number, string>): Promise<void> {
    const buffer = this.#buffers.get(h.id);
    if (buffer === undefined) return;
    await this.#channel?.drain();
    const path = this.#path();
    for (const sw of h.switchNames) {
      const port = ports.get(h.rules.find((r) => r.switch === sw)!.id)!;
      await path.sendFromController(sw, port, buffer.take(sw));
    }
  }
}
