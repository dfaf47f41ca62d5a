/**
 * The controller's handover metrics: every finished handover (its result)
 * adds to the phase and total duration histograms, the outcome counter, the
 * lost frames and the state move's time per backend. The lab daemon serves
 * them on a Unix socket; `sharpctl deploy handover --metrics-textfile`
 * merges one handover's into a node_exporter textfile (textfile.ts).
 */
import { Counter, Exposition, Histogram } from '../metrics/exposition.js';
import { totalFrames } from './drops.js';
import { CapacityError, type HandoverOutcome, type HandoverResult } from './engine.js';
import type { HandoverStep } from './run.js';

/** Seconds: a phase takes from ~100 µs (a rule write) to the state move's seconds; a handover's timeout is at most minutes. */
export const HANDOVER_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const OUTCOMES: readonly HandoverOutcome[] = ['completed', 'lossy', 'aborted', 'failed'];

/** the steps that end a handover: they have a start and no duration */
const TERMINAL: ReadonlySet<string> = new Set<HandoverStep>(OUTCOMES);

/**
 * How long each step of a handover took, in ms: from its start to the next
 * step's (timings hold each step's start, ms since the handover began; the
 * outcome's start ends the last one). A step entered twice (a retry) counts
 * from its last entry.
 */
export function stepDurations(r: Pick<HandoverResult, 'timings'>): Record<string, number> {
  const starts = Object.entries(r.timings).sort((a, b) => a[1] - b[1]);
  const out: Record<string, number> = {};
  for (let i = 0; i + 1 < starts.length; i++) out[starts[i]![0]] = starts[i + 1]![1] - starts[i]![1];
  return out;
}

/** Frames a handover lost: hold-ring overflow, failed replays, drops on its path, frames stranded by a failed rollback (as HandoverRun.lost()). */
export function lostFrames(r: Pick<HandoverResult, 'counts' | 'stranded'>): bigint {
  return r.counts.overflow + r.counts.replayFailed + r.counts.dropped + totalFrames(r.stranded);
}

/**
 * Why a handover request was refused before anything changed: capacity (its
 * hold ring would overflow at the measured rate: CapacityError), busy
 * (another handover holds one of its rules or B's rings), invalid (anything
 * else: no such rule or instance, a bad request).
 */
export type RefusalReason = 'capacity' | 'busy' | 'invalid';
const REFUSALS: readonly RefusalReason[] = ['capacity', 'busy', 'invalid'];

export function refusalReason(e: unknown): RefusalReason {
  if (e instanceof CapacityError) return 'capacity';
  const msg = e instanceof Error ? e.message : '';
  if ((e instanceof Error && e.name === 'LockedRuleError') || /is being moved by handover|has no free hold ring|in flight/.test(msg)) return 'busy';
  return 'invalid';
}

export interface ObservedHandover {
  /** the state backend the handover moved its state with (the --state kind: vnf-map, conntrack, redis, estate, copy) */
  backend: string;
}

export class HandoverMetrics {
  readonly #phases = new Histogram('sharp_handover_phase_duration_seconds', 'Time a handover spent in a step (arming, pre-marking, switching, draining, moving-state, releasing, cleaning; the baseline: diverting, flushing; rolling-back)', HANDOVER_BUCKETS);
  readonly #duration = new Histogram('sharp_handover_duration_seconds', 'Time a handover took from its validation to its outcome, by mode (sharp, controller-buffer)', HANDOVER_BUCKETS);
  readonly #stateMove = new Histogram('sharp_handover_state_move_duration_seconds', 'Time the state move of a handover took (moving-state), by state backend', HANDOVER_BUCKETS);
  readonly #handovers = new Counter('sharp_handovers_total', 'Handovers finished, by outcome (completed; lossy: moved with frames lost; aborted: rolled back; failed: rollback failed)');
  readonly #lost = new Counter('sharp_handover_lost_frames_total', 'Frames the handovers lost (ring overflow, failed replays, drops on their path, stranded by a failed rollback)');
  readonly #refused = new Counter('sharp_handovers_refused_total', 'Handover requests refused before anything changed, by reason (capacity: the hold ring would overflow; busy: another handover holds a rule or the rings; invalid: anything else)');

  constructor() {
    // every outcome's series from the start: "no failed handover" reads 0, not "no data"
    for (const outcome of OUTCOMES) this.#handovers.inc({ outcome }, 0);
    for (const reason of REFUSALS) this.#refused.inc({ reason }, 0);
    this.#lost.inc({}, 0);
  }

  /** a request refused up front (the engine or the daemon threw before any handover ran) */
  refused(e: unknown): void {
    this.#refused.inc({ reason: refusalReason(e) });
  }

  observe(r: HandoverResult, o: ObservedHandover): void {
    for (const [phase, ms] of Object.entries(stepDurations(r))) if (!TERMINAL.has(phase)) this.#phases.observe({ phase }, ms / 1000);
    this.#duration.observe({ mode: r.mode }, r.durationMs / 1000);
    if (r.timings['moving-state'] !== undefined) this.#stateMove.observe({ backend: o.backend }, r.stateMs / 1000);
    this.#handovers.inc({ outcome: r.outcome });
    this.#lost.inc({}, Number(lostFrames(r)));
  }

  write(e: Exposition): void {
    this.#handovers.write(e);
    this.#refused.write(e);
    this.#lost.write(e);
    this.#duration.write(e);
    this.#phases.write(e);
    this.#stateMove.write(e);
  }

  text(): string {
    const e = new Exposition();
    this.write(e);
    return e.text();
  }
}
