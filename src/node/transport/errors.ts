/**
 * Errors of the node transport: certificate tooling, the node's server and
 * the controller's channel to a node. Every class has a stable `name` (so it
 * is recognised across copies of this module) and carries its cause; the
 * channel errors carry the gRPC status code and details as well.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

/** Name of a gRPC status code, e.g. 14 -> UNAVAILABLE. */
export function statusName(code: number): string {
  return (GrpcStatus as unknown as Record<number, string | undefined>)[code] ?? `code ${code}`;
}

// ---------------------------------------------------------------- certificates

/** Base of the certificate tooling's errors. */
export class CertsError extends Error {
  override name = 'CertsError';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A name, address or option the tooling will not put into a certificate. */
export class CertsUsageError extends CertsError {
  override name = 'CertsUsageError';
}

/** Files that would be overwritten (nothing was written). */
export class CertExistsError extends CertsError {
  override name = 'CertExistsError';
  constructor(readonly files: readonly string[]) {
    super(`${files.join(', ')} already exist${files.length === 1 ? 's' : ''}: refusing to overwrite (use force / --force to replace)`);
  }
}

/** The CA a leaf is to be signed by is not there (or unreadable). */
export class CaMissingError extends CertsError {
  override name = 'CaMissingError';
  constructor(
    readonly dir: string,
    options?: ErrorOptions,
  ) {
    super(`no CA in ${dir} (ca.crt and ca.key): create one first with 'sharpctl certs init ${dir}'`, options);
  }
}

/** The openssl CLI is not installed (or not on PATH). */
export class OpensslMissingError extends CertsError {
  override name = 'OpensslMissingError';
  constructor(options?: ErrorOptions) {
    super("the 'openssl' command is not on PATH (Debian: apt-get install openssl)", options);
  }
}

/** An openssl command failed: its arguments, exit code and what it printed. */
export class OpensslError extends CertsError {
  override name = 'OpensslError';
  constructor(
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    options?: ErrorOptions,
  ) {
    super(`openssl ${args.join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim().split('\n').slice(-3).join(' | ') || 'no message'}`, options);
  }
}

/** A certificate or key file that cannot be read or parsed, or does not fit (key vs certificate, issuer vs CA). */
export class CertificateFileError extends CertsError {
  override name = 'CertificateFileError';
  constructor(
    readonly file: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

// ---------------------------------------------------------------- server

/** Base of the node server's errors (it could not start, or stop). */
export class NodeServerError extends Error {
  override name = 'NodeServerError';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Another live server listens on the Unix socket path. */
export class SocketInUseError extends NodeServerError {
  override name = 'SocketInUseError';
  constructor(readonly path: string) {
    super(`another server is listening on the Unix socket ${path}: stop it first (or choose another path)`);
  }
}

/** The Unix socket path is unusable: something other than a socket is there, or its folder cannot be made. */
export class SocketPathError extends NodeServerError {
  override name = 'SocketPathError';
  constructor(
    readonly path: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** grpc-js could not bind an address. */
export class ListenError extends NodeServerError {
  override name = 'ListenError';
  constructor(
    readonly address: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

// ---------------------------------------------------------------- client

/**
 * The gist of grpc-js's status details of a failed connection: "No connection
 * established. Last error: Error: connect ECONNREFUSED 127.0.0.1:1.
 * Resolution note: " -> "connect ECONNREFUSED 127.0.0.1:1"; an OpenSSL
 * error line -> its reason ("tlsv13 alert certificate required").
 */
export function connectionReason(details: string): string {
  let r = details.trim();
  const last = /Last error: (?:Error: )?([\s\S]*?)(?:\.? Resolution note:[\s\S]*)?$/.exec(r);
  if (last) r = last[1]!.trim();
  const ssl = /:SSL routines:[^:]*:([^:]+):/.exec(r);
  if (ssl) r = ssl[1]!;
  return r.replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)\s*$/, '').replace(/\.$/, '').trim();
}

export interface NodeConnectionErrorInit {
  /** the node's name as the controller knows it (undefined for an unnamed Unix socket) */
  node: string | undefined;
  /** the channel target: host:port, or unix:/path */
  target: string;
  /** the gRPC status code of the failed call */
  code: number;
  /** the status details the call failed with */
  details: string;
  /** the identity the controller expected of the node (its certificate's name) */
  expected?: string | undefined;
  /** the identity the node presented, when known */
  presented?: string | undefined;
  /** the identity the controller presented (its certificate's CN), undefined on a Unix socket */
  controller?: string | undefined;
}

/**
 * The controller could not reach a node, or the node would not talk to it.
 * Names the target, the identities involved and the gRPC status.
 */
export class NodeConnectionError extends Error {
  override name = 'NodeConnectionError';
  readonly node: string | undefined;
  readonly target: string;
  readonly code: number;
  readonly details: string;
  readonly expected: string | undefined;
  readonly presented: string | undefined;
  readonly controller: string | undefined;
  constructor(message: string, init: NodeConnectionErrorInit, options?: ErrorOptions) {
    const reason = connectionReason(init.details);
    super(`${message} (${statusName(init.code)}${reason === '' || message.includes(reason) ? '' : `: ${reason}`})`, options);
    this.node = init.node;
    this.target = init.target;
    this.code = init.code;
    this.details = init.details;
    this.expected = init.expected;
    this.presented = init.presented;
    this.controller = init.controller;
  }
}

/** Nothing answers at the target (connection refused, no such socket, no route, timeout). */
export class NodeUnreachableError extends NodeConnectionError {
  override name = 'NodeUnreachableError';
  readonly unanswered = true;
}

/** The node ended the TLS handshake: it did not accept the controller's certificate (or got none). */
export class NodeRefusedCertificateError extends NodeConnectionError {
  override name = 'NodeRefusedCertificateError';
}

/** The node's certificate is not signed by the controller's CA. */
export class NodeUntrustedError extends NodeConnectionError {
  override name = 'NodeUntrustedError';
}

/** The node's certificate is valid but names someone else. */
export class NodeIdentityMismatchError extends NodeConnectionError {
  override name = 'NodeIdentityMismatchError';
}

/** The node accepted the certificate but not this controller: it is not on the node's allow-list. */
export class NodePermissionDeniedError extends NodeConnectionError {
  override name = 'NodePermissionDeniedError';
}

/** The connection failed in another way (protocol mismatch, the node went away mid-call). */
export class NodeUnavailableError extends NodeConnectionError {
  override name = 'NodeUnavailableError';
  readonly unanswered = true;
}
