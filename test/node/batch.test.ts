// The node path's round trips, over real gRPC on Unix sockets in front of
// the fake data plane (no BPF): a handover through a switch node and an
// agent node is lossless with the calls made to one node at once sent as
// one Batch, the route writes bringing back the switches' counts
// and the handover's marks (SetRuleActions then_sent_towards,
// then_marks_of) and no port count read a second time;
// a Batch runs its calls as if alone (each its own status, what comes
// before a refused one done); a bad Batch changes nothing; a client falls
// back to single calls against a node without Batch.
import t, { type Test } from 'tap';
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NODE_SERVICE, type NodeHealth, type NodeMethod } from '../../src/node/api.js';
import { MAX_RELEASE_TIMEOUT_MS, nodeHandlers, type NodeRuntime } from '../../src/node/service.js';
import { NodeCallError, NodeClient, NodeDeployment } from '../../src/node/client.js';
import { nodeChannel, startNodeServer, unixEndpoint, type NodeServer } from '../../src/node/transport/index.js';
import { MAX_RELEASE_FRAMES, Phase, type AgentControl, type SwitchControl, type VnfStateStore } from '../../src/dataplane/types.js';
import { HandoverEngine, type HandoverResult } from '../../src/handover/engine.js';
import { VnfMapStateMover } from '../../src/handover/state-mover.js';
import { FakeDeployment } from '../helpers/fake-deployment.js';
import { fakeNodeHealth } from '../helpers/fake-node-health.js';

const UDP = 17;

const switchHealth = (d: FakeDeployment): NodeHealth => fakeNodeHealth(d, 'swnode', { switches: true, instances: false });
const agentHealth = (d: FakeDeployment): NodeHealth => fakeNodeHealth(d, 'agnode', { switches: false, instances: true, quiescenceMs: 1 });

/** A node serving `rt` on a Unix socket in `dir`; `without`: rpcs it answers UNIMPLEMENTED (an older node). */
async function serve(t: Test, dir: string, name: string, rt: NodeRuntime, without: readonly NodeMethod[] = []): Promise<string> {
  const sock = path.join(dir, `${name}.sock`);
  const impl = nodeHandlers(rt);
  const definition = Object.fromEntries(Object.entries(NODE_SERVICE).filter(([m]) => !without.includes(m as NodeMethod))) as grpc.ServiceDefinition;
  const server: NodeServer = await startNodeServer({ node: name, services: [{ definition, implementation: impl }], unix: { path: sock } });
  t.teardown(() => server.close(0));
  return sock;
}

async function lab(t: Test, o: { without?: readonly NodeMethod[] } = {}): Promise<{ d: FakeDeployment; rules: number[]; sw: NodeClient; ag: NodeClient; nd: NodeDeployment; observed: string[] }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-batch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const d = new FakeDeployment(['vnf1', 'vnf2'], 1024);
  const fwd = await d.switchControl.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 9000, proto: UDP } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  const rev = await d.switchControl.addRule({ switch: 's2', match: { kind: 'exact', flow: { src: '10.0.0.2', dst: '10.0.0.1', sport: 9000, dport: 1000, proto: UDP } }, action: { outPort: 's2-vnf1', phase: Phase.NONE, handoverId: 0 } });
  for (let i = 0; i < 10; i++) d.tick();
  const observed: string[] = [];
  const observe = (m: NodeMethod, code: string): void => void observed.push(`${m} ${code}`);
  const switchControl = Object.assign(Object.create(d.switchControl) as SwitchControl, { controllerDataPackets: async () => ({ packets: 0n, bytes: 0n }) });
  const agents = { ...d.agentControl, ...d.vnfState } as AgentControl & VnfStateStore;
  const swSock = await serve(t, dir, 'swnode', { health: () => switchHealth(d), switchControl, observe }, o.without);
  const agSock = await serve(t, dir, 'agnode', { health: () => agentHealth(d), agents, observe }, o.without);
  const sw = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(swSock, 'swnode')) });
  const ag = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(agSock, 'agnode')) });
  const nd = new NodeDeployment([sw, ag]);
  t.teardown(() => nd.close());
  return { d, rules: [fwd.id, rev.id], sw, ag, nd, observed };
}

const count = (m: ReadonlyMap<NodeMethod, number>, k: NodeMethod): number => m.get(k) ?? 0;

