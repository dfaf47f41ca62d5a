/**
 * One handover in flight: what it moves, where to, its counts and events,
 * and the operations its steps are made of. The procedures (SHarP, and the
 * controller-buffer baseline) are sequences of these operations; the engine
 * owns validation, allocation and rollback.
 */
import { Phase, type AfterWrite, type Deployment, type DropCount, type Rule, type InstanceInfo } from '../dataplane/types.js';
import { describeDrop, totalFrames } from './drops.js';
import { allEnded, sleep } from '../util/mutex.js';
import type { HandoverJournal } from './journal.js';
import { ruleCovers, type HandoverContext, type HandoverCounts, type StateMover, type StateMoveResult } from './state-mover.js';

/** Every step a handover reports (SHarP's, the baseline's, and the outcomes). */
export const HANDOVER_STEPS = [
  'validating',
  'arming',
  'pre-marking',
  'switching',
  'diverting',
  'draining',
  'flushing',
  'moving-state',
  'releasing',
  'cleaning',
  'completed',
  'lossy',
  'rolling-back',
  'aborted',
  'failed',
] as const;

export type HandoverStep = (typeof HANDOVER_STEPS)[number];

/** The SHarP sequence, in order (the baseline's steps differ: see controller-buffer.ts). */
export const SHARP_STEPS = ['validating', 'arming', 'pre-marking', 'switching', 'draining', 'moving-state', 'releasing', 'cleaning'] as const satisfies readonly HandoverStep[];

export type HandoverMode = 'sharp' | 'controller-buffer';

export interface HandoverEvent {
  id: number;
  step: HandoverStep | 'warning';
  /** wall clock, ms since the epoch */
  at: number;
  /** ms since the handover started */
  t: number;
  detail?: string;
}

export interface RunCounts extends HandoverCounts {
  held: bigint;
  released: bigint;
  /** frames that did not fit the hold ring (lost) */
  overflow: bigint;
  /** held frames whose replay failed (lost) */
  replayFailed: bigint;
  relayed: bigint;
  /** frames the ports and agents the handover moved traffic through failed to redirect or transmit meanwhile (lost; see HandoverResult.drops) */
  dropped: bigint;
}

/** Held frames lost, per side of the hold rings (index 0: side 0, the frames from the ingress switch). */
export interface RingLoss {
  overflow: [bigint, bigint];
  replayFailed: [bigint, bigint];
}

/** How one quiescence wait ended (HandoverRun.quiesce): by the exact event, or after Q (no event in time, or none on this data plane). */
export interface QuiescenceWait {
  step: HandoverStep;
  /** whose agents it waited for (none: the switch barrier alone) */
  instances: string[];
  /** mismatch: an agent took in more frames than its port sent (counters of different incarnations) */
  by: 'event' | 'timeout' | 'unsupported' | 'mismatch';
  ms?: number;
}

