#!/usr/bin/env node
// Runs the tap suite on the compiled tests, then the leftover check (which
// must run last, after every other test process has exited), and closes with
// one plain summary line: "N passed, N failed, N skipped".
import { spawn } from 'node:child_process';
import path from 'node:path';
import { readdirSync, statSync } from 'node:fs';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const tap = path.join(root, 'node_modules/.bin/tap');
const targets = process.argv.slice(2);
const LAST = 'dist/test/zz-leftovers.test.js';

/** "name: reason" of every skipped test */
const skipped = [];
/** "file › subtest › assertion" of every failed assertion (todo ones excluded) */
const failed = [];

// Nested subtests indent by four spaces; a failure is named by its path.
function collectFailures(output) {
  const stack = [];
  for (const line of output.split('\n')) {
    const sub = /^(\s*)# Subtest: (.*)$/.exec(line);
    if (sub) {
      const depth = sub[1].length / 4;
      stack.length = depth;
      stack[depth] = sub[2];
      continue;
    }
    const bad = /^(\s*)not ok \d+ - (.*)$/.exec(line);
    if (!bad || /# TODO/.test(bad[2])) continue;
    const depth = bad[1].length / 4;
    const name = bad[2].replace(/ # time=.*$/, '');
    const where = [...stack.slice(0, depth), name].join(' › ');
    // the line closing a subtest repeats its name: it counts only when no
    // failure inside it was reported already
    if (stack[depth] === name && failed.some((f) => f.startsWith(`${where} › `))) continue;
    failed.push(where);
  }
}

function runTap(files, extra = []) {
  return new Promise((resolve, reject) => {
    const child = spawn(tap, ['--reporter=tap', '--no-color', '--disable-coverage', '--allow-empty-coverage', ...extra, ...files], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let summary = { total: 0, pass: 0, fail: 0, skip: 0, todo: 0 };
    let buf = '';
    child.stdout.on('data', (d) => {
      process.stdout.write(d);
      buf += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      collectFailures(buf);
      skipped.push(...[...buf.matchAll(/^\s*ok \d+ - (.*?) # SKIP (.*)$/gm)].map((m) => `${m[1]}: ${m[2]}`));
      const m = [...buf.matchAll(/^# \{ (.*) \}$/gm)].pop();
      if (m) for (const kv of m[1].split(',')) {
        const [k, v] = kv.split(':').map((s) => s.trim());
        if (k in summary) summary[k] = Number(v);
      }
      resolve({ code: code ?? 1, summary });
    });
  });
}

// every *.test.js under the given files/folders, the leftover check excluded
function collect(target) {
  const st = statSync(path.join(root, target));
  if (!st.isDirectory()) return [target];
  return readdirSync(path.join(root, target), { recursive: true })
    .map((f) => path.join(target, String(f)))
    .filter((f) => f.endsWith('.test.js'));
}
const files = (targets.length ? targets : ['dist/test']).flatMap(collect).filter((f) => f !== LAST).sort();
// only the leftover check asked for: tap given no files would run every test
const main = files.length === 0 && targets.length > 0 ? { code: 0, summary: { pass: 0, fail: 0, skip: 0, todo: 0 } } : await runTap(files);
const last = await runTap([LAST]);
const pass = main.summary.pass + last.summary.pass;
const fail = main.summary.fail + last.summary.fail;
const skip = main.summary.skip + last.summary.skip + main.summary.todo + last.summary.todo;
const failedRun = main.code !== 0 || last.code !== 0;
if (skipped.length) console.log(`skipped:\n${skipped.map((s) => `  - ${s}`).join('\n')}`);
if (failed.length) console.log(`failed:\n${failed.map((s) => `  - ${s}`).join('\n')}`);
console.log(`${pass} passed, ${fail} failed, ${skip} skipped`);
process.exit(failedRun || fail > 0 || pass === 0 ? 1 : 0);