/** vnf1 → vnf2 while the fake sends frames; completed */
async function handoverUnderTraffic(t: Test, d: FakeDeployment, nd: NodeDeployment, rules: number[]): Promise<HandoverResult> {
  const engine = new HandoverEngine(nd, { mover: new VnfMapStateMover() });
  d.start();
  const r = await engine.handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 100 });
  d.stop();
  for (let i = 0; i < 5; i++) d.tick();
  t.equal(r.outcome, 'completed', r.reason ?? '');
  return r;
}

t.test('a handover through node processes: lossless, the calls to one node at once in one Batch, the route writes bring the counts back', async (t) => {
  const { d, rules, sw, ag, nd } = await lab(t);
  const r = await handoverUnderTraffic(t, d, nd, rules);
  const rep = d.report();
  t.same({ lost: rep.lost, reordered: rep.reordered, duplicated: rep.duplicated, delivered: rep.delivered }, { lost: 0, reordered: 0, duplicated: 0, delivered: rep.sent }, `nothing lost, reordered or duplicated (${rep.sent} frames)`);
  t.ok(r.waits.every((w) => w.by === 'event'), `every quiescence wait ended by the exact event (${r.waits.map((w) => w.by).join(', ')})`);
  for (const id of rules) t.same(nd.switchControl.getRule(id)!.action, { outPort: `${nd.switchControl.getRule(id)!.switch}-vnf2`, phase: Phase.NONE, handoverId: 0 }, `rule ${id} at vnf2, unmarked`);
  t.same([...d.armed('vnf1'), ...d.armed('vnf2')], [], 'no agent keeps the handover armed');
  // the agent node took arming (both arms, both arrivals, both interface drops) in one Batch; the switch node its resets and port counters in another
  t.ok(count(ag.calls, 'Batch') >= 1 && count(ag.batched, 'ArmNew') === 1 && count(ag.batched, 'ArmOld') === 1, 'both arms went in a Batch');
  t.equal(count(ag.calls, 'ArmNew') + count(ag.calls, 'ArmOld'), 0, 'no arm went alone');
  t.ok(count(sw.batched, 'ResetHandoverCounters') === 2 && count(sw.batched, 'PortCounters') >= 2, "the switch node's resets and port counters went in a Batch");
  // 3 routes (pre-mark, switch over, unmark), each one SetRuleActions; the only SentTowardsInstances is draining's wait (no route before it)
  t.equal(count(sw.calls, 'SetRuleActions'), 3, 'one SetRuleActions per route');
  t.equal(count(sw.calls, 'SentTowardsInstances') + count(sw.batched, 'SentTowardsInstances'), 0, "the ports are counted by the route replies only: draining's wait stands on the switch-over's counts, and no wait reads them again to check");
  t.same(r.waits.map((w) => [w.step, w.instances.join()]), [['pre-marking', 'vnf1'], ['switching', 'vnf1'], ['draining', 'vnf1'], ['cleaning', 'vnf2']], 'the four waits');
  t.equal(count(sw.calls, 'HandoverCounters') + count(sw.batched, 'HandoverCounters'), 0, 'the PRE and POST counts came with the switch-over and unmark writes');
  t.ok(r.counts.preSent > 0n && r.counts.preSent === r.counts.preSeen, `the PRE count (${r.counts.preSent}) is what A saw`);
  const post = (await d.switchControl.handoverCounters('s1', r.id)).post + (await d.switchControl.handoverCounters('s2', r.id)).post;
  t.ok(r.counts.postSent > 0n && r.counts.postSent === post && r.counts.postSent >= r.counts.held, `the POST count (${r.counts.postSent}) is final: what the switches count now, at least what B held (${r.counts.held})`);
});

