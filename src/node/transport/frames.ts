/**
 * The node API's framed control channel: the same sharp.node.v1 requests and
 * replies (protobuf, the .proto's messages) as the gRPC server, framed on a
 * stream socket (src/net/frames.ts) beside it, for the unary calls a
 * handover makes. Measured here: a grpc-js unary call costs ~1 ms of CPU at
 * each end (HTTP/2 streams, metadata, the call layers), and a handover makes
 * two dozen; a framed one costs about a quarter of that here (make bench:
 * node.call.*, 0.57 against 2.0 ms at both ends together).
 *
 *  - Unix socket: 0600, in the folder of the gRPC socket (the same rule:
 *    the owner's processes only);
 *  - TCP: mutual TLS 1.3 only, with the node's certificate and CA, and every
 *    call passes the gRPC server's own gate (gateOf): the same identities
 *    are admitted for the same methods.
 *
 * Streams (Capture, DivertedFrames) stay on gRPC. A client learns the
 * channel from Health (frames_unix / frames_port) and uses gRPC where a
 * node offers none.
 *
 * Request body: u8 n | method name (n bytes, ascii) | f64 BE deadline (ms
 * since the epoch by the caller's clock; 0: none) | the request message.
 * Answer body: the reply message. Failure body: JSON { code, details,
 * error?, refused? } (a gRPC status code; the error class the node threw;
 * the identity the gate refused).
 */
import net from 'node:net';
import tls from 'node:tls';
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { checkServerIdentity } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { encodeFrame, frameReader, FramedCalls, FRAME_ANSWER, FRAME_FAILURE, FRAME_REQUEST } from '../../net/frames.js';
import type { TlsMaterial } from './certs.js';
import { identityOf, type CertIdentity } from './identity.js';
import { ListenError } from './errors.js';
import { REFUSED_IDENTITY_TRAILER, prepareSocket, splitAddress, type Gate, type RefusedCall } from './server.js';

/** What a handler learns of a framed call besides its request. */
export interface FramedCall {
  /** the caller's deadline, ms since the epoch by its clock (0: none) */
  readonly deadline: number;
  /** the verified client certificate (DER); undefined on the Unix socket */
  readonly peerCertificate: Buffer | undefined;
  /** true once the caller's connection is gone */
  readonly cancelled: boolean;
}

export type FramedReply = { code: grpc.status.OK; reply: Buffer } | { code: grpc.status; details: string; error?: string };

/** Runs one call: `method` is the rpc's name, `request` its encoded message. */
export type FramedHandler = (method: string, request: Buffer, call: FramedCall) => Promise<FramedReply>;

export interface FramedListen {
  handler: FramedHandler;
  /** a Unix socket path (its folder exists: the gRPC socket's) */
  unix?: string;
  /** host:port (port 0: a free one) with the node's TLS material */
  tcp?: { address: string; tls: TlsMaterial };
}

export interface FramedServer {
  readonly unixPath: string | undefined;
  readonly tcpPort: number | undefined;
  close(): void;
}

const MAX_METHOD_NAME = 64;

function encodeRequest(method: string, deadline: number, body: Buffer): Buffer {
  const name = Buffer.from(method, 'latin1');
  const b = Buffer.allocUnsafe(1 + name.length + 8 + body.length);
  b[0] = name.length;
  name.copy(b, 1);
  b.writeDoubleBE(deadline, 1 + name.length);
  body.copy(b, 9 + name.length);
  return b;
}

/** The request's parts, or a reason it is malformed. */
function decodeRequest(b: Buffer): { method: string; deadline: number; body: Buffer } | string {
  const n = b[0] ?? 0;
  if (n === 0 || n > MAX_METHOD_NAME || b.length < 9 + n) return `a request of ${b.length} bytes with a method name of ${n} bytes (1 to ${MAX_METHOD_NAME}, then 8 bytes of deadline)`;
  const method = b.toString('latin1', 1, 1 + n);
  if (!/^[A-Za-z]+$/.test(method)) return `method name '${method.slice(0, 40)}': letters only`;
  return { method, deadline: b.readDoubleBE(1 + n), body: b.subarray(9 + n) };
}

/**
 * Serves the framed channel; every request passes `gate` (as
 * `/${service}/${method}`) before `handler` sees it.
 */
