/**
 * Frames a release's replay loses in the kernel: a live-frames test run
 * frees every frame whose redirect (or XDP_TX) is refused — say, its way out
 * went down during the run — and no device counts it. The raw tracepoint
 * xdp:xdp_redirect_err sees each one (ebpf/redirect_errors.bpf.c); this
 * counts them per replaying program and interface, for the agents' drop
 * counters (InterfaceDrops.redirectFailed).
 *
 * The tracepoint link lives as long as this process (a replay runs in the
 * process that holds the agents), so a restarted node counts from 0 again.
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type BpfProgram, type TracepointLink, u32, u64 } from '../../bpf/index.js';
import { sharpRefusedKeyCodec } from '../../generated/abi.js';

export class ReplayLossCounter {
  readonly #coll: BpfCollection;
  readonly #link: TracepointLink;

  private constructor(coll: BpfCollection, link: TracepointLink) {
    this.#coll = coll;
    this.#link = link;
  }

  static load(objectsDir: string): ReplayLossCounter {
    const coll = BpfObjectSpec.open(path.join(objectsDir, 'redirect_errors.bpf.o')).load();
    try {
      return new ReplayLossCounter(coll, coll.program('count_redirect_err').attachRawTracepoint('xdp_redirect_err'));
    } catch (e) {
      coll.close();
      throw e;
    }
  }

  /** Counts the refused frames of test runs of `prog` from now on. */
  watch(prog: BpfProgram): void {
    this.#coll.map('replay_progs').update(u32.encode(prog.id), Buffer.of(1));
  }

  unwatch(prog: BpfProgram): void {
    this.#coll.map('replay_progs').delete(u32.encode(prog.id));
  }

  /** Frames test runs of `prog` on `ifindex` lost to a refused redirect, since watch(). */
  refused(prog: BpfProgram, ifindex: number): bigint {
    const v = this.#coll.map('replay_refused').lookup(sharpRefusedKeyCodec.encode({ prog_id: prog.id, ifindex }));
    return v === undefined ? 0n : u64.decode(v);
  }

  close(): void {
    this.#link.close();
    this.#coll.close();
  }
}
