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
