/**
 * A lab's management network: how its controller reaches the node daemons,
 * as over a management LAN between real hosts. A bridge in a namespace of
 * the lab's own (`<prefix>mgmt-net`: no spec node has that name, node names
 * have no '-'), one veth from each node namespace into it (`mgmt0` there)
 * and one from the root namespace, where the controller runs (the lab's
 * `.1`). Each lab takes a /24 of 198.18.0.0/15 (RFC 2544's benchmarking
 * range) that no address or route of this host covers, chosen under a
 * host-wide lock so two labs coming up at once never pick the same one.
 *
 * Deleting the management namespace removes all of it: the bridge and every
 * veth end inside go with it, and a veth pair goes with either end — so
 * `destroyLab(prefix)` and `lab down` (after a crash too) need nothing more.
 */
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { createNetns, deleteLink, deleteNetns, inNetns, ip, linkExists } from '../net/iproute.js';
import { ipv4Number, ipv4String } from '../net/frame.js';
import { bpfNative } from '../bpf/native.js';

/** the interface a node namespace reaches the management network on */
export const MGMT_IFNAME = 'mgmt0';
/** the node API's TCP port on the management network */
export const MGMT_NODE_PORT = 7441;
/** where an instance node's E-State member serves (stateStore.estate) */
export const MGMT_ESTATE_PORT = 7451;
/** where lab subnets come from: 198.18.0.0/15, 512 /24s */
export const MGMT_RANGE = { base: '198.18.0.0', prefixLength: 15 } as const;
const SUBNETS = 1 << (24 - MGMT_RANGE.prefixLength);
/** .0 network, .1 the controller, .255 broadcast: .2 to .254 for nodes */
export const MGMT_MAX_NODES = 253;
const LOCK_FILE = '/run/sharpctl-mgmt-subnets.lock';

export class ManagementNetworkError extends Error {
  override name = 'ManagementNetworkError';
}

export interface ManagementNetwork {
  /** the namespace holding the bridge */
  netns: string;
  /** "198.18.N.0/24" */
  subnet: string;
  /** the root namespace's end of the network */
  rootIfname: string;
  /** the controller's address on rootIfname */
  controllerAddress: string;
  /** node namespace → its address on MGMT_IFNAME */
  addresses: ReadonlyMap<string, string>;
}

export const managementNetns = (prefix: string): string => `${prefix}mgmt-net`;
/** the root-namespace interface of subnet index i: unique because the subnet is */
const rootIfname = (i: number): string => `sharpm${i}`;

interface Range {
  lo: number;
  hi: number;
}

/** IPv4 ranges this host's root namespace already uses: its addresses' subnets and its routes (not the default route). */
function usedRanges(): Range[] {
  const ranges: Range[] = [];
  const add = (addr: string, len: number): void => {
    const n = ipv4Number(addr);
    const size = len === 0 ? 2 ** 32 : 2 ** (32 - len);
    const lo = n - (n % size);
    ranges.push({ lo, hi: lo + size - 1 });
  };
  const addrs = JSON.parse(ip(['-j', '-4', 'addr', 'show'])) as { addr_info?: { local?: string; prefixlen?: number }[] }[];
  for (const l of addrs) for (const a of l.addr_info ?? []) if (a.local !== undefined) add(a.local, a.prefixlen ?? 32);
  const routes = JSON.parse(ip(['-j', '-4', 'route', 'show', 'table', 'all'])) as { dst?: string }[];
  for (const r of routes) {
    if (r.dst === undefined || r.dst === 'default') continue;
    const [addr, len] = r.dst.split('/');
    add(addr!, len === undefined ? 32 : Number(len));
  }
  return ranges;
}

/** The first subnet index from `start` (wrapping) that nothing on this host uses. */
function freeSubnet(start: number): number {
  const used = usedRanges();
  const base = ipv4Number(MGMT_RANGE.base);
  for (let k = 0; k < SUBNETS; k++) {
    const i = (start + k) % SUBNETS;
    const lo = base + i * 256;
    if (used.some((r) => r.lo <= lo + 255 && r.hi >= lo)) continue;
    if (linkExists(rootIfname(i))) continue; // a lab's end whose namespace is being deleted
    return i;
  }
  throw new ManagementNetworkError(`no free /24 for a lab management network in ${MGMT_RANGE.base}/${MGMT_RANGE.prefixLength}: this host's addresses and routes cover all ${SUBNETS}`);
}

