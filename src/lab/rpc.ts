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

export class RpcError extends Error {
  constructor(
    override readonly name: string,
    message: string,
  ) {
    super(message);
  }
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

/** One call; `onEvent` sees progress events before the result. */
export function call<T>(socketPath: string, method: string, params?: unknown, onEvent?: (e: unknown) => void, timeoutMs = 600_000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new RpcError('TimeoutError', `the lab daemon did not answer ${method} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(toJson({ id: 1, method, params }) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(buf.slice(0, nl)) as RpcMessage;
        buf = buf.slice(nl + 1);
        if ('event' in m) onEvent?.(m.event);
        else {
          clearTimeout(timer);
          sock.end();
          if ('error' in m) reject(new RpcError(m.error.name, m.error.message));
          else resolve(m.result as T);
        }
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(new RpcError('DaemonUnreachable', `cannot reach the lab daemon at ${socketPath}: ${e.message}`));
    });
  });
}
