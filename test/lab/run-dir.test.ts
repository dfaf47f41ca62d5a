// The run directory's lab lock: exclusive per name, held by an open file
// description (so it dies with its owner), handed to a child through an
// inherited descriptor; process identity by start time.
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tryLockLab, processStartTime, sameProcess } from '../../src/lab/run-dir.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-rundir-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('one holder per lab name; released on release()', async (t) => {
  const a = tryLockLab(dir, 'zta');
  t.ok(a, 'first taker gets it');
  t.equal(tryLockLab(dir, 'zta'), undefined, 'a second open of the same lock is refused');
  const other = tryLockLab(dir, 'ztb');
  t.ok(other, 'another name is another lock');
  a!.release();
  other!.release();
  const again = tryLockLab(dir, 'zta');
  t.ok(again, 'free again after release');
  again!.release();
});

t.test('a child given the descriptor holds the lock until it dies, even by SIGKILL', async (t) => {
  const a = tryLockLab(dir, 'ztc')!;
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: ['ignore', 'ignore', 'ignore', a.fd] });
  t.teardown(() => void child.kill('SIGKILL'));
  await new Promise((r) => child.once('spawn', r));
  a.release();
  t.equal(tryLockLab(dir, 'ztc'), undefined, 'the child holds it now');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const b = tryLockLab(dir, 'ztc');
  t.ok(b, 'free once the child is gone');
  b!.release();
});

t.test('process identity: pid and start time', async (t) => {
  const start = processStartTime(process.pid);
  t.type(start, 'number');
  t.ok(sameProcess(process.pid, start!));
  t.notOk(sameProcess(process.pid, start! + 1), 'another start time is another process');
  t.equal(processStartTime(2 ** 22 + 7), undefined, 'no such pid');
});
