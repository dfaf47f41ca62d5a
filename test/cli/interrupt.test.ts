// Nothing hangs: Ctrl-C ends every command (exit 130), a daemon that hangs
// up or dies is noticed at once, and a reader that goes away ends the
// command quietly. The daemon is a stand-in here (test/helpers/cli.ts).
import t, { type Test } from 'tap';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { start, runSync, fakeDaemon, silent, hangUp, reply, EMPTY_STATUS, type Behaviour } from '../helpers/cli.js';
import { listNetns, deleteNetns } from '../../src/net/iproute.js';
import { processAlive, tryLockLab } from '../../src/lab/run-dir.js';

/** Starts `args` against a stand-in daemon, waits until it is blocked on its first request, sends SIGINT. */
async function interrupted(t: Test, args: string[], behaviour: Behaviour, waitFor: 'request' | 'output' = 'request'): Promise<void> {
  const d = await fakeDaemon(behaviour);
  t.teardown(() => d.close());
  const requested = d.nextRequest();
  const r = start([...args, '--name', d.name], { env: d.env, guardMs: 15_000 });
  if (waitFor === 'request') await requested;
  else await r.firstOutput;
  await new Promise((res) => setTimeout(res, 100));
  r.child.kill('SIGINT');
  const x = await r.exited;
  t.notOk(x.hung, `${args.join(' ')} exited after SIGINT (stderr: ${x.stderr.slice(-300)})`);
  t.equal(x.code, 130, 'exit code 130 (interrupted)');
  t.match(x.stderr, /interrupted/, 'says it was interrupted');
  t.notMatch(x.stderr, /\n\s+at /, 'no stack trace');
}

t.test('Ctrl-C while the daemon does not answer (stopped): status exits 130', (t) => interrupted(t, ['status'], silent));
t.test('Ctrl-C while the daemon does not answer: rule list exits 130', (t) => interrupted(t, ['rule', 'list'], silent));
t.test('SIGTERM (kill, a supervisor) while the daemon does not answer: status exits 143 and says so', async (t) => {
  const d = await fakeDaemon(silent);
  t.teardown(() => d.close());
  const requested = d.nextRequest();
  const r = start(['status', '--name', d.name], { env: d.env, guardMs: 15_000 });
  await requested;
  r.child.kill('SIGTERM');
  const x = await r.exited;
  t.notOk(x.hung, 'exited after SIGTERM');
  t.equal(x.code, 143, 'exit code 143 (128 + SIGTERM)');
  t.match(x.stderr, /terminated \(SIGTERM\)/);
  t.notMatch(x.stderr, /\n\s+at /, 'no stack trace');
});
t.test('Ctrl-C during a handover exits 130 and says the handover goes on in the daemon', async (t) => {
  const d = await fakeDaemon((req, sock) => sock.write(JSON.stringify({ id: req.id, event: { id: 7, step: 'validating', t: 0 } }) + '\n'));
  t.teardown(() => d.close());
  const requested = d.nextRequest();
  const r = start(['handover', '1', '--to', 'vnf2', '--name', d.name], { env: d.env, guardMs: 15_000 });
  await requested;
  await new Promise((res) => setTimeout(res, 200));
  r.child.kill('SIGINT');
  const x = await r.exited;
  t.notOk(x.hung, 'exited after SIGINT');
  t.equal(x.code, 130);
  t.match(x.stderr, /handover 7 goes on in the lab daemon/);
});
t.test('Ctrl-C during status --watch 20 exits 130 at once, not after the 20 s', (t) =>
  interrupted(t, ['status', '--watch', '20', '--json'], (req, sock) => reply(sock, req.id, EMPTY_STATUS), 'output'),
);
t.test('Ctrl-C with --json prints one JSON error object', async (t) => {
  const d = await fakeDaemon(silent);
  t.teardown(() => d.close());
  const requested = d.nextRequest();
  const r = start(['status', '--json', '--name', d.name], { env: d.env, guardMs: 15_000 });
  await requested;
  r.child.kill('SIGINT');
  const x = await r.exited;
  t.equal(x.code, 130);
  const j = JSON.parse(x.stdout) as { error: { name: string; message: string } };
  t.equal(j.error.name, 'InterruptedError');
});

t.test('the daemon hangs up during a request: said at once, exit 1', async (t) => {
  for (const args of [['status'], ['rule', 'list'], ['handover', '1', '--to', 'vnf2'], ['traffic', 'stop']]) {
    const d = await fakeDaemon(hangUp);
    const x = await start([...args, '--name', d.name], { env: d.env, guardMs: 8_000 }).exited;
    await d.close();
    const method = args[0] === 'rule' ? 'rule.list' : args[0] === 'traffic' ? 'traffic.stop' : args[0]!;
    t.notOk(x.hung, `${args.join(' ')} did not wait for a deadline`);
    t.equal(x.code, 1, `${args.join(' ')}: exit 1`);
    t.match(x.stderr, new RegExp(`the lab daemon closed the connection during ${method.replace('.', '\\.')}: it stopped or crashed`));
  }
});

