// sharpctl lab / rule / traffic: nothing accepted silently, nothing left
// behind, limits named up front (issue 16, "Nothing lost silently").
// Every lab here has a zt<random> name and lives in a private run directory;
// teardown removes every namespace and process these tests started.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify as toYaml } from 'yaml';
import { repoRoot } from '../helpers/env.js';
import { listNetns, deleteNetns } from '../../src/net/iproute.js';
import { call } from '../../src/lab/rpc.js';
import { defaultSpec } from '../../src/lab/spec/index.js';
import { processStartTime, sameProcess } from '../../src/lab/run-dir.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-run-'));
const otherRunDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-run-'));
const tag = randomBytes(2).toString('hex');
/** lab names: zt + 4 hex + a letter (≤ 10 characters) */
const nameOf = (x: string): string => `zt${tag}${x}`;
/** processes these tests saw their own daemons start (killed in teardown if still there) */
const ourChildren: { pid: number; start: number }[] = [];

t.teardown(() => {
  for (const n of [...['a', 'b', 'c', 'r', 'o'].map(nameOf), 'default']) {
    // only this file's private run directories: 'default' there is a lab a regression named wrongly
    run(['lab', 'down', '--name', n]);
    run(['lab', 'down', '--name', n], otherRunDir);
  }
  for (const c of ourChildren) if (sameProcess(c.pid, c.start)) process.kill(c.pid, 'SIGKILL');
  for (const ns of listNetns(`sharp-zt${tag}`)) deleteNetns(ns);
  rmSync(runDir, { recursive: true, force: true });
  rmSync(otherRunDir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(args: string[], dir = runDir, timeout = 120_000): Run {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout, maxBuffer: 64 << 20, cwd: repoRoot, env: { ...process.env, SHARPCTL_RUN_DIR: dir } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function runAsync(args: string[], dir = runDir): Promise<Run> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [cli, ...args], { cwd: repoRoot, env: { ...process.env, SHARPCTL_RUN_DIR: dir } });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function json<T>(args: string[], dir = runDir): T {
  const r = run([...args, '--json'], dir);
  if (r.code !== 0) throw new Error(`${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

const specDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-spec-'));
t.teardown(() => rmSync(specDir, { recursive: true, force: true }));
function specFile(name: string, change: (s: Record<string, unknown>) => void = () => undefined): string {
  const s = defaultSpec() as unknown as Record<string, unknown>;
  s['name'] = name;
  change(s);
  const f = path.join(specDir, `${name}-${randomBytes(3).toString('hex')}.yaml`);
  writeFileSync(f, toYaml(s));
  return f;
}

const socketOf = (dir: string, name: string): string => path.join(dir, name, 'ctl.sock');
const daemonPid = (dir: string, name: string): number => (JSON.parse(readFileSync(path.join(dir, name, 'state.json'), 'utf8')) as { pid: number }).pid;

/** pids whose parent is `ppid`, with their command names */
function childrenOf(ppid: number): { pid: number; comm: string }[] {
  const out: { pid: number; comm: string }[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === ppid) out.push({ pid: Number(d), comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

t.test('refused before anything is created: usage errors exit 2, limits named', async (t) => {
  const a = nameOf('a');
  const both = run(['lab', 'down', '--all', '--name', a]);
  t.equal(both.code, 2, 'lab down --all --name: usage error');
  t.match(both.stderr, /--all.*--name|--name.*--all/);

  const withInstances = run(['lab', 'up', specFile(a), '--instances', '5']);
  t.equal(withInstances.code, 2, '--instances with a spec: usage error');
  t.match(withInstances.stderr, /--instances/);
  t.match(withInstances.stderr, /spec/);

  const badName = run(['lab', 'up', specFile('my-long-lab-name')]);
  t.equal(badName.code, 2, "a spec name that cannot name a lab is refused, not replaced by 'default'");
  t.match(badName.stderr, /my-long-lab-name/);
  // one lab-name rule (definitions.labName): such a spec is itself invalid, with --name or without, and the message states the rule
  t.match(badName.stderr, /1 to 10 lowercase letters or digits, starting with a letter/);

  const t0 = Date.now();
  const big = run([
    'lab',
    'up',
    specFile(a, (s) => {
      const vnfs = Array.from({ length: 120 }, (_, i) => `v${i + 1}`);
      s['vnfs'] = vnfs.map((name) => ({ name }));
      s['links'] = [['client', 's1'], ...vnfs.map((v) => ['s1', v]), ...vnfs.map((v) => [v, 's2']), ['s2', 'server']];
    }),
  ]);
  t.equal(big.code, 2, 'a 120-VNF spec is an invalid spec');
  t.match(big.stderr, /switch s1 has 121 ports; a switch has at most 64/);
  t.ok(Date.now() - t0 < 10_000, `refused up front (${Date.now() - t0} ms)`);
  t.same(listNetns(`sharp-zt${tag}`), [], 'no namespace was created');
});

t.test("a spec's name names the lab; rule add refuses what it cannot honour", async (t) => {
  const b = nameOf('b');
  const up = json<{ name: string; rules: unknown[] }>(['lab', 'up', specFile(b)]);
  t.equal(up.name, b, 'the lab is named after the spec');
  t.equal(listNetns(`sharp-${b}-`).length, 7, 'six nodes and the management network');
  t.same(listNetns('sharp-default-').filter((n) => n.includes(b)), []);
  const before = json<{ id: number }[]>(['rule', 'list', '--name', b]);

  const refused: [string, string[], RegExp][] = [
    ['--exact --priority', ['--exact', '--src', '10.0.0.1', '--dst', '10.0.0.2', '--sport', '1', '--dport', '2', '--proto', 'udp', '--priority', '5'], /--priority/],
    ['--exact --from', ['--exact', '--src', '10.0.0.1', '--dst', '10.0.0.2', '--sport', '1', '--dport', '2', '--proto', 'udp', '--from', 'client'], /--from/],
    ['icmp with a port', ['--proto', 'icmp', '--dport', '80'], /ports exist only for tcp and udp/],
    ['exact icmp with ports', ['--exact', '--src', '10.0.0.1', '--dst', '10.0.0.2', '--sport', '1', '--dport', '2', '--proto', 'icmp'], /ports exist only for tcp and udp/],
    ['host bits set', ['--dst', '10.0.0.5/24'], /10\.0\.0\.5\/24 has address bits set beyond its \/24 prefix; did you mean 10\.0\.0\.0\/24\?/],
    ['not an address', ['--src', '10.0.0.300'], /not an IPv4/],
    ['duplicate of rule 1', ['--dst', '10.0.0.2/32', '--from', 'client', '--priority', '1'], /rule 1 on switch s1 has the same match and priority/],
    ['duplicate, address without /32', ['--dst', '10.0.0.2', '--from', 'client', '--priority', '1'], /rule 1 on switch s1 has the same match and priority/],
  ];
  for (const [what, args, message] of refused) {
    const r = run(['rule', 'add', '--switch', 's1', '--to', 'vnf2', ...args, '--name', b]);
    t.equal(r.code, 2, `${what}: usage error`);
    t.match(r.stderr, message, `${what}: says why`);
  }
  t.same(json<{ id: number }[]>(['rule', 'list', '--name', b]), before, 'no rule was added');
  const other = json<{ id: number }>(['rule', 'add', '--switch', 's1', '--to', 'vnf2', '--dst', '10.0.0.2/32', '--from', 'client', '--priority', '2', '--name', b]);
  t.ok(other.id > 4, 'the same match with another priority is a rule of its own');
  json(['rule', 'del', String(other.id), '--name', b]);
});

t.test('traffic runs one after the other start from a clean VNF state', async (t) => {
  const b = nameOf('b');
  for (let i = 1; i <= 2; i++) {
    json(['traffic', 'start', '--flows', '4096', '--rate', '20000', '--name', b]);
    await new Promise((r) => setTimeout(r, 800));
    const stop = json<{ sent: number; delivered: number; lost: number; stampMismatches: number }[]>(['traffic', 'stop', '--name', b]);
    t.ok(stop[0]!.sent > 4096, `run ${i}: sent ${stop[0]!.sent}`);
    t.equal(stop[0]!.lost, 0, `run ${i}: nothing lost`);
    t.equal(stop[0]!.stampMismatches, 0, `run ${i}: every VNF stamp equals the sequence number`);
  }
});

t.test('the rule table: full is said in words, with the limit', async (t) => {
  const b = nameOf('b');
  const sock = socketOf(runDir, b);
  const have = json<{ id: number }[]>(['rule', 'list', '--name', b]).length;
  const ids: number[] = [];
  for (let i = 0; i < 4095 - have; i++) {
    const sport = 1 + (i % 60000);
    const r = await call<{ id: number }>(sock, 'rule.add', { switch: 's1', to: 'vnf2', match: { kind: 'exact', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport, dport: 7000 + Math.floor(i / 60000), proto: 17 } } });
    ids.push(r.id);
  }
  t.equal(json<unknown[]>(['rule', 'list', '--name', b]).length, 4095);
  const full = run(['rule', 'add', '--switch', 's1', '--exact', '--src', '10.0.0.1', '--dst', '10.0.0.2', '--sport', '1', '--dport', '9999', '--proto', 'udp', '--to', 'vnf2', '--name', b]);
  t.equal(full.code, 1);
  t.match(full.stderr, /the rule table is full: a lab holds at most 4095 rules/);
  t.notMatch(full.stderr, /out of range/);
  // a freed id is used again
  json(['rule', 'del', String(ids[100]!), '--name', b]);
  const again = json<{ id: number }>(['rule', 'add', '--switch', 's1', '--exact', '--src', '10.0.0.1', '--dst', '10.0.0.2', '--sport', '1', '--dport', '9999', '--proto', 'udp', '--to', 'vnf2', '--name', b]);
  t.equal(again.id, ids[100], 'the freed id');
  for (const id of [...ids.filter((x) => x !== ids[100]), again.id]) await call(sock, 'rule.del', { id });
});

t.test('lab status: only unowned namespaces are stray; a missing namespace is named', async (t) => {
  const b = nameOf('b');
  const c = nameOf('c');
  const o = nameOf('o');
  json(['lab', 'up', '--name', c]);
  json(['lab', 'up', '--name', o], otherRunDir); // a live lab of another run directory
  const st = json<{ labs: { name: string; status: string }[]; strayNamespaces: string[] }>(['lab', 'status', '--name', b]);
  t.same(st.labs.map((l) => l.name), [b]);
  t.same(st.strayNamespaces.filter((n) => n.startsWith(`sharp-zt${tag}`)), [], "no live lab's namespace is called stray");
  const human = run(['lab', 'status', '--name', b]);
  t.notMatch(human.stdout, /--all/, 'no advice to stop every lab');

  deleteNetns(`sharp-${c}-vnf2`);
  const deg = json<{ labs: { name: string; status: string; missingNamespaces: string[] }[] }>(['lab', 'status', '--name', c]);
  t.match(deg.labs[0]!.status, /degraded/);
  t.same(deg.labs[0]!.missingNamespaces, [`sharp-${c}-vnf2`]);
  t.match(run(['lab', 'status', '--name', c]).stdout, new RegExp(`${c}: degraded.*sharp-${c}-vnf2`));

  // --all stops this run directory's labs and unowned namespaces, never another run directory's lab
  const all = json<{ name: string }[]>(['lab', 'down', '--all']);
  t.same(all.map((r) => r.name).filter((n) => n !== '(stray)').sort(), [b, c].sort());
  t.equal(listNetns(`sharp-${o}-`).length, 7, "the other run directory's lab is untouched");
  t.same(listNetns(`sharp-${b}-`), []);
  t.same(listNetns(`sharp-${c}-`), []);
  json(['lab', 'down', '--name', o], otherRunDir);
});

t.test('two lab up of one name at once: one lab, a clear error, nothing left after down', async (t) => {
  const a = nameOf('a');
  const [r1, r2] = await Promise.all([runAsync(['lab', 'up', '--name', a, '--json']), runAsync(['lab', 'up', '--name', a, '--json'])]);
  const codes = [r1.code, r2.code].sort();
  t.same(codes, [0, 1], `one succeeds, one fails (stderr: ${r1.stderr.trim()} | ${r2.stderr.trim()})`);
  const loser = r1.code === 0 ? r2 : r1;
  t.match(loser.stderr, new RegExp(`lab '${a}' is (being brought up|up already)`));
  const st = json<{ labs: { name: string; status: string }[] }>(['lab', 'status', '--name', a]);
  t.equal(st.labs[0]?.status, 'ready', "the winner's lab is intact");
  t.equal(listNetns(`sharp-${a}-`).length, 7, 'six nodes and the management network');
  json(['lab', 'down', '--name', a]);
  t.same(listNetns(`sharp-${a}-`), []);
});

t.test('lab down after kill -9 of the daemon stops its redis-server', async (t) => {
  const r = nameOf('r');
  json(['lab', 'up', specFile(r, (s) => (s['state'] = 'redis'))]);
  json(['traffic', 'start', '--rate', '1000', '--name', r]);
  const h = json<{ outcome: string }>(['handover', '1', '--to', 'vnf2', '--name', r]);
  t.equal(h.outcome, 'completed');
  json(['traffic', 'stop', '--name', r]);
  const pid = daemonPid(runDir, r);
  const redis = childrenOf(pid).filter((c) => c.comm === 'redis-server');
  t.equal(redis.length, 1, 'the daemon started a redis-server');
  for (const c of redis) ourChildren.push({ pid: c.pid, start: processStartTime(c.pid)! });
  process.kill(pid, 'SIGKILL'); // the daemon this test started
  await new Promise((res) => setTimeout(res, 300));
  t.ok(sameProcess(redis[0]!.pid, ourChildren.at(-1)!.start), 'redis-server outlived its daemon');
  json(['lab', 'down', '--name', r]);
  t.notOk(sameProcess(redis[0]!.pid, ourChildren.at(-1)!.start), 'lab down stopped it (gone, or a zombie until init reaps it)');
  t.same(listNetns(`sharp-${r}-`), []);
});
