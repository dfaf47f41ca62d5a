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