/** A stable starting point per prefix: labs of different names rarely probe the same subnets. */
function startIndex(prefix: string): number {
  let h = 2166136261;
  for (const c of prefix) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return h % SUBNETS;
}

/** Runs `f` holding the host-wide lock on management subnets (flock: released however this process ends). */
function withSubnetLock<T>(f: () => T): T {
  const fd = openSync(LOCK_FILE, 'a');
  try {
    bpfNative.flock(fd, 'ex');
    return f();
  } finally {
    closeSync(fd);
  }
}

/**
 * Builds the management network of a lab whose node namespaces exist
 * already; the namespaces get .2, .3, … in the order given.
 */
export function createManagementNetwork(prefix: string, nodeNamespaces: readonly string[]): ManagementNetwork {
  if (nodeNamespaces.length > MGMT_MAX_NODES)
    throw new ManagementNetworkError(`a lab's management network holds at most ${MGMT_MAX_NODES} nodes (one /24), this lab has ${nodeNamespaces.length} switches and VNF instances`);
  const netns = managementNetns(prefix);
  deleteNetns(netns);
  createNetns(netns);
  try {
    // only the node API's traffic on the management network: no IPv6 autoconfiguration
    inNetns(netns, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    ip(['link', 'add', 'br0', 'type', 'bridge'], netns);
    ip(['link', 'set', 'br0', 'up'], netns);
    const base = ipv4Number(MGMT_RANGE.base);
    const { index, root } = withSubnetLock(() => {
      const i = freeSubnet(startIndex(prefix));
      const root = rootIfname(i);
      // both ends at once: if this process dies now, the pair still dies with the namespace
      ip(['link', 'add', root, 'type', 'veth', 'peer', 'name', 'uplink', 'netns', netns]);
      // no IPv6 autoconfiguration chatter on the host's side either
      writeFileSync(`/proc/sys/net/ipv6/conf/${root}/disable_ipv6`, '1');
      ip(['link', 'set', 'dev', root, 'alias', `${netns}: management network of lab ${prefix}`]);
      ip(['addr', 'add', `${ipv4String(base + i * 256 + 1)}/24`, 'dev', root]);
      ip(['link', 'set', 'dev', root, 'up']);
      return { index: i, root };
    });
    ip(['link', 'set', 'uplink', 'master', 'br0', 'up'], netns);
    const addresses = new Map<string, string>();
    nodeNamespaces.forEach((ns, k) => {
      const port = `n${k}`;
      const address = ipv4String(base + index * 256 + 2 + k);
      ip(['link', 'add', port, 'type', 'veth', 'peer', 'name', MGMT_IFNAME, 'netns', ns], netns);
      ip(['link', 'set', port, 'master', 'br0', 'up'], netns);
      ip(['addr', 'add', `${address}/24`, 'dev', MGMT_IFNAME], ns);
      ip(['link', 'set', MGMT_IFNAME, 'up'], ns);
      addresses.set(ns, address);
    });
    return { netns, subnet: `${ipv4String(base + index * 256)}/24`, rootIfname: root, controllerAddress: ipv4String(base + index * 256 + 1), addresses };
  } catch (e) {
    deleteNetns(netns);
    throw e;
  }
}

/** Cuts (down) or restores (up) a node namespace's management link: a network fault, the data plane untouched. */
export function setManagementLink(nodeNetns: string, state: 'up' | 'down'): void {
  ip(['link', 'set', MGMT_IFNAME, state], nodeNetns);
}

/**
 * Removes a management network now: its root-namespace end first (deleting
 * a veth is synchronous, while a namespace's interfaces go a moment after
 * `ip netns del` returns), then its namespace.
 */
export function removeManagementNetwork(m: Pick<ManagementNetwork, 'netns' | 'rootIfname'>): void {
  deleteLink(m.rootIfname);
  deleteNetns(m.netns);
}
