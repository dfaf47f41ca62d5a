// The client against an in-process fake P4Runtime server (no BMv2 needed):
// arbitration outcomes, primacy loss, Write errors through the
// grpc-status-details-bin trailer, stream errors that nobody listens for,
// unreachable servers, and close().
import t, { type Test } from 'tap';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { P4Info, P4RuntimeClient, P4RuntimeError, P4RuntimeNotPrimaryError, P4RuntimeUnavailableError, P4RuntimeWriteError, encodeMessage, decodeMessage, uint128, type PrimacyLost } from '../../src/p4runtime/index.js';
import { repoRoot } from '../helpers/env.js';

const p4info = P4Info.load(path.join(repoRoot, 'p4/build/sharp.p4info.json'));

type Obj = Record<string, unknown>;
const codec = (name: Parameters<typeof encodeMessage>[0]) => ({ serialize: (v: Obj) => encodeMessage(name, v), deserialize: (b: Buffer) => decodeMessage<Obj>(name, b) });
const method = (name: string, req: Parameters<typeof encodeMessage>[0], res: Parameters<typeof encodeMessage>[0], requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Obj, Obj> => ({
  path: `/p4.v1.P4Runtime/${name}`,
  requestStream,
  responseStream,
  requestSerialize: codec(req).serialize,
  requestDeserialize: codec(req).deserialize,
  responseSerialize: codec(res).serialize,
  responseDeserialize: codec(res).deserialize,
});
const SERVICE = {
  StreamChannel: method('StreamChannel', 'p4.v1.StreamMessageRequest', 'p4.v1.StreamMessageResponse', true, true),
  Write: method('Write', 'p4.v1.WriteRequest', 'p4.v1.WriteResponse', false, false),
} as unknown as grpc.ServiceDefinition;

interface Fake {
  address: string;
  streams: grpc.ServerDuplexStream<Obj, Obj>[];
  writes: Obj[];
  close(): Promise<void>;
}

/** A server that answers the first arbitration with `answer` and Writes with `onWrite`. */
async function fake(t: Test, answer: { code: number; primary?: bigint } | 'end-with-error', onWrite: (req: Obj) => grpc.ServiceError | undefined = () => undefined): Promise<Fake> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4rt-'));
  const sock = path.join(dir, 'p4rt.sock');
  const server = new grpc.Server();
  const streams: grpc.ServerDuplexStream<Obj, Obj>[] = [];
  const writes: Obj[] = [];
  server.addService(SERVICE, {
    StreamChannel: (call: grpc.ServerDuplexStream<Obj, Obj>) => {
      streams.push(call);
      call.on('data', (m: Obj) => {
        if (!m['arbitration']) return;
        if (answer === 'end-with-error') {
          call.emit('error', { code: grpc.status.NOT_FOUND, details: 'no such device' });
          return;
        }
        call.write({ arbitration: { device_id: '1', election_id: uint128(answer.primary ?? 1n), status: { code: answer.code, message: answer.code === 0 ? '' : 'Is backup' } } });
      });
      call.on('error', () => undefined);
      call.on('end', () => call.end());
    },
    Write: (call: grpc.ServerUnaryCall<Obj, Obj>, cb: grpc.sendUnaryData<Obj>) => {
      writes.push(call.request);
      const e = onWrite(call.request);
      if (e) cb(e);
      else cb(null, {});
    },
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  const f: Fake = {
    address: `unix:${sock}`,
    streams,
    writes,
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        rmSync(dir, { recursive: true, force: true });
        resolve();
      }),
  };
  t.teardown(() => f.close());
  return f;
}

t.test('an unreachable server: P4RuntimeUnavailableError naming the address', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4rt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const address = `unix:${path.join(dir, 'nobody.sock')}`;
  const started = Date.now();
  const e = await P4RuntimeClient.connect({ address, deviceId: 1, timeoutMs: 300 }).then(
    (c) => c,
    (x: unknown) => x,
  );
  t.ok(e instanceof P4RuntimeUnavailableError);
  t.equal((e as P4RuntimeUnavailableError).address, address);
  t.match((e as Error).message, address);
  t.equal((e as P4RuntimeUnavailableError).code, grpc.status.UNAVAILABLE);
  t.ok(Date.now() - started < 3000, 'within the timeout');
});

t.test('arbitration OK: primary; the request carries device id and election id', async (t) => {
  const f = await fake(t, { code: 0, primary: (1n << 64n) + 3n });
  const c = await P4RuntimeClient.connect({ address: f.address, deviceId: 7, electionId: (1n << 64n) + 3n, p4info });
  t.ok(c.isPrimary);
  t.equal(c.primaryElectionId, (1n << 64n) + 3n);
  await c.insertEntry({ table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } });
  const w = f.writes[0]!;
  t.equal(w['device_id'], '7');
  t.same(w['election_id'], { high: '1', low: '3' });
  t.equal((w['updates'] as Obj[]).length, 1);
  c.close();
  c.close();
  t.ok(c.closed, 'close() twice is fine');
  await t.rejects(c.insertEntry({ table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } }), P4RuntimeUnavailableError, 'a closed client refuses calls');
});

