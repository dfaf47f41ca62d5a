// The node API's framed control channel, on real sockets in front of the
// fake data plane: a client that learns the channel from Health makes its
// unary calls there (a node whose gRPC lacks a method still answers it), a
// handover through it is lossless, failures carry the same status and
// error class as over gRPC, mutual TLS and the gRPC gate decide who may
// call, a request read after its deadline changes nothing, bad frames are
// refused, and a channel that cannot be reached leaves the calls on gRPC.
import t, { type Test } from 'tap';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { NODE_API, NODE_SERVICE, type NodeHealth, type NodeMethod } from '../../src/node/api.js';
import { nodeService, type NodeRuntime } from '../../src/node/service.js';
import { NodeCallError, NodeClient, NodeDeployment } from '../../src/node/client.js';
import { controllerTlsFiles, createCa, createControllerCert, createNodeCert, loadTls, nodeChannel, nodeTlsFiles, startNodeServer, tlsEndpoint, unixEndpoint, type NodeServer, type RefusedCall } from '../../src/node/transport/index.js';
import { FRAMED_CONNECT_TIMEOUT_MS, FramedLink } from '../../src/node/transport/frames.js';
import { MAX_FRAME_BYTES } from '../../src/net/frames.js';
import { Phase, RuleError, type SwitchControl } from '../../src/dataplane/types.js';
import { HandoverEngine } from '../../src/handover/engine.js';
import { VnfMapStateMover } from '../../src/handover/state-mover.js';
import { FakeDeployment } from '../helpers/fake-deployment.js';
import { fakeNodeHealth } from '../helpers/fake-node-health.js';

const UDP = 17;
const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-frames-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
await createCa(dir);
await createNodeCert(dir, 'swnode', { ips: ['127.0.0.1'] });
await createControllerCert(dir, 'ctl1');
await createControllerCert(dir, 'ctl2');

interface Served {
  d: FakeDeployment;
  server: NodeServer;
  observed: string[];
  rules: number[];
}

/**
 * A switch node (and, with `agents`, its instances) over the fake data
 * plane, serving gRPC and the framed channel; `without`: rpcs its gRPC
 * service lacks (the framed channel still has them).
 */
async function serve(t: Test, o: { name: string; tcp?: boolean; without?: readonly NodeMethod[]; allow?: string[]; onRefused?: (r: RefusedCall) => void; framesUnix?: string; advertisePort?: number }): Promise<Served> {
  const d = new FakeDeployment(['vnf1', 'vnf2'], 1024);
  const fwd = await d.switchControl.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 9000, proto: UDP } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  const rev = await d.switchControl.addRule({ switch: 's2', match: { kind: 'exact', flow: { src: '10.0.0.2', dst: '10.0.0.1', sport: 9000, dport: 1000, proto: UDP } }, action: { outPort: 's2-vnf1', phase: Phase.NONE, handoverId: 0 } });
  for (let i = 0; i < 10; i++) d.tick();
  const observed: string[] = [];
  const sc = d.switchControl;
  let server: NodeServer | undefined;
  const health = (): NodeHealth => ({
    ...fakeNodeHealth(d, o.name, { switches: true, instances: true }),
    ...(server === undefined ? {} : { frames: { ...(server.framesUnixPath === undefined ? {} : { unix: server.framesUnixPath }), ...(server.framesTcpPort === undefined ? {} : { port: o.advertisePort ?? server.framesTcpPort }) } }),
  });
  const switchControl = Object.assign(Object.create(sc) as SwitchControl, { controllerDataPackets: async () => ({ packets: 0n, bytes: 0n }) });
  const rt: NodeRuntime = { health, switchControl, agents: { ...d.agentControl, ...d.vnfState }, observe: (m, code) => void observed.push(`${m} ${code}`) };
  const service = nodeService(rt);
  const definition = Object.fromEntries(Object.entries(NODE_SERVICE).filter(([m]) => !(o.without ?? []).includes(m as NodeMethod))) as grpc.ServiceDefinition;
  const sock = path.join(dir, `${o.name}.sock`);
  server = await startNodeServer({
    node: o.name,
    services: [{ definition, implementation: service.implementation }],
    ...(o.tcp === true ? { tcp: { address: '127.0.0.1:0', tls: loadTls(nodeTlsFiles(dir, 'swnode'), 'server') } } : { unix: { path: sock } }),
    frames: { handler: service.framed, service: `${NODE_API}.Node`, ...(o.tcp === true ? { tcp: '127.0.0.1:0' } : { unix: o.framesUnix ?? `${sock}.frames` }) },
    ...(o.allow === undefined ? {} : { allowControllers: o.allow }),
    ...(o.onRefused === undefined ? {} : { onRefused: o.onRefused }),
  });
  const srv = server;
  t.teardown(() => srv.close(0));
  return { d, server, observed, rules: [fwd.id, rev.id] };
}

