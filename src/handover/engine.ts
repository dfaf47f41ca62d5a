/**
 * The SHarP handover engine, written once against the DataPlane interface:
 * arm, pre-mark, switch over, count-drain, move state, release in the
 * kernel, clean up. The controller never holds a packet: the only buffer is
 * the new instance's kernel ring.
 */
import { EventEmitter } from 'node:events';
import { Phase, DataPlaneError, type DataPlane, type Rule, type ControllerChannel } from '../dataplane/types.js';
import { sleep, waitFor } from '../util/mutex.js';
import { ruleCovers, type HandoverContext, type HandoverCounts, type StateMover, type StateMoveResult } from './state-mover.js';

export type HandoverStep =
  | 'validating'
  | 'arming'
  | 'pre-marking'
  | 'switching'
  | 'diverting'
  | 'draining'
  | 'flushing'
  | 'moving-state'
  | 'releasing'
  | 'cleaning'
  | 'completed'
  | 'rolling-back'
  | 'aborted'
  | 'failed';

export interface HandoverEvent {
  id: number;
  step: HandoverStep | 'warning';
  /** wall clock, ms since the epoch */
  at: number;
  /** ms since the handover started */
  t: number;
  detail?: string;
}

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
  /** for the hold-capacity check: expected state-transfer time */
  expectedStateMs?: number;
  /** what to do when the ring may overflow: refuse (default) or warn and go on */
  capacityPolicy?: 'refuse' | 'warn';
  mover?: StateMover;
  /**
   * 'sharp' (default): zero controller buffer. 'controller-buffer': the
   * baseline SHarP replaced (OpenNF-style): during the move the switches
   * divert the flow to the controller, which buffers the packets and sends
   * them to the new instance once the state has moved.
   */
  mode?: 'sharp' | 'controller-buffer';
}

/** What the controller itself held during a handover (0 in sharp mode). */
export interface ControllerBufferStats {
  packets: number;
  bytes: number;
  peakPackets: number;
  peakBytes: number;
}

/** The baseline's buffer: frames in arrival order per switch. */
class ControllerBuffer {
  readonly frames = new Map<string, Buffer[]>();
  readonly stats: ControllerBufferStats = { packets: 0, bytes: 0, peakPackets: 0, peakBytes: 0 };
  #packets = 0;
  #bytes = 0;

