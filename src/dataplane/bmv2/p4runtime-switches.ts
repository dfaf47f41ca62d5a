/**
 * Switch control over P4Runtime: switches running p4/sharp.p4 (BMv2's
 * simple_switch_grpc), driven as primary controller. It is the switch half of
 * the BMv2 lab's data plane (Bmv2DataPlane adds the agents) and, in a
 * deployment spec, a switch host next to the nodes (NodeDeployment routes
 * the switch calls of its switches here).
 *
 * Mapping onto the P4 program (see p4/sharp.p4):
 *   - exact rule      -> rules_exact entry whose action carries rule id,
 *                        out slot, hid, phase; setRuleAction = one MODIFY
 *   - wildcard rule   -> rules_wild ternary entry yielding the rule id, and
 *                        a rule_actions entry with the action; setRuleAction
 *                        = one MODIFY of rule_actions (all micro-flows at once)
 *   - counters        -> P4Runtime counter reads (BMv2 counts at egress)
 *   - quiescence      -> sched_tx, counted inside the rule actions, which
 *                        BMv2 runs under their table's read lock: once the
 *                        MODIFY of an action has returned, every frame that
 *                        read the old one is counted (sentTowardsInstances)
 *   - DIVERT          -> packet-in; sendFromController -> packet-out
 *   - rollback relay  -> a relays entry hid -> out slot: shim(RELAY, hid)
 *                        frames from a VNF port leave stripped towards the
 *                        old instance, wherever the agents are. With
 *                        relayAround, agents in the switch's kernel relay
 *                        straight out of its interface instead
 *                        (RELAY_DIRECT) and setRelay/clearRelay write nothing.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';
import { status as grpcStatus } from '@grpc/grpc-js';
import { P4Info, P4InfoError, P4RuntimeClient, P4RuntimeWriteError, type CounterValue, type DecodedTableEntry, type MatchSpec, type P4RuntimeTlsOptions, type P4Update, type TableEntrySpec } from '../../p4runtime/index.js';
import { SHARP_PORT_HOST, SHARP_PORT_VNF, SHARP_HID_MIN, SHARP_HID_MAX, SHARP_MAX_WILD_RULES, SHARP_DEFAULT_MAX_RULES } from '../../generated/abi.js';
import { ipv4Number, ipv4String } from '../../net/frame.js';
import { sleep } from '../../util/mutex.js';
import {
  DataPlaneError,
  RuleError,
  Phase,
  parsePrefix,
  type ControllerPacketPath,
  type Counter,
  type DivertedFrame,
  type ControllerChannel,
  type FlowKey,
  type HandoverMarkCounters,
  type PortCounters,
  type Rule,
  type RuleAction,
  type RuleMatch,
  type SentTowards,
  type PortInput,
  type SwitchControl,
  type WildcardMatch,
} from '../types.js';
import type { P4RuntimeSwitch, P4RuntimeSwitchPort, PipelineMode } from './topology.js';

export interface P4RuntimeSwitchesOptions {
  /** P4Info of p4/sharp.p4 in protobuf JSON (P4_ARTIFACTS.p4info) */
  p4infoPath: string;
  /** the BMv2 JSON of p4/sharp.p4 (P4_ARTIFACTS.bmv2Json) */
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
}

/** A switch that does not run our pipeline while `pipeline: existing` requires it; the switch is left as it was. */
export class PipelineMismatchError extends DataPlaneError {
  override name = 'PipelineMismatchError';
  constructor(
    readonly switchName: string,
    readonly found: string,
    options?: ErrorOptions,
  ) {
    super(`switch ${switchName}: pipeline: existing needs it to run p4/sharp.p4 (the committed p4/build artifacts), but it runs ${found}; use pipeline: push to install ours (it empties the switch's tables)`, options);
  }
}

/**
 * A switch and how to take it over; electionId overrides the options';
 * tls: reach it over TLS (mutual with a client certificate), else plaintext.
 * relayAround: the agents of the instances behind it relay around it
 * (their nodes' directRelay, same kernel only), so the switch's relays
 * table is not written.
 */
export type SwitchToConnect = P4RuntimeSwitch & { pipeline: PipelineMode; electionId?: bigint; relayAround?: boolean; tls?: P4RuntimeTlsOptions; arrivals?: PortArrivals; inputDrops?: PortInputDrops };

/**
 * Per port name, the frames its interface has received: the kernel's rx
 * count on the host the switch runs on, read by whatever runs there (the
 * lab's daemon, a node). With it the switch says what its input buffer
 * still holds or dropped (inputShortfall); undefined: unreadable now.
 */
