// A deployment's P4Runtime switch taken over with `pipeline: existing`: a
// switch already running p4/sharp.p4 is kept as it is (no pipeline set, its
// rules adopted, its counters running on), and a switch running nothing or
// another build is refused, naming what it runs, and left untouched.
// Against a real simple_switch_grpc on veths; skips (with the reason) without one.
import t, { type Test } from 'tap';
import { readFileSync } from 'node:fs';
import { connectP4RuntimeSwitches } from '../../../src/deploy/controller.js';
import type { DeploySwitch } from '../../../src/deploy/spec.js';
import { P4_ARTIFACTS } from '../../../src/dataplane/bmv2/artifacts.js';
import { pipelineCookie, pipelineMismatch, type P4RuntimeSwitches } from '../../../src/dataplane/bmv2/p4runtime-switches.js';
import { Phase } from '../../../src/dataplane/types.js';
import { P4Info, P4RuntimeClient } from '../../../src/p4runtime/index.js';
import { udpFrame } from '../../../src/net/frame.js';
import { bmv2Skip, startBmv2, type Bmv2 } from '../../helpers/bmv2.js';

const ours = { p4info: P4Info.load(P4_ARTIFACTS.p4info), cookie: pipelineCookie(readFileSync(P4_ARTIFACTS.p4info), readFileSync(P4_ARTIFACTS.bmv2Json)) };

t.test('the pipeline check in words: none, another build of ours, ours', async (t) => {
  t.equal(pipelineMismatch(undefined, ours), 'no pipeline');
  t.match(pipelineMismatch({ p4info: ours.p4info, cookie: 42n }, ours), /p4\/sharp\.p4's P4Info with cookie 0x000000000000002a, not ours/);
  t.equal(pipelineMismatch({ p4info: ours.p4info, cookie: ours.cookie }, ours), undefined);
  t.equal(pipelineMismatch({ p4info: ours.p4info }, ours), undefined, 'our P4Info set without a cookie (another tool) is accepted: the P4Info is all there is to compare');
  t.match(pipelineMismatch({ p4info: P4Info.fromJson({ tables: [] }) }, ours), /another program \(P4Info tables: none\)/);
});

const skip = bmv2Skip;
if (skip) t.comment(`BMv2 P4Runtime switch tests skipped: ${skip}`);

const deploySwitch = (sw: Bmv2, pipeline: 'push' | 'existing'): DeploySwitch => ({
  name: 's1',
  target: 'bmv2',
  p4runtime: sw.address,
  deviceId: sw.deviceId,
  pipeline,
  relayAround: false,
  ports: { 's1-client': { port: 1 }, 's1-vnf1': { port: 2, instance: 'vnf1', side: 0 } },
});

async function take(t: Test, sw: Bmv2, pipeline: 'push' | 'existing'): Promise<P4RuntimeSwitches> {
  const s = await connectP4RuntimeSwitches([deploySwitch(sw, pipeline)]);
  t.teardown(() => s.close());
  return s;
}

const frame = (sw: Bmv2, sport: number): Buffer =>
  udpFrame({ srcMac: sw.ports[0]!.hostMac, dstMac: sw.ports[1]!.hostMac, srcIp: '10.0.0.1', dstIp: '10.0.0.2', srcPort: sport, dstPort: 9000, payload: Buffer.alloc(64, 0xab) });

async function sendThrough(sw: Bmv2, sports: number[]): Promise<number> {
  const got = await sw.exchange({ send: [{ ifname: sw.ports[0]!.hostIf, frames: sports.map((p) => frame(sw, p)) }], capture: [sw.ports[1]!.hostIf], expect: sports.length, lingerMs: 100 });
  return got[sw.ports[1]!.hostIf]!.length;
}

t.test('pipeline: existing on a switch running our pipeline keeps its tables, rules and counters', { skip }, async (t) => {
  const sw = await startBmv2(t, { ports: 2 });
  const first = await take(t, sw, 'push');
  const exact = await first.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 20000, dport: 9000, proto: 17 } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  const wild = await first.addRule({ switch: 's1', match: { kind: 'wildcard', priority: 3, dst: '10.0.0.0/24', proto: 17, inPort: 's1-client' }, action: { outPort: 's1-vnf1', phase: Phase.PRE, handoverId: 9 } });
  t.equal(await sendThrough(sw, [20000, 20001, 20002]), 3, 'three frames through the pushed pipeline');
  const rulesBefore = first.rules();
  first.close();

  const second = await take(t, sw, 'existing');
  t.same(second.rules(), rulesBefore, 'the rules on the switch are adopted: ids, matches, actions');
  t.same(await second.ruleCounters(exact.id), { packets: 1n, bytes: 1n * BigInt(frame(sw, 0).length) }, 'the exact rule\'s counter ran on: the pipeline was not set again');
  t.equal((await second.ruleCounters(wild.id)).packets, 2n);
  t.equal((await second.handoverCounters('s1', 9)).pre, 2n, 'the PRE marks of handover 9 too');
  t.equal(await sendThrough(sw, [20000]), 1, 'and the switch forwards as before');
  t.equal((await second.ruleCounters(exact.id)).packets, 2n);
  t.equal((await second.client('s1').readEntries('port_info')).length, 2, 'the port tables were completed, not doubled');
  const next = await second.addRule({ switch: 's1', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 1, dport: 9000, proto: 17 } }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  t.ok(next.id > wild.id, `a new rule gets an id after the adopted ones (${next.id})`);
});

