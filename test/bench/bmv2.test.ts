// Which BMv2 builds `make bench` compares: SHARP_BMV2_BUILDS is checked
// entry by entry (the name and the binary named in the error), and a
// quick sweep on BMv2 where it is installed.
import t from 'tap';
import { bmv2Builds, benchBmv2Build, Bmv2BuildsError } from '../../src/bench/bmv2.js';
import { bmv2Availability, mininetMissing } from '../../src/lab/mininet-lab.js';
import { objectsDir, bmv2Skip } from '../helpers/lab.js';

const skip = bmv2Skip();
if (skip) t.comment(`the BMv2 sweep is skipped: ${skip}`);

t.test('SHARP_BMV2_BUILDS: every bad entry is refused by name', async (t) => {
  const bad: [string, RegExp][] = [
    ['fast', /'fast' is not name=\/path/],
    ['=/bin/true', /'=\/bin\/true' is not name=/],
    ['9x=/bin/true', /'9x=\/bin\/true' is not name=/],
    ['fast=/nonexistent/simple_switch_grpc', /fast: \/nonexistent\/simple_switch_grpc is not an executable file/],
    ['fast=/etc', /fast: \/etc is not an executable file/],
    ['a=/bin/true,a=/bin/sh', /the name 'a' is given twice/],
    [' , ', /names no build/],
  ];
  for (const [spec, re] of bad) t.throws(() => bmv2Builds({ SHARP_BMV2_BUILDS: spec }), { name: 'Bmv2BuildsError', message: re }, spec);
  t.ok(new Bmv2BuildsError('x') instanceof Error);
});

t.test('SHARP_BMV2_BUILDS: good entries, in order; unset: the one on PATH', async (t) => {
  const r = bmv2Builds({ SHARP_BMV2_BUILDS: 'default=/bin/true, fast=/bin/sh' });
  if (mininetMissing() !== undefined) {
    t.match(r, { reason: /ininet/ }, 'without Mininet: the reason, whatever the binaries');
    return;
  }
  t.same(r, [{ name: 'default', simpleSwitchGrpc: '/bin/true' }, { name: 'fast', simpleSwitchGrpc: '/bin/sh' }]);
  const onPath = bmv2Builds({});
  const avail = bmv2Availability();
  t.same(onPath, avail.ok ? [{ name: 'path', simpleSwitchGrpc: avail.simpleSwitchGrpc }] : { reason: avail.reason });
});

t.test('a quick BMv2 sweep: a ceiling, and handovers that are lossless below it', { skip }, async (t) => {
  const avail = bmv2Availability();
  if (!avail.ok) return;
  const r = await benchBmv2Build({ name: 'path', simpleSwitchGrpc: avail.simpleSwitchGrpc }, { objectsDir, rates: [100, 200], secondsPerRate: 1, refine: 0, handoverFractions: [0.5], handoversPerRate: 2 });
  t.equal(r.ceilingPps, 200, 'BMv2 forwards 200 probes/s each way without loss (every build does)');
  t.ok(r.forwarding.every((x) => x.clean && x.lost === 0), 'every forwarding rate tried was clean');
  t.equal(r.handovers.length, 1);
  t.equal(r.handovers[0]!.handovers, 2, 'two handovers ran');
  t.ok(r.handovers[0]!.clean, `handovers at 100 pps each way: ${r.handovers[0]!.lost} lost, ${r.handovers[0]!.reordered} reordered, ${r.handovers[0]!.duplicated} duplicated`);
  t.equal(r.handoverMaxLosslessPps, 100);
  t.equal(r.handoverVsCeiling, 0.5);
  t.ok(r.handoverMedianMs > 0, `median handover ${r.handoverMedianMs} ms`);
});
