// The NAT pair (src/lab/spec/nat-pair.yaml) as a deployment of node
// processes (issues 12 and 14): each `linux` instance's conntrack table is
// that instance's VNF state, which its node exports, hands to the other
// instance's node over mutual TLS (TransferState) and deletes — the
// controller never runs `conntrack` and never carries an entry. A TCP
// transfer through the NAT survives handovers back and forth:
// byte-identical, no reset, the server sees one outside address and port —
// also with 100 ms added to every state move.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { openNodeLab } from '../../src/lab/lab-nodes.js';
import { installRules } from '../../src/lab/netns-lab.js';
import { loadSpec } from '../../src/lab/spec/index.js';
import { HandoverEngine, flowMoved, type HandoverResult } from '../../src/handover/engine.js';
import { controllerStateMover } from '../../src/state/factory.js';
import { DelayedStateMover } from '../../src/handover/state-mover.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { startTcpTransfer } from '../helpers/tcp-transfer.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const OUTSIDE = '10.0.0.100';
const TCP_PORT = 5001;
const TCP_SPORT = 40124;
const MB = 1 << 20;

/** the packet counters of an nft table's rules, in rule order */
function nftCounters(netns: string, table: string): number[] {
  const out = execFileSync('ip', ['netns', 'exec', netns, 'nft', 'list', 'table', 'ip', table], { encoding: 'utf8' });
  return [...out.matchAll(/counter packets (\d+)/g)].map((m) => Number(m[1]));
}

for (const stateDelayMs of [0, 100])
t.test(`NAT pair on node processes: the conntrack entries move node to node; a TCP transfer through the NAT survives handovers back and forth (state delay ${stateDelayMs} ms)`, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-natnodes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nl = await openNodeLab(loadSpec(path.join(repoRoot, 'src/lab/spec/nat-pair.yaml')), `${uniqueName('nn')}-`, { dir: path.join(dir, 'nodes'), cli });
  t.teardown(() => nl.close());
  await installRules(nl.dp, nl.lab.spec.rules);
  const rules = nl.dp
    .rules()
    .filter((r) => r.action.outPort === 's1-nat1' || r.action.outPort === 's2-nat1')
    .map((r) => r.id);
  t.equal(rules.length, 2, 'the client side rule on s1 and the reply rule on s2');
  // the delay: as if the entries crossed a slow network (the sender sees the flow held that much longer)
  const mover = new DelayedStateMover(controllerStateMover('conntrack'), stateDelayMs);
  const engine = new HandoverEngine(nl.dp, { mover });
  const { client, server } = nl.lab;
  const bytes = 128 * MB;
  const xfer = await startTcpTransfer(t, { client, server, port: TCP_PORT, sport: TCP_SPORT, bytes, rateBps: 20 * MB, idleS: 10 });
  await xfer.connected;
  const results: HandoverResult[] = [];
  let at = 'nat1';
  while (xfer.running()) {
    await sleep(300);
    if (!xfer.running()) break;
    const to = at === 'nat1' ? 'nat2' : 'nat1';
    const r = await engine.handover({ rules, from: at, to, capacityPolicy: 'warn' });
    results.push(r);
    if (flowMoved(r)) at = to;
  }
  const { sender, receiver } = await xfer.done;
  t.equal(sender.error, null, `the sender finished without error (${sender.error})`);
  t.equal(receiver.bytes, bytes, `received ${receiver.bytes} of ${bytes} bytes`);
  t.equal(receiver.sha256, sender.sha256, 'sha256 equal at both ends: byte-identical');
  t.same(receiver.peer, [OUTSIDE, TCP_SPORT], `the server's peer is ${OUTSIDE}:${TCP_SPORT} throughout`);
  t.equal(receiver.extraConnections, 0, 'one connection, never re-established');
  t.ok(results.length >= 4, `${results.length} handovers during the transfer`);
  for (const h of results) {
    t.equal(h.outcome, 'completed', `handover ${h.id} ${h.from}→${h.to}: ${h.outcome}${h.reason ? ` (${h.reason})` : ''}`);
    t.same({ path: h.state?.path, moved: (h.state?.records ?? 0) >= 1 }, { path: 'host-to-host', moved: true }, `handover ${h.id}: the connection's conntrack entry went from ${h.from}'s node to ${h.to}'s (${h.state?.records} records, ${h.stateMs.toFixed(1)} ms)`);
  }
  const drops = ['nat1', 'nat2'].map((i) => nftCounters(`${nl.lab.prefix}${i}`, 'sharp_nat').slice(0, 2));
  t.same(drops, [[0, 0], [0, 0]], 'neither NAT dropped a packet (invalid, or new from the outside)');
  const stateMs = results.map((h) => h.stateMs);
  t.comment(`state delay ${stateDelayMs} ms: ${results.length} handovers, state move ${Math.min(...stateMs).toFixed(1)}–${Math.max(...stateMs).toFixed(1)} ms node to node, ${(bytes / MB / sender.seconds).toFixed(1)} MB/s`);
});