t.test('pipeline: existing refuses a switch running no pipeline, and sets none', { skip }, async (t) => {
  const sw = await startBmv2(t, { ports: 2 });
  await t.rejects(take(t, sw, 'existing'), { name: 'PipelineMismatchError', message: /switch s1: pipeline: existing needs it to run p4\/sharp\.p4 .* but it runs no pipeline; use pipeline: push/ });
  const probe = await P4RuntimeClient.connect({ address: sw.address, deviceId: sw.deviceId, electionId: 2n });
  t.teardown(() => probe.close());
  t.equal(await probe.getPipeline('P4INFO_AND_COOKIE'), undefined, 'the switch still runs nothing');
});

t.test('pipeline: existing refuses another build of our program (its cookie), leaving its tables alone', { skip }, async (t) => {
  const sw = await startBmv2(t, { ports: 2 });
  const other = await P4RuntimeClient.connect({ address: sw.address, deviceId: sw.deviceId, electionId: 5n });
  t.teardown(() => other.close());
  await other.setPipeline(ours.p4info, readFileSync(P4_ARTIFACTS.bmv2Json), { cookie: 0x1234n });
  await other.write([{ type: 'INSERT', tableEntry: { table: 'tx_port', match: { slot: { exact: 7 } }, action: { name: 'set_tx', params: { port: 7 } } } }]);
  other.close();
  // the switch notices the other controller's stream closing a moment later (until then it is primary and we are a backup)
  const takeOnceItLeft = async (): Promise<P4RuntimeSwitches> => {
    for (let i = 0; ; i++) {
      try {
        return await take(t, sw, 'existing');
      } catch (e) {
        if (!(e instanceof Error && e.name === 'P4RuntimeNotPrimaryError') || i >= 50) throw e;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  await t.rejects(takeOnceItLeft(), { name: 'PipelineMismatchError', message: /runs p4\/sharp\.p4's P4Info with cookie 0x0000000000001234, not ours/ });
  const probe = await P4RuntimeClient.connect({ address: sw.address, deviceId: sw.deviceId, electionId: 6n, p4info: ours.p4info });
  t.teardown(() => probe.close());
  t.equal((await probe.getPipeline('COOKIE_ONLY'))?.cookie, 0x1234n, 'its pipeline is the one it had');
  t.same((await probe.readEntries('tx_port')).map((e) => e.match), [{ slot: { exact: 7n } }], 'and its one tx_port entry, nothing added');
  t.same((await probe.readEntries('port_info')), [], 'no port table written');
});

t.test('pipeline: push replaces whatever the switch ran, with our cookie', { skip }, async (t) => {
  const sw = await startBmv2(t, { ports: 2 });
  const s = await take(t, sw, 'push');
  t.equal((await s.client('s1').getPipeline('COOKIE_ONLY'))?.cookie, ours.cookie);
  t.equal((await s.client('s1').readEntries('port_info')).length, 2);
});

/** shim(phase, hid) inserted after the MAC addresses of a frame (sharp_abi.h layout) */
const shimmed = (f: Buffer, phase: number, hid: number): Buffer => Buffer.concat([f.subarray(0, 12), Buffer.from([0x82, 0x1c, ((phase << 6) | (hid >> 8)) & 0xff, hid & 0xff]), f.subarray(12)]);

t.test('the rollback relay: shim(RELAY, hid) from a VNF port leaves stripped towards the route; every other shim is dropped as forged', { skip }, async (t) => {
  const sw = await startBmv2(t, { ports: 3 });
  const s = await connectP4RuntimeSwitches([{ ...deploySwitch(sw, 'push'), ports: { 's1-client': { port: 1 }, 's1-vnf1': { port: 2, instance: 'vnf1', side: 0 }, 's1-vnf2': { port: 3, instance: 'vnf2', side: 0 } } }]);
  t.teardown(() => s.close());
  const [client, vnf1, vnf2] = sw.ports;
  const plain = udpFrame({ srcMac: vnf2!.hostMac, dstMac: vnf1!.hostMac, srcIp: '10.0.0.1', dstIp: '10.0.0.2', srcPort: 20000, dstPort: 9000, payload: Buffer.alloc(64, 0xcd) });
  const send = async (ifname: string, frames: Buffer[], expect: number): Promise<Buffer[]> => (await sw.exchange({ send: [{ ifname, frames }], capture: [vnf1!.hostIf], expect, lingerMs: 150, timeoutMs: 3000 }))[vnf1!.hostIf]!;
  const counters = async (port: string): Promise<{ relayed: bigint; dropShim: bigint; txPackets: bigint }> => (await s.portCounters('s1')).find((p) => p.port === port)!;

  await t.rejects(s.setRelay('s1', 5, 's1-nowhere'), { name: 'RuleError', message: /no port 's1-nowhere'/ });
  await t.rejects(s.setRelay('s1', 0, 's1-vnf1'), { name: 'RuleError', message: /handover id 0 out of range 1\.\.16383/ });
  t.same(await s.client('s1').readEntries('relays'), [], 'a refused route writes nothing');

  t.same(await send(vnf2!.hostIf, [shimmed(plain, 3, 5)], 0), [], 'no route for handover 5 yet: dropped');
  await s.setRelay('s1', 5, 's1-vnf1');
  await s.setRelay('s1', 5, 's1-vnf1');
  t.equal((await s.client('s1').readEntries('relays')).length, 1, 'one route, written twice (a recovered controller tries again)');
  const relayed = await send(vnf2!.hostIf, [shimmed(plain, 3, 5), shimmed(plain, 3, 5)], 2);
  t.same(relayed.map((f) => f.toString('hex')), [plain.toString('hex'), plain.toString('hex')], 'relayed to vnf1 with the shim stripped, byte for byte');
  t.same(await send(vnf2!.hostIf, [shimmed(plain, 3, 6), shimmed(plain, 1, 5), shimmed(plain, 2, 5)], 0), [], 'another handover id, PRE and POST shims from a VNF port: dropped');
  t.same(await send(client!.hostIf, [shimmed(plain, 3, 5)], 0), [], 'a RELAY shim from a host port: dropped');
  const at2 = await counters('s1-vnf2');
  t.equal(at2.relayed, 2n, 'relayed counted at the port the frames came in on');
  t.equal(at2.dropShim, 4n, 'the forged ones counted as drop_shim there');
  t.equal((await counters('s1-client')).dropShim, 1n);
  t.equal((await counters('s1-vnf1')).txPackets, 2n, 'and as sent out of the port towards vnf1');

  await s.clearRelay('s1', 5);
  await s.clearRelay('s1', 5);
  t.same(await s.client('s1').readEntries('relays'), [], 'the route is gone (cleared twice: no error)');
  t.same(await send(vnf2!.hostIf, [shimmed(plain, 3, 5)], 0), [], 'and relayed frames are dropped again');
});

t.test('the exact quiescence count: sched_tx counts what rule actions sent towards each instance, DIVERT apart', { skip }, async (t) => {
  const sw = await startBmv2(t, { ports: 2 });
  const s = await take(t, sw, 'push');
  t.same(await s.sentTowardsInstances('s1'), [{ port: 's1-vnf1', instance: 'vnf1', side: 0, frames: 0n }], 'one port faces an instance; nothing sent yet');
  const wild = await s.addRule({ switch: 's1', match: { kind: 'wildcard', priority: 1, dst: '10.0.0.2/32' }, action: { outPort: 's1-vnf1', phase: Phase.NONE, handoverId: 0 } });
  t.equal(await sendThrough(sw, [1, 2, 3]), 3);
  t.same((await s.sentTowardsInstances('s1')).map((p) => p.frames), [3n], 'the three frames the wildcard action sent');
  await s.setRuleAction(wild.id, { outPort: 's1-vnf1', phase: Phase.PRE, handoverId: 4 });
  t.equal(await sendThrough(sw, [4, 5]), 2);
  t.same((await s.sentTowardsInstances('s1')).map((p) => p.frames), [5n], 'marked frames count too');
  await s.setRuleAction(wild.id, { outPort: 's1-vnf1', phase: Phase.DIVERT, handoverId: 4 });
  t.equal(await sendThrough(sw, [6, 7]), 0, 'diverted to the controller');
  t.same((await s.sentTowardsInstances('s1')).map((p) => p.frames), [5n], 'DIVERT frames are not counted towards vnf1');
});