t.test('the daemon dies mid-handover (after some progress): said at once', async (t) => {
  const d = await fakeDaemon((req, sock) => {
    sock.write(JSON.stringify({ id: req.id, event: { id: 1, step: 'switching', t: 1 } }) + '\n');
    setTimeout(() => sock.destroy(), 100);
  });
  t.teardown(() => d.close());
  const x = await start(['handover', '1', '--to', 'vnf2', '--json', '--name', d.name], { env: d.env, guardMs: 8_000 }).exited;
  t.notOk(x.hung);
  t.equal(x.code, 1);
  const j = JSON.parse(x.stdout) as { error: { message: string } };
  t.match(j.error.message, /closed the connection during handover: it stopped or crashed/);
});

t.test('a reader that goes away ends status --watch quietly', async (t) => {
  const d = await fakeDaemon((req, sock) => reply(sock, req.id, EMPTY_STATUS));
  t.teardown(() => d.close());
  const r = start(['status', '--watch', '0.1', '--json', '--name', d.name], { env: d.env, guardMs: 10_000 });
  await r.firstOutput;
  r.child.stdout.destroy(); // like `| head -n1` exiting
  const x = await r.exited;
  t.notOk(x.hung, 'it ended');
  t.equal(x.signal, null, 'not killed by a signal');
  t.notMatch(x.stderr, /EPIPE|Error|\n\s+at /, `quiet (stderr: ${x.stderr.slice(0, 300)})`);
});

t.test('SIGTERM during bench soak: its lab is taken down, exit 143', async (t) => {
  const out = mkdtempSync(path.join(os.tmpdir(), 'sharpt-soakterm-'));
  const r = start(['bench', 'soak', '--handovers', '100000', '--out', out], { guardMs: 60_000 });
  const prefix = `sharp-exp${r.child.pid}-`;
  t.teardown(() => {
    for (const ns of listNetns(prefix)) deleteNetns(ns);
    rmSync(out, { recursive: true, force: true });
  });
  await new Promise<void>((resolve) => r.child.stderr.on('data', (d: Buffer | string) => /soak: \d+ handovers/.test(d.toString()) && resolve()));
  t.ok(listNetns(prefix).length > 0, 'its lab is up and handovers run');
  r.child.kill('SIGTERM');
  const x = await r.exited;
  t.notOk(x.hung, 'exited');
  t.equal(x.code, 143, `exit 143 (stderr: ${x.stderr.slice(-300)})`);
  t.match(x.stderr, /terminated: .*namespaces/);
  t.same(listNetns(prefix), [], 'no namespace of it left');
});

t.test('Ctrl-C during lab up: exit 130 and nothing half-built stays behind', async (t) => {
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-upint-'));
  const name = `zt${randomBytes(3).toString('hex')}`;
  const env = { SHARPCTL_RUN_DIR: runDir };
  let daemonPid: number | undefined;
  t.teardown(() => {
    runSync(['lab', 'down', '--name', name], { env });
    if (daemonPid !== undefined && processAlive(daemonPid)) process.kill(daemonPid, 'SIGKILL'); // the daemon this test started
    for (const ns of listNetns(`sharp-${name}-`)) deleteNetns(ns);
    rmSync(runDir, { recursive: true, force: true });
  });
  const r = start(['lab', 'up', '--name', name], { env, guardMs: 60_000 });
  let stderr = '';
  await new Promise<void>((resolve) =>
    r.child.stderr.on('data', (d: Buffer | string) => {
      stderr += d.toString();
      const m = /daemon pid (\d+)/.exec(stderr);
      if (m) {
        daemonPid = Number(m[1]);
        resolve();
      }
    }),
  );
  await new Promise((res) => setTimeout(res, 300)); // the daemon is building the lab
  r.child.kill('SIGINT');
  const x = await r.exited;
  t.notOk(x.hung, 'exited');
  t.equal(x.code, 130, `exit 130 (stderr: ${x.stderr.slice(-400)})`);
  t.match(x.stderr, new RegExp(`interrupted: taking lab '${name}' down again`));
  t.notOk(processAlive(daemonPid!), 'its daemon is gone');
  t.same(listNetns(`sharp-${name}-`), [], 'no namespace left');
  // the name's lock file stays by design (removing it would let a second holder lock a new file of the same name); it must be free
  t.same(readdirSync(runDir), [`.${name}.lock`], "nothing left in the run directory but the name's lock file");
  const lock = tryLockLab(runDir, name);
  t.ok(lock, 'nobody holds the lock');
  lock?.release();
});
