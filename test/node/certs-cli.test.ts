// sharpctl certs … run as a user would (a process per command), through a
// stand-in for main.ts that wires addCertsCommands the same way.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/env.js';

const cli = path.join(repoRoot, 'dist/test/node/fixtures/certs-cli.js');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-certs-cli-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
const dir = path.join(tmp, 'certs');

function run(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000, cwd: tmp });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const json = <T>(s: string): T => JSON.parse(s) as T;

t.test('--help has examples', async (t) => {
  for (const args of [['certs', '--help'], ['certs', 'init', '--help'], ['certs', 'node', '--help'], ['certs', 'controller', '--help'], ['certs', 'switch', '--help'], ['certs', 'show', '--help']]) {
    const r = run(...args);
    t.equal(r.code, 0, `${args.join(' ')} exits 0`);
    t.match(r.stdout, /Examples:\n\s+sharpctl certs/, `${args.join(' ')} has examples`);
  }
  t.match(run('certs', 'node', '--help').stdout, /--ip <addr>.*--dns <name>/s);
  t.match(run('certs', 'switch', '--help').stdout, /--ip <addr>.*--dns <name>.*--grpc-server-ssl --grpc-server-with-client-auth/s, 'the simple_switch_grpc flags the files go to');
});

t.test('init, node, controller, show', async (t) => {
  const init = run('certs', 'init', dir, '--json');
  t.equal(init.code, 0, init.stderr);
  const ca = json<{ kind: string; name: string; cert: string; key: string; identity: { role: string } }>(init.stdout);
  t.same([ca.kind, ca.name, ca.identity.role], ['ca', 'sharp-ca', 'ca']);
  t.equal(statSync(ca.key).mode & 0o777, 0o600);

  const node = run('certs', 'node', 's1', '--dir', dir, '--ip', '10.9.0.2', '--ip', '127.0.0.1,fd00::2', '--dns', 's1.lab', '--json');
  t.equal(node.code, 0, node.stderr);
  const n = json<{ cert: string; identity: { name: string; dns: string[]; ips: string[] } }>(node.stdout);
  t.equal(n.cert, path.join(dir, 'node-s1.crt'));
  t.same([n.identity.name, n.identity.dns, n.identity.ips], ['s1', ['s1', 's1.lab'], ['10.9.0.2', '127.0.0.1', 'FD00:0:0:0:0:0:0:2']]);

  const human = run('certs', 'controller', 'ctl1', '--dir', dir);
  t.equal(human.code, 0, human.stderr);
  t.match(human.stdout, /^controller 'ctl1', valid until \d{4}-\d\d-\d\d\n  0644  .*controller-ctl1\.crt\n  0600  .*controller-ctl1\.key\n  SHA-256 [0-9A-F:]+\n$/);

  const show = run('certs', 'show', n.cert);
  t.equal(show.code, 0, show.stderr);
  t.match(show.stdout, /name \(CN\)\s+s1\n/);
  t.match(show.stdout, /role \(OU\)\s+node\n/);
  t.match(show.stdout, /SAN\s+DNS:s1, DNS:s1\.lab, IP:10\.9\.0\.2/);
  t.match(show.stdout, /usage\s+serverAuth, clientAuth\n/);
  t.match(show.stdout, /key\s+EC prime256v1\n/);
  t.match(show.stdout, /CA check\s+issued by .*ca\.crt\n/);
  const sj = json<{ identity: { name: string; role: string }; verified: boolean; current: boolean }>(run('certs', 'show', path.join(dir, 'controller-ctl1.crt'), '--json').stdout);
  t.same([sj.identity.name, sj.identity.role, sj.verified, sj.current], ['ctl1', 'controller', true, true]);

  const sw = run('certs', 'switch', 's2', '--dir', dir, '--ip', '10.9.0.5', '--json');
  t.equal(sw.code, 0, sw.stderr);
  const w = json<{ kind: string; cert: string; identity: { name: string; role: string; dns: string[]; ips: string[] } }>(sw.stdout);
  t.same([w.kind, w.cert, w.identity.name, w.identity.role, w.identity.dns, w.identity.ips], ['switch', path.join(dir, 'switch-s2.crt'), 's2', 'switch', ['s2'], ['10.9.0.5']]);
  t.match(run('certs', 'show', w.cert).stdout, /role \(OU\)\s+switch\n[\s\S]*usage\s+serverAuth\n/);

  // another CA's view of it: exit 1, says so
  run('certs', 'init', path.join(tmp, 'other'));
  const other = run('certs', 'show', n.cert, '--ca', path.join(tmp, 'other', 'ca.crt'));
  t.equal(other.code, 1);
  t.match(other.stdout, /CA check\s+NOT issued by/);
});

t.test('refusals: existing files (1), bad input (2), no CA (2)', async (t) => {
  const before = readFileSync(path.join(dir, 'ca.crt'));
  const again = run('certs', 'init', dir, '--json');
  t.equal(again.code, 1);
  t.match(again.stderr, /ca\.crt, .*ca\.key already exist: refusing to overwrite \(use force \/ --force to replace\)/);
  t.equal(json<{ error: { name: string } }>(again.stdout).error.name, 'CertExistsError');
  t.same(readFileSync(path.join(dir, 'ca.crt')), before);
  t.equal(run('certs', 'node', 's1', '--dir', dir).code, 1, 'an existing node');
  t.equal(run('certs', 'node', 's1', '--dir', dir, '--force').code, 0, '--force replaces');
  for (const [args, message] of [
    [['certs', 'node', 'bad_name', '--dir', dir], /node name must be a DNS name .* got 'bad_name'/],
    [['certs', 'node', 's2', '--dir', dir, '--ip', '10.9.0.300'], /not an IP address: '10\.9\.0\.300'/],
    [['certs', 'controller', 'ctl2', '--dir', dir, '--days', '0'], /--days must be an integer from 1 to 36500, got '0'/],
    [['certs', 'controller', 'ctl2', '--dir', path.join(tmp, 'nowhere')], /no CA in .*nowhere \(ca\.crt and ca\.key\): create one first with 'sharpctl certs init/],
    [['certs', 'show', path.join(dir, 'node-s1.key')], /is not a PEM certificate/],
    [['certs', 'show', path.join(dir, 'missing.crt')], /cannot read certificate/],
    [['certs', 'node'], /missing required argument 'name'/],
  ] as [string[], RegExp][]) {
    const r = run(...args);
    t.equal(r.code, 2, `${args.slice(0, 3).join(' ')} …: exit 2`);
    t.match(r.stderr, message);
  }
});
