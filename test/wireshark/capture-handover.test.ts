// sharpctl capture, a real CLI process, records a real handover in an XDP
// lab of node processes (lab up, traffic both ways, handover of rule 1
// (client→server) from vnf1 to vnf2 while server→client stays), and tshark reads the file with the SHarP
// dissector: shim frames appear only on switch↔VNF ports and only for the
// moved flows; on each port and for each flow PRE comes before POST; the
// frames the new instance held are released in the order they arrived.
// Then Ctrl-C ends a capture at once: exit 130, the summary, a whole file.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { repoRoot } from '../helpers/env.js';
import { start } from '../helpers/cli.js';
import { listNetns, deleteNetns } from '../../src/net/iproute.js';
import { DISSECTOR_SOURCE } from '../../src/wireshark/install.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-run-'));
const name = `zc${randomBytes(3).toString('hex')}`;
const prefix = `sharp-${name}-`;
const env = { SHARPCTL_RUN_DIR: runDir };

function run(args: string[], timeout = 120_000): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout, cwd: repoRoot, env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = <T>(args: string[]): T => {
  const r = run([...args, '--name', name, '--json']);
  if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}: ${r.stderr} ${r.stdout}`);
  return JSON.parse(r.stdout) as T;
};

t.teardown(() => {
  run(['lab', 'down', '--name', name]);
  for (const ns of listNetns(prefix)) deleteNetns(ns);
  rmSync(runDir, { recursive: true, force: true });
});

interface Row {
  no: number;
  iface: string;
  comment: Record<string, string>;
  phase: number | undefined;
  hid: number | undefined;
  src: string;
  sport: number;
  seq: bigint;
}

interface Summary {
  frames: number;
  ringFull: number;
  stoppedBy: string;
  nodes: string[];
  verdicts: Record<string, number>;
}

/** `sharpctl capture --lab <lab> --json ...`; `running` resolves once it says every node captures (or it exited). */
function startCapture(args: string[]): { run: ReturnType<typeof start>; running: Promise<void>; exited: ReturnType<typeof start>['exited'] } {
  // progress on stderr also with --json: the test acts once the capture runs
  const run = start(['capture', '--lab', name, ...args, '--json'], { env: { ...env, SHARPCTL_PROGRESS: '1' }, guardMs: 120_000 });
  const running = new Promise<void>((resolve) => {
    let err = '';
    run.child.stderr.on('data', (d: string) => {
      err += d;
      if (err.includes('capturing on')) resolve();
    });
    void run.exited.then(() => resolve());
  });
  return { run, running, exited: run.exited };
}

/** flow key of a row: direction and UDP source port */
const flowOf = (r: Row): string => `${r.src}:${r.sport}`;

t.test('a capture of a handover, read by tshark with the dissector', async (t) => {
  json(['lab', 'up']);
  json(['traffic', 'start', '--rate', '2000', '--flows', '4', '--reverse']);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-capture-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const file = path.join(tmp, 'handover.pcapng');

  // long enough for the handover on a loaded machine; it ends by itself, every frame delivered
  const cap = startCapture(['-w', file, '--snaplen', '96', '--duration', '15']);
  await cap.running;
  await new Promise((r) => setTimeout(r, 300));
  const h = json<{ id: number; outcome: string; counts: { held: number; released: number } }>(['handover', '1', '--to', 'vnf2', '--state-delay', '200']);
  t.equal(h.outcome, 'completed');
  t.ok(h.counts.held > 0, `the new instance held frames (${h.counts.held})`);
  const exit = await cap.exited;
  t.equal(exit.code, 0, `the capture ended by its duration (${exit.stderr})`);
  const summary = JSON.parse(exit.stdout) as Summary;
  t.equal(summary.stoppedBy, 'duration');
  t.equal(summary.ringFull, 0, 'no record lost to a full capture ring');
  t.same(summary.nodes.map((n) => n.replace(/^.*[-_]/, '')).sort(), ['s1', 's2', 'vnf1', 'vnf2'], 'every node of the lab captured');
  t.ok(summary.frames > 1000, `${summary.frames} frames`);

  // Ctrl-C: ends at once, the file whole (frames still on their way from the nodes are not in it)
  const file2 = path.join(tmp, 'interrupted.pcapng');
  const cap2 = startCapture(['-w', file2]);
  await cap2.running;
  await new Promise((r) => setTimeout(r, 500));
  cap2.run.child.kill('SIGINT'); // our own child
  const exit2 = await cap2.exited;
  t.equal(exit2.code, 130, 'Ctrl-C: exit 130');
  const summary2 = JSON.parse(exit2.stdout) as Summary;
  t.equal(summary2.stoppedBy, 'interrupt');
  t.ok(summary2.frames > 0, `${summary2.frames} frames before Ctrl-C`);
  t.equal(execFileSync('tshark', ['-r', file2, '-T', 'fields', '-e', 'frame.number'], { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n').length, summary2.frames, 'tshark reads every frame the summary counts');

  const stop = json<{ sent: number; delivered: number; lost: number; reordered: number; duplicated: number; stampMismatches: number }[]>(['traffic', 'stop']);
  for (const d of stop) t.same([d.delivered, d.lost + d.reordered + d.duplicated + d.stampMismatches], [d.sent, 0], 'nothing lost, reordered, duplicated: the capture cost no frame');

  const text = execFileSync(
    'tshark',
    ['-X', `lua_script:${DISSECTOR_SOURCE}`, '-r', file, '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=f', ...['frame.number', 'frame.interface_name', 'frame.comment', 'sharp.phase', 'sharp.hid', 'ip.src', 'udp.srcport', 'sharp.probe.seq'].flatMap((f) => ['-e', f])],
    { encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const rows: Row[] = text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [no, iface, comment, phase, hid, src, sport, seq] = l.split('|');
      return {
        no: Number(no),
        iface: iface!,
        comment: Object.fromEntries(comment!.replace(/^sharp: /, '').split(' ').map((kv) => kv.split('=') as [string, string])),
        phase: phase ? Number(phase) : undefined,
        hid: hid ? Number(hid) : undefined,
        src: src!,
        sport: Number(sport),
        seq: BigInt(seq || '0'),
      };
    });
  t.equal(rows.length, summary.frames, 'tshark reads every frame written');
  t.ok(rows.every((r) => r.comment['program'] !== undefined && r.comment['verdict'] !== undefined), 'every packet says its program and verdict');
  t.ok(rows.every((r) => r.iface === `${r.comment['node']}:${r.comment['port']}:${r.comment['dir']}`), 'an interface per node, port and direction');

  const shim = rows.filter((r) => r.phase !== undefined);
  t.ok(shim.length > 0, `${shim.length} shim frames`);
  const hostPort = (r: Row): boolean => r.comment['program'] === 'switch' && /-(client|server)$/.test(r.comment['port']!);
  t.same(shim.filter(hostPort).map((r) => r.no), [], 'no shim frame on a switch port facing a host');
  t.ok(shim.every((r) => r.comment['program'] === 'agent' || /^s[12]-vnf[12]$/.test(r.comment['port']!)), 'switch shim frames only on switch↔VNF ports (agents sit on those links)');
  t.same([...new Set(shim.map((r) => r.hid))], [h.id], 'every shim names the handover');
  t.same(shim.filter((r) => r.comment['program'] === 'switch' && r.comment['rule'] !== '1').map((r) => r.no), [], 'the switches marked frames of the moved rule only');
  t.same(shim.filter((r) => r.src !== '10.0.0.1').map((r) => r.no), [], 'only the moved flows (client→server) carry a shim');
  t.ok(rows.some((r) => r.src === '10.0.0.2' && r.comment['program'] === 'switch' && r.comment['rule'] === '3'), 'the flows that stay (server→client, rule 3) were captured, unmarked');

  // PRE before POST: on each port (interface), and per flow at each switch
  const preBeforePost = (xs: Row[]): boolean => {
    const firstPost = xs.findIndex((r) => r.phase === 2);
    return firstPost < 0 || !xs.slice(firstPost).some((r) => r.phase === 1);
  };
  for (const iface of new Set(shim.map((r) => r.iface))) t.ok(preBeforePost(shim.filter((r) => r.iface === iface)), `PRE before POST on ${iface}`);
  const marked = shim.filter((r) => r.comment['program'] === 'switch');
  t.ok(marked.some((r) => r.phase === 1) && marked.some((r) => r.phase === 2), 'the switches sent PRE and POST frames');
  t.ok(marked.every((r) => r.comment['node'] === 's1'), 'only s1 marks (rule 1 is on s1)');
  for (const f of new Set(marked.map(flowOf))) t.ok(preBeforePost(marked.filter((r) => flowOf(r) === f)), `s1: PRE before POST for flow ${f}`);

  // held at vnf2 in arrival order, released in the same order
  const held = rows.filter((r) => r.comment['verdict'] === 'held' && r.hid === h.id);
  const released = rows.filter((r) => r.comment['verdict'] === 'released' && Number(r.comment['hid']) === h.id);
  t.equal(held.length, h.counts.held, 'every held frame was captured at hold time');
  t.equal(released.length, h.counts.released, 'and at its release');
  t.ok(held.every((r) => r.comment['node'] === 'vnf2' && r.phase === 2), 'held: POST frames, at the new instance, shown with their shim');
  t.ok(released.every((r) => r.phase === undefined), 'released: as the VNF gets them, without the shim');
  for (const port of new Set(held.map((r) => r.comment['port']!))) {
    const key = (r: Row): string => `${flowOf(r)}#${r.seq}`;
    const arrival = held.filter((r) => r.comment['port'] === port).sort((a, b) => Number(a.comment['pos']) - Number(b.comment['pos']));
    const out = released.filter((r) => r.comment['port'] === port);
    t.same(out.map(key), arrival.map(key), `${port}: released in arrival (ring) order, ${out.length} frames`);
    t.same(out.map((r) => Number(r.comment['pos'])), arrival.map((r) => Number(r.comment['pos'])), `${port}: ring positions in order`);
    for (const f of new Set(arrival.map(flowOf))) {
      const seqs = arrival.filter((r) => flowOf(r) === f).map((r) => r.seq);
      t.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!), `${port}: flow ${f} arrived in its sender's order`);
    }
  }
});
