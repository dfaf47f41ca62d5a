/**
 * The DataPlane over BMv2: every switch runs p4/sharp.p4 in simple_switch_grpc
 * and is driven over P4Runtime; the VNF instances carry the same XDP agents
 * and example VNF as in the XDP data plane (XdpAgentSet).
 *
 * Mapping onto the P4 program (see p4/sharp.p4):
 *   - exact rule      -> rules_exact entry whose action carries rule id,
 *                        out slot, hid, phase; setRuleAction = one MODIFY
 *   - wildcard rule   -> rules_wild ternary entry yielding the rule id, and
 *                        a rule_actions entry with the action; setRuleAction
 *                        = one MODIFY of rule_actions (all micro-flows at once)
 *   - counters        -> P4Runtime counter reads (BMv2 counts at egress)
 *   - DIVERT          -> packet-in; sendFromController -> packet-out
 *   - rollback relay  -> NOT through the switch: p4/sharp.p4 drops every
 *                        shim, RELAY included, and p4c is not installed here
 *                        to rebuild it. The agents relay straight out of the
 *                        BMv2 switch's veth facing the old instance
 *                        (RELAY_DIRECT, same kernel only: the Mininet lab),
 *                        and setRelay/clearRelay do nothing.
 */
import { readFileSync } from 'node:fs';
import { status as grpcStatus } from '@grpc/grpc-js';
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type XdpLink } from '../../bpf/index.js';
import { P4Info, P4RuntimeClient, P4RuntimeWriteError, type CounterValue, type MatchSpec, type TableEntrySpec } from '../../p4runtime/index.js';
import { SHARP_PORT_HOST, SHARP_PORT_VNF, SHARP_HID_MIN, SHARP_HID_MAX, SHARP_MAX_WILD_RULES, SHARP_DEFAULT_MAX_RULES } from '../../generated/abi.js';
import { ipv4Number } from '../../net/frame.js';
import { sleep } from '../../util/mutex.js';
import { XdpAgentSet } from '../xdp/agents.js';
import { AgentBackedDataPlane } from '../agent-backed.js';
import {
  DataPlaneError,
  RuleError,
  Phase,
  parsePrefix,
  type Counter,
  type DataPlane,
  type FlowKey,
  type HandoverMarkCounters,
  type PortCounters,
  type ControllerChannel,
  type DivertedFrame,
  type Rule,
  type RuleAction,
  type WildcardMatch,
} from '../types.js';
import type { Bmv2Switch, Bmv2Topology } from './topology.js';

export interface Bmv2DataPlaneOptions {
  /** folder with the compiled agent/vnf objects */
  objectsDir: string;
  /** P4Info of p4/sharp.p4 in protobuf JSON (p4/build/sharp.p4info.json) */
  p4infoPath: string;
  /** the BMv2 JSON of p4/sharp.p4 (p4/build/sharp.json) */
  deviceConfigPath: string;
  /**
   * Q in ms (default 50): BMv2 is a software switch with queues of
   * thousands of frames between ingress and egress; tens of ms cover them.
   */
  quiescenceMs?: number;
  /** this controller's P4Runtime election id (default 1) */
  electionId?: bigint;
  /** deadline of every P4Runtime call (default 10 s) */
  timeoutMs?: number;
  xdpMode?: 'native' | 'generic';
}

interface ConnectedSwitch {
  spec: Bmv2Switch;
  client: P4RuntimeClient;
  /** xdp_pass on every port: lets XDP redirect frames into the switch's veths */
  pass?: BpfCollection;
  passLinks: XdpLink[];
  /** port name -> slot */
  slots: Map<string, number>;
  /** set when another controller took over: every later call fails with it */
  lostPrimacy?: string;
}


/**
 * P4Runtime priority of a wildcard rule: higher wins, as in our rules; ties
 * go to the lower rule id, as in the XDP switch's sorted array. Always > 0.
 */
export function p4rtPriority(priority: number, ruleId: number): number {
  return (priority + 1) * SHARP_DEFAULT_MAX_RULES + (SHARP_DEFAULT_MAX_RULES - 1 - ruleId);
}

