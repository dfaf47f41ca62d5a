// VNF state moves node to node: the old instance's node hands the moving
// flows' records to the new instance's node itself (mutual TLS with its own
// node certificate over a link between the two VNF hosts, or the peer's Unix
// socket), and the controller only sends the selection and the peer's
// address. Node daemons are separate `sharpctl node run` processes in their
// own namespaces; traffic is real frames through veths.
import t from 'tap';
import { HandoverEngine, type HandoverResult } from '../../src/handover/engine.js';
import { DelayedStateMover, VnfMapStateMover } from '../../src/handover/state-mover.js';
import { sleep } from '../../src/util/mutex.js';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { caFiles, nodeFiles } from '../../src/node/transport/index.js';
import { repoRoot } from '../helpers/env.js';
import { assertIntact, controllerCalls, finishTraffic, movingRules, STATE_BYTES_METHODS, vnfNodesWorld } from '../helpers/vnf-nodes.js';

const peerCall = path.join(repoRoot, 'dist/test/node/fixtures/peer-call.js');

t.test('handovers under traffic move the state node to node over mutual TLS (and over Unix sockets): the controller never carries it', async (t) => {
  const w = await vnfNodesWorld(t);
  const d = await w.connect((i) => ({ address: w.stateAddress[i] }));
  const rules = movingRules(d);
  t.same(
    d.nodes.filter((n) => n.agentInstances().length > 0).map((n) => n.statePeers),
    [[w.nodeOf.vnf2], [w.nodeOf.vnf1]],
    "each VNF node's Health names the other as its state peer",
  );
  const engine = new HandoverEngine(d, { mover: new DelayedStateMover(new VnfMapStateMover(), 50) });
  const { gens, sinks } = w.traffic(4);
  for (const g of gens) g.start(2000);
  await sleep(200);
  const results: HandoverResult[] = [];
  let at: 'vnf1' | 'vnf2' = 'vnf1';
  for (let i = 0; i < 4; i++) {
    const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engine.handover({ rules, from: at, to, expectedPps: 4000 });
    results.push(r);
    t.equal(r.outcome, 'completed', `handover ${r.id} ${r.from}→${r.to}: ${r.outcome}${r.reason ? ` (${r.reason})` : ''}`);
    t.match(r.state, { records: 8, path: 'host-to-host', transport: 'tls', peer: w.nodeOf[to] }, `handover ${r.id}: 8 records went from ${w.nodeOf[at]} to ${w.nodeOf[to]} over mutual TLS`);
    t.comment(`handover ${r.id}: state step ${r.stateMs.toFixed(1)} ms (50 ms of it injected delay), node to node over mutual TLS`);
    if (r.outcome === 'completed') at = to;
    await sleep(30);
  }
  // the same nodes, reached by a controller that lets them use each other's Unix socket (one host)
  const du = await w.connect(() => undefined);
  const engineU = new HandoverEngine(du, { mover: new VnfMapStateMover() });
  for (let i = 0; i < 2; i++) {
    const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engineU.handover({ rules, from: at, to, expectedPps: 4000 });
    t.equal(r.outcome, 'completed', `handover ${r.id} ${r.from}→${r.to} over Unix sockets: ${r.reason ?? 'completed'}`);
    t.match(r.state, { records: 8, path: 'host-to-host', transport: 'unix', peer: w.nodeOf[to] });
    t.comment(`handover ${r.id}: state step ${r.stateMs.toFixed(1)} ms, node to node over Unix sockets`);
    if (r.outcome === 'completed') at = to;
  }
  // for comparison, and to show the count below would see it: the same move through the controller
  const dc = await w.connect(() => undefined);
  const engineC = new HandoverEngine(dc, { mover: new VnfMapStateMover({ via: 'controller' }) });
  for (let i = 0; i < 2; i++) {
    const to: 'vnf1' | 'vnf2' = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engineC.handover({ rules, from: at, to, expectedPps: 4000 });
    t.equal(r.outcome, 'completed', `handover ${r.id} ${r.from}→${r.to} through the controller: ${r.reason ?? 'completed'}`);
    t.match(r.state, { records: 8, path: 'controller' });
    t.comment(`handover ${r.id}: state step ${r.stateMs.toFixed(1)} ms, through the controller`);
    if (r.outcome === 'completed') at = to;
  }
  t.same(
    (['ExportState', 'ImportState', 'DeleteState'] as const).map((m) => controllerCalls(dc, [m])),
    [2, 2, 2],
    'through the controller, its clients count the export, import and delete of each move',
  );
  const reports = await finishTraffic(gens, sinks);
  t.ok(results.some((r) => r.counts.held > 0n), 'frames were really held at the new instance');
  t.equal(controllerCalls(d, STATE_BYTES_METHODS) + controllerCalls(du, STATE_BYTES_METHODS), 0, 'the controller made no ExportState, ImportState or DeleteState call: no state byte passed through it');
  t.equal(controllerCalls(d, ['TransferState']) + controllerCalls(du, ['TransferState']), 6, 'one TransferState per handover, to the old instance\'s node');
  assertIntact(t, reports, '6 handovers with state moved node to node, 2 through the controller');
});

