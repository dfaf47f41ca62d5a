/**
 * A loaded program: run it through BPF_PROG_TEST_RUN, attach it to an
 * interface (XDP or tc), pin it.
 */
import { bpfNative, type NativeTestRunOptions, type NativePacedRun } from './native.js';
import { native, ClosedError, fromNative as typedError } from './errors.js';
import { ifindexOf, netnsPath, withNetns, type NetnsRef } from './netns.js';
import { XdpLink, XdpAttachment, TcFilter, TracepointLink, xdpModeFlags, type XdpMode, type TcDirection } from './link.js';
import { XdpFlags, TestRunFlag } from './constants.js';
import { openPin } from './pins.js';

export interface RunOptions {
  /** packet bytes */
  data?: Buffer;
  /** room for the output packet (default: input length + 512) */
  dataOutSize?: number;
  /** program context (struct xdp_md for XDP, struct __sk_buff for tc) */
  context?: Buffer;
  contextOutSize?: number;
  repeat?: number;
  /** live-frames mode (XDP): frames really go out / up the stack */
  liveFrames?: boolean;
  batchSize?: number;
  /** network namespace to run in (live frames reach its interfaces) */
  netns?: NetnsRef;
  flags?: number;
}

export interface RunResult {
  /** the program's return code (verdict) */
  retval: number;
  /** average ns per repetition, as measured by the kernel */
  durationNs: number;
  dataOut?: Buffer;
  contextOut?: Buffer;
}

function toNative(o: RunOptions): NativeTestRunOptions {
  const n: NativeTestRunOptions = {};
  if (o.data !== undefined) n.dataIn = o.data;
  // live frames and contexts-only runs take no output packet
  if (!o.liveFrames) n.dataOutSize = o.dataOutSize ?? (o.data?.length ?? 0) + 512;
  if (o.context !== undefined) n.ctxIn = o.context;
  if (o.contextOutSize !== undefined) n.ctxOutSize = o.contextOutSize;
  if (o.repeat !== undefined) n.repeat = o.repeat;
  n.flags = (o.flags ?? 0) | (o.liveFrames ? TestRunFlag.XDP_LIVE_FRAMES : 0);
  if (o.batchSize !== undefined) n.batchSize = o.batchSize;
  if (o.netns !== undefined) n.netns = netnsPath(o.netns);
  return n;
}

function toResult(r: { retval: number; duration: number; dataOut?: Buffer; ctxOut?: Buffer }): RunResult {
  const out: RunResult = { retval: r.retval, durationNs: r.duration };
  if (r.dataOut !== undefined) out.dataOut = r.dataOut;
  if (r.ctxOut !== undefined) out.contextOut = r.ctxOut;
  return out;
}

export interface PacingOptions {
  framesPerSecond: number;
  /** frames per test run (the kernel flushes every batchSize of them) */
  chunk: number;
  /** stop after this many frames (default: run until stop()) */
  maxFrames?: number;
  /**
   * the most the thread makes up after being kept off the CPU, in ms
   * (default: no limit, the average rate holds); beyond it the schedule
   * moves on rather than sending the missed frames as one burst
   */
  maxLagMs?: number;
}

export interface PacedRunResult {
  frames: number;
  runs: number;
  elapsedNs: number;
  /** time the schedule moved on by (see PacingOptions.maxLagMs) */
  slippedNs: number;
}

/** Live-frames test runs paced on a native thread; see BpfProgram.runPaced. */
export class PacedRun {
  readonly done: Promise<PacedRunResult>;
  readonly #native: NativePacedRun;

  constructor(n: NativePacedRun) {
    this.#native = n;
    this.done = n.done.catch((e: unknown) => {
      throw typedError(e);
    });
  }

  /** frames handed to the program so far */
  get sent(): number {
    return this.#native.sent();
  }

  /** Asks the thread to stop after its current run; `done` then settles. */
  stop(): void {
    this.#native.stop();
  }
}

export interface XdpAttachOptions {
  netns?: NetnsRef;
  mode?: XdpMode;
}

export interface XdpNetlinkAttachOptions extends XdpAttachOptions {
  /** replace whatever is attached (default: fail if something is) */
  replace?: boolean;
  /** replace only if this program id is the one attached */
  expectProgram?: BpfProgram;
}

export interface TcAttachOptions {
  netns?: NetnsRef;
  direction: TcDirection;
  priority?: number;
  handle?: number;
  replace?: boolean;
}

export class BpfProgram {
  #fd: number;
  readonly #ownsFd: boolean;
  readonly id: number;

  constructor(
    readonly name: string,
    fd: number,
    readonly type: number,
    options: { ownsFd: boolean },
  ) {
    this.#fd = fd;
    this.#ownsFd = options.ownsFd;
    this.id = native(() => bpfNative.progInfo(fd)).id;
  }

