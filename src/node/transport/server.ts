/**
 * The node daemon's gRPC server: its services on a Unix socket (local use,
 * guarded by file permissions) and/or a TCP address that accepts mutual TLS
 * only — a client without a certificate signed by the deployment's CA never
 * completes the handshake, so it never reaches a handler.
 *
 * Every call passes a gate first (a server interceptor, before any handler
 * sees the call): on TCP it needs a verified client certificate, and with an
 * allow-list the certificate must be a controller's on the list; otherwise
 * the call ends with PERMISSION_DENIED (or UNAUTHENTICATED) naming the
 * identity. Handlers learn who calls with `peerOf(call)`.
 */
import * as grpc from '@grpc/grpc-js';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import type { TlsMaterial } from './certs.js';
import { ListenError, SocketInUseError, SocketPathError } from './errors.js';
import { describeIdentity, identityOf, type CertIdentity } from './identity.js';
import { startFramedServer, type FramedHandler, type FramedServer } from './frames.js';

/** Trailer the gate sets on a refused call: the identity it refused (the client maps it). */
export const REFUSED_IDENTITY_TRAILER = 'sharp-refused-identity';

export interface ServiceRegistration {
  definition: grpc.ServiceDefinition;
  implementation: grpc.UntypedServiceImplementation;
}

export interface UnixListen {
  /** socket path (its folder is created 0700 when missing) */
  path: string;
  /** socket file mode: 0o600 (default, the owner only) or 0o660 (and the group) */
  mode?: 0o600 | 0o660;
  /** group id to give the socket (with mode 0o660) */
  gid?: number;
}

export interface TcpListen {
  /** host:port ([v6]:port); port 0 picks a free one */
  address: string;
  /** the node's certificate and key, and the CA controllers' certificates must be signed by */
  tls: TlsMaterial;
}

/** A call the gate refused (for the daemon's log). */
export interface RefusedCall {
  method: string;
  code: grpc.status;
  reason: string;
  identity: CertIdentity | undefined;
  remote: string;
}

export interface NodeServerOptions {
  /** the node's name (in messages) */
  node: string;
  services: readonly ServiceRegistration[];
  unix?: UnixListen;
  tcp?: TcpListen;
  /**
   * Controllers (certificate CN, OU=controller) allowed over TCP; undefined:
   * any certificate the CA signed. Does not apply to the Unix socket, whose
   * file permissions decide.
   */
  allowControllers?: readonly string[];
  /**
   * Other nodes (certificate CN, OU=node) allowed over TCP, for these
   * methods only (full paths, '/pkg.Service/Method'), with certificates
   * issued by `ca` when given. With this set, no other node certificate is
   * accepted; without it, node certificates count like any other.
   */
  allowNodes?: { names: readonly string[]; methods: readonly string[]; ca?: X509Certificate };
  /**
   * When the TCP listener trusts more than one CA (the controllers' and the
   * peers'): the one every certificate but a listed peer's must be issued
   * by, so a peers' CA cannot vouch for a controller.
   */
  controllersCa?: X509Certificate;
  /** called for every call the gate refuses */
  onRefused?: (r: RefusedCall) => void;
  /** further grpc-js server options (the gate runs before any interceptors given here) */
  grpcOptions?: grpc.ServerOptions;
  /**
   * The framed control channel beside gRPC (frames.ts), through the same
   * gate: on a Unix socket, and on TCP (host:port, port 0: a free one) with
   * the TLS material of `tcp`.
   */
  frames?: { handler: FramedHandler; service: string; unix?: string; tcp?: string };
}

export interface NodeServer {
  readonly node: string;
  readonly server: grpc.Server;
  /** the Unix socket, when listening on one */
  readonly unixPath: string | undefined;
  /** host:port actually bound, when listening on TCP */
  readonly tcpAddress: string | undefined;
  readonly tcpPort: number | undefined;
  /** the framed channel's Unix socket and TCP port, where it listens */
  readonly framesUnixPath: string | undefined;
  readonly framesTcpPort: number | undefined;
  /** stops serving: finishes calls in flight for up to graceMs (default 2000), then cuts them; removes the socket */
  close(graceMs?: number): Promise<void>;
}

