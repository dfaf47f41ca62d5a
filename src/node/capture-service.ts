/**
 * The node's Capture rpc (sharp.node.v1): one capture at a time over every
 * switch and agent object the node runs; frames streamed as the programs'
 * ring buffers deliver them, counts every 250 ms and at the end. The request
 * is validated here (a caller over the API is not trusted) and refused with
 * a gRPC status naming the field and its limit. The first counts message
 * comes once every hook is on.
 */
import * as grpc from '@grpc/grpc-js';
import { checkCaptureRequest, CaptureRequestError, type CaptureRequest } from '../capture/filter.js';
import { CaptureTap, CaptureUnavailableError, type CaptureCounts, type CapturedFrame, type CaptureTarget } from '../capture/tap.js';
import type { Wire } from './api.js';

/** What a capture reports about itself while it runs and at its end. */
export interface CaptureProgress extends CaptureCounts {
  final: boolean;
}

/** A frame as the API carries it: the kernel's monotonic stamp made wall-clock time. */
export interface NodeCapturedFrame extends Omit<CapturedFrame, 'monoNs'> {
  tsUnixNs: bigint;
}

export const CAPTURE_COUNTS_EVERY_MS = 250;

export class CaptureBusyError extends Error {
  override name = 'CaptureBusyError';
}

// ---------------------------------------------------------------- wire

const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
const num = (v: unknown): number => Number(v ?? 0);

export function captureRequestToWire(r: CaptureRequest): Wire {
  return {
    port: r.port ?? '',
    direction: r.direction ?? '',
    ...(r.flow === undefined ? {} : { flow: { src: r.flow.src ?? '', dst: r.flow.dst ?? '', sport: r.flow.sport ?? 0, dport: r.flow.dport ?? 0, proto: r.flow.proto ?? 0 } }),
    rule_id: r.rule ?? 0,
    handover_id: r.handover ?? 0,
    snaplen: r.snaplen,
    count: String(r.count),
    duration_ms: r.durationMs,
  };
}

/** The request in a message, checked; CaptureRequestError names the field. */
export function captureRequestFromWire(w: Wire): CaptureRequest {
  const dir = str(w['direction']);
  if (dir !== '' && dir !== 'in' && dir !== 'out') throw new CaptureRequestError('direction', `direction must be '', 'in' or 'out', not '${dir}'`);
  const f = w['flow'] as Wire | undefined | null;
  const opt = <K extends string, V>(k: K, v: V, empty: V): Partial<Record<K, V>> => (v === empty ? {} : ({ [k]: v } as Record<K, V>));
  const flow = f === undefined || f === null ? undefined : { ...opt('src', str(f['src']), ''), ...opt('dst', str(f['dst']), ''), ...opt('sport', num(f['sport']), 0), ...opt('dport', num(f['dport']), 0), ...opt('proto', num(f['proto']), 0) };
  const count = Number(str(w['count']) || '0');
  return checkCaptureRequest({
    ...opt('port', str(w['port']), ''),
    ...(dir === '' ? {} : { direction: dir }),
    ...(flow === undefined || Object.keys(flow).length === 0 ? {} : { flow }),
    ...opt('rule', num(w['rule_id']), 0),
    ...opt('handover', num(w['handover_id']), 0),
    snaplen: num(w['snaplen']),
    count,
    durationMs: num(w['duration_ms']),
  });
}

export function frameToWire(f: NodeCapturedFrame): Wire {
  return {
      program: f.program,
      object: f.object,
      port: f.port,
      in_port: f.inPort ?? '',
      direction: f.direction,
      verdict: f.verdict,
      reason: f.reason ?? '',
      rule_id: f.ruleId ?? 0,
      handover_id: f.handoverId ?? 0,
      ring: f.ring ?? 0,
      pos: f.pos ?? 0,
      has_ring: f.ring !== undefined,
      ts_unix_ns: f.tsUnixNs.toString(),
      orig_len: f.origLen,
      data: f.data,
  };
}

export function frameFromWire(w: Wire): NodeCapturedFrame {
  const d = w['data'];
  return {
    program: w['program'] === 'agent' ? 'agent' : 'switch',
    object: str(w['object']),
    port: str(w['port']),
    ...(str(w['in_port']) === '' ? {} : { inPort: str(w['in_port']) }),
    direction: w['direction'] === 'out' ? 'out' : 'in',
    verdict: str(w['verdict']) as CapturedFrame['verdict'],
    ...(str(w['reason']) === '' ? {} : { reason: str(w['reason']) }),
    ...(num(w['rule_id']) ? { ruleId: num(w['rule_id']) } : {}),
    ...(num(w['handover_id']) ? { handoverId: num(w['handover_id']) } : {}),
    ...(w['has_ring'] === true ? { ring: num(w['ring']), pos: num(w['pos']) } : {}),
    tsUnixNs: BigInt(str(w['ts_unix_ns']) || '0'),
    origLen: num(w['orig_len']),
    data: Buffer.isBuffer(d) ? d : Buffer.from((d as Uint8Array | undefined) ?? []),
  };
}

export const countsToWire = (c: CaptureProgress): Wire => ({ counts: { captured: c.captured.toString(), ring_full: c.ringFull.toString(), filtered: c.filtered.toString(), final: c.final } });
export const countsFromWire = (w: Wire): CaptureProgress => ({ captured: BigInt(str(w['captured']) || '0'), ringFull: BigInt(str(w['ring_full']) || '0'), filtered: BigInt(str(w['filtered']) || '0'), final: w['final'] === true });

