/**
 * An in-memory deployment for engine unit tests without root: switches,
 * agents and VNFs that pass sequenced frames with the same rules as the
 * kernel programs (PRE/POST marks, PRE counting at the old agent, an
 * in-order hold ring at the new one, release, relay back through the switch
 * by its relay routes), a counter VNF whose
 * per-flow state is what the state mover moves, and a sink that checks
 * order and stamps. Frames are delivered synchronously, so Q holds
 * trivially; what this checks is the engine's sequence, not timing. With
 * `inFlight` set, frames sent out of a switch port wait on the wire (in
 * order) until the next tick: the quiescence event (port tx against agent
 * arrivals, side 0 from s1, side 1 from s2) then has something to wait for.
 */
import {
  AgentUnavailableError,
  DataPlaneError,
  Phase,
  RuleError,
  selects,
  type AgentControl,
  type AgentHandoverStatus,
  type AgentInstanceInfo,
  type Counter,
  type Deployment,
  type FlowKey,
  type FlowStateEntry,
  type HandoverMarkCounters,
  type PortCounters,
  type ReleaseResult,
  type Rule,
  type RuleAction,
  type SentTowards,
  type PortInput,
  type SwitchControl,
  type VnfStateStore,
} from '../../src/dataplane/types.js';
import { sleep } from '../../src/util/mutex.js';

interface Frame {
  rule: number;
  seq: number;
  flow: FlowKey;
  phase: Phase;
  hid: number;
}

interface AgentHo {
  role: 'old' | 'new';
  preSeen: bigint;
  postSeen: bigint;
  ring: Frame[];
  holding: boolean;
  held: bigint;
  released: bigint;
  overflow: bigint;
}

export interface Delivery {
  rule: number;
  seq: number;
  instance: string;
  /** the VNF's counter for the flow after this frame */
  stamp: number;
}

/** Fault injection: the named call throws (once, or every time). */
export interface Fault {
  method: string;
  /** the instance or switch argument it applies to (any if absent) */
  target?: string;
  message?: string;
  /** throw on every call, not only the first */
  always?: boolean;
  /** let this many matching calls through first */
  skip?: number;
  /** the call goes unanswered (like a node past its deadline): the error says so (dataplane/types.ts unanswered) */
  unanswered?: boolean;
}

const flowId = (f: FlowKey): string => `${f.src}:${f.sport}>${f.dst}:${f.dport}/${f.proto}`;

export class FakeDeployment implements Deployment {
  readonly calls: string[] = [];
  readonly deliveries: Delivery[] = [];
  readonly faults: Fault[] = [];
  readonly #rules = new Map<number, Rule>();
  readonly #ruleStats = new Map<number, bigint>();
  readonly #marks = new Map<string, HandoverMarkCounters>();
  readonly #agents = new Map<string, Map<number, AgentHo>>();
  readonly #state = new Map<string, Map<string, number>>();
  readonly #flows = new Map<string, FlowKey>();
  readonly #seq = new Map<number, number>();
  /** "switch/hid" -> out port: the switches' relay routes */
  readonly #relays = new Map<string, string>();
  /** relayed frames a switch dropped as forged (no route for their handover) */
  relayDropped = 0;
  /** frames wait on the wire from their switch port to their agent until the next tick() */
  inFlight = false;
  /** frames to lose on the wire (counted as the port's tx, never arriving) */
  loseOnWire = 0;
  /**
   * Frames to lose after their VNF, at the far switch's port towards the
   * destination host (the device refused them: counted as that port's
   * xmitFailed, like a veth whose peer's ring is full), e.g. `{ 's2-h2': 3 }`.
   */
  readonly loseAtHostPort = new Map<string, number>();
  /** port -> frames its device failed to transmit */
  readonly #xmitFailed = new Map<string, bigint>();
  /**
   * Frames a host sends that its switch port's input buffer drops (like
   * BMv2's libpcap ring when full): they arrive at the port's interface and
   * are never taken in, e.g. `{ 's2-h2': 5 }`. The switches say so
   * (inputShortfall, portCounters' notIngested) only with `readsHosts`.
   */
  readonly loseAtHostInput = new Map<string, number>();
  /** whether the switches' hosts are read: inputShortfall and notIngested answer (like BMv2 with its ports' interfaces read) */
  readsHosts = false;
  /** port -> frames arrived at its interface and never taken in */
  readonly #inputLost = new Map<string, bigint>();
  /** whether the data plane offers the quiescence event (false: like BMv2, the engine waits Q) */
  exactQuiescence = true;
  /**
   * Switches like BMv2 that take frames in from their ports facing
   * instances at their own pace (ingestedFromInstances): each read of the
   * counters takes in up to `perRead` more of what each such port has
   * waiting (0: the switch stalls). Undefined: they take everything at once
   * and offer no counter (like XDP). `crowdOut`: frames that pile up at the
   * switch's host port per frame entering a port facing an instance (the
   * hosts' live traffic a busy switch reads later), taken in at the same pace
   * (`hostStalled`: never).
   */
  p4Ingest: { perRead: number; crowdOut?: number; hostStalled?: boolean } | undefined;
  /** port -> frames waiting to be taken in / taken in, and the most that ever waited (p4Ingest) */
  readonly ingest = new Map<string, { waiting: number; taken: bigint; mostWaiting: number }>();
  /** the maxFrames of every release call, in order */
  readonly releaseBounds: (number | undefined)[] = [];
  readonly #wire: { instance: string; side: 0 | 1; frame: Frame }[] = [];
  /** port -> frames sent out of it */
  readonly #tx = new Map<string, bigint>();
  /** instance -> frames its agent took in, per side */
  readonly #arrived = new Map<string, [bigint, bigint]>();
  readonly #instances: AgentInstanceInfo[];
  #timer: NodeJS.Timeout | undefined;
  /** called once per call name: lets a test act at a given step (e.g. "kill" the controller) */
  onCall: ((call: string) => void) | undefined;

