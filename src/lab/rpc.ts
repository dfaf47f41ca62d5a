/**
 * The lab daemon's control protocol: newline-delimited JSON over a Unix
 * socket in the run directory. A request is {id, method, params}; the daemon
 * answers with any number of {id, event} lines (progress) and one
 * {id, result} or {id, error}.
 */
import net from 'node:net';

export interface RpcRequest {
  id: number;
  method: string;
  params?: unknown;
}

export type RpcMessage = { id: number; event: unknown } | { id: number; result: unknown } | { id: number; error: { name: string; message: string } };

/** An error as the daemon reported it (its name and message), or a failure of the call itself (the subclasses). */
export class RpcError extends Error {
  constructor(
    override readonly name: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** No daemon listens on the socket (its cause: the socket error, e.g. ENOENT, ECONNREFUSED, EACCES). */
export class DaemonUnreachableError extends RpcError {
  constructor(
    readonly socketPath: string,
    readonly code: string | undefined,
    cause: Error,
  ) {
    super('DaemonUnreachable', `cannot reach the lab daemon at ${socketPath}: ${cause.message}`, { cause });
  }
}

/** The daemon hung up before it answered: it stopped (lab down) or crashed. */
export class DaemonClosedError extends RpcError {
  constructor(
    readonly method: string,
    cause?: Error,
  ) {
    super('DaemonClosed', `the lab daemon closed the connection during ${method}: it stopped or crashed`, cause === undefined ? undefined : { cause });
  }
}

/** No answer within the method's deadline (a stopped or overloaded daemon). */
export class DaemonTimeoutError extends RpcError {
  constructor(
    readonly method: string,
    readonly timeoutMs: number,
  ) {
    super('TimeoutError', `the lab daemon did not answer ${method} within ${timeoutMs} ms (is it stopped or overloaded?)`);
  }
}

/** The daemon sent something that is not a message of this protocol. */
export class ProtocolError extends RpcError {
  constructor(message: string, cause?: unknown) {
    super('ProtocolError', message, cause === undefined ? undefined : { cause });
  }
}

/**
 * How long each method may take before the client gives up. A handover
 * has no fixed deadline: its caller gives its own timeout plus a margin.
 */
export const DEADLINE_MS = {
  status: 15_000,
  report: 15_000,
  'rule.list': 15_000,
  'rule.add': 15_000,
  'rule.del': 15_000,
  // loads and attaches the generator's and sink's programs
  'traffic.start': 30_000,
  // waits until the sink has seen what was sent (quiet for 300 ms)
  'traffic.stop': 60_000,
  shutdown: 10_000,
} as const satisfies Record<string, number>;
export type DeadlinedMethod = keyof typeof DEADLINE_MS;

export interface CallOptions {
  /** progress events, before the result */
  onEvent?: (e: unknown) => void;
  /** give up after this long (default: DEADLINE_MS[method]) */
  timeoutMs?: number;
  /** abandons the call; it rejects with the signal's reason */
  signal?: AbortSignal;
}

/** JSON with bigint written as numbers (counters fit 2^53 in practice). */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? Number(x) : x));
}

export type Handler = (params: unknown, emit: (event: unknown) => void) => Promise<unknown>;

export function serve(socketPath: string, handlers: Readonly<Record<string, Handler>>): net.Server {
  const server = net.createServer((sock) => {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let req: RpcRequest;
        try {
          req = JSON.parse(line) as RpcRequest;
        } catch {
          sock.write(toJson({ id: -1, error: { name: 'ProtocolError', message: 'not JSON' } }) + '\n');
          continue;
        }
        const h = handlers[req.method];
        const reply = (m: RpcMessage): void => {
          if (!sock.destroyed) sock.write(toJson(m) + '\n');
        };
        if (h === undefined) {
          reply({ id: req.id, error: { name: 'UnknownMethod', message: `unknown method ${req.method}` } });
          continue;
        }
        h(req.params, (event) => reply({ id: req.id, event }))
          .then((result) => reply({ id: req.id, result }))
          .catch((e: unknown) => {
            const err = e instanceof Error ? e : new Error(String(e));
            reply({ id: req.id, error: { name: err.name, message: err.message } });
          });
      }
    });
    sock.on('error', () => undefined);
  });
  server.listen(socketPath);
  return server;
}

/**
 * One call. Rejects with the daemon's error, or with DaemonUnreachableError,
 * DaemonClosedError (at once when the daemon hangs up), DaemonTimeoutError,
 * ProtocolError, or the signal's reason.
 */
export function call<T>(socketPath: string, method: DeadlinedMethod, params?: unknown, options?: CallOptions): Promise<T>;
export function call<T>(socketPath: string, method: string, params: unknown, options: CallOptions & { timeoutMs: number }): Promise<T>;
export function call<T>(socketPath: string, method: string, params?: unknown, options: CallOptions = {}): Promise<T> {
  const timeoutMs = options.timeoutMs ?? (DEADLINE_MS as Record<string, number>)[method] ?? 30_000;
  const { signal, onEvent } = options;
  return new Promise<T>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason as Error);
    const sock = net.createConnection(socketPath);
    let buf = '';
    let settled = false;
    const finish = (err: Error | undefined, value?: T): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      sock.destroy();
      if (err) reject(err);
      else resolve(value as T);
    };
    const onAbort = (): void => finish(signal!.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(() => finish(new DaemonTimeoutError(method, timeoutMs)), timeoutMs);
    let connected = false;
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      sock.write(toJson({ id: 1, method, params }) + '\n');
    });
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while (!settled && (nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let m: RpcMessage;
        try {
          m = JSON.parse(line) as RpcMessage;
        } catch (e) {
          finish(new ProtocolError(`the lab daemon sent a line that is not JSON during ${method}`, e));
          return;
        }
        if ('event' in m) onEvent?.(m.event);
        else if ('error' in m) finish(new RpcError(m.error.name, m.error.message));
        else if ('result' in m) finish(undefined, m.result as T);
        else finish(new ProtocolError(`the lab daemon sent a message without event, result or error during ${method}`));
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      finish(connected ? new DaemonClosedError(method, e) : new DaemonUnreachableError(socketPath, e.code, e));
    });
    sock.on('close', () => finish(new DaemonClosedError(method)));
  });
}
