// The real CLI, spawned as a user would run it.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/env.js';
import { listNetns } from '../../src/net/iproute.js';
import { wellFormed } from '../helpers/xml.js';
import { bmv2Availability } from '../../src/lab/mininet-lab.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');

function run(args: string[], timeout = 120_000): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout, cwd: repoRoot });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

t.test('--help everywhere, with examples', async (t) => {
  for (const args of [['--help'], ['demo', '--help'], ['compile', '--help']]) {
    const r = run(args);
    t.equal(r.code, 0, `${args.join(' ')} exits 0`);
    t.match(r.stdout, /Usage: sharpctl/);
  }
  t.match(run(['demo', '--help']).stdout, /Examples:\n\s+sharpctl demo/);
});

const invalid: [string[], RegExp][] = [
  [['demo', '--rate', 'abc'], /--rate must be an integer from 1 to 2000000, got 'abc'/],
  [['demo', '--rate', '0'], /--rate must be an integer from 1 to 2000000, got '0'/],
  [['demo', '--rate', '1.5'], /--rate must be an integer/],
  [['demo', '--handovers', '-1'], /--handovers must be an integer from 0 to 1000/],
  [['demo', '--handovers', '1001'], /--handovers must be an integer from 0 to 1000/],
  [['demo', '--state-delay', '60001'], /--state-delay must be an integer from 0 to 60000/],
  [['demo', '--state-delay', 'soon'], /--state-delay must be an integer/],
  [['demo', '--duration', '0'], /--duration must be an integer from 1 to 3600/],
  [['demo', '--flows', '5000'], /--flows must be an integer from 1 to 4096/],
  [['demo', '--target', 'ovs'], /argument 'ovs' is invalid. Allowed choices are xdp, bmv2/],
  [['demo', '--bogus'], /unknown option '--bogus'/],
  [['demo', '--rate'], /option '--rate <pps>' argument missing/],
  [['compile', '--target', 'p5'], /Allowed choices are xdp, bmv2/],
  [['frobnicate'], /unknown command 'frobnicate'/],
  [['demo', 'extra'], /too many arguments/],
];
// specs given to lab up: rejected before anything is created
const specDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-spec-'));
t.teardown(() => rmSync(specDir, { recursive: true, force: true }));
const specFile = (name: string, text: string): string => {
  const f = path.join(specDir, name);
  writeFileSync(f, text);
  return f;
};
invalid.push(
  [['lab', 'up', specFile('syntax.yaml', 'name: x\nhosts: [\n')], /syntax\.yaml.*line 3/s],
  [['lab', 'up', specFile('unknown.json', JSON.stringify({ name: 'x', hosts: [], switches: [], vnfs: [], links: [], rules: [], colour: 'blue' }))], /colour/],
  [['lab', 'up', specFile('dup.yaml', 'name: x\nhosts: [{name: a, ip: 10.0.0.1/24}, {name: a, ip: 10.0.0.2/24}]\nswitches: []\nvnfs: []\nlinks: []\nrules: []\n')], /hosts\[1\]\.name.*'a' is already the name/],
  [['lab', 'up', path.join(specDir, 'missing.yaml')], /missing\.yaml/],
);

for (const [args, message] of invalid) {
  t.test(`sharpctl ${args.join(' ')} → usage error`, async (t) => {
    const r = run(args);
    t.equal(r.code, 2, 'exit code 2 (usage)');
    t.match(r.stderr, message);
  });
}

t.test(
  'without BMv2, --target bmv2 is refused as the machine cannot run it, with the reason',
  { skip: bmv2Availability().ok ? 'BMv2 and Mininet are installed here (the BMv2 tests run instead)' : false },
  async (t) => {
    for (const args of [
      ['demo', '--target', 'bmv2'],
      ['lab', 'up', '--target', 'bmv2', '--name', 'nobmv2'],
    ]) {
      const r = run(args);
      t.equal(r.code, 3, `${args.join(' ')}: exit code 3 (environment)`);
      t.match(r.stderr, /target bmv2: (simple_switch_grpc is not on PATH|Mininet is not installed|.*cannot import mininet)/, 'says what is missing');
    }
  },
);

t.test('compile reports what is up to date, as JSON', async (t) => {
  const r = run(['compile', '--json']);
  t.equal(r.code, 0);
  const j = JSON.parse(r.stdout) as { target: string; built: string[]; upToDate: string[] };
  t.equal(j.target, 'xdp');
  t.ok(j.upToDate.includes('switch.bpf.o') || j.built.includes('switch.bpf.o'));
});

t.test('demo in a short mode: lossless, 0 controller bytes, stamps continuous, SVG well-formed', async (t) => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'sharpt-demo-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const before = listNetns('sharp-demo');
  const r = run(['demo', '--json', '--rate', '2000', '--handovers', '3', '--state-delay', '100', '--duration', '2', '--out', out]);
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.slice(-400)})`);
  const rep = JSON.parse(r.stdout) as Record<string, unknown> & { handovers: { outcome: string; id: number; from: string; to: string; durationMs: number; stateDelayMs: number }[] };
  for (const k of ['sent', 'delivered', 'lost', 'reordered', 'duplicated', 'stampMismatches', 'controllerDataBytes', 'held', 'released', 'handovers']) t.ok(k in rep, `report has ${k}`);
  t.ok((rep['sent'] as number) > 5000, `${rep['sent']} probes sent`);
  t.equal(rep['delivered'], rep['sent']);
  t.equal(rep['lost'], 0);
  t.equal(rep['reordered'], 0);
  t.equal(rep['duplicated'], 0);
  t.equal(rep['stampMismatches'], 0);
  t.equal(rep['controllerDataBytes'], 0);
  t.equal(rep['held'], rep['released']);
  t.equal(rep.handovers.length, 3);
  for (const h of rep.handovers) {
    t.equal(h.outcome, 'completed');
    t.equal(h.stateDelayMs, 100);
    t.ok(h.durationMs >= 100);
  }
  t.same(
    rep.handovers.map((h) => `${h.from}>${h.to}`),
    ['vnf1>vnf2', 'vnf2>vnf1', 'vnf1>vnf2'],
  );
  const svg = readFileSync(path.join(out, 'timeline.svg'), 'utf8');
  t.ok(existsSync(path.join(out, 'report.json')));
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  t.ok(wellFormed(svg), 'the SVG is well-formed');
  t.match(svg, /handover \d+ vnf1→vnf2: moving-state/, 'handover phases are shaded');
  t.same(listNetns('sharp-demo'), before, 'the demo tore its lab down');
});
