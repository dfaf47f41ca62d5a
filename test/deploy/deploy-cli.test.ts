// sharpctl deploy, run as a user runs it, against node processes in a lab of
// namespaces: apply the spec's rules, handovers back and forth under traffic
// both ways, a controller killed mid-handover and recovered by the next
// invocation — nothing lost.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openNodeLab } from '../../src/lab/lab-nodes.js';
import { standardSpec } from '../../src/lab/netns-lab.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { parseExposition } from '../../src/metrics/textfile.js';
import { twoWayProbes } from '../helpers/handovers.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const objectsDir = path.join(repoRoot, 'build/ebpf');

t.test('deploy apply, handovers under traffic, a killed controller recovered by the next one', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-deploy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const prefix = `${uniqueName('dp')}-`;
  const spec = standardSpec({ ringCapacity: 8192 });
  const nl = await openNodeLab({ ...spec, rules: [] }, prefix, { dir: path.join(dir, 'nodes'), cli });
  t.teardown(() => nl.close());
  const deployFile = path.join(dir, 'deploy.json');
  writeFileSync(
    deployFile,
    JSON.stringify({
      controller: { name: 'ctl1', journal: 'journal' },
      state: 'vnf-map',
      nodes: nl.nodes.map((p) => ({ name: p.node.config.name, socket: p.node.config.listen.unix })),
      rules: spec.rules.map((r) => ('flow' in r ? r : { switch: r.switch, to: r.to, priority: r.priority, match: r.match })),
    }),
  );
  const run = (args: string[]): { code: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [cli, 'deploy', ...args, '--spec', deployFile], { encoding: 'utf8', timeout: 60_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const json = <T>(args: string[]): T => {
    const r = run([...args, '--json']);
    if (r.code !== 0) throw new Error(`deploy ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  const applied = json<{ added: { id: number }[] }>(['apply']);
  t.equal(applied.added.length, 4, 'the four rules installed on the two switch nodes');
  t.equal(json<{ added: unknown[]; present: unknown[] }>(['apply']).present.length, 4, 'apply again: every rule is there already, none added');
  const bad = spawnSync(process.execPath, [cli, 'deploy', 'status', '--spec', path.join(dir, 'nope.yaml')], { encoding: 'utf8' });
  t.equal(bad.status, 2, 'a missing spec is a usage error');

  const lab = nl.lab;
  const probes = twoWayProbes(t, lab, { objectsDir, flows: 2 });
  probes.start(1000);
  await sleep(300);

  // both handovers' figures go into one node_exporter textfile, added up
  const textfile = path.join(dir, 'sharp-handovers.prom');
  const h1 = json<{ outcome: string; from: string }>(['handover', '1,3', '--to', 'vnf2', '--state-delay', '100', '--metrics-textfile', textfile]);
  t.same([h1.outcome, h1.from], ['completed', 'vnf1']);
  const h2 = json<{ outcome: string }>(['handover', 'all', '--from', 'vnf2', '--to', 'vnf1', '--metrics-textfile', textfile]);
  t.equal(h2.outcome, 'completed');
  const samples = parseExposition(readFileSync(textfile, 'utf8'), textfile).flatMap((f) => f.samples);
  const sample = (name: string, label?: [string, string]): number | undefined => samples.find((s) => s.name === name && (label === undefined || s.labels.some((l) => l[0] === label[0] && l[1] === label[1])))?.value;
  t.equal(sample('sharp_handovers_total', ['outcome', 'completed']), 2, 'the textfile counts both handovers');
  t.equal(sample('sharp_handovers_refused_total', ['reason', 'invalid']), 0, 'and no refusal yet');
  t.equal(sample('sharp_handover_phase_duration_seconds_count', ['phase', 'moving-state']), 2, 'and both state moves');
  t.equal(sample('sharp_handover_state_move_duration_seconds_count', ['backend', 'vnf-map']), 2, "under the spec's backend");
  // a request the controller refuses (nothing sends to vnf2 now) is counted as refused in the same file, and no handover
  const none = run(['handover', 'all', '--from', 'vnf2', '--to', 'vnf1', '--metrics-textfile', textfile]);
  t.not(none.code, 0, 'a handover of no rule is refused');
  const again = parseExposition(readFileSync(textfile, 'utf8'), textfile).flatMap((f) => f.samples);
  const now = (name: string, label: [string, string]): number | undefined => again.find((s) => s.name === name && s.labels.some((l) => l[0] === label[0] && l[1] === label[1]))?.value;
  t.equal(now('sharp_handovers_refused_total', ['reason', 'invalid']), 1, 'sharp_handovers_refused_total{reason="invalid"} 1');
  t.equal(now('sharp_handovers_total', ['outcome', 'completed']), 2, 'the handovers still 2');
  // a malformed textfile stops the handover before it begins
  const broken = path.join(dir, 'broken.prom');
  writeFileSync(broken, '# TYPE sharp_handovers_total counter\nsharp_handovers_total{outcome="completed"} two\n');
  const refused = run(['handover', 'all', '--from', 'vnf1', '--to', 'vnf2', '--metrics-textfile', broken]);
  t.equal(refused.code, 2, 'a malformed --metrics-textfile is a usage error');
  t.match(refused.stderr, /broken\.prom:2: .*'two' is not a number; the file is unchanged/, 'naming the file and the line');
  t.equal(readFileSync(broken, 'utf8'), '# TYPE sharp_handovers_total counter\nsharp_handovers_total{outcome="completed"} two\n', 'the file as it was');
  t.ok(json<{ rules: { action: { outPort: string } }[] }>(['status']).rules.filter((r) => r.action.outPort.endsWith('vnf1') || r.action.outPort.endsWith('vnf2')).every((r) => r.action.outPort.endsWith('vnf1')), 'and no handover ran: the rules still send to vnf1');

  // a controller killed in the middle of its state move
  const child = spawn(process.execPath, [cli, 'deploy', 'handover', '1,3', '--to', 'vnf2', '--state-delay', '3000', '--spec', deployFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('moving-state')) resolve();
    });
    child.once('exit', () => resolve());
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  await sleep(200);
  const st = json<{ rules: { action: { phase: number } }[] }>(['status']);
  t.ok(st.rules.some((r) => r.action.phase !== 0), 'the dead controller left its rules marked: the handover is in flight');
  const rec = json<{ outcome: string; reason: string }[]>(['recover']);
  t.equal(rec.length, 1, 'one handover to recover');
  t.equal(rec[0]!.outcome, 'aborted', rec[0]!.reason);
  t.match(rec[0]!.reason, /left at moving-state by a previous controller/);
  t.same(json<unknown[]>(['recover']), [], 'nothing left to recover');
  const h3 = json<{ outcome: string }>(['handover', '1,3', '--to', 'vnf2']);
  t.equal(h3.outcome, 'completed', 'the next handover completes');

  await probes.stopAndAssertIntact(1000);
});
