// sharpctl status and report show every drop counter (issue 15), forged
// shims included: a real shim frame sent from the lab's client namespace
// into switch s1's port appears as dropShim in `status --json`, in the
// status text and in `report`. And a lab whose VNFs do not stamp (linux)
// says "stamps not checked" instead of "stamp mismatches 0" (issue 14).
// Each lab has a zd<random> name in a private run directory; teardown takes
// it down and removes any namespace of its prefix.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify as toYaml } from 'yaml';
import { repoRoot } from '../helpers/env.js';
import { cli } from '../helpers/cli.js';
import { listNetns, deleteNetns } from '../../src/net/iproute.js';
import { defaultSpec } from '../../src/lab/spec/index.js';
import { BpfObjectSpec, XdpDispatcherAnchor, ifindexOf, xdpMd } from '../../src/bpf/index.js';
import { udpFrame } from '../../src/net/frame.js';
import { SHARP_PHASE_PRE } from '../../src/generated/abi.js';
import { withShim } from '../helpers/programs.js';
import { AGENT_PROGRAM_REASONS, SWITCH_PROGRAM_REASONS, type DropCounters } from '../../src/report/drop-counters.js';
import { sleep } from '../../src/util/mutex.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');
const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-run-'));
const tag = randomBytes(2).toString('hex');
const counterLab = `zd${tag}c`;
const linuxLab = `zd${tag}l`;

function run(args: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000, killSignal: 'SIGKILL', cwd: repoRoot, env: { ...process.env, SHARPCTL_RUN_DIR: runDir } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
function ok(args: readonly string[]): string {
  const r = run(args);
  if (r.code !== 0) throw new Error(`sharpctl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}
const json = <T>(args: readonly string[]): T => JSON.parse(ok([...args, '--json'])) as T;

t.teardown(() => {
  for (const n of [counterLab, linuxLab]) {
    run(['lab', 'down', '--name', n]);
    for (const ns of listNetns(`sharp-${n}-`)) deleteNetns(ns);
  }
  rmSync(runDir, { recursive: true, force: true });
});

interface Host {
  name: string;
  netns: string;
  ifname: string;
  ip: string;
  mac: string;
}
interface Status {
  hosts: Host[];
  drops: DropCounters;
}
type StampFields = { stampMismatches: number; stampsChecked: boolean; stampsNotChecked?: string; delivered: number };

const shimDrops = (d: DropCounters, sw: string, port: string): number => d.switchPorts.find((p) => p.switch === sw && p.port === port)?.dropShim ?? NaN;

t.test('a forged shim frame into a switch port: dropShim in status --json, in its text and in report', async (t) => {
  ok(['lab', 'up', '--name', counterLab]);
  const before = json<Status>(['status', '--name', counterLab]);
  for (const p of before.drops.switchPorts) for (const [k] of SWITCH_PROGRAM_REASONS) t.type(p[k], 'number', `${p.switch}/${p.port}: ${k} is read`);
  t.equal(before.drops.agents.length, 2, 'both instances');
  for (const a of before.drops.agents) {
    for (const [k] of AGENT_PROGRAM_REASONS) t.type(a[k], 'number', `${a.instance}: agent ${k} is read`);
    t.same(a.interfaces.map((i) => i.iface).sort(), ['eth0', 'eth1'], `${a.instance}: both interfaces' kernel drops`);
  }
  t.equal(before.drops.missing, undefined, 'nothing is left unread');

  // a probe-like UDP frame with shim(PRE, 9) after the MAC addresses, sent out of the client's interface (XDP_TX in a live-frames run)
  const client = before.hosts.find((h) => h.name === 'client')!;
  const server = before.hosts.find((h) => h.name === 'server')!;
  const bench = BpfObjectSpec.open(path.join(objectsDir, 'bench.bpf.o')).load();
  t.teardown(() => bench.close());
  const anchor = new XdpDispatcherAnchor(bench.program('bench_tx'), `sharptd${process.pid % 100000}`, client.netns);
  t.teardown(() => anchor.close());
  const plain = udpFrame({ srcMac: client.mac, dstMac: server.mac, srcIp: client.ip, dstIp: server.ip, srcPort: 20000, dstPort: 9000, payload: Buffer.alloc(32) });
  const forged = withShim(plain, SHARP_PHASE_PRE, 9);
  const FORGED = 3;
  await bench.program('bench_tx').runAsync({ data: forged, context: xdpMd({ dataLen: forged.length, ingressIfindex: ifindexOf(client.ifname, client.netns) }), repeat: FORGED, liveFrames: true, netns: client.netns });

  // the frames cross a veth into s1's XDP program: read until they are counted (or give up after 50 reads)
  let after = json<Status>(['status', '--name', counterLab]);
  for (let i = 0; i < 50 && shimDrops(after.drops, 's1', 's1-client') < shimDrops(before.drops, 's1', 's1-client') + FORGED; i++) {
    await sleep(100);
    after = json<Status>(['status', '--name', counterLab]);
  }
  t.equal(shimDrops(after.drops, 's1', 's1-client') - shimDrops(before.drops, 's1', 's1-client'), FORGED, `status --json: s1/s1-client dropShim +${FORGED}`);
  t.equal(after.drops.total - before.drops.total, FORGED, `drops.total +${FORGED}: nothing else dropped them`);

  const n = shimDrops(after.drops, 's1', 's1-client');
  const text = ok(['status', '--name', counterLab]);
  t.match(text, `forged shim ${n} (s1/s1-client ${n})`, 'the status text names the counter and where');
  for (const label of ['no rule', 'malformed', 'bad action', 'no headroom for the shim', 'no tx port', 'hold ring full', 'malformed shim', 'replay failed']) t.match(text, `${label} `, `the status text shows '${label}'`);

  const report = json<{ drops: DropCounters }>(['report', '--name', counterLab]);
  t.equal(shimDrops(report.drops, 's1', 's1-client'), n, 'report --json: the same dropShim');
  t.match(ok(['report', '--name', counterLab]), `forged shim ${n} (s1/s1-client ${n})`, 'and the report text');

  // this lab's VNFs stamp: the check ran and says so
  ok(['traffic', 'start', '--rate', '200', '--flows', '2', '--name', counterLab]);
  await sleep(300);
  const stop = ok(['traffic', 'stop', '--name', counterLab]);
  t.match(stop, /stamp mismatches 0/, 'a counter lab: stamp mismatches 0');
  t.notMatch(stop, 'not checked');
});

