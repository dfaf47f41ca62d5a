// Runs after the other state tests (files run one at a time, in name order):
// they left no redis-server, no E-State peer process and no temp dir behind.
import t from 'tap';
import { readdirSync, readlinkSync, readFileSync } from 'node:fs';
import os from 'node:os';

function processes(): { pid: string; cwd: string; cmd: string }[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p) && p !== String(process.pid))
    .flatMap((pid) => {
      try {
        return [{ pid, cwd: readlinkSync(`/proc/${pid}/cwd`), cmd: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ') }];
      } catch {
        return [];
      }
    });
}

t.test('no redis-server started by the tests is left, nor its directory', async (t) => {
  t.same(
    processes().filter((p) => p.cwd.includes('/sharp-redis-')),
    [],
  );
  t.same(
    readdirSync(os.tmpdir()).filter((d) => d.startsWith('sharp-redis-')),
    [],
  );
});

t.test('no E-State peer process is left', async (t) => {
  t.same(
    processes().filter((p) => p.cmd.includes('state/estate/peer-process.js')),
    [],
  );
});
