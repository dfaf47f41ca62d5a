/**
 * What another process's packet sockets dropped: BMv2 reads each port
 * through a libpcap TPACKET ring, and a full ring drops frames with no
 * counter but the socket's own PACKET_STATISTICS (no netdev counter, no
 * sk_drops, and the skb's last free is the stack's, so no drop reason
 * names it either). Read through this process's copies of the sockets
 * (pidfd_getfd: it needs ptrace rights over the process, e.g. as its parent
 * running as root). The kernel resets the statistics on every read, so this
 * must be their only reader: it keeps the sums.
 */
import { readdirSync, readlinkSync } from 'node:fs';
import { bpfNative } from '../bpf/index.js';

export class PacketSocketDropsError extends Error {
  override name = 'PacketSocketDropsError';
}

export class PacketSocketDrops {
  /** our copies of the process's packet sockets, with the interface each is bound to */
  readonly #sockets: { fd: number; ifindex: number }[];
  /** ifindex -> frames dropped since adopt() (its sockets' sums) */
  readonly #drops = new Map<number, bigint>();
  #closed = false;

  private constructor(sockets: { fd: number; ifindex: number }[]) {
    this.#sockets = sockets;
  }

  /** The packet sockets process `pid` has open now; what they dropped before counts too. */
  static adopt(pid: number): PacketSocketDrops {
    let pidfd: number;
    try {
      pidfd = bpfNative.pidfdOpen(pid);
    } catch (e) {
      throw new PacketSocketDropsError(`process ${pid}: ${(e as Error).message}`, { cause: e });
    }
    const sockets: { fd: number; ifindex: number }[] = [];
    try {
      for (const entry of readdirSync(`/proc/${pid}/fd`)) {
        let target: string;
        try {
          target = readlinkSync(`/proc/${pid}/fd/${entry}`);
        } catch {
          continue; // closed meanwhile
        }
        if (!target.startsWith('socket:')) continue;
        let fd: number;
        try {
          fd = bpfNative.pidfdGetfd(pidfd, Number(entry));
        } catch {
          continue;
        }
        const st = bpfNative.packetSocketStats(fd);
        if (st === null) bpfNative.closeFd(fd);
        else sockets.push({ fd, ifindex: st.ifindex });
      }
    } catch (e) {
      for (const s of sockets) bpfNative.closeFd(s.fd);
      throw new PacketSocketDropsError(`process ${pid}: its sockets cannot be read (${(e as Error).message})`, { cause: e });
    } finally {
      bpfNative.closeFd(pidfd);
    }
    const d = new PacketSocketDrops(sockets);
    d.read();
    return d;
  }

  /** the interfaces (ifindex, in the process's namespace) its packet sockets are bound to */
  interfaces(): number[] {
    return [...new Set(this.#sockets.map((s) => s.ifindex))];
  }

  /** Frames each interface's sockets dropped since adopt(), by ifindex. */
  read(): Map<number, bigint> {
    if (this.#closed) throw new PacketSocketDropsError('read after close');
    for (const s of this.#sockets) {
      const st = bpfNative.packetSocketStats(s.fd);
      if (st !== null) this.#drops.set(s.ifindex, (this.#drops.get(s.ifindex) ?? 0n) + BigInt(st.drops));
    }
    return new Map(this.#drops);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#sockets.splice(0)) bpfNative.closeFd(s.fd);
  }
}
