// A stateful VNF written in TypeScript on E-State: its per-flow counters
// live in its local view, and flows move between two instances through
// E-State with their counters continuous (stamp == sequence number on every
// probe), also while probes keep coming during the move.
import t from 'tap';
import type { Test } from 'tap';
import dgram from 'node:dgram';
import { UserspaceVnf, UserspaceVnfStateManager } from '../../src/state/userspace-vnf.js';
import { moveState } from '../../src/state/mover.js';
import { flowItemKey } from '../../src/state/flow-key.js';
import { sharpProbeCodec, SHARP_PROBE_MAGIC } from '../../src/generated/abi.js';
import type { FlowKey } from '../../src/dataplane/types.js';
import type { FlowMoveContext } from '../../src/state/types.js';

const flowOf = (i: number): FlowKey => ({ src: '10.0.0.1', dst: '10.0.0.2', sport: 20000 + i, dport: 9000, proto: 17 });

const probe = (flow: number, seq: bigint): Buffer => sharpProbeCodec.encode({ magic: SHARP_PROBE_MAGIC, flow, seq, stamp: 0n, tx_ns: process.hrtime.bigint() });

async function vnfPair(t: Test): Promise<[UserspaceVnf, UserspaceVnf]> {
  const v1 = await UserspaceVnf.start({ name: 'vnf1', estate: { timeoutMs: 1000 } });
  t.teardown(() => v1.close());
  const v2 = await UserspaceVnf.start({ name: 'vnf2', estate: { timeoutMs: 1000 } });
  t.teardown(() => v2.close());
  await v2.store.join(v1.store.address);
  return [v1, v2];
}

/**
 * Probes of `flows` flows, round robin; flows are routed to an instance;
 * while a flow is being moved its probes are held in arrival order (as the
 * SHarP agent of the new instance does) and processed there after the move.
 */
class Harness {
  readonly seq: bigint[];
  readonly at = new Map<number, UserspaceVnf>();
  readonly held: { flow: number; payload: Buffer }[] = [];
  holding = new Set<number>();
  mismatches: string[] = [];
  processed = 0;

  constructor(
    readonly flows: number,
    start: UserspaceVnf,
  ) {
    this.seq = Array.from({ length: flows }, () => 0n);
    for (let f = 0; f < flows; f++) this.at.set(f, start);
  }

  #deliver(f: number, payload: Buffer): void {
    this.at.get(f)!.process(flowOf(f), payload);
    const p = sharpProbeCodec.decode(payload);
    if (p.stamp !== p.seq) this.mismatches.push(`flow ${f}: seq ${p.seq} stamped ${p.stamp} at ${this.at.get(f)!.name}`);
    this.processed++;
  }

  send(n: number): void {
    for (let i = 0; i < n; i++) {
      const f = i % this.flows;
      const payload = probe(f, ++this.seq[f]!);
      if (this.holding.has(f)) this.held.push({ flow: f, payload });
      else this.#deliver(f, payload);
    }
  }

  /** moves `moving` flows to `to` through the manager while probes keep coming */
  async move(mgr: UserspaceVnfStateManager, id: number, moving: number[], from: UserspaceVnf, to: UserspaceVnf): Promise<{ records: number; heldDuring: number }> {
    const set = new Set(moving.map((f) => flowOf(f).sport));
    const ctx: FlowMoveContext = { id, from: from.name, to: to.name, covers: (fl) => set.has(fl.sport) };
    for (const f of moving) {
      this.holding.add(f);
      this.at.set(f, to);
    }
    const moved = moveState(mgr, ctx, new AbortController().signal);
    // traffic goes on while the state crosses over
    let done = false;
    void moved.finally(() => (done = true));
    while (!done) {
      this.send(this.flows);
      await new Promise((r) => setImmediate(r));
    }
    const r = await moved;
    const heldDuring = this.held.length;
    // release: held probes first, in order, then new ones pass
    for (const h of this.held.splice(0)) this.#deliver(h.flow, h.payload);
    this.holding.clear();
    return { records: r.records, heldDuring };
  }
}

