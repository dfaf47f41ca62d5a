/**
 * Attachments of programs to interfaces. Each returns a handle with close():
 *  - XdpLink: a bpf_link; it detaches when closed unless it was pinned.
 *  - XdpAttachment: a netlink attachment (what `ip link set dev X xdp` makes);
 *    close() detaches it, release() leaves it attached beyond this process.
 *  - TcFilter: a cls_bpf filter on the clsact qdisc; close()/release() likewise.
 *  - TracepointLink: a raw tracepoint; it detaches when closed.
 */
import { bpfNative } from './native.js';
import { native, ClosedError, PinError } from './errors.js';
import { withNetns, type NetnsRef } from './netns.js';
import { track, untrack, type Closeable } from './handles.js';
import { XdpFlags } from './constants.js';
import { openPin } from './pins.js';

export type XdpMode = 'native' | 'generic' | 'auto';

export function xdpModeFlags(mode: XdpMode): number {
  switch (mode) {
    case 'native':
      return XdpFlags.DRV_MODE;
    case 'generic':
      return XdpFlags.SKB_MODE;
    case 'auto':
      return 0;
  }
}

export class XdpLink implements Closeable {
  #fd: number;
  constructor(
    fd: number,
    readonly ifname: string,
    readonly ifindex: number,
    readonly netns: NetnsRef,
  ) {
    this.#fd = fd;
    track(this);
  }

  /**
   * Opens an XDP link pinned in bpffs (bpf_obj_get on a link pin gives a
   * link fd). `ifname` and `netns` say where the caller expects it; the
   * ifindex is the link's own (0 when its interface is gone).
   */
  static fromPin(path: string, ifname: string, netns: NetnsRef): XdpLink {
    const { fd, info } = openPin(path, 'link');
    if (info.linkType !== 'xdp') {
      bpfNative.closeFd(fd);
      throw new PinError(path, 'XDP link', `${info.linkType ?? 'unknown'} link`);
    }
    return new XdpLink(fd, ifname, info.ifindex ?? 0, netns);
  }

  get fd(): number {
    if (this.#fd < 0) throw new ClosedError(`XDP link on ${this.ifname} is closed`);
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Atomically swaps the program; with `expected`, only if that one is attached. */
  update(progFd: number, expectedProgFd?: number): void {
    native(() => bpfNative.linkUpdate(this.fd, progFd, expectedProgFd));
  }

  info(): { id: number; progId: number; ifindex?: number } {
    return native(() => bpfNative.linkInfo(this.fd));
  }

  /** Keeps the link (and so the attachment) alive in bpffs after close(). */
  pin(path: string): void {
    native(() => bpfNative.objPin(this.fd, path));
  }

  /** Detaches even if the link is pinned elsewhere. */
  detach(): void {
    native(() => bpfNative.linkDetach(this.fd));
  }

  close(): void {
    if (this.#fd < 0) return;
    bpfNative.closeFd(this.#fd);
    this.#fd = -1;
    untrack(this);
  }
}

export class TracepointLink implements Closeable {
  #fd: number;
  constructor(
    fd: number,
    readonly tracepoint: string,
  ) {
    this.#fd = fd;
    track(this);
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  close(): void {
    if (this.#fd < 0) return;
    bpfNative.closeFd(this.#fd);
    this.#fd = -1;
    untrack(this);
  }
}

export class XdpAttachment implements Closeable {
  #attached = true;
  constructor(
    readonly ifname: string,
    readonly ifindex: number,
    readonly netns: NetnsRef,
    readonly flags: number,
    readonly progId: number,
  ) {
    track(this);
  }

  get attached(): boolean {
    return this.#attached;
  }

  /** Detaches, but only if our program is still the one attached there. */
  close(): void {
    if (!this.#attached) return;
    this.#attached = false;
    untrack(this);
    withNetns(this.netns, () => {
      let current: number;
      try {
        current = bpfNative.xdpQuery(this.ifindex).progId;
      } catch {
        return; // interface gone: nothing is attached any more
      }
      if (current === this.progId) native(() => bpfNative.xdpDetach(this.ifindex, this.flags & (XdpFlags.SKB_MODE | XdpFlags.DRV_MODE)));
    });
  }

  /** Leaves the program attached after this process; forget the handle. */
  release(): void {
    this.#attached = false;
    untrack(this);
  }
}

export type TcDirection = 'ingress' | 'egress';

export class TcFilter implements Closeable {
  #attached = true;
  constructor(
    readonly ifname: string,
    readonly ifindex: number,
    readonly netns: NetnsRef,
    readonly direction: TcDirection,
    readonly handle: number,
    readonly priority: number,
    readonly progId: number,
  ) {
    track(this);
  }

  get attached(): boolean {
    return this.#attached;
  }

  close(): void {
    if (!this.#attached) return;
    this.#attached = false;
    untrack(this);
    withNetns(this.netns, () => {
      try {
        bpfNative.tcDetach(this.ifindex, this.direction, this.handle, this.priority);
      } catch {
        // the interface or its qdisc is gone, and the filter with it
      }
    });
  }

  release(): void {
    this.#attached = false;
    untrack(this);
  }
}

/** Removes the clsact qdisc of an interface and every filter on it. */
export function removeClsact(ifindex: number, netns?: NetnsRef): void {
  withNetns(netns, () => native(() => bpfNative.tcHookDestroy(ifindex)));
}

/** How a program sits at the XDP hook (the kernel's XDP_ATTACHED_*). */
export type XdpAttachedMode = 'none' | 'native' | 'generic' | 'offload' | 'multi';

const ATTACHED_MODES: readonly XdpAttachedMode[] = ['none', 'native', 'generic', 'offload', 'multi'];

/** What is attached at the XDP hook of an interface (ids; 0 = nothing). */
export function queryXdp(ifindex: number, netns?: NetnsRef): { progId: number; driverProgId: number; genericProgId: number; mode: XdpAttachedMode } {
  const q = withNetns(netns, () => native(() => bpfNative.xdpQuery(ifindex)));
  return { progId: q.progId, driverProgId: q.driverProgId, genericProgId: q.genericProgId, mode: ATTACHED_MODES[q.attachMode] ?? 'multi' };
}

export interface AttachedXdpProgram {
  progId: number;
  /** the program's name as the kernel knows it ('' when it vanished meanwhile) */
  name: string;
  mode: XdpAttachedMode;
}

/** The XDP program attached to an interface, by id, name and mode; undefined when none is. */
export function attachedXdp(ifindex: number, netns?: NetnsRef): AttachedXdpProgram | undefined {
  const q = queryXdp(ifindex, netns);
  const progId = q.progId || q.driverProgId || q.genericProgId;
  if (progId === 0) return undefined;
  let name = '';
  try {
    const fd = bpfNative.progGetFdById(progId);
    try {
      name = bpfNative.progInfo(fd).name;
    } finally {
      bpfNative.closeFd(fd);
    }
  } catch {
    // detached and freed between the query and now
  }
  return { progId, name, mode: q.mode };
}

/**
 * Detaches whatever netlink attached at the XDP hook in `mode` (what
 * `ip link set dev X xdp off` does). Fails with EBUSY when a bpf_link holds
 * the hook: only its owner can detach it.
 */
export function detachXdpNetlink(ifindex: number, mode: XdpAttachedMode, netns?: NetnsRef): void {
  const flags = mode === 'generic' ? XdpFlags.SKB_MODE : mode === 'native' ? XdpFlags.DRV_MODE : mode === 'offload' ? XdpFlags.HW_MODE : 0;
  withNetns(netns, () => native(() => bpfNative.xdpDetach(ifindex, flags)));
}
