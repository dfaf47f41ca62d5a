/**
 * The kernel's own drop counters of network interfaces, read from
 * /proc/thread-self/net/dev inside the interface's namespace (no process
 * spawned: cheap enough to read before and after every handover).
 *
 * Where frames die that no XDP program sees (measured on Linux 6.18, veth):
 *  - a frame redirected into a veth whose peer is down (`ip link set <peer>
 *    down`): bpf_redirect_map succeeds, veth's ndo_xdp_xmit refuses it and
 *    the veth counts it in its tx_dropped (the "drop" column of transmit);
 *  - a frame an XDP program redirects to an interface that is itself down:
 *    xdp_do_redirect fails and the veth it arrived on counts it in its
 *    rx_dropped (the "drop" column of receive).
 * /sys/class/net/<if>/statistics shows the same numbers, but sysfs shows the
 * namespace it was mounted in, not the caller's.
 */
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { withNetns, type NetnsRef } from '../bpf/index.js';

export interface NetdevDrops {
  /** receive "drop": frames that arrived and were dropped by the kernel (e.g. an XDP redirect that failed) */
  rxDropped: bigint;
  /** transmit "drop": frames handed to the device that it could not send (e.g. its veth peer is down) */
  txDropped: bigint;
  /** transmit "packets" (absent for an interface that is gone) */
  txPackets?: bigint;
}

export class NetdevStatsError extends Error {
  override name = 'NetdevStatsError';
}

/** The interfaces of a /proc/net/dev text with their 16 counters each. */
function* netdevLines(text: string): Generator<{ name: string; f: string[] }> {
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const f = line.slice(colon + 1).trim().split(/\s+/);
    // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop ...
    if (f.length < 16) throw new NetdevStatsError(`unexpected /proc/net/dev line for ${name}: '${line}'`);
    yield { name, f };
  }
}

/** Parses /proc/net/dev: interface name -> its drop counters (and transmitted packets). */
export function parseNetdev(text: string): Map<string, NetdevDrops> {
  const out = new Map<string, NetdevDrops>();
  for (const { name, f } of netdevLines(text)) out.set(name, { rxDropped: BigInt(f[3]!), txDropped: BigInt(f[11]!), txPackets: BigInt(f[9]!) });
  return out;
}

/** Drop counters of every interface in `netns` (undefined: this process's namespace). */
export function netdevDrops(netns: NetnsRef): Map<string, NetdevDrops> {
  return parseNetdev(withNetns(netns, () => readFileSync('/proc/thread-self/net/dev', 'utf8')));
}

/** Drop counters of `ifname` in `netns`; an interface that is gone counts nothing (its counters went with it). */
export function interfaceDrops(ifname: string, netns: NetnsRef, all?: Map<string, NetdevDrops>): NetdevDrops {
  return (all ?? netdevDrops(netns)).get(ifname) ?? { rxDropped: 0n, txDropped: 0n };
}

/**
 * /proc/net/dev of one namespace, opened once and read again and again (a
 * positional read of the open file is ~15 µs; a setns pair and an open cost
 * several times that): what the counters of a few interfaces polled every
 * few ms need.
 */
export class NetdevFile {
  readonly #fd: number;
  readonly #buf = Buffer.alloc(16 * 1024);
  #closed = false;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  static open(netns: NetnsRef): NetdevFile {
    return new NetdevFile(withNetns(netns, () => openSync('/proc/thread-self/net/dev', 'r')));
  }

  /** The 16 counters (as text) of every interface now. */
  lines(): Map<string, string[]> {
    let text = '';
    // a host with many interfaces has more than one buffer of them
    for (let n = this.#buf.length, at = 0; n === this.#buf.length; at += n) {
      n = readSync(this.#fd, this.#buf, 0, this.#buf.length, at);
      text += this.#buf.toString('latin1', 0, n);
    }
    const out = new Map<string, string[]>();
    for (const { name, f } of netdevLines(text)) out.set(name, f);
    return out;
  }

  /** Received packets per interface of `names` (an interface that is gone: absent). */
  rxPackets(names: Iterable<string>): Map<string, bigint> {
    const all = this.lines();
    const out = new Map<string, bigint>();
    for (const n of names) {
      const f = all.get(n);
      if (f !== undefined) out.set(n, BigInt(f[1]!));
    }
    return out;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.#fd);
  }
}

/**
 * The transmit packet counter of one interface (NetdevFile). For a veth
 * whose peer runs XDP, transmitted packets are what the peer took from its
 * rx ring (veth adds the peer's xdp_packets): what it has consumed, not
 * merely what was put in the ring.
 */
export class TxPacketCounter {
  readonly #file: NetdevFile;

  private constructor(file: NetdevFile, readonly ifname: string) {
    this.#file = file;
  }

  static open(ifname: string, netns: NetnsRef): TxPacketCounter {
    return new TxPacketCounter(NetdevFile.open(netns), ifname);
  }

  /** Packets the interface transmitted so far; undefined when it is gone. */
  read(): bigint | undefined {
    const f = this.#file.lines().get(this.ifname);
    return f === undefined ? undefined : BigInt(f[9]!);
  }

  close(): void {
    this.#file.close();
  }
}
