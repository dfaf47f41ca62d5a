/**
 * Errors of the P4Runtime client. Each is a narrow subclass with a stable
 * `name` (so callers can recognise it even across copies of this module)
 * that carries what caused it.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

/** The P4Info has no such object, or is not a P4Info at all. */
export class P4InfoError extends Error {
  override name = 'P4InfoError';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** A value does not fit its field, or an entry breaks a P4Runtime rule (caught before sending). */
export class P4EncodingError extends Error {
  override name = 'P4EncodingError';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** Name of a gRPC / google.rpc canonical code, e.g. 6 -> ALREADY_EXISTS. */
export function codeName(code: number): string {
  return (GrpcStatus as unknown as Record<number, string | undefined>)[code] ?? `code ${code}`;
}

/** A P4Runtime call failed: the gRPC status code and details the server gave. */
export class P4RuntimeError extends Error {
  override name = 'P4RuntimeError';
  constructor(
    message: string,
    /** gRPC status code (grpc.status) */
    readonly code: number,
    /** the status details (message) the server gave */
    readonly details: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** One failed update of a Write, by its index in the request. */
export interface FailedUpdate {
  index: number;
  /** canonical (gRPC) code */
  code: number;
  message: string;
  /** target-specific error space and code, when the server gave them */
  space?: string;
  targetCode?: number;
}

/**
 * A Write failed. `updates` lists the failed updates (in request order);
 * updates of the same request that are not listed were applied.
 */
export class P4RuntimeWriteError extends P4RuntimeError {
  override name = 'P4RuntimeWriteError';
  constructor(
    code: number,
    details: string,
    readonly updates: readonly FailedUpdate[],
    /** how many updates the request had */
    readonly total: number,
    options?: ErrorOptions,
  ) {
    const list = updates.map((u) => `#${u.index} ${codeName(u.code)}: ${u.message}`).join('; ');
    const what = updates.length > 0 ? `${updates.length} of ${total} update${total === 1 ? '' : 's'} failed: ${list}` : `${codeName(code)}: ${details}`;
    super(`P4Runtime Write: ${what}`, code, details, options);
  }
}

/** This client is not (or no longer) the primary controller, so it may not write. */
export class P4RuntimeNotPrimaryError extends P4RuntimeError {
  override name = 'P4RuntimeNotPrimaryError';
  constructor(
    message: string,
    /** the election id of the primary, when the server told us */
    readonly primaryElectionId: bigint | undefined,
    code: number = GrpcStatus.PERMISSION_DENIED,
    details = '',
    options?: ErrorOptions,
  ) {
    super(message, code, details, options);
  }
}

/** The P4Runtime server could not be reached (or went away). */
export class P4RuntimeUnavailableError extends P4RuntimeError {
  override name = 'P4RuntimeUnavailableError';
  constructor(
    readonly address: string,
    details: string,
    options?: ErrorOptions,
  ) {
    super(`P4Runtime server at ${address} is unavailable: ${details}`, GrpcStatus.UNAVAILABLE, details, options);
  }
}

/** Who took part in a refused connection (for messages and callers). */
export interface P4RuntimeTlsParties {
  /** the gRPC target */
  address: string;
  /** the CN of the certificate this client presented; undefined when it presented none (or spoke plaintext) */
  client: string | undefined;
  /** the name the server's certificate had to carry; undefined on a plaintext channel */
  serverName: string | undefined;
}

/**
 * A connection to a P4Runtime server that was refused for its security,
 * not for being unreachable: retrying does not help. Carries the address,
 * the identities and the gRPC status of the failed connection.
 */
export class P4RuntimeSecurityError extends P4RuntimeError {
  override name = 'P4RuntimeSecurityError';
  readonly address: string;
  readonly client: string | undefined;
  readonly serverName: string | undefined;
  constructor(message: string, parties: P4RuntimeTlsParties, details: string, options?: ErrorOptions) {
    super(`P4Runtime server at ${parties.address}: ${message}${details === '' ? '' : ` (${details})`}`, GrpcStatus.UNAVAILABLE, details, options);
    this.address = parties.address;
    this.client = parties.client;
    this.serverName = parties.serverName;
  }
}

/** The server ended the TLS handshake: it did not accept this client's certificate, or wanted one and got none. */
export class P4RuntimeCertificateRefusedError extends P4RuntimeSecurityError {
  override name = 'P4RuntimeCertificateRefusedError';
}

/** The server's certificate is not signed by the CA this client trusts. */
export class P4RuntimeUntrustedServerError extends P4RuntimeSecurityError {
  override name = 'P4RuntimeUntrustedServerError';
}

/** The server's certificate is signed by our CA but names someone else. */
export class P4RuntimeServerIdentityError extends P4RuntimeSecurityError {
  override name = 'P4RuntimeServerIdentityError';
  constructor(
    message: string,
    parties: P4RuntimeTlsParties,
    /** the names the server's certificate carries */
    readonly presented: readonly string[],
    details: string,
    options?: ErrorOptions,
  ) {
    super(message, parties, details, options);
  }
}

/** One side speaks TLS, the other plaintext. */
export class P4RuntimeTransportMismatchError extends P4RuntimeSecurityError {
  override name = 'P4RuntimeTransportMismatchError';
}
