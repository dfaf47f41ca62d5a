/**
 * The E-State peer transport: the protobuf messages of proto.ts, framed on
 * a stream socket, one connection per peer with calls multiplexed on it.
 *
 *  - Unix socket (local peers, the default): the socket file is 0600 in a
 *    0700 folder of the user's, so only the owner's processes connect;
 *  - TCP with mutual TLS (peers on other hosts): both ends show a
 *    certificate the group's CA signed, else the handshake fails before a
 *    frame is read. Nothing listens on TCP without it.
 *
 * Why not gRPC (the transport before): grpc-js spends ~0.8 ms of CPU per
 * unary call on this VM (HTTP/2 streams, metadata, the retrying-call and
 * load-balancer layers), against ~30 µs for a framed round trip on a Unix
 * socket; getGlobal fans out to every peer, so that cost was the whole
 * latency (see the benchmark and src/state/README.md).
 *
 * Frames: src/net/frames.ts; a failure's body is utf8 "<STATUS> <detail>".
 */
import net from 'node:net';
import tls from 'node:tls';
import { chmodSync, lstatSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TlsMaterial } from '../../node/transport/certs.js';
import { encodeFrame, frameReader, FramedCalls, FRAME_ANSWER, FRAME_FAILURE, FRAME_REQUEST, MAX_FRAME_BYTES } from '../../net/frames.js';
import { StateError } from '../types.js';