t.test('flows move between two userspace VNFs through E-State with continuous counters', async (t) => {
  const [v1, v2] = await vnfPair(t);
  const mgr = new UserspaceVnfStateManager([v1, v2]);
  const h = new Harness(4, v1);
  h.send(400);
  t.equal(v1.counter(flowOf(0)), 100n);
  t.equal(v1.flows().length, 4);

  const m1 = await h.move(mgr, 1, [0, 1], v1, v2);
  t.equal(m1.records, 2, 'two flows moved');
  t.ok(m1.heldDuring > 0, `${m1.heldDuring} probes arrived for the moving flows during the move`);
  h.send(400);
  t.notOk(v1.store.has(flowItemKey(flowOf(0), 'packets')), 'vnf1 no longer holds flow 0');
  t.ok(v2.store.has(flowItemKey(flowOf(0), 'packets')), 'vnf2 does');
  t.ok(v1.store.has(flowItemKey(flowOf(2), 'packets')), 'flow 2 stayed at vnf1');

  const m2 = await h.move(mgr, 2, [0, 1, 2, 3], v1, v2);
  t.equal(m2.records, 2, 'flows 2 and 3 follow (0 and 1 are at vnf2 already)');
  h.send(400);
  const m3 = await h.move(mgr, 3, [0, 1, 2, 3], v2, v1);
  t.equal(m3.records, 4, 'all four back to vnf1');
  h.send(400);

  t.same(h.mismatches.slice(0, 5), [], 'stamp == sequence number on every probe');
  t.equal(h.processed, Number(h.seq.reduce((a, s) => a + s, 0n)), `all ${h.processed} probes processed once`);
  for (let f = 0; f < 4; f++) {
    t.equal(v1.counter(flowOf(f)), h.seq[f], `flow ${f}: vnf1's counter = ${h.seq[f]} probes sent`);
    t.equal(v1.bytes(flowOf(f)), h.seq[f]! * 32n, 'bytes counted too');
    const g = await v2.globalPackets(flowOf(f));
    t.equal(g.value, h.seq[f], `flow ${f}: the global view (asked at vnf2) sums to the same`);
    t.equal(g.partial, false);
  }
  t.equal(v2.store.size, 0, 'vnf2 holds nothing after the flows left');
  t.same(mgr.stats().moves, 3);
  t.ok(mgr.stats().transportBytes > 0, `${mgr.stats().transportBytes} bytes crossed over gRPC`);
});

t.test('rollback of a userspace move: before and after commit', async (t) => {
  const [v1, v2] = await vnfPair(t);
  const mgr = new UserspaceVnfStateManager([v1, v2]);
  const h = new Harness(2, v1);
  h.send(20);
  const ctx: FlowMoveContext = { id: 9, from: 'vnf1', to: 'vnf2', covers: () => true };
  const ac = new AbortController();
  const dep = await mgr.leaving(ctx);
  await mgr.arriving(ctx, dep, ac.signal);
  t.equal(v2.counter(flowOf(0)), 10n, 'adopted at vnf2');
  await mgr.rollback(ctx, dep);
  t.equal(v2.store.size, 0, 'rolled back before commit: vnf2 forgets');
  t.equal(v1.counter(flowOf(0)), 10n, 'vnf1 kept everything');

  const r = await moveState(mgr, ctx, ac.signal);
  t.equal(v1.store.size, 0);
  v2.process(flowOf(0), probe(0, 11n));
  await mgr.rollback(ctx, r.departure);
  t.equal(v1.counter(flowOf(0)), 11n, 'rolled back after commit: vnf1 gets vnf2’s counters back over E-State');
  t.equal(v2.store.size, 0);
  t.equal(mgr.stats().rollbacks, 2);
});

t.test('the userspace VNF on a UDP socket: stamps probes and forwards them', async (t) => {
  const v = await UserspaceVnf.start({ name: 'udp-vnf' });
  t.teardown(() => v.close());
  const rx = dgram.createSocket('udp4');
  const tx = dgram.createSocket('udp4');
  t.teardown(() => new Promise<void>((r) => rx.close(() => r())));
  t.teardown(() => new Promise<void>((r) => tx.close(() => r())));
  await new Promise<void>((r) => rx.bind(0, '127.0.0.1', () => r()));
  const got: bigint[][] = [];
  const all = new Promise<void>((resolve) =>
    rx.on('message', (m) => {
      const p = sharpProbeCodec.decode(m);
      got.push([p.seq, p.stamp]);
      if (got.length === 50) resolve();
    }),
  );
  const at = await v.bind({ forwardTo: { host: '127.0.0.1', port: rx.address().port } });
  t.equal(at.host, '127.0.0.1');
  await new Promise<void>((r) => tx.bind(0, '127.0.0.1', () => r()));
  for (let i = 1n; i <= 50n; i++) await new Promise<void>((r) => tx.send(probe(0, i), at.port, at.host, () => r()));
  const timeout = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000).unref());
  t.not(await Promise.race([all, timeout]), 'timeout', 'all 50 probes came back');
  t.ok(
    got.every(([seq, stamp]) => seq === stamp),
    'stamp == seq on every forwarded probe',
  );
  const flow = { src: '127.0.0.1', sport: tx.address().port, dst: '127.0.0.1', dport: at.port, proto: 17 };
  t.equal(v.counter(flow), 50n, 'one flow: sender → VNF socket');
  t.equal(v.forwarded, 50);
  v.process(flow, Buffer.from('not a probe'));
  t.equal(v.counter(flow), 51n, 'other payloads are counted, not stamped');
  t.equal(v.stamped, 50);
});
