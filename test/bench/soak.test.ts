// The soak, shortened for make test (issue 16): 200 handovers back and forth
// under traffic both ways, two flows' rules moving concurrently, random state
// delays of 0–50 ms. Nothing lost, reordered or duplicated; held = released;
// resident memory flat from the first to the last tenth; no file descriptor,
// BPF map, program or link left behind. `sharpctl bench soak --handovers
// 10000` is the full run.
import t from 'tap';
import { runSoak } from '../../src/bench/soak.js';
import { objectsDir } from '../helpers/lab.js';
import { uniqueName } from '../helpers/env.js';
import { destroyLab } from '../../src/lab/netns-lab.js';

t.test('soak: 200 handovers, clean, flat memory, nothing leaked', async (t) => {
  const prefix = `${uniqueName('soak')}-`;
  t.teardown(() => void destroyLab(prefix));
  const r = await runSoak({ objectsDir, handovers: 200, prefix, progress: (l) => t.comment(l) });
  t.comment(JSON.stringify({ seconds: r.seconds, handoverMs: r.handoverMs, rss: r.rss, fds: r.fds, bpf: r.bpf }));
  t.same(r.problems, [], 'no problems');
  t.equal(r.handovers, 200);
  t.equal(r.outcomes['completed'], 200, `every handover completed (${JSON.stringify(r.notCompleted)})`);
  for (const d of r.directions) {
    t.ok(d.sent > 1000, `${d.name}: ${d.sent} probes sent`);
    t.equal(d.delivered, d.sent, `${d.name}: all delivered`);
    t.equal(d.lost + d.reordered + d.duplicated + d.stampMismatches, 0, `${d.name}: 0 lost, reordered, duplicated, stamp mismatches`);
    t.equal(d.unaccounted, 0, `${d.name}: unaccounted 0`);
  }
  t.ok(r.held > 0, `${r.held} frames held`);
  t.equal(r.held, r.released, 'held = released');
  t.ok(r.rss.lastMiB - r.rss.firstMiB <= Math.max(16, r.rss.firstMiB * 0.1), `rss ${r.rss.firstMiB} MiB (first tenth) → ${r.rss.lastMiB} MiB (last tenth)`);
  t.equal(r.fds.after, r.fds.before, `file descriptors: ${r.fds.before} before, ${r.fds.after} after`);
  t.equal(r.fds.lastWindow, r.fds.firstWindow, 'as many descriptors at the last handover as at the first');
  t.same(r.bpf.last, r.bpf.first, 'as many BPF maps, programs and links at the last handover as at the first');
  t.same(r.bpf.leaked, { maps: [], progs: [], links: [] }, 'no BPF object of the run is left in the kernel');
  t.ok(r.seconds < 110, `${r.seconds} s`);
});