export class HandoverError extends Error {
  override name = 'HandoverError';
  constructor(
    message: string,
    readonly step: HandoverStep,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

class StepTimeout extends Error {
  override name = 'StepTimeout';
}

export class HandoverRun {
  readonly t0 = performance.now();
  readonly events: HandoverEvent[] = [];
  readonly timings: Record<string, number> = {};
  /** every quiescence wait, in order, and how it ended */
  readonly waits: QuiescenceWait[] = [];
  readonly counts: RunCounts = { preSent: 0n, preSeen: 0n, postSent: 0n, held: 0n, released: 0n, overflow: 0n, replayFailed: 0n, relayed: 0n, dropped: 0n };
  /** the drops behind counts.dropped, by place and reason */
  drops: DropCount[] = [];
  /**
   * frames a rollback could not bring back from B's ring (B's host did not
   * answer), per switch port that sent them there; part of lost()
   */
  stranded: DropCount[] = [];
  /** frames released towards a P4 switch that it did not take in (windowed-release.ts); merged into drops when they are counted */
  readonly ingestLoss: DropCount[] = [];
  /** overflow and replay failures per side of the rings (side 0: frames from the ingress switch) */
  readonly ringLoss: RingLoss = { overflow: [0n, 0n], replayFailed: [0n, 0n] };
  readonly fromPorts: Map<number, string>;
  readonly toPorts: Map<number, string>;
  readonly switchNames: string[];
  readonly ctx: HandoverContext;
  step: HandoverStep = 'validating';
  /**
   * Set before the switch-over writes (one may take effect and a later one
   * fail): from then on a rollback must bring back what B holds.
   */
  #switchedOver = false;
  /**
   * Set once the state has moved, just before B's release: B's VNF may run
   * released frames from then on, so the flow belongs to B and a failure is
   * retried forward, never rolled back (A's state is no longer the latest).
   */
  #committed = false;
  /** what the last route() got back with its writes, per switch: the counts one quiescence wait uses, the marks one marks() uses */
  #afterRoute: { sent: ReadonlyMap<string, AfterWrite> | undefined; marks: ReadonlyMap<string, AfterWrite> | undefined; hid: number } = { sent: undefined, marks: undefined, hid: 0 };
  /** the last quiescence wait's counts per instance and how it ended, until a rule is written (quiesce's `again`) */
  #lastWait: { target: ReadonlyMap<string, readonly [bigint, bigint]>; by: QuiescenceWait['by'] } | undefined;
  /** each instance's arrivals as last read (quiesce, readArrivals): a later wait's counts must cover them */
  readonly #arrivalsSeen = new Map<string, [bigint, bigint]>();
  /** a rollback after switch-over: A's second handover id and ring */
  #back: { id: number; ring: number } | undefined;
  /** where the run is written before each step acts (a restarted controller reads it) */
  journal: HandoverJournal | undefined;
  mode: HandoverMode = 'sharp';
  /** the request's stateBackend, journalled */
  stateBackend: string | undefined;
  stateMs = 0;
  stateResult: StateMoveResult | undefined;

  constructor(
    readonly d: Deployment,
    readonly id: number,
    readonly rules: readonly Rule[],
    readonly from: InstanceInfo,
    readonly to: InstanceInfo,
    /** B's hold ring for this handover */
    readonly ring: number,
    readonly timeoutMs: number,
    readonly mover: StateMover,
    readonly onEvent: (ev: HandoverEvent) => void,
  ) {
    const sc = d.switchControl;
    this.fromPorts = new Map(rules.map((r) => [r.id, sc.portTowards(r.switch, from.name)!]));
    this.toPorts = new Map(rules.map((r) => [r.id, sc.portTowards(r.switch, to.name)!]));
    this.switchNames = [...new Set(rules.map((r) => r.switch))];
    this.ctx = { id, rules, from: from.name, to: to.name, covers: ruleCovers(rules), selection: rules.map((r) => r.match), counts: this.counts, timings: this.timings, vnfState: d.vnfState };
  }

  get switchedOver(): boolean {
    return this.#switchedOver;
  }

  set switchedOver(v: boolean) {
    this.#switchedOver = v;
    this.save();
  }

  get committed(): boolean {
    return this.#committed;
  }

  set committed(v: boolean) {
    this.#committed = v;
    this.save();
  }

  get back(): { id: number; ring: number } | undefined {
    return this.#back;
  }

  set back(v: { id: number; ring: number } | undefined) {
    this.#back = v;
    this.save();
  }

  /** Writes the run to the journal (before the step's operations act). */
  save(): void {
    this.journal?.write({
      version: 1,
      id: this.id,
      mode: this.mode,
      rules: this.rules.map((r) => r.id),
      from: this.from.name,
      to: this.to.name,
      ring: this.ring,
      step: this.step,
      switchedOver: this.#switchedOver,
      committed: this.#committed,
      ...(this.stateBackend === undefined ? {} : { stateBackend: this.stateBackend }),
      ...(this.#back === undefined ? {} : { back: this.#back }),
      startedAt: Date.now() - this.elapsed(),
    });
  }

  get Q(): number {
    return this.d.switchControl.quiescenceMs;
  }

  elapsed(): number {
    return performance.now() - this.t0;
  }

  remaining(): number {
    return Math.max(1, this.timeoutMs - this.elapsed());
  }

  emit(step: HandoverStep | 'warning', detail?: string): void {
    const ev: HandoverEvent = { id: this.id, step, at: Date.now(), t: this.elapsed(), ...(detail === undefined ? {} : { detail }) };
    this.events.push(ev);
    this.onEvent(ev);
  }

  /** timings[step] = ms since start when the step began */
  enter(step: HandoverStep, detail?: string): void {
    this.timings[step] = this.elapsed();
    this.step = step;
    this.save();
    this.emit(step, detail);
  }

  /**
   * Quiescence: every frame the handover's switches sent before now (so
   * every frame that read an older action) has been through the agents and
   * VNFs of `instances`. The exact event: a barrier on the switches' hosts
   * (every run that read an older action has finished and flushed), the
   * frames each port towards the instances had sent by then, and each
   * instance's agent having taken in that many on that side (in order: one
   * FIFO per side), read before a barrier on its host. With no instances it
   * is the switch barrier alone. Q is the fallback: where the data plane has
   * no such event, or the frames do not all arrive within Q (lost on the
   * way: the drop counters report them), the wait ends Q after it began, as
   * the timed wait did.
   */
  async quiesce(instances: readonly string[], o: { again?: boolean } = {}): Promise<void> {
    // the counts route() got with its writes, for this wait only (a later one reads afresh)
    const sentAfterRoute = this.#afterRoute.sent;
    this.#afterRoute.sent = undefined;
    const last = o.again === true ? this.#lastWait : undefined;
    this.#lastWait = undefined;
    const start = performance.now();
    const deadline = start + this.Q;
    const wait: QuiescenceWait = { step: this.step, instances: [...instances], by: 'event' };
    this.waits.push(wait);
    try {
      // again, with no rule written since a wait on the same instances that ended by the event: its counts (checked then) still cover the flow's frames
      if (last !== undefined && last.by === 'event' && last.target.size === instances.length && instances.every((i) => last.target.has(i))) {
        this.#lastWait = last;
        wait.by = await this.#arrivalsReach(last.target, deadline, new Map());
      } else wait.by = await this.#quiescenceEvent(instances, deadline, sentAfterRoute);
      if (this.#lastWait !== undefined) this.#lastWait.by = wait.by;
    } catch (e) {
      wait.by = 'timeout';
      this.emit('warning', `the quiescence event failed (${e instanceof Error ? e.message : String(e)}): waiting Q`);
    }
    if (wait.by !== 'event') await sleep(deadline - performance.now());
    wait.ms = performance.now() - start;
  }

  async #quiescenceEvent(instances: readonly string[], deadline: number, sentAfterRoute: ReadonlyMap<string, AfterWrite> | undefined): Promise<QuiescenceWait['by']> {
    const sc = this.d.switchControl;
    const ac = this.d.agentControl;
    if (sc.sentTowardsInstances === undefined || (instances.length > 0 && ac.arrivedFrames === undefined)) return 'unsupported';
    const sentTowards = sc.sentTowardsInstances.bind(sc);
    const target = new Map(instances.map((i) => [i, [0n, 0n] as [bigint, bigint]]));
    // each switch's barrier and count on its own host: the switches at once
    // (taken after the rule writes of route() where its reply carried them)
    const sentBefore = await allEnded(this.switchNames.map((sw) => (sentAfterRoute?.has(sw) ? Promise.resolve(sentAfterRoute.get(sw)!.sent) : sentTowards(sw))));
    for (const sent of sentBefore) {
      if (sent === undefined) return 'unsupported';
      for (const p of sent) {
        const t = target.get(p.instance);
        if (t !== undefined && (p.side === 0 || p.side === 1)) t[p.side] += p.frames;
      }
    }
    this.#lastWait = { target, by: 'timeout' };
    // the arrivals read before these counts: checked against them once the wait is over
    const before = new Map(instances.map((i) => [i, this.#arrivalsSeen.get(i)]));
    const arrivedAt = new Map<string, [bigint, bigint]>();
    const notReached = await this.#arrivalsReach(target, deadline, arrivedAt);
    if (notReached !== 'event') return notReached;
    // Every frame an agent took in was counted by its port first, so a port
    // counts at least what its agent took in at any earlier time. Fewer: the
    // counts are not comparable (one side reloaded with fresh counters, or
    // frames the switch did not count): the event proves nothing, Q decides.
    // Checked against the arrivals read before this wait's counts (an
    // earlier wait's, or those read at arming) where there are any; else
    // against the ports' counts read again now. Where every agent took in
    // exactly what its ports had sent, the ports counted that many already
    // (their counters only grow): nothing to check.
    for (const [i, t] of target) {
      const a = before.get(i);
      if (a === undefined) continue;
      for (const side of [0, 1] as const)
        if (a[side] > t[side]) {
          this.emit('warning', `${i} had taken in ${a[side]} frames on side ${side} before its ports counted only ${t[side]} sent: counters of different incarnations; waiting Q`);
          return 'mismatch';
        }
    }
    const exactlyMet = [...target].every(([i, t]) => before.has(i) || (arrivedAt.get(i)![0] === t[0] && arrivedAt.get(i)![1] === t[1]));
    if (instances.length > 0 && !exactlyMet) {
      const sentAfter = await allEnded(this.switchNames.map((sw) => sentTowards(sw)));
      for (const [k, sw] of this.switchNames.entries())
        for (const p of sentAfter[k] ?? []) {
          const a = arrivedAt.get(p.instance);
          if (a !== undefined && (p.side === 0 || p.side === 1) && p.frames < a[p.side]) {
            this.emit('warning', `${p.instance} took in ${a[p.side]} frames on side ${p.side}, but ${sw}/${p.port} counts only ${p.frames} sent: counters of different incarnations; waiting Q`);
            return 'mismatch';
          }
        }
    }
    return 'event';
  }

  /** Each instance's agent polled on its own host (the instances at once) until its arrivals reach `target`, or `deadline`; the arrivals that did in `arrivedAt`. */
  async #arrivalsReach(target: ReadonlyMap<string, readonly [bigint, bigint]>, deadline: number, arrivedAt: Map<string, [bigint, bigint]>): Promise<'event' | 'unsupported' | 'timeout'> {
    const ac = this.d.agentControl;
    if (ac.arrivedFrames === undefined) return target.size === 0 ? 'event' : 'unsupported';
    const reached = await allEnded(
      [...target].map(async ([instance, t]): Promise<'event' | 'unsupported' | 'timeout'> => {
        for (;;) {
          const arrived = await ac.arrivedFrames!(instance);
          if (arrived === undefined) return 'unsupported';
          this.#arrivalsSeen.set(instance, arrived);
          if (arrived[0] >= t[0] && arrived[1] >= t[1]) {
            arrivedAt.set(instance, arrived);
            return 'event';
          }
          if (performance.now() >= deadline) return 'timeout';
          await sleep(0);
        }
      }),
    );
    return reached.find((r) => r !== 'event') ?? 'event';
  }

  /**
   * Points every moving rule at `ports` with the given mark, one atomic
   * action update per rule (in one call where the switches take a batch).
   * Where the switches' hosts can, their reply brings the counts the next
   * quiescence wait starts from and the marks of `hid` (both taken after
   * the writes: the marks are final for the phase the writes ended).
   */
  async route(ports: ReadonlyMap<number, string>, phase: Phase, hid = this.id): Promise<void> {
    const sc = this.d.switchControl;
    const updates = this.rules.map((r) => ({ id: r.id, action: { outPort: ports.get(r.id)!, phase, handoverId: phase === Phase.NONE ? 0 : hid } }));
    this.#afterRoute = { sent: undefined, marks: undefined, hid };
    this.#lastWait = undefined;
    if (sc.setRuleActionsThenRead !== undefined && sc.sentTowardsInstances !== undefined) {
      const after = await sc.setRuleActionsThenRead(updates, hid);
      this.#afterRoute = { sent: after, marks: after, hid };
    } else if (sc.setRuleActions !== undefined && updates.length > 1) await sc.setRuleActions(updates);
    else for (const u of updates) await sc.setRuleAction(u.id, u.action);
  }

  /**
   * The instances' arrivals now, before any rule of the handover moves: the
   * first quiescence wait on each checks its ports' counts against them
   * (quiesce). Never fails: without them that wait reads the ports again.
   */
  async readArrivals(instances: readonly string[]): Promise<void> {
    const ac = this.d.agentControl;
    if (ac.arrivedFrames === undefined) return;
    await allEnded(
      instances.map(async (i) => {
        const a = await ac.arrivedFrames!(i).catch(() => undefined);
        if (a !== undefined) this.#arrivalsSeen.set(i, a);
      }),
    );
  }

  async resetMarks(hid = this.id): Promise<void> {
    await allEnded(this.switchNames.map((s) => this.d.switchControl.resetHandoverCounters(s, hid)));
  }

  /**
   * Marked frames the switches sent for `hid` (each switch read on its own
   * host, at once); a switch whose marks of `hid` came with the last
   * route()'s writes is not asked again, once (a count read after the
   * writes' barrier is final for the phase they ended, as one read later).
   */
  async marks(hid = this.id): Promise<{ pre: bigint; post: bigint }> {
    const after = this.#afterRoute.hid === hid ? this.#afterRoute.marks : undefined;
    this.#afterRoute.marks = undefined;
    const counts = await allEnded(this.switchNames.map((s) => (after?.get(s)?.marks !== undefined ? Promise.resolve(after.get(s)!.marks!) : this.d.switchControl.handoverCounters(s, hid))));
    return { pre: counts.reduce((a, c) => a + c.pre, 0n), post: counts.reduce((a, c) => a + c.post, 0n) };
  }

  /** Step 5: the state mover, bounded by the handover's (and the request's state) timeout. */
  async moveState(stateTimeoutMs: number | undefined): Promise<void> {
    this.enter('moving-state', this.mover.name);
    const ts = performance.now();
    const ac = new AbortController();
    const limit = Math.min(stateTimeoutMs ?? this.remaining(), this.remaining());
    const timer = setTimeout(() => ac.abort(new StepTimeout(`the state move did not finish within ${limit.toFixed(0)} ms`)), limit);
    try {
      this.stateResult = await Promise.race([
        this.mover.move(this.ctx, ac.signal),
        new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true })),
      ]);
    } finally {
      clearTimeout(timer);
      this.stateMs = performance.now() - ts;
    }
  }

  /**
   * Step 7: stop marking, let the last marked frames land, forget the
   * handover at both agents. `beside`: what else waits for the last frames
   * to land (the drop counters' second reading), at once with the forgetting.
   */
  async cleanUp(beside?: () => Promise<void>): Promise<void> {
    this.enter('cleaning');
    // B's counts are final once its release has returned (it holds nothing from then on): read beside the unmarking
    await allEnded([this.collect(this.to.name), this.route(this.toPorts, Phase.NONE)]);
    await this.quiesce([this.to.name]);
    // the last marked frames have landed: the POST count is final, and both agents forget H (different hosts, at once)
    await allEnded([this.marks().then((m) => void (this.counts.postSent = m.post)), this.d.agentControl.disarm(this.from.name, this.id), this.d.agentControl.disarm(this.to.name, this.id), beside?.() ?? Promise.resolve()]);
  }

  /** Adds an instance's hold/release counts of `hid` to the run's. */
  async collect(instance: string, hid = this.id): Promise<void> {
    const st = await this.d.agentControl.agentStatus(instance, hid);
    if (st === undefined) return;
    const c = this.counts;
    c.held += st.held[0] + st.held[1];
    c.released += st.released[0] + st.released[1];
    c.overflow += st.overflow[0] + st.overflow[1];
    c.replayFailed += st.replayFailed[0] + st.replayFailed[1];
    for (const side of [0, 1] as const) {
      this.ringLoss.overflow[side] += st.overflow[side];
      this.ringLoss.replayFailed[side] += st.replayFailed[side];
    }
  }

  /** Frames this handover lost (each with its reason); 0 for a clean handover. */
  lost(): { frames: bigint; reasons: string[] } {
    const reasons: string[] = [];
    if (this.counts.overflow > 0n) reasons.push(`${this.counts.overflow} frames overflowed the hold ring of ${this.to.name} (${this.to.ringCapacity} frames per side)`);
    if (this.counts.replayFailed > 0n) reasons.push(`${this.counts.replayFailed} held frames failed to replay`);
    for (const d of [...this.drops, ...this.stranded]) reasons.push(describeDrop(d));
    return { frames: this.counts.overflow + this.counts.replayFailed + this.counts.dropped + totalFrames(this.stranded), reasons };
  }
}

