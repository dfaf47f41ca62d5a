/**
 * BPF ring buffer consumed on the Node event loop: libuv watches the ring's
 * epoll fd, so there is no polling loop; samples arrive in ring order as
 * 'data' events or through `for await`.
 */
import { EventEmitter } from 'node:events';
import { bpfNative, type NativeRingBuffer } from './native.js';
import { native } from './errors.js';
import { track, untrack, type Closeable } from './handles.js';
import type { BpfMap } from './map.js';

export class RingBufferReader extends EventEmitter implements Closeable, AsyncIterable<Buffer> {
  #rb: NativeRingBuffer | undefined;

  constructor(readonly map: BpfMap) {
    super();
    this.#rb = native(() => new bpfNative.RingBuffer(map.fd, (samples) => this.#deliver(samples)));
    track(this);
  }

  #deliver(samples: Buffer[]): void {
    for (const s of samples) this.emit('data', s);
  }

  /** Drains whatever is in the ring now (synchronously). */
  consume(): number {
    if (this.#rb === undefined) return 0;
    return native(() => this.#rb!.consume());
  }

  /** Let the process exit while the reader is open (like socket.unref()). */
  unref(): this {
    this.#rb?.unref();
    return this;
  }

  ref(): this {
    this.#rb?.ref();
    return this;
  }

  get closed(): boolean {
    return this.#rb === undefined;
  }

  close(): void {
    if (this.#rb === undefined) return;
    this.#rb.close();
    this.#rb = undefined;
    untrack(this);
    this.emit('close');
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    const queue: Buffer[] = [];
    let wake: (() => void) | undefined;
    const onData = (b: Buffer): void => {
      queue.push(b);
      wake?.();
    };
    const onClose = (): void => wake?.();
    this.on('data', onData);
    this.on('close', onClose);
    try {
      for (;;) {
        while (queue.length > 0) yield queue.shift()!;
        if (this.closed) return;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      this.off('data', onData);
      this.off('close', onClose);
    }
  }
}
