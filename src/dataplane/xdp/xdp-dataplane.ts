/**
 * The DataPlane over XDP: one switch object per switch (attached to all its
 * ports), one agent object and one example-VNF object per VNF instance (the
 * agent on both of the instance's interfaces, the VNF tail-called behind it).
 */
import path from 'node:path';
import {
  BpfObjectSpec,
  type BpfCollection,
  type XdpLink,
  type BpfMap,
  ifindexOf,
  withNetns,
  xdpMd,
  u32,
  MapUpdate,
  batchCompleted,
  RingBufferReader,
  BpfError,
  cpuBarrier,
} from '../../bpf/index.js';
import {
  sharpPortInfoCodec,
  sharpWildRuleCodec,
  sharpRuleActionCodec,
  sharpRuleStatsCodec,
  sharpPortStatsCodec,
  sharpHoStatsCodec,
  sharpFlowKeyCodec,
  sharpExactRuleCodec,
  sharpDivertRecordCodec,
  sharpDivertStatsCodec,
  SHARP_PORT_HOST,
  SHARP_PORT_VNF,
  SHARP_HID_MIN,
  SHARP_HID_MAX,
  SHARP_MAX_WILD_RULES,
  SHARP_DEFAULT_MAX_RULES,
  SHARP_DEFAULT_MAX_IFINDEX,
  SHARP_DEFAULT_MAX_RELAYS,
} from '../../generated/abi.js';
import { ipv4Number, ipv4String } from '../../net/frame.js';
import { netdevDrops, interfaceDrops } from '../../net/netdev-stats.js';
import { sleep } from '../../util/mutex.js';
import {
  DataPlaneError,
  RuleError,
  Phase,
  parsePrefix,
  type Counter,
  type DataPlane,
  type HandoverMarkCounters,
  type PortCounters,
  type SentTowards,
  type ControllerChannel,
  type DivertedFrame,
  type Rule,
  type RuleAction,
  type RuleActionUpdate,
  type WildcardMatch,
} from '../types.js';
import { tableSize, SHARP_MAX_RULES_LIMIT, type XdpSwitch, type XdpTopology } from './topology.js';
import { XdpAgentSet, flowKeyToAbi, flowKeyFromAbi, type AgentSwitchView, type XdpPinning } from './agents.js';
import { claimXdpHook, PinMismatchError, type JsonValue, type PinnedObjectRecord } from '../../node/pins.js';
import { AgentBackedDataPlane } from '../agent-backed.js';

export interface XdpDataPlaneOptions {
  /** folder with the compiled switch/agent/vnf objects */
  objectsDir: string;
  /** quiescence interval Q in ms (default 5) */
  quiescenceMs?: number;
  xdpMode?: 'native' | 'generic';
  /**
   * Pin every map, program and link into a node's pin store: they outlive
   * this process (its death never stops traffic) and adopt() re-opens them.
   */
  pins?: XdpPinning;
  /** without pins: replace an XDP program already attached (default: refuse, naming it) */
  replace?: boolean;
  /** the agents relay around switches that cannot relay, in this kernel (see XdpAgentSetOptions.directRelay) */
  directRelay?: readonly AgentSwitchView[];
}

export interface XdpDataPlaneAdoptOptions {
  pins: XdpPinning;
  /** quiescence interval Q in ms (default 5) */
  quiescenceMs?: number;
  /** the topology expected (default: what the store holds); each switch and instance must equal its pinned spec */
  topology?: XdpTopology;
  /** folder with the compiled objects: the adopted agents count what their replays lose in the kernel */
  objectsDir?: string;
  /** see XdpDataPlaneOptions.directRelay */
  directRelay?: readonly AgentSwitchView[];
}

interface LoadedSwitch {
  spec: XdpSwitch;
  coll: BpfCollection;
  links: XdpLink[];
  /** port name -> slot */
  slots: Map<string, number>;
  wild: Rule[];
  pinned?: PinnedObjectRecord;
}

const SWITCH_KIND = 'switch';

/** Pinned config of a switch record. */
interface SwitchPinConfig {
  switch: XdpSwitch;
  xdpMode: 'native' | 'generic';
}

/** "a.b.c.d/len" of an address and mask (undefined for the match-all 0/0). */
function prefixString(addr: number, mask: number): string | undefined {
  if (mask === 0) return undefined;
  let len = 0;
  for (let m = mask >>> 0; m & 0x80000000; m = (m << 1) >>> 0) len++;
  return `${ipv4String(addr)}/${len}`;
}