/** The rules_wild match of a wildcard rule; fields that match anything are left out. */
export function wildMatch(m: WildcardMatch, inSlot: number | undefined): Record<string, MatchSpec> {
  const out: Record<string, MatchSpec> = {};
  const s = parsePrefix(m.src, ipv4Number);
  const d = parsePrefix(m.dst, ipv4Number);
  if (s.mask !== 0) out['saddr'] = { ternary: { value: s.addr, mask: s.mask } };
  if (d.mask !== 0) out['daddr'] = { ternary: { value: d.addr, mask: d.mask } };
  if (m.proto !== undefined && m.proto !== 0) out['proto'] = { ternary: { value: m.proto, mask: 0xff } };
  if (m.sport !== undefined && m.sport !== 0) out['sport'] = { ternary: { value: m.sport, mask: 0xffff } };
  if (m.dport !== undefined && m.dport !== 0) out['dport'] = { ternary: { value: m.dport, mask: 0xffff } };
  if (inSlot !== undefined) out['in_slot'] = { ternary: { value: inSlot, mask: 0xffff } };
  return out;
}

export function exactMatch(f: FlowKey): Record<string, MatchSpec> {
  return { saddr: { exact: ipv4Number(f.src) }, daddr: { exact: ipv4Number(f.dst) }, proto: { exact: f.proto }, sport: { exact: f.sport }, dport: { exact: f.dport } };
}

export class Bmv2DataPlane extends AgentBackedDataPlane implements DataPlane {
  readonly kind = 'bmv2';
  readonly quiescenceMs: number;
  readonly #switches = new Map<string, ConnectedSwitch>();
  readonly #rules = new Map<number, Rule>();
  #agents: XdpAgentSet | undefined;
  #nextRuleId = 1;
  #closed = false;

  private constructor(o: Bmv2DataPlaneOptions) {
    super();
    this.quiescenceMs = o.quiescenceMs ?? 50;
  }