async function unixClient(t: Test, s: Served, frames = true): Promise<NodeClient> {
  const c = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(s.server.unixPath!, 'n')), frames });
  t.teardown(() => c.close());
  return c;
}

t.test('a client learns the framed channel from Health and makes its calls there: a method the gRPC service lacks still works', async (t) => {
  const s = await serve(t, { name: 'fr1', without: ['AddRule', 'SetRuleActions', 'PortCounters'] });
  t.equal(statSync(s.server.framesUnixPath!).mode & 0o777, 0o600, 'the framed socket is 0600');
  const c = await unixClient(t, s);
  t.equal(c.transport, 'frames');
  const r = await c.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.9', dst: '10.0.0.2', sport: 1, dport: 2, proto: UDP } }, action: { outPort: 's1-vnf2', phase: Phase.NONE, handoverId: 0 } });
  t.same(s.d.switchControl.getRule(r.id)?.action.outPort, 's1-vnf2', 'the rule is in the data plane');
  t.ok(s.observed.includes('AddRule OK'), "the node's metrics count it as any call");
  // the same client over gRPC only: the node's gRPC has no AddRule
  const g = await unixClient(t, s, false);
  t.equal(g.transport, 'grpc');
  t.match(g.transportNote ?? '', /turned off/);
  await t.rejects(g.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.8', dst: '10.0.0.2', sport: 1, dport: 2, proto: UDP } }, action: { outPort: 's1-vnf2', phase: Phase.NONE, handoverId: 0 } }), { code: grpc.status.UNIMPLEMENTED }, 'over gRPC the call is UNIMPLEMENTED: the framed one did not go there');
});

t.test('a handover through the framed channel is lossless, its calls batched as over gRPC', async (t) => {
  const s = await serve(t, { name: 'fr2' });
  const c = await unixClient(t, s);
  t.equal(c.transport, 'frames');
  const nd = new NodeDeployment([c]);
  const engine = new HandoverEngine(nd, { mover: new VnfMapStateMover() });
  s.d.start();
  const r = await engine.handover({ rules: s.rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  s.d.stop();
  for (let i = 0; i < 5; i++) s.d.tick();
  t.equal(r.outcome, 'completed', r.reason ?? '');
  const rep = s.d.report();
  t.same({ lost: rep.lost, reordered: rep.reordered, duplicated: rep.duplicated, delivered: rep.delivered }, { lost: 0, reordered: 0, duplicated: 0, delivered: rep.sent }, `nothing lost, reordered or duplicated (${rep.sent} frames)`);
  t.ok((c.calls.get('Batch') ?? 0) >= 1, 'short calls went as Batches');
  for (const id of s.rules) t.equal(s.d.switchControl.getRule(id)!.action.outPort, `${s.d.switchControl.getRule(id)!.switch}-vnf2`, `rule ${id} at vnf2`);
});

t.test('failures carry the status and error class they have over gRPC', async (t) => {
  const s = await serve(t, { name: 'fr3' });
  const f = await unixClient(t, s);
  const g = await unixClient(t, s, false);
  const bad = { switch: 's1', match: { kind: 'exact' as const, flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 9000, proto: UDP } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } };
  const [ef, eg] = await Promise.all([f.deleteRule(999).catch((e: unknown) => e), g.deleteRule(999).catch((e: unknown) => e)]);
  t.ok(ef instanceof RuleError && eg instanceof RuleError, 'the data plane refused a rule: RuleError both ways');
  t.equal((ef as Error).message, (eg as Error).message, `the same message: ${(ef as Error).message}`);
  const [nf, ng] = await Promise.all([f.setRuleAction(999, bad.action).catch((e: unknown) => e), g.setRuleAction(999, bad.action).catch((e: unknown) => e)]);
  t.ok(nf instanceof NodeCallError && ng instanceof NodeCallError && nf.code === grpc.status.NOT_FOUND && ng.code === grpc.status.NOT_FOUND, 'an unknown rule: NOT_FOUND both ways');
  t.equal((nf as Error).message, (ng as Error).message);
  const [af, ag] = await Promise.all([f.armNew('vnf2', 9, 99).catch((e: unknown) => e), g.armNew('vnf2', 9, 99).catch((e: unknown) => e)]);
  t.ok(af instanceof NodeCallError && af.code === grpc.status.INVALID_ARGUMENT && /ring 99 out of range/.test(af.message), `a field out of range names it: ${(af as Error).message}`);
  t.equal((af as Error).message, (ag as Error).message);
});

t.test('mutual TLS: the node is checked by name, the gate decides as on gRPC, a client without a certificate never gets in', async (t) => {
  const refused: RefusedCall[] = [];
  const s = await serve(t, { name: 'swnode', tcp: true, allow: ['ctl1'], onRefused: (r) => refused.push(r) });
  const port = s.server.framesTcpPort!;
  t.ok(port > 0 && port !== s.server.tcpPort, `a port of its own (${port})`);
  const ctl1 = loadTls(controllerTlsFiles(dir, 'ctl1'), 'client');
  const c = await NodeClient.connect({ channel: nodeChannel(tlsEndpoint('swnode', s.server.tcpAddress!, ctl1)) });
  t.teardown(() => c.close());
  t.equal(c.transport, 'frames');
  t.same((await c.ruleCounters(s.rules[0]!)).packets >= 0n, true, 'ctl1 calls over the framed channel');
  const before = s.observed.length;

  // ctl2: signed by the CA, not on the node's list
  const ctl2 = loadTls(controllerTlsFiles(dir, 'ctl2'), 'client');
  const l2 = new FramedLink({ host: '127.0.0.1', port, node: 'swnode', tls: ctl2 });
  t.teardown(() => l2.close());
  const e2 = await l2.call('ListRules', Buffer.alloc(0), Date.now() + 5000).catch((e: grpc.ServiceError) => e);
  t.equal((e2 as grpc.ServiceError).code, grpc.status.PERMISSION_DENIED);
  t.match((e2 as grpc.ServiceError).details, /does not accept controller 'ctl2'.*not on its list of controllers/);
  t.ok(refused.some((r) => r.method === `/${NODE_API}.Node/ListRules` && r.identity?.name === 'ctl2'), 'the refusal is logged with the identity');

  // the node's certificate must name the node the client asked for
  const wrong = new FramedLink({ host: '127.0.0.1', port, node: 'othernode', tls: ctl1 });
  t.teardown(() => wrong.close());
  const ew = await wrong.call('Health', Buffer.alloc(0), Date.now() + 5000).catch((e: grpc.ServiceError & { notSent?: boolean }) => e);
  t.equal((ew as grpc.ServiceError).code, grpc.status.UNAVAILABLE);
  t.match((ew as grpc.ServiceError).details, /certificate names 'swnode', expected 'othernode'/);
  t.equal((ew as { notSent?: boolean }).notSent, true, 'the request never left');

  // no client certificate: the handshake fails, nothing reaches a handler
  const noCert = await new Promise<string>((resolve) => {
    const tls = ctl1;
    import('node:tls').then(({ connect }) => {
      const sk = connect({ host: '127.0.0.1', port, ca: tls.ca, servername: 'swnode', minVersion: 'TLSv1.3' });
      sk.on('secureConnect', () => sk.write(Buffer.from([0, 0, 0, 6, 0, 0, 0, 0, 1, 0])));
      sk.on('error', (e) => resolve(`error ${e.message}`));
      sk.on('close', () => resolve('closed'));
    }, (e: unknown) => resolve(String(e)));
  });
  t.match(noCert, /closed|certificate required|alert/, `without a certificate: ${noCert}`);
  t.equal(s.observed.length, before, 'no refused client reached a handler');
});

t.test('a request read after its deadline changes nothing', async (t) => {
  const s = await serve(t, { name: 'fr5' });
  const link = new FramedLink({ unix: s.server.framesUnixPath! });
  t.teardown(() => link.close());
  const def = NODE_SERVICE['SetRuleAction']!;
  const body = def.requestSerialize({ id: s.rules[0], action: { out_port: 's1-vnf2', phase: 0, handover_id: 0 } });
  // a deadline by the caller's clock 5 s ago (the node allows 1 s of skew); the link's own timer gets a second
  const late = await new Promise<grpc.ServiceError | Buffer>((resolve) => {
    link.call('SetRuleAction', body, Date.now() - 5000).then(resolve, resolve);
  });
  t.equal((late as grpc.ServiceError).code, grpc.status.DEADLINE_EXCEEDED);
  t.equal(s.d.switchControl.getRule(s.rules[0]!)!.action.outPort, 's1-vnf1', 'the rule still sends to vnf1');
  // the node's own answer, read from the socket: the request was refused there, not just timed out here
  const raw = await rawCall(s.server.framesUnixPath!, 'SetRuleAction', body, Date.now() - 5000);
  t.match(raw, /"code":4.*not carried out: its deadline \(by the caller's clock\) passed/);
  t.equal(s.d.switchControl.getRule(s.rules[0]!)!.action.outPort, 's1-vnf1', 'still vnf1');
});

/** One request written by hand; resolves with the answer frame's body as text. */
function rawCall(sock: string, method: string, body: Buffer, deadline: number, header?: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const s = net.createConnection(sock);
    const name = Buffer.from(method);
    const d = Buffer.alloc(8);
    d.writeDoubleBE(deadline);
    const payload = Buffer.concat([Buffer.from([name.length]), name, d, body]);
    const h = header ?? Buffer.alloc(10);
    if (header === undefined) {
      h.writeUInt32BE(6 + payload.length, 0);
      h[4] = 0;
      h.writeUInt32BE(7, 5);
      h[9] = 0;
    }
    let got = Buffer.alloc(0);
    s.on('data', (c) => {
      got = Buffer.concat([got, c]);
      if (got.length >= 4 && got.length >= 4 + got.readUInt32BE(0)) {
        s.destroy();
        resolve(got.subarray(10).toString());
      }
    });
    s.on('close', () => resolve(got.length === 0 ? 'closed' : got.subarray(10).toString()));
    s.on('error', () => undefined);
    s.write(header === undefined ? Buffer.concat([h, payload]) : h);
  });
}

t.test('bad frames: an unknown method is UNIMPLEMENTED, a malformed request INVALID_ARGUMENT, an oversize length closes the connection', async (t) => {
  const s = await serve(t, { name: 'fr6' });
  const sock = s.server.framesUnixPath!;
  t.match(await rawCall(sock, 'Capture', Buffer.alloc(0), Date.now() + 5000), /"code":12.*no unary method Capture/, 'a stream is not on the framed channel');
  t.match(await rawCall(sock, 'NoSuchMethod', Buffer.alloc(0), Date.now() + 5000), /"code":12/);
  t.match(await rawCall(sock, 'AddRule', Buffer.from([0xff, 0xff, 0xff]), Date.now() + 5000), /"code":3.*cannot be decoded/, 'a request that does not decode');
  const huge = Buffer.alloc(10);
  huge.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
  t.equal(await rawCall(sock, 'Health', Buffer.alloc(0), 0, huge), 'closed', `a frame over ${MAX_FRAME_BYTES} bytes: the connection is closed`);
  t.equal(s.d.switchControl.rules().length, 2, 'no rule was added by any of them');
});

t.test('a framed channel that cannot be reached: the call goes over gRPC, and the client says why', async (t) => {
  const s = await serve(t, { name: 'fr7' });
  // Health still names the socket; nothing listens there any more
  unlinkSync(s.server.framesUnixPath!);
  const c = await unixClient(t, s);
  t.equal(c.rules().length, 2, 'the rule table was read (its ListRules went over gRPC)');
  const r = await c.ruleCounters(s.rules[0]!);
  t.ok(r.packets >= 0n, 'the call was answered');
  t.equal(c.transport, 'grpc');
  t.match(c.transportNote ?? '', /could not be reached.*gRPC until the node's Health names one that answers/);
});

t.test("a node config's listen.frames: given, turned off, or refused naming the field", async (t) => {
  const { validateNodeConfig } = await import('../../src/node/config.js');
  const base = { name: 'fr8', instances: [{ name: 'vnf1', kind: 'counter', ifaces: ['eth0', 'eth1'] }] };
  const tls = { ca: 'ca.crt', cert: 'n.crt', key: 'n.key' };
  t.same(validateNodeConfig({ ...base, listen: { unix: '/run/x.sock', tcp: '10.0.0.1:7441', frames: { tcp: '10.0.0.1:7442' } }, tls }).listen.frames, { tcp: '10.0.0.1:7442' });
  t.equal(validateNodeConfig({ ...base, listen: { unix: '/run/x.sock', frames: false } }).listen.frames, false, 'false: no framed channel');
  const problems = (listen: unknown, withTls = false): string => {
    try {
      validateNodeConfig({ ...base, listen, ...(withTls ? { tls } : {}) });
    } catch (e) {
      return (e as Error).message;
    }
    return 'accepted';
  };
  t.match(problems({ unix: '/run/x.sock', frames: { tcp: '10.0.0.1:7442' } }), /listen\.frames\.tcp: .*give listen\.tcp/, 'framed TCP needs the API on TCP (its mutual TLS)');
  t.match(problems({ unix: '/run/x.sock', tcp: '10.0.0.1:7441', frames: { tcp: '10.0.0.1:7441' } }, true), /listen\.frames\.tcp: 10\.0\.0\.1:7441 is the gRPC address/);
  t.match(problems({ unix: '/run/x.sock', frames: { unix: '/run/x.sock' } }), /listen\.frames\.unix: \/run\/x\.sock is the gRPC socket/);
  t.match(problems({ unix: '/run/x.sock', frames: { port: 1 } }), /listen/, 'an unknown field is refused');
  t.match(problems({ unix: '/run/x.sock', frames: true }), /listen/, 'true is not a value: give the addresses, or false');
});

t.test('a node restarted with its framed channel elsewhere: one call over gRPC, then the client finds the new channel in Health', async (t) => {
  const first = await serve(t, { name: 'fr9' });
  const c = await unixClient(t, first);
  t.equal(c.transport, 'frames');
  await first.server.close(0);
  // (a call racing the stop itself may have been written before the connection closed: UNAVAILABLE, not sent again)
  await new Promise((r) => setTimeout(r, 50));
  // the restarted node: the same gRPC socket, its framed socket at another path, and no RuleCounters on gRPC
  const again = await serve(t, { name: 'fr9', framesUnix: path.join(dir, 'fr9.sock.frames2'), without: ['RuleCounters'] });
  const ports = await c.portCounters('s1');
  t.ok(ports.length > 0, 'the call after the restart is answered (over gRPC: the old framed socket is gone)');
  for (let i = 0; i < 100 && c.transport !== 'frames'; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(c.transport, 'frames', "the node's Health named the new channel");
  t.ok((await c.ruleCounters(again.rules[0]!)).packets >= 0n, 'a call gRPC lacks is answered: it went on the new framed channel');
});

t.test('a framed port that never completes a connection (a firewall): no call waits past the connect timeout, and the calls stay on gRPC', async (t) => {
  // accepts TCP, never answers the TLS handshake
  const sockets: net.Socket[] = [];
  const blackhole = net.createServer((s) => void sockets.push(s));
  await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    blackhole.close();
  });
  const s = await serve(t, { name: 'swnode', tcp: true, advertisePort: (blackhole.address() as net.AddressInfo).port });
  const ctl1 = loadTls(controllerTlsFiles(dir, 'ctl1'), 'client');
  const t0 = Date.now();
  const c = await NodeClient.connect({ channel: nodeChannel(tlsEndpoint('swnode', s.server.tcpAddress!, ctl1)) });
  t.teardown(() => c.close());
  const took = Date.now() - t0;
  t.equal(c.rules().length, 2, 'the rule table was read');
  t.ok(took < FRAMED_CONNECT_TIMEOUT_MS + 3000, `connected in ${took} ms (the framed connect gives up after ${FRAMED_CONNECT_TIMEOUT_MS} ms)`);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(c.transport, 'grpc', 'Health names the same port again: the client stays on gRPC');
  t.match(c.transportNote ?? '', new RegExp(`no connection within ${FRAMED_CONNECT_TIMEOUT_MS} ms`));
  const t1 = Date.now();
  await c.portCounters('s1');
  t.ok(Date.now() - t1 < FRAMED_CONNECT_TIMEOUT_MS, 'the next call does not try the port again');
});

t.test('a client told where the framed channel is (a state peer) makes even its first call, Health, there; a wrong hint falls back to gRPC', async (t) => {
  const s = await serve(t, { name: 'fr10', without: ['Health'] });
  const hinted = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(s.server.unixPath!, 'fr10')), readRules: false, framesHint: { unix: s.server.framesUnixPath! } });
  t.teardown(() => hinted.close());
  t.equal(hinted.name, 'fr10', "Health answered although the node's gRPC has none: it went on the framed channel");
  t.equal(hinted.transport, 'frames');
  const s2 = await serve(t, { name: 'fr11' });
  const wrong = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(s2.server.unixPath!, 'fr11')), readRules: false, framesHint: { unix: path.join(dir, 'nothing-here.sock') } });
  t.teardown(() => wrong.close());
  t.equal(wrong.name, 'fr11', 'a hint where nothing listens: Health over gRPC');
  for (let i = 0; i < 100 && wrong.transport !== 'frames'; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(wrong.transport, 'frames', "and the channel the node's Health names after that");
});
