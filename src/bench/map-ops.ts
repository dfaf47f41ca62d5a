/**
 * Map operation rates from JavaScript: one element per system call versus
 * batch calls, on the switch's exact-rule table (a hash of 16-byte flow keys).
 */
import path from 'node:path';
import { BpfObjectSpec } from '../bpf/index.js';
import { sharpFlowKeyCodec, sharpExactRuleCodec } from '../generated/abi.js';

export interface MapOpsResult {
  elements: number;
  singleUpdatePerSec: number;
  batchUpdatePerSec: number;
  singleLookupPerSec: number;
  batchLookupPerSec: number;
  batchVsSingleUpdate: number;
  batchVsSingleLookup: number;
}

function rate(n: number, fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  const ns = Number(process.hrtime.bigint() - t0);
  return (n / ns) * 1e9;
}

export function benchMapOps(repoRoot: string, elements = 50_000): MapOpsResult {
  const spec = BpfObjectSpec.open(path.join(repoRoot, 'build/ebpf/switch.bpf.o'));
  spec.setMaxEntries('rules_exact', elements);
  const coll = spec.load();
  try {
    const m = coll.map('rules_exact');
    const keys = Array.from({ length: elements }, (_, i) =>
      sharpFlowKeyCodec.encode({ saddr: 0x0a000000 + i, daddr: 0x0a010001, sport: 1000 + (i % 50000), dport: 5000, proto: 17, pad: Buffer.alloc(3) }),
    );
    const values = keys.map((_, i) => sharpExactRuleCodec.encode({ rule_id: i + 1, action: Buffer.alloc(8) }));
    // rounds alternate so neither mode always runs on a warm map
    const singleUpdate = rate(elements, () => keys.forEach((k, i) => m.update(k, values[i]!)));
    m.deleteBatch(keys);
    const batchUpdate = rate(elements, () => {
      for (let i = 0; i < elements; i += 1024) m.updateBatch(keys.slice(i, i + 1024), values.slice(i, i + 1024));
    });
    const singleLookup = rate(elements, () => keys.forEach((k) => m.lookup(k)));
    const batchLookup = rate(elements, () => m.lookupBatch(1024));
    return {
      elements,
      singleUpdatePerSec: Math.round(singleUpdate),
      batchUpdatePerSec: Math.round(batchUpdate),
      singleLookupPerSec: Math.round(singleLookup),
      batchLookupPerSec: Math.round(batchLookup),
      batchVsSingleUpdate: +(batchUpdate / singleUpdate).toFixed(2),
      batchVsSingleLookup: +(batchLookup / singleLookup).toFixed(2),
    };
  } finally {
    coll.close();
  }
}
