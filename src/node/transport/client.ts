/**
 * The controller's side: channel credentials to reach a node over mutual
 * TLS (the CA, the controller's certificate and key; the node must present
 * a certificate naming it), or over its local Unix socket — the only place
 * a channel without TLS can be made. Failed calls map to typed
 * NodeConnectionErrors naming the target, the identities and the status.
 */
import * as grpc from '@grpc/grpc-js';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';
import type { TlsMaterial } from './certs.js';
import {
  NodeConnectionError,
  NodeIdentityMismatchError,
  NodePermissionDeniedError,
  NodeRefusedCertificateError,
  NodeUnavailableError,
  NodeUnreachableError,
  NodeUntrustedError,
  type NodeConnectionErrorInit,
} from './errors.js';
import { identityOf, serverNames, type CertIdentity } from './identity.js';
import { REFUSED_IDENTITY_TRAILER } from './server.js';
import { REFUSED_BY_PEER, UNREACHABLE, UNTRUSTED } from '../../net/tls-failure.js';

export interface TlsEndpoint {
  transport: 'tls';
  /** the node's name: its certificate must name it (SAN DNS, as certs.ts makes them) */
  node: string;
  /** host:port ([v6]:port) */
  address: string;
  /** the CA the node's certificate must be signed by, and the controller's certificate and key */
  tls: TlsMaterial;
}

export interface UnixEndpoint {
  transport: 'unix';
  /** the node's socket */
  path: string;
  /** the node's name (in messages) */
  node?: string;
}

export type NodeEndpoint = TlsEndpoint | UnixEndpoint;

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 2000,
  // one channel's failures (and the identity it saw) stay its own
  'grpc.use_local_subchannel_pool': 1,
};

type ClientConstructor<C> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => C;

/** A grpc status error, as grpc-js reports a failed call. */
function asServiceError(e: unknown): grpc.ServiceError | undefined {
  if (e instanceof Error && typeof (e as Partial<grpc.ServiceError>).code === 'number') return e as grpc.ServiceError;
  return undefined;
}

/**
 * How the controller reaches one node. Make clients with `client(Ctor)` (or
 * pass `target`, `credentials`, `options` to a grpc-js client constructor)
 * and map their failures with `connectionError(e)`.
 */
export class NodeChannel {
  readonly endpoint: NodeEndpoint;
  /** grpc target: host:port, or unix:/path */
  readonly target: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly options: grpc.ChannelOptions;
  /** the node's name, when known */
  readonly node: string | undefined;
  /** the controller's identity (its certificate's CN); undefined on a Unix socket */
  readonly controller: string | undefined;
  /** the names on the last node certificate that did not name the node */
  #presented: string | undefined;
  /** the node certificate the last handshake verified */
  #verified: CertIdentity | undefined;

