/**
 * The controller-buffer baseline's packet path on a node (DivertedFrames,
 * DrainDiverted, SendFromController): the frames the node's switches divert
 * to the controller go up one server stream, in the order each switch
 * diverted them; a drain puts a marker behind every frame diverted so far;
 * the controller's buffer comes back as frames sent out of a switch port.
 * Only the baseline uses it: SHarP never sends a frame to the controller.
 */
import * as grpc from '@grpc/grpc-js';
import type { ControllerChannel, ControllerPacketPath, DivertedFrame } from '../dataplane/types.js';
import type { Wire } from './api.js';

/** frames per SendFromController call, and their sizes */
export const SEND_LIMITS = { frames: 4096, minBytes: 14, maxBytes: 9216 } as const;

/** A stream that is open: frames go into it as they arrive. */
interface Session {
  write(frames: readonly DivertedFrame[], drained?: bigint): void;
  channel: ControllerChannel;
}

export class NodeDivert {
  readonly #path: Pick<ControllerPacketPath, 'openControllerChannel' | 'sendFromController'>;
  #session: Session | undefined;

  constructor(path: Pick<ControllerPacketPath, 'openControllerChannel' | 'sendFromController'>) {
    this.#path = path;
  }

  get open(): boolean {
    return this.#session !== undefined;
  }

  /** Starts the one stream; frames batch per turn of the event loop. Returns its end. */
  start(write: Session['write']): () => void {
    if (this.#session !== undefined) throw new DivertBusyError('a DivertedFrames stream is already open on this node (one reader per ring)');
    let pending: DivertedFrame[] = [];
    let scheduled = false;
    const flush = (): void => {
      scheduled = false;
      if (pending.length === 0) return;
      const fs = pending;
      pending = [];
      write(fs);
    };
    const channel = this.#path.openControllerChannel((f) => {
      pending.push(f);
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    });
    const session: Session = {
      channel,
      write: (fs, drained) => {
        // what arrived before the marker goes before it
        flush();
        write(fs, drained);
      },
    };
    this.#session = session;
    return () => {
      if (this.#session !== session) return;
      this.#session = undefined;
      channel.close();
      pending = [];
    };
  }

  /** Every frame diverted so far into the stream, then the marker. */
  async drain(marker: bigint): Promise<void> {
    const s = this.#session;
    if (s === undefined) throw new DivertBusyError('no DivertedFrames stream is open on this node: open one before draining it');
    await s.channel.drain();
    s.write([], marker);
  }

  send(sw: string, port: string, frames: readonly Buffer[]): Promise<void> {
    return this.#path.sendFromController(sw, port, frames);
  }
}

/** A second stream, or a drain without one. */
export class DivertBusyError extends Error {
  override name = 'DivertBusyError';
}

export const divertedFrameToWire = (f: DivertedFrame): Wire => ({ switch: f.switch, handover_id: f.handoverId, frame: f.frame });
export const divertedFrameFromWire = (w: Wire): DivertedFrame => ({ switch: String(w['switch'] ?? ''), handoverId: Number(w['handover_id'] ?? 0), frame: Buffer.from((w['frame'] as Uint8Array | undefined) ?? []) });

/** The DivertedFrames handler: the stream stays open until the caller cancels it. */
export function divertedFramesHandler(divert: NodeDivert | undefined, node: () => string): grpc.handleServerStreamingCall<Wire, Wire> {
  return (call) => {
    const fail = (code: grpc.status, e: Error): void => {
      const md = new grpc.Metadata();
      md.set('sharp-error', e.name);
      call.emit('error', { code, details: e.message, metadata: md });
    };
    if (divert === undefined) return fail(grpc.status.FAILED_PRECONDITION, new Error(`node ${node()} runs no switch: nothing is diverted here`));
    let end: () => void;
    try {
      end = divert.start((fs, drained) => void call.write({ frames: fs.map(divertedFrameToWire), drained: String(drained ?? 0n) }));
    } catch (e) {
      return fail(grpc.status.FAILED_PRECONDITION, e as Error);
    }
    call.on('cancelled', end);
    call.on('close', end);
    call.on('error', end);
    // the first event says the stream is open: a drain before it would find none
    call.write({ frames: [], drained: '0' });
  };
}
