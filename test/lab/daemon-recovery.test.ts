// The lab daemon survives its own death: sharpctl lab up, probe traffic both
// ways that this test owns (generator and sink in the client and server
// namespaces, not in the daemon), then kill -9 of the lab daemon (a) while
// idle, with one node process killed too, (c) frozen as a handover enters
// releasing (SHARP_LAB_PAUSE_AT: committed, so recovered forward) and (b)
// during a handover's state move (rolled back). Traffic keeps flowing while
// the daemon is dead; sharpctl lab recover adopts the lab and recovers the
// handover in flight; the next handover completes; nothing lost, reordered
// or duplicated; the daemon's own traffic is reported as ended with it;
// lab down leaves no namespace, process or pin.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { repoRoot } from '../helpers/env.js';
import { cli, runSync } from '../helpers/cli.js';
import { listNetns, deleteNetns } from '../../src/net/iproute.js';
import { planLab, standardSpec } from '../../src/lab/netns-lab.js';
import { detachLabNodesIn } from '../../src/lab/lab-nodes.js';
import { sameProcess, stopRecordedProcesses, type DaemonRecord, type LabState } from '../../src/lab/run-dir.js';
import { twoWayProbes } from '../helpers/handovers.js';
import { sleep } from '../../src/util/mutex.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');
const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-recover-'));
const name = `zt${randomBytes(3).toString('hex')}`;
const prefix = `sharp-${name}-`;
const env = { SHARPCTL_RUN_DIR: runDir };
const PPS = 1000;
/** every node process the lab ran (by pid and start time): the clean-up stops only these */
const nodeProcs: DaemonRecord[] = [];

const run = (args: string[], timeout = 120_000): ReturnType<typeof runSync> => runSync([...args, '--name', name], { env, timeout });
const json = <T>(args: string[]): T => {
  const r = run([...args, '--json']);
  if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
};
const state = (): LabState => JSON.parse(readFileSync(path.join(runDir, name, 'state.json'), 'utf8')) as LabState;
const recordNodes = (): void => {
  for (const n of state().adopt?.nodes ?? []) if (!nodeProcs.some((p) => p.pid === n.pid && p.pidStart === n.pidStart)) nodeProcs.push(n);
};

t.teardown(async () => {
  run(['lab', 'down']);
  await stopRecordedProcesses(nodeProcs);
  const nodesDir = path.join(runDir, name, 'work', 'nodes');
  if (existsSync(nodesDir)) detachLabNodesIn(nodesDir, cli);
  for (const ns of listNetns(prefix)) deleteNetns(ns);
  rmSync(runDir, { recursive: true, force: true });
});

/**
 * `sharpctl handover <args>` in the background; `reached` resolves when it
 * prints `step` (rejects if it exits first or takes 60 s), `exit` with its
 * exit code.
 */
function handoverUntil(args: string[], step: string): { reached: Promise<void>; exit: Promise<number | null> } {
  const child = spawn(process.execPath, [cli, 'handover', ...args, '--name', name], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const reached = new Promise<void>((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`handover ${args.join(' ')}: no '${step}' within 60 s: ${err}`)), 60_000);
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes(step)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exit.then(() => {
      clearTimeout(timer);
      reject(new Error(`handover ${args.join(' ')} exited before '${step}': ${err}`));
    });
  });
  return { reached, exit };
}

/** Kills the lab's daemon (the one this test's lab up or recover started) and waits until it is gone. */
async function killDaemon(t: Test): Promise<DaemonRecord> {
  const st = state();
  const d = { pid: st.pid, ...(st.pidStart === undefined ? {} : { pidStart: st.pidStart }) };
  t.ok(sameProcess(d.pid, d.pidStart), `the daemon (pid ${d.pid}) runs`);
  process.kill(d.pid, 'SIGKILL');
  for (let i = 0; i < 100 && sameProcess(d.pid, d.pidStart); i++) await sleep(20);
  return d;
}

/** Runs `handover <args>`, kills the daemon as the handover prints `step`, waits `gapMs`; returns the probes delivered since the kill, each direction. */
async function killMidHandover(t: Test, args: string[], step: string, gapMs: number, delivered: () => number[]): Promise<number[]> {
  const h = handoverUntil(args, step);
  await h.reached;
  const at = delivered();
  await killDaemon(t);
  t.not(await h.exit, 0, 'the handover command fails with its daemon');
  await sleep(gapMs);
  return delivered().map((d, i) => d - at[i]!);
}