/** Who made a call, as a handler sees it. */
export type CallPeer = { transport: 'tls'; identity: CertIdentity } | { transport: 'unix' };

/** Any server call of grpc-js (unary, streaming, or an interceptor's): all expose the connection's auth context. */
export interface HasAuthContext {
  getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } | undefined };
}

/**
 * Who made a call: the verified client certificate on TCP, or the local
 * Unix socket (a NodeServer accepts calls without TLS only there: its gate
 * refuses a TCP call without a verified certificate before any handler).
 */
export function peerOf(call: HasAuthContext): CallPeer {
  return peerOfCert(call.getAuthContext().sslPeerCertificate?.raw);
}

/** The caller of a call that presented this client certificate (DER), or none. */
function peerOfCert(raw: Buffer | undefined): CallPeer {
  return raw === undefined ? { transport: 'unix' } : { transport: 'tls', identity: clientCert(raw).identity };
}

/** A client certificate parsed once: its identity, and which CAs issued it. */
interface ParsedCert {
  x509: X509Certificate;
  identity: CertIdentity;
  issuedBy: WeakMap<X509Certificate, boolean>;
}

/**
 * Client certificates by their DER. Every call of a connection presents the
 * same certificate, and parsing it (X509Certificate, identityOf) took a
 * quarter of a node's CPU per call (~0.3 ms); the identity is a function of
 * the bytes alone, so it is kept. Bounded: cleared when full.
 */
const parsedCerts = new Map<string, ParsedCert>();
const PARSED_CERTS_MAX = 256;

function clientCert(raw: Buffer): ParsedCert {
  const key = raw.toString('latin1');
  let p = parsedCerts.get(key);
  if (p === undefined) {
    if (parsedCerts.size >= PARSED_CERTS_MAX) parsedCerts.clear();
    const x509 = new X509Certificate(raw);
    // shared by every call that presents it: read-only
    p = { x509, identity: Object.freeze(identityOf(x509)), issuedBy: new WeakMap() };
    parsedCerts.set(key, p);
  }
  return p;
}

/** "controller 'ctl1' (…)" or "a local client (Unix socket)" */
export function describePeer(p: CallPeer): string {
  return p.transport === 'tls' ? describeIdentity(p.identity) : 'a local client (Unix socket)';
}

/** Whether `ca` issued the certificate (its signature checked once per certificate and CA). */
function issuedBy(raw: Buffer, ca: X509Certificate): boolean {
  const p = clientCert(raw);
  let ok = p.issuedBy.get(ca);
  if (ok === undefined) {
    ok = p.x509.checkIssued(ca) && p.x509.verify(ca.publicKey);
    p.issuedBy.set(ca, ok);
  }
  return ok;
}

/** Why the gate refuses a call, or undefined to let it through. */
export interface Refusal {
  code: grpc.status;
  reason: string;
  identity: CertIdentity | undefined;
}

/**
 * The gate's decision for one call of `methodPath` ('/pkg.Service/Method'),
 * made by whoever presented client certificate `raw` (undefined: none), on
 * TCP or the Unix socket. Shared by the gRPC server and the framed channel.
 */
export type Gate = (methodPath: string, raw: Buffer | undefined, onTcp: boolean, remote: string) => Refusal | undefined;

