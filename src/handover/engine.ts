/**
 * The SHarP handover engine, written once against the split contract (switch
 * control, agent control, VNF state): arm, pre-mark, switch over,
 * count-drain, move state, release in the kernel, clean up. The controller
 * never holds a packet: the only buffer is the new instance's kernel ring.
 * The controller-buffer baseline is another procedure over the same run
 * (controller-buffer.ts).
 */
import { EventEmitter } from 'node:events';
import { Phase, DataPlaneError, instancesOf, localDeployment, unanswered, MAX_RELEASE_FRAMES, type AgentControl, type DataPlane, type Deployment, type SwitchControl, type DropCount, type InstanceInfo, type ReleaseResult, type Rule } from '../dataplane/types.js';
import { RELEASE_WINDOW, windowedRelease } from './windowed-release.js';
import { dropDelta, settleNotIngested, snapshotDrops, totalFrames, type DropScope, type DropSnapshot } from './drops.js';
import { allEnded, sleep, waitFor } from '../util/mutex.js';
import { withCallDeadline } from '../util/call-deadline.js';
import type { HandoverCounts, StateMover, StateMoveResult } from './state-mover.js';
import { HandoverError, HandoverRun, type HandoverEvent, type HandoverMode, type HandoverStep, type QuiescenceWait, type RingLoss, type RunCounts } from './run.js';
import { ControllerBufferProcedure, type ControllerBufferStats } from './controller-buffer.js';
import type { HandoverJournal, JournalEntry } from './journal.js';

export { HandoverError, HANDOVER_STEPS, SHARP_STEPS, type HandoverEvent, type HandoverMode, type HandoverStep, type QuiescenceWait, type RingLoss } from './run.js';
export type { ControllerBufferStats } from './controller-buffer.js';

export interface HandoverRequest {
  /** the rules carrying the flow (e.g. the forward rule on s1 and the reverse rule on s2); they move together */
  rules: readonly number[];
  from: string;
  to: string;
  /** overall limit; every wait inside has its own share */
  timeoutMs?: number;
  /** limit for the state move alone */
  stateTimeoutMs?: number;
  /** for the hold-capacity check: expected packets/s of the moving rules (default: measured) */
  expectedPps?: number;
  /** for the hold-capacity check: expected state-transfer time (default: the mover's own estimate) */
  expectedStateMs?: number;
  /** what to do when the ring may overflow: refuse (default) or warn and go on */
  capacityPolicy?: 'refuse' | 'warn';
  mover?: StateMover;
  /** the name of the mover's backend, journalled so that a recovering controller uses the same one (HandoverEngine.recover's moverFor) */
  stateBackend?: string;
  /**
   * 'sharp' (default): zero controller buffer. 'controller-buffer': the
   * baseline SHarP replaced (OpenNF-style): during the move the switches
   * divert the flow to the controller, which buffers the packets and sends
   * them to the new instance once the state has moved.
   */
  mode?: HandoverMode;
  /** this handover's events only (the engine's 'event' emitter carries every handover's) */
  onEvent?: (ev: HandoverEvent) => void;
}

/**
 * completed: moved, nothing lost. lossy: moved, but frames were lost (the
 * reason names how many and why). aborted: rolled back, traffic stays on
 * `from`, nothing lost. failed: the rollback failed too (the reason says
 * what state the rules were left in).
 */
export type HandoverOutcome = 'completed' | 'lossy' | 'aborted' | 'failed';

export interface HandoverResult {
  id: number;
  from: string;
  to: string;
  rules: number[];
  outcome: HandoverOutcome;
  reason?: string;
  durationMs: number;
  /** time the state mover took */
  stateMs: number;
  counts: HandoverCounts & RunCounts;
  mode: HandoverMode;
  controllerBuffer: ControllerBufferStats;
  state?: StateMoveResult;
  /** frames the ports and agents the handover moved traffic through dropped while it ran, by place and reason (counts.dropped is their sum) */
  drops: DropCount[];
  /** counts.overflow and counts.replayFailed per side of the rings */
  ringLoss: RingLoss;
  /** frames a rollback could not bring back from the new instance's ring (its host did not answer), per switch port that sent them there */
  stranded: DropCount[];
  timings: Record<string, number>;
  /** the quiescence waits, in order, and whether each ended by the exact event or after Q */
  waits: QuiescenceWait[];
  events: HandoverEvent[];
}

/** Whether the flow now runs through `to` (with or without loss). */
export function flowMoved(r: Pick<HandoverResult, 'outcome'>): boolean {
  return r.outcome === 'completed' || r.outcome === 'lossy';
}

export class CapacityError extends HandoverError {
  override name = 'CapacityError';
  constructor(
    readonly neededFrames: number,
    readonly capacityFrames: number,
    readonly instance: string,
    readonly pps: number,
    readonly windowMs: number,
  ) {
    super(
      `the hold ring of ${instance} holds ${capacityFrames} frames per side, but ${pps.toFixed(0)} pps per side over ${windowMs.toFixed(0)} ms (state move + margins) needs about ${neededFrames}: refusing (raise the ring capacity, lower the rate or the state time, or accept the risk with capacityPolicy 'warn')`,
      'validating',
    );
  }
}

export interface EngineOptions {
  mover: StateMover;
  /** default overall timeout per handover */
  timeoutMs?: number;
  /** margin on top of the expected state time in the capacity check */
  capacitySafety?: number;
  /**
   * Where handovers in flight are written before each step acts: a
   * controller restarted after a crash calls recover() to finish or roll
   * back what the dead one left. Without it a crash mid-handover needs an
   * operator.
   */
  journal?: HandoverJournal;
  /**
   * Frames a release may have in flight towards a P4 switch port (default
   * RELEASE_WINDOW, 512; BMv2's input ring holds 1,310): see
   * windowed-release.ts. Switches that do not count what they took in
   * (XDP) are released to at once whatever this says.
   */
  releaseWindow?: number;
}

