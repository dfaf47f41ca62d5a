// The node transport on real sockets: mutual TLS on 127.0.0.1 and a Unix
// socket in a temp folder, servers in this process and in a child process.
// Every refused client is checked to have reached no handler.
import t, { type Test } from 'tap';
import * as grpc from '@grpc/grpc-js';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  controllerTlsFiles,
  createCa,
  createControllerCert,
  createNodeCert,
  CertificateFileError,
  loadTls,
  NodeConnectionError,
  NodeIdentityMismatchError,
  NodePermissionDeniedError,
  NodeRefusedCertificateError,
  NodeUnreachableError,
  NodeUntrustedError,
  nodeChannel,
  nodeTlsFiles,
  SocketInUseError,
  SocketPathError,
  startNodeServer,
  tlsEndpoint,
  unixEndpoint,
  ListenError,
  type CallPeer,
  type NodeServer,
  type RefusedCall,
  type TlsMaterial,
} from '../../src/node/transport/index.js';
import { check, healthService, HealthClient } from './fixtures/health.js';
import { spawnServer, type ChildServer } from './fixtures/health-server.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-tls-'));
const otherDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-tls-other-'));
const servers: NodeServer[] = [];
const children: ChildServer[] = [];
const clients: grpc.Client[] = [];
t.teardown(async () => {
  for (const c of clients) c.close();
  await Promise.all([...servers.map((s) => s.close(200)), ...children.map((c) => c.stop())]);
  rmSync(dir, { recursive: true, force: true });
  rmSync(otherDir, { recursive: true, force: true });
});

await createCa(dir);
await createNodeCert(dir, 's1', { ips: ['127.0.0.1'] });
await createNodeCert(dir, 'vnf1', { ips: ['127.0.0.1'] });
await createControllerCert(dir, 'ctl1');
await createControllerCert(dir, 'ctl2');
await createCa(otherDir, { name: 'rogue-ca' });
await createControllerCert(otherDir, 'ctl1');
await createNodeCert(otherDir, 's1', { ips: ['127.0.0.1'] });

const ctl = (d: string, name: string): TlsMaterial => loadTls(controllerTlsFiles(d, name), 'client');

// s1 in this process: TCP (mTLS) + Unix socket, ctl1 is its only controller
const seen: CallPeer[] = [];
const refusedLog: RefusedCall[] = [];
const sockDir = path.join(dir, 'run', 'sharp');
const s1 = await startNodeServer({
  node: 's1',
  services: [healthService((p) => seen.push(p))],
  unix: { path: path.join(sockDir, 'node.sock') },
  tcp: { address: '127.0.0.1:0', tls: loadTls(nodeTlsFiles(dir, 's1'), 'server') },
  allowControllers: ['ctl1'],
  onRefused: (r) => refusedLog.push(r),
});
servers.push(s1);
const s1Addr = s1.tcpAddress!;

function client(ch: ReturnType<typeof nodeChannel>): HealthClient {
  const c = ch.client(HealthClient);
  clients.push(c);
  return c;
}

/** Runs a call that must fail; returns its ServiceError. Asserts no handler saw it. */
async function refused(t: Test, c: HealthClient, calls: () => number = () => seen.length): Promise<grpc.ServiceError> {
  const before = calls();
  const e = await check(c).then(
    () => undefined,
    (err: unknown) => err as grpc.ServiceError,
  );
  c.close();
  t.ok(e, 'the call fails');
  t.equal(calls(), before, 'no handler was invoked');
  return e!;
}

t.test('the server listens on loopback TCP and a 0600 socket in a 0700 folder', async (t) => {
  t.match(s1Addr, /^127\.0\.0\.1:\d+$/);
  t.equal(statSync(s1.unixPath!).mode & 0o777, 0o600, 'socket 0600');
  t.ok(statSync(s1.unixPath!).isSocket());
  t.equal(statSync(sockDir).mode & 0o777, 0o700, 'its folder 0700');
});

t.test('mutual TLS: the call succeeds and the handler sees the controller identity', async (t) => {
  const before = seen.length;
  const r = await check(client(nodeChannel(tlsEndpoint('s1', s1Addr, ctl(dir, 'ctl1')))));
  t.equal(r.status, 'SERVING');
  t.equal(r.transport, 'tls');
  t.equal(r.peer, 'ctl1');
  t.equal(r.role, 'controller');
  t.equal(r.issuer, 'sharp-ca');
  t.match(r.description, /^controller 'ctl1' \(issued by 'sharp-ca', SHA-256 [0-9A-F:]+…\)$/);
  t.equal(seen.length, before + 1, 'the handler ran once');
  const p = seen.at(-1)!;
  t.equal(p.transport, 'tls');
  if (p.transport === 'tls') t.same([p.identity.name, p.identity.role, p.identity.dns], ['ctl1', 'controller', []]);
});