t.test('a lab of linux VNFs: "stamps not checked", in status, traffic stop and report; the JSON keeps stampMismatches and stampsChecked', async (t) => {
  const spec = defaultSpec() as unknown as { name: string; vnfs: { type?: string }[] };
  spec.name = linuxLab;
  for (const v of spec.vnfs) v.type = 'linux';
  const file = path.join(runDir, `${linuxLab}.yaml`);
  writeFileSync(file, toYaml(spec));
  ok(['lab', 'up', file, '--name', linuxLab]);
  const NOTE = 'stamps not checked (linux VNFs do not stamp)';

  ok(['traffic', 'start', '--rate', '200', '--flows', '2', '--name', linuxLab]);
  await sleep(300);
  t.match(ok(['status', '--name', linuxLab]), NOTE, 'status text while the traffic runs');
  const stopped = json<(StampFields & { direction: string })[]>(['traffic', 'stop', '--name', linuxLab]);
  for (const d of stopped) {
    t.ok(d.delivered > 0, `${d.direction}: probes went through the stack (${d.delivered})`);
    t.same({ stampMismatches: d.stampMismatches, stampsChecked: d.stampsChecked, stampsNotChecked: d.stampsNotChecked }, { stampMismatches: 0, stampsChecked: false, stampsNotChecked: 'linux VNFs do not stamp' }, `${d.direction}: traffic stop --json keeps the fields and says why`);
  }
  const report = json<{ traffic: StampFields[] }>(['report', '--name', linuxLab]);
  t.same(report.traffic.map((r) => r.stampsChecked), [false], 'report --json: stampsChecked false');
  const reportText = ok(['report', '--name', linuxLab]);
  t.match(reportText, NOTE, 'report text');
  t.notMatch(reportText, 'stamp mismatches');

  ok(['traffic', 'start', '--rate', '200', '--flows', '2', '--name', linuxLab]);
  await sleep(300);
  const stopText = ok(['traffic', 'stop', '--name', linuxLab]);
  t.match(stopText, NOTE, 'traffic stop text');
  t.notMatch(stopText, 'stamp mismatches', 'no "stamp mismatches 0" for a check that never ran');
});
