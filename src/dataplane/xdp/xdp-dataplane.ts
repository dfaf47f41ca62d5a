/**
 * The DataPlane over XDP: one switch object per switch (attached to all its
 * ports), one agent object and one example-VNF object per VNF instance (the
 * agent on both of the instance's interfaces, the VNF tail-called behind it).
 */
import path from 'node:path';
import {
  BpfObjectSpec,
  type BpfCollection,
  type BpfMap,
  type XdpLink,
  ifindexOf,
  withNetns,
  xdpMd,
  u32,
  MapUpdate,
  queryXdp,
  BpfError,
  XdpDispatcherAnchor,
  RingBufferReader,
} from '../../bpf/index.js';
import {
  sharpPortInfoCodec,
  sharpWildRuleCodec,
  sharpRuleActionCodec,
  sharpRuleStatsCodec,
  sharpPortStatsCodec,
  sharpHoStatsCodec,
  sharpAgentIfaceCodec,
  sharpAgentHoCodec,
  sharpFlowKeyCodec,
  sharpExactRuleCodec,
  sharpDivertRecordCodec,
  sharpDivertStatsCodec,
  sharpReleaseCtlCodec,
  rodataLayouts,
  SHARP_PORT_HOST,
  SHARP_PORT_VNF,
  SHARP_AGENT_OLD,
  SHARP_AGENT_NEW,
  SHARP_HOLD_HOLDING,
  SHARP_HOLD_PASSING,
  SHARP_HID_MIN,
  SHARP_HID_MAX,
  SHARP_MAX_WILD_RULES,
  SHARP_DEFAULT_MAX_RULES,
  SHARP_DEFAULT_MAX_IFINDEX,
  SHARP_FINISH_DONE,
  SHARP_FINISH_AGAIN,
  SHARP_REPLAY_RELAY,
  SHARP_REPLAY_TO_VNF,
  SHARP_VNF_CHAIN_INDEX,
  type SharpAgentHo,
  type SharpFlowKey,
} from '../../generated/abi.js';
import { ipv4Number, ipv4String } from '../../net/frame.js';
import { Mutex, sleep } from '../../util/mutex.js';
import {
  AgentUnavailableError,
  DataPlaneError,
  RuleError,
  Phase,
  type AgentHandoverStatus,
  type Counter,
  type DataPlane,
  type FlowKey,
  type FlowStateEntry,
  type HandoverMarkCounters,
  type InstanceInfo,
  type PortCounters,
  type ReleaseResult,
  type ControllerChannel,
  type DivertedFrame,
  type Rule,
  type RuleAction,
  type WildcardMatch,
} from '../types.js';
import type { XdpInstance, XdpSwitch, XdpTopology } from './topology.js';

export interface XdpDataPlaneOptions {
  /** folder with the compiled switch/agent/vnf objects */
  objectsDir: string;
  /** quiescence interval Q in ms (default 5) */
  quiescenceMs?: number;
  xdpMode?: 'native' | 'generic';
}

interface LoadedSwitch {
  spec: XdpSwitch;
  coll: BpfCollection;
  links: XdpLink[];
  /** port name -> slot */
  slots: Map<string, number>;
  wild: Rule[];
}

interface LoadedInstance {
  spec: XdpInstance;
  /** keeps agent_replay in the XDP dispatcher: repeated test runs stay fast */
  anchor: XdpDispatcherAnchor;
  agent: BpfCollection;
  vnf: BpfCollection;
  links: XdpLink[];
  ifindex: [number, number];
  /** serialises replays: replay_ctl/replay_mode are per side, not per handover */
  releaseLock: Mutex;
}

const sum = (xs: readonly bigint[]): bigint => xs.reduce((a, b) => a + b, 0n);

export function flowKeyToAbi(f: FlowKey): SharpFlowKey {
  return { saddr: ipv4Number(f.src), daddr: ipv4Number(f.dst), sport: f.sport, dport: f.dport, proto: f.proto, pad: Buffer.alloc(3) };
}

export function flowKeyFromAbi(k: SharpFlowKey): FlowKey {
  return { src: ipv4String(k.saddr), dst: ipv4String(k.daddr), sport: k.sport, dport: k.dport, proto: k.proto };
}