t.test('the Unix socket: the call succeeds, the handler sees a local client', async (t) => {
  const r = await check(client(nodeChannel(unixEndpoint(s1.unixPath!, 's1'))));
  t.equal(r.transport, 'unix');
  t.equal(r.peer, '');
  t.equal(seen.at(-1)?.transport, 'unix');
});

t.test('a client without a certificate is refused in the handshake', async (t) => {
  const { ca } = ctl(dir, 'ctl1');
  const c = new HealthClient(s1Addr, grpc.credentials.createSsl(ca), { 'grpc.ssl_target_name_override': 's1', 'grpc.use_local_subchannel_pool': 1 });
  clients.push(c);
  const e = await refused(t, c);
  t.equal(e.code, grpc.status.UNAVAILABLE);
  t.match(e.details, /certificate required|Failed to connect/, `details: ${e.details}`);
  t.same(refusedLog.length, 0, 'it never got as far as the gate');
});

t.test('a client certificate from another CA is refused; the error names the controller', async (t) => {
  // trusts the right CA (so it accepts s1), presents a certificate of the rogue CA
  const rogue = { ...ctl(otherDir, 'ctl1'), ca: ctl(dir, 'ctl1').ca };
  const ch = nodeChannel(tlsEndpoint('s1', s1Addr, rogue));
  const e = await refused(t, client(ch));
  const m = ch.connectionError(e);
  t.type(m, NodeRefusedCertificateError);
  t.ok(m instanceof NodeConnectionError);
  t.equal(m?.code, grpc.status.UNAVAILABLE);
  t.equal(m?.presented, 'ctl1');
  t.equal(m?.target, s1Addr);
  t.match(m?.message, new RegExp(`^node s1 at ${s1Addr.replace(/\./g, '\\.')} .*certificate of controller 'ctl1' \\(UNAVAILABLE`));
  t.equal(m?.cause, e, 'carries the grpc error');
});