t.test('a Batch runs its calls as if alone: each its own status, the ones before a refused one done; a bad Batch changes nothing', async (t) => {
  const { d, ag, sw, nd, rules, observed } = await lab(t);
  // one turn of the event loop: the three go as one Batch
  const [a, b, c] = await Promise.allSettled([ag.armOld('vnf1', 9), ag.armNew('vnf2', 9, 99), ag.armNew('vnf2', 9, 1)]);
  t.equal(count(ag.calls, 'Batch'), 1, 'one round trip');
  t.equal(a.status, 'fulfilled', 'the first applied');
  t.ok(b.status === 'rejected' && b.reason instanceof NodeCallError && b.reason.code === grpc.status.INVALID_ARGUMENT && /ring 99 out of range 0\.\.3 on vnf2/.test(b.reason.message), 'the bad one refused with its own status, naming the field and the limit');
  t.equal(c.status, 'fulfilled', 'the one after it applied');
  t.same(d.armed('vnf1'), [9], 'A armed');
  t.same(d.armed('vnf2'), [9], 'B armed once, in ring 1');
  t.ok(observed.includes('ArmNew INVALID_ARGUMENT') && observed.filter((o) => o === 'ArmNew OK').length === 1, "the node's metrics see each call by its method and status");
  const [x, y] = await Promise.allSettled([sw.setRuleAction(999, { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 }), sw.portCounters('s1')]);
  t.equal(count(sw.batched, 'SetRuleAction'), 1, 'the two went in a Batch');
  t.ok(x.status === 'rejected' && x.reason instanceof NodeCallError && x.reason.code === grpc.status.NOT_FOUND && /node swnode: SetRuleAction: no rule 999/.test(x.reason.message), 'an unknown rule: NOT_FOUND, named as alone');
  t.equal(y.status, 'fulfilled');

  // a raw Batch with a method it may not carry: refused whole, nothing run
  const raw = new grpc.Client(ag.target, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const def = NODE_SERVICE['Batch']!;
  const arm = NODE_SERVICE['ArmOld']!.requestSerialize({ instance: 'vnf1', handover_id: 10 });
  const err = await new Promise<grpc.ServiceError | null>((resolve) =>
    raw.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, { calls: [{ method: 'ArmOld', request: arm }, { method: 'Release', request: Buffer.alloc(0) }] }, (e) => resolve(e)),
  );
  t.equal(err?.code, grpc.status.INVALID_ARGUMENT);
  t.match(err?.details ?? '', /calls\.1\.method 'Release': not one a batch may carry/);
  t.same(d.armed('vnf1'), [9], 'the ArmOld before it was not run');
  const late = await new Promise<unknown>((resolve, reject) =>
    raw.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, { calls: [{ method: 'ArmOld', request: arm, deadline_ms: Date.now() - 60_000 }] }, (e, r) => (e ? reject(e) : resolve(r))),
  );
  t.equal(((late as { results: { code: number }[] }).results[0]!).code, grpc.status.DEADLINE_EXCEEDED, 'a call read after its own deadline is not carried out');
  t.same(d.armed('vnf1'), [9], 'nothing armed by it');

  // then_marks_of is a handover id: out of range refused before any update is applied
  const sra = NODE_SERVICE['SetRuleActions']!;
  const before = nd.switchControl.getRule(rules[0]!)!.action;
  const swRaw = new grpc.Client(sw.target, grpc.credentials.createInsecure());
  t.teardown(() => swRaw.close());
  const bad = await new Promise<grpc.ServiceError | null>((resolve) =>
    swRaw.makeUnaryRequest(sra.path, sra.requestSerialize, sra.responseDeserialize, { updates: [{ id: rules[0], action: { out_port: 's1-vnf2', phase: 0, handover_id: 0 } }], then_sent_towards: true, then_marks_of: 20000 }, (e) => resolve(e)),
  );
  t.equal(bad?.code, grpc.status.INVALID_ARGUMENT);
  t.match(bad?.details ?? '', /then_marks_of 20000 out of range 1\.\.16383/);
  t.same(d.switchControl.getRule(rules[0]!)!.action, before, 'the rule is as it was');
});

t.test('an older node (no Batch): the client sends the calls one by one, and reads the counts after a write itself', async (t) => {
  const { d, rules, sw, ag, nd } = await lab(t, { without: ['Batch'] });
  await handoverUnderTraffic(t, d, nd, rules);
  t.equal(d.report().lost, 0, 'nothing lost');
  t.equal(count(ag.batched, 'ArmNew') + count(sw.batched, 'ResetHandoverCounters'), 0, 'nothing went in a Batch');
  t.equal(count(ag.calls, 'ArmNew'), 1, 'ArmNew alone');
});