  push(sw: string, frame: Buffer): void {
    const list = this.frames.get(sw) ?? [];
    list.push(frame);
    this.frames.set(sw, list);
    this.#packets++;
    this.#bytes += frame.length;
    this.stats.packets++;
    this.stats.bytes += frame.length;
    this.stats.peakPackets = Math.max(this.stats.peakPackets, this.#packets);
    this.stats.peakBytes = Math.max(this.stats.peakBytes, this.#bytes);
  }

  take(sw: string): Buffer[] {
    const list = this.frames.get(sw) ?? [];
    this.frames.delete(sw);
    this.#packets -= list.length;
    this.#bytes -= list.reduce((a, f) => a + f.length, 0);
    return list;
  }
}

export interface HandoverResult {
  id: number;
  from: string;
  to: string;
  rules: number[];
  outcome: 'completed' | 'aborted' | 'failed';
  reason?: string;
  durationMs: number;
  /** time the state mover took */
  stateMs: number;
  counts: HandoverCounts & { held: bigint; released: bigint; overflow: bigint; relayed: bigint };
  mode: 'sharp' | 'controller-buffer';
  controllerBuffer: ControllerBufferStats;
  state?: StateMoveResult;
  timings: Record<string, number>;
  events: HandoverEvent[];
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

export class CapacityError extends HandoverError {
  override name = 'CapacityError';
  constructor(
    readonly neededFrames: number,
    readonly capacityFrames: number,
    readonly instance: string,
  ) {
    super(
      `the hold ring of ${instance} holds ${capacityFrames} frames per side, but the expected rate and state time need about ${neededFrames}: refusing (raise the ring capacity, lower the rate, or pass capacityPolicy 'warn')`,
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
}

class StepTimeout extends Error {
  override name = 'StepTimeout';
}

/** Thrown by steps to carry the step name into the rollback decision. */
function stepError(step: HandoverStep, e: unknown): HandoverError {
  if (e instanceof HandoverError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new HandoverError(`${step}: ${msg}`, step, { cause: e });
}

export class HandoverEngine extends EventEmitter {
  readonly #dp: DataPlane;
  readonly #o: Required<EngineOptions>;
  readonly #hidsInUse = new Set<number>();
  /** rule id -> handover id moving it */
  readonly #rulesInUse = new Map<number, number>();
  /** instance -> rings in use by incoming handovers */
  readonly #ringsInUse = new Map<string, Set<number>>();
  readonly #active = new Map<number, { step: HandoverStep; request: HandoverRequest; startedAt: number }>();
  #nextHid = 1;
  /** baseline only: one channel for all handovers (a ring buffer has one consumer) */
  #channel: ControllerChannel | undefined;
  readonly #buffers = new Map<number, ControllerBuffer>();
  /** diverted frames no handover claimed (must stay 0) */
  unclaimedFrames = 0;

  #openBuffer(hid: number): ControllerBuffer {
    this.#channel ??= this.#dp.openControllerChannel((f) => {
      const b = this.#buffers.get(f.handoverId);
      if (b === undefined) this.unclaimedFrames++;
      else b.push(f.switch, f.frame);
    });
    const b = new ControllerBuffer();
    this.#buffers.set(hid, b);
    return b;
  }

  #closeBuffer(hid: number): void {
    this.#buffers.delete(hid);
    if (this.#buffers.size === 0) {
      this.#channel?.close();
      this.#channel = undefined;
    }
  }

  /** Sends a handover's buffered frames out of the switch ports towards `ports`' instance, in order. */
  async #flush(buffer: ControllerBuffer, rules: readonly Rule[], ports: Map<number, string>): Promise<void> {
    await this.#channel?.drain();
    for (const sw of new Set(rules.map((r) => r.switch))) {
      const port = ports.get(rules.find((r) => r.switch === sw)!.id)!;
      await this.#dp.sendFromController(sw, port, buffer.take(sw));
    }
  }

  constructor(dataPlane: DataPlane, options: EngineOptions) {
    super();
    this.#dp = dataPlane;
    this.#o = { timeoutMs: 30_000, capacitySafety: 2, ...options };
  }

  get dataPlane(): DataPlane {
    return this.#dp;
  }

  /** Handovers in flight with their current step. */
  active(): { id: number; step: HandoverStep; from: string; to: string; rules: readonly number[]; startedAt: number }[] {
    return [...this.#active.entries()].map(([id, a]) => ({ id, step: a.step, from: a.request.from, to: a.request.to, rules: a.request.rules, startedAt: a.startedAt }));
  }

  #allocHid(): number {
    for (let i = 0; i < 16383; i++) {
      const hid = this.#nextHid;
      this.#nextHid = (this.#nextHid % 16383) + 1;
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
   * nothing lost. Rejects only for requests that are invalid from the start.
   */
  async handover(req: HandoverRequest): Promise<HandoverResult> {
    const dp = this.#dp;
    const mover = req.mover ?? this.#o.mover;
    const timeoutMs = req.timeoutMs ?? this.#o.timeoutMs;
    const Q = dp.quiescenceMs;
    const t0 = performance.now();
    const events: HandoverEvent[] = [];
    const timings: Record<string, number> = {};
    const id = this.#allocHid();
    let step: HandoverStep = 'validating';
    const emit = (s: HandoverStep | 'warning', detail?: string): void => {
      const ev: HandoverEvent = { id, step: s, at: Date.now(), t: performance.now() - t0, ...(detail === undefined ? {} : { detail }) };
      events.push(ev);
      this.emit('event', ev);
    };
    /** timings[step] = ms since start when the step began */
    const enter = (s: HandoverStep, detail?: string): void => {
      timings[s] = performance.now() - t0;
      step = s;
      const a = this.#active.get(id);
      if (a) a.step = s;
      emit(s, detail);
    };
    const remaining = (): number => Math.max(1, timeoutMs - (performance.now() - t0));
    const counts = { preSent: 0n, preSeen: 0n, postSent: 0n, held: 0n, released: 0n, overflow: 0n, relayed: 0n };
    const mode = req.mode ?? 'sharp';
    let buffer: ControllerBuffer | undefined;

    // ---- validate (nothing has changed yet: errors reject)
    let rules: Rule[];
    let ring: number | undefined;
    try {
      emit('validating');
      if (req.from === req.to) throw new HandoverError(`from and to are the same instance (${req.from})`, 'validating');
      if (req.rules.length === 0) throw new HandoverError('no rules to move', 'validating');
      const names = dp.instances().map((i) => i.name);
      const target = dp.instances().find((i) => i.name === req.to);
      if (target === undefined) throw new HandoverError(`no VNF instance '${req.to}' (instances: ${names.join(', ')})`, 'validating');
      if (!names.includes(req.from)) throw new HandoverError(`no VNF instance '${req.from}' (instances: ${names.join(', ')})`, 'validating');
      rules = req.rules.map((rid) => {
        const r = dp.getRule(rid);
        if (r === undefined) throw new HandoverError(`no rule ${rid}`, 'validating');
        const busy = this.#rulesInUse.get(rid);
        if (busy !== undefined) throw new HandoverError(`rule ${rid} is being moved by handover ${busy}`, 'validating');
        const fromPort = dp.portTowards(r.switch, req.from);
        if (r.action.outPort !== fromPort) throw new HandoverError(`rule ${rid} on ${r.switch} sends to ${r.action.outPort}, not to ${req.from}`, 'validating');
        if (r.action.phase !== Phase.NONE) throw new HandoverError(`rule ${rid} is marked already (phase ${r.action.phase})`, 'validating');
        if (dp.portTowards(r.switch, req.to) === undefined) throw new HandoverError(`switch ${r.switch} has no port towards ${req.to}`, 'validating');
        return r;
      });
      await this.#checkCapacity(req, rules, target.ringCapacity, emit, mover);
      // agents first: a missing agent is refused before anything changes
      await dp.checkAgent(req.from);
      await dp.checkAgent(req.to);
      ring = this.#allocRing(req.to, target.ringCount);
      if (ring === undefined) throw new HandoverError(`${req.to} has no free hold ring (${target.ringCount} handovers into it are in flight)`, 'validating');
    } catch (e) {
      this.#hidsInUse.delete(id);
      throw stepError('validating', e);
    }
    for (const r of rules) this.#rulesInUse.set(r.id, id);
    this.#active.set(id, { step, request: req, startedAt: Date.now() });

    const fromPorts = new Map(rules.map((r) => [r.id, dp.portTowards(r.switch, req.from)!]));
    const toPorts = new Map(rules.map((r) => [r.id, dp.portTowards(r.switch, req.to)!]));
    const switches = [...new Set(rules.map((r) => r.switch))];
    const setAll = async (port: Map<number, string>, phase: Phase, hid: number): Promise<void> => {
      for (const r of rules) await dp.setRuleAction(r.id, { outPort: port.get(r.id)!, phase, handoverId: hid });
    };
    const sumMarks = async (hid: number): Promise<{ pre: bigint; post: bigint }> => {
      let pre = 0n;
      let post = 0n;
      for (const s of switches) {
        const c = await dp.handoverCounters(s, hid);
        pre += c.pre;
        post += c.post;
      }
      return { pre, post };
    };
    const ctx: HandoverContext = {
      id,
      rules,
      from: req.from,
      to: req.to,
      covers: ruleCovers(rules),
      counts,
      timings,
      dataPlane: dp,
    };
    let switchedOver = false;
    let stateMs = 0;
    let stateResult: StateMoveResult | undefined;
    const finish = (outcome: HandoverResult['outcome'], reason?: string): HandoverResult => {
      enter(outcome, reason);
      const result: HandoverResult = {
        id,
        from: req.from,
        to: req.to,
        rules: rules.map((r) => r.id),
        outcome,
        durationMs: performance.now() - t0,
        stateMs,
        counts,
        mode,
        controllerBuffer: buffer?.stats ?? { packets: 0, bytes: 0, peakPackets: 0, peakBytes: 0 },
        timings,
        events,
        ...(reason === undefined ? {} : { reason }),
        ...(stateResult === undefined ? {} : { state: stateResult }),
      };
      return result;
    };

    try {
      if (mode === 'controller-buffer') {
        // ---- baseline: B will hold frames that arrive while the controller flushes its buffer
        enter('arming');
        await dp.armNew(req.to, id, ring);
        // ---- the switches divert the flow to the controller, which buffers it
        enter('diverting');
        buffer = this.#openBuffer(id);
        await setAll(fromPorts, Phase.DIVERT, id);
        switchedOver = true;
        // frames sent to A before the divert are through A after Q: its state is final
        await sleep(Q);
      } else {
        // ---- 1. arm: B holds shim(H) frames, A counts shim(H, PRE)
        enter('arming');
        for (const s of switches) await dp.resetHandoverCounters(s, id);
        await dp.armNew(req.to, id, ring);
        await dp.armOld(req.from, id);

        // ---- 2. pre-mark: still to A, now marked PRE and counted
        enter('pre-marking');
        await setAll(fromPorts, Phase.PRE, id);
        // let PRE frames flow for Q: the count-drain then also covers every
        // unmarked frame sent before them (A's queue is FIFO)
        await sleep(Q);

        // ---- 3. switch over: to B, marked POST; after Q the PRE count is final
        enter('switching');
        await setAll(toPorts, Phase.POST, id);
        switchedOver = true;
        await sleep(Q);
        counts.preSent = (await sumMarks(id)).pre;

        // ---- 4. drain A: its agent has seen every PRE frame (+Q: it counts before its VNF ran)
        enter('draining', `waiting for ${counts.preSent} PRE frames at ${req.from}`);
        const drained = await waitFor(async () => {
          const st = await dp.agentStatus(req.from, id);
          counts.preSeen = st?.preSeen ?? 0n;
          return counts.preSeen >= counts.preSent ? true : undefined;
        }, Math.min(remaining(), 5_000 + 10 * Q));
        if (drained === undefined)
          throw new HandoverError(`${req.from} received ${counts.preSeen} of ${counts.preSent} PRE frames before the timeout: ${counts.preSent - counts.preSeen} missing`, 'draining');
        await sleep(Q);
      }

      // ---- 5. move state, now final at A
      enter('moving-state', mover.name);
      const ts = performance.now();
      const ac = new AbortController();
      const stateTimeout = Math.min(req.stateTimeoutMs ?? remaining(), remaining());
      const timer = setTimeout(() => ac.abort(new StepTimeout(`the state move did not finish within ${stateTimeout.toFixed(0)} ms`)), stateTimeout);
      try {
        stateResult = await Promise.race([
          mover.move(ctx, ac.signal),
          new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true })),
        ]);
      } finally {
        clearTimeout(timer);
        stateMs = performance.now() - ts;
      }

      if (buffer !== undefined) {
        // ---- baseline: new frames go to B and are held there; the buffer goes first
        enter('flushing', `${buffer.stats.packets} frames buffered at the controller`);
        await setAll(toPorts, Phase.POST, id);
        await sleep(Q);
        await this.#flush(buffer, rules, toPorts);
        // B's agent has passed the flushed frames to its VNF before its ring is released
        await sleep(Q);
      }

      // ---- 6. release B's ring in order, in the kernel; then new frames pass
      enter('releasing');
      await dp.release(req.to, id, { timeoutMs: remaining() });

      // ---- 7. clean up: stop marking, let the last marked frames land, forget H
      enter('cleaning');
      await setAll(toPorts, Phase.NONE, 0);
      await sleep(Q);
      await this.#collect(req.to, id, counts);
      counts.postSent = (await sumMarks(id)).post;
      await dp.disarm(req.from, id);
      await dp.disarm(req.to, id);
      if (counts.overflow > 0n) emit('warning', `${counts.overflow} frames did not fit ${req.to}'s hold ring and were dropped`);
      return finish('completed', counts.overflow > 0n ? `completed, but ${counts.overflow} frames overflowed the hold ring` : undefined);
    } catch (e) {
      const err = stepError(step, e);
      const failedStep = step;
      try {
        enter('rolling-back', err.message);
        await mover.rollback?.(ctx).catch(() => undefined);
        if (!switchedOver) {
          await setAll(fromPorts, Phase.NONE, 0);
          await sleep(Q);
          await dp.disarm(req.from, id).catch(() => undefined);
          await dp.disarm(req.to, id).catch(() => undefined);
        } else {
          await this.#rollbackAfterSwitch(req, rules, id, fromPorts, counts, remaining, buffer);
        }
        return finish('aborted', `${failedStep}: ${err.message.replace(/^[a-z-]+: /, '')}; traffic stays on ${req.from}`);
      } catch (e2) {
        const msg = e2 instanceof Error ? e2.message : String(e2);
        return finish('failed', `${failedStep}: ${err.message}; rollback failed: ${msg}`);
      }
    } finally {
      for (const r of rules) this.#rulesInUse.delete(r.id);
      if (buffer !== undefined) this.#closeBuffer(id);
      this.#freeRing(req.to, ring);
      this.#hidsInUse.delete(id);
      this.#active.delete(id);
    }
  }

