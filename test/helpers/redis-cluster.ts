/**
 * Redis Cluster helpers of the state tests: what is left on the nodes, and a
 * state mover that makes a master fail over during chosen handovers.
 */
import type { HandoverContext, StateMover, StateMoveResult } from '../../src/handover/state-mover.js';
import type { RedisCluster } from '../../src/state/redis-cluster-server.js';
import { handoverTag } from '../../src/state/redis-stage.js';
import { sleep } from '../../src/util/mutex.js';

/** keys under `pattern` on every node that answers (masters and replicas: nothing may linger anywhere) */
export async function clusterKeys(c: RedisCluster, pattern: string): Promise<string[]> {
  const out: string[] = [];
  for (const n of c.nodes) {
    const r = await c.cli(n.port, ['--scan', '--pattern', pattern]).catch(() => '');
    out.push(...r.split('\n').filter((k) => k !== ''));
  }
  return [...new Set(out)];
}

/**
 * A state mover, with a master of the cluster made to fail
 * while a chosen handover moves its state: 'freeze' SIGSTOPs the master
 * that owns the handover's slot just before the move (its replica takes
 * over once the cluster marks it failed; it is let go on again after the
 * move, and comes back as a replica); 'manual' asks that master's replica
 * to take over (CLUSTER FAILOVER) while the move runs.
 */
export class FailingOverMover implements StateMover {
  readonly name: string;
  readonly events: string[] = [];
  /** the slot's master before and after each failover */
  readonly failovers: { id: number; kind: 'freeze' | 'manual'; before: string; after: string; moveMs: number }[] = [];
  constructor(
    readonly inner: StateMover,
    readonly cluster: RedisCluster,
    readonly plan: ReadonlyMap<number, 'freeze' | 'manual'>,
  ) {
    this.name = inner.name;
  }
  get expectedMs(): number | undefined {
    return this.inner.expectedMs;
  }
  async move(ctx: HandoverContext, signal: AbortSignal): Promise<StateMoveResult> {
    const what = this.plan.get(ctx.id);
    if (what === undefined) return this.inner.move(ctx, signal);
    const owner = await this.cluster.ownerOf(handoverTag(ctx.id));
    if (what === 'freeze') {
      this.events.push(`handover ${ctx.id}: froze master ${owner.master.address} (slot ${owner.slot})`);
      process.kill(owner.master.pid, 'SIGSTOP');
      const t0 = performance.now();
      try {
        return await this.inner.move(ctx, signal);
      } finally {
        const moveMs = performance.now() - t0;
        this.failovers.push({ id: ctx.id, kind: what, before: owner.master.address, after: (await this.cluster.ownerOf(handoverTag(ctx.id)).catch(() => undefined))?.master.address ?? '?', moveMs });
        process.kill(owner.master.pid, 'SIGCONT');
      }
    }
    // a manual failover needs a replica in sync: the master frozen before may still be catching up
    await this.cluster.waitHealthy();
    const { master, replicas, slot } = await this.cluster.ownerOf(handoverTag(ctx.id));
    const replica = replicas[0]!;
    this.events.push(`handover ${ctx.id}: CLUSTER FAILOVER on ${replica.address}, the replica of ${master.address} (slot ${slot})`);
    const failover = this.cluster.cli(replica.port, ['CLUSTER', 'FAILOVER']);
    const t0 = performance.now();
    try {
      return await this.inner.move(ctx, signal);
    } finally {
      const moveMs = performance.now() - t0;
      await failover;
      // CLUSTER FAILOVER answers OK at once and fails over afterwards (the replica first catches up with its master, which may itself
      // have rejoined lately): the slot's new owner is waited for, up to 10 s, rather than read at the first healthy moment
      const until = Date.now() + 10_000;
      let after = master.address;
      for (;;) {
        await this.cluster.waitHealthy();
        after = (await this.cluster.ownerOf(handoverTag(ctx.id))).master.address;
        if (after !== master.address || Date.now() > until) break;
        await sleep(100);
      }
      this.failovers.push({ id: ctx.id, kind: what, before: master.address, after, moveMs });
    }
  }
  async rollback(ctx: HandoverContext): Promise<void> {
    await this.inner.rollback?.(ctx);
  }
}

