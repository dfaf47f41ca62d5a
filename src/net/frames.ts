/**
 * Length-prefixed frames on a stream socket: the wire of sharpctl's framed
 * transports (E-State's peers, src/state/estate/transport.ts; the node API's
 * framed control channel, src/node/transport/frames.ts). Calls are
 * multiplexed on one connection by a call id.
 *
 * Frame: u32 length of what follows | u8 kind | u32 call id | u8 method | body
 *   kind 0 request  body: the method's request
 *   kind 1 answer   body: the method's reply
 *   kind 2 failure  body: what the transport puts there (a status and why)
 */

/** Largest frame either end accepts (a state fetch of many flow records fits; a corrupt length does not make us buffer gigabytes). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

export const FRAME_HEADER_BYTES = 10;
export const FRAME_REQUEST = 0;
export const FRAME_ANSWER = 1;
export const FRAME_FAILURE = 2;

export function encodeFrame(kind: number, id: number, method: number, body: Buffer): Buffer {
  const f = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  f.writeUInt32BE(FRAME_HEADER_BYTES - 4 + body.length, 0);
  f[4] = kind;
  f.writeUInt32BE(id, 5);
  f[9] = method;
  body.copy(f, FRAME_HEADER_BYTES);
  return f;
}

/**
 * Cuts a byte stream into frames; calls `onFrame` for each, and
 * `onOversize` (once, then reads nothing more) for a length outside
 * FRAME_HEADER_BYTES - 4 .. MAX_FRAME_BYTES.
 */
export function frameReader(onFrame: (kind: number, id: number, method: number, body: Buffer) => void, onOversize: (length: number) => void): (chunk: Buffer) => void {
  let pending: Buffer | undefined;
  let failed = false;
  return (chunk) => {
    if (failed) return;
    let b = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
    pending = undefined;
    while (b.length >= 4) {
      const len = b.readUInt32BE(0);
      if (len < FRAME_HEADER_BYTES - 4 || len > MAX_FRAME_BYTES) {
        failed = true;
        return onOversize(len);
      }
      if (b.length < 4 + len) break;
      // a copy: bodies outlive the chunk (adopted byte values), and must not pin it
      onFrame(b[4]!, b.readUInt32BE(5), b[9]!, Buffer.from(b.subarray(FRAME_HEADER_BYTES, 4 + len)));
      b = b.subarray(4 + len);
    }
    if (b.length > 0) pending = Buffer.from(b);
  };
}

/** The error an oversize frame length means, in words. */
export const oversizeMessage = (length: number): string => `frame of ${length} bytes (allowed ${FRAME_HEADER_BYTES - 4} to ${MAX_FRAME_BYTES})`;

/** How a FramedCalls owner makes its errors (each transport has its own error class). */
export interface FramedCallErrors<E extends Error> {
  /** a failure frame's body */
  failure(body: Buffer): E;
  /** the connection failed or closed (`cause`: the socket's error) */
  dead(why: string, cause?: unknown): E;
  /** no answer within the call's `ms` */
  timeout(ms: number): E;
  /** the caller's signal aborted the call */
  cancelled(): E;
}

/**
 * The calls multiplexed on one client connection: ids, the calls waiting
 * for their answers, their timers. Once the connection fails or closes it
 * is dead, every waiting call fails with the same error, and `onDead` runs.
 */
export class FramedCalls<E extends Error> {
  readonly #socket: import('node:net').Socket;
  readonly #errors: FramedCallErrors<E>;
  readonly #pending = new Map<number, { resolve(b: Buffer): void; reject(e: E): void }>();
  #nextId = 0;
  #dead: E | undefined;

  constructor(socket: import('node:net').Socket, errors: FramedCallErrors<E>, onDead?: () => void) {
    this.#socket = socket;
    this.#errors = errors;
    const die = (why: string, cause?: unknown): void => this.kill(why, cause, onDead);
    socket.on('error', (e) => die(e.message, e));
    socket.on('close', () => die('connection closed'));
    socket.on(
      'data',
      frameReader(
        (kind, id, _method, body) => {
          const p = this.#pending.get(id);
          if (p === undefined) return; // answered after its deadline
          this.#pending.delete(id);
          if (kind === FRAME_ANSWER) p.resolve(body);
          else if (kind === FRAME_FAILURE) p.reject(errors.failure(body));
        },
        (len) => die(oversizeMessage(len)),
      ),
    );
  }

  /** the error every call gets once the connection is dead */
  get dead(): E | undefined {
    return this.#dead;
  }

  /** Ends the connection: every waiting call and every later one fails with `dead(why)`. */
  kill(why: string, cause?: unknown, onDead?: () => void): void {
    if (this.#dead !== undefined) return;
    this.#dead = this.#errors.dead(why, cause);
    this.#socket.destroy();
    for (const p of this.#pending.values()) p.reject(this.#dead);
    this.#pending.clear();
    onDead?.();
  }

  /** One request frame of `body`; the answer's body, or the error (timeout after `timeoutMs`, cancelled on `signal`). */
  call(method: number, body: Buffer, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
    if (this.#dead !== undefined) return Promise.reject(this.#dead);
    const id = (this.#nextId = (this.#nextId + 1) >>> 0);
    return new Promise<Buffer>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const fail = (e: E): void => {
        this.#pending.delete(id);
        settle();
        reject(e);
      };
      const timer = setTimeout(() => fail(this.#errors.timeout(timeoutMs)), Math.max(0, timeoutMs));
      const onAbort = (): void => fail(this.#errors.cancelled());
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, {
        resolve: (b) => {
          settle();
          resolve(b);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      });
      // written before the connection is up too: the socket queues it
      this.#socket.write(encodeFrame(FRAME_REQUEST, id, method, body));
    });
  }
}