t.test('arbitration ALREADY_EXISTS: P4RuntimeNotPrimaryError, stream closed', async (t) => {
  const f = await fake(t, { code: grpc.status.ALREADY_EXISTS, primary: 9n });
  const e = await P4RuntimeClient.connect({ address: f.address, deviceId: 1, electionId: 2n }).then(
    (c) => c,
    (x: unknown) => x,
  );
  t.ok(e instanceof P4RuntimeNotPrimaryError);
  t.equal((e as P4RuntimeNotPrimaryError).primaryElectionId, 9n);
  t.match((e as Error).message, /election id 2 does not make this client primary .*primary has election id 9/);
  await new Promise((r) => setTimeout(r, 100));
  t.ok(f.streams[0]!.cancelled || f.streams[0]!.destroyed || f.streams[0]!.writableEnded, 'the server saw the stream go');
});

t.test('the server refuses the stream: P4RuntimeError with its code', async (t) => {
  const f = await fake(t, 'end-with-error');
  await t.rejects(P4RuntimeClient.connect({ address: f.address, deviceId: 1 }), { name: 'P4RuntimeError', code: grpc.status.NOT_FOUND, message: /NOT_FOUND: no such device/ });
});

t.test("a later arbitration update: 'primacy-lost', writes fail fast; primacy regained", async (t) => {
  const f = await fake(t, { code: 0, primary: 1n });
  const c = await P4RuntimeClient.connect({ address: f.address, deviceId: 1, electionId: 1n, p4info });
  t.teardown(() => c.close());
  const lost = new Promise<PrimacyLost>((resolve) => c.once('primacy-lost', resolve));
  f.streams[0]!.write({ arbitration: { device_id: '1', election_id: uint128(5n), status: { code: grpc.status.ALREADY_EXISTS } } });
  t.same(await lost, { primaryElectionId: 5n, code: grpc.status.ALREADY_EXISTS });
  await t.rejects(c.writeCounter('port_rx', 1, { packets: 0n, bytes: 0n }), { name: 'P4RuntimeNotPrimaryError', message: /not the primary \(the primary has election id 5\)/ });
  t.equal(f.writes.length, 0, 'nothing was sent');
  const gained = new Promise<void>((resolve) => c.once('primacy-gained', resolve));
  f.streams[0]!.write({ arbitration: { device_id: '1', election_id: uint128(1n), status: { code: 0 } } });
  await gained;
  t.ok(c.isPrimary);
});

t.test('Write errors: per-update details from grpc-status-details-bin', async (t) => {
  const p4Error = (code: number, message: string): Obj => ({ type_url: 'type.googleapis.com/p4.v1.Error', value: encodeMessage('p4.v1.Error', { canonical_code: code, message }) });
  const f = await fake(t, { code: 0 }, (req) => {
    const n = (req['updates'] as Obj[]).length;
    const md = new grpc.Metadata();
    if (n === 2) {
      md.set('grpc-status-details-bin', encodeMessage('google.rpc.Status', { code: grpc.status.UNKNOWN, message: 'Write failure.', details: [p4Error(0, ''), p4Error(grpc.status.INVALID_ARGUMENT, 'bad value')] }));
      return Object.assign(new Error('Write failure.'), { code: grpc.status.UNKNOWN, details: 'Write failure.', metadata: md });
    }
    return Object.assign(new Error('Not primary'), { code: grpc.status.PERMISSION_DENIED, details: 'Not primary', metadata: md });
  });
  const c = await P4RuntimeClient.connect({ address: f.address, deviceId: 1, p4info });
  t.teardown(() => c.close());
  const e = await c
    .write([
      { type: 'INSERT', tableEntry: { table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } } },
      { type: 'INSERT', tableEntry: { table: 'tx_port', match: { slot: { exact: 2 } }, action: { name: 'set_tx', params: { port: 2 } } } },
    ])
    .then(
      () => undefined,
      (x: unknown) => x,
    );
  t.ok(e instanceof P4RuntimeWriteError);
  t.same((e as P4RuntimeWriteError).updates, [{ index: 1, code: grpc.status.INVALID_ARGUMENT, message: 'bad value' }]);
  t.equal((e as Error).message, 'P4Runtime Write: 1 of 2 updates failed: #1 INVALID_ARGUMENT: bad value');
  // a refusal without details because we are not primary (another client took over without us hearing)
  await t.rejects(c.insertEntry({ table: 'tx_port', match: { slot: { exact: 3 } }, action: { name: 'set_tx', params: { port: 3 } } }), { name: 'P4RuntimeNotPrimaryError', code: grpc.status.PERMISSION_DENIED });
  t.notOk(c.isPrimary, 'and the client stops writing');
});

t.test("the server going away: 'close', lastError, no crash without an 'error' listener", async (t) => {
  const f = await fake(t, { code: 0 });
  const c = await P4RuntimeClient.connect({ address: f.address, deviceId: 1, p4info });
  const closed = new Promise<void>((resolve) => c.once('close', resolve));
  await f.close();
  await closed;
  t.ok(c.closed);
  t.notOk(c.isPrimary);
  t.ok(c.lastError instanceof P4RuntimeError, `lastError: ${c.lastError?.message}`);
  c.close();
});