function prefix(p: string | undefined): { addr: number; mask: number } {
  if (p === undefined) return { addr: 0, mask: 0 };
  const [net, lenStr] = p.split('/');
  const len = lenStr === undefined ? 32 : Number(lenStr);
  if (!Number.isInteger(len) || len < 0 || len > 32) throw new RuleError(`prefix ${p}: length must be 0..32`);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  return { addr: (ipv4Number(net!) & mask) >>> 0, mask };
}

export class XdpDataPlane implements DataPlane {
  readonly kind = 'xdp';
  readonly quiescenceMs: number;
  readonly #switches = new Map<string, LoadedSwitch>();
  readonly #instances = new Map<string, LoadedInstance>();
  readonly #rules = new Map<number, Rule>();
  #nextRuleId = 1;
  #closed = false;

  private constructor(options: XdpDataPlaneOptions) {
    this.quiescenceMs = options.quiescenceMs ?? 5;
  }

  /** Loads and attaches every program of the topology; on failure nothing stays attached. */
  static async create(topology: XdpTopology, options: XdpDataPlaneOptions): Promise<XdpDataPlane> {
    const dp = new XdpDataPlane(options);
    try {
      for (const sw of topology.switches) dp.#loadSwitch(sw, options);
      for (const inst of topology.instances) dp.#loadInstance(inst, options);
    } catch (e) {
      await dp.close();
      throw e;
    }
    return dp;
  }