const sum = (xs: readonly bigint[]): bigint => xs.reduce((a, b) => a + b, 0n);


export class XdpDataPlane extends AgentBackedDataPlane implements DataPlane {
  readonly kind = 'xdp';
  readonly quiescenceMs: number;
  readonly #switches = new Map<string, LoadedSwitch>();
  #agents!: XdpAgentSet;
  readonly #rules = new Map<number, Rule>();
  #nextRuleId = 1;
  #closed = false;
  readonly #pins: XdpPinning | undefined;

  private constructor(options: { quiescenceMs?: number; pins?: XdpPinning }) {
    super();
    this.quiescenceMs = options.quiescenceMs ?? 5;
    this.#pins = options.pins;
  }

  /** Whether everything is pinned (it outlives this process; detach() removes it). */
  get persistent(): boolean {
    return this.#pins !== undefined;
  }

  /**
   * Loads and attaches every program of the topology; on failure nothing
   * stays attached (or pinned). Never clobbers an XDP program already
   * attached to a port (XdpBusyError names it) unless `replace`.
   */
  static async create(topology: XdpTopology, options: XdpDataPlaneOptions): Promise<XdpDataPlane> {
    const dp = new XdpDataPlane(options);
    const replace = options.pins?.replace ?? options.replace;
    try {
      for (const sw of topology.switches) dp.#loadSwitch(sw, options);
      // the agents relay through the switches (setRelay): they need no view of them, unless those cannot relay
      dp.#agents = XdpAgentSet.load(topology.instances, {
        objectsDir: options.objectsDir,
        ...(options.directRelay === undefined ? {} : { directRelay: options.directRelay }),
        ...(options.xdpMode === undefined ? {} : { xdpMode: options.xdpMode }),
        ...(options.pins === undefined ? {} : { pins: options.pins }),
        ...(replace === undefined ? {} : { replace }),
      });
    } catch (e) {
      await dp.detach();
      throw e;
    }
    return dp;
  }

  /**
   * Re-opens the switches, agents and VNFs a (dead or restarted) process
   * pinned into `pins.store`, instead of loading them: the same programs,
   * links and maps — rules and counters continue, traffic never stopped.
   * The rule table is read back from the switches' maps. Throws
   * PinMismatchError when the pins are not what the manifest recorded
   * (nothing is changed then), PinStateError when nothing is pinned.
   */
  static async adopt(options: XdpDataPlaneAdoptOptions): Promise<XdpDataPlane> {
    const store = options.pins.store;
    const dp = new XdpDataPlane(options);
    try {
      const switchNames = options.topology?.switches.map((s) => s.name) ?? store.list(SWITCH_KIND).map((r) => r.name);
      const specs: XdpSwitch[] = [];
      for (const name of switchNames) specs.push(dp.#adoptSwitch(name, options.topology?.switches.find((s) => s.name === name)));
      dp.#agents = XdpAgentSet.adopt({ pins: options.pins, ...(options.directRelay === undefined ? {} : { directRelay: options.directRelay }), ...(options.topology === undefined ? {} : { instances: options.topology.instances }), ...(options.objectsDir === undefined ? {} : { objectsDir: options.objectsDir }) });
    } catch (e) {
      await dp.close();
      throw e;
    }
    return dp;
  }

  #adoptSwitch(name: string, expected: XdpSwitch | undefined): XdpSwitch {
    const store = this.#pins!.store;
    const rec = store.adoptable(SWITCH_KIND, name);
    const config = rec.config as unknown as SwitchPinConfig;
    const sw = config.switch;
    if (expected !== undefined && JSON.stringify(expected) !== JSON.stringify(sw))
      throw new PinMismatchError(SWITCH_KIND, name, [`pinned for ${JSON.stringify(sw)}, asked for ${JSON.stringify(expected)}`]);
    const coll = store.openCollection(rec);
    const loaded: LoadedSwitch = { spec: sw, coll, links: [], slots: new Map(sw.ports.map((p, slot) => [p.name, slot])), wild: [], pinned: rec };
    this.#switches.set(name, loaded);
    for (const l of rec.links) loaded.links.push(store.openLink(rec, l));
    const missing = sw.ports.filter((p) => !loaded.links.some((l) => l.ifname === p.ifname));
    if (missing.length > 0) throw new PinMismatchError(SWITCH_KIND, name, [`no pinned link on ${missing.map((p) => p.ifname).join(', ')}`]);
    this.#readRules(loaded);
    return sw;
  }

  /** Rebuilds the rule table of an adopted switch from its maps (the kernel's copy is the truth). */
  #readRules(sw: LoadedSwitch): void {
    const port = (slot: number): string => {
      const p = sw.spec.ports[slot];
      if (p === undefined) throw new PinMismatchError(SWITCH_KIND, sw.spec.name, [`a rule sends to slot ${slot}, the switch has ${sw.spec.ports.length} ports`]);
      return p.name;
    };
    const action = (raw: Buffer): RuleAction => {
      const a = sharpRuleActionCodec.decode(raw);
      return { outPort: port(a.out_slot), phase: a.phase as Phase, handoverId: a.hid };
    };
    const add = (r: Rule): void => {
      this.#rules.set(r.id, r);
      this.#nextRuleId = Math.max(this.#nextRuleId, r.id + 1);
    };
    for (const [k, v] of sw.coll.map('rules_exact').entries()) {
      const e = sharpExactRuleCodec.decode(v);
      add({ id: e.rule_id, switch: sw.spec.name, match: { kind: 'exact', flow: flowKeyFromAbi(sharpFlowKeyCodec.decode(k)) }, action: action(e.action) });
    }
    const count = sw.coll.map('wild_count').lookup(u32.encode(0))?.readUInt32LE(0) ?? 0;
    const arr: BpfMap = sw.coll.map('rules_wild');
    for (let i = 0; i < count; i++) {
      const raw = arr.lookup(u32.encode(i));
      if (raw === undefined) continue;
      const w = sharpWildRuleCodec.decode(raw);
      if (!w.valid) continue;
      const act = sw.coll.map('rule_actions').lookup(u32.encode(w.rule_id));
      if (act === undefined) throw new PinMismatchError(SWITCH_KIND, sw.spec.name, [`wildcard rule ${w.rule_id} has no action`]);
      const src = prefixString(w.saddr, w.smask);
      const dst = prefixString(w.daddr, w.dmask);
      const rule: Rule = {
        id: w.rule_id,
        switch: sw.spec.name,
        match: {
          kind: 'wildcard',
          priority: w.priority,
          ...(src === undefined ? {} : { src }),
          ...(dst === undefined ? {} : { dst }),
          ...(w.sport === 0 ? {} : { sport: w.sport }),
          ...(w.dport === 0 ? {} : { dport: w.dport }),
          ...(w.proto === 0 ? {} : { proto: w.proto }),
          ...(w.in_slot_plus1 === 0 ? {} : { inPort: port(w.in_slot_plus1 - 1) }),
        },
        action: action(act),
      };
      sw.wild.push(rule);
      add(rule);
    }
  }

  #loadSwitch(sw: XdpSwitch, o: XdpDataPlaneOptions): void {
    const store = o.pins?.store;
    const replace = o.pins?.replace ?? o.replace ?? false;
    const mode = o.xdpMode ?? 'native';
    // refuse before loading anything when a port runs a program we must not clobber
    if (!replace) for (const p of sw.ports) claimXdpHook(p.ifname, sw.netns, { replace: false, ...(store === undefined ? {} : { store }) });
    const ifindexes = sw.ports.map((p) => ifindexOf(p.ifname, sw.netns));
    const spec = BpfObjectSpec.open(path.join(o.objectsDir, 'switch.bpf.o'));
    // ports is an array indexed by ifindex
    spec.setMaxEntries('ports', Math.max(SHARP_DEFAULT_MAX_IFINDEX, ...ifindexes.map((i) => i + 1)));
    // rule_stats is indexed by rule id: every table keyed by rule or holding one per rule has the same size
    const maxRules = tableSize(`switch ${sw.name}: maxRules`, sw.maxRules, SHARP_DEFAULT_MAX_RULES, 2, SHARP_MAX_RULES_LIMIT);
    for (const m of ['rules_exact', 'rule_actions', 'rule_stats']) spec.setMaxEntries(m, maxRules);
    const coll = spec.load();
    const loaded: LoadedSwitch = { spec: sw, coll, links: [], slots: new Map(), wild: [] };
    this.#switches.set(sw.name, loaded);
    if (store !== undefined) {
      const config: SwitchPinConfig = { switch: sw, xdpMode: mode };
      loaded.pinned = store.pinCollection(SWITCH_KIND, sw.name, coll, { object: 'switch.bpf.o', config: config as unknown as JsonValue });
    }
    const ports = coll.map('ports');
    const tx = coll.map('tx_ports');
    sw.ports.forEach((p, slot) => {
      const ifindex = ifindexes[slot]!;
      loaded.slots.set(p.name, slot);
      ports.update(u32.encode(ifindex), sharpPortInfoCodec.encode({ slot, role: p.role === 'host' ? SHARP_PORT_HOST : SHARP_PORT_VNF }));
      // devmap entries resolve the ifindex in the caller's namespace
      withNetns(sw.netns, () => tx.update(u32.encode(slot), u32.encode(ifindex)));
    });
    for (const p of sw.ports) {
      if (store !== undefined && loaded.pinned !== undefined) loaded.links.push(store.attachPinned(loaded.pinned, coll.program('sharp_switch'), 'sharp_switch', p.ifname, { netns: sw.netns, mode, replace }));
      else {
        claimXdpHook(p.ifname, sw.netns, { replace });
        loaded.links.push(coll.program('sharp_switch').attachXdp(p.ifname, { netns: sw.netns, mode }));
      }
    }
    if (store !== undefined && loaded.pinned !== undefined) store.markReady(loaded.pinned);
  }

  // ------------------------------------------------------------ topology

  switches(): string[] {
    return [...this.#switches.keys()];
  }

  portTowards(sw: string, instance: string): string | undefined {
    return this.#switches.get(sw)?.spec.ports.find((p) => p.instance === instance)?.name;
  }

  #switch(name: string): LoadedSwitch {
    const s = this.#switches.get(name);
    if (s === undefined) throw new DataPlaneError(`unknown switch '${name}' (switches: ${this.switches().join(', ')})`);
    return s;
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
    // the loaded table's size (an adopted switch's is the one it was loaded with)
    const maxRules = sw.coll.map('rule_stats').info.maxEntries;
    if (!Number.isInteger(id) || id < 1 || id >= maxRules) throw new RuleError(`rule id ${id} out of range 1..${maxRules - 1} (switch ${r.switch}'s maxRules is ${maxRules})`);
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
      parsePrefix(r.match.src, ipv4Number);
      parsePrefix(r.match.dst, ipv4Number);
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
      const s = parsePrefix(m.src, ipv4Number);
      const d = parsePrefix(m.dst, ipv4Number);
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

  async setRuleActions(updates: readonly RuleActionUpdate[]): Promise<void> {
    // everything encoded first: a bad rule or port is refused before anything changes
    const encoded = updates.map((u) => {
      const rule = this.#rules.get(u.id);
      if (rule === undefined) throw new RuleError(`no rule ${u.id}`);
      const sw = this.#switch(rule.switch);
      const action = this.#encodeAction(sw, u.action);
      return rule.match.kind === 'exact'
        ? { rule, next: u.action, map: sw.coll.map('rules_exact'), key: sharpFlowKeyCodec.encode(flowKeyToAbi(rule.match.flow)), value: sharpExactRuleCodec.encode({ rule_id: u.id, action }) }
        : { rule, next: u.action, map: sw.coll.map('rule_actions'), key: u32.encode(u.id), value: action };
    });
    // runs of consecutive updates of one table: one BPF_MAP_UPDATE_BATCH each, in order (each
    // element replaced as one hash update, as setRuleAction does). The batch takes no BPF_EXIST
    // (elem_flags allows BPF_F_LOCK only): that every rule exists was checked above, and nothing
    // deletes one in between (this process owns the tables)
    for (let at = 0; at < encoded.length; ) {
      let end = at + 1;
      while (end < encoded.length && encoded[end]!.map === encoded[at]!.map) end++;
      const run = encoded.slice(at, end);
      try {
        run[0]!.map.updateBatch(
          run.map((e) => e.key),
          run.map((e) => e.value),
        );
      } catch (e) {
        const done = batchCompleted(e) ?? 0;
        for (const x of run.slice(0, done)) x.rule.action = { ...x.next };
        throw new RuleError(`rule ${run[done]?.rule.id ?? '?'}: its action could not be replaced (${e instanceof Error ? e.message : String(e)}); the ${at + done} updates before it are done`, { cause: e });
      }
      for (const x of run) x.rule.action = { ...x.next };
      at = end;
    }
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
    // frames that died after the XDP program let them go: the kernel's counters of the port's interface
    const kernel = netdevDrops(sw.spec.netns);
    return sw.spec.ports.map((p) => {
      const k = interfaceDrops(p.ifname, sw.spec.netns, kernel);
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
        relayed: f('relayed'),
        xmitFailed: k.txDropped,
        redirectFailed: k.rxDropped,
      };
    });
  }

  async handoverCounters(swName: string, hid: number): Promise<HandoverMarkCounters> {
    const per = this.#switch(swName).coll.map('ho_stats').typed(u32, sharpHoStatsCodec).getPerCpu(hid) ?? [];
    return { pre: sum(per.map((p) => p.pre_packets)), post: sum(per.map((p) => p.post_packets)) };
  }

  async sentTowardsInstances(swName: string): Promise<SentTowards[]> {
    const sw = this.#switch(swName);
    // every run that read an older action has finished and flushed its frames
    cpuBarrier();
    const stats = sw.coll.map('port_stats').typed(u32, sharpPortStatsCodec);
    return sw.spec.ports.flatMap((p) =>
      p.role === 'vnf' && p.instance !== undefined ? [{ port: p.name, instance: p.instance, side: p.instanceSide ?? 0, frames: sum((stats.getPerCpu(sw.slots.get(p.name)!) ?? []).map((x) => x.tx_packets)) }] : [],
    );
  }

  async resetHandoverCounters(swName: string, hid: number): Promise<void> {
    this.#switch(swName).coll.map('ho_stats').typed(u32, sharpHoStatsCodec).set(hid, { pre_packets: 0n, post_packets: 0n });
  }

  // ------------------------------------------------------------ rollback relay

  async setRelay(swName: string, hid: number, outPort: string): Promise<void> {
    const sw = this.#switch(swName);
    if (!Number.isInteger(hid) || hid < SHARP_HID_MIN || hid > SHARP_HID_MAX) throw new RuleError(`handover id ${hid} out of range ${SHARP_HID_MIN}..${SHARP_HID_MAX}`);
    const slot = this.#slot(sw, outPort);
    try {
      sw.coll.map('relays').update(u32.encode(hid), u32.encode(slot));
    } catch (e) {
      if (e instanceof BpfError && e.code === 'E2BIG') throw new DataPlaneError(`switch ${swName}: no room for another relay route (${SHARP_DEFAULT_MAX_RELAYS} rollbacks are relaying)`, { cause: e });
      throw e;
    }
  }

  async clearRelay(swName: string, hid: number): Promise<void> {
    // false when there was no route: nothing to do
    this.#switch(swName).coll.map('relays').delete(u32.encode(hid));
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
      drain: async () => readers.forEach((r) => r.consume()),
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

  // ------------------------------------------------------------ XDP-specific (labs and tests)

  /** The loaded objects of an instance (tests and the lab inspect them). */
  instanceObjects(name: string): { agent: BpfCollection; vnf: BpfCollection } {
    return this.#agents.objects(name);
  }

  protected agentSet(): XdpAgentSet {
    return this.#agents;
  }

  switchObject(name: string): BpfCollection {
    return this.#switch(name).coll;
  }

  /** The pinned record of a switch (ids of its maps, programs, links), when persistent. */
  pinnedSwitch(name: string): PinnedObjectRecord | undefined {
    const p = this.#switch(name).pinned;
    return p === undefined ? undefined : structuredClone(p);
  }

  /** Agents and VNFs (tests and the node inspect them). */
  agents(): XdpAgentSet {
    return this.#agents;
  }

  /**
   * Lets go of this process's handles. Not persistent: everything is
   * detached and unloaded. Persistent: everything stays attached and pinned,
   * traffic flows on, and adopt() picks it up again; detach() removes it.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#agents?.close();
    for (const s of this.#switches.values()) {
      for (const l of s.links) l.close();
      s.coll.close();
    }
    this.#switches.clear();
  }

  /**
   * Detaches everything (every port and instance interface runs no XDP
   * program afterwards), removes the dispatcher anchors and, when
   * persistent, every pin and the manifest. Idempotent; works on an
   * adopted data plane as on a loaded one.
   */
  async detach(): Promise<void> {
    const switches = [...this.#switches.values()];
    for (const s of switches) {
      for (const l of s.links) {
        try {
          if (!l.closed) l.detach();
        } catch {
          // defunct: its interface is gone
        }
      }
    }
    this.#agents?.detachAll();
    await this.close();
    const store = this.#pins?.store;
    if (store === undefined) return;
    // only what this data plane pinned: a load refused because the switch was pinned already leaves those pins alone
    for (const s of switches) if (s.pinned !== undefined) store.unpin(SWITCH_KIND, s.spec.name);
    if (store.list().length === 0) store.detach();
  }
}

