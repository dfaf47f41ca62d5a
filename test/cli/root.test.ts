// lab up / lab down as an unprivileged user: exit 3 with the reason, not a raw EACCES.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cli, runSync, jsonError } from '../helpers/cli.js';
import { listNetns } from '../../src/net/iproute.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-root-'));
chmodSync(tmp, 0o755);
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('lab up / lab down as nobody: exit 3, "needs root"', async (t) => {
  const probe = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', `require('fs').accessSync(${JSON.stringify(cli)})`]);
  if (probe.status !== 0) {
    t.fail(`the unprivileged user cannot read ${cli}: make dist/ readable (${probe.stderr.toString()})`);
    return;
  }
  const name = `zt${randomBytes(3).toString('hex')}`;
  // the default run directory (/run/sharpctl) too: that is where a user's labs are
  for (const env of [{}, { SHARPCTL_RUN_DIR: path.join(tmp, 'run') }]) {
    for (const args of [
      ['lab', 'up', '--name', name],
      ['lab', 'down', '--name', name],
      ['lab', 'down', '--all'],
    ]) {
      const r = runSync(args, { as: 'nobody', env });
      t.equal(r.code, 3, `${args.join(' ')}: exit 3 (stderr: ${r.stderr.trim()})`);
      t.match(r.stderr, new RegExp(`sharpctl ${args[0]} ${args[1]} needs root`));
      t.notMatch(r.stderr, /EACCES|EPERM/, 'not a raw errno');
      const j = runSync([...args, '--json'], { as: 'nobody', env });
      t.equal(j.code, 3);
      t.match(jsonError(j.stdout)?.message, /needs root/, 'with --json: one JSON error');
    }
  }
  t.same(listNetns(`sharp-${name}-`), [], 'nothing was created');
});