export type PortArrivals = () => Promise<Map<string, bigint> | undefined>;

/**
 * Per port name, the frames its input buffer dropped so far, exactly: BMv2's
 * libpcap rings' own drop counts (PACKET_STATISTICS), read where its process
 * is known (the lab that started it). With it the switch tells what its
 * buffers dropped from what they still hold.
 */
export type PortInputDrops = () => Promise<Map<string, bigint> | undefined>;

interface ConnectedSwitch {
  spec: P4RuntimeSwitch;
  relayAround: boolean;
  client: P4RuntimeClient;
  /** port name -> slot */
  slots: Map<string, number>;
  /** set when another controller took over: every later call fails with it */
  lostPrimacy?: string;
  arrivals?: PortArrivals;
  inputDrops?: PortInputDrops;
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

/** The cookie we install our pipeline with: the first 8 bytes of SHA-256 over the P4Info and the device config, so another compile has another cookie. */
export function pipelineCookie(p4info: Buffer, deviceConfig: Buffer): bigint {
  return createHash('sha256').update(p4info).update(deviceConfig).digest().readBigUInt64BE(0) || 1n;
}

const hex = (c: bigint): string => `0x${c.toString(16).padStart(16, '0')}`;

/** What a switch runs, in words, when it is not our pipeline; undefined when it is. */
export function pipelineMismatch(found: { p4info?: P4Info; cookie?: bigint } | undefined, ours: { p4info: P4Info; cookie: bigint }): string | undefined {
  if (found?.p4info === undefined) return 'no pipeline';
  if (!isDeepStrictEqual(found.p4info.toMessage(), ours.p4info.toMessage())) {
    const tables = found.p4info.tables.all.map((t) => t.name);
    return `another program (P4Info tables: ${tables.length === 0 ? 'none' : tables.slice(0, 6).join(', ') + (tables.length > 6 ? `, … ${tables.length} in all` : '')}${found.cookie === undefined ? '' : `; cookie ${hex(found.cookie)}`})`;
  }
  // same P4Info: the cookie tells our compile from another one (no cookie: set by a tool that sets none; the P4Info is all we can compare)
  if (found.cookie !== undefined && found.cookie !== ours.cookie) return `p4/sharp.p4's P4Info with cookie ${hex(found.cookie)}, not ours (${hex(ours.cookie)}): another compile of the device config`;
  return undefined;
}

const prefixLen = (mask: bigint): number => mask.toString(2).replace(/0+$/, '').length * (mask === 0n ? 0 : 1);

export class P4RuntimeSwitches implements SwitchControl, ControllerPacketPath {
  readonly quiescenceMs: number;
  readonly #switches = new Map<string, ConnectedSwitch>();
  readonly #rules = new Map<number, Rule>();
  #nextRuleId = 1;
  #closed = false;

  private constructor(o: P4RuntimeSwitchesOptions) {
    this.quiescenceMs = o.quiescenceMs ?? 50;
  }

  /**
   * Connects to every switch as primary controller and, per its mode,
   * installs our pipeline or checks that it runs it (adopting the rules its
   * tables hold), then writes the port tables. On failure nothing stays
   * connected; a switch refused by the check is left untouched.
   */
  static async connect(switches: readonly SwitchToConnect[], o: P4RuntimeSwitchesOptions): Promise<P4RuntimeSwitches> {
    const s = new P4RuntimeSwitches(o);
    try {
      const p4infoBytes = readFileSync(o.p4infoPath);
      const config = readFileSync(o.deviceConfigPath);
      const ours = { p4info: P4Info.load(o.p4infoPath), config, cookie: pipelineCookie(p4infoBytes, config) };
      for (const sw of switches) await s.#connect(sw, ours, o);
    } catch (e) {
      s.close();
      throw e;
    }
    return s;
  }