  static fromPin(path: string): BpfProgram {
    const fd = openPin(path, 'prog').fd;
    const info = native(() => bpfNative.progInfo(fd));
    return new BpfProgram(info.name, fd, info.type, { ownsFd: true });
  }

  get fd(): number {
    if (this.#fd < 0) throw new ClosedError(`program ${this.name} is closed`);
    return this.#fd;
  }

  /** BPF_PROG_TEST_RUN on the JS thread. */
  run(opts: RunOptions = {}): RunResult {
    return toResult(native(() => bpfNative.progTestRun(this.fd, toNative(opts))));
  }

  /** BPF_PROG_TEST_RUN on a worker thread (long live-frames runs). */
  async runAsync(opts: RunOptions = {}): Promise<RunResult> {
    try {
      return toResult(await bpfNative.progTestRunAsync(this.fd, toNative(opts)));
    } catch (e) {
      throw typedError(e);
    }
  }

  /**
   * Live-frames test runs of `pacing.chunk` frames each at
   * `pacing.framesPerSecond`, paced by a native thread (not the event
   * loop), until `maxFrames` or stop(). The thread is its own, not one of the libuv pool.
   */
  runPaced(opts: RunOptions & { data: Buffer }, pacing: PacingOptions): PacedRun {
    if (!(pacing.framesPerSecond > 0) || !Number.isFinite(pacing.framesPerSecond)) throw new RangeError(`framesPerSecond must be a positive number, got ${pacing.framesPerSecond}`);
    if (!Number.isInteger(pacing.chunk) || pacing.chunk < 1 || pacing.chunk > 1 << 20) throw new RangeError(`chunk must be an integer in 1..${1 << 20}, got ${pacing.chunk}`);
    const maxFrames = pacing.maxFrames ?? 0;
    if (!Number.isSafeInteger(maxFrames) || maxFrames < 0) throw new RangeError(`maxFrames must be a non-negative integer, got ${maxFrames}`);
    const maxLagMs = pacing.maxLagMs ?? Infinity;
    if (!(maxLagMs >= 0)) throw new RangeError(`maxLagMs must be a non-negative number of ms, got ${maxLagMs}`);
    const n = toNative({ ...opts, liveFrames: true });
    // Number.MAX_SAFE_INTEGER ns (104 days) stands for "no limit"
    const maxLagNs = Math.min(Number.MAX_SAFE_INTEGER, Math.round(maxLagMs * 1e6));
    return new PacedRun(native(() => bpfNative.progTestRunPaced(this.fd, n, { framesPerSecond: pacing.framesPerSecond, chunk: pacing.chunk, maxFrames, maxLagNs })));
  }

  /** XDP through a bpf_link: detached when the link is closed (unless pinned). */
  attachXdp(ifname: string, opts: XdpAttachOptions = {}): XdpLink {
    const ifindex = ifindexOf(ifname, opts.netns);
    const fd = withNetns(opts.netns, () => native(() => bpfNative.xdpLinkCreate(this.fd, ifindex, xdpModeFlags(opts.mode ?? 'auto'))));
    return new XdpLink(fd, ifname, ifindex, opts.netns);
  }

  /** XDP through netlink: stays attached after this process unless closed. */
  attachXdpNetlink(ifname: string, opts: XdpNetlinkAttachOptions = {}): XdpAttachment {
    const ifindex = ifindexOf(ifname, opts.netns);
    let flags = xdpModeFlags(opts.mode ?? 'auto');
    if (!opts.replace && opts.expectProgram === undefined) flags |= XdpFlags.UPDATE_IF_NOEXIST;
    withNetns(opts.netns, () => native(() => bpfNative.xdpAttach(ifindex, this.fd, flags, opts.expectProgram?.fd)));
    return new XdpAttachment(ifname, ifindex, opts.netns, flags, this.id);
  }

  /** cls_bpf in direct-action mode on the interface's clsact qdisc. */
  attachTc(ifname: string, opts: TcAttachOptions): TcFilter {
    const ifindex = ifindexOf(ifname, opts.netns);
    const r = withNetns(opts.netns, () =>
      native(() => bpfNative.tcAttach(ifindex, opts.direction, this.fd, opts.handle ?? 0, opts.priority ?? 0, opts.replace ?? false)),
    );
    return new TcFilter(ifname, ifindex, opts.netns, opts.direction, r.handle, r.priority, r.progId);
  }

  /** A raw tracepoint (e.g. 'xdp_redirect_err'): detached when the link is closed. */
  attachRawTracepoint(tracepoint: string): TracepointLink {
    return new TracepointLink(native(() => bpfNative.rawTracepointOpen(this.fd, tracepoint)), tracepoint);
  }

  pin(path: string): void {
    native(() => bpfNative.objPin(this.fd, path));
  }

  close(): void {
    if (this.#fd >= 0 && this.#ownsFd) bpfNative.closeFd(this.#fd);
    this.#fd = -1;
  }
}
