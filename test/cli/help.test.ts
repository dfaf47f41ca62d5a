// Help pages, usage exit codes, lab names, README references, compile --target bmv2.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { repoRoot } from '../helpers/env.js';
import { runSync } from '../helpers/cli.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-help-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
const env = { SHARPCTL_RUN_DIR: path.join(tmp, 'run') };
const run = (args: readonly string[]): ReturnType<typeof runSync> => runSync(args, { env });

t.test('a bad prefix is a usage error like a bad port (exit 2, before asking any lab)', async (t) => {
  for (const [opt, v] of [
    ['--src', '10.0.0.300'],
    ['--dst', '10.0.0.0/33'],
    ['--src', 'client'],
    ['--dst', '10.0.0/8'],
  ] as const) {
    const r = run(['rule', 'add', '--switch', 's1', '--to', 'vnf2', opt, v, '--name', 'ztnolab']);
    t.equal(r.code, 2, `${opt} ${v}: exit 2`);
    t.ok(r.stderr.includes(`${opt} must be an IPv4 address or prefix`) && r.stderr.includes(`'${v}'`), `names the option and the value (${r.stderr.trim()})`);
  }
  const port = run(['rule', 'add', '--switch', 's1', '--to', 'vnf2', '--sport', '70000', '--name', 'ztnolab']);
  t.equal(port.code, 2, 'a bad port: exit 2 as before');
});

t.test('one rule for lab names, in the spec schema and in every --name, stated in --help', async (t) => {
  const schema = JSON.parse(readFileSync(path.join(repoRoot, 'src/lab/spec/lab-spec.schema.json'), 'utf8')) as { properties: { name: { $ref?: string } }; definitions: Record<string, { description: string; pattern: string }> };
  t.equal(schema.properties.name.$ref, '#/definitions/labName', "the spec's name is a labName");
  const rule = schema.definitions['labName']!;
  t.ok(rule, 'definitions.labName');
  for (const bad of ['a-b', 'My', '1lab', 'abcdefghijk', '']) {
    const r = run(['lab', 'status', '--name', bad]);
    t.equal(r.code, 2, `--name '${bad}' refused`);
    t.ok(r.stderr.includes(rule.description), `the message states the rule (${r.stderr.trim()})`);
    const spec = path.join(tmp, `name-${randomBytes(2).toString('hex')}.yaml`);
    writeFileSync(spec, `name: '${bad}'\nhosts: [{name: a, ip: 10.0.0.1/24}]\nswitches: [{name: s1}]\nlinks: [[a, s1]]\n`);
    const s = run(['lab', 'up', spec, '--name', 'ztnoup']);
    t.equal(s.code, 2, `a spec named '${bad}' refused`);
    t.ok(s.stderr.includes(rule.description), `with the same rule (${s.stderr.trim()})`);
  }
  for (const args of [['lab', 'up'], ['lab', 'down'], ['lab', 'status'], ['status'], ['handover'], ['rule', 'list'], ['traffic', 'start']]) {
    const h = run([...args, '--help']);
    t.ok(h.stdout.replace(/\s+/g, ' ').includes(rule.description), `${args.join(' ')} --help states the rule`);
  }
});

/** every command path, from the help pages' "Commands:" lists */
function commands(prefix: string[] = []): string[][] {
  const help = run([...prefix, '--help']).stdout;
  // the list ends at the first blank line (examples follow)
  const sec = help.split(/\nCommands:\n/)[1]?.split(/\n\s*\n/)[0];
  if (sec === undefined || prefix.length >= 3) return [prefix];
  const names = [...sec.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
  return [prefix, ...names.flatMap((n) => commands([...prefix, n]))];
}

t.test('every help page has examples', async (t) => {
  const all = commands();
  t.ok(all.length >= 16, `${all.length} help pages`);
  for (const args of all) {
    const r = run([...args, '--help']);
    t.equal(r.code, 0);
    t.match(r.stdout, /\nExamples:\n {2}sharpctl /, `sharpctl ${args.join(' ')} --help has an Examples section`);
  }
});

t.test('every README section an error names exists', async (t) => {
  const headings = readFileSync(path.join(repoRoot, 'README.md'), 'utf8')
    .split('\n')
    .filter((l) => /^#{1,6} /.test(l))
    .map((l) => l.replace(/^#+ /, '').trim());
  const files = [
    ...readdirSync(path.join(repoRoot, 'src'), { recursive: true }).map((f) => path.join('src', String(f))),
    'Makefile',
    ...readdirSync(path.join(repoRoot, 'test/helpers')).map((f) => path.join('test/helpers', f)),
  ].filter((f) => /\.(ts|py|mjs)$|Makefile$/.test(f) && statSync(path.join(repoRoot, f)).isFile());
  let refs = 0;
  for (const f of files) {
    const text = readFileSync(path.join(repoRoot, f), 'utf8');
    for (const m of text.matchAll(/README "([^"]+)"/g)) {
      refs++;
      const section = m[1]!;
      t.ok(
        headings.some((h) => h === section || h.startsWith(`${section} (`) || h.startsWith(`${section}:`)),
        `${f}: README "${section}" is a heading of README.md`,
      );
    }
    // a section named any other way cannot be checked
    for (const m of text.matchAll(/see README[,:] ?([A-Za-z][^)'"\n]*)/g)) t.fail(`${f}: "see README, ${m[1]}" names a section without quotes; write README "<heading>"`);
  }
  t.ok(refs > 0, `${refs} references checked`);
});

t.test('compile --target bmv2 knows the committed P4 artifacts', async (t) => {
  const r = run(['compile', '--target', 'bmv2', '--json']);
  const p4c = spawnSync('p4c', ['--version']).status === 0;
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr})`);
  const j = JSON.parse(r.stdout) as { target: string; built: string[]; upToDate: string[]; dir: string; note?: string };
  t.equal(j.dir, 'p4/build');
  t.same([...j.built, ...j.upToDate].sort(), ['sharp.json', 'sharp.p4info.json', 'sharp.p4info.txtpb']);
  t.notMatch(j.note ?? '', /no committed P4 artifacts|not part of it/);
  if (!p4c) t.match(j.note, /p4c is not installed: the artifacts in p4\/build match the P4 sources/);
  const human = run(['compile', '--target', 'bmv2']);
  t.match(human.stdout, /p4\/build\/sharp\.json/, 'the human output names the files where they are');
  if (!p4c) {
    const force = run(['compile', '--target', 'bmv2', '--force']);
    t.equal(force.code, 3, '--force without p4c: the machine cannot do it (exit 3)');
    t.match(force.stderr, /p4c is not installed/);
  }
});