/**
 * The deployment as snapshotDrops sees it, with the scope's counters (each
 * switch's ports, each instance's interfaces: calls to different hosts)
 * already asked for at once; it reads them one after another.
 */
function readingAtOnce(d: Deployment, scope: DropScope): Deployment {
  const sc = d.switchControl;
  const ac = d.agentControl;
  // marked handled here: a rejection is seen when snapshotDrops awaits it (or not at all, if an earlier one ended it)
  const asked = <T>(p: Promise<T>): Promise<T> => (p.catch(() => undefined), p);
  const ports = new Map(scope.switches.map((sw) => [sw, asked(sc.portCounters(sw))]));
  const ifaces = ac.interfaceDrops === undefined ? undefined : new Map(scope.instances.map((i) => [i, asked(ac.interfaceDrops!(i))]));
  return {
    vnfState: d.vnfState,
    switchControl: Object.assign(Object.create(sc) as SwitchControl, { portCounters: (sw: string) => ports.get(sw) ?? sc.portCounters(sw) }),
    agentControl: ifaces === undefined ? ac : Object.assign(Object.create(ac) as AgentControl, { interfaceDrops: (i: string) => ifaces.get(i) ?? ac.interfaceDrops!(i) }),
  };
}

/** Thrown by steps to carry the step name into the rollback decision. */
function stepError(step: HandoverStep, e: unknown): HandoverError {
  if (e instanceof HandoverError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new HandoverError(`${step}: ${msg}`, step, { cause: e });
}

/** drops plus what the switches did not take in of the releases (counted once: taken out of ingestLoss) */
function mergeIngestLoss(h: HandoverRun, exact: ReadonlySet<string> = new Set()): void {
  const key = (x: DropCount): string => `${x.where}|${x.reason}`;
  // releases lose frames of their own: summed per port
  const released = new Map<string, DropCount>();
  for (const x of h.ingestLoss.splice(0)) if (!exact.has(key(x))) released.set(key(x), { ...x, frames: (released.get(key(x))?.frames ?? 0n) + x.frames });
  // a port whose interface the switch's host reads counted the same frames over the whole handover: the larger count of one loss seen twice
  const merged = new Map(h.drops.map((x) => [key(x), x]));
  for (const [k, x] of released) if (!(x.frames <= (merged.get(k)?.frames ?? -1n))) merged.set(k, x);
  h.drops = [...merged.values()];
  h.counts.dropped = totalFrames(h.drops);
}

const HID_MAX = 16383;
/**
 * What a control call made after the handover's time is up still gets: the
 * clean-up a failed handover owes (A's take-back release, disarms) must not
 * be cut to nothing, nor wait a full call deadline per call on a node that
 * stopped answering.
 */
const LATE_CALL_MS = 1_000;
/** A's take-back release after the handover's time is up: it carries the moved flow's newest frames */
const LATE_RELEASE_MS = 5_000;

export class HandoverEngine extends EventEmitter {
  readonly #d: Deployment;
  readonly #o: Required<Omit<EngineOptions, 'journal'>>;
  readonly #journal: HandoverJournal | undefined;
  /** handovers a previous controller left in the journal, until recover() */
  #unrecovered = 0;
  readonly #hidsInUse = new Set<number>();
  /** rule id -> handover id moving it */
  readonly #rulesInUse = new Map<number, number>();
  /** instance -> rings in use by incoming handovers */
  readonly #ringsInUse = new Map<string, Set<number>>();
  readonly #active = new Map<number, { run: HandoverRun; request: HandoverRequest; startedAt: number }>();
  /**
   * instance -> hold rings a failed rollback left armed there (its host did
   * not answer the disarm): their handover id and ring stay reserved until a
   * later disarm succeeds, so no new handover reuses them while the stale
   * ring may still take frames
   */
  readonly #strandedRings = new Map<string, { hid: number; ring: number }[]>();
  #nextHid = 1;
  readonly #baseline: ControllerBufferProcedure;

  /** A data plane (every part in this process) or a deployment whose parts may be on other hosts. */
  constructor(target: Deployment | DataPlane, options: EngineOptions) {
    super();
    this.#d = 'switchControl' in target ? target : localDeployment(target);
    const { journal, ...o } = options;
    const w = o.releaseWindow;
    if (w !== undefined && (!Number.isInteger(w) || w < 2 || w > MAX_RELEASE_FRAMES)) throw new HandoverError(`releaseWindow ${w}: must be an integer 2..${MAX_RELEASE_FRAMES}`, 'validating');
    this.#o = { timeoutMs: 30_000, capacitySafety: 2, releaseWindow: RELEASE_WINDOW, ...o };
    this.#journal = journal;
    this.#baseline = new ControllerBufferProcedure(this.#d);
    // their ids (and back ids) may still be armed at agents: never reuse them before recover()
    for (const e of journal?.entries() ?? []) {
      this.#unrecovered++;
      this.#hidsInUse.add(e.id);
      if (e.back) this.#hidsInUse.add(e.back.id);
      this.#nextHid = Math.max(this.#nextHid, e.id + 1, (e.back?.id ?? 0) + 1) % HID_MAX || 1;
    }
  }

  get deployment(): Deployment {
    return this.#d;
  }

  /** diverted frames no handover claimed (baseline; must stay 0) */
  get unclaimedFrames(): number {
    return this.#baseline.unclaimedFrames;
  }

  /** Handovers in flight with their current step. */
  active(): { id: number; step: HandoverStep; from: string; to: string; rules: readonly number[]; startedAt: number }[] {
    return [...this.#active.entries()].map(([id, a]) => ({ id, step: a.run.step, from: a.request.from, to: a.request.to, rules: a.request.rules, startedAt: a.startedAt }));
  }

  /** The handover moving rule `id`, if any: such a rule must not be deleted or changed. */
  ruleLock(id: number): number | undefined {
    return this.#rulesInUse.get(id);
  }

  #allocHid(): number {
    for (let i = 0; i < HID_MAX; i++) {
      const hid = this.#nextHid;
      this.#nextHid = (this.#nextHid % HID_MAX) + 1;
      if (!this.#hidsInUse.has(hid)) {
        this.#hidsInUse.add(hid);
        return hid;
      }
    }
    throw new HandoverError('no free handover id', 'validating');
  }

  #allocRing(instance: string, count: number): number | undefined {
    const used = this.#ringsInUse.get(instance) ?? new Set<number>();
    this.#ringsInUse.set(instance, used);
    for (let r = 0; r < count; r++)
      if (!used.has(r)) {
        used.add(r);
        return r;
      }
    return undefined;
  }

  #freeRing(instance: string, ring: number | undefined): void {
    if (ring !== undefined) this.#ringsInUse.get(instance)?.delete(ring);
  }

  /**
   * Moves the rules' traffic from `from` to `to`. Resolves with the outcome;
   * an 'aborted' handover leaves the traffic flowing through `from` with
   * nothing lost. Rejects only for requests that are invalid from the start
   * (nothing has changed then).
   */
  async handover(req: HandoverRequest): Promise<HandoverResult> {
    // every control call on its behalf ends with the handover's time (util/call-deadline.ts)
    return withCallDeadline(Date.now() + (req.timeoutMs ?? this.#o.timeoutMs), LATE_CALL_MS, () => this.#handover(req));
  }

  async #handover(req: HandoverRequest): Promise<HandoverResult> {
    if (this.#unrecovered > 0)
      throw new HandoverError(`${this.#unrecovered} handover(s) a previous controller left unfinished are in the journal: recover() them first`, 'validating');
    const mover = req.mover ?? this.#o.mover;
    const mode = req.mode ?? 'sharp';
    const id = this.#allocHid();
    const early: HandoverEvent[] = [];
    const onEvent = (ev: HandoverEvent): void => {
      req.onEvent?.(ev);
      this.emit('event', ev);
    };
    const validatingEvent: HandoverEvent = { id, step: 'validating', at: Date.now(), t: 0 };
    early.push(validatingEvent);
    onEvent(validatingEvent);
    let run: HandoverRun;
    await this.#disarmStranded([req.from, req.to]);
    try {
      const v = await this.#validate(req, mover, (detail) => {
        const ev: HandoverEvent = { id, step: 'warning', at: Date.now(), t: 0, detail };
        early.push(ev);
        onEvent(ev);
      });
      const ring = this.#allocRing(v.to.name, v.to.ringCount);
      if (ring === undefined) throw new HandoverError(`${v.to.name} has no free hold ring (${v.to.ringCount} handovers into it are in flight)`, 'validating');
      run = new HandoverRun(this.#d, id, v.rules, v.from, v.to, ring, req.timeoutMs ?? this.#o.timeoutMs, mover, onEvent);
      run.events.push(...early);
      run.mode = mode;
      if (req.stateBackend !== undefined) run.stateBackend = req.stateBackend;
      run.journal = this.#journal;
      run.save();
    } catch (e) {
      this.#hidsInUse.delete(id);
      throw stepError('validating', e);
    }
    for (const r of run.rules) this.#rulesInUse.set(r.id, id);
    this.#active.set(id, { run, request: req, startedAt: Date.now() });
    const scope = this.#dropScope(run);
    // read beside the arming (#sharp waits for it before the first mark: nothing moves traffic before); never rejects
    const drops0 = this.#readDrops(run, scope);
    const countDrops = async (): Promise<void> => this.#countDrops(run, scope, await drops0);
    try {
      try {
        if (mode === 'controller-buffer') {
          await drops0;
          await this.#baseline.run(run, req.stateTimeoutMs);
          await countDrops();
        } else await this.#sharp(run, req.stateTimeoutMs, drops0, countDrops);
      } catch (e) {
        const err = stepError(run.step, e);
        // once committed (the state is at B) only forward; before, back to A
        return run.committed ? await this.#goForward(run, mode, err, countDrops) : await this.#rollback(run, mode, err, countDrops);
      }
      const lost = run.lost();
      if (lost.frames > 0n) {
        run.emit('warning', lost.reasons.join('; '));
        return this.#finish(run, mode, 'lossy', `moved to ${run.to.name}, but ${lost.frames} frames were lost: ${lost.reasons.join('; ')}`);
      }
      return this.#finish(run, mode, 'completed');
    } finally {
      this.#journal?.remove(id);
      for (const r of run.rules) this.#rulesInUse.delete(r.id);
      this.#baseline.forget(id);
      if (!this.#isStranded(run.to.name, id)) {
        this.#freeRing(run.to.name, run.ring);
        this.#hidsInUse.delete(id);
      }
      this.#active.delete(id);
    }
  }

  #isStranded(instance: string, hid: number): boolean {
    return (this.#strandedRings.get(instance) ?? []).some((x) => x.hid === hid);
  }

  /** Disarms what failed rollbacks left armed at these instances, where their hosts answer now; frees their ids and rings. */
  async #disarmStranded(instances: readonly string[]): Promise<void> {
    for (const instance of new Set(instances)) {
      const left: { hid: number; ring: number }[] = [];
      for (const x of this.#strandedRings.get(instance) ?? []) {
        try {
          await this.#d.agentControl.disarm(instance, x.hid);
          this.#freeRing(instance, x.ring);
          this.#hidsInUse.delete(x.hid);
        } catch {
          left.push(x);
        }
      }
      if (left.length > 0) this.#strandedRings.set(instance, left);
      else this.#strandedRings.delete(instance);
    }
  }

  /**
   * Finishes or rolls back every handover a previous (crashed) controller
   * left in the journal, reading the data plane back from the nodes:
   *   - a rollback after switch-over had begun: it is finished (A's second
   *     id goes on; B's ring, if still armed, is relayed to A);
   *   - committed (B's release had begun, the state had moved): forward —
   *     release again (idempotent) and clean up;
   *   - switched over, not committed: the state move is undone (the mover's
   *     rollback) and B's ring goes back to A;
   *   - not switched over (arming, pre-marking): the rules go back to A
   *     unmarked and both agents are disarmed.
   * The controller-buffer baseline cannot be recovered once it diverted:
   * the frames it buffered died with the controller (reported as failed).
   */
  /**
   * moverFor: the mover of a journalled handover's stateBackend (undefined:
   * the engine's own mover, as for entries written without one).
   */
  async recover(o: { moverFor?: (stateBackend: string) => StateMover | undefined } = {}): Promise<HandoverResult[]> {
    const out: HandoverResult[] = [];
    for (const e of this.#journal?.entries() ?? []) out.push(await this.#recoverOne(e, (e.stateBackend === undefined ? undefined : o.moverFor?.(e.stateBackend)) ?? this.#o.mover));
    this.#unrecovered = 0;
    return out;
  }

  async #recoverOne(e: JournalEntry, mover: StateMover): Promise<HandoverResult> {
    const sc = this.#d.switchControl;
    const agents = this.#d.agentControl;
    const instances = instancesOf(this.#d);
    const from = instances.find((i) => i.name === e.from);
    const to = instances.find((i) => i.name === e.to);
    const rules = e.rules.map((id) => sc.getRule(id)).filter((r): r is Rule => r !== undefined);
    const onEvent = (ev: HandoverEvent): void => void this.emit('event', ev);
    if (from === undefined || to === undefined) {
      this.#journal?.remove(e.id);
      throw new HandoverError(`handover ${e.id} of the journal names instance ${from === undefined ? e.from : e.to}, which the deployment no longer has: left as it is`, 'validating');
    }
    const h = new HandoverRun(this.#d, e.id, rules, from, to, e.ring, this.#o.timeoutMs, mover, onEvent);
    h.mode = e.mode;
    if (e.stateBackend !== undefined) h.stateBackend = e.stateBackend;
    h.journal = this.#journal;
    h.step = e.step;
    this.#ringsInUse.set(to.name, (this.#ringsInUse.get(to.name) ?? new Set<number>()).add(e.ring));
    if (e.back) this.#ringsInUse.set(from.name, (this.#ringsInUse.get(from.name) ?? new Set<number>()).add(e.back.ring));
    for (const r of rules) this.#rulesInUse.set(r.id, e.id);
    this.#active.set(e.id, { run: h, request: { rules: e.rules, from: e.from, to: e.to }, startedAt: e.startedAt });
    const left = `left at ${e.step} by a previous controller`;
    h.emit('warning', `recovering handover ${e.id} ${e.from} → ${e.to}, ${left}`);
    try {
      if (rules.length !== e.rules.length) throw new HandoverError(`rules ${e.rules.filter((id) => sc.getRule(id) === undefined).join(', ')} no longer exist`, e.step);
      if (e.mode === 'controller-buffer' && e.switchedOver && !e.committed)
        return this.#finish(h, e.mode, 'failed', `${left}: the controller-buffer baseline kept the diverted frames in the dead controller; they are lost (SHarP keeps them in B's kernel ring instead)`);
      if (e.back !== undefined) {
        h.enter('rolling-back', `finishing the rollback ${left}`);
        await this.#takeBack(h, e.mode, e.back);
        return this.#finish(h, e.mode, 'aborted', `recovered: the rollback ${left} was finished; traffic stays on ${from.name}`);
      }
      if (e.committed) {
        h.enter('releasing', `finishing the release ${left}`);
        // the dead controller may have released part of the ring (in windows): this goes on from where it stopped, in order
        if ((await agents.agentStatus(to.name, e.id)) !== undefined) await this.#releaseToVnf(h, to.name, e.id, () => h.remaining());
        await h.cleanUp();
        mergeIngestLoss(h);
        const lost = h.lost();
        if (lost.frames > 0n) return this.#finish(h, e.mode, 'lossy', `recovered (${left}), but ${lost.frames} frames were lost: ${lost.reasons.join('; ')}`);
        return this.#finish(h, e.mode, 'completed', `recovered: ${left}, finished`);
      }
      h.enter('rolling-back', `rolling back ${left}`);
      await h.mover.rollback?.(h.ctx).catch(() => undefined);
      if (e.switchedOver) await this.#takeBack(h, e.mode);
      else {
        await h.route(h.fromPorts, Phase.NONE);
        await h.quiesce([from.name]);
        await agents.disarm(from.name, e.id).catch(() => undefined);
        await agents.disarm(to.name, e.id).catch(() => undefined);
      }
      return this.#finish(h, e.mode, 'aborted', `recovered: ${left}, rolled back; traffic stays on ${from.name}`);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      const notes = await this.#unmarkWhatIsLeft(h);
      return this.#finish(h, e.mode, 'failed', `recovering handover ${e.id} (${left}) failed: ${msg}${notes}`);
    } finally {
      this.#journal?.remove(e.id);
      for (const r of rules) this.#rulesInUse.delete(r.id);
      this.#freeRing(to.name, e.ring);
      if (e.back) this.#freeRing(from.name, e.back.ring);
      this.#hidsInUse.delete(e.id);
      if (e.back) this.#hidsInUse.delete(e.back.id);
      this.#active.delete(e.id);
    }
  }

  /**
   * The seven steps of SHarP. `dropsBefore`: the drop counters' first
   * reading, in flight; it must be in before any traffic moves.
   * `countDrops`: their second reading and the difference, once the last
   * marked frames have landed.
   */
  async #sharp(h: HandoverRun, stateTimeoutMs: number | undefined, dropsBefore: Promise<unknown>, countDrops: () => Promise<void>): Promise<void> {
    const agents = this.#d.agentControl;

    // ---- 1. arm: B holds shim(H) frames, A counts shim(H, PRE)
    // (independent writes and reads on different hosts, at once; all of them ended before the first mark;
    // A's and B's arrivals so far: what their ports' counts in the quiescence waits must cover)
    h.enter('arming');
    await allEnded([dropsBefore, h.resetMarks(), agents.armNew(h.to.name, h.id, h.ring), agents.armOld(h.from.name, h.id), h.readArrivals([h.from.name, h.to.name])]);

    // ---- 2. pre-mark: still to A, now marked PRE and counted. Once every
    // unmarked frame sent before is through A (quiescence), all that A is
    // still to receive of the flow is counted
    h.enter('pre-marking');
    await h.route(h.fromPorts, Phase.PRE);
    await h.quiesce([h.from.name]);

    // ---- 3. switch over: to B, marked POST; the PRE count is final once the writes are in (read with them where the
    // switches' hosts can, else after the quiescence)
    h.enter('switching');
    h.switchedOver = true;
    await h.route(h.toPorts, Phase.POST);
    await h.quiesce([h.from.name]);
    h.counts.preSent = (await h.marks()).pre;

    // ---- 4. drain A: its agent has seen every PRE frame (+quiescence: it counts before its VNF ran)
    h.enter('draining', `waiting for ${h.counts.preSent} PRE frames at ${h.from.name}`);
    const drained = await waitFor(async () => {
      const st = await agents.agentStatus(h.from.name, h.id);
      h.counts.preSeen = st?.preSeen ?? 0n;
      return h.counts.preSeen >= h.counts.preSent ? true : undefined;
    }, Math.min(h.remaining(), 5_000 + 10 * h.Q));
    if (drained === undefined)
      throw new HandoverError(`${h.from.name} received ${h.counts.preSeen} of ${h.counts.preSent} PRE frames before the timeout: ${h.counts.preSent - h.counts.preSeen} missing`, 'draining');
    // again on the switch-over's counts: no rule was written since, and every frame of the flow towards A was sent before them
    await h.quiesce([h.from.name], { again: true });

    // ---- 5. move state, now final at A
    await h.moveState(stateTimeoutMs);

    // ---- 6. release B's ring in order, in the kernel; then new frames pass
    // the state is at B now: from here on only forward (journaled before the release acts)
    h.committed = true;
    h.enter('releasing');
    await this.#releaseToVnf(h, h.to.name, h.id, () => h.remaining());

    // ---- 7. clean up: stop marking, let the last marked frames land, forget H; the drops counted beside
    await h.cleanUp(countDrops);
  }

  #finish(h: HandoverRun, mode: HandoverMode, outcome: HandoverOutcome, reason?: string): HandoverResult {
    h.enter(outcome, reason);
    return {
      id: h.id,
      from: h.from.name,
      to: h.to.name,
      rules: h.rules.map((r) => r.id),
      outcome,
      durationMs: h.elapsed(),
      stateMs: h.stateMs,
      counts: h.counts,
      mode,
      controllerBuffer: this.#baseline.stats(h.id),
      drops: h.drops,
      ringLoss: h.ringLoss,
      stranded: h.stranded,
      timings: h.timings,
      waits: h.waits,
      events: h.events,
      ...(reason === undefined ? {} : { reason }),
      ...(h.stateResult === undefined ? {} : { state: h.stateResult }),
    };
  }

  /**
   * Before switch-over the rules go back unmarked. After it, the frames held
   * at B are older than anything still to come: they go back to A (A holds
   * new frames under a second id, B's ring is relayed to A through the
   * switches that fed it, A releases its own), so traffic stays on A with
   * nothing lost.
   */
  async #rollback(h: HandoverRun, mode: HandoverMode, err: HandoverError, countDrops: () => Promise<void>): Promise<HandoverResult> {
    const failedStep = h.step;
    const agents = this.#d.agentControl;
    try {
      h.enter('rolling-back', err.message);
      await h.mover.rollback?.(h.ctx).catch(() => undefined);
      if (!h.switchedOver) {
        await h.route(h.fromPorts, Phase.NONE);
        await h.quiesce([h.from.name]);
        await agents.disarm(h.from.name, h.id).catch(() => undefined);
        await agents.disarm(h.to.name, h.id).catch(() => undefined);
      } else {
        await this.#takeBack(h, mode);
      }
      await countDrops();
      const lost = h.lost();
      // rolled back, but not without loss: the reason says how many frames died where
      const lossNote = lost.frames > 0n ? `; but ${lost.frames} frames were lost: ${lost.reasons.join('; ')}` : '';
      return this.#finish(h, mode, 'aborted', `${failedStep}: ${err.message.replace(/^[a-z-]+: /, '')}; traffic stays on ${h.from.name}${lossNote}`);
    } catch (e2) {
      const msg = e2 instanceof Error ? e2.message : String(e2);
      const left = await this.#unmarkWhatIsLeft(h);
      await countDrops().catch(() => undefined);
      return this.#finish(h, mode, 'failed', `${failedStep}: ${err.message.replace(/^[a-z-]+: /, '')}; rollback failed: ${msg.replace(/^rolling-back: /, '')}${left}`);
    }
  }

  /**
   * A failure once B's release has begun: B's VNF may have run released
   * frames, so going back to A would lose that state. Release and clean-up
   * are idempotent: retry them while the handover's time lasts.
   */
  async #goForward(h: HandoverRun, mode: HandoverMode, err: HandoverError, countDrops: () => Promise<void>): Promise<HandoverResult> {
    const failedStep = h.step;
    const agents = this.#d.agentControl;
    h.emit('warning', `${err.message}; retrying forward: once its release began the flow belongs to ${h.to.name}`);
    let last: unknown = err;
    for (let attempt = 1; attempt <= 3 && h.remaining() > h.Q; attempt++) {
      try {
        await h.quiesce([h.to.name]);
        h.enter('releasing', `retry ${attempt}`);
        await this.#releaseToVnf(h, h.to.name, h.id, () => h.remaining());
        await h.cleanUp();
        await countDrops();
        const lost = h.lost();
        const note = `${failedStep} failed once (${err.message.replace(/^[a-z-]+: /, '')}) and was retried`;
        if (lost.frames > 0n) return this.#finish(h, mode, 'lossy', `moved to ${h.to.name}, but ${lost.frames} frames were lost: ${lost.reasons.join('; ')}; ${note}`);
        h.emit('warning', note);
        return this.#finish(h, mode, 'completed');
      } catch (e) {
        last = e;
      }
    }
    const msg = last instanceof Error ? last.message : String(last);
    return this.#finish(h, mode, 'failed', `${failedStep}: ${msg}; the flow stays on ${h.to.name}, whose ring keeps holding its frames in order until a release succeeds (retried 3 times)`);
  }

  /**
   * Where the handover's traffic can die uncounted by the switch program:
   * any switch port but those towards instances other than A and B (the
   * flow leaves B for its host through ports no rule of the handover names,
   * and a release's burst can overflow them), every port's failed
   * redirects, the interfaces of A and B. Other traffic dropped at a shared
   * port meanwhile makes the outcome lossy too: a false "lossy" names the
   * port, a false "completed" would hide a loss.
   */
  #dropScope(h: HandoverRun): DropScope {
    const sc = this.#d.switchControl;
    const switches = sc.switches();
    const otherInstancePorts = new Set<string>();
    for (const inst of this.#d.agentControl.agentInstances()) {
      if (inst.name === h.from.name || inst.name === h.to.name) continue;
      for (const sw of switches) {
        const port = sc.portTowards(sw, inst.name);
        if (port !== undefined) otherInstancePorts.add(`${sw}/${port}`);
      }
    }
    return { switches, otherInstancePorts, instances: [h.from.name, h.to.name] };
  }

  async #readDrops(h: HandoverRun, scope: DropScope): Promise<DropSnapshot | undefined> {
    try {
      return await snapshotDrops(readingAtOnce(this.#d, scope), scope, (instance, e) => h.emit('warning', `the drop counters of ${instance} cannot be read (${e instanceof Error ? e.message : String(e)}): frames lost at its interfaces would go unseen`));
    } catch (e) {
      h.emit('warning', `drop counters cannot be read (${e instanceof Error ? e.message : String(e)}): frames lost outside the switch programs would go unseen`);
      return undefined;
    }
  }

  /** counts.dropped and drops: what the scope dropped since `before`. */
  async #countDrops(h: HandoverRun, scope: DropScope, before: DropSnapshot | undefined): Promise<void> {
    const after = before === undefined ? undefined : await this.#readDrops(h, scope);
    if (before !== undefined && after !== undefined) h.drops = dropDelta(before, await settleNotIngested(this.#d.switchControl, before, after, () => Math.max(h.remaining(), LATE_CALL_MS)));
    // where the switch read its buffers' own drop counts, those are the loss: the release's estimate of the same port is not
    const exact = before === undefined || after === undefined ? new Set<string>() : new Set([...after.values()].filter((a) => a.exact === true).map((a) => `${a.where}|${a.reason}`));
    mergeIngestLoss(h, exact);
  }

  /**
   * A release into `instance`'s VNF: in windows towards P4 switches, at
   * once elsewhere (windowed-release.ts). Frames the switches did not take
   * in are kept for the drop count.
   */
  async #releaseToVnf(h: HandoverRun, instance: string, hid: number, remaining: () => number): Promise<ReleaseResult> {
    // the instance the flow leaves (A for B's release; B for A's take-back): its last frames may still wait at the switches' ports facing it
    const after = instance === h.to.name ? h.from.name : h.to.name;
    const w = await windowedRelease(this.#d.switchControl, this.#d.agentControl, instance, hid, { remaining, warn: (d) => h.emit('warning', d), window: this.#o.releaseWindow, after });
    h.ingestLoss.push(...w.notIngested);
    return w.result;
  }

  /** After a failed rollback: no rule stays marked (each goes to A unmarked if it still exists). */
  async #unmarkWhatIsLeft(h: HandoverRun): Promise<string> {
    const sc = this.#d.switchControl;
    const notes: string[] = [];
    for (const r of h.rules) {
      const now = sc.getRule(r.id);
      if (now === undefined) {
        notes.push(`rule ${r.id} no longer exists`);
        continue;
      }
      if (now.action.phase === Phase.NONE) continue;
      try {
        await sc.setRuleAction(r.id, { outPort: h.fromPorts.get(r.id)!, phase: Phase.NONE, handoverId: 0 });
        notes.push(`rule ${r.id} unmarked, to ${h.from.name}`);
      } catch (e) {
        notes.push(`rule ${r.id} is still marked (${e instanceof Error ? e.message : String(e)})`);
      }
    }
    return notes.length ? ` (${notes.join('; ')})` : '';
  }

  /**
   * After switch-over: A holds the flow's new frames under a second id, B's
   * ring is relayed back to A through the switches that fed it, then A
   * releases its own. Should B's ring not come back (its host does not
   * answer, or its release fails) A's frames are released all the same —
   * the flow goes on at A — and B's frames are counted as stranded at the
   * switch ports that sent them; the take-back then fails with that count.
   */
  async #takeBack(h: HandoverRun, mode: HandoverMode, resume?: { id: number; ring: number }): Promise<void> {
    const agents = this.#d.agentControl;
    const sc = this.#d.switchControl;
    // a recovered rollback goes on with the second id and ring the dead controller had armed
    const backRing = resume?.ring ?? this.#allocRing(h.from.name, h.from.ringCount);
    if (backRing === undefined) throw new DataPlaneError(`${h.from.name} has no free hold ring to take the flow back`);
    const back = resume?.id ?? this.#allocHid();
    h.back = { id: back, ring: backRing };
    // every switch that fed B's ring relays its frames to its port towards A
    const relays = new Map(h.rules.map((r) => [r.switch, h.fromPorts.get(r.id)!]));
    const routed: string[] = [];
    /** why B's ring did not come back, if it did not */
    let notBack: unknown;
    try {
      if (resume === undefined || (await agents.agentStatus(h.from.name, back)) === undefined) await agents.armNew(h.from.name, back, backRing);
      await h.route(h.fromPorts, Phase.POST, back);
      await h.quiesce([h.to.name]);
      // B's ring (or the controller's buffer) is complete now: it goes to A, where the frames pass unmarked
      if (mode === 'controller-buffer') await this.#baseline.flushTo(h, h.fromPorts);
      else {
        try {
          for (const [sw, port] of relays) {
            routed.push(sw);
            await sc.setRelay(sw, h.id, port);
          }
          // asked first (within the late-call floor): whether B answers, and
          // whether its ring is still armed (a recovered rollback may find it
          // relayed and disarmed already)
          const armed = (await agents.agentStatus(h.to.name, h.id)) !== undefined;
          if (resume === undefined || armed) {
            // in windows into P4 switches, as a release to the VNF (BMv2 takes a port's frames in no faster)
            const w = await windowedRelease(sc, agents, h.to.name, h.id, { remaining: () => Math.max(h.remaining(), LATE_RELEASE_MS), warn: (d) => h.emit('warning', d), window: this.#o.releaseWindow, relayTo: h.from.name });
            h.ingestLoss.push(...w.notIngested);
            h.counts.relayed = w.result.released;
          }
        } catch (e) {
          notBack = e;
          h.stranded = await this.#strandedFrames(h, e);
          h.emit('warning', `${h.to.name}'s ring did not come back (${e instanceof Error ? e.message : String(e)}): ${totalFrames(h.stranded)} frames lost there; ${h.from.name} releases what it holds`);
        }
      }
      // the relayed frames have passed the switches (the routes go only after this) and reached A.
      // Timed: they were queued at the switches' ports towards B, where no
      // barrier reaches (a rollback after switch-over only)
      if (notBack === undefined) await sleep(h.Q);
      if (resume === undefined || (await agents.agentStatus(h.from.name, back)) !== undefined) await this.#releaseToVnf(h, h.from.name, back, () => Math.max(h.remaining(), LATE_RELEASE_MS));
      await h.route(h.fromPorts, Phase.NONE);
      await h.quiesce([h.from.name]);
      if (notBack === undefined) await h.collect(h.to.name);
      await h.collect(h.from.name, back);
      if (notBack !== undefined) {
        const why = notBack instanceof Error ? notBack.message : String(notBack);
        throw new HandoverError(`${h.to.name}'s ring could not be brought back (${why}): ${totalFrames(h.stranded)} frames held there are lost (counted as stranded); the flow goes on at ${h.from.name}`, 'rolling-back', { cause: notBack });
      }
    } finally {
      // a route left behind would forward relayed frames of a reused id: say so
      for (const sw of routed) await sc.clearRelay(sw, h.id).catch((e: unknown) => h.emit('warning', `the relay route of handover ${h.id} on ${sw} could not be removed: ${e instanceof Error ? e.message : String(e)}`));
      await agents.disarm(h.from.name, back).catch(() => undefined);
      await agents.disarm(h.from.name, h.id).catch(() => undefined);
      await agents.disarm(h.to.name, h.id).catch((e: unknown) => {
        // B's ring stays armed there: its id and ring are not reused until a later disarm gets through
        if (!unanswered(e)) return;
        this.#strandedRings.set(h.to.name, [...(this.#strandedRings.get(h.to.name) ?? []), { hid: h.id, ring: h.ring }]);
        h.emit('warning', `${h.to.name} did not answer the disarm of handover ${h.id}: its ring ${h.ring} and the id stay reserved until a later handover involving ${h.to.name} disarms them`);
      });
      this.#freeRing(h.from.name, backRing);
      this.#hidsInUse.delete(back);
    }
  }

  /**
   * The frames B's ring kept of a take-back that failed, per switch port
   * that sent them there: every frame a switch marked POST towards B under
   * the handover, less (where B's agent still answers) those it relayed or
   * already counted as overflowed or failed on its side.
   */
  async #strandedFrames(h: HandoverRun, cause: unknown): Promise<DropCount[]> {
    const sc = this.#d.switchControl;
    const st = unanswered(cause) ? undefined : await this.#d.agentControl.agentStatus(h.to.name, h.id).catch(() => undefined);
    if (st !== undefined) await h.collect(h.to.name);
    const out: DropCount[] = [];
    for (const sw of h.switchNames) {
      const rule = h.rules.find((r) => r.switch === sw);
      if (rule === undefined) continue;
      const port = h.toPorts.get(rule.id)!;
      let frames = (await sc.handoverCounters(sw, h.id)).post;
      if (st !== undefined) {
        const side = (await sc.sentTowardsInstances?.(sw))?.find((p) => p.port === port)?.side;
        if (side === 0 || side === 1) frames -= st.released[side] + st.overflow[side] + st.replayFailed[side];
      }
      if (frames > 0n) out.push({ where: `${sw}/${port}`, reason: 'stranded', frames });
    }
    return out;
  }

  /** Checks a request against the deployment; nothing changes. */
  async #validate(req: HandoverRequest, mover: StateMover, warn: (detail: string) => void): Promise<{ rules: Rule[]; from: InstanceInfo; to: InstanceInfo }> {
    const sc = this.#d.switchControl;
    if (req.rules.length === 0) throw new HandoverError('no rules to move', 'validating');
    // a rule another handover moves is named first: its action says where that one is taking it
    for (const rid of req.rules) {
      const busy = this.#rulesInUse.get(rid);
      if (busy !== undefined) throw new HandoverError(`rule ${rid} is being moved by handover ${busy}`, 'validating');
    }
    if (req.from === req.to) throw new HandoverError(`from and to are the same instance (${req.from})`, 'validating');
    const instances = instancesOf(this.#d);
    const names = instances.map((i) => i.name);
    const to = instances.find((i) => i.name === req.to);
    if (to === undefined) throw new HandoverError(`no VNF instance '${req.to}' (instances: ${names.join(', ')})`, 'validating');
    const from = instances.find((i) => i.name === req.from);
    if (from === undefined) throw new HandoverError(`no VNF instance '${req.from}' (instances: ${names.join(', ')})`, 'validating');
    const rules = req.rules.map((rid) => {
      const r = sc.getRule(rid);
      if (r === undefined) throw new HandoverError(`no rule ${rid}`, 'validating');
      const fromPort = sc.portTowards(r.switch, req.from);
      if (r.action.outPort !== fromPort) throw new HandoverError(`rule ${rid} on ${r.switch} sends to ${r.action.outPort}, not to ${req.from}`, 'validating');
      if (r.action.phase !== Phase.NONE) throw new HandoverError(`rule ${rid} is marked already (phase ${r.action.phase})`, 'validating');
      if (sc.portTowards(r.switch, req.to) === undefined) throw new HandoverError(`switch ${r.switch} has no port towards ${req.to}`, 'validating');
      return r;
    });
    await this.#checkCapacity(req, rules, to, warn, mover);
    // agents first: a missing agent is refused before anything changes
    await allEnded([this.#d.agentControl.checkAgent(req.from), this.#d.agentControl.checkAgent(req.to)]);
    return { rules, from, to };
  }

  /**
   * Refuses (or warns about) a handover whose held frames may exceed B's
   * ring. Each switch feeds one side of B, and each side has its own ring:
   * the busiest switch's share of the rate decides.
   */
  async #checkCapacity(req: HandoverRequest, rules: Rule[], to: InstanceInfo, warn: (d: string) => void, mover: StateMover): Promise<void> {
    const sc = this.#d.switchControl;
    const perSwitch = new Map<string, number>();
    if (req.expectedPps !== undefined) {
      const switches = new Set(rules.map((r) => r.switch));
      for (const s of switches) perSwitch.set(s, req.expectedPps / switches.size);
    } else {
      // measure: the moving rules' packet rate over a short window; each read
      // is timed at its midpoint (a remote read takes a while)
      const read = async (): Promise<{ c: { packets: bigint }[]; t: number }> => {
        const a = performance.now();
        const c = await Promise.all(rules.map((r) => sc.ruleCounters(r.id)));
        return { c, t: (a + performance.now()) / 2 };
      };
      const before = await read();
      await sleep(50);
      const after = await read();
      const dt = (after.t - before.t) / 1000;
      rules.forEach((r, i) => perSwitch.set(r.switch, (perSwitch.get(r.switch) ?? 0) + Number(after.c[i]!.packets - before.c[i]!.packets) / dt));
    }
    const pps = Math.max(0, ...perSwitch.values());
    const stateMs = req.expectedStateMs ?? mover.expectedMs ?? 100;
    // frames are held from switch-over to release: Q windows and the drain on top of the state move
    const windowMs = stateMs + 20 * sc.quiescenceMs + 50;
    const needed = Math.ceil(pps * (windowMs / 1000) * this.#o.capacitySafety);
    if (needed > to.ringCapacity) {
      if ((req.capacityPolicy ?? 'refuse') === 'refuse') throw new CapacityError(needed, to.ringCapacity, to.name, pps, windowMs);
      warn(`hold ring of ${to.name} (${to.ringCapacity} frames per side) may overflow: about ${needed} needed at ${pps.toFixed(0)} pps per side over ${windowMs} ms`);
    }
  }
}
