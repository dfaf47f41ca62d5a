/**
 * `make bench`: runs the benchmarks, prints a table, writes results/bench.json.
 * Figures are measured side by side in one run; nothing here asserts.
 */
import { mkdirSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchMapOps } from './map-ops.js';

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

mkdirSync(path.dirname(outFile), { recursive: true });
writeFileSync(outFile, JSON.stringify(results, null, 2) + '\n');
console.log(`\nwritten: ${path.relative(process.cwd(), outFile)}`);
