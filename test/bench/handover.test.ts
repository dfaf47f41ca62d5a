// Handovers under natively paced traffic in both directions at a high rate
// (300 kpps together, more than twice what the JavaScript-paced generator
// reaches): nothing lost, reordered or duplicated, every probe checked in the
// kernel. The rate is not asserted; the verdict is.
import t from 'tap';
import { openLab, holdRingCapacity, whatBroke, type LineRateStep } from '../../src/bench/handover.js';
import { objectsDir } from '../helpers/lab.js';
import { uniqueName } from '../helpers/env.js';

const PPS_PER_DIRECTION = 150_000;

t.test('two handovers at 150 kpps each way: 0 lost, reordered, duplicated, overflowed in either direction', async (t) => {
  // 150 kpps per side held for up to ~400 ms (handover + paced release under load), margin 2: 131072
  // frames a side, one ring per instance (the two handovers run one after the other), the memory two
  // rings of 65536 took (405 MB an instance)
  const ring = holdRingCapacity(PPS_PER_DIRECTION, 400, 2);
  // in-process. The release no longer bursts into a downstream veth (it replays in rounds paced against
  // what the way out has taken: test/dataplane/release-downstream.test.ts), and on node processes this
  // test passed 3 of 3 runs at load average 3.2-3.4, but beside two CPU hogs 1 of 2 overflowed the hold
  // ring (counted, the handover lossy): under the suite's load the paced release (about half the rate of
  // one long run) is too slow there — measured by `make bench`, not hidden here
  const s = await openLab(objectsDir, `${uniqueName('lr')}-`, ring, { via: 'in-process', ringCount: 1 });
  t.teardown(() => s.close());
  const { directions, results } = await s.runBothWays({ ppsPerDirection: PPS_PER_DIRECTION, handovers: 2, delayMs: 0 });
  t.equal(results.length, 2);
  for (const r of results) {
    t.equal(r.outcome, 'completed', `handover ${r.from} → ${r.to} completed`);
    t.equal(r.counts.overflow, 0n, 'nothing overflowed the hold ring');
    t.ok(r.counts.held > 0n, 'frames were held (and released in order)');
  }
  for (const d of directions) {
    t.ok(d.report.sent > 0, `${d.name}: probes sent`);
    t.match(
      d.report,
      { lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0, beyondWindow: 0, unchecked: 0, unaccounted: 0, marked: 0, stampsChecked: true },
      `${d.name}: every one of ${d.report.sent} probes delivered once, in order, with its VNF stamp`,
    );
    t.equal(d.report.delivered, d.report.sent);
  }
});

t.test('the hold ring: rate × hold time × margin, a power of two, within the spec limit', async (t) => {
  t.equal(holdRingCapacity(100_000, 50, 2), 16384, '10000 frames → 16384');
  t.equal(holdRingCapacity(1, 1, 1), 64, 'never below the minimum');
  t.throws(() => holdRingCapacity(2_000_000, 200, 2), /ringCapacity: 2000000 pps per side held for 200 ms with margin 2 needs 800000 frames, above the limit of 262144/);
});

t.test('what broke: overflow before loss, loss with its counted reasons, then the generator', async (t) => {
  const clean: Omit<LineRateStep, 'clean' | 'broke'> = { offeredAggregatePps: 1000, achievedAggregatePps: 1000, handovers: 1, completed: 1, overflow: 0, lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0, unchecked: 0, drops: [], handoverMedianMs: 1, handoverMaxMs: 1, releasedPerSecMedian: 5000 };
  t.equal(whatBroke(clean, []), '');
  t.match(whatBroke({ ...clean, overflow: 5, lost: 5 }, []), /^hold ring overflow \(5 frames\): the release drained 5000 frames\/s/);
  t.equal(whatBroke({ ...clean, lost: 3, drops: ['s1/s1-vnf1 xmitFailed 3'] }, []), 'lost 3 (s1/s1-vnf1 xmitFailed 3)');
  t.equal(whatBroke({ ...clean, lost: 3 }, []), 'lost 3 (no counter explains them)');
  t.equal(whatBroke({ ...clean, reordered: 2 }, []), 'reordered 2');
  t.match(whatBroke({ ...clean, achievedAggregatePps: 800 }, [], 790), /^generator ceiling \(800 of 1000/, 'short of the rate, and no more than the step before reached');
  t.equal(whatBroke({ ...clean, achievedAggregatePps: 800 }, [], 500), '', 'short of the rate but still rising: clean, at the rate reached');
  t.equal(whatBroke({ ...clean, achievedAggregatePps: 800 }, []), '', 'the first step is never the generator ceiling');
});
