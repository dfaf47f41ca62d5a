/**
 * Reconciles a traffic run: every probe sent is delivered or counted as
 * dropped somewhere, with its reason (sent = delivered + reported). Reads the
 * drop counters of every switch port and instance interface when the run
 * starts and again when it is reported, and adds the frames the run's
 * handovers lost in their hold rings (and those a failed rollback left
 * stranded in one). Each counter belongs to one direction
 * of traffic by where it sits on that direction's path:
 *
 *   from-host → S_in (rx on the host port, tx on its VNF ports) → VNF (rx on
 *   the side facing S_in, tx on the other) → S_out (rx on its VNF ports, tx
 *   on the port to the to-host) → to-host
 *
 * A counter no direction's path explains (a lab whose two hosts hang off one
 * switch) is reported once, as unattributed.
 */
import type { Deployment, DropCount, DropReason } from '../dataplane/types.js';
import type { XdpTopology } from '../dataplane/xdp/topology.js';
import type { RingLoss } from '../handover/run.js';
import { dropDelta, totalFrames, type DropSnapshot } from '../handover/drops.js';

export interface TrafficDirection {
  name: string;
  /** host names */
  from: string;
  to: string;
}

/** What a direction of a run lost where it was counted. */
export interface DirectionAccounting {
  /** frames counted as dropped on this direction's path (sum of drops) */
  reported: number;
  drops: { where: string; reason: DropReason; frames: number }[];
}

export interface RunAccounting {
  directions: Map<string, DirectionAccounting>;
  /** counted drops no direction's path explains */
  unattributed: DirectionAccounting;
}

type Kind = 'rx' | 'tx';
// vnfDropped: a TUN carries both directions, so its drops are reported unattributed
const KIND: Record<DropReason, Kind> = { xmitFailed: 'tx', redirectFailed: 'rx', switchDrop: 'rx', overflow: 'rx', replayFailed: 'rx', stranded: 'tx', vnfDropped: 'rx', notIngested: 'rx' };

export class TrafficAccounting {
  readonly #d: Deployment;
  readonly #topology: XdpTopology;
  readonly #directions: readonly TrafficDirection[];
  #start: DropSnapshot | undefined;
  /** where|kind -> direction name */
  readonly #owner = new Map<string, string>();

  /** drop counters outside the data plane's ports and interfaces (cumulative), e.g. the userspace VNFs' TUN devices */
  readonly #extraDrops: (() => Promise<DropCount[]>) | undefined;

  constructor(d: Deployment, topology: XdpTopology, directions: readonly TrafficDirection[], o: { extraDrops?: () => Promise<DropCount[]> } = {}) {
    this.#d = d;
    this.#extraDrops = o.extraDrops;
    this.#topology = topology;
    this.#directions = directions;
    for (const dir of directions) this.#mapPath(dir);
  }