  constructor(
    instances: string[],
    readonly ringCapacity = 1024,
  ) {
    this.#instances = instances.map((name) => ({ name, ringCapacity, ringCount: 4 }));
    for (const i of instances) {
      this.#agents.set(i, new Map());
      this.#state.set(i, new Map());
    }
  }

  /** calls that never return (as if the controller died in them) */
  readonly hangs: Fault[] = [];

  /** every call's start and end ("start armNew vnf2", "end armNew vnf2"), in the order they happened: the order constraints of calls in flight at once */
  readonly timeline: string[] = [];
  /** how long each call takes to answer ("armNew vnf2" -> ms), as calls to other hosts do; undefined: at once */
  latencyMs: ((call: string) => number) | undefined;

  async #call(name: string, target?: string): Promise<void> {
    const call = target === undefined ? name : `${name} ${target}`;
    this.timeline.push(`start ${call}`);
    try {
      await this.#answer(name, target);
      const ms = this.latencyMs?.(call) ?? 0;
      if (ms > 0) await sleep(ms);
    } finally {
      this.timeline.push(`end ${call}`);
    }
  }

  async #answer(name: string, target?: string): Promise<void> {
    this.calls.push(target === undefined ? name : `${name} ${target}`);
    this.onCall?.(name);
    const hi = this.hangs.findIndex((f) => f.method === name && (f.target === undefined || f.target === target));
    if (hi >= 0) {
      const f = this.hangs[hi]!;
      if ((f.skip ?? 0) > 0) f.skip = f.skip! - 1;
      else {
        this.hangs.splice(hi, 1);
        await new Promise<never>(() => undefined);
      }
    }
    const i = this.faults.findIndex((f) => f.method === name && (f.target === undefined || f.target === target));
    if (i >= 0) {
      const f = this.faults[i]!;
      if ((f.skip ?? 0) > 0) {
        f.skip = f.skip! - 1;
        return;
      }
      if (!f.always) this.faults.splice(i, 1);
      const e = new DataPlaneError(f.message ?? `injected fault in ${name}${target ? ` (${target})` : ''}`);
      throw f.unanswered === true ? Object.assign(e, { unanswered: true }) : e;
    }
  }

  // ---------------------------------------------------------------- traffic

  /** The frames on the wire reach their agents; then one frame of every rule's flow through the switches. */
  tick(): void {
    this.deliverWire();
    for (const r of this.#rules.values()) this.send(r.id);
  }

  /** Frames on the wire (inFlight), in order, to their agents. */
  deliverWire(): void {
    for (const w of this.#wire.splice(0)) this.#arrive(w.instance, w.side, w.frame);
  }

  /** The switches' port counters start again from 0 (a switch reloaded, its agents not). */
  resetPortCounters(): void {
    this.#tx.clear();
  }

  /** Sets the switches' Q (1 ms unless set). */
  setQuiescenceMs(ms: number): void {
    (this.#switchControl as { quiescenceMs: number }).quiescenceMs = ms;
  }

  /** Frames sent out of a switch port but not yet at their agent. */
  onWire(instance?: string): number {
    return this.#wire.filter((w) => instance === undefined || w.instance === instance).length;
  }

  /** Out of switch `sw`'s port `port`, towards its instance: counted as tx, then on the wire or straight in. */
  #transmit(sw: string, port: string, f: Frame): void {
    this.#tx.set(port, (this.#tx.get(port) ?? 0n) + 1n);
    if (this.loseOnWire > 0) {
      this.loseOnWire--;
      return;
    }
    const instance = this.#instanceOf(port);
    const side = sw === 's1' ? 0 : 1;
    if (this.inFlight) this.#wire.push({ instance, side, frame: f });
    else this.#arrive(instance, side, f);
  }

  #arrive(instance: string, side: 0 | 1, f: Frame): void {
    const a = this.#arrived.get(instance) ?? [0n, 0n];
    a[side]++;
    this.#arrived.set(instance, a);
    this.#agentRx(instance, f);
  }

  /** Frames every `ms` until stop(). */
  start(ms = 1): void {
    this.#timer = setInterval(() => this.tick(), ms);
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** The switch: classify by rule, mark, count, forward to the instance behind the out port. */
  send(ruleId: number): void {
    const r = this.#rules.get(ruleId)!;
    const seq = (this.#seq.get(ruleId) ?? 0) + 1;
    this.#seq.set(ruleId, seq);
    this.#ruleStats.set(ruleId, (this.#ruleStats.get(ruleId) ?? 0n) + 1n);
    const flow = r.match.kind === 'exact' ? r.match.flow : { src: '0.0.0.0', dst: '0.0.0.0', sport: ruleId, dport: 0, proto: 17 };
    this.#flows.set(flowId(flow), flow);
    const hostPort = r.switch === 's1' ? 's1-h1' : 's2-h2';
    const drop = this.loseAtHostInput.get(hostPort) ?? 0;
    if (drop > 0) {
      // sent by the host (its sequence number is gone), never taken in by the switch
      this.loseAtHostInput.set(hostPort, drop - 1);
      this.#inputLost.set(hostPort, (this.#inputLost.get(hostPort) ?? 0n) + 1n);
      return;
    }
    const a = r.action;
    if (a.phase === Phase.PRE || a.phase === Phase.POST) {
      const k = `${r.switch}/${a.handoverId}`;
      const m = this.#marks.get(k) ?? { pre: 0n, post: 0n };
      if (a.phase === Phase.PRE) m.pre++;
      else m.post++;
      this.#marks.set(k, m);
    }
    this.#transmit(r.switch, a.outPort, { rule: ruleId, seq, flow, phase: a.phase, hid: a.handoverId });
  }

  /** Each read of a switch's ingress counters: it has taken in up to perRead more of what waits at each of its ports (p4Ingest). */
  #takeIn(sw: string): void {
    const p4 = this.p4Ingest;
    if (p4 === undefined) return;
    for (const [port, g] of this.ingest) {
      if (!port.startsWith(`${sw}-`) || (p4.hostStalled === true && /-h\d$/.test(port))) continue;
      const n = Math.min(g.waiting, p4.perRead);
      g.waiting -= n;
      g.taken += BigInt(n);
    }
  }

  /** what a port's interface received and the switch did not take in: lost there, or (p4Ingest) still waiting */
  #shortfall(port: string): bigint {
    return (this.#inputLost.get(port) ?? 0n) + BigInt(this.ingest.get(port)?.waiting ?? 0);
  }

  #instanceOf(port: string): string {
    return port.slice(port.indexOf('-') + 1);
  }

  /** The agent: strip, count, hold or pass. */
  #agentRx(instance: string, f: Frame): void {
    const hos = this.#agents.get(instance)!;
    const h = f.phase === Phase.NONE ? undefined : hos.get(f.hid);
    if (h !== undefined) {
      if (f.phase === Phase.PRE) h.preSeen++;
      if (f.phase === Phase.POST) h.postSeen++;
      if (h.role === 'new' && (h.holding || h.ring.length > 0)) {
        if (h.ring.length >= this.ringCapacity) {
          h.overflow++;
          return;
        }
        h.ring.push(f);
        h.held++;
        return;
      }
    }
    this.#vnf(instance, f);
  }

  /** The counter VNF: per-flow count, stamped on the frame; then the sink. */
  #vnf(instance: string, f: Frame): void {
    if (this.p4Ingest !== undefined) {
      // out of the VNF into the far switch's port facing it, where it waits to be taken in
      const port = `${this.#rules.get(f.rule)?.switch === 's1' ? 's2' : 's1'}-${instance}`;
      const g = this.ingest.get(port) ?? { waiting: 0, taken: 0n, mostWaiting: 0 };
      g.waiting++;
      g.mostWaiting = Math.max(g.mostWaiting, g.waiting);
      this.ingest.set(port, g);
      const crowd = this.p4Ingest.crowdOut ?? 0;
      if (crowd > 0) {
        const host = port.startsWith('s1-') ? 's1-h1' : 's2-h2';
        const h = this.ingest.get(host) ?? { waiting: 0, taken: 0n, mostWaiting: 0 };
        h.waiting += crowd;
        h.mostWaiting = Math.max(h.mostWaiting, h.waiting);
        this.ingest.set(host, h);
      }
    }
    const st = this.#state.get(instance)!;
    const n = (st.get(flowId(f.flow)) ?? 0) + 1;
    st.set(flowId(f.flow), n);
    // out of the VNF to the far switch, which sends it out of its port towards the destination host
    const hostPort = this.#rules.get(f.rule)?.switch === 's1' ? 's2-h2' : 's1-h1';
    const lose = this.loseAtHostPort.get(hostPort) ?? 0;
    if (lose > 0) {
      this.loseAtHostPort.set(hostPort, lose - 1);
      this.#xmitFailed.set(hostPort, (this.#xmitFailed.get(hostPort) ?? 0n) + 1n);
      return;
    }
    this.deliveries.push({ rule: f.rule, seq: f.seq, instance, stamp: n });
  }

  /** Per rule: sent, delivered, lost, reordered, duplicated, stamp mismatches. */
  report(): { sent: number; delivered: number; lost: number; reordered: number; duplicated: number; stampMismatches: number } {
    let sent = 0;
    let lost = 0;
    let reordered = 0;
    let duplicated = 0;
    let stampMismatches = 0;
    for (const [rule, last] of this.#seq) {
      sent += last;
      const got = this.deliveries.filter((d) => d.rule === rule);
      const seen = new Set<number>();
      let prev = 0;
      for (const d of got) {
        if (seen.has(d.seq)) duplicated++;
        seen.add(d.seq);
        if (d.seq < prev) reordered++;
        prev = Math.max(prev, d.seq);
        if (d.stamp !== d.seq) stampMismatches++;
      }
      lost += last - seen.size;
    }
    return { sent, delivered: this.deliveries.length, lost, reordered, duplicated, stampMismatches };
  }

  // ---------------------------------------------------------------- Deployment

  get switchControl(): SwitchControl {
    return this.#switchControl;
  }

  get agentControl(): AgentControl {
    return this.#agentControl;
  }

  get vnfState(): VnfStateStore {
    return this.#vnfState;
  }

  readonly #switchControl: SwitchControl = {
    quiescenceMs: 1,
    switches: () => ['s1', 's2'],
    portTowards: (sw, instance) => (this.#agents.has(instance) ? `${sw}-${instance}` : undefined),
    addRule: async (r) => {
      await this.#call('addRule', r.switch);
      const id = r.id ?? this.#rules.size + 1;
      const rule = { ...r, id, action: { ...r.action } };
      this.#rules.set(id, rule);
      return rule;
    },
    deleteRule: async (id) => {
      await this.#call('deleteRule');
      if (!this.#rules.delete(id)) throw new RuleError(`no rule ${id}`);
    },
    getRule: (id) => this.#rules.get(id),
    rules: () => [...this.#rules.values()],
    setRuleAction: async (id: number, action: RuleAction) => {
      const r = this.#rules.get(id);
      await this.#call('setRuleAction', r?.switch);
      if (r === undefined) throw new RuleError(`no rule ${id}`);
      r.action = { ...action };
      // a frame right behind every action change: the race the protocol must survive
      this.send(id);
    },
    ruleCounters: async (id): Promise<Counter> => ({ packets: this.#ruleStats.get(id) ?? 0n, bytes: 0n }),
    portCounters: async (sw): Promise<PortCounters[]> => {
      await this.#call('portCounters', sw);
      const zero = { packets: 0n, bytes: 0n, txPackets: 0n, txBytes: 0n, dropNoRule: 0n, dropShim: 0n, dropOther: 0n, relayed: 0n, redirectFailed: 0n };
      const ports = [...this.#agents.keys()].map((i) => `${sw}-${i}`).concat(sw === 's1' ? 's1-h1' : 's2-h2');
      return ports.map((port) => ({ ...zero, port, xmitFailed: this.#xmitFailed.get(port) ?? 0n, ...(this.readsHosts ? { notIngested: this.#shortfall(port) } : {}) }));
    },
    inputShortfall: async (sw): Promise<Map<string, PortInput> | undefined> => {
      await this.#call('inputShortfall', sw);
      if (!this.readsHosts) return undefined;
      this.#takeIn(sw);
      const ports = [...this.#agents.keys()].map((i) => `${sw}-${i}`).concat(sw === 's1' ? 's1-h1' : 's2-h2');
      return new Map(ports.map((port) => [port, { waiting: this.#shortfall(port), ingested: this.ingest.get(port)?.taken ?? 0n }]));
    },
    handoverCounters: async (sw, hid) => {
      await this.#call('handoverCounters', sw);
      return { ...(this.#marks.get(`${sw}/${hid}`) ?? { pre: 0n, post: 0n }) };
    },
    resetHandoverCounters: async (sw, hid) => {
      await this.#call('resetHandoverCounters', sw);
      this.#marks.delete(`${sw}/${hid}`);
    },
    setRelay: async (sw, hid, outPort) => {
      await this.#call('setRelay', sw);
      this.#relays.set(`${sw}/${hid}`, outPort);
    },
    clearRelay: async (sw, hid) => {
      await this.#call('clearRelay', sw);
      this.#relays.delete(`${sw}/${hid}`);
    },
    ingestedFromInstances: async (sw): Promise<SentTowards[] | undefined> => {
      if (this.p4Ingest === undefined) return undefined;
      await this.#call('ingestedFromInstances', sw);
      this.#takeIn(sw);
      return this.#instances.map((i) => ({ port: `${sw}-${i.name}`, instance: i.name, side: sw === 's1' ? 0 : 1, frames: this.ingest.get(`${sw}-${i.name}`)?.taken ?? 0n }));
    },
    sentTowardsInstances: async (sw): Promise<SentTowards[] | undefined> => {
      await this.#call('sentTowardsInstances', sw);
      if (!this.exactQuiescence) return undefined;
      return this.#instances.map((i) => ({ port: `${sw}-${i.name}`, instance: i.name, side: sw === 's1' ? 0 : 1, frames: this.#tx.get(`${sw}-${i.name}`) ?? 0n }));
    },
  };

  /** Relay routes in place (for leak checks): "switch/hid" -> out port. */
  relayRoutes(): Record<string, string> {
    return Object.fromEntries(this.#relays);
  }

  /**
   * A frame an agent relays (marked RELAY) back into the switch it came
   * from: forwarded unmarked by the switch's route for its handover, or
   * dropped as forged without one.
   */
  #switchRelay(f: Frame): void {
    const sw = this.#rules.get(f.rule)!.switch;
    const out = this.#relays.get(`${sw}/${f.hid}`);
    if (out === undefined) {
      this.relayDropped++;
      return;
    }
    this.#transmit(sw, out, { ...f, phase: Phase.NONE, hid: 0 });
  }

  #ho(instance: string, hid: number): AgentHo {
    const h = this.#agents.get(instance)?.get(hid);
    if (h === undefined) throw new DataPlaneError(`${instance}: handover ${hid} is not armed`);
    return h;
  }

  #arm(instance: string, hid: number, role: 'old' | 'new'): void {
    const hos = this.#agents.get(instance);
    if (hos === undefined) throw new AgentUnavailableError(instance, 'no such instance');
    if (hos.has(hid)) throw new DataPlaneError(`${instance}: handover ${hid} is armed already`);
    hos.set(hid, { role, preSeen: 0n, postSeen: 0n, ring: [], holding: role === 'new', held: 0n, released: 0n, overflow: 0n });
  }

  readonly #agentControl: AgentControl = {
    agentInstances: () => this.#instances,
    checkAgent: async (i) => {
      await this.#call('checkAgent', i);
      if (!this.#agents.has(i)) throw new AgentUnavailableError(i, 'no such instance');
    },
    armOld: async (i, hid) => {
      await this.#call('armOld', i);
      this.#arm(i, hid, 'old');
    },
    armNew: async (i, hid) => {
      await this.#call('armNew', i);
      this.#arm(i, hid, 'new');
    },
    agentStatus: async (i, hid): Promise<AgentHandoverStatus | undefined> => {
      await this.#call('agentStatus', i);
      const h = this.#agents.get(i)?.get(hid);
      if (h === undefined) return undefined;
      return {
        role: h.role,
        preSeen: h.preSeen,
        postSeen: h.postSeen,
        held: [h.held, 0n],
        released: [h.released, 0n],
        overflow: [h.overflow, 0n],
        passed: [0n, 0n],
        replayFailed: [0n, 0n],
        queued: [h.ring.length, 0],
        passing: [!h.holding, true],
      };
    },
    release: async (i, hid, o): Promise<ReleaseResult> => {
      await this.#call('release', o?.relayTo === undefined ? i : `${i}->${o.relayTo}`);
      const h = this.#ho(i, hid);
      this.releaseBounds.push(o?.maxFrames);
      // one ring here: the bound counts both sides' frames together (so each side's stays within it)
      const n = Math.min(h.ring.length, o?.maxFrames ?? Infinity);
      const now: [bigint, bigint] = [0n, 0n];
      // in order; a new frame arriving meanwhile queues behind the ring (agentRx)
      for (let k = 0; k < n; k++) {
        const f = h.ring.shift()!;
        h.released++;
        now[this.#rules.get(f.rule)?.switch === 's1' ? 0 : 1]++;
        if (o?.relayTo === undefined) this.#vnf(i, f);
        else this.#switchRelay({ ...f, hid });
      }
      if (h.ring.length === 0) h.holding = false;
      return { released: h.released, rounds: n > 0 ? 1 : 0, releasedNow: now, queued: [h.ring.length, 0], passing: [!h.holding, !h.holding] };
    },
    arrivedFrames: async (i): Promise<[bigint, bigint] | undefined> => {
      await this.#call('arrivedFrames', i);
      if (!this.exactQuiescence) return undefined;
      const a = this.#arrived.get(i) ?? [0n, 0n];
      return [a[0], a[1]];
    },
    disarm: async (i, hid) => {
      await this.#call('disarm', i);
      this.#agents.get(i)?.delete(hid);
    },
  };

  readonly #vnfState: VnfStateStore = {
    exportState: async (i, select): Promise<FlowStateEntry[]> => {
      await this.#call('exportState', i);
      const out: FlowStateEntry[] = [];
      for (const [k, n] of this.#state.get(i)!) {
        const flow = this.#flows.get(k)!;
        if (selects(select, flow)) out.push({ flow, value: Buffer.from(String(n)) });
      }
      return out;
    },
    importState: async (i, entries) => {
      await this.#call('importState', i);
      for (const e of entries) this.#state.get(i)!.set(flowId(e.flow), Number(e.value.toString()));
    },
    deleteState: async (i, flows) => {
      await this.#call('deleteState', i);
      for (const f of flows) this.#state.get(i)!.delete(flowId(f));
    },
  };

  /** What an instance's agent has armed (for leak checks). */
  armed(instance: string): number[] {
    return [...this.#agents.get(instance)!.keys()];
  }
}
