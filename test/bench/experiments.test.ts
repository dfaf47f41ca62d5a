// Short versions of the paper's experiments 1 and 2: the qualitative facts.
import t from 'tap';
import { runExperiment } from '../../src/bench/experiments.js';
import { objectsDir } from '../helpers/lab.js';
import { uniqueName } from '../helpers/env.js';
import { wellFormed } from '../helpers/xml.js';

t.test('controller buffer vs state-transfer delay (quick)', async (t) => {
  const r = await runExperiment('buffer', { objectsDir, quick: true, prefix: uniqueName('exb') });
  t.equal(r.experiment, 'buffer');
  const sharp = r.rows.filter((x) => x['mode'] === 'sharp');
  const base = r.rows.filter((x) => x['mode'] === 'controller-buffer');
  t.ok(sharp.length >= 3 && base.length === sharp.length, `${sharp.length} delays per mode`);
  for (const row of sharp) {
    t.equal(row['controllerBufferPeakBytes'], 0, `sharp, ${row['stateDelayMs']} ms: 0 bytes buffered at the controller`);
    t.equal(row['controllerDataBytes'], 0, `sharp, ${row['stateDelayMs']} ms: 0 data bytes reached the controller`);
  }
  const peaks = base.map((x) => Number(x['controllerBufferPeakBytes']));
  for (let i = 1; i < peaks.length; i++) t.ok(peaks[i]! > peaks[i - 1]!, `controller-buffer: the buffer grows with the delay (${peaks[i - 1]} → ${peaks[i]} bytes)`);
  for (const row of r.rows) t.equal(Number(row['lost']) + Number(row['reordered']) + Number(row['duplicated']), 0, `${row['mode']}, ${row['stateDelayMs']} ms: nothing lost, reordered or duplicated`);
  t.ok(wellFormed(r.plots['buffer.svg']!), 'the plot is well-formed SVG');
});

t.test('loss and order vs offered rate (quick)', async (t) => {
  const r = await runExperiment('rate', { objectsDir, quick: true, prefix: uniqueName('exr') });
  t.same([...new Set(r.rows.map((x) => x['mode']))], ['sharp', 'controller-buffer']);
  for (const row of r.rows) {
    t.ok(Number(row['sent']) > 0, `${row['mode']} at ${row['pps']} pps: ${row['sent']} sent`);
    t.equal(Number(row['lost']) + Number(row['reordered']) + Number(row['duplicated']), 0, `${row['mode']} at ${row['pps']} pps: nothing lost, reordered or duplicated`);
    t.equal(row['completed'], row['handovers'], 'every handover completed');
    if (row['mode'] === 'sharp') t.equal(row['controllerBufferPeakPackets'], 0);
  }
});
