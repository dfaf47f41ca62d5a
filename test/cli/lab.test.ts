// sharpctl lab / rule / traffic / handover / status / report, spawned as a user runs them.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { repoRoot } from '../helpers/env.js';
import { listNetns, deleteNetns } from '../../src/net/iproute.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-run-'));
const name = `zt${randomBytes(3).toString('hex')}`;
const prefix = `sharp-${name}-`;

t.teardown(() => {
  run(['lab', 'down', '--name', name]);
  for (const ns of listNetns(prefix)) deleteNetns(ns);
  rmSync(runDir, { recursive: true, force: true });
});

function run(args: string[], timeout = 120_000): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout, cwd: repoRoot, env: { ...process.env, SHARPCTL_RUN_DIR: runDir } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const json = <T>(args: string[]): T => {
  const r = run([...args, '--name', name, '--json']);
  if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};

t.test('commands that need a lab say so when none is up', async (t) => {
  for (const args of [['status'], ['rule', 'list'], ['traffic', 'start'], ['handover', '1', '--to', 'vnf2'], ['report']]) {
    const r = run([...args, '--name', name]);
    t.equal(r.code, 1, `${args[0]}: exit 1`);
    t.match(r.stderr, new RegExp(`lab '${name}' is not up \\(sharpctl lab up --name ${name}\\)`));
  }
});

t.test('lab up, a second up refused, down, down again (idempotent)', async (t) => {
  const up = json<{ rules: unknown[]; instances: { name: string }[] }>(['lab', 'up']);
  t.equal(up.rules.length, 4, 'the default rules are installed');
  t.same(
    up.instances.map((i) => i.name),
    ['vnf1', 'vnf2'],
  );
  t.equal(listNetns(prefix).length, 7, 'seven namespaces: client, server, s1, s2, vnf1, vnf2 and the management network');
  const again = run(['lab', 'up', '--name', name]);
  t.equal(again.code, 1);
  t.match(again.stderr, /is up already \(daemon pid \d+\)/);
  const down = json<{ daemon: string; removedNamespaces: string[] }[]>(['lab', 'down']);
  t.equal(down[0]!.daemon, 'stopped');
  t.same(listNetns(prefix), [], 'every namespace removed');
  const down2 = json<{ daemon: string; removedNamespaces: string[] }[]>(['lab', 'down']);
  t.same(down2, [{ name, daemon: 'not running', removedNamespaces: [] }], 'a second down has nothing to do and succeeds');
});

t.test('lab down cleans up after a crashed daemon', async (t) => {
  json(['lab', 'up']);
  const state = JSON.parse(readFileSync(path.join(runDir, name, 'state.json'), 'utf8')) as { pid: number };
  process.kill(state.pid, 'SIGKILL'); // the daemon this test started
  await new Promise((r) => setTimeout(r, 200));
  const st = json<{ labs: { name: string; status: string }[] }>(['lab', 'status']);
  t.match(st.labs.find((l) => l.name === name)?.status, /crashed/);
  t.equal(listNetns(prefix).length, 7, 'the crash left its namespaces behind (the management network too)');
  json(['lab', 'down']);
  t.same(listNetns(prefix), [], 'lab down found them by prefix and removed them');
});

