// The marking-cost breakdown measures what it says: its steps do to a frame
// what the switch's marking does (plain test runs), and a short run gets
// every frame of every DUT to the sink.
import t from 'tap';
import { BpfObjectSpec, xdpMd } from '../../src/bpf/index.js';
import { SHARP_PHASE_PRE, SHARP_HID_MIN } from '../../src/generated/abi.js';
import { udpFrame } from '../../src/net/frame.js';
import { benchMarkingCost, MARKING_DUTS } from '../../src/bench/marking-cost.js';
import { objectsDir } from '../helpers/lab.js';
import { programObject, uniqueName } from '../helpers/env.js';
import { withShim } from '../helpers/programs.js';

const frame = udpFrame({ srcMac: '02:00:00:00:01:01', dstMac: '02:00:00:00:01:02', srcIp: '10.9.0.1', dstIp: '10.9.0.2', srcPort: 20000, dstPort: 9000, payload: Buffer.alloc(18), udpChecksum: false });

t.test('the breakdown steps change the frame as marking does', async (t) => {
  const coll = BpfObjectSpec.open(programObject('bench')).load();
  t.teardown(() => coll.close());
  const run = (prog: string): { retval: number; dataOut?: Buffer } => coll.program(prog).run({ data: frame, context: xdpMd({ dataLen: frame.length }) });
  // no tx port set: every step ends in the bare redirect's verdict
  const bare = run('bench_bare').retval;
  const shim = run('bench_shim');
  t.equal(shim.retval, bare);
  t.same(shim.dataOut, withShim(frame, SHARP_PHASE_PRE, SHARP_HID_MIN), "bench_shim: the switch's PRE shim, hid 1");
  const push4 = run('bench_push4');
  t.equal(push4.retval, bare);
  t.same(push4.dataOut?.subarray(4), frame, 'bench_push4: 4 bytes in front, the frame unchanged behind them');
  for (const prog of ['bench_touch', 'bench_pushpop', 'bench_calls']) {
    const r = run(prog);
    t.equal(r.retval, bare);
    t.same(r.dataOut, frame, `${prog}: the frame as it came`);
  }
});

t.test('a short run: every DUT forwards to the sink', async (t) => {
  const r = await benchMarkingCost(objectsDir, { frames: 20_000, rounds: 1, prefix: `${uniqueName('mk')}-` });
  for (const d of MARKING_DUTS) {
    t.ok(r.mpps[d] > 0, `${d}: frames reached the sink through the path`);
    t.ok(r.genNs[d] > 0, `${d}: the generator's kernel-timed figure`);
    // a DUT run is left out only when the sink saw fewer frames than it sent
    t.ok(r.dutShortRuns[d] === 1 ? Number.isNaN(r.dutNs[d]) : r.dutNs[d] > 0, `${d}: the DUT's kernel-timed figure, or the run counted as short`);
  }
  t.ok(r.programNs.pushpop > 0 && r.programNs.calls8 > 0 && r.programNs.switch > 0);
});