  async #connect(spec: SwitchToConnect, ours: { p4info: P4Info; config: Buffer; cookie: bigint }, o: P4RuntimeSwitchesOptions): Promise<void> {
    if (this.#switches.has(spec.name)) throw new DataPlaneError(`switch ${spec.name} twice`);
    const client = await P4RuntimeClient.connect({
      address: spec.grpcAddress,
      deviceId: spec.deviceId,
      ...((spec.electionId ?? o.electionId) === undefined ? {} : { electionId: spec.electionId ?? o.electionId! }),
      ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }),
      ...(spec.tls === undefined ? {} : { tls: spec.tls }),
    });
    const sw: ConnectedSwitch = { spec: { name: spec.name, grpcAddress: spec.grpcAddress, deviceId: spec.deviceId, ports: spec.ports }, relayAround: spec.relayAround === true, client, slots: new Map(), ...(spec.arrivals === undefined ? {} : { arrivals: spec.arrivals }), ...(spec.inputDrops === undefined ? {} : { inputDrops: spec.inputDrops }) };
    this.#switches.set(spec.name, sw);
    client.on('primacy-lost', (p) => {
      sw.lostPrimacy = `controller with election id ${p.primaryElectionId ?? '?'} took switch ${spec.name} over`;
    });
    client.on('error', () => undefined); // kept in client.lastError; calls fail with their own errors
    spec.ports.forEach((p, slot) => sw.slots.set(p.name, slot));
    if (spec.pipeline === 'push') await client.setPipeline(ours.p4info, ours.config, { cookie: ours.cookie });
    else {
      let mismatch: string | undefined;
      try {
        mismatch = pipelineMismatch(await client.getPipeline('P4INFO_AND_COOKIE'), ours);
      } catch (e) {
        if (!(e instanceof P4InfoError)) throw e;
        mismatch = `another program (its P4Info: ${e.message})`;
      }
      if (mismatch !== undefined) throw new PipelineMismatchError(spec.name, mismatch);
      // names of the running pipeline: ours (checked equal above)
      client.p4info = ours.p4info;
    }
    await this.#writePorts(sw, spec.pipeline === 'push' ? undefined : await Promise.all([client.readEntries('port_info'), client.readEntries('tx_port')]).then((x) => x.flat()));
    if (spec.pipeline === 'existing') await this.#adoptRules(sw);
  }

  /** The port tables: inserted after a push; completed (missing entries inserted, differing ones modified) on an existing pipeline. */
  async #writePorts(sw: ConnectedSwitch, present: DecodedTableEntry[] | undefined): Promise<void> {
    const wanted: TableEntrySpec[] = sw.spec.ports.flatMap((p, slot) => [
      { table: 'port_info', match: { port: { exact: p.bmv2Port } }, action: { name: 'set_port', params: { slot, role: p.role === 'host' ? SHARP_PORT_HOST : SHARP_PORT_VNF } } },
      { table: 'tx_port', match: { slot: { exact: slot } }, action: { name: 'set_tx', params: { port: p.bmv2Port } } },
    ]);
    const key = (table: string, m: Record<string, unknown>): string => `${table.replace(/^.*\./, '')} ${JSON.stringify(m, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))}`;
    const have = new Map((present ?? []).map((e) => [key(e.table, e.match), e]));
    const updates = wanted.flatMap((w): P4Update[] => {
      const h = have.get(key(w.table, w.match ?? {}));
      if (h === undefined) return [{ type: 'INSERT', tableEntry: w }];
      const same = h.action?.name.replace(/^.*\./, '') === w.action!.name && Object.entries(w.action!.params ?? {}).every(([k, v]) => h.action?.params[k] === BigInt(v as number));
      return same ? [] : [{ type: 'MODIFY', tableEntry: w }];
    });
    await sw.client.write(updates);
  }

  /** The rules an existing pipeline's tables hold, as this control's own (ids, matches, actions as written by a controller before). */
  async #adoptRules(sw: ConnectedSwitch): Promise<void> {
    const portOf = (slot: bigint): string => {
      const p = sw.spec.ports[Number(slot)];
      if (p === undefined) throw new DataPlaneError(`switch ${sw.spec.name}: a rule on the switch uses slot ${slot}, which none of its ${sw.spec.ports.length} ports in the spec has`);
      return p.name;
    };
    const actionOf = (params: Record<string, bigint>): RuleAction => ({ outPort: portOf(params['out_slot'] ?? 0n), phase: Number(params['phase'] ?? 0n) as Phase, handoverId: Number(params['hid'] ?? 0n) });
    const [exact, wild, actions] = await Promise.all(['rules_exact', 'rules_wild', 'rule_actions'].map((t) => sw.client.readEntries(t)));
    const adopt = (id: number, match: RuleMatch, action: RuleAction): void => {
      if (this.#rules.has(id)) throw new DataPlaneError(`switch ${sw.spec.name} holds rule ${id}, which another switch holds too`);
      this.#rules.set(id, { id, switch: sw.spec.name, match, action });
      this.#nextRuleId = Math.max(this.#nextRuleId, id + 1);
    };
    const num = (m: DecodedTableEntry['match'][string] | undefined): bigint => (m !== undefined && 'exact' in m ? m.exact : 0n);
    for (const e of exact!) {
      const flow: FlowKey = { src: ipv4String(Number(num(e.match['saddr']))), dst: ipv4String(Number(num(e.match['daddr']))), proto: Number(num(e.match['proto'])), sport: Number(num(e.match['sport'])), dport: Number(num(e.match['dport'])) };
      adopt(Number(e.action!.params['rule_id']), { kind: 'exact', flow }, actionOf(e.action!.params));
    }
    const actionById = new Map(actions!.map((a) => [Number(num(a.match['rule_id'])), a.action!.params]));
    for (const e of wild!) {
      const id = Number(e.action!.params['rule_id']);
      const t = (f: string): { value: bigint; mask: bigint } | undefined => {
        const m = e.match[f];
        return m !== undefined && 'ternary' in m ? m.ternary : undefined;
      };
      const prefix = (f: string): string | undefined => {
        const m = t(f);
        return m === undefined ? undefined : `${ipv4String(Number(m.value))}/${prefixLen(m.mask)}`;
      };
      const params = actionById.get(id);
      if (params === undefined) throw new DataPlaneError(`switch ${sw.spec.name}: wildcard rule ${id} has no rule_actions entry`);
      const m: WildcardMatch = { kind: 'wildcard', priority: Math.floor(e.priority / SHARP_DEFAULT_MAX_RULES) - 1 };
      const [src, dst] = [prefix('saddr'), prefix('daddr')];
      if (src !== undefined) m.src = src;
      if (dst !== undefined) m.dst = dst;
      for (const f of ['proto', 'sport', 'dport'] as const) if (t(f) !== undefined) m[f] = Number(t(f)!.value);
      if (t('in_slot') !== undefined) m.inPort = portOf(t('in_slot')!.value);
      adopt(id, m, actionOf(params));
    }
  }

  // ------------------------------------------------------------ topology

  switches(): string[] {
    return [...this.#switches.keys()];
  }

  portTowards(sw: string, instance: string): string | undefined {
    return this.#switches.get(sw)?.spec.ports.find((p) => p.instance === instance)?.name;
  }

  /** A switch's ports as the spec gave them. */
  switchPorts(sw: string): readonly P4RuntimeSwitchPort[] {
    return this.#switch(sw).spec.ports;
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
    const [rx, tx, noRule, shim, nonIp, malformed, badAction, noTx, relayed] = await Promise.all(
      ['port_rx', 'port_tx', 'drop_no_rule', 'drop_shim', 'drop_non_ip', 'drop_malformed', 'drop_bad_action', 'drop_no_tx', 'relayed'].map(read),
    );
    // after port_rx (see inputShortfall)
    const arrived = await sw.arrivals?.();
    const dropped = await sw.inputDrops?.();
    const zero: CounterValue = { packets: 0n, bytes: 0n };
    return sw.spec.ports.map((p) => {
      const slot = sw.slots.get(p.name)!;
      const at = (m: Map<number, CounterValue> | undefined): CounterValue => m?.get(slot) ?? zero;
      const a = arrived?.get(p.name);
      const d = dropped?.get(p.name);
      return {
        // exact where the rings' own drop counts are read; else what the port received and the switch did not (yet) take in
        ...(d !== undefined ? { notIngested: d, notIngestedExact: true } : a === undefined ? {} : { notIngested: a - at(rx).packets }),
        port: p.name,
        packets: at(rx).packets,
        bytes: at(rx).bytes,
        txPackets: at(tx).packets,
        txBytes: at(tx).bytes,
        dropNoRule: at(noRule).packets,
        dropShim: at(shim).packets,
        // non-IPv4 frames: XDP hands them to the kernel, BMv2 has no stack to hand them to
        dropOther: at(nonIp).packets + at(malformed).packets + at(badAction).packets + at(noTx).packets,
        // zero where the agents relay around the switch (relayAround)
        relayed: at(relayed).packets,
        // BMv2 drops inside its own queues, which P4Runtime does not count
        xmitFailed: 0n,
        redirectFailed: 0n,
      };
    });
  }

  /** port_rx of each port facing an instance: what BMv2 has taken in from it (its libpcap ring drops silently what it did not) */
  async ingestedFromInstances(swName: string): Promise<SentTowards[]> {
    return this.#perInstancePort(swName, 'port_rx');
  }

  /** whether portCounters' notIngested of `swName` are its rings' own drop counts (inputDrops given) */
  countsInputDrops(swName: string): boolean {
    return this.#switch(swName).inputDrops !== undefined;
  }

  /**
   * Per port: its interface's rx count minus port_rx, port_rx read first (a
   * frame arriving in between counts as not yet taken in, never as taken in
   * unseen). Both count from their own start (the kernel's from the
   * interface's creation, port_rx from the pipeline's), so a reading holds an
   * offset that a difference of two cancels. Where the rings' drops are read
   * too (inputDrops), those are taken out: what the buffer holds, exactly.
   * Undefined where nothing reads the switch's host.
   */
  async inputShortfall(swName: string): Promise<Map<string, PortInput> | undefined> {
    const sw = this.#switch(swName);
    if (sw.arrivals === undefined) return undefined;
    const rx = await sw.client.readCounters('port_rx');
    const arrived = await sw.arrivals();
    if (arrived === undefined) return undefined;
    const dropped = await sw.inputDrops?.();
    return new Map(sw.spec.ports.flatMap((p): [string, PortInput][] => {
      const a = arrived.get(p.name);
      const ingested = rx.get(sw.slots.get(p.name)!)?.packets ?? 0n;
      return a === undefined ? [] : [[p.name, { waiting: a - ingested - (dropped?.get(p.name) ?? 0n), ingested }]];
    }));
  }

  /** A per-slot packet counter of a switch, at each port facing an instance. */
  async #perInstancePort(swName: string, counter: 'port_rx' | 'sched_tx'): Promise<SentTowards[]> {
    const sw = this.#switch(swName);
    const c = await sw.client.readCounters(counter);
    return sw.spec.ports.flatMap((p) => (p.role === 'vnf' && p.instance !== undefined ? [{ port: p.name, instance: p.instance, side: p.instanceSide ?? 0, frames: c.get(sw.slots.get(p.name)!)?.packets ?? 0n }] : []));
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
   * The route of a rollback's relayed frames: a relays entry hid -> the
   * slot of outPort (written again if one is there: a recovered
   * controller's second try). Where the agents relay around the switch
   * (relayAround) nothing is written.
   */
  async setRelay(swName: string, hid: number, outPort: string): Promise<void> {
    const sw = this.#switch(swName);
    const slot = this.#slot(sw, outPort);
    if (!Number.isInteger(hid) || hid < SHARP_HID_MIN || hid > SHARP_HID_MAX) throw new RuleError(`handover id ${hid} out of range ${SHARP_HID_MIN}..${SHARP_HID_MAX}`);
    if (sw.relayAround) return;
    const entry: TableEntrySpec = { table: 'relays', match: { hid: { exact: hid } }, action: { name: 'relay_to', params: { out_slot: slot } } };
    try {
      await sw.client.insertEntry(entry);
    } catch (e) {
      if (!(e instanceof P4RuntimeWriteError && e.updates.some((u) => u.code === grpcStatus.ALREADY_EXISTS))) throw e;
      await sw.client.write([{ type: 'MODIFY', tableEntry: entry }]);
    }
  }

  /** Removes the route; none there (never set, or removed already) is not an error. */
  async clearRelay(swName: string, hid: number): Promise<void> {
    const sw = this.#switch(swName);
    if (sw.relayAround) return;
    try {
      await sw.client.write([{ type: 'DELETE', tableEntry: { table: 'relays', match: { hid: { exact: hid } } } }]);
    } catch (e) {
      if (!(e instanceof P4RuntimeWriteError && e.updates.every((u) => u.code === grpcStatus.NOT_FOUND))) throw e;
    }
  }

  /**
   * The switch half of the exact quiescence event. No barrier is needed:
   * BMv2 runs an action under its table's read lock, and sched_tx is
   * counted inside the rule actions, so every frame that read an action
   * replaced before this call is in the count (DIVERT actions count apart:
   * their frames go to the controller).
   */
  async sentTowardsInstances(swName: string): Promise<SentTowards[]> {
    return this.#perInstancePort(swName, 'sched_tx');
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

  /** The P4Runtime client of a switch (tests read tables and counters through it). */
  client(sw: string): P4RuntimeClient {
    return this.#switch(sw).client;
  }

  /** Closes the P4Runtime connections; the switches keep their pipeline and tables. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#switches.values()) s.client.close();
    this.#switches.clear();
  }
}
