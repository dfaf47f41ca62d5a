/**
 * `make bench`: runs the benchmarks, prints a table, writes results/bench.json.
 * Figures are measured side by side in one run; nothing here asserts.
 */
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchMapOps } from './map-ops.js';
import { benchForwarding } from './forwarding.js';
import { benchCaptureCost } from './capture-cost.js';
import { benchMaxLosslessRate, benchOverhead } from './handover.js';
import { benchState, printStateBench } from '../state/bench.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const outFile = path.join(repoRoot, 'results/bench.json');

function machine(): string {
  return `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}`;
}

const results: Record<string, number | string> = existsSync(outFile) ? (JSON.parse(readFileSync(outFile, 'utf8')) as Record<string, number | string>) : {};
results['machine'] = machine();

console.log(`machine: ${machine()}`);
console.log('\nmap operations from JavaScript (switch rules_exact, 16-byte keys):');
const m = benchMapOps(repoRoot);
console.table({
  update: { 'single /s': m.singleUpdatePerSec, 'batch /s': m.batchUpdatePerSec, 'batch ÷ single': m.batchVsSingleUpdate },
  lookup: { 'single /s': m.singleLookupPerSec, 'batch /s': m.batchLookupPerSec, 'batch ÷ single': m.batchVsSingleLookup },
});
for (const [k, v] of Object.entries(m)) results[`maps.${k}`] = v;

const objectsDir = path.join(repoRoot, 'build/ebpf');
const quick = process.argv.includes('--quick');

console.log('\nXDP forwarding, 60-byte frames: live-frames generator → veth → DUT → veth → counting sink (medians of alternating rounds):');
const fw = await benchForwarding(objectsDir, quick ? { frames: 500_000, rounds: 1 } : { frames: 2_000_000, rounds: 3 });
console.table({
  'bare XDP redirect': { Mpps: fw.bareMpps, 'vs bare': 1 },
  'switch (rule lookup, counters)': { Mpps: fw.switchMpps, 'vs bare': fw.switchVsBareRatio },
  'switch, marking active (PRE shim)': { Mpps: fw.switchMarkedMpps, 'vs bare': fw.switchMarkedVsBareRatio },
});
results['xdp.bareMpps'] = fw.bareMpps;
results['xdp.switchMpps'] = fw.switchMarkedMpps;
results['xdp.switchVsBareRatio'] = fw.switchMarkedVsBareRatio;
results['xdp.switchUnmarkedMpps'] = fw.switchMpps;
results['xdp.switchUnmarkedVsBareRatio'] = fw.switchVsBareRatio;

console.log('\ncapture hook cost, same path (medians of alternating rounds): the hook off must cost what the hook compiled out costs');
const cc = await benchCaptureCost(objectsDir, quick ? { frames: 500_000, rounds: 1 } : { frames: 2_000_000, rounds: 5 });
console.table({
  'bare XDP redirect': { Mpps: cc.bareMpps, 'vs bare': 1 },
  'switch, capture compiled out': { Mpps: cc.compiledOutMpps, 'vs bare': cc.compiledOutVsBare },
  'switch, capture off': { Mpps: cc.offMpps, 'vs bare': cc.offVsBare },
  'switch, capture on, frame filtered out': { Mpps: cc.onFilteredMpps, 'vs bare': cc.onFilteredVsBare },
});
console.log(`the switch program alone (BPF_PROG_TEST_RUN, ns per frame): compiled out ${cc.testRunNs.compiledOut}, off ${cc.testRunNs.off}, on but filtered out ${cc.testRunNs.onFiltered}`);
for (const [k, v] of Object.entries(cc)) if (typeof v === 'number') results[`capture.${k}`] = v;
for (const [k, v] of Object.entries(cc.testRunNs)) results[`capture.testRunNs.${k}`] = v;

console.log('\nhighest offered rate at which handovers stay lossless and ordered (8 flows, 5 handovers per rate, state delay 0):');
const rates = quick ? [5_000, 20_000] : [5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 400_000];
const mr = await benchMaxLosslessRate(objectsDir, rates, quick ? 2 : 5);
console.table(mr.tried);
results['handover.maxLosslessPps'] = mr.maxLosslessPps;
console.log(`handover.maxLosslessPps = ${mr.maxLosslessPps}`);

const ovhOpts = quick ? { handovers: 5, pps: 2000, delayMs: 100 } : { handovers: 30, pps: 5000, delayMs: 100 };
console.log(`\nhandover completion time minus the injected state delay (${ovhOpts.handovers} handovers, ${ovhOpts.pps} pps, ${ovhOpts.delayMs} ms delay):`);
const ovh = await benchOverhead(objectsDir, ovhOpts);
console.table({ overhead: { 'median ms': ovh.overheadMedianMs, 'p99 ms': ovh.overheadP99Ms, 'all lossless': ovh.allClean } });
results['handover.overheadMedianMs'] = ovh.overheadMedianMs;
results['handover.overheadP99Ms'] = ovh.overheadP99Ms;

console.log('\nstate management (E-State over gRPC, peers in separate processes, vs Redis):');
const stateRows = await benchState(quick ? { localOps: 20_000, redisOps: 2000, samples: 50, peerCounts: [1, 2] } : {});
printStateBench(stateRows);
for (const r of stateRows) {
  const key = `state.${r.backend}.${r.op.replace(/[^a-zA-Z0-9]+/g, '_')}${r.peers === null ? '' : `.${r.peers}peers`}`;
  if (r.opsPerSec !== null) results[`${key}.opsPerSec`] = r.opsPerSec;
  if (r.medianMs !== null) results[`${key}.medianMs`] = r.medianMs;
  if (r.p99Ms !== null) results[`${key}.p99Ms`] = r.p99Ms;
}

mkdirSync(path.dirname(outFile), { recursive: true });
writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n');
console.log(`\nwritten: ${path.relative(process.cwd(), outFile)}`);