/** Why a call failed (the names and meanings of gRPC's status codes). */
export const CALL_STATUSES = ['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'CANCELLED', 'INTERNAL', 'INVALID_ARGUMENT', 'UNIMPLEMENTED', 'FAILED_PRECONDITION', 'RESOURCE_EXHAUSTED'] as const;
export type CallStatus = (typeof CALL_STATUSES)[number];

/** Statuses after which another attempt may succeed. */
export const RETRYABLE_STATUSES: ReadonlySet<CallStatus> = new Set<CallStatus>(['UNAVAILABLE', 'CANCELLED', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED', 'INTERNAL']);

/** One call to a peer that failed: its status and what went wrong. */
export class PeerCallError extends StateError {
  override name = 'PeerCallError';
  constructor(
    readonly status: CallStatus,
    readonly detail: string,
    options?: ErrorOptions,
  ) {
    super(`${status}: ${detail}`, options);
  }
}

/** A peer address that cannot be used. */
export class PeerAddressError extends StateError {
  override name = 'PeerAddressError';
}

export { MAX_FRAME_BYTES };
/** sun_path holds 108 bytes, the terminating NUL included */
export const MAX_SOCKET_PATH_BYTES = 107;

const frame = encodeFrame;
const KIND_REQUEST = FRAME_REQUEST;
const KIND_ANSWER = FRAME_ANSWER;
const KIND_FAILURE = FRAME_FAILURE;

export type PeerAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** `unix:/abs/path.sock`, `host:port` or `[v6]:port`. */
export function parsePeerAddress(address: string): PeerAddress {
  if (address.startsWith('unix:')) {
    const p = address.slice(5);
    if (!path.isAbsolute(p)) throw new PeerAddressError(`peer address '${address}': a Unix socket path must be absolute`);
    return { kind: 'unix', path: p };
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 1 && port <= 65535)) throw new PeerAddressError(`peer address '${address}' is neither unix:/path nor host:port with port 1-65535`);
  return { kind: 'tcp', host: m[1] ?? m[2]!, port };
}

function failureBody(status: CallStatus, detail: string): Buffer {
  return Buffer.from(`${status} ${detail}`);
}

function parseFailure(body: Buffer): PeerCallError {
  const s = body.toString();
  const sp = s.indexOf(' ');
  const status = (sp < 0 ? s : s.slice(0, sp)) as CallStatus;
  // a status this end does not know is reported as INTERNAL, with the text as sent
  if (!CALL_STATUSES.includes(status)) return new PeerCallError('INTERNAL', s);
  return new PeerCallError(status, sp < 0 ? '' : s.slice(sp + 1));
}

// ---------------------------------------------------------------- server

/** Answers one request: resolve with the reply message, or throw a PeerCallError (any other error: INTERNAL). */
export type RequestHandler = (method: number, body: Buffer) => Buffer | Promise<Buffer>;

export interface ServeOptions {
  /** serve on this Unix socket path (its folder must exist) */
  unixPath?: string;
  /**
   * serve on TCP with mutual TLS; `admit`: a further check of the client's
   * certificate (already signed by the CA): a reason to refuse it, or
   * undefined to serve it (e.g. only node certificates of the group)
   */
  tcp?: { host: string; port: number; tls: TlsMaterial; admit?: (peer: tls.TLSSocket) => string | undefined };
}

/** socket files in the default folder are named <id>-<pid>-<n>.sock */
const SOCKET_FILE = /-(\d+)-\d+\.sock$/;
let swept = false;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the sockets of processes that died without closing their node
 * (SIGKILL): their pid is in the name. A live pid keeps its files.
 */
export function sweepStaleSockets(dir: string): string[] {
  const removed: string[] = [];
  for (const f of readdirSync(dir)) {
    const m = SOCKET_FILE.exec(f);
    if (m === null || alive(Number(m[1]))) continue;
    try {
      unlinkSync(path.join(dir, f));
      removed.push(f);
    } catch {
      // another process swept it first
    }
  }
  return removed;
}

/**
 * A private folder for this user's E-State sockets: <tmpdir>/sharpctl-estate-<uid>,
 * created 0700; refused if it exists as anything but a folder of ours
 * with no access for others. The first call in a process sweeps the
 * sockets dead processes left.
 */
export function defaultSocketDir(): string {
  const uid = process.getuid?.() ?? 0;
  const dir = path.join(os.tmpdir(), `sharpctl-estate-${uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) {
    throw new PeerAddressError(`E-State socket folder ${dir} must be a folder owned by uid ${uid} with mode 0700 (it is ${st.isDirectory() ? `mode 0${(st.mode & 0o777).toString(8)}, uid ${st.uid}` : 'not a folder'})`);
  }
  if (!swept) {
    swept = true;
    sweepStaleSockets(dir);
  }
  return dir;
}

export class PeerServer {
  readonly #server: net.Server;
  /** open connections (the listener adds and removes them) */
  readonly #sockets: Set<net.Socket>;
  readonly #unixPath: string | undefined;
  #closed = false;

  private constructor(server: net.Server, sockets: Set<net.Socket>, readonly address: string, unixPath: string | undefined) {
    this.#server = server;
    this.#sockets = sockets;
    this.#unixPath = unixPath;
  }

  static async listen(o: ServeOptions, handler: RequestHandler): Promise<PeerServer> {
    if ((o.unixPath === undefined) === (o.tcp === undefined)) throw new PeerAddressError('serve on exactly one of unixPath or tcp');
    const sockets = new Set<net.Socket>();
    const onConnection = (s: net.Socket): void => {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
      if (o.tcp !== undefined) s.setNoDelay(true);
      const refused = o.tcp?.admit?.(s as tls.TLSSocket);
      if (refused !== undefined) {
        // before any request is read: a refused peer changes nothing and learns nothing
        s.destroy();
        return;
      }
      const write = (kind: number, id: number, method: number, body: Buffer): void => {
        if (!s.destroyed) s.write(frame(kind, id, method, body));
      };
      s.on(
        'data',
        frameReader(
          (kind, id, method, body) => {
            if (kind !== KIND_REQUEST) return;
            const fail = (e: unknown): void => {
              const pe = e instanceof PeerCallError ? e : new PeerCallError('INTERNAL', e instanceof Error ? e.message : String(e));
              write(KIND_FAILURE, id, method, failureBody(pe.status, pe.detail));
            };
            try {
              const r = handler(method, body);
              if (r instanceof Promise) r.then((b) => write(KIND_ANSWER, id, method, b), fail);
              else write(KIND_ANSWER, id, method, r);
            } catch (e) {
              fail(e);
            }
          },
          () => s.destroy(),
        ),
      );
    };
    let server: net.Server;
    let where: string;
    if (o.tcp !== undefined) {
      const t = o.tcp;
      server = tls.createServer({ ca: t.tls.ca, cert: t.tls.cert, key: t.tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, onConnection);
      where = `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
    } else {
      const p = o.unixPath!;
      if (Buffer.byteLength(p) > MAX_SOCKET_PATH_BYTES) throw new PeerAddressError(`unixPath '${p}' is ${Buffer.byteLength(p)} bytes; a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}`);
      server = net.createServer(onConnection);
      where = p;
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const done = (): void => {
        server.off('error', reject);
        resolve();
      };
      if (o.tcp !== undefined) server.listen({ host: o.tcp.host, port: o.tcp.port, exclusive: true }, done);
      else server.listen(o.unixPath!, done);
    }).catch((e: unknown) => {
      throw new StateError(`cannot listen on ${where}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    });
    let address: string;
    if (o.tcp !== undefined) {
      const a = server.address() as net.AddressInfo;
      address = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    } else {
      chmodSync(o.unixPath!, 0o600);
      address = `unix:${o.unixPath!}`;
    }
    return new PeerServer(server, sockets, address, o.unixPath);
  }

  /** Stops at once: no further answers, every connection closed, the socket file removed. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const s of this.#sockets) s.destroy();
    if (this.#unixPath !== undefined) {
      try {
        unlinkSync(this.#unixPath);
      } catch {
        // already gone
      }
    }
  }
}

// ---------------------------------------------------------------- client

/** One connection to a peer; calls are multiplexed on it. Once it fails or closes it is dead: the owner makes a new one. */
export class PeerLink {
  readonly #socket: net.Socket;
  readonly #calls: FramedCalls<PeerCallError>;

  constructor(
    readonly address: string,
    clientTls: TlsMaterial | undefined,
    onDead: (link: PeerLink) => void,
  ) {
    const a = parsePeerAddress(address);
    if (a.kind === 'unix') this.#socket = net.createConnection(a.path);
    else {
      if (clientTls === undefined) throw new PeerCallError('FAILED_PRECONDITION', `${address} is a TCP address, and TCP needs mutual TLS: this node has no tls material`);
      this.#socket = tls.connect({ host: a.host, port: a.port, ca: clientTls.ca, cert: clientTls.cert, key: clientTls.key, minVersion: 'TLSv1.3', ...(net.isIP(a.host) ? {} : { servername: a.host }) });
      this.#socket.setNoDelay(true);
    }
    this.#calls = new FramedCalls<PeerCallError>(
      this.#socket,
      {
        failure: parseFailure,
        dead: (why, cause) => new PeerCallError('UNAVAILABLE', `${address}: ${why}`, cause === undefined ? undefined : { cause }),
        timeout: (ms) => new PeerCallError('DEADLINE_EXCEEDED', `${address}: no answer within ${ms} ms`),
        cancelled: () => new PeerCallError('CANCELLED', `${address}: cancelled`),
      },
      () => onDead(this),
    );
  }

  get dead(): boolean {
    return this.#calls.dead !== undefined;
  }

  /** One request; rejects with a PeerCallError (DEADLINE_EXCEEDED after `timeoutMs`, CANCELLED on `signal`). */
  call(method: number, body: Buffer, timeoutMs: number, signal: AbortSignal | undefined): Promise<Buffer> {
    return this.#calls.call(method, body, timeoutMs, signal);
  }

  close(): void {
    this.#socket.destroy();
  }
}
