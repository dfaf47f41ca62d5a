/**
 * Keeps an XDP program in the kernel's XDP dispatcher while it is used for
 * repeated test runs.
 *
 * Why: a BPF_PROG_TEST_RUN of an XDP program with repeat > 1 adds the program
 * to the XDP dispatcher before the run and removes it after; when the
 * program was not in it already, each of these rewrites the dispatcher and
 * waits for an RCU grace period — about 25 ms per test run here, against
 * 0.1 ms for repeat = 1. A program attached to any interface stays in the
 * dispatcher, so test runs of it skip both rewrites. The anchor is an idle
 * interface (down, never carries traffic) with the program attached.
 */
import { createIdleInterface, deleteLink } from '../net/iproute.js';
import type { BpfProgram } from './program.js';
import type { XdpLink } from './link.js';
import { track, untrack, type Closeable } from './handles.js';

export class XdpDispatcherAnchor implements Closeable {
  #link: XdpLink | undefined;

  constructor(
    readonly program: BpfProgram,
    readonly ifname: string,
    readonly netns: string | undefined,
  ) {
    createIdleInterface(ifname, netns);
    try {
      this.#link = program.attachXdp(ifname, { ...(netns === undefined ? {} : { netns }), mode: 'generic' });
    } catch (e) {
      deleteLink(ifname, netns);
      throw e;
    }
    track(this);
  }

  close(): void {
    if (this.#link === undefined) return;
    this.#link.close();
    this.#link = undefined;
    try {
      deleteLink(this.ifname, this.netns);
    } catch {
      // the namespace is gone, and the dummy with it
    }
    untrack(this);
  }
}
