/**
 * The handover overhead alone (a shorter `make bench`), on a lab of node
 * processes: handover time minus the injected state delay, and where it
 * goes — node API calls per handover by method, their mean wall time, the
 * controller's and the nodes' CPU per handover (less what the traffic alone
 * costs), and the median time per step. Prints JSON; writes nothing.
 *
 * With --calls=N, first N calls of each kind a handover makes, one at a
 * time on an idle lab: each one's wall time and the CPU it costs the
 * controller and the node that answers.
 *
 * With --grpc, the lab's node clients make their calls over gRPC (the
 * transport before the framed channel).
 *
 *   node dist/src/bench/overhead-main.js [--handovers=N] [--pps=P] [--delay=MS] [--calls=N] [--grpc]
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchCallCosts, benchOverhead } from './handover.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const objectsDir = path.join(repoRoot, 'build/ebpf');
const arg = (name: string, dflt: number): number => {
  const v = Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? dflt);
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`--${name} must be a non-negative integer, got ${v}`);
  return v;
};

const handovers = Math.max(1, arg('handovers', 10));
const pps = arg('pps', 5000);
const delayMs = arg('delay', 100);
const calls = arg('calls', 0);
const loadBefore = os.loadavg()[0]!;
if (calls > 0) console.log(JSON.stringify({ callCosts: await benchCallCosts(objectsDir, calls), loadAverage: +os.loadavg()[0]!.toFixed(2) }, null, 2));
const r = await benchOverhead(objectsDir, { handovers, pps, delayMs, breakdown: true, nodeFrames: !process.argv.includes('--grpc') });
console.log(JSON.stringify({ ...r, loadAverage: [+loadBefore.toFixed(2), +os.loadavg()[0]!.toFixed(2)] }, null, 2));