  /**
   * After switch-over the frames held at B are older than anything still to
   * come. They go back to A: A holds new frames (a second handover id), B
   * relays its ring to A in the kernel, then A releases its own ring.
   */
  async #rollbackAfterSwitch(
    req: HandoverRequest,
    rules: Rule[],
    hid: number,
    fromPorts: Map<number, string>,
    counts: HandoverResult['counts'],
    remaining: () => number,
    buffer?: ControllerBuffer,
  ): Promise<void> {
    const dp = this.#dp;
    const Q = dp.quiescenceMs;
    const info = dp.instances().find((i) => i.name === req.from)!;
    const backRing = this.#allocRing(req.from, info.ringCount);
    if (backRing === undefined) throw new DataPlaneError(`${req.from} has no free hold ring to take the flow back`);
    const back = this.#allocHid();
    try {
      await dp.armNew(req.from, back, backRing);
      for (const r of rules) await dp.setRuleAction(r.id, { outPort: fromPorts.get(r.id)!, phase: Phase.POST, handoverId: back });
      await sleep(Q);
      if (buffer !== undefined) {
        // baseline: the controller's buffer goes back to A
        await this.#flush(buffer, rules, fromPorts);
      } else {
        // B's ring is complete now: relay it to A, where the frames pass unmarked
        const relayed = await dp.release(req.to, hid, { relayTo: req.from, timeoutMs: remaining() });
        counts.relayed = relayed.released;
      }
      await sleep(Q);
      await dp.release(req.from, back, { timeoutMs: remaining() });
      for (const r of rules) await dp.setRuleAction(r.id, { outPort: fromPorts.get(r.id)!, phase: Phase.NONE, handoverId: 0 });
      await sleep(Q);
      await this.#collect(req.to, hid, counts);
      const st = await dp.agentStatus(req.from, back);
      if (st) {
        counts.held += st.held[0] + st.held[1];
        counts.released += st.released[0] + st.released[1];
        counts.overflow += st.overflow[0] + st.overflow[1];
      }
    } finally {
      await dp.disarm(req.from, back).catch(() => undefined);
      await dp.disarm(req.from, hid).catch(() => undefined);
      await dp.disarm(req.to, hid).catch(() => undefined);
      this.#freeRing(req.from, backRing);
      this.#hidsInUse.delete(back);
    }
  }

  async #collect(instance: string, hid: number, counts: HandoverResult['counts']): Promise<void> {
    const st = await this.#dp.agentStatus(instance, hid);
    if (st === undefined) return;
    counts.held += st.held[0] + st.held[1];
    counts.released += st.released[0] + st.released[1];
    counts.overflow += st.overflow[0] + st.overflow[1];
  }

  async #checkCapacity(req: HandoverRequest, rules: Rule[], capacity: number, emit: (s: 'warning', d: string) => void, mover: StateMover): Promise<void> {
    let pps = req.expectedPps;
    if (pps === undefined) {
      // measure: the moving rules' packet rate over a short window
      const before = await Promise.all(rules.map((r) => this.#dp.ruleCounters(r.id)));
      const t = performance.now();
      await sleep(20);
      const after = await Promise.all(rules.map((r) => this.#dp.ruleCounters(r.id)));
      const dt = (performance.now() - t) / 1000;
      pps = after.reduce((a, c, i) => a + Number(c.packets - before[i]!.packets), 0) / dt;
    }
    const stateMs = req.expectedStateMs ?? (mover as { expectedMs?: number }).expectedMs ?? 100;
    const windowMs = stateMs + 20 * this.#dp.quiescenceMs + 50;
    const needed = Math.ceil(pps * (windowMs / 1000) * this.#o.capacitySafety);
    if (needed > capacity) {
      if ((req.capacityPolicy ?? 'refuse') === 'refuse') throw new CapacityError(needed, capacity, req.to);
      emit('warning', `hold ring of ${req.to} (${capacity} frames) may overflow: about ${needed} needed at ${pps.toFixed(0)} pps over ${windowMs} ms`);
    }
  }
}

