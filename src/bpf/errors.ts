/**
 * Typed errors of the BPF layer. Each carries what caused it; `name` is set
 * explicitly so callers can recognise an error even across package copies.
 */

/** A failed system call or libbpf call, with the errno it returned. */
export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    message: string,
    /** errno value, e.g. 2 */
    readonly errno: number,
    /** errno name, e.g. "ENOENT" */
    readonly code: string,
    /** the operation that failed, e.g. "bpf_map_update_elem" */
    readonly op: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The kernel rejected a program: the whole libbpf/verifier log is kept. */
export class VerifierError extends BpfError {
  override name = 'VerifierError';
  readonly logLines: readonly string[];
  constructor(
    objectName: string,
    errno: number,
    code: string,
    op: string,
    readonly log: string,
    options?: ErrorOptions,
  ) {
    const lines = log.split('\n').filter((l) => l.length > 0);
    const reason = verifierReason(lines);
    super(`${objectName}: the kernel refused to load it (${code})${reason ? `: ${reason}` : ''}\n${tail(lines, 12)}`, errno, code, op, options);
    this.logLines = lines;
  }
}

/** The kernel or the machine lacks a feature; tests skip on this. */
export class NotSupportedError extends BpfError {
  override name = 'NotSupportedError';
}

/** An interface that does not exist in the namespace it was looked up in. */
export class InterfaceNotFoundError extends Error {
  override name = 'InterfaceNotFoundError';
  constructor(
    readonly ifname: string,
    readonly netns: string | undefined,
    options?: ErrorOptions,
  ) {
    super(`interface '${ifname}' not found in ${netns === undefined ? 'the current network namespace' : `network namespace ${netns}`}`, options);
  }
}

/** A network namespace that cannot be entered. */
export class NetnsError extends Error {
  override name = 'NetnsError';
  constructor(
    readonly netns: string,
    readonly code: string,
    options?: ErrorOptions,
  ) {
    super(`network namespace ${netns} cannot be entered (${code})`, options);
  }
}

/** A bpffs pin that holds another kind of object than expected (or nothing BPF at all). */
export class PinError extends Error {
  override name = 'PinError';
  constructor(
    readonly path: string,
    readonly expected: string,
    readonly found: string | undefined,
    options?: ErrorOptions,
  ) {
    super(`${path}: expected a pinned ${expected}, found ${found === undefined ? 'no BPF object' : `a ${found}`}`, options);
  }
}

/**
 * An XDP program is attached to an interface already and it is not ours:
 * attaching would clobber it. Says which program (id, name, mode).
 */
export class XdpBusyError extends Error {
  override name = 'XdpBusyError';
  constructor(
    readonly ifname: string,
    readonly netns: string | undefined,
    readonly progId: number,
    readonly progName: string,
    readonly mode: string,
    reason: string,
    options?: ErrorOptions,
  ) {
    super(`${ifname}${netns === undefined ? '' : ` (netns ${netns})`} runs XDP program ${progId} '${progName}' (${mode} mode): ${reason}`, options);
  }
}

/** A handle used after close(). */
export class ClosedError extends Error {
  override name = 'ClosedError';
}

interface NativeErrorShape {
  message: string;
  errno?: number;
  code?: string;
  op?: string;
  log?: string;
}

function isNativeError(e: unknown): e is Error & NativeErrorShape {
  return e instanceof Error && typeof (e as NativeErrorShape).errno === 'number';
}

const NOT_SUPPORTED = new Set(['EOPNOTSUPP', 'ENOTSUP', 'ENOSYS']);

/** Converts an error thrown by the native addon into a typed error. */
export function fromNative(e: unknown): unknown {
  if (!isNativeError(e)) return e;
  const errno = e.errno ?? 0;
  const code = e.code ?? 'EUNKNOWN';
  const op = e.op ?? 'bpf';
  if (NOT_SUPPORTED.has(code)) return new NotSupportedError(e.message, errno, code, op, { cause: e });
  return new BpfError(e.message, errno, code, op, { cause: e });
}

/** Runs a native call and rethrows its failure as a typed error. */
export function native<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNative(e);
  }
}

export function nativeLog(e: unknown): string | undefined {
  return isNativeError(e) && typeof e.log === 'string' ? e.log : undefined;
}

function tail(lines: readonly string[], n: number): string {
  return lines.slice(-n).join('\n');
}

/** The verifier's own reason is the last line before "processed N insns". */
function verifierReason(lines: readonly string[]): string | undefined {
  const end = lines.findIndex((l) => /processed \d+ insns/.test(l));
  const candidates = end > 0 ? lines.slice(0, end) : lines;
  for (let i = candidates.length - 1; i >= 0; i--) {
    const l = candidates[i]!.trim();
    if (l.length === 0 || l.startsWith('libbpf:') || /^\d+: /.test(l) || l.startsWith(';')) continue;
    return l;
  }
  return undefined;
}
