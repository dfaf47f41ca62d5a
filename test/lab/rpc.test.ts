// The lab daemon's protocol, client side: every call ends — with the answer,
// the daemon's error, or a typed error saying what happened — never hangs.
import t, { type Test } from 'tap';
import type net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lineServer } from '../helpers/cli.js';
import { call, serve, DEADLINE_MS, DaemonClosedError, DaemonTimeoutError, DaemonUnreachableError, ProtocolError, RpcError } from '../../src/lab/rpc.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-rpc-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** a server that does `onLine` with each request line */
async function server(t: Test, onLine: (line: string, sock: net.Socket) => void): Promise<string> {
  const socket = path.join(dir, `s${n++}.sock`);
  const srv = await lineServer(socket, onLine);
  t.teardown(() => srv.close());
  return socket;
}

t.test('answers, events and errors of a real server', async (t) => {
  const socket = path.join(dir, 'real.sock');
  const srv = serve(socket, {
    status: async (_p, emit) => {
      emit({ step: 'one' });
      return { ok: true, big: 5n };
    },
    'rule.del': async () => {
      const e = new Error('no rule 9');
      e.name = 'RuleError';
      throw e;
    },
  });
  await new Promise<void>((r) => srv.once('listening', () => r()));
  t.teardown(() => srv.close());
  const events: unknown[] = [];
  t.same(await call(socket, 'status', undefined, { onEvent: (e) => events.push(e) }), { ok: true, big: 5 });
  t.same(events, [{ step: 'one' }]);
  await t.rejects(call(socket, 'rule.del', { id: 9 }), { name: 'RuleError', message: 'no rule 9' });
});

t.test('every method the CLI calls has a deadline of at most a minute', async (t) => {
  for (const [m, ms] of Object.entries(DEADLINE_MS)) t.ok(ms > 0 && ms <= 60_000, `${m}: ${ms} ms`);
});

t.test('a server that hangs up: DaemonClosedError at once', async (t) => {
  const socket = await server(t, (_l, sock) => sock.destroy());
  const t0 = Date.now();
  const e = await call(socket, 'status').catch((x: unknown) => x);
  t.ok(e instanceof DaemonClosedError, 'DaemonClosedError');
  t.match((e as Error).message, 'the lab daemon closed the connection during status: it stopped or crashed');
  t.ok(Date.now() - t0 < 5000, 'not after a deadline');
});

t.test('a server that says nothing: DaemonTimeoutError after the deadline', async (t) => {
  const socket = await server(t, () => undefined);
  const e = await call(socket, 'status', undefined, { timeoutMs: 200 }).catch((x: unknown) => x);
  t.ok(e instanceof DaemonTimeoutError, 'DaemonTimeoutError');
  t.match((e as Error).message, /did not answer status within 200 ms/);
});

t.test('a method without a deadline of its own needs one from the caller', async (t) => {
  const socket = await server(t, () => undefined);
  const e = await call(socket, 'handover', {}, { timeoutMs: 150 }).catch((x: unknown) => x);
  t.ok(e instanceof DaemonTimeoutError);
});

t.test('an abort signal ends the call with its reason', async (t) => {
  const socket = await server(t, () => undefined);
  const ac = new AbortController();
  const p = call(socket, 'status', undefined, { signal: ac.signal });
  setTimeout(() => ac.abort(new Error('stop now')), 50);
  await t.rejects(p, { message: 'stop now' });
  await t.rejects(call(socket, 'status', undefined, { signal: ac.signal }), { message: 'stop now' }, 'an aborted signal: at once');
});

t.test('a line that is not JSON: ProtocolError, not an exception in the event loop', async (t) => {
  const socket = await server(t, (_l, sock) => sock.write('garbage\n'));
  const e = await call(socket, 'status').catch((x: unknown) => x);
  t.ok(e instanceof ProtocolError);
  t.ok(e instanceof RpcError);
});

t.test('no daemon at all: DaemonUnreachableError with the errno', async (t) => {
  const e = await call(path.join(dir, 'nobody-here.sock'), 'status').catch((x: unknown) => x);
  t.ok(e instanceof DaemonUnreachableError);
  t.equal((e as DaemonUnreachableError).code, 'ENOENT');
  t.ok((e as Error).cause instanceof Error, 'carries its cause');
});