// ---------------------------------------------------------------- the capture

export interface CaptureSinks {
  onFrames(f: readonly NodeCapturedFrame[]): void;
  onCounts(c: CaptureProgress): void;
  /** ends the capture early (the caller went away) */
  signal?: AbortSignal;
}

/** A node's captures: one at a time, over every object it runs. */
export class NodeCapture {
  #busy = false;

  constructor(
    readonly node: string,
    readonly targets: () => readonly CaptureTarget[],
  ) {}

  /** Every port and interface name a request may name. */
  portNames(): string[] {
    return this.targets().flatMap((t) => t.ports.map((p) => p.name));
  }

  /** Runs one capture to its end (count, duration or signal); resolves with the final counts. */
  async run(r: CaptureRequest, sinks: CaptureSinks): Promise<CaptureProgress> {
    if (this.#busy) throw new CaptureBusyError(`a capture is running on node ${this.node} already; one at a time (the programs have one capture configuration each)`);
    const targets = this.targets();
    if (r.port !== undefined && !targets.some((t) => t.ports.some((p) => p.name === r.port))) {
      throw new CaptureRequestError('port', `node ${this.node} has no port or interface '${r.port}' (has: ${this.portNames().join(', ') || 'none'})`);
    }
    this.#busy = true;
    const taps: CaptureTap[] = [];
    let timer: NodeJS.Timeout | undefined;
    let ticker: NodeJS.Timeout | undefined;
    let finish!: () => void;
    const ended = new Promise<void>((resolve) => (finish = resolve));
    let frames = 0;
    // bpf_ktime_get_ns and process.hrtime are both CLOCK_MONOTONIC
    const offset = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    const totals = (): CaptureCounts => taps.map((t) => t.counts()).reduce((a, b) => ({ captured: a.captured + b.captured, ringFull: a.ringFull + b.ringFull, filtered: a.filtered + b.filtered }), { captured: 0n, ringFull: 0n, filtered: 0n });
    const onAbort = (): void => finish();
    // frames leave in batches: what one read of the rings gave, flushed once the event loop turns
    let batch: NodeCapturedFrame[] = [];
    let flushing = false;
    const flush = (): void => {
      flushing = false;
      if (batch.length === 0) return;
      const b = batch;
      batch = [];
      sinks.onFrames(b);
    };
    try {
      for (const t of targets) {
        const tap = CaptureTap.start(t, r, (f) => {
          if (r.count > 0 && frames >= r.count) return;
          frames++;
          const { monoNs, ...rest } = f;
          batch.push({ ...rest, tsUnixNs: monoNs + offset });
          if (!flushing) {
            flushing = true;
            setImmediate(flush);
          }
          if (r.count > 0 && frames >= r.count) finish();
        });
        if (tap !== undefined) taps.push(tap);
      }
      // the first counts say the hooks are on: the caller knows from when frames are seen
      sinks.onCounts({ ...totals(), final: false });
      if (r.durationMs > 0) timer = setTimeout(finish, r.durationMs);
      ticker = setInterval(() => sinks.onCounts({ ...totals(), final: false }), CAPTURE_COUNTS_EVERY_MS);
      if (sinks.signal?.aborted) finish();
      sinks.signal?.addEventListener('abort', onAbort, { once: true });
      await ended;
    } catch (e) {
      if (e instanceof CaptureUnavailableError) throw new CaptureBusyError(e.message, { cause: e });
      throw e;
    } finally {
      clearTimeout(timer);
      clearInterval(ticker);
      sinks.signal?.removeEventListener('abort', onAbort);
      for (const t of taps) t.stop();
      flush();
      this.#busy = false;
    }
    const last: CaptureProgress = { ...totals(), final: true };
    sinks.onCounts(last);
    return last;
  }
}

/** The grpc-js handler of Capture. */
export function captureHandler(capture: NodeCapture | undefined, node: () => string): grpc.handleServerStreamingCall<Wire, Wire> {
  return (call) => {
    const fail = (code: grpc.status, e: Error): void => {
      const md = new grpc.Metadata();
      md.set('sharp-error', e.name);
      call.emit('error', { code, details: e.message, metadata: md });
    };
    if (capture === undefined) return fail(grpc.status.FAILED_PRECONDITION, new Error(`node ${node()} runs no switch or agent to capture on`));
    let req: CaptureRequest;
    try {
      req = captureRequestFromWire(call.request);
    } catch (e) {
      return fail(grpc.status.INVALID_ARGUMENT, e as Error);
    }
    const abort = new AbortController();
    call.on('cancelled', () => abort.abort());
    capture
      .run(req, { onFrames: (fs) => call.write({ frames: fs.map(frameToWire) }), onCounts: (c) => call.write(countsToWire(c)), signal: abort.signal })
      .then(
        () => call.end(),
        (e: unknown) => {
          const err = e instanceof Error ? e : new Error(String(e));
          fail(err instanceof CaptureRequestError ? (/has no port/.test(err.message) ? grpc.status.NOT_FOUND : grpc.status.INVALID_ARGUMENT) : err instanceof CaptureBusyError ? grpc.status.FAILED_PRECONDITION : grpc.status.INTERNAL, err);
        },
      );
  };
}
