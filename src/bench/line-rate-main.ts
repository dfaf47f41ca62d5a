/**
 * The line-rate figures alone, side by side in one run (a shorter `make
 * bench`): bare XDP redirect ceiling, the generator's ceiling, and the
 * handover sweep with natively paced traffic both ways. Prints them and
 * writes results/linerate.json and results/linerate.svg (not bench.json).
 *
 *   node dist/src/bench/line-rate-main.js [--rates=100000,300000,...] [--handovers=N]
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchForwarding } from './forwarding.js';
import { benchGeneratorCeiling } from './traffic.js';
import { benchLineRate } from './handover.js';
import { writeLineRate } from './line-rate-report.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const objectsDir = path.join(repoRoot, 'build/ebpf');
const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

const rates = (arg('rates') ?? '100000,200000,300000,400000,500000,600000,800000,1000000').split(',').map(Number);
for (const r of rates) if (!Number.isFinite(r) || r < 2) throw new RangeError(`--rates: each rate must be a number of packets/s ≥ 2, got ${r}`);
const handovers = Number(arg('handovers') ?? 5);
if (!Number.isInteger(handovers) || handovers < 1) throw new RangeError(`--handovers must be a positive integer, got ${arg('handovers')}`);
const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, load ${os.loadavg()[0]!.toFixed(1)}`;

console.log(`machine: ${machine}`);
const fw = await benchForwarding(objectsDir, { frames: 1_000_000, rounds: 1 });
const gc = await benchGeneratorCeiling(objectsDir, { seconds: 1 });
console.table({
  'bare XDP redirect (60-byte frames)': { Mpps: fw.bareMpps, 'vs bare': 1 },
  'generator → counting sink (74-byte probes)': { Mpps: gc.generatorCeilingMpps, 'vs bare': +(gc.generatorCeilingMpps / fw.bareMpps).toFixed(3) },
  'generator → checking sink': { Mpps: gc.checkingSinkMpps, 'vs bare': +(gc.checkingSinkMpps / fw.bareMpps).toFixed(3) },
});
const lr = await benchLineRate(objectsDir, {
  aggregateRates: rates,
  handoversPerRate: handovers,
  onStep: (st) => console.log(`  ${st.offeredAggregatePps} pps offered: ${st.achievedAggregatePps} achieved, ${st.completed}/${st.handovers} completed, lost ${st.lost}, reordered ${st.reordered}, duplicated ${st.duplicated}, overflow ${st.overflow}, handover median ${st.handoverMedianMs} ms max ${st.handoverMaxMs} ms, release ${st.releasedPerSecMedian} frames/s${st.clean ? '' : ` — broke: ${st.broke}`}`),
});
console.log(`max lossless aggregate ${lr.maxLosslessAggregatePps} pps = ${(lr.maxLosslessAggregatePps / (fw.bareMpps * 1e6)).toFixed(3)} of bare; broke at ${lr.brokeAtAggregatePps || '-'}: ${lr.broke || 'nothing up to the top of the sweep'} (ring ${lr.ringCapacity} frames per side)`);
writeLineRate(repoRoot, lr, fw.bareMpps, machine);
