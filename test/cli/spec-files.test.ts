// A spec is a regular text file of at most 1 MiB: anything else is refused
// at once (exit 2), and no error message prints the file's raw bytes.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { runSync } from '../helpers/cli.js';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sharpt-specfiles-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
const env = { SHARPCTL_RUN_DIR: path.join(tmp, 'run') };

t.test('devices, FIFOs, directories, big and binary files', async (t) => {
  const zero = path.join(tmp, 'zero.yaml');
  symlinkSync('/dev/zero', zero);
  const fifo = path.join(tmp, 'fifo.yaml');
  execFileSync('mkfifo', [fifo]);
  const dir = path.join(tmp, 'dir.yaml');
  mkdirSync(dir);
  const big = path.join(tmp, 'big.yaml');
  writeFileSync(big, `name: x\n# ${'x'.repeat(1024 * 1024)}\n`);
  const bin = path.join(tmp, 'bin.yaml');
  writeFileSync(bin, Buffer.concat([Buffer.from('name: \x1b[31mred\n\x00\x01'), randomBytes(2000)]));
  const latin1 = path.join(tmp, 'latin1.json');
  writeFileSync(latin1, Buffer.from('{"name": "caf\xe9"}', 'latin1'));
  // valid YAML text whose values are terminal escapes
  const esc = path.join(tmp, 'esc.yaml');
  writeFileSync(esc, 'name: "\\e[2J\\u0007"\nhosts: []\nswitches: [{name: "\\e]0;owned\\u0007"}]\nlinks: []\n');
  for (const [file, why] of [
    [zero, /not a regular file \(a character device\)/],
    [fifo, /not a regular file \(a FIFO\)/],
    [dir, /not a regular file \(a directory\)/],
    [big, /larger than the 1 MiB limit for a spec/],
    [bin, /not a text file: a NUL byte at offset 15/],
    [latin1, /not a text file: it is not valid UTF-8/],
    [esc, /name.*\\x1b\[2J\\x07/],
  ] as const) {
    const r = runSync(['lab', 'up', file, '--name', 'ztnoup'], { env, timeout: 15_000 });
    const what = path.basename(file);
    t.notOk(r.error, `${what}: returned (${r.error?.message ?? ''})`);
    t.equal(r.code, 2, `${what}: exit 2`);
    t.match(r.stderr, why, `${what}: ${r.stderr.split('\n').slice(0, 3).join(' | ')}`);
    // eslint-disable-next-line no-control-regex
    t.notMatch(r.stderr, /[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f\ufffd]/, `${what}: no raw control bytes or replacement characters in the message`);
  }
});
