/**
 * The kernel's rx count of every P4 switch port's interface, read in the
 * switches' namespaces (one /proc/net/dev opened per namespace): the
 * PortArrivals with which P4RuntimeSwitches says what BMv2's input buffers
 * still hold or dropped. Whatever runs on the switch's host reads them: a
 * BMv2 lab in its own process, a node (its config's p4Switches) for a
 * controller elsewhere (SwitchArrivals).
 */
import { ifindexOf, type NetnsRef } from '../../bpf/index.js';
import { NetdevFile } from '../../net/netdev-stats.js';
import { PacketSocketDrops } from '../../net/packet-socket-drops.js';
import { DataPlaneError } from '../types.js';
import type { PortArrivals, PortInputDrops } from './p4runtime-switches.js';

/**
 * A switch whose ports are read: its name, the namespace of its interfaces
 * (undefined: this process's) and its ports; `pid`: its BMv2 process, whose
 * packet sockets say exactly what each port's input ring dropped (the lab
 * that started it knows it).
 */
export interface ArrivalsSwitch {
  name: string;
  netns?: NetnsRef;
  ports: readonly { name: string; ifname: string }[];
  pid?: number;
}

/** A switch's BMv2 process whose packet sockets could not be adopted (`switchName`: which switch). */
export class SwitchDropsError extends DataPlaneError {
  override name = 'SwitchDropsError';
  constructor(
    readonly switchName: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export class SwitchPortArrivals {
  /** switch name -> its namespace's file and its interfaces' port names */
  readonly #switches = new Map<string, { file: NetdevFile; portOf: Map<string, string>; drops?: { sockets: PacketSocketDrops; portOf: Map<number, string> }; netns: NetnsRef; ports: ArrivalsSwitch['ports'] }>();
  readonly #files: NetdevFile[] = [];

  constructor(topology: { switches: readonly ArrivalsSwitch[] }) {
    const byNetns = new Map<NetnsRef, NetdevFile>();
    try {
      for (const s of topology.switches) {
        let file = byNetns.get(s.netns);
        if (file === undefined) {
          file = NetdevFile.open(s.netns);
          byNetns.set(s.netns, file);
          this.#files.push(file);
        }
        const drops = s.pid === undefined ? undefined : SwitchPortArrivals.#adopt(s, s.pid);
        this.#switches.set(s.name, { file, portOf: new Map(s.ports.map((p) => [p.ifname, p.name])), ...(drops === undefined ? {} : { drops }), netns: s.netns, ports: s.ports });
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  static #adopt(s: Pick<ArrivalsSwitch, 'name' | 'netns' | 'ports'>, pid: number): { sockets: PacketSocketDrops; portOf: Map<number, string> } {
    let portOf: Map<number, string>;
    try {
      portOf = new Map(s.ports.map((p) => [ifindexOf(p.ifname, s.netns), p.name]));
    } catch (e) {
      throw new SwitchDropsError(s.name, `switch ${s.name}: its ports' input drops are read by interface: ${(e as Error).message}`, { cause: e });
    }
    try {
      return { sockets: PacketSocketDrops.adopt(pid), portOf };
    } catch (e) {
      throw new SwitchDropsError(s.name, `switch ${s.name}: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Switch `name`'s drops read from process `pid` from now on (its BMv2
   * restarted; undefined: from none, its drops unknown): the old process's
   * sockets let go, their sums with them.
   */
  readopt(name: string, pid: number | undefined): void {
    const s = this.#switches.get(name);
    if (s === undefined) throw new DataPlaneError(`switch ${name}: its ports are not read here (not among ${this.switches().join(', ') || 'none'}, or closed)`);
    // our copies keep a dead BMv2's sockets bound, counting frames nobody reads as drops: let them go first
    s.drops?.sockets.close();
    delete s.drops;
    if (pid !== undefined) s.drops = SwitchPortArrivals.#adopt({ name, netns: s.netns, ports: s.ports }, pid);
  }

  /** the switches read here */
  switches(): string[] {
    return [...this.#switches.keys()];
  }

  /** Switch `name`'s ports' rx counts now, by port name (a port whose interface is gone: absent). */
  read(name: string): Map<string, bigint> {
    const s = this.#switches.get(name);
    if (s === undefined) throw new DataPlaneError(`switch ${name}: its ports' arrivals are not read here (not among ${this.switches().join(', ') || 'none'}, or closed)`);
    const rx = s.file.rxPackets(s.portOf.keys());
    return new Map([...rx].map(([ifname, n]) => [s.portOf.get(ifname)!, n]));
  }

  /** Switch `name`'s ports' input-ring drops so far, by port name; undefined where its process is not known. */
  dropped(name: string): Map<string, bigint> | undefined {
    const s = this.#switches.get(name);
    if (s === undefined) throw new DataPlaneError(`switch ${name}: its ports are not read here (not among ${this.switches().join(', ') || 'none'}, or closed)`);
    if (s.drops === undefined) return undefined;
    const out = new Map<string, bigint>();
    for (const [ifindex, n] of s.drops.sockets.read()) {
      const port = s.drops.portOf.get(ifindex);
      if (port !== undefined) out.set(port, (out.get(port) ?? 0n) + n);
    }
    // a port whose socket dropped nothing yet reads 0, not absent
    for (const port of s.drops.portOf.values()) if (!out.has(port)) out.set(port, 0n);
    return out;
  }

  /** switch `s`'s ports' input-ring drops, where its process is known */
  dropsOf(s: Pick<ArrivalsSwitch, 'name'>): PortInputDrops | undefined {
    if (this.dropped(s.name) === undefined) return undefined;
    return () => Promise.resolve(this.dropped(s.name));
  }

  /** what P4RuntimeSwitches takes to read switch `s`'s ports: their arrivals, and their rings' drops where its process is known */
  readers(s: Pick<ArrivalsSwitch, 'name'>): { arrivals: PortArrivals; inputDrops?: PortInputDrops } {
    const drops = this.dropsOf(s);
    return { arrivals: this.of(s), ...(drops === undefined ? {} : { inputDrops: drops }) };
  }

  /** switch `s`'s ports' arrivals, by port name */
  of(s: Pick<ArrivalsSwitch, 'name'>): PortArrivals {
    // checked now: a switch that is not read here is a mistake of the caller's, not a reading to retry
    this.read(s.name);
    return () => Promise.resolve(this.read(s.name));
  }

  close(): void {
    // a closed fd's number may be reused by another file: nothing reads after close
    for (const s of this.#switches.values()) s.drops?.sockets.close();
    this.#switches.clear();
    for (const f of this.#files.splice(0)) f.close();
  }
}