t.test("Release's bounds are checked by the node itself: out of range refused, naming the field and the limit, nothing released", async (t) => {
  const { d, ag } = await lab(t);
  await ag.armNew('vnf2', 12, 0);
  const rel = NODE_SERVICE['Release']!;
  const raw = new grpc.Client(ag.target, grpc.credentials.createInsecure());
  t.teardown(() => raw.close());
  const call = (req: Record<string, unknown>): Promise<grpc.ServiceError | null> =>
    new Promise((resolve) => raw.makeUnaryRequest(rel.path, rel.requestSerialize, rel.responseDeserialize, { instance: 'vnf2', handover_id: 12, ...req }, (e) => resolve(e)));
  // a client that checks nothing (ours refuses these before sending)
  const tooMany = await call({ max_frames: MAX_RELEASE_FRAMES + 1 });
  t.equal(tooMany?.code, grpc.status.INVALID_ARGUMENT);
  t.match(tooMany?.details ?? '', new RegExp(`max_frames ${MAX_RELEASE_FRAMES + 1}: 0 \\(all\\) or 1\\.\\.${MAX_RELEASE_FRAMES}`));
  const tooLong = await call({ timeout_ms: MAX_RELEASE_TIMEOUT_MS + 1 });
  t.equal(tooLong?.code, grpc.status.INVALID_ARGUMENT);
  t.match(tooLong?.details ?? '', new RegExp(`timeout_ms ${MAX_RELEASE_TIMEOUT_MS + 1}: at most ${MAX_RELEASE_TIMEOUT_MS}`));
  t.same(d.releaseBounds, [], 'no release reached the agents');
  t.equal(await call({ max_frames: MAX_RELEASE_FRAMES }), null, 'the largest bound is taken');
  t.same(d.releaseBounds, [MAX_RELEASE_FRAMES], 'and passed on as it is');
});

t.test("a node whose Batch predates a method: the batch it refused is sent again, that method alone from then on, nothing run twice", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-batch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const d = new FakeDeployment(['vnf1', 'vnf2'], 1024);
  const agents = { ...d.agentControl, ...d.vnfState } as AgentControl & VnfStateStore;
  const impl = nodeHandlers({ health: () => agentHealth(d), agents });
  const batches: string[][] = [];
  // as a node older than SwitchArrivals: it serves no such rpc, and its Batch refuses to carry it (whole, nothing run)
  const batch: grpc.handleUnaryCall<Record<string, unknown>, Record<string, unknown>> = (call, cb) => {
    const methods = ((call.request['calls'] as { method: string }[] | undefined) ?? []).map((c) => c.method);
    batches.push(methods);
    const i = methods.indexOf('SwitchArrivals');
    if (i >= 0) return cb({ code: grpc.status.INVALID_ARGUMENT, details: `calls.${i}.method 'SwitchArrivals': not one a batch may carry (ArmOld, AgentStatus)` });
    (impl['Batch'] as grpc.handleUnaryCall<Record<string, unknown>, Record<string, unknown>>)(call, cb);
  };
  const sock = path.join(dir, 'old.sock');
  const definition = Object.fromEntries(Object.entries(NODE_SERVICE).filter(([m]) => m !== 'SwitchArrivals')) as grpc.ServiceDefinition;
  const server = await startNodeServer({ node: 'agnode', services: [{ definition, implementation: { ...impl, Batch: batch } }], unix: { path: sock } });
  t.teardown(() => server.close(0));
  const ag = await NodeClient.connect({ channel: nodeChannel(unixEndpoint(sock, 'agnode')) });
  t.teardown(() => ag.close());

  const [armed, arrivals] = await Promise.all([ag.armOld('vnf1', 9), ag.switchArrivals('s2')]);
  t.same([armed, arrivals], [undefined, undefined], 'the arm applied; the arrivals unknown (the node predates them)');
  t.same(batches, [['ArmOld', 'SwitchArrivals']], 'one Batch, refused whole');
  t.same(d.armed('vnf1'), [9], 'the arm ran');
  t.equal(count(ag.calls, 'ArmOld'), 1, 'sent again alone (a batch of one is a call), once');
  const [status, again] = await Promise.all([ag.agentStatus('vnf1', 9), ag.switchArrivals('s2'), ag.armNew('vnf2', 9, 0)]);
  t.equal(status?.role, 'old');
  t.equal(again, undefined);
  t.same(batches, [['ArmOld', 'SwitchArrivals'], ['AgentStatus', 'ArmNew']], 'then the other calls of a turn in a Batch without SwitchArrivals');
  t.equal(count(ag.calls, 'SwitchArrivals'), 2, 'SwitchArrivals went alone each time');
});