  #loadSwitch(sw: XdpSwitch, o: XdpDataPlaneOptions): void {
    const ifindexes = sw.ports.map((p) => ifindexOf(p.ifname, sw.netns));
    const spec = BpfObjectSpec.open(path.join(o.objectsDir, 'switch.bpf.o'));
    // ports is an array indexed by ifindex
    spec.setMaxEntries('ports', Math.max(SHARP_DEFAULT_MAX_IFINDEX, ...ifindexes.map((i) => i + 1)));
    const coll = spec.load();
    const loaded: LoadedSwitch = { spec: sw, coll, links: [], slots: new Map(), wild: [] };
    this.#switches.set(sw.name, loaded);
    const ports = coll.map('ports');
    const tx = coll.map('tx_ports');
    sw.ports.forEach((p, slot) => {
      const ifindex = ifindexes[slot]!;
      loaded.slots.set(p.name, slot);
      ports.update(u32.encode(ifindex), sharpPortInfoCodec.encode({ slot, role: p.role === 'host' ? SHARP_PORT_HOST : SHARP_PORT_VNF }));
      // devmap entries resolve the ifindex in the caller's namespace
      withNetns(sw.netns, () => tx.update(u32.encode(slot), u32.encode(ifindex)));
    });
    for (const p of sw.ports) loaded.links.push(coll.program('sharp_switch').attachXdp(p.ifname, { netns: sw.netns, mode: o.xdpMode ?? 'native' }));
  }

  #loadInstance(inst: XdpInstance, o: XdpDataPlaneOptions): void {
    const spec = BpfObjectSpec.open(path.join(o.objectsDir, 'agent.bpf.o'));
    spec.setConstants(rodataLayouts['agent']!, { ring_capacity: inst.ringCapacity, ring_count: inst.ringCount });
    spec.setMaxEntries('slots', inst.ringCount * 2 * inst.ringCapacity);
    spec.setMaxEntries('release_ctl', inst.ringCount * 2);
    const agent = spec.load();
    let vnf: BpfCollection;
    try {
      vnf = BpfObjectSpec.open(path.join(o.objectsDir, 'vnf_counter.bpf.o')).load();
    } catch (e) {
      agent.close();
      throw e;
    }
    const ifindex: [number, number] = [ifindexOf(inst.ifaces[0], inst.netns), ifindexOf(inst.ifaces[1], inst.netns)];
    let anchor: XdpDispatcherAnchor;
    try {
      anchor = new XdpDispatcherAnchor(agent.program('agent_replay'), 'sharp-anchor', inst.netns);
    } catch (e) {
      agent.close();
      vnf.close();
      throw e;
    }
    const loaded: LoadedInstance = { spec: inst, agent, vnf, anchor, links: [], ifindex, releaseLock: new Mutex() };
    this.#instances.set(inst.name, loaded);
    // the VNF forwards between its two interfaces: side 0 <-> side 1
    withNetns(inst.netns, () => {
      vnf.map('vnf_tx').update(u32.encode(0), u32.encode(ifindex[0]));
      vnf.map('vnf_tx').update(u32.encode(1), u32.encode(ifindex[1]));
    });
    vnf.map('vnf_ports').update(u32.encode(ifindex[0]), u32.encode(1));
    vnf.map('vnf_ports').update(u32.encode(ifindex[1]), u32.encode(0));
    ifindex.forEach((ix, side) => agent.map('ifaces').update(u32.encode(ix), sharpAgentIfaceCodec.encode({ side, accept_shim: 1 })));
    agent.map('vnf_chain').update(u32.encode(SHARP_VNF_CHAIN_INDEX), u32.encode(vnf.program('vnf_counter').fd));
    for (const ifname of inst.ifaces) loaded.links.push(agent.program('agent').attachXdp(ifname, { netns: inst.netns, mode: o.xdpMode ?? 'native' }));
  }

  // ------------------------------------------------------------ topology

  switches(): string[] {
    return [...this.#switches.keys()];
  }

  instances(): InstanceInfo[] {
    return [...this.#instances.values()].map((i) => ({
      name: i.spec.name,
      ports: Object.fromEntries(this.switches().flatMap((s) => (this.portTowards(s, i.spec.name) ? [[s, this.portTowards(s, i.spec.name)!]] : []))),
      ringCapacity: i.spec.ringCapacity,
      ringCount: i.spec.ringCount,
    }));
  }

  portTowards(sw: string, instance: string): string | undefined {
    return this.#switches.get(sw)?.spec.ports.find((p) => p.instance === instance)?.name;
  }

  #switch(name: string): LoadedSwitch {
    const s = this.#switches.get(name);
    if (s === undefined) throw new DataPlaneError(`unknown switch '${name}' (switches: ${this.switches().join(', ')})`);
    return s;
  }

  #instance(name: string): LoadedInstance {
    const i = this.#instances.get(name);
    if (i === undefined) throw new AgentUnavailableError(name, `no such VNF instance (instances: ${[...this.#instances.keys()].join(', ')})`);
    return i;
  }

  #slot(sw: LoadedSwitch, port: string): number {
    const slot = sw.slots.get(port);
    if (slot === undefined) throw new RuleError(`switch ${sw.spec.name} has no port '${port}' (ports: ${[...sw.slots.keys()].join(', ')})`);
    return slot;
  }

  // ------------------------------------------------------------ rules

  #encodeAction(sw: LoadedSwitch, a: RuleAction): Buffer {
    if (a.phase !== Phase.NONE && (a.handoverId < SHARP_HID_MIN || a.handoverId > SHARP_HID_MAX))
      throw new RuleError(`handover id ${a.handoverId} out of range ${SHARP_HID_MIN}..${SHARP_HID_MAX}`);
    return sharpRuleActionCodec.encode({ out_slot: this.#slot(sw, a.outPort), hid: a.phase === Phase.NONE ? 0 : a.handoverId, phase: a.phase, flags: 0 });
  }

  async addRule(r: Omit<Rule, 'id'> & { id?: number }): Promise<Rule> {
    const sw = this.#switch(r.switch);
    const id = r.id ?? this.#nextRuleId;
    if (!Number.isInteger(id) || id < 1 || id >= SHARP_DEFAULT_MAX_RULES) throw new RuleError(`rule id ${id} out of range 1..${SHARP_DEFAULT_MAX_RULES - 1}`);
    if (this.#rules.has(id)) throw new RuleError(`rule id ${id} exists already`);
    const rule: Rule = { id, switch: r.switch, match: r.match, action: r.action };
    const action = this.#encodeAction(sw, r.action);
    if (r.match.kind === 'exact') {
      const key = sharpFlowKeyCodec.encode(flowKeyToAbi(r.match.flow));
      if (sw.coll.map('rules_exact').lookup(key) !== undefined) throw new RuleError(`switch ${r.switch} has an exact rule for this flow already`);
      sw.coll.map('rules_exact').update(key, sharpExactRuleCodec.encode({ rule_id: id, action }), MapUpdate.NOEXIST);
    } else {
      if (sw.wild.length >= SHARP_MAX_WILD_RULES) throw new RuleError(`switch ${r.switch} holds at most ${SHARP_MAX_WILD_RULES} wildcard rules`);
      if (r.match.inPort !== undefined) this.#slot(sw, r.match.inPort);
      prefix(r.match.src);
      prefix(r.match.dst);
      sw.coll.map('rule_actions').update(u32.encode(id), action);
      sw.wild.push(rule);
      this.#writeWild(sw);
    }
    this.#rules.set(id, rule);
    this.#nextRuleId = Math.max(this.#nextRuleId, id + 1);
    return rule;
  }

  /** Rewrites the wildcard array sorted by priority (descending, then id), then its count. */
  #writeWild(sw: LoadedSwitch): void {
    sw.wild.sort((a, b) => (b.match as WildcardMatch).priority - (a.match as WildcardMatch).priority || a.id - b.id);
    const arr = sw.coll.map('rules_wild');
    sw.wild.forEach((r, i) => {
      const m = r.match as WildcardMatch;
      const s = prefix(m.src);
      const d = prefix(m.dst);
      arr.update(
        u32.encode(i),
        sharpWildRuleCodec.encode({
          saddr: s.addr,
          smask: s.mask,
          daddr: d.addr,
          dmask: d.mask,
          sport: m.sport ?? 0,
          dport: m.dport ?? 0,
          proto: m.proto ?? 0,
          in_slot_plus1: m.inPort === undefined ? 0 : this.#slot(sw, m.inPort) + 1,
          rule_id: r.id,
          priority: m.priority,
          valid: 1,
        }),
      );
    });
    sw.coll.map('wild_count').update(u32.encode(0), u32.encode(sw.wild.length));
  }

  async deleteRule(id: number): Promise<void> {
    const rule = this.#rules.get(id);
    if (rule === undefined) throw new RuleError(`no rule ${id}`);
    const sw = this.#switch(rule.switch);
    if (rule.match.kind === 'exact') sw.coll.map('rules_exact').delete(sharpFlowKeyCodec.encode(flowKeyToAbi(rule.match.flow)));
    else {
      sw.wild = sw.wild.filter((r) => r.id !== id);
      this.#writeWild(sw);
      sw.coll.map('rule_actions').delete(u32.encode(id));
    }
    this.#rules.delete(id);
  }

  getRule(id: number): Rule | undefined {
    return this.#rules.get(id);
  }

  rules(): Rule[] {
    return [...this.#rules.values()].sort((a, b) => a.id - b.id);
  }

  async setRuleAction(id: number, action: RuleAction): Promise<void> {
    const rule = this.#rules.get(id);
    if (rule === undefined) throw new RuleError(`no rule ${id}`);
    const sw = this.#switch(rule.switch);
    // one hash update: readers see the old or the new element, never a mix
    const encoded = this.#encodeAction(sw, action);
    if (rule.match.kind === 'exact')
      sw.coll.map('rules_exact').update(sharpFlowKeyCodec.encode(flowKeyToAbi(rule.match.flow)), sharpExactRuleCodec.encode({ rule_id: id, action: encoded }), MapUpdate.EXIST);
    else sw.coll.map('rule_actions').update(u32.encode(id), encoded, MapUpdate.EXIST);
    rule.action = { ...action };
  }

  async ruleCounters(id: number): Promise<Counter> {
    const rule = this.#rules.get(id);
    if (rule === undefined) throw new RuleError(`no rule ${id}`);
    const per = this.#switch(rule.switch).coll.map('rule_stats').typed(u32, sharpRuleStatsCodec).getPerCpu(id) ?? [];
    return { packets: sum(per.map((p) => p.packets)), bytes: sum(per.map((p) => p.bytes)) };
  }

  async portCounters(swName: string): Promise<PortCounters[]> {
    const sw = this.#switch(swName);
    const stats = sw.coll.map('port_stats').typed(u32, sharpPortStatsCodec);
    return sw.spec.ports.map((p) => {
      const per = stats.getPerCpu(sw.slots.get(p.name)!) ?? [];
      const f = (k: keyof (typeof per)[number]): bigint => sum(per.map((x) => x[k] as bigint));
      return {
        port: p.name,
        packets: f('rx_packets'),
        bytes: f('rx_bytes'),
        txPackets: f('tx_packets'),
        txBytes: f('tx_bytes'),
        dropNoRule: f('drop_no_rule'),
        dropShim: f('drop_shim'),
        dropOther: f('drop_malformed') + f('drop_bad_action') + f('drop_no_headroom') + f('drop_no_tx'),
      };
    });
  }

  async handoverCounters(swName: string, hid: number): Promise<HandoverMarkCounters> {
    const per = this.#switch(swName).coll.map('ho_stats').typed(u32, sharpHoStatsCodec).getPerCpu(hid) ?? [];
    return { pre: sum(per.map((p) => p.pre_packets)), post: sum(per.map((p) => p.post_packets)) };
  }

  async resetHandoverCounters(swName: string, hid: number): Promise<void> {
    this.#switch(swName).coll.map('ho_stats').typed(u32, sharpHoStatsCodec).set(hid, { pre_packets: 0n, post_packets: 0n });
  }

  async controllerDataPackets(): Promise<{ packets: bigint; bytes: bigint }> {
    // The only path to the controller is a DIVERT action (the baseline);
    // SHarP handovers never use it.
    let packets = 0n;
    let bytes = 0n;
    for (const sw of this.#switches.values()) {
      for (const st of sw.coll.map('divert_stats').typed(u32, sharpDivertStatsCodec).getPerCpu(0) ?? []) {
        packets += st.packets;
        bytes += st.bytes;
      }
    }
    return { packets, bytes };
  }

  openControllerChannel(onFrame: (f: DivertedFrame) => void): ControllerChannel {
    const readers = [...this.#switches.values()].map((sw) => {
      const r = new RingBufferReader(sw.coll.map('divert'));
      r.on('data', (b: Buffer) => {
        const rec = sharpDivertRecordCodec.decode(b);
        onFrame({ switch: sw.spec.name, handoverId: rec.hid, frame: Buffer.from(rec.data.subarray(0, rec.len)) });
      });
      return r;
    });
    return {
      drain: () => readers.forEach((r) => r.consume()),
      close: () => readers.forEach((r) => r.close()),
    };
  }

  async sendFromController(swName: string, port: string, frames: readonly Buffer[]): Promise<void> {
    const sw = this.#switch(swName);
    const p = sw.spec.ports.find((x) => x.name === port);
    if (p === undefined) throw new RuleError(`switch ${swName} has no port '${port}'`);
    const ifindex = ifindexOf(p.ifname, sw.spec.netns);
    const prog = sw.coll.program('tx_inject');
    // one frame per run, in order: each run has flushed its frame to the port before the next
    for (let i = 0; i < frames.length; i++) {
      const f = frames[i]!;
      prog.run({ data: f, context: xdpMd({ dataLen: f.length, ingressIfindex: ifindex }), liveFrames: true, repeat: 1, netns: sw.spec.netns });
      // let the receiving interface's poll keep up: its queue holds a few hundred frames
      if (i % 64 === 63) await sleep(0);
    }
  }

  // ------------------------------------------------------------ agents

  async checkAgent(name: string): Promise<void> {
    const inst = this.#instance(name);
    if (inst.agent.closed) throw new AgentUnavailableError(name, 'the agent was unloaded');
    const agentId = inst.agent.program('agent').id;
    inst.spec.ifaces.forEach((ifname, side) => {
      let attached: number;
      try {
        attached = queryXdp(inst.ifindex[side]!, inst.spec.netns).progId;
      } catch (e) {
        throw new AgentUnavailableError(name, `interface ${ifname} cannot be queried (${e instanceof Error ? e.message : String(e)})`, { cause: e });
      }
      if (attached !== agentId) throw new AgentUnavailableError(name, `the agent program is not attached to ${ifname} (attached program id: ${attached || 'none'})`);
    });
  }

  async armOld(name: string, hid: number): Promise<void> {
    await this.checkAgent(name);
    this.#putHandover(name, hid, { role: SHARP_AGENT_OLD, ring: 0, state: [SHARP_HOLD_PASSING, SHARP_HOLD_PASSING] });
  }

  async armNew(name: string, hid: number, ring: number): Promise<void> {
    await this.checkAgent(name);
    const inst = this.#instance(name);
    if (!Number.isInteger(ring) || ring < 0 || ring >= inst.spec.ringCount) throw new DataPlaneError(`ring ${ring} out of range 0..${inst.spec.ringCount - 1} on ${name}`);
    const ctl = inst.agent.map('release_ctl');
    for (const side of [0, 1]) ctl.update(u32.encode(ring * 2 + side), sharpReleaseCtlCodec.encode({ requested: 0, flushed_head: 0 }));
    this.#putHandover(name, hid, { role: SHARP_AGENT_NEW, ring, state: [SHARP_HOLD_HOLDING, SHARP_HOLD_HOLDING] });
  }

  #putHandover(name: string, hid: number, v: Partial<SharpAgentHo>): void {
    const m = this.#instance(name).agent.map('handovers');
    try {
      m.update(u32.encode(hid), sharpAgentHoCodec.encode(v), MapUpdate.NOEXIST);
    } catch (e) {
      if (e instanceof BpfError && e.code === 'EEXIST') throw new DataPlaneError(`${name}: handover ${hid} is armed already`, { cause: e });
      throw e;
    }
  }

  #readHandover(name: string, hid: number): SharpAgentHo | undefined {
    const raw = this.#instance(name).agent.map('handovers').lookup(u32.encode(hid));
    return raw === undefined ? undefined : sharpAgentHoCodec.decode(raw);
  }

  async agentStatus(name: string, hid: number): Promise<AgentHandoverStatus | undefined> {
    const h = this.#readHandover(name, hid);
    if (h === undefined) return undefined;
    const pair = <T>(xs: T[]): [T, T] => [xs[0]!, xs[1]!];
    return {
      role: h.role === SHARP_AGENT_NEW ? 'new' : 'old',
      preSeen: h.pre_seen,
      postSeen: h.post_seen,
      held: pair(h.held as bigint[]),
      released: pair(h.released as bigint[]),
      overflow: pair(h.overflow as bigint[]),
      passed: pair(h.passed as bigint[]),
      replayFailed: pair(h.replay_failed as bigint[]),
      queued: [((h.tail[0] as number) - (h.head[0] as number)) >>> 0, ((h.tail[1] as number) - (h.head[1] as number)) >>> 0],
      passing: [h.state[0] === SHARP_HOLD_PASSING, h.state[1] === SHARP_HOLD_PASSING],
    };
  }

  async release(name: string, hid: number, options: { relayTo?: string; timeoutMs?: number } = {}): Promise<ReleaseResult> {
    const inst = this.#instance(name);
    return inst.releaseLock.run(async () => {
      const deadline = performance.now() + (options.timeoutMs ?? 10_000);
      const ctl = inst.agent.map('replay_ctl');
      const mode = inst.agent.map('replay_mode');
      let rounds = 0;
      if (options.relayTo !== undefined) this.#pointRelay(inst, options.relayTo);
      const template = Buffer.alloc(64);
      const releaseCtl = inst.agent.map('release_ctl');
      for (const side of [0, 1] as const) {
        ctl.update(u32.encode(side), u32.encode(hid));
        mode.update(u32.encode(side), u32.encode(options.relayTo === undefined ? SHARP_REPLAY_TO_VNF : SHARP_REPLAY_RELAY));
        const ctx = xdpMd({ dataLen: template.length, ingressIfindex: inst.ifindex[side] });
        let st = this.#readHandover(name, hid);
        if (st === undefined) throw new DataPlaneError(`${name}: handover ${hid} is not armed`);
        const key = u32.encode(st.ring * 2 + side);
        // from now on a frame finding the ring empty and flushed passes by itself
        releaseCtl.update(key, sharpReleaseCtlCodec.encode({ requested: 1, flushed_head: st.head[side] as number }));
        for (;;) {
          st = this.#readHandover(name, hid);
          if (st === undefined) throw new DataPlaneError(`${name}: handover ${hid} was disarmed during its release`);
          if (st.state[side] === SHARP_HOLD_PASSING) break;
          const queued = ((st.tail[side] as number) - (st.head[side] as number)) >>> 0;
          if (queued > 0) {
            rounds++;
            // synchronous: the shorter the gap between replay and flush mark, the sooner a live frame may pass
            inst.agent.program('agent_replay').run({ data: template, context: ctx, repeat: queued, liveFrames: true, netns: inst.spec.netns });
            const head = this.#readHandover(name, hid)?.head[side] as number | undefined;
            if (head !== undefined) releaseCtl.update(key, sharpReleaseCtlCodec.encode({ requested: 1, flushed_head: head }));
            continue;
          }
          // nothing queued and no frame arrived to flip the side: flip it here
          const fin = inst.agent.program('agent_release_finish').run({ data: template, context: ctx, netns: inst.spec.netns }).retval;
          if (fin === SHARP_FINISH_DONE) break;
          if (fin !== SHARP_FINISH_AGAIN) throw new DataPlaneError(`${name}: releasing handover ${hid} failed on side ${side} (finish returned ${fin})`);
          if (performance.now() > deadline) throw new DataPlaneError(`${name}: releasing handover ${hid} did not finish within ${options.timeoutMs ?? 10_000} ms (side ${side})`);
          await sleep(0); // a frame is being written into its slot: let it finish
        }
        mode.update(u32.encode(side), u32.encode(SHARP_REPLAY_TO_VNF));
      }
      const after = this.#readHandover(name, hid)!;
      return { released: sum(after.released as bigint[]), rounds };
    });
  }

  /** Points the agent's relay devmap, per side, at the switch port facing `target` on that side's switch. */
  #pointRelay(inst: LoadedInstance, target: string): void {
    this.#instance(target);
    const relay = inst.agent.map('relay_tx');
    for (const sw of this.#switches.values()) {
      const mine = sw.spec.ports.find((p) => p.instance === inst.spec.name);
      const theirs = sw.spec.ports.find((p) => p.instance === target);
      if (mine === undefined || theirs === undefined) continue;
      const ifindex = ifindexOf(theirs.ifname, sw.spec.netns);
      withNetns(sw.spec.netns, () => relay.update(u32.encode(mine.instanceSide ?? 0), u32.encode(ifindex)));
    }
  }

  async disarm(name: string, hid: number): Promise<void> {
    this.#instance(name).agent.map('handovers').delete(u32.encode(hid));
  }

  // ------------------------------------------------------------ VNF state

  async exportState(name: string, select: (flow: FlowKey) => boolean): Promise<FlowStateEntry[]> {
    const m = this.#instance(name).vnf.map('flow_state');
    const { keys, values } = m.lookupBatch();
    const out: FlowStateEntry[] = [];
    keys.forEach((k, i) => {
      const flow = flowKeyFromAbi(sharpFlowKeyCodec.decode(k));
      if (select(flow)) out.push({ flow, value: values[i]! });
    });
    return out;
  }

  async importState(name: string, entries: readonly FlowStateEntry[]): Promise<void> {
    const m: BpfMap = this.#instance(name).vnf.map('flow_state');
    m.updateBatch(
      entries.map((e) => sharpFlowKeyCodec.encode(flowKeyToAbi(e.flow))),
      entries.map((e) => e.value),
    );
  }

  async deleteState(name: string, flows: readonly FlowKey[]): Promise<void> {
    const m = this.#instance(name).vnf.map('flow_state');
    for (const f of flows) m.delete(sharpFlowKeyCodec.encode(flowKeyToAbi(f)));
  }

  // ------------------------------------------------------------ XDP-specific (labs and tests)

  /** The loaded objects of an instance (tests and the lab inspect them). */
  instanceObjects(name: string): { agent: BpfCollection; vnf: BpfCollection } {
    const i = this.#instance(name);
    return { agent: i.agent, vnf: i.vnf };
  }

  switchObject(name: string): BpfCollection {
    return this.#switch(name).coll;
  }

  /** Detaches an instance's agent from its interfaces (as if it had crashed). */
  detachAgent(name: string): void {
    const i = this.#instance(name);
    for (const l of i.links) l.close();
    i.links = [];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const i of this.#instances.values()) {
      for (const l of i.links) l.close();
      i.anchor.close();
      i.agent.close();
      i.vnf.close();
    }
    for (const s of this.#switches.values()) {
      for (const l of s.links) l.close();
      s.coll.close();
    }
    this.#instances.clear();
    this.#switches.clear();
  }
}