  constructor(endpoint: NodeEndpoint, options: grpc.ChannelOptions = {}) {
    this.endpoint = endpoint;
    if (endpoint.transport === 'unix') {
      this.target = `unix:${endpoint.path}`;
      this.node = endpoint.node;
      this.controller = undefined;
      this.credentials = grpc.credentials.createInsecure();
      this.options = { ...CHANNEL_OPTIONS, ...options };
      return;
    }
    const { node, tls } = endpoint;
    this.target = endpoint.address;
    this.node = node;
    this.controller = tls.identity.name;
    this.credentials = grpc.credentials.createSsl(tls.ca, tls.key, tls.cert, {
      // grpc-js calls this with the override below as `host`
      checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
        const id = identityOf(cert.raw);
        const names = serverNames(id);
        const bad = checkServerIdentity(node, cert) !== undefined || (id.role !== 'node' && id.role !== 'unknown');
        if (!bad) {
          this.#presented = undefined;
          this.#verified = id;
          return undefined;
        }
        this.#presented = names.length > 0 ? names.join("', '") : id.name;
        const role = id.role !== 'node' && id.role !== 'unknown' ? ` (a ${id.role} certificate)` : '';
        return new Error(`the server's certificate names '${this.#presented}'${role}, expected '${node}'`);
      },
    });
    this.options = {
      ...CHANNEL_OPTIONS,
      ...options,
      // the node is checked by its name, whatever address it is reached at
      'grpc.ssl_target_name_override': node,
      'grpc.default_authority': node,
    };
  }

  /** the node's certificate as the last TLS handshake verified it (undefined on a Unix socket, or before a handshake) */
  get verifiedServer(): CertIdentity | undefined {
    return this.#verified;
  }

  /** "node s1 at 10.9.0.2:7441", "node s1 at unix:/run/sharp/node.sock" */
  describe(): string {
    return `${this.node === undefined ? 'the node' : `node ${this.node}`} at ${this.target}`;
  }

  /** A grpc-js client of this channel. */
  client<C>(ctor: ClientConstructor<C>): C {
    return new ctor(this.target, this.credentials, this.options);
  }

  /**
   * The NodeConnectionError a failed call means, or undefined when the call
   * reached the node's handler and failed there (an application error).
   */
  connectionError(e: unknown): NodeConnectionError | undefined {
    const se = asServiceError(e);
    if (se === undefined) return undefined;
    const details = se.details ?? se.message;
    const base: NodeConnectionErrorInit = {
      node: this.node,
      target: this.target,
      code: se.code,
      details,
      expected: this.endpoint.transport === 'tls' ? this.endpoint.node : undefined,
      controller: this.controller,
    };
    const opts = { cause: e };
    const refused = se.metadata?.get(REFUSED_IDENTITY_TRAILER);
    // a node pushing state to a peer is a client too: name it by its role
    const role = this.endpoint.transport === 'tls' && this.endpoint.tls.identity.role === 'node' ? 'node' : 'controller';
    const me = this.controller === undefined ? 'the controller' : `${role} '${this.controller}'`;
    if ((se.code === grpc.status.PERMISSION_DENIED || se.code === grpc.status.UNAUTHENTICATED) && refused !== undefined && refused.length > 0) {
      return new NodePermissionDeniedError(`${this.describe()} refused ${me}`, { ...base, presented: this.controller }, opts);
    }
    if (se.code !== grpc.status.UNAVAILABLE && se.code !== grpc.status.DEADLINE_EXCEEDED) return undefined;
    if (this.#presented !== undefined && /server's certificate names/.test(details)) {
      return new NodeIdentityMismatchError(`${this.describe()}: the server's certificate names '${this.#presented}', expected '${this.node ?? ''}'`, { ...base, presented: this.#presented }, opts);
    }
    if (REFUSED_BY_PEER.test(details)) {
      return new NodeRefusedCertificateError(`${this.describe()} refused the certificate of ${me}`, { ...base, presented: this.controller }, opts);
    }
    // grpc-js says "Failed to connect" when the connection closed after the TLS
    // handshake, before HTTP/2 began: with TLS 1.3 that is how a node refusing
    // the client's certificate looks from here when its alert is not read first
    if (this.endpoint.transport === 'tls' && /Last error: Failed to connect\b/.test(details)) {
      return new NodeRefusedCertificateError(`${this.describe()} closed the connection after the TLS handshake: it did not accept the certificate of ${me}`, { ...base, presented: this.controller }, opts);
    }
    if (UNTRUSTED.test(details)) {
      const ca = this.endpoint.transport === 'tls' ? this.endpoint.tls.identity.issuer : '';
      return new NodeUntrustedError(`${this.describe()} presented a certificate not signed by the controller's CA '${ca}'`, base, opts);
    }
    if (UNREACHABLE.test(details)) return new NodeUnreachableError(`${this.describe()} is unreachable`, base, opts);
    if (se.code === grpc.status.DEADLINE_EXCEEDED) {
      // the call never got a connection (no answer, or a handshake that never finished)
      if (/Waiting for LB pick|LB pick: [\d.]+s\s*$/.test(details) && !/remote_addr=/.test(details)) {
        return new NodeUnreachableError(`${this.describe()} did not complete a connection before the deadline`, base, opts);
      }
      return undefined;
    }
    return new NodeUnavailableError(`${this.describe()} is unavailable`, base, opts);
  }

  /** Throws the NodeConnectionError `e` means, else `e` itself. */
  rethrow(e: unknown): never {
    throw this.connectionError(e) ?? e;
  }
}

/** How to reach a node: mutual TLS over TCP, or its Unix socket. */
export function nodeChannel(endpoint: NodeEndpoint, options?: grpc.ChannelOptions): NodeChannel {
  return new NodeChannel(endpoint, options);
}

/** A Unix socket endpoint, the only kind with a channel without TLS. */
export const unixEndpoint = (socketPath: string, node?: string): UnixEndpoint => ({ transport: 'unix', path: socketPath, ...(node === undefined ? {} : { node }) });

/** A mutual-TLS endpoint: node `node` at `address`, as the controller whose material is `tls`. */
export const tlsEndpoint = (node: string, address: string, tls: TlsMaterial): TlsEndpoint => ({ transport: 'tls', node, address, tls });