export async function startFramedServer(node: string, service: string, o: FramedListen, gate: Gate, onRefused?: (r: RefusedCall) => void): Promise<FramedServer> {
  const sockets = new Set<net.Socket>();
  const servers: net.Server[] = [];
  const onConnection = (s: net.Socket, onTcp: boolean): void => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    // read once per connection: every call on it presents the same certificate
    const raw = onTcp ? (s as tls.TLSSocket).getPeerCertificate().raw : undefined;
    const remote = onTcp ? `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}` : 'unix';
    if (onTcp) s.setNoDelay(true);
    const write = (kind: number, id: number, body: Buffer): void => {
      if (!s.destroyed) s.write(encodeFrame(kind, id, 0, body));
    };
    const fail = (id: number, f: { code: grpc.status; details: string; error?: string; refused?: string }): void => write(FRAME_FAILURE, id, Buffer.from(JSON.stringify(f)));
    s.on(
      'data',
      frameReader(
        (kind, id, _method, body) => {
          if (kind !== FRAME_REQUEST) return;
          const r = decodeRequest(body);
          if (typeof r === 'string') return fail(id, { code: grpc.status.INVALID_ARGUMENT, details: r });
          const path = `/${service}/${r.method}`;
          const refusal = gate(path, raw, onTcp, remote);
          if (refusal !== undefined) {
            onRefused?.({ method: path, remote, ...refusal });
            return fail(id, { code: refusal.code, details: refusal.reason, refused: refusal.identity?.name ?? '' });
          }
          o.handler(r.method, r.body, {
            deadline: r.deadline,
            peerCertificate: raw,
            get cancelled() {
              return s.destroyed;
            },
          }).then(
            (res) => (res.code === grpc.status.OK && 'reply' in res ? write(FRAME_ANSWER, id, res.reply) : fail(id, res as { code: grpc.status; details: string })),
            (e: unknown) => fail(id, { code: grpc.status.INTERNAL, details: e instanceof Error ? e.message : String(e) }),
          );
        },
        () => s.destroy(),
      ),
    );
  };
  const listen = (server: net.Server, args: net.ListenOptions, where: string): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(args, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((e: unknown) => {
      throw new ListenError(where, `node ${node}: cannot listen for framed calls on ${where}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    });
  let unixPath: string | undefined;
  let unixIno: number | undefined;
  let tcpPort: number | undefined;
  const close = (): void => {
    for (const srv of servers) srv.close();
    for (const s of sockets) s.destroy();
    if (unixPath !== undefined)
      try {
        if (lstatSync(unixPath).ino === unixIno) unlinkSync(unixPath);
      } catch {
        // gone already
      }
  };
  try {
    if (o.unix !== undefined) {
      await prepareSocket(o.unix);
      const srv = net.createServer((s) => onConnection(s, false));
      servers.push(srv);
      await listen(srv, { path: o.unix }, o.unix);
      chmodSync(o.unix, 0o600);
      unixPath = o.unix;
      unixIno = lstatSync(o.unix).ino;
    }
    if (o.tcp !== undefined) {
      const [host, port] = splitAddress(o.tcp.address);
      const t = o.tcp.tls;
      const srv = tls.createServer({ ca: t.ca, cert: t.cert, key: t.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => onConnection(s, true));
      servers.push(srv);
      await listen(srv, { host: host.replace(/^\[(.*)\]$/, '$1'), port: Number(port), exclusive: true }, o.tcp.address);
      tcpPort = (srv.address() as net.AddressInfo).port;
    }
  } catch (e) {
    close();
    throw e;
  }
  return { unixPath, tcpPort, close };
}

// ---------------------------------------------------------------- client

/** A failed framed call, shaped as grpc-js reports one (so the client maps both alike); `notSent`: the connection never came up, the request never left. */
export type FramedCallError = grpc.ServiceError & { notSent?: boolean };

function callError(code: grpc.status, details: string, error?: string, refused?: string): FramedCallError {
  const metadata = new grpc.Metadata();
  if (error !== undefined && error !== '') metadata.set('sharp-error', error);
  if (refused !== undefined) metadata.set(REFUSED_IDENTITY_TRAILER, refused);
  return Object.assign(new Error(`${code} ${grpc.status[code] ?? ''}: ${details}`), { code, details, metadata }) as FramedCallError;
}

export type FramedTarget = { unix: string } | { host: string; port: number; node: string; tls: TlsMaterial };

/** "unix:/path" or "host:port" ("[v6]:port") */
export const describeTarget = (t: FramedTarget): string => ('unix' in t ? `unix:${t.unix}` : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`);

/** How long a link waits for its connection (and TLS handshake) before it counts the channel as unreachable. */
export const FRAMED_CONNECT_TIMEOUT_MS = 2000;

/** A failure frame's body (JSON: code, details, error, refused) as the error it means. */
function failureOf(body: Buffer): FramedCallError {
  let f: { code?: unknown; details?: unknown; error?: unknown; refused?: unknown };
  try {
    f = JSON.parse(body.toString()) as typeof f;
  } catch {
    f = { code: grpc.status.INTERNAL, details: `a failure the client cannot read: ${body.toString().slice(0, 80)}` };
  }
  const code = Number.isInteger(f.code) ? (f.code as grpc.status) : grpc.status.INTERNAL;
  return callError(code, String(f.details ?? ''), typeof f.error === 'string' ? f.error : undefined, typeof f.refused === 'string' ? f.refused : undefined);
}

/**
 * One connection to a node's framed channel, calls multiplexed on it. Once
 * it fails or closes it is dead (`dead`), and the owner makes another.
 * Over TCP the node's certificate must name `node` (SAN) and be a node's
 * (or an unmarked) certificate, as on the gRPC channel.
 */
export class FramedLink {
  readonly #socket: net.Socket;
  readonly #calls: FramedCalls<FramedCallError>;
  /** the node's certificate as the handshake verified it */
  verifiedServer: CertIdentity | undefined;
  readonly describe: string;

  constructor(target: FramedTarget) {
    this.describe = describeTarget(target);
    if ('unix' in target) this.#socket = net.createConnection(target.unix);
    else {
      const t = target.tls;
      this.#socket = tls.connect({
        host: target.host,
        port: target.port,
        ca: t.ca,
        cert: t.cert,
        key: t.key,
        minVersion: 'TLSv1.3',
        servername: target.node,
        checkServerIdentity: (_host, cert) => {
          const id = identityOf(cert.raw);
          if (checkServerIdentity(target.node, cert) !== undefined || (id.role !== 'node' && id.role !== 'unknown')) return new Error(`the server's certificate names '${id.name}', expected '${target.node}'`);
          this.verifiedServer = id;
          return undefined;
        },
      });
      this.#socket.setNoDelay(true);
    }
    let connected = false;
    this.#calls = new FramedCalls<FramedCallError>(
      this.#socket,
      {
        failure: failureOf,
        // never connected: no request left this process (the caller may send it another way)
        dead: (why) => Object.assign(callError(grpc.status.UNAVAILABLE, `${this.describe}: ${why}`), connected ? {} : { notSent: true }),
        timeout: (ms) => callError(grpc.status.DEADLINE_EXCEEDED, `${this.describe}: no answer within ${ms} ms`),
        cancelled: () => callError(grpc.status.CANCELLED, `${this.describe}: cancelled`),
      },
      () => clearTimeout(connectTimer),
    );
    // a port a firewall drops would hold every call to its deadline: no connection in time is no channel
    const connectTimer = setTimeout(() => this.#calls.kill(`no connection within ${FRAMED_CONNECT_TIMEOUT_MS} ms`, undefined, () => undefined), FRAMED_CONNECT_TIMEOUT_MS);
    connectTimer.unref();
    this.#socket.once('unix' in target ? 'connect' : 'secureConnect', () => {
      connected = true;
      clearTimeout(connectTimer);
    });
  }

  get dead(): boolean {
    return this.#calls.dead !== undefined;
  }

  /** One call; rejects with a grpc-shaped error (DEADLINE_EXCEEDED at `deadline`, UNAVAILABLE when the connection fails). */
  call(method: string, body: Buffer, deadline: number): Promise<Buffer> {
    return this.#calls.call(0, encodeRequest(method, deadline, body), deadline - Date.now());
  }

  close(): void {
    this.#socket.destroy();
  }
}