t.test('a transfer to an unreachable or unauthorized peer fails naming the peer and the cause; the handover rolls back and the old instance keeps its state', async (t) => {
  const w = await vnfNodesWorld(t);
  const d = await w.connect((i) => ({ address: w.stateAddress[i] }));
  const rules = movingRules(d);
  const { gens, sinks } = w.traffic(2);
  // 1000 pps: the hold ring (8192 per side) outlasts a slow handover on a loaded machine; this test is about failures, not rate
  for (const g of gens) g.start(1000);
  await sleep(200);
  const records = async (i: string): Promise<number> => (await d.vnfState.exportState(i, 'all')).length;

  // a controller that believes vnf2's node listens where nothing does
  const closedPort = `${w.stateAddress.vnf2.split(':')[0]}:1`;
  const dBad = await w.connect((i) => ({ address: i === 'vnf2' ? closedPort : w.stateAddress[i] }));
  const r1 = await new HandoverEngine(dBad, { mover: new VnfMapStateMover() }).handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000 });
  t.equal(r1.outcome, 'aborted', `unreachable peer: ${r1.reason}`);
  t.match(r1.reason, new RegExp(`node ${w.nodeOf.vnf1}: TransferState: moving 4 state records of vnf1 to vnf2 on node ${w.nodeOf.vnf2} at ${closedPort.replace(/\./g, '\\.')} failed, vnf1 keeps them: .*unreachable`));
  t.equal(await records('vnf1'), 4, 'vnf1 kept the state of its 2 flows each way');
  t.equal(await records('vnf2'), 0, 'vnf2 holds none of it');

  // the peer's node does not list the old instance's node: it refuses its certificate
  await w.restart('vnf2', (n) => {
    n.config = { ...n.config, peers: { ...n.config.peers!, allow: ['someone-else'] } };
  });
  const r2 = await new HandoverEngine(d, { mover: new VnfMapStateMover() }).handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000 });
  t.equal(r2.outcome, 'aborted', `unauthorized: ${r2.reason}`);
  t.match(r2.reason, new RegExp(`on node ${w.nodeOf.vnf2} at ${w.stateAddress.vnf2.replace(/\./g, '\\.')} failed, vnf1 keeps them: node ${w.nodeOf.vnf2} at [^ ]+ refused node '${w.nodeOf.vnf1}'.*not on its peers\\.allow`));
  t.equal(await records('vnf1'), 4, 'vnf1 still has its state');
  t.equal(await records('vnf2'), 0);

  // the old instance's node sends nowhere it was not told to
  const vnf1Node = d.nodes.find((n) => n.name === w.nodeOf.vnf1)!;
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'vnf2', { node: 'intruder', via: { address: w.stateAddress.vnf2 } }, 'all'), { name: 'NodeCallError', message: new RegExp(`does not send state to node 'intruder': it is not on its peers\\.allow \\(${w.nodeOf.vnf2}\\)`) });
  // a peer whose certificate names another node (here: vnf1's own API, claimed to be vnf2's)
  await w.restart('vnf2', (n) => {
    n.config = { ...n.config, peers: { ...n.config.peers!, allow: [w.nodeOf.vnf1] } };
  });
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'vnf2', { node: w.nodeOf.vnf2, via: { address: w.stateAddress.vnf1 } }, 'all'), { message: new RegExp(`the server's certificate names '${w.nodeOf.vnf1}'.*expected '${w.nodeOf.vnf2}'`) });
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'vnf2', { node: w.nodeOf.vnf2, via: { address: 'no-port' } }, 'all'), { message: /peer\.address 'no-port': host:port/ });
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'no such/instance', { node: w.nodeOf.vnf2, via: { address: w.stateAddress.vnf2 } }, 'all'), { message: /to_instance 'no such\/instance': an instance name is 1-32 letters/ });
  await t.rejects(vnf1Node.transferStateTo('vnf1', 'vnf2', { node: w.nodeOf.vnf2, via: { address: w.stateAddress.vnf2 } }, 'all', { timeoutMs: 600_001 }), { message: /timeout_ms 600001: at most 600000/ });
  t.equal(await records('vnf1'), 4, 'none of the refused transfers took anything from vnf1');

  // a peer's certificate opens only what a peer needs: it cannot read (or change) anything else on the node (called from vnf1's host)
  const asPeer = (method: string): { ok?: boolean; error?: { name: string; message: string } } => {
    const vnf1Ns = w.lab.topology.instances.find((i) => i.name === 'vnf1')!.netns!;
    const line = execFileSync('nsenter', [`--net=/run/netns/${vnf1Ns}`, process.execPath, peerCall, '--node', w.nodeOf.vnf2, '--address', w.stateAddress.vnf2, '--ca', caFiles(w.certs).cert, ...['--cert', nodeFiles(w.certs, w.nodeOf.vnf1).cert, '--key', nodeFiles(w.certs, w.nodeOf.vnf1).key], '--instance', 'vnf2', '--method', method], { encoding: 'utf8' });
    return JSON.parse(line) as ReturnType<typeof asPeer>;
  };
  t.match(asPeer('ExportState').error?.message, new RegExp(`accepts node '${w.nodeOf.vnf1}' .* as a state peer only \\(Health, ImportState\\), not for /sharp\\.node\\.v1\\.Node/ExportState`), 'a peer node may not read state');
  t.match(asPeer('DeleteState').error?.message, /as a state peer only/, 'nor delete it');
  t.same(asPeer('ImportState'), { ok: true }, 'it may hand state over (here: none)');

  // with the peers agreeing again, the same handover completes node to node
  const r3 = await new HandoverEngine(d, { mover: new VnfMapStateMover() }).handover({ rules, from: 'vnf1', to: 'vnf2', expectedPps: 4000 });
  t.equal(r3.outcome, 'completed', `after the fix: ${r3.reason ?? 'completed'}`);
  t.comment(`after the fix: ${r3.durationMs.toFixed(0)} ms, state ${r3.stateMs.toFixed(1)} ms, steps ${JSON.stringify(r3.timings)}`);
  t.match(r3.state, { records: 4, path: 'host-to-host', transport: 'tls' });
  const reports = await finishTraffic(gens, sinks);
  t.equal(controllerCalls(d, ['ImportState']), 0, 'no record went through the controller, not even in the rollbacks');
  assertIntact(t, reports, 'two rolled-back handovers and one completed');
});