export function gateOf(o: NodeServerOptions): Gate {
  const allow = o.allowControllers === undefined ? undefined : new Set(o.allowControllers);
  const nodes = o.allowNodes === undefined ? undefined : { ...o.allowNodes, names: new Set(o.allowNodes.names), methods: new Set(o.allowNodes.methods) };
  return (methodPath, raw, onTcp, remote) => {
    const peer = peerOfCert(raw);
    if (peer.transport === 'unix') {
      if (onTcp) return { code: grpc.status.UNAUTHENTICATED, reason: `node ${o.node} accepts no call without a verified client certificate on TCP (from ${remote})`, identity: undefined };
    } else if (nodes !== undefined && peer.identity.role === 'node' && nodes.names.has(peer.identity.name)) {
      // a peer node: state it pushes, nothing else
      if (!nodes.methods.has(methodPath)) return { code: grpc.status.PERMISSION_DENIED, reason: `node ${o.node} accepts ${describeIdentity(peer.identity)} as a state peer only (${[...nodes.methods].map((m) => m.slice(m.lastIndexOf('/') + 1)).join(', ')}), not for ${methodPath}`, identity: peer.identity };
      if (nodes.ca !== undefined && raw !== undefined && !issuedBy(raw, nodes.ca)) return { code: grpc.status.PERMISSION_DENIED, reason: `node ${o.node} does not accept ${describeIdentity(peer.identity)}: not issued by its peers' CA '${identityOf(nodes.ca).name}'`, identity: peer.identity };
    } else if (nodes !== undefined && peer.identity.role === 'node') {
      return { code: grpc.status.PERMISSION_DENIED, reason: `node ${o.node} does not accept ${describeIdentity(peer.identity)}: not on its peers.allow`, identity: peer.identity };
    } else if (o.controllersCa !== undefined && raw !== undefined && !issuedBy(raw, o.controllersCa)) {
      return { code: grpc.status.PERMISSION_DENIED, reason: `node ${o.node} does not accept ${describeIdentity(peer.identity)}: not issued by its controllers' CA '${identityOf(o.controllersCa).name}'`, identity: peer.identity };
    } else if (allow !== undefined && !(peer.identity.role === 'controller' && allow.has(peer.identity.name))) {
      return { code: grpc.status.PERMISSION_DENIED, reason: `node ${o.node} does not accept ${describeIdentity(peer.identity)}: not on its list of controllers`, identity: peer.identity };
    }
    return undefined;
  };
}

function gate(o: NodeServerOptions, decide: Gate): grpc.ServerInterceptor {
  return (method, call) => {
    const listener = new grpc.ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const info = call.getConnectionInfo();
        const onTcp = info.remotePort !== undefined;
        const remote = onTcp ? `${info.remoteAddress ?? '?'}:${info.remotePort}` : 'unix';
        // one getPeerCertificate per call (it copies the certificate out of OpenSSL each time)
        const refusal = decide(method.path, call.getAuthContext().sslPeerCertificate?.raw, onTcp, remote);
        if (refusal === undefined) return next(metadata);
        o.onRefused?.({ method: method.path, remote, ...refusal });
        const trailer = new grpc.Metadata();
        trailer.set(REFUSED_IDENTITY_TRAILER, refusal.identity?.name ?? '');
        call.sendStatus({ code: refusal.code, details: refusal.reason, metadata: trailer });
      })
      .build();
    return new grpc.ServerInterceptingCall(call, new grpc.ResponderBuilder().withStart((next) => next(listener)).build());
  };
}

/** Longest Unix socket path (sun_path is 108 bytes with its NUL). */
const SUN_PATH_MAX = 107;

function connectable(p: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = net.connect(p);
    const done = (v: boolean | Error): void => {
      clearTimeout(t);
      s.destroy();
      if (v instanceof Error) reject(v);
      else resolve(v);
    };
    const t = setTimeout(() => done(true), 1000); // accepted nothing yet but did not refuse: something is there
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ECONNREFUSED' || e.code === 'ENOENT') done(false);
      else done(new SocketPathError(p, `cannot tell whether a server listens on ${p}: ${e.message}`, { cause: e }));
    });
  });
}

