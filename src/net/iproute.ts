/**
 * Network namespaces and links through iproute2 and ethtool. Every command's
 * failure is an IprouteError carrying the command and what it printed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

export class IprouteError extends Error {
  override name = 'IprouteError';
  constructor(
    readonly command: readonly string[],
    readonly stderr: string,
    options?: ErrorOptions,
  ) {
    super(`${command.join(' ')}: ${stderr.trim() || 'failed'}`, options);
  }
}

function run(cmd: string, args: readonly string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr ?? String(e);
    throw new IprouteError([cmd, ...args], stderr, { cause: e });
  }
}

/** `ip [-n NS] ARGS...` */
export function ip(args: readonly string[], netns?: string): string {
  return run('ip', netns === undefined ? args : ['-n', netns, ...args]);
}

/** Runs a command inside a named namespace. */
export function inNetns(netns: string, cmd: string, args: readonly string[]): string {
  return run('ip', ['netns', 'exec', netns, cmd, ...args]);
}

export function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}

export function listNetns(prefix = ''): string[] {
  if (!existsSync('/run/netns')) return [];
  return readdirSync('/run/netns').filter((n) => n.startsWith(prefix));
}

export function createNetns(name: string): void {
  ip(['netns', 'add', name]);
  ip(['link', 'set', 'lo', 'up'], name);
}

/** Deletes a namespace (and every interface inside it); missing is fine. */
export function deleteNetns(name: string): void {
  if (netnsExists(name)) ip(['netns', 'del', name]);
}

export interface VethEnd {
  name: string;
  netns?: string;
  mac?: string;
  /** CIDR, e.g. 10.0.0.1/24 */
  address?: string;
}

/**
 * Creates a veth pair with one rx queue per end (so frames from different
 * CPUs cannot be reordered by queue choice) and brings both ends up.
 */
export function createVeth(a: VethEnd, b: VethEnd, mtu?: number): void {
  const args = ['link', 'add', 'name', a.name, 'numtxqueues', '1', 'numrxqueues', '1'];
  if (a.mac) args.push('address', a.mac);
  args.push('type', 'veth', 'peer', 'name', b.name, 'numtxqueues', '1', 'numrxqueues', '1');
  if (b.mac) args.push('address', b.mac);
  if (b.netns) args.push('netns', b.netns);
  ip(args, a.netns);
  for (const end of [a, b]) {
    if (mtu !== undefined) ip(['link', 'set', 'dev', end.name, 'mtu', String(mtu)], end.netns);
    if (end.address) ip(['addr', 'add', end.address, 'dev', end.name], end.netns);
    ip(['link', 'set', 'dev', end.name, 'up'], end.netns);
  }
}

export function deleteLink(name: string, netns?: string): void {
  try {
    ip(['link', 'del', 'dev', name], netns);
  } catch (e) {
    if (e instanceof IprouteError && /Cannot find device|does not exist/.test(e.stderr)) return;
    throw e;
  }
}

export function linkExists(name: string, netns?: string): boolean {
  try {
    ip(['link', 'show', 'dev', name], netns);
    return true;
  } catch {
    return false;
  }
}

export function linkMac(name: string, netns?: string): string {
  const out = ip(['-j', 'link', 'show', 'dev', name], netns);
  const parsed = JSON.parse(out) as { address: string }[];
  return parsed[0]!.address;
}

/** ethtool -K on an interface, e.g. { tx: 'off', gro: 'on' }. */
/** The rx queues an interface has (`ip -d link`: num_rx_queues). */
/**
 * The rx queues an interface uses (real_num_rx_queues): a veth may have
 * more allocated than in use (Mininet's have 2, of which 1 is used), and
 * only those in use take frames. From its ethtool channels (RX + combined,
 * "Current hardware settings"); where the driver reports none, the
 * allocated count.
 */
export function rxQueueCount(name: string, netns?: string): number {
  let channels: string | undefined;
  try {
    channels = netns === undefined ? run('ethtool', ['-l', name]) : inNetns(netns, 'ethtool', ['-l', name]);
  } catch {
    channels = undefined;
  }
  const current = channels?.split(/Current hardware settings:/)[1];
  if (current !== undefined) {
    const field = (k: string): number => Number(new RegExp(`^${k}:\\s*(\\d+)`, 'm').exec(current)?.[1] ?? 0);
    const n = field('RX') + field('Combined');
    if (n > 0) return n;
  }
  const out = ip(['-j', '-d', 'link', 'show', 'dev', name], netns);
  const n = (JSON.parse(out) as { num_rx_queues?: number }[])[0]?.num_rx_queues;
  if (n === undefined) throw new Error(`ip -d link show dev ${name}: no num_rx_queues in its output`);
  return n;
}

export function ethtoolFeatures(ifname: string, features: Readonly<Record<string, 'on' | 'off'>>, netns?: string): void {
  const args = ['-K', ifname, ...Object.entries(features).flat()];
  if (netns === undefined) run('ethtool', args);
  else inNetns(netns, 'ethtool', args);
}

export function addNeighbor(ifname: string, ipAddr: string, mac: string, netns?: string): void {
  ip(['neigh', 'replace', ipAddr, 'lladdr', mac, 'dev', ifname, 'nud', 'permanent'], netns);
}

/**
 * An interface that carries no traffic: a veth pair left down (this kernel
 * has no dummy driver). Deleting `name` deletes its peer too.
 */
export function createIdleInterface(name: string, netns?: string): void {
  ip(['link', 'add', 'name', name, 'type', 'veth', 'peer', 'name', `${name.slice(0, 14)}p`], netns);
}

/** Whether an interface can carry frames: administratively up, with carrier (its veth peer up). */
export interface LinkState {
  up: boolean;
  carrier: boolean;
}

/**
 * The state of every interface in a namespace (a name under /run/netns, a
 * path such as /proc/<pid>/ns/net, or undefined for this process's own),
 * without blocking the event loop.
 */
export async function linkStates(netns?: string): Promise<Map<string, LinkState>> {
  const { execFile } = await import('node:child_process');
  const [cmd, args] =
    netns === undefined ? ['ip', ['-j', 'link', 'show']] : netns.includes('/') ? ['nsenter', [`--net=${netns}`, 'ip', '-j', 'link', 'show']] : ['ip', ['-n', netns, '-j', 'link', 'show']];
  const out = await new Promise<string>((resolve, reject) =>
    execFile(cmd, args as string[], { encoding: 'utf8' }, (err, stdout, stderr) => (err ? reject(new IprouteError([cmd, ...(args as string[])], stderr || String(err), { cause: err })) : resolve(stdout))),
  );
  const parsed = JSON.parse(out) as { ifname: string; flags?: string[] }[];
  return new Map(parsed.map((l) => [l.ifname, { up: l.flags?.includes('UP') ?? false, carrier: l.flags?.includes('LOWER_UP') ?? false }]));
}