  /**
   * Connects to every switch as primary controller, loads the pipeline,
   * writes the port tables, and loads the agents; on failure nothing stays.
   */
  static async create(topology: Bmv2Topology, o: Bmv2DataPlaneOptions): Promise<Bmv2DataPlane> {
    const dp = new Bmv2DataPlane(o);
    try {
      const p4info = P4Info.load(o.p4infoPath);
      const config = readFileSync(o.deviceConfigPath);
      for (const sw of topology.switches) await dp.#connect(sw, p4info, config, o);
      dp.#agents = XdpAgentSet.load(topology.instances, {
        objectsDir: o.objectsDir,
        // the P4 switch cannot relay (see the header): the agents go around it
        directRelay: topology.switches,
        ...(o.xdpMode === undefined ? {} : { xdpMode: o.xdpMode }),
      });
    } catch (e) {
      await dp.close();
      throw e;
    }
    return dp;
  }

  async #connect(spec: Bmv2Switch, p4info: P4Info, config: Buffer, o: Bmv2DataPlaneOptions): Promise<void> {
    const client = await P4RuntimeClient.connect({
      address: spec.grpcAddress,
      deviceId: spec.deviceId,
      ...(o.electionId === undefined ? {} : { electionId: o.electionId }),
      ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
    });
    const sw: ConnectedSwitch = { spec, client, slots: new Map(), passLinks: [] };
    this.#switches.set(spec.name, sw);
    client.on('primacy-lost', (p) => {
      sw.lostPrimacy = `controller with election id ${p.primaryElectionId ?? '?'} took switch ${spec.name} over`;
    });
    client.on('error', () => undefined); // kept in client.lastError; calls fail with their own errors
    await client.setPipeline(p4info, config);
    const updates: TableEntrySpec[] = [];
    spec.ports.forEach((p, slot) => {
      sw.slots.set(p.name, slot);
      updates.push({ table: 'port_info', match: { port: { exact: p.bmv2Port } }, action: { name: 'set_port', params: { slot, role: p.role === 'host' ? SHARP_PORT_HOST : SHARP_PORT_VNF } } });
      updates.push({ table: 'tx_port', match: { slot: { exact: slot } }, action: { name: 'set_tx', params: { port: p.bmv2Port } } });
    });
    await client.write(updates.map((tableEntry) => ({ type: 'INSERT' as const, tableEntry })));
    sw.pass = BpfObjectSpec.open(path.join(o.objectsDir, 'pass.bpf.o')).load();
    for (const p of spec.ports) sw.passLinks.push(sw.pass.program('xdp_pass').attachXdp(p.ifname, { netns: spec.netns, mode: o.xdpMode ?? 'native' }));
  }

  // ------------------------------------------------------------ topology

  switches(): string[] {
    return [...this.#switches.keys()];
  }

  portTowards(sw: string, instance: string): string | undefined {
    return this.#switches.get(sw)?.spec.ports.find((p) => p.instance === instance)?.name;
  }

  protected agentSet(): XdpAgentSet {
    if (this.#agents === undefined) throw new DataPlaneError('the BMv2 data plane is closed');
    return this.#agents;
  }

  #switch(name: string): ConnectedSwitch {
    const s = this.#switches.get(name);
    if (s === undefined) throw new DataPlaneError(`unknown switch '${name}' (switches: ${this.switches().join(', ')})`);
    if (s.lostPrimacy !== undefined) throw new DataPlaneError(`switch ${name}: this controller is no longer primary (${s.lostPrimacy})`);
    return s;
  }

  #slot(sw: ConnectedSwitch, port: string): number {
    const slot = sw.slots.get(port);
    if (slot === undefined) throw new RuleError(`switch ${sw.spec.name} has no port '${port}' (ports: ${[...sw.slots.keys()].join(', ')})`);
    return slot;
  }

  // ------------------------------------------------------------ rules

  #actionParams(sw: ConnectedSwitch, a: RuleAction): { out_slot: number; hid: number; phase: number } {
    if (a.phase !== Phase.NONE && (a.handoverId < SHARP_HID_MIN || a.handoverId > SHARP_HID_MAX))
      throw new RuleError(`handover id ${a.handoverId} out of range ${SHARP_HID_MIN}..${SHARP_HID_MAX}`);
    return { out_slot: this.#slot(sw, a.outPort), hid: a.phase === Phase.NONE ? 0 : a.handoverId, phase: a.phase };
  }

  #exactEntry(sw: ConnectedSwitch, rule: Rule, action: RuleAction): TableEntrySpec {
    if (rule.match.kind !== 'exact') throw new RuleError(`rule ${rule.id} is not exact`);
    return { table: 'rules_exact', match: exactMatch(rule.match.flow), action: { name: 'exact_rule', params: { rule_id: rule.id, ...this.#actionParams(sw, action) } } };
  }

  #wildEntry(sw: ConnectedSwitch, rule: Rule): TableEntrySpec {
    const m = rule.match as WildcardMatch;
    return {
      table: 'rules_wild',
      match: wildMatch(m, m.inPort === undefined ? undefined : this.#slot(sw, m.inPort)),
      priority: p4rtPriority(m.priority, rule.id),
      action: { name: 'wild_rule', params: { rule_id: rule.id } },
    };
  }

  #ruleActionEntry(sw: ConnectedSwitch, id: number, action: RuleAction): TableEntrySpec {
    return { table: 'rule_actions', match: { rule_id: { exact: id } }, action: { name: 'rule_action', params: this.#actionParams(sw, action) } };
  }

  async addRule(r: Omit<Rule, 'id'> & { id?: number }): Promise<Rule> {
    const sw = this.#switch(r.switch);
    const id = r.id ?? this.#nextRuleId;
    if (!Number.isInteger(id) || id < 1 || id >= SHARP_DEFAULT_MAX_RULES) throw new RuleError(`rule id ${id} out of range 1..${SHARP_DEFAULT_MAX_RULES - 1}`);
    if (this.#rules.has(id)) throw new RuleError(`rule id ${id} exists already`);
    const rule: Rule = { id, switch: r.switch, match: r.match, action: r.action };
    if (r.match.kind === 'exact') {
      try {
        await sw.client.insertEntry(this.#exactEntry(sw, rule, r.action));
      } catch (e) {
        // the switch's table is the one record of which flows have a rule
        if (e instanceof P4RuntimeWriteError && e.updates[0]?.code === grpcStatus.ALREADY_EXISTS)
          throw new RuleError(`switch ${r.switch} has an exact rule for this flow already`, { cause: e });
        throw e;
      }
    } else {
      if ([...this.#rules.values()].filter((x) => x.switch === r.switch && x.match.kind === 'wildcard').length >= SHARP_MAX_WILD_RULES)
        throw new RuleError(`switch ${r.switch} holds at most ${SHARP_MAX_WILD_RULES} wildcard rules`);
      const wild = this.#wildEntry(sw, rule);
      // the action first: a frame matching the new wildcard entry finds it
      await sw.client.insertEntry(this.#ruleActionEntry(sw, id, r.action));
      try {
        await sw.client.insertEntry(wild);
      } catch (e) {
        await sw.client.deleteEntry({ table: 'rule_actions', match: { rule_id: { exact: id } } }).catch(() => undefined);
        throw e;
      }
    }
    this.#rules.set(id, rule);
    this.#nextRuleId = Math.max(this.#nextRuleId, id + 1);
    return rule;
  }

  async deleteRule(id: number): Promise<void> {
    const rule = this.#rules.get(id);
    if (rule === undefined) throw new RuleError(`no rule ${id}`);
    const sw = this.#switch(rule.switch);
    if (rule.match.kind === 'exact') await sw.client.deleteEntry({ table: 'rules_exact', match: exactMatch(rule.match.flow) });
    else {
      const wild = this.#wildEntry(sw, rule);
      await sw.client.deleteEntry({ table: 'rules_wild', match: wild.match!, priority: wild.priority! });
      await sw.client.deleteEntry({ table: 'rule_actions', match: { rule_id: { exact: id } } });
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
    // one entry MODIFY: BMv2 applies it between two packets
    if (rule.match.kind === 'exact') await sw.client.modifyEntry(this.#exactEntry(sw, rule, action));
    else await sw.client.modifyEntry(this.#ruleActionEntry(sw, id, action));
    rule.action = { ...action };
  }

  async ruleCounters(id: number): Promise<Counter> {
    const rule = this.#rules.get(id);
    if (rule === undefined) throw new RuleError(`no rule ${id}`);
    return this.#switch(rule.switch).client.readCounter('rule_stats', id);
  }

  async portCounters(swName: string): Promise<PortCounters[]> {
    const sw = this.#switch(swName);
    const read = (name: string): Promise<Map<number, CounterValue>> => sw.client.readCounters(name);
    const [rx, tx, noRule, shim, nonIp, malformed, badAction, noTx] = await Promise.all(
      ['port_rx', 'port_tx', 'drop_no_rule', 'drop_shim', 'drop_non_ip', 'drop_malformed', 'drop_bad_action', 'drop_no_tx'].map(read),
    );
    const zero: CounterValue = { packets: 0n, bytes: 0n };
    return sw.spec.ports.map((p) => {
      const slot = sw.slots.get(p.name)!;
      const at = (m: Map<number, CounterValue> | undefined): CounterValue => m?.get(slot) ?? zero;
      return {
        port: p.name,
        packets: at(rx).packets,
        bytes: at(rx).bytes,
        txPackets: at(tx).packets,
        txBytes: at(tx).bytes,
        dropNoRule: at(noRule).packets,
        dropShim: at(shim).packets,
        // non-IPv4 frames: XDP hands them to the kernel, BMv2 has no stack to hand them to
        dropOther: at(nonIp).packets + at(malformed).packets + at(badAction).packets + at(noTx).packets,
        // relayed frames bypass the P4 switch (see the header)
        relayed: 0n,
        // BMv2 drops inside its own queues, which P4Runtime does not count
        xmitFailed: 0n,
        redirectFailed: 0n,
      };
    });
  }

  async handoverCounters(swName: string, hid: number): Promise<HandoverMarkCounters> {
    const sw = this.#switch(swName);
    const [pre, post] = await Promise.all([sw.client.readCounter('ho_pre', hid), sw.client.readCounter('ho_post', hid)]);
    return { pre: pre.packets, post: post.packets };
  }

  async resetHandoverCounters(swName: string, hid: number): Promise<void> {
    const sw = this.#switch(swName);
    const zero = { packets: 0n, bytes: 0n };
    await sw.client.write([
      { type: 'MODIFY', counterEntry: { counter: 'ho_pre', index: hid, data: zero } },
      { type: 'MODIFY', counterEntry: { counter: 'ho_post', index: hid, data: zero } },
    ]);
  }

  /**
   * No-op: the P4 switch has no relay table yet (p4/sharp.p4 drops every
   * shim, and p4c is not installed here to compile a new one), so BMv2
   * rollbacks relay around the switch, straight out of its veth towards the
   * old instance (XdpAgentSet directRelay). Checks the names only.
   */
  async setRelay(swName: string, _hid: number, outPort: string): Promise<void> {
    const sw = this.#switch(swName);
    if (!sw.slots.has(outPort)) throw new RuleError(`switch ${swName} has no port '${outPort}' (ports: ${[...sw.slots.keys()].join(', ')})`);
  }

  /** No-op, as setRelay. */
  async clearRelay(swName: string, _hid: number): Promise<void> {
    this.#switch(swName);
  }

  async controllerDataPackets(): Promise<{ packets: bigint; bytes: bigint }> {
    // only DIVERT actions (the baseline) send data frames to the controller
    let packets = 0n;
    let bytes = 0n;
    for (const name of this.switches()) {
      const c = await this.#switch(name).client.readCounter('divert_stats', 0);
      packets += c.packets;
      bytes += c.bytes;
    }
    return { packets, bytes };
  }

  openControllerChannel(onFrame: (f: DivertedFrame) => void): ControllerChannel {
    const received = new Map<string, bigint>();
    const listeners = [...this.#switches.values()].map((sw) => {
      received.set(sw.spec.name, 0n);
      const l = (p: { payload: Buffer; metadata: Record<string, bigint> }): void => {
        received.set(sw.spec.name, received.get(sw.spec.name)! + 1n);
        onFrame({ switch: sw.spec.name, handoverId: Number((p.metadata['hid'] ?? 0n) & 0x3fffn), frame: p.payload });
      };
      sw.client.on('packet-in', l);
      return { sw, l };
    });
    // frames the switches had sent the controller before: not this channel's
    const before = Promise.all(listeners.map(async ({ sw }) => [sw.spec.name, (await sw.client.readCounter('divert_stats', 0)).packets] as const));
    return {
      // Packet-ins travel on the P4Runtime stream: wait until every frame the
      // switches counted as sent to the controller has arrived.
      drain: async (timeoutMs = 5000) => {
        const base = new Map(await before);
        const deadline = performance.now() + timeoutMs;
        for (const { sw } of listeners) {
          const sent = (await sw.client.readCounter('divert_stats', 0)).packets - base.get(sw.spec.name)!;
          while (received.get(sw.spec.name)! < sent) {
            if (performance.now() > deadline)
              throw new DataPlaneError(`switch ${sw.spec.name}: ${sent - received.get(sw.spec.name)!} diverted frames did not reach the controller within ${timeoutMs} ms`);
            await sleep(1);
          }
        }
      },
      close: () => listeners.forEach(({ sw, l }) => sw.client.off('packet-in', l)),
    };
  }

  async sendFromController(swName: string, port: string, frames: readonly Buffer[]): Promise<void> {
    const sw = this.#switch(swName);
    const slot = this.#slot(sw, port);
    const before = (await sw.client.readCounter('packet_out_tx', 0)).packets;
    // one ordered stream; yield now and then so BMv2's CPU-port queue keeps up
    for (let i = 0; i < frames.length; i++) {
      sw.client.sendPacketOut(frames[i]!, { out_slot: slot });
      if (i % 32 === 31) await sleep(1);
    }
    // Packet-outs cross BMv2's queues: return once all of them have left the
    // port, so that what the engine does next (release B's ring) comes after.
    const deadline = performance.now() + 5000 + frames.length;
    for (;;) {
      const sent = (await sw.client.readCounter('packet_out_tx', 0)).packets - before;
      if (sent >= BigInt(frames.length)) return;
      if (performance.now() > deadline) throw new DataPlaneError(`switch ${swName}: ${sent} of ${frames.length} controller frames left port ${port} before the timeout`);
      await sleep(2);
    }
  }

  // ------------------------------------------------------------ BMv2-specific (labs and tests)

  /** The P4Runtime client of a switch (tests read tables and counters through it). */
  client(sw: string): P4RuntimeClient {
    return this.#switch(sw).client;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#agents?.close();
    this.#agents = undefined;
    for (const s of this.#switches.values()) {
      for (const l of s.passLinks) l.close();
      s.pass?.close();
      s.client.close();
    }
    this.#switches.clear();
  }
}