/** Makes the socket's folder (0700), removes a stale socket; refuses a live one or a non-socket. */
export async function prepareSocket(p: string): Promise<void> {
  if (Buffer.byteLength(p) > SUN_PATH_MAX) throw new SocketPathError(p, `Unix socket path ${p} is longer than ${SUN_PATH_MAX} bytes`);
  const dir = path.dirname(p);
  if (!existsSync(dir)) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new SocketPathError(p, `cannot create the folder of the Unix socket ${p}: ${(e as Error).message}`, { cause: e });
    }
  }
  let st;
  try {
    st = lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new SocketPathError(p, `cannot inspect ${p}: ${(e as Error).message}`, { cause: e });
  }
  if (!st.isSocket()) throw new SocketPathError(p, `${p} exists and is not a socket: not removing it`);
  if (await connectable(p)) throw new SocketInUseError(p);
  unlinkSync(p); // stale: its server is gone
}

function bind(server: grpc.Server, address: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, creds, (err, port) => (err ? reject(new ListenError(address, `cannot listen on ${address}: ${err.message}`, { cause: err })) : resolve(port))),
  );
}

/** host:port -> [host, port]; "[::1]:7441" -> ["[::1]", "7441"] */
export function splitAddress(address: string): [string, string] {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d+)$/.exec(address);
  if (m === null) throw new ListenError(address, `TCP address must be host:port (or [v6]:port), got '${address}'`);
  return [m[1]!, m[2]!];
}

/** Starts serving `services` on a Unix socket and/or over mutual TLS on TCP. */
export async function startNodeServer(o: NodeServerOptions): Promise<NodeServer> {
  if (o.unix === undefined && o.tcp === undefined) throw new ListenError('', `node ${o.node}: give a Unix socket and/or a TCP address to listen on`);
  const [host] = o.tcp === undefined ? [''] : splitAddress(o.tcp.address);
  const decide = gateOf(o);
  const server = new grpc.Server({ ...o.grpcOptions, interceptors: [gate(o, decide), ...(o.grpcOptions?.interceptors ?? [])] });
  for (const s of o.services) server.addService(s.definition, s.implementation);
  let unixPath: string | undefined;
  let unixIno: number | undefined;
  let tcpPort: number | undefined;
  let framed: FramedServer | undefined;
  const removeSocket = (): void => {
    if (unixPath === undefined) return;
    try {
      if (lstatSync(unixPath).ino === unixIno) unlinkSync(unixPath);
    } catch {
      // gone already
    }
  };
  try {
    if (o.unix !== undefined) {
      const p = path.resolve(o.unix.path);
      await prepareSocket(p);
      await bind(server, `unix:${p}`, grpc.ServerCredentials.createInsecure());
      unixPath = p;
      unixIno = lstatSync(p).ino;
      chmodSync(p, o.unix.mode ?? 0o600);
      if (o.unix.gid !== undefined) chownSync(p, -1, o.unix.gid);
    }
    if (o.tcp !== undefined) {
      const t = o.tcp.tls;
      const creds = grpc.ServerCredentials.createSsl(t.ca, [{ cert_chain: t.cert, private_key: t.key }], true);
      tcpPort = await bind(server, o.tcp.address, creds);
    }
    const f = o.frames;
    if (f !== undefined && (f.unix !== undefined || (f.tcp !== undefined && o.tcp !== undefined))) {
      framed = await startFramedServer(
        o.node,
        f.service,
        { handler: f.handler, ...(f.unix === undefined ? {} : { unix: path.resolve(f.unix) }), ...(f.tcp === undefined || o.tcp === undefined ? {} : { tcp: { address: f.tcp, tls: o.tcp.tls } }) },
        decide,
        o.onRefused,
      );
    }
  } catch (e) {
    server.forceShutdown();
    removeSocket();
    throw e;
  }
  let closed: Promise<void> | undefined;
  return {
    node: o.node,
    server,
    unixPath,
    tcpAddress: tcpPort === undefined ? undefined : `${host}:${tcpPort}`,
    tcpPort,
    framesUnixPath: framed?.unixPath,
    framesTcpPort: framed?.tcpPort,
    close(graceMs = 2000): Promise<void> {
      // framed calls in flight are cut: their callers see the connection close (UNAVAILABLE), as for a stopped node
      framed?.close();
      closed ??= new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      }).finally(removeSocket);
      return closed;
    },
  };
}
