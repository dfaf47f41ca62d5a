/**
 * Network namespaces. A namespace is named (`ip netns add NAME`, found under
 * /run/netns) or given by path — `/proc/<pid>/ns/net` for Mininet's unnamed
 * host namespaces. The kernel resolves interface indexes per namespace, so
 * every interface lookup and attach happens inside the namespace.
 */
import { bpfNative } from './native.js';
import { BpfError, InterfaceNotFoundError, NetnsError, fromNative } from './errors.js';

/** A namespace by name or by path; undefined means the caller's namespace. */
export type NetnsRef = string | undefined;

export function netnsPath(ns: string): string {
  return ns.includes('/') ? ns : `/run/netns/${ns}`;
}

/**
 * Runs `fn` synchronously with the JS thread inside `ns`, then moves back.
 * Only synchronous work may happen inside: any await would leak the namespace
 * to unrelated code.
 */
export function withNetns<T>(ns: NetnsRef, fn: () => T): T {
  if (ns === undefined) return fn();
  let saved: number;
  try {
    saved = bpfNative.netnsEnter(netnsPath(ns));
  } catch (e) {
    const err = fromNative(e);
    throw new NetnsError(ns, err instanceof BpfError ? err.code : 'EUNKNOWN', { cause: err });
  }
  try {
    return fn();
  } finally {
    bpfNative.netnsRestore(saved);
  }
}

/** ifindex of `ifname` inside `ns`, or InterfaceNotFoundError. */
export function ifindexOf(ifname: string, ns?: NetnsRef): number {
  return withNetns(ns, () => {
    try {
      return bpfNative.ifNameToIndex(ifname);
    } catch (e) {
      throw new InterfaceNotFoundError(ifname, ns, { cause: fromNative(e) });
    }
  });
}
