// With --json every failure prints exactly one JSON object with the error on
// stdout, commander's own usage errors included (exit 2).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runSync, jsonError } from '../helpers/cli.js';

const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-json-'));
t.teardown(() => rmSync(runDir, { recursive: true, force: true }));
const env = { SHARPCTL_RUN_DIR: runDir };

const usageErrors: string[][] = [
  ['demo', '--bogus'], // unknown option
  ['demo', '--rate'], // missing option argument
  ['demo', '--target', 'ovs'], // bad choice
  ['demo', '--rate', 'abc'], // our own parser
  ['compile', '--target', 'p5'],
  ['bench'], // missing argument
  ['bench', 'nosuch'],
  ['handover', '1'], // missing required option
  ['rule', 'add', '--switch', 's1'],
  ['rule', 'add', '--switch', 's1', '--to', 'vnf2', '--src', '10.0.0.300'],
  ['lab', 'up', '--name', 'Not-A-Name'],
  ['status', '--watch', 'soon'],
  ['demo', 'extra'], // too many arguments
  ['frobnicate'], // unknown command
];
for (const args of usageErrors) {
  t.test(`sharpctl ${args.join(' ')} --json: one JSON error on stdout, exit 2`, async (t) => {
    const r = runSync([...args, '--json'], { env });
    t.equal(r.code, 2, `exit 2 (stderr: ${r.stderr.slice(0, 200)})`);
    const e = jsonError(r.stdout);
    t.ok(e, `stdout is one {error: {name, message}} object, got ${JSON.stringify(r.stdout.slice(0, 200))}`);
    t.equal(e?.name, 'UsageError');
    t.notMatch(e?.message ?? '', /^error: /, 'without commander\'s "error: " prefix');
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  });
}

t.test('a failing command with --json prints one JSON error (exit 1: the lab is not up)', async (t) => {
  const r = runSync(['rule', 'list', '--name', 'ztnolab', '--json'], { env });
  t.equal(r.code, 1);
  t.match(jsonError(r.stdout)?.message, /lab 'ztnolab' is not up/);
});

t.test('help with --json is no failure: help on stdout, exit 0', async (t) => {
  const r = runSync(['demo', '--help', '--json'], { env });
  t.equal(r.code, 0);
  t.match(r.stdout, /^Usage: sharpctl demo/);
});
