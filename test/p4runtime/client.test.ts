// The client against an in-process fake P4Runtime server (no BMv2 needed):
// arbitration outcomes, primacy loss, Write errors through the
// grpc-status-details-bin trailer, stream errors that nobody listens for,
// unreachable servers, close(), and TLS: mutual TLS accepted, every refusal
// (no certificate, another CA's, an untrusted server, another name,
// plaintext against TLS and the reverse) a typed error naming the parties.
import t, { type Test } from 'tap';
import path from 'node:path';
import os from 'node:os';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import {
  P4Info,
  P4RuntimeCertificateRefusedError,
  P4RuntimeClient,
  P4RuntimeError,
  P4RuntimeNotPrimaryError,
  P4RuntimeSecurityError,
  P4RuntimeServerIdentityError,
  P4RuntimeTransportMismatchError,
  P4RuntimeUnavailableError,
  P4RuntimeUntrustedServerError,
  P4RuntimeWriteError,
  encodeMessage,
  decodeMessage,
  uint128,
  type P4RuntimeTlsOptions,
  type PrimacyLost,
} from '../../src/p4runtime/index.js';
import { createCa, createControllerCert, createSwitchCert } from '../../src/node/transport/index.js';
import { commandPath } from '../../src/util/command.js';
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
async function fake(t: Test, answer: { code: number; primary?: bigint } | 'end-with-error', onWrite: (req: Obj) => grpc.ServiceError | undefined = () => undefined, credentials = grpc.ServerCredentials.createInsecure()): Promise<Fake> {
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
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${sock}`, credentials, (e) => (e ? reject(e) : resolve())));
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

const opensslMissing = commandPath('openssl') === undefined ? 'openssl is not on PATH (the certificates are made with it)' : false;

t.test('TLS: mutual TLS with the switch named by its certificate; each refusal a typed error naming the address and identities', { skip: opensslMissing }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-p4rt-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [a, b] = [path.join(dir, 'a'), path.join(dir, 'b')];
  for (const d of [a, b]) {
    await createCa(d, { name: `${path.basename(d)}-ca` });
    await createControllerCert(d, 'ctl1');
  }
  await createSwitchCert(a, 's1', { ips: ['127.0.0.1'] });
  const pem = (f: string): Buffer => readFileSync(f);
  // the server: client certificates signed by CA a required, as simple_switch_grpc --grpc-server-with-client-auth
  const tlsServer = grpc.ServerCredentials.createSsl(pem(`${a}/ca.crt`), [{ cert_chain: pem(`${a}/switch-s1.crt`), private_key: pem(`${a}/switch-s1.key`) }], true);
  const f = await fake(t, { code: 0 }, undefined, tlsServer);
  const mine: P4RuntimeTlsOptions = { ca: pem(`${a}/ca.crt`), cert: pem(`${a}/controller-ctl1.crt`), key: pem(`${a}/controller-ctl1.key`), serverName: 's1' };

  const c = await P4RuntimeClient.connect({ address: f.address, deviceId: 1, p4info, tls: mine });
  t.same([c.identity, c.serverName, c.isPrimary], ['ctl1', 's1', true], 'connected and primary over mutual TLS');
  await c.insertEntry({ table: 'tx_port', match: { slot: { exact: 1 } }, action: { name: 'set_tx', params: { port: 1 } } });
  t.equal(f.writes.length, 1);
  c.close();

  const refused = async (tls: P4RuntimeTlsOptions | undefined): Promise<P4RuntimeSecurityError> => {
    const started = Date.now();
    const e = await P4RuntimeClient.connect({ address: f.address, deviceId: 1, timeoutMs: 5000, ...(tls === undefined ? {} : { tls }) }).then(
      (x) => {
        x.close();
        return new Error('connected');
      },
      (x: unknown) => x,
    );
    if (!(e instanceof P4RuntimeSecurityError)) throw e;
    t.equal(e.address, f.address);
    t.equal(e.code, grpc.status.UNAVAILABLE);
    t.ok(Date.now() - started < 4000, `refused at the first attempt, before the 5 s deadline (${Date.now() - started} ms)`);
    return e;
  };
  const none = await refused({ ca: mine.ca, serverName: 's1' });
  t.ok(none instanceof P4RuntimeCertificateRefusedError, none.message);
  t.match(none.message, /did not accept this client \(no certificate\)/);
  t.same([none.client, none.serverName], [undefined, 's1']);

  const other = await refused({ ...mine, cert: pem(`${b}/controller-ctl1.crt`), key: pem(`${b}/controller-ctl1.key`) });
  t.ok(other instanceof P4RuntimeCertificateRefusedError, other.message);
  t.match(other.message, /the certificate of 'ctl1'/);
  t.equal(other.client, 'ctl1');

  const untrusted = await refused({ ...mine, ca: pem(`${b}/ca.crt`) });
  t.ok(untrusted instanceof P4RuntimeUntrustedServerError, untrusted.message);
  t.match(untrusted.message, /not signed by the CA this client trusts \(expected 's1'\)/);

  const renamed = await refused({ ...mine, serverName: 's2' });
  t.ok(renamed instanceof P4RuntimeServerIdentityError, renamed.message);
  t.same((renamed as P4RuntimeServerIdentityError).presented, ['s1', '127.0.0.1']);
  t.match(renamed.message, /the server's certificate names 's1', '127\.0\.0\.1', expected 's2'/);

  const plain = await refused(undefined);
  t.ok(plain instanceof P4RuntimeTransportMismatchError, plain.message);
  t.match(plain.message, /may require TLS \(this client speaks plaintext\)/);
  t.same([plain.client, plain.serverName], [undefined, undefined]);
  t.equal(f.writes.length, 1, 'no refused client wrote');

  // TLS against a plaintext server
  const p = await fake(t, { code: 0 });
  const e = await P4RuntimeClient.connect({ address: p.address, deviceId: 1, timeoutMs: 5000, tls: mine }).then(
    () => undefined,
    (x: unknown) => x,
  );
  t.ok(e instanceof P4RuntimeTransportMismatchError, String(e));
  t.match((e as Error).message, /does not speak TLS/);

  await t.rejects(P4RuntimeClient.connect({ address: f.address, deviceId: 1, tls: { ca: mine.ca, cert: mine.cert! } }), { name: 'P4RuntimeError', message: /give tls\.cert and tls\.key together/ });
});