t.test('a plain-text client to the TLS port is refused', async (t) => {
  const c = new HealthClient(s1Addr, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  clients.push(c);
  const e = await refused(t, c);
  t.equal(e.code, grpc.status.UNAVAILABLE);
  // and raw bytes (an HTTP/2 preface without TLS) get no HTTP/2 answer
  const answer = await new Promise<string>((resolve) => {
    const [host, port] = s1Addr.split(':');
    const s = net.connect(Number(port), host!, () => s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('close', () => resolve(got));
    s.on('error', () => undefined);
    setTimeout(() => s.destroy(), 2000);
  });
  t.notMatch(answer, /PRI|HTTP\/2/, 'no HTTP/2 from the TLS port to a plain-text client');
});

t.test('a valid certificate not on the allow-list: PERMISSION_DENIED naming it', async (t) => {
  const ch = nodeChannel(tlsEndpoint('s1', s1Addr, ctl(dir, 'ctl2')));
  const n = refusedLog.length;
  const e = await refused(t, client(ch));
  t.equal(e.code, grpc.status.PERMISSION_DENIED);
  t.match(e.details, /node s1 does not accept controller 'ctl2' \(issued by 'sharp-ca', SHA-256 [0-9A-F:]+…\): not on its list of controllers/);
  const m = ch.connectionError(e);
  t.type(m, NodePermissionDeniedError);
  t.equal(m?.presented, 'ctl2');
  t.equal(m?.code, grpc.status.PERMISSION_DENIED);
  t.match(m?.message, new RegExp(`^node s1 at ${s1Addr.replace(/\./g, '\\.')} refused controller 'ctl2' \\(PERMISSION_DENIED: `));
  t.equal(refusedLog.length, n + 1, 'the server reported the refusal');
  t.equal(refusedLog.at(-1)?.identity?.name, 'ctl2');
  t.equal(refusedLog.at(-1)?.method, '/sharpt.health.v1.Health/Check');

  // a node's certificate (it has clientAuth) is not a controller either
  const asNode = nodeChannel(tlsEndpoint('s1', s1Addr, loadTls(nodeTlsFiles(dir, 'vnf1'), 'client')));
  const e2 = await refused(t, client(asNode));
  t.equal(e2.code, grpc.status.PERMISSION_DENIED);
  t.match(e2.details, /does not accept node 'vnf1'/);
});

t.test("the server's certificate names another node: the error names both", async (t) => {
  const vnf1 = await startNodeServer({ node: 'vnf1', services: [healthService((p) => seen.push(p))], tcp: { address: '127.0.0.1:0', tls: loadTls(nodeTlsFiles(dir, 'vnf1'), 'server') } });
  servers.push(vnf1);
  const ch = nodeChannel(tlsEndpoint('s1', vnf1.tcpAddress!, ctl(dir, 'ctl1')));
  const e = await refused(t, client(ch));
  const m = ch.connectionError(e);
  t.type(m, NodeIdentityMismatchError);
  t.equal(m?.expected, 's1');
  t.match(m?.presented, /vnf1/);
  t.match(m?.message, /^node s1 at 127\.0\.0\.1:\d+: the server's certificate names 'vnf1', '127\.0\.0\.1', expected 's1' \(UNAVAILABLE\)$/);
});

t.test("a node certificate from another CA is not trusted", async (t) => {
  const fake = await startNodeServer({ node: 's1', services: [healthService((p) => seen.push(p))], tcp: { address: '127.0.0.1:0', tls: loadTls(nodeTlsFiles(otherDir, 's1'), 'server') } });
  servers.push(fake);
  const ch = nodeChannel(tlsEndpoint('s1', fake.tcpAddress!, ctl(dir, 'ctl1')));
  const m = ch.connectionError(await refused(t, client(ch)));
  t.type(m, NodeUntrustedError);
  t.match(m?.message, /^node s1 at 127\.0\.0\.1:\d+ presented a certificate not signed by the controller's CA 'sharp-ca' \(UNAVAILABLE: /);
});

t.test('nothing listening: unreachable, naming the target', async (t) => {
  const free = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const ch = nodeChannel(tlsEndpoint('s1', `127.0.0.1:${free}`, ctl(dir, 'ctl1')));
  const m = ch.connectionError(await refused(t, client(ch)));
  t.type(m, NodeUnreachableError);
  t.equal(m?.message, `node s1 at 127.0.0.1:${free} is unreachable (UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:${free})`);
  const u = nodeChannel(unixEndpoint(path.join(dir, 'none.sock'), 's1'));
  t.type(u.connectionError(await refused(t, client(u))), NodeUnreachableError);
});

t.test('a listener that never completes a handshake: unreachable before the deadline', async (t) => {
  const held: net.Socket[] = [];
  const mute = net.createServer((s) => held.push(s)).listen(0, '127.0.0.1');
  await new Promise((r) => mute.once('listening', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    mute.close();
  });
  const addr = `127.0.0.1:${(mute.address() as net.AddressInfo).port}`;
  const ch = nodeChannel(tlsEndpoint('s1', addr, ctl(dir, 'ctl1')));
  const c = client(ch);
  const e = await check(c, 500).then(
    () => undefined,
    (err: unknown) => err as grpc.ServiceError,
  );
  c.close();
  t.equal(e?.code, grpc.status.DEADLINE_EXCEEDED);
  const m = ch.connectionError(e);
  t.type(m, NodeUnreachableError);
  t.match(m?.message, new RegExp(`^node s1 at ${addr} did not complete a connection before the deadline \\(DEADLINE_EXCEEDED: Deadline exceeded`));
});

t.test('application errors are not connection errors', async (t) => {
  const ch = nodeChannel(tlsEndpoint('s1', s1Addr, ctl(dir, 'ctl1')));
  const e = Object.assign(new Error('3 INVALID_ARGUMENT: bad rule'), { code: grpc.status.INVALID_ARGUMENT, details: 'bad rule', metadata: new grpc.Metadata() });
  t.equal(ch.connectionError(e), undefined);
  t.equal(ch.connectionError(new Error('not grpc')), undefined);
  t.throws(() => ch.rethrow(e), e);
});

t.test('Unix socket: a live server is refused, a stale socket replaced, a non-socket kept', async (t) => {
  await t.rejects(startNodeServer({ node: 'x', services: [], unix: { path: s1.unixPath! } }), SocketInUseError);
  t.ok(existsSync(s1.unixPath!), "s1's socket is untouched");
  t.equal((await check(client(nodeChannel(unixEndpoint(s1.unixPath!))))).transport, 'unix', 's1 still serves on it');

  // a stale socket: bound by a server that is gone (closing a net server would unlink it)
  const stale = path.join(dir, 'stale', 'node.sock');
  mkdirSync(path.dirname(stale), { mode: 0o700 });
  const r = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
  t.equal(r.signal, 'SIGKILL');
  t.ok(statSync(stale).isSocket(), 'a stale socket is left');
  const s = await startNodeServer({ node: 'stale', services: [healthService(() => undefined)], unix: { path: stale } });
  t.equal((await check(client(nodeChannel(unixEndpoint(stale))))).status, 'SERVING');
  await s.close();
  t.notOk(existsSync(stale), 'close removes the socket');

  const file = path.join(dir, 'not-a-socket');
  writeFileSync(file, 'keep me');
  await t.rejects(startNodeServer({ node: 'x', services: [], unix: { path: file } }), SocketPathError);
  t.ok(existsSync(file), 'a regular file is not removed');
  await t.rejects(startNodeServer({ node: 'x', services: [], unix: { path: path.join(dir, 'x'.repeat(120)) } }), SocketPathError);
  await t.rejects(startNodeServer({ node: 'x', services: [] }), ListenError);
  await t.rejects(startNodeServer({ node: 'x', services: [], tcp: { address: 'localhost', tls: loadTls(nodeTlsFiles(dir, 's1'), 'server') } }), ListenError);
});

t.test('loadTls checks the material before any connection', async (t) => {
  t.throws(() => loadTls(controllerTlsFiles(dir, 'ctl1'), 'server'), { name: 'CertificateFileError', message: /controller 'ctl1' .* is not for server use \(it lacks serverAuth\)/ });
  t.throws(() => loadTls({ ...controllerTlsFiles(dir, 'ctl1'), key: controllerTlsFiles(dir, 'ctl2').key }, 'client'), { name: 'CertificateFileError', message: /controller-ctl2\.key is not the key of .*controller-ctl1\.crt/ });
  t.throws(() => loadTls({ ...controllerTlsFiles(otherDir, 'ctl1'), ca: controllerTlsFiles(dir, 'ctl1').ca }, 'client'), { name: 'CertificateFileError', message: /controller 'ctl1' .* was not issued by .*ca\.crt \('sharp-ca'\); it names issuer 'rogue-ca'/ });
  t.throws(() => loadTls({ ...nodeTlsFiles(dir, 's1'), ca: nodeTlsFiles(dir, 's1').cert }, 'server'), CertificateFileError);
  t.throws(() => loadTls({ ...nodeTlsFiles(dir, 'nobody') }, 'server'), { name: 'CertificateFileError', message: /cannot read certificate .*node-nobody\.crt/ });
});

t.test('a node server in a child process: mTLS and the Unix socket reach it, refused clients reach no handler', async (t) => {
  const sock = path.join(dir, 'child', 'node.sock');
  const c = await spawnServer({ node: 's1', certDir: dir, tcp: '127.0.0.1:0', unix: sock, allow: ['ctl1'] });
  children.push(c);
  t.not(c.ready.pid, process.pid);
  const addr = c.ready.tcpAddress!;
  const ok = await check(client(nodeChannel(tlsEndpoint('s1', addr, ctl(dir, 'ctl1')))));
  t.same([ok.transport, ok.peer, ok.role], ['tls', 'ctl1', 'controller']);
  t.equal((await check(client(nodeChannel(unixEndpoint(c.ready.unixPath!, 's1'))))).transport, 'unix');
  // the child writes its lines asynchronously: wait for both calls
  for (let i = 0; i < 100 && c.calls.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
  t.same(c.calls, [
    { transport: 'tls', peer: 'ctl1' },
    { transport: 'unix', peer: '' },
  ]);
  const count = (): number => c.calls.length;
  const { ca } = ctl(dir, 'ctl1');
  const noCert = new HealthClient(addr, grpc.credentials.createSsl(ca), { 'grpc.ssl_target_name_override': 's1', 'grpc.use_local_subchannel_pool': 1 });
  clients.push(noCert);
  await refused(t, noCert, count);
  await refused(t, client(nodeChannel(tlsEndpoint('s1', addr, { ...ctl(otherDir, 'ctl1'), ca }))), count);
  const plain = new HealthClient(addr, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  clients.push(plain);
  await refused(t, plain, count);
  const denied = nodeChannel(tlsEndpoint('s1', addr, ctl(dir, 'ctl2')));
  t.type(denied.connectionError(await refused(t, client(denied), count)), NodePermissionDeniedError);
  for (let i = 0; i < 100 && c.refused.length < 1; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(c.refused.length, 1, 'the gate refused ctl2 (the others never completed a handshake)');
  t.equal(c.refused[0]?.code, grpc.status.PERMISSION_DENIED);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(c.calls.length, 2, 'still only the two accepted calls reached the handler');
  await c.stop();
  t.notOk(existsSync(sock), 'the child removed its socket on exit');
});
