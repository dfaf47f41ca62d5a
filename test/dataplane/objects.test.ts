// Every eBPF object the build produces loads on this kernel (bpftool prog loadall).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, uniqueName } from '../helpers/env.js';

const dir = path.join(repoRoot, 'build/ebpf');
const objects = readdirSync(dir).filter((f) => f.endsWith('.bpf.o'));

t.ok(objects.length >= 5, `the build produced ${objects.length} program objects`);
for (const o of objects) {
  t.test(`${o} loads with bpftool prog loadall`, async (t) => {
    const pin = `/sys/fs/bpf/${uniqueName('load')}`;
    t.teardown(() => rmSync(pin, { recursive: true, force: true }));
    t.doesNotThrow(() => execFileSync('bpftool', ['prog', 'loadall', path.join(dir, o), pin], { stdio: ['ignore', 'pipe', 'pipe'] }));
    t.ok(readdirSync(pin).length > 0, 'its programs were pinned');
  });
}