  #mapPath(dir: TrafficDirection): void {
    const hostPort = (host: string): { sw: string; port: string } | undefined => {
      for (const s of this.#topology.switches) {
        const p = s.ports.find((x) => x.role === 'host' && x.name === `${s.name}-${host}`);
        if (p !== undefined) return { sw: s.name, port: p.name };
      }
      return undefined;
    };
    const a = hostPort(dir.from);
    const b = hostPort(dir.to);
    if (a === undefined || b === undefined || a.sw === b.sw) return;
    const own = (where: string, kind: Kind): void => void this.#owner.set(`${where}|${kind}`, dir.name);
    const sIn = this.#topology.switches.find((s) => s.name === a.sw)!;
    const sOut = this.#topology.switches.find((s) => s.name === b.sw)!;
    own(`${sIn.name}/${a.port}`, 'rx');
    own(`${sOut.name}/${b.port}`, 'tx');
    for (const p of sIn.ports.filter((x) => x.role === 'vnf')) own(`${sIn.name}/${p.name}`, 'tx');
    for (const p of sOut.ports.filter((x) => x.role === 'vnf')) own(`${sOut.name}/${p.name}`, 'rx');
    for (const inst of this.#topology.instances) {
      const side = sIn.ports.find((x) => x.instance === inst.name)?.instanceSide;
      if (side === undefined) continue;
      own(`${inst.name}/${inst.ifaces[side]}`, 'rx');
      own(`${inst.name}/${inst.ifaces[1 - side]}`, 'tx');
      own(`${inst.name}/ring${side}`, 'rx');
    }
  }

  /** The direction whose frames side `side` of `instance` receives from its ingress switch (held frames of that side are that direction's). */
  directionOfSide(instance: string, side: number): string | undefined {
    return this.#owner.get(`${instance}/ring${side}|rx`);
  }

  /** Every switch port's and instance interface's drop counters. */
  async #read(): Promise<DropSnapshot> {
    const s: DropSnapshot = new Map();
    const put = (where: string, reason: DropReason, frames: bigint): void => void s.set(`${where}|${reason}`, { where, reason, frames });
    for (const sw of this.#d.switchControl.switches())
      for (const p of await this.#d.switchControl.portCounters(sw)) {
        const where = `${sw}/${p.port}`;
        put(where, 'xmitFailed', p.xmitFailed);
        put(where, 'redirectFailed', p.redirectFailed);
        // every drop of the switch program: in a lab only probes flow, so each is one of the run's
        put(where, 'switchDrop', p.dropOther + p.dropNoRule + p.dropShim);
        // what the port's interface received and a P4 switch never took in (read once traffic stopped: nothing is still waiting)
        if (p.notIngested !== undefined) put(where, 'notIngested', p.notIngested);
      }
    const agents = this.#d.agentControl;
    if (agents.interfaceDrops !== undefined)
      for (const inst of agents.agentInstances())
        for (const i of await agents.interfaceDrops(inst.name)) {
          put(`${inst.name}/${i.iface}`, 'xmitFailed', i.xmitFailed);
          put(`${inst.name}/${i.iface}`, 'redirectFailed', i.redirectFailed);
        }
    for (const x of (await this.#extraDrops?.()) ?? []) put(x.where, x.reason, x.frames);
    return s;
  }

  /** The run starts now: later drops count. */
  async start(): Promise<void> {
    this.#start = await this.#read();
  }

  /**
   * The drops since start(), per direction, with the hold-ring losses of the
   * handovers that ran meanwhile (their instance's ring side says the direction).
   */
  async read(handovers: readonly { to: string; from: string; ringLoss?: RingLoss; stranded?: readonly DropCount[] }[]): Promise<RunAccounting> {
    if (this.#start === undefined) throw new Error('TrafficAccounting.read() before start()');
    const drops: DropCount[] = dropDelta(this.#start, await this.#read());
    for (const h of handovers) {
      // frames a failed rollback left in B's ring: counted at the switch port that sent them there
      drops.push(...(h.stranded ?? []));
      if (h.ringLoss === undefined) continue;
      for (const side of [0, 1] as const) {
        // B's ring holds the frames of a handover; a rollback's second ring is A's, with the same sides
        const where = `${h.to}/ring${side}`;
        if (h.ringLoss.overflow[side] > 0n) drops.push({ where, reason: 'overflow', frames: h.ringLoss.overflow[side] });
        if (h.ringLoss.replayFailed[side] > 0n) drops.push({ where, reason: 'replayFailed', frames: h.ringLoss.replayFailed[side] });
      }
    }
    const empty = (): DirectionAccounting => ({ reported: 0, drops: [] });
    const out: RunAccounting = { directions: new Map(this.#directions.map((d) => [d.name, empty()])), unattributed: empty() };
    for (const x of drops) {
      const owner = this.#owner.get(`${x.where}|${KIND[x.reason]}`);
      const acc = owner === undefined ? out.unattributed : out.directions.get(owner)!;
      acc.drops.push({ where: x.where, reason: x.reason, frames: Number(x.frames) });
    }
    for (const acc of [...out.directions.values(), out.unattributed]) acc.reported = Number(totalFrames(acc.drops.map((x) => ({ ...x, frames: BigInt(x.frames) }))));
    return out;
  }
}
