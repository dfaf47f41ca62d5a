// Output into a closed pipe (`| head`) ends the command quietly: no EPIPE stack trace.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { repoRoot } from '../helpers/env.js';
import { cli, start } from '../helpers/cli.js';

t.test('the reader is gone before the first write', async (t) => {
  for (const args of [['bench', '--help'], ['--help'], ['rule', 'add', '--help'], ['compile', '--json']]) {
    const r = start(args, { guardMs: 30_000 });
    r.child.stdout.destroy();
    const x = await r.exited;
    t.notOk(x.hung, `${args.join(' ')} ended`);
    t.equal(x.code, 0, `${args.join(' ')}: exit 0, its work was done`);
    t.equal(x.stderr, '', 'nothing on stderr (no EPIPE stack trace)');
  }
});

t.test('sharpctl bench --help | head -n1', async (t) => {
  const sh = spawnSync('sh', ['-c', `"${process.execPath}" "${cli}" bench --help | head -n1`], { encoding: 'utf8', cwd: repoRoot, timeout: 30_000, killSignal: 'SIGKILL' });
  t.equal(sh.stdout, 'Usage: sharpctl bench [options] <experiment>\n');
  t.equal(sh.stderr, '');
});
