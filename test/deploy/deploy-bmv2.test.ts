// A deployment spec with BMv2 switches over P4Runtime and VNF agents on
// nodes: the Mininet lab (its switches running p4/sharp.p4, one node process
// per VNF namespace) driven by `sharpctl deploy` as a user runs it — every
// invocation a new controller that takes the switches with `pipeline:
// existing`: it finds the rules the previous one installed. Handovers back
// and forth under traffic both ways lose nothing; a controller killed
// mid-handover is recovered by the next; a failed state move rolls back
// through the P4 switch's relay, which needs no agent in the switch's
// kernel (hosts apart).
// Skipped, with the reason printed, where BMv2 or Mininet is missing.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openLab } from '../../src/lab/open-lab.js';
import { labNodeSockets } from '../../src/lab/lab-nodes.js';
import { standardSpec } from '../../src/lab/netns-lab.js';
import type { MininetLab } from '../../src/lab/mininet-lab.js';
import type { DeploySwitch } from '../../src/deploy/spec.js';
import type { P4RuntimeSwitches } from '../../src/dataplane/bmv2/p4runtime-switches.js';
import { loadDeploySpec } from '../../src/deploy/spec.js';
import { openController } from '../../src/deploy/controller.js';
import { ThrowingMover, twoWayProbes } from '../helpers/handovers.js';
import { Phase } from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { bmv2Skip } from '../helpers/lab.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const objectsDir = path.join(repoRoot, 'build/ebpf');
const skip = bmv2Skip();
if (skip) t.comment(`BMv2 deployment tests skipped: ${skip}`);
/**
 * BMv2 is a software switch: thousands of packets/s per direction at most
 * here. 300, as the other BMv2 tests: the killed controller's hold (its
 * recovery starts a new process) is several seconds of traffic, released
 * in windows paced by what BMv2 took in (a burst into BMv2's libpcap ring
 * used to lose part of it).
 */
const PPS = 300;