t.test('drive a handover by hand: traffic, handover, status, report', async (t) => {
  json(['lab', 'up']);
  t.teardown(() => run(['lab', 'down', '--name', name]));
  json(['traffic', 'start', '--rate', '2000', '--flows', '4', '--reverse']);
  await new Promise((r) => setTimeout(r, 300));
  const h = json<{ outcome: string; from: string; to: string; counts: { held: number; released: number } }>(['handover', '1,3', '--to', 'vnf2', '--state-delay', '200']);
  t.equal(h.outcome, 'completed');
  t.equal(h.from, 'vnf1');
  t.ok(h.counts.held > 0 && h.counts.held === h.counts.released, `held ${h.counts.held} = released ${h.counts.released}`);
  const back = json<{ outcome: string }>(['handover', 'all', '--from', 'vnf2', '--to', 'vnf1']);
  t.equal(back.outcome, 'completed');
  const status = json<{ rules: { id: number; action: { outPort: string } }[]; active: unknown[] }>(['status']);
  t.equal(status.rules.find((r) => r.id === 1)!.action.outPort, 's1-vnf1');
  t.same(status.active, []);
  await new Promise((r) => setTimeout(r, 200));
  const stop = json<{ sent: number; delivered: number; lost: number; reordered: number; duplicated: number; stampMismatches: number }[]>(['traffic', 'stop']);
  t.equal(stop.length, 2);
  for (const d of stop) {
    t.ok(d.sent > 500);
    t.equal(d.delivered, d.sent);
    t.equal(d.lost + d.reordered + d.duplicated + d.stampMismatches, 0);
  }
  const report = json<{ handovers: unknown[] }>(['report']);
  t.equal(report.handovers.length, 2);
  const bad = run(['handover', '1', '--to', 'vnf9', '--name', name]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /no VNF instance 'vnf9'/);
  const addBad = run(['rule', 'add', '--switch', 's1', '--to', 'vnf2', '--exact', '--src', '10.0.0.1', '--name', name]);
  t.equal(addBad.code, 2);
  t.match(addBad.stderr, /--exact needs --dst, --sport, --dport, --proto/);
  const added = json<{ id: number }>(['rule', 'add', '--switch', 's1', '--exact', '--src', '10.0.0.1', '--dst', '10.0.0.2', '--sport', '30000', '--dport', '9000', '--proto', 'udp', '--to', 'vnf2']);
  t.ok(added.id > 4);
  const portBad = run(['rule', 'add', '--switch', 's1', '--dst', '10.0.0.2', '--to', 'vnf7', '--name', name]);
  t.equal(portBad.code, 1);
  t.match(portBad.stderr, /switch s1 has no port towards 'vnf7' \(ports: s1-client, s1-vnf1, s1-vnf2\)/);
  json(['rule', 'del', String(added.id)]);
});

t.test('a rule under handover is locked; an overflowing handover is refused up front, using the requested state delay', async (t) => {
  json(['lab', 'up']);
  t.teardown(() => run(['lab', 'down', '--name', name]));
  json(['traffic', 'start', '--rate', '1000', '--flows', '2', '--reverse']);
  await new Promise((r) => setTimeout(r, 300));
  // 1000 pps per side × (5 s + margins) × 2 > the 8192-frame ring: refused, nothing changed
  const big = run(['handover', '1,3', '--to', 'vnf2', '--state-delay', '5000', '--name', name]);
  t.equal(big.code, 1, 'refused: exit 1');
  t.match(big.stderr, /hold ring of vnf2 holds 8192 frames per side, but .* over 5\d\d\d ms .*refusing/);
  // a long handover in the background; meanwhile its rules cannot be deleted, nor moved again
  const { spawn } = await import('node:child_process');
  const bg = spawn(process.execPath, [cli, 'handover', '1,3', '--to', 'vnf2', '--state-delay', '3000', '--name', name], { cwd: repoRoot, env: { ...process.env, SHARPCTL_RUN_DIR: runDir } });
  let out = '';
  bg.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<number | null>((r) => bg.once('exit', r));
  // until it reports the state move (3 s of it)
  let early: number | null | undefined;
  void done.then((c) => (early = c));
  await new Promise<void>((resolve) => {
    let err = '';
    bg.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('moving-state')) resolve();
    });
    void done.then(() => resolve());
  });
  t.equal(early, undefined, `the background handover is in flight (it did not end early: ${out})`);
  const del = run(['rule', 'del', '1', '--name', name]);
  t.not(del.code, 0, 'deleting a rule under handover is refused');
  t.match(del.stderr, /rule 1 is being moved by handover \d+/);
  const again = run(['handover', '1,3', '--to', 'vnf1', '--name', name]);
  t.not(again.code, 0);
  t.match(again.stderr, /rule 1 is being moved by handover \d+/, 'a second handover of the rules names the first');
  t.equal(await done, 0, 'the handover completed');
  t.match(out, /handover \d+ vnf1 → vnf2: completed in/);
  const stop = json<{ sent: number; delivered: number; lost: number }[]>(['traffic', 'stop']);
  for (const d of stop) t.equal(d.delivered, d.sent, 'nothing lost');
  const rules = json<{ id: number; action: { phase: number } }[]>(['rule', 'list']);
  t.same(rules.filter((r) => r.action.phase !== 0), [], 'no rule left marked');
});
