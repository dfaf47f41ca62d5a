// E-State on the nodes (issue 12): each VNF instance's node process is a
// member of the lab's E-State group, serving it on its management address
// with mutual TLS. A handover with the estate backend stages the moving
// flows' records in the old node's member and the new node fetches them
// from there: the records never pass through the controller, which opens no
// E-State connection. Traffic both ways stays intact; a certificate that is
// not a member's (the controller's) is refused by the group.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { openNodeLab } from '../../src/lab/lab-nodes.js';
import { installRules, standardSpec } from '../../src/lab/netns-lab.js';
import { MGMT_ESTATE_PORT } from '../../src/lab/management-net.js';
import { HandoverEngine, flowMoved, type HandoverResult } from '../../src/handover/engine.js';
import { controllerStateMover } from '../../src/state/factory.js';
import { Phase } from '../../src/dataplane/types.js';
import { twoWayProbes } from '../helpers/handovers.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { scrapeUnixSocket } from '../../src/metrics/scrape.js';
import { parseExposition } from '../../src/metrics/textfile.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');
const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const PPS = 1000;

t.test('handovers with state: estate on node processes: records go member to member, the controller holds none; traffic intact', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-estate-nodes-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nl = await openNodeLab(standardSpec({ ringCapacity: 8192 }), `${uniqueName('en')}-`, { dir: path.join(dir, 'nodes'), cli });
  t.teardown(() => nl.close());
  await installRules(nl.dp, nl.lab.spec.rules);
  const d = nl.dp.deployment;
  const groups = d.nodes.filter((n) => n.agentInstances().length > 0).map((n) => n.stagingStore('estate'));
  t.equal(groups.length, 2, 'two instance nodes');
  t.ok(groups[0] !== '' && groups[0] === groups[1], `both are members of one E-State group (${groups[0]})`);
  t.equal(d.nodes.filter((n) => n.switches().length > 0 && n.stagingStore('estate') !== '').length, 0, 'switch nodes carry no state and are no members');

  const rules = nl.dp
    .rules()
    .filter((r) => r.action.outPort === 's1-vnf1' || r.action.outPort === 's2-vnf1')
    .map((r) => r.id);
  t.equal(rules.length, 2, 'both directions move');
  const mover = controllerStateMover('estate');
  t.teardown(() => mover.close?.());
  const engine = new HandoverEngine(nl.dp, { mover });
  const probes = twoWayProbes(t, nl.lab, { objectsDir, flows: 4, stamps: true });
  probes.start(PPS);
  await sleep(300);
  const results: HandoverResult[] = [];
  let at = 'vnf1';
  for (let i = 0; i < 4; i++) {
    const to = at === 'vnf1' ? 'vnf2' : 'vnf1';
    const r = await engine.handover({ rules, from: at, to, expectedPps: 2 * PPS });
    results.push(r);
    if (flowMoved(r)) at = to;
    await sleep(50);
  }
  const reports = await probes.stop();
  for (const r of results) {
    t.equal(r.outcome, 'completed', `handover ${r.id} ${r.from}→${r.to}: ${r.reason ?? 'completed'}`);
    t.match(r.state, { records: 8, path: 'host-to-host', transport: 'store', peer: groups[0] }, `handover ${r.id}: 8 records (4 flows each way) staged in the group, node to node`);
    t.equal(r.counts.held, r.counts.released, `handover ${r.id}: held ${r.counts.held} = released`);
  }
  for (const [dir, rep] of [
    ['client→server', reports[0]!],
    ['server→client', reports[1]!],
  ] as const) {
    t.ok(rep.sent > 0, `${dir}: ${rep.sent} probes`);
    t.same({ lost: rep.lost, reordered: rep.reordered, duplicated: rep.duplicated, stampMismatches: rep.stampMismatches }, { lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0 }, `${dir}: nothing lost, reordered or duplicated; the VNF's counters continuous across the moves`);
  }
  t.equal((await nl.dp.controllerDataPackets()).packets, 0n, 'the controller received 0 data packets');

  // the instance nodes' metrics: each stage and obtain observed under the estate store, as many as the calls
  const count = { stage: 0, obtain: 0, StageState: 0, ObtainState: 0 };
  for (const p of nl.nodes.filter((x) => x.node.role === 'vnf1' || x.node.role === 'vnf2')) {
    const samples = parseExposition(await scrapeUnixSocket(p.node.config.metrics!.unix!), p.node.role).flatMap((f) => f.samples);
    const v = (name: string, labels: Record<string, string>): number => samples.find((x) => x.name === name && Object.entries(labels).every(([k, val]) => x.labels.some((l) => l[0] === k && l[1] === val)))?.value ?? 0;
    for (const op of ['stage', 'obtain'] as const) count[op] += v('sharp_node_state_duration_seconds_count', { backend: 'estate', operation: op });
    for (const m of ['StageState', 'ObtainState'] as const) count[m] += v('sharp_node_api_request_duration_seconds_count', { method: m, code: 'OK' });
    t.equal(samples.filter((x) => x.name === 'sharp_node_state_duration_seconds_count' && x.labels.some((l) => l[0] === 'backend' && l[1] === 'redis')).length, 0, `${p.node.role}: nothing staged in redis`);
  }
  t.same(count, { stage: 4, obtain: 4, StageState: 4, ObtainState: 4 }, 'four stages and four obtains, under backend="estate", as many as the calls');
  t.same(
    nl.dp.rules().filter((r) => rules.includes(r.id)).map((r) => r.action.phase),
    [Phase.NONE, Phase.NONE],
    'the rules end unmarked',
  );

  // the group admits node certificates of its members only: the controller's, though signed by the same CA, is refused
  const vnf2 = nl.nodes.find((p) => p.node.role === 'vnf2')!;
  const address = nl.management.addresses.get(vnf2.node.netns)!;
  // from the root namespace, where the controller runs: over the management network
  const refused = await new Promise<string>((resolve) => {
    const s = tls.connect({ host: address, port: MGMT_ESTATE_PORT, ca: nl.controllerTls.ca, cert: nl.controllerTls.cert, key: nl.controllerTls.key, minVersion: 'TLSv1.3', rejectUnauthorized: false });
    s.on('secureConnect', () => s.write(Buffer.alloc(16)));
    s.on('data', () => resolve('answered'));
    s.on('error', (e) => resolve(`error: ${e.message}`));
    s.on('close', () => resolve('closed'));
  });
  await sleep(100);
  t.not(refused, 'answered', `a controller certificate gets no answer from the E-State group (${refused})`);
  t.ok(vnf2.stderr.some((l) => /estate: refused a connection: controller '[^']+' .* is not a node certificate/.test(l)), 'the node says whom it refused and why');
});
