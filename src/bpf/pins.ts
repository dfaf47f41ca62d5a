/**
 * What a bpffs pin holds. A pin is opened with bpf_obj_get whatever it is —
 * map, program or link — and the kernel's fdinfo of the fd says which, with
 * the object's id. Callers check the kind before trusting the fd (the info
 * structs of maps, programs and links differ).
 */
import { readFileSync } from 'node:fs';
import { bpfNative } from './native.js';
import { native, PinError } from './errors.js';

export type PinnedKind = 'map' | 'prog' | 'link';

export interface PinnedFdInfo {
  kind: PinnedKind;
  id: number;
  /** links: the program they hold */
  progId?: number;
  /** links: e.g. "xdp" */
  linkType?: string;
  /** XDP links: the interface (0 once the interface is gone) */
  ifindex?: number;
}

/** Reads /proc/self/fdinfo of a BPF fd: its kind and id. */
export function bpfFdInfo(fd: number): PinnedFdInfo | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (k: string): string | undefined => new RegExp(`^${k}:\\s*(\\S+)`, 'm').exec(text)?.[1];
  const num = (k: string): number | undefined => {
    const v = field(k);
    return v === undefined ? undefined : Number(v);
  };
  if (field('link_type') !== undefined) {
    const info: PinnedFdInfo = { kind: 'link', id: num('link_id') ?? 0, linkType: field('link_type')! };
    const prog = num('prog_id');
    if (prog !== undefined) info.progId = prog;
    const ifindex = num('ifindex');
    if (ifindex !== undefined) info.ifindex = ifindex;
    return info;
  }
  if (field('map_type') !== undefined) return { kind: 'map', id: num('map_id') ?? 0 };
  if (field('prog_type') !== undefined) return { kind: 'prog', id: num('prog_id') ?? 0 };
  return undefined;
}

/**
 * Opens a pin and checks it holds a `kind`; the caller owns the returned fd.
 * A missing pin is a BpfError (ENOENT), another kind a PinError.
 */
export function openPin(path: string, kind: PinnedKind): { fd: number; info: PinnedFdInfo } {
  const fd = native(() => bpfNative.objGet(path));
  const info = bpfFdInfo(fd);
  if (info?.kind !== kind) {
    bpfNative.closeFd(fd);
    throw new PinError(path, kind, info?.kind);
  }
  return { fd, info };
}

/** Runs `fn` on a pin's fd and closes it; undefined when there is no pin. */
function withPinFd<T>(path: string, fn: (fd: number) => T): T | undefined {
  let fd: number;
  try {
    fd = bpfNative.objGet(path);
  } catch {
    return undefined;
  }
  try {
    return fn(fd);
  } finally {
    bpfNative.closeFd(fd);
  }
}

/** What a pin holds, without keeping it open; undefined when there is no pin. */
export function inspectPin(path: string): PinnedFdInfo | undefined {
  return withPinFd(path, bpfFdInfo);
}

/** Detaches the link pinned at `path` (from every hook, even if other fds hold it); false if it is no link. */
export function detachPinnedLink(path: string): boolean {
  return (
    withPinFd(path, (fd) => {
      if (bpfFdInfo(fd)?.kind !== 'link') return false;
      try {
        bpfNative.linkDetach(fd);
      } catch {
        // already defunct (its interface is gone): nothing is attached
      }
      return true;
    }) ?? false
  );
}
