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
 *
 * A persistent anchor (pinPath given) pins its link: it outlives the
 * process, close() only lets go of the fd, and detach() removes it.
 */
import { unlinkSync } from 'node:fs';
import { createIdleInterface, deleteLink } from '../net/iproute.js';
import type { BpfProgram } from './program.js';
import { XdpLink } from './link.js';
import { track, untrack, type Closeable } from './handles.js';

export interface XdpDispatcherAnchorOptions {
  /** pin the anchor's link here: it stays after the process (see detach()) */
  pinPath?: string;
  /** adopt this link (opened from its pin) instead of creating the anchor */
  adopt?: XdpLink;
}

export class XdpDispatcherAnchor implements Closeable {
  #link: XdpLink | undefined;
  readonly persistent: boolean;
  readonly pinPath: string | undefined;

  constructor(
    readonly program: BpfProgram,
    readonly ifname: string,
    readonly netns: string | undefined,
    options: XdpDispatcherAnchorOptions = {},
  ) {
    this.pinPath = options.pinPath;
    this.persistent = options.pinPath !== undefined || options.adopt !== undefined;
    if (options.adopt !== undefined) {
      this.#link = options.adopt;
    } else {
      createIdleInterface(ifname, netns);
      try {
        const link = program.attachXdp(ifname, { ...(netns === undefined ? {} : { netns }), mode: 'generic' });
        if (options.pinPath !== undefined) {
          try {
            link.pin(options.pinPath);
          } catch (e) {
            link.close();
            throw e;
          }
        }
        this.#link = link;
      } catch (e) {
        deleteLink(ifname, netns);
        throw e;
      }
    }
    track(this);
  }

  /** the anchor's link (ids for manifests and checks) */
  get link(): XdpLink | undefined {
    return this.#link;
  }

  /** Lets go of the process's handle; a persistent anchor stays, any other is removed. */
  close(): void {
    if (this.#link === undefined) return;
    if (this.persistent) {
      this.#link.close();
      this.#link = undefined;
      untrack(this);
      return;
    }
    this.detach();
  }

  /** Removes the anchor: detaches the link, unpins it, deletes the idle interface. Idempotent. */
  detach(): void {
    if (this.#link !== undefined) {
      try {
        if (!this.#link.closed) this.#link.detach();
      } catch {
        // defunct already (its interface is gone)
      }
      this.#link.close();
      this.#link = undefined;
    }
    if (this.pinPath !== undefined) {
      try {
        unlinkSync(this.pinPath);
      } catch {
        // never pinned, or unpinned already
      }
    }
    try {
      deleteLink(this.ifname, this.netns);
    } catch {
      // the namespace is gone, and the interface with it
    }
    untrack(this);
  }
}