/** lab recover after a kill mid-handover: the one handover it recovered. */
function recoverOne(t: Test): Recovery['handovers'][number] {
  const dead = state().pid;
  const rec = json<Recovery>(['lab', 'recover']);
  recordNodes();
  t.equal(rec.previousDaemon.pid, dead, `the new daemon replaces pid ${dead}`);
  t.ok(rec.nodes.every((n) => n.how === 'adopted'), 'every node process adopted');
  t.equal(rec.handovers.length, 1, 'one handover was in flight');
  return rec.handovers[0]!;
}

interface Recovery {
  previousDaemon: { pid: number };
  nodes: { node: string; how: 'adopted' | 'restarted'; pid: number }[];
  handovers: { id: number; outcome: string; reason?: string }[];
  trafficEnded?: { note: string };
}

t.test('kill -9 of the lab daemon, idle and mid-handover: traffic flows on, lab recover adopts the lab and recovers the handover', async (t) => {
  const up = json<{ rules: { id: number; action: { outPort: string } }[] }>(['lab', 'up']);
  t.equal(up.rules.length, 4, 'the standard lab');
  recordNodes();
  t.equal(nodeProcs.length, 4, 'four node processes, recorded in the run directory with their start times');

  // the probes are this test's: generator and sink run in the lab's client and server namespaces, in this process
  const plan = planLab(standardSpec(), prefix);
  const [client, server] = [plan.hosts[0]!, plan.hosts[1]!];
  const probes = twoWayProbes(t, { client, server }, { objectsDir, flows: 2, stamps: true });
  const delivered = (): number[] => probes.delivered();
  probes.start(PPS);
  await sleep(500);

  // (a) idle: the daemon and, with it, the node process of vnf2 (no traffic through it now)
  const vnf2 = state().adopt!.nodes.find((n) => n.role === 'vnf2')!;
  const before = delivered();
  const dead = await killDaemon(t);
  process.kill(vnf2.pid, 'SIGKILL'); // a node process of this test's lab (pid and start time from its state)
  await sleep(1500);
  const during = delivered().map((d, i) => d - before[i]!);
  t.ok(
    during.every((d) => d > 0),
    `frames delivered while the daemon was dead (1.5 s): client→server ${during[0]}, server→client ${during[1]}`,
  );
  t.ok(
    state().adopt!.nodes.filter((n) => n.role !== 'vnf2').every((n) => sameProcess(n.pid, n.pidStart)),
    'the other node processes outlived their parent (their log goes to files, not to its pipes)',
  );
  const refused = run(['status']);
  t.equal(refused.code, 1, 'status on a lab whose daemon died: exit 1');
  t.match(refused.stderr, new RegExp(`lab '${name}' lost its daemon \\(pid ${dead.pid} is gone\\).*sharpctl lab recover --name ${name}`), 'saying what to run');
  const upAgain = run(['lab', 'up']);
  t.equal(upAgain.code, 1, 'lab up on it is refused');
  t.match(upAgain.stderr, /lab recover .*nothing was changed/);

  // the new daemon freezes when its first handover enters releasing (committed: the state has moved), for (c) below
  const r1 = runSync(['lab', 'recover', '--name', name, '--json'], { env: { ...env, SHARP_LAB_PAUSE_AT: 'releasing' }, timeout: 120_000 });
  t.equal(r1.code, 0, `lab recover: ${r1.stderr}`);
  const rec1 = JSON.parse(r1.stdout) as Recovery;
  recordNodes();
  t.equal(rec1.previousDaemon.pid, dead.pid, 'the new daemon replaces the dead one');
  t.same(rec1.handovers, [], 'no handover was in flight');
  t.same(
    rec1.nodes.map((n) => [n.node.slice(prefix.length), n.how]),
    [
      ['s1', 'adopted'],
      ['s2', 'adopted'],
      ['vnf1', 'adopted'],
      ['vnf2', 'restarted'],
    ],
    'three node processes adopted, the dead one started again (it re-adopted its pins)',
  );
  const again = run(['lab', 'recover']);
  t.equal(again.code, 1, 'a second recover: exit 1');
  t.match(again.stderr, /has a running daemon .*nothing to recover/);

  // (c) killed once committed (B's release about to begin): rule 1 (client→server) to the restarted vnf2; server→client stays on vnf1
  const duringC = await killMidHandover(t, ['1', '--to', 'vnf2'], 'releasing', 1000, delivered);
  t.ok(duringC[1]! > 0, `server→client frames delivered while the daemon was dead at releasing: ${duringC[1]} (client→server held in vnf2's ring: ${duringC[0]} delivered)`);
  const hC = recoverOne(t);
  t.equal(hC.outcome, 'completed', `committed, so finished forward: ${hC.reason}`);
  t.match(hC.reason, /left at releasing by a previous controller, finished/);
  t.equal(json<{ id: number; action: { outPort: string } }[]>(['rule', 'list']).find((r) => r.id === 1)?.action.outPort, 's1-vnf2', 'rule 1 sends to the restarted vnf2');

  // (b) mid-handover: rule 1 (client→server) back to vnf1, killed during its state move; server→client (rule 3) stays on vnf1
  const during2 = await killMidHandover(t, ['1', '--to', 'vnf1', '--state-delay', '3000'], 'moving-state', 1500, delivered);
  t.ok(during2[1]! > 0, `server→client frames delivered while the daemon was dead mid-handover: ${during2[1]} (client→server held in vnf1's ring meanwhile: ${during2[0]} delivered)`);
  const h2 = recoverOne(t);
  t.ok(h2.outcome === 'aborted' || h2.outcome === 'completed', `recovered: ${h2.outcome} (${h2.reason})`);
  t.match(h2.reason, /left at moving-state by a previous controller/);
  const rules = json<{ id: number; action: { outPort: string; phase: number } }[]>(['rule', 'list']);
  t.ok(rules.every((r) => r.action.phase === 0), 'no rule is left marked');
  const at = rules.find((r) => r.id === 1)!.action.outPort;
  t.equal(at, h2.outcome === 'aborted' ? 's1-vnf2' : 's1-vnf1', `rule 1 sends to ${at}`);
  const report = json<{ handovers: { id: number; outcome: string }[] }>(['report']);
  // a daemon's report holds its own handovers: this one's, the recovered one
  t.same(report.handovers.map((h) => h.outcome), [h2.outcome], "the recovered handover is in the new daemon's report");
  // the next handover, through the CLI, completes
  const h3 = json<{ outcome: string }>(['handover', 'all', '--from', 'vnf2', '--to', 'vnf1']);
  t.equal(h3.outcome, 'completed', 'the next handover completes');
  await sleep(300);

  // over both deaths and recoveries: nothing lost, reordered or duplicated, every stamp continuous
  await probes.stopAndAssertIntact(5 * PPS);

  // the daemon's own traffic dies with it: the next one says so and invents no numbers
  json(['traffic', 'start', '--rate', '500', '--flows', '2', '--reverse']);
  await sleep(300);
  await killDaemon(t);
  const rec3 = json<Recovery>(['lab', 'recover']);
  recordNodes();
  t.match(rec3.trafficEnded?.note, /ended with lab daemon pid \d+, which died/, 'the recovery says the traffic run ended with the old daemon');
  const st3 = json<{ traffic?: unknown; trafficEnded?: { note: string } }>(['status']);
  t.equal(st3.traffic, undefined, 'status has no traffic numbers for it');
  t.ok(st3.trafficEnded !== undefined, 'and says why');
  const stop = run(['traffic', 'stop']);
  t.equal(stop.code, 1);
  t.match(stop.stderr, /no traffic is running: the traffic run started at .* ended with lab daemon pid/);

  // lab down removes everything, the node processes the first daemon started included
  const down = json<{ daemon: string }[]>(['lab', 'down']);
  t.equal(down[0]!.daemon, 'stopped');
  t.same(listNetns(prefix), [], 'no namespace of the lab is left');
  t.same(
    nodeProcs.filter((p) => sameProcess(p.pid, p.pidStart)),
    [],
    `none of the ${nodeProcs.length} node processes the lab ran is left`,
  );
  const pins = existsSync('/sys/fs/bpf/sharpctl') ? readdirSync('/sys/fs/bpf/sharpctl').filter((n) => n.startsWith(prefix)) : [];
  t.same(pins, [], 'no pin of its nodes is left');
});