t.test('deploy on BMv2 switches and node agents: apply, handovers back and forth under traffic, a killed controller recovered, a rollback relayed by the P4 switch', { skip }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-deploy-bmv2-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const spec = standardSpec({ ringCapacity: 8192 });
  // the lab: Mininet, BMv2 with our pipeline pushed, node processes; no rules
  const opened = await openLab({ ...spec, rules: [] }, `${uniqueName('dpb')}-`, { objectsDir, workDir: path.join(dir, 'work'), target: 'bmv2' });
  t.teardown(() => opened.close());
  // the lab's own P4Runtime connections go: the deployment's controllers take the switches over
  await opened.dp.close();
  const lab = opened.lab as MininetLab;
  const switches: DeploySwitch[] = lab.bmv2.switches.map((s) => ({
    name: s.name,
    target: 'bmv2',
    p4runtime: s.grpcAddress,
    deviceId: s.deviceId,
    pipeline: 'existing',
    // rollbacks relay through the switches (their relays table), as between hosts
    relayAround: false,
    ports: Object.fromEntries(s.ports.map((p) => [p.name, { port: p.bmv2Port, ...(p.instance === undefined ? {} : { instance: p.instance, side: (p.instanceSide ?? 0) as 0 | 1 }) }])),
  }));
  const nodes = labNodeSockets(path.join(dir, 'work', 'nodes'));
  t.same(nodes.length, 2, 'one node per VNF namespace, none for the switches');
  const deployFile = path.join(dir, 'deploy.json');
  writeFileSync(
    deployFile,
    JSON.stringify({
      controller: { name: 'ctl1', journal: 'journal' },
      state: 'vnf-map',
      nodes: nodes.map((n) => ({ name: n.name, socket: n.socket })),
      switches,
      rules: spec.rules.map((r) => ('flow' in r ? r : { switch: r.switch, to: r.to, priority: r.priority, match: r.match })),
    }),
  );
  // asynchronously: this process's event loop must run meanwhile (it closes its P4Runtime streams, it runs the traffic)
  const json = async <T>(args: readonly string[]): Promise<T> => {
    const child = spawn(process.execPath, [cli, 'deploy', ...args, '--spec', deployFile, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`deploy ${args.join(' ')} exited ${code}: ${err}`);
    return JSON.parse(out) as T;
  };

  t.equal((await json<{ added: unknown[] }>(['apply'])).added.length, 4, 'the four rules installed on the two BMv2 switches');
  t.equal((await json<{ present: unknown[] }>(['apply'])).present.length, 4, 'the next controller finds them on the switches (pipeline: existing), adds none');

  const probes = twoWayProbes(t, lab, { objectsDir, flows: 2 });
  probes.start(PPS);
  await sleep(300);

  for (const [args, from] of [
    [['handover', '1,3', '--to', 'vnf2', '--state-delay', '100'], 'vnf1'],
    [['handover', 'all', '--from', 'vnf2', '--to', 'vnf1'], 'vnf2'],
    [['handover', '1,3', '--to', 'vnf2'], 'vnf1'],
    [['handover', '1,3', '--to', 'vnf1', '--state-delay', '200'], 'vnf2'],
  ] as const) {
    const h = await json<{ outcome: string; from: string; reason?: string }>(args);
    t.same([h.outcome, h.from], ['completed', from], `${args.join(' ')}: completed${h.reason === undefined ? '' : ` (${h.reason})`}`);
  }

  // a controller killed in the middle of its state move: the next one reads the marked rules back from the switches (pipeline: existing) and rolls the handover back from its journal
  const child = spawn(process.execPath, [cli, 'deploy', 'handover', '1,3', '--to', 'vnf2', '--state-delay', '3000', '--spec', deployFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', r));
  await new Promise<void>((resolve) => {
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('moving-state')) resolve();
    });
    void exited.then(() => resolve());
  });
  child.kill('SIGKILL');
  await exited;
  const rec = await json<{ outcome: string; reason: string }[]>(['recover']);
  t.same(rec.map((r) => r.outcome), ['aborted'], `one handover recovered: ${rec[0]?.reason}`);
  t.match(rec[0]!.reason, /left at moving-state by a previous controller/);

  // a state move that fails after switch-over: the frames held at vnf2 go back into the P4 switches, which relay them to vnf1
  const c = await openController(loadDeploySpec(deployFile));
  try {
    // the deployment's P4Runtime switches (its direct switches: no node in between)
    const sc = c.deployment.directSwitches[0] as P4RuntimeSwitches;
    const relayedAt = async (): Promise<bigint> => (await Promise.all(['s1', 's2'].map((sw) => sc.portCounters(sw)))).flat().filter((p) => p.port.endsWith('-vnf2')).reduce((a, p) => a + p.relayed, 0n);
    const before = await relayedAt();
    const res = await c.engine.handover({ rules: [1, 3], from: 'vnf1', to: 'vnf2', mover: new ThrowingMover(), expectedPps: 2 * PPS });
    t.equal(res.outcome, 'aborted');
    t.match(res.reason, /state store unreachable; traffic stays on vnf1/);
    t.ok(res.counts.relayed > 0n, `${res.counts.relayed} held frames sent back by vnf2's agent`);
    t.equal((await relayedAt()) - before, res.counts.relayed, 'and every one relayed by the switches (their relayed counters at the vnf2 ports)');
    for (const sw of ['s1', 's2']) t.same(await sc.client(sw).readEntries('relays'), [], `${sw}: the relay route is gone`);
    for (const id of [1, 3]) t.same(c.deployment.switchControl.getRule(id)!.action.phase, Phase.NONE, `rule ${id} unmarked`);
    t.same(c.deployment.switchControl.getRule(1)!.action.outPort, 's1-vnf1', 'rule 1 back on vnf1');
  } finally {
    await c.close();
  }
  await sleep(200);

  await probes.stopAndAssertIntact(1000);
});
