/**
 * The DataPlane over BMv2 in one process (the Mininet lab in-process): the
 * switches run p4/sharp.p4 in simple_switch_grpc and are driven over
 * P4Runtime (P4RuntimeSwitches); the VNF instances carry the same XDP agents
 * and example VNF as in the XDP data plane (XdpAgentSet), which relay
 * around the P4 switch on rollbacks (RELAY_DIRECT: p4/sharp.p4 cannot
 * relay; see p4runtime-switches.ts).
 */
import path from 'node:path';
import { BpfObjectSpec, type BpfCollection, type XdpLink } from '../../bpf/index.js';
import type { P4RuntimeClient } from '../../p4runtime/index.js';
import { XdpAgentSet } from '../xdp/agents.js';
import { AgentBackedDataPlane } from '../agent-backed.js';
import { DataPlaneError, type Counter, type DataPlane, type HandoverMarkCounters, type PortCounters, type ControllerChannel, type DivertedFrame, type Rule, type RuleAction, type SentTowards, type PortInput } from '../types.js';
import { SwitchPortArrivals } from './port-arrivals.js';
import { P4RuntimeSwitches, type P4RuntimeSwitchesOptions } from './p4runtime-switches.js';
import type { Bmv2Topology, PipelineMode } from './topology.js';

export { p4rtPriority, wildMatch, exactMatch } from './p4runtime-switches.js';

export interface Bmv2DataPlaneOptions extends P4RuntimeSwitchesOptions {
  /** folder with the compiled agent/vnf objects */
  objectsDir: string;
  /** default push */
  pipeline?: PipelineMode;
  xdpMode?: 'native' | 'generic';
}

/**
 * xdp_pass on every port of the switches: lets XDP (the agents' transmits
 * and relays) redirect frames into the switches' veths, which take XDP
 * frames only with a program of their own. Same kernel only: lab plumbing.
 */
export class SwitchVethPass {
  readonly #pass: BpfCollection;
  readonly #links: XdpLink[] = [];

  constructor(topology: Pick<Bmv2Topology, 'switches'>, o: { objectsDir: string; xdpMode?: 'native' | 'generic' }) {
    this.#pass = BpfObjectSpec.open(path.join(o.objectsDir, 'pass.bpf.o')).load();
    try {
      for (const s of topology.switches) for (const p of s.ports) this.#links.push(this.#pass.program('xdp_pass').attachXdp(p.ifname, { netns: s.netns, mode: o.xdpMode ?? 'native' }));
    } catch (e) {
      this.close();
      throw e;
    }
  }

  close(): void {
    for (const l of this.#links.splice(0)) l.close();
    this.#pass.close();
  }
}

export class Bmv2DataPlane extends AgentBackedDataPlane implements DataPlane {
  readonly kind = 'bmv2';
  #switches: P4RuntimeSwitches | undefined;
  #pass: SwitchVethPass | undefined;
  #arrivals: SwitchPortArrivals | undefined;
  #agents: XdpAgentSet | undefined;
  #closed = false;

  private constructor() {
    super();
  }

  /**
   * Connects to every switch as primary controller, loads (or checks) the
   * pipeline, writes the port tables, and loads the agents; on failure
   * nothing stays.
   */
  static async create(topology: Bmv2Topology, o: Bmv2DataPlaneOptions): Promise<Bmv2DataPlane> {
    const dp = new Bmv2DataPlane();
    try {
      const arrivals = (dp.#arrivals = new SwitchPortArrivals(topology));
      dp.#switches = await P4RuntimeSwitches.connect(
        topology.switches.map((s) => ({ ...s, pipeline: o.pipeline ?? 'push', relayAround: true, ...arrivals.readers(s) })),
        o,
      );
      dp.#pass = new SwitchVethPass(topology, o);
      dp.#agents = XdpAgentSet.load(topology.instances, {
        objectsDir: o.objectsDir,
        // the P4 switch cannot relay (see p4runtime-switches.ts): the agents go around it
        directRelay: topology.switches,
        ...(o.xdpMode === undefined ? {} : { xdpMode: o.xdpMode }),
      });
    } catch (e) {
      await dp.close();
      throw e;
    }
    return dp;
  }

  get #sw(): P4RuntimeSwitches {
    if (this.#switches === undefined) throw new DataPlaneError('the BMv2 data plane is closed');
    return this.#switches;
  }

  get quiescenceMs(): number {
    return this.#sw.quiescenceMs;
  }

  protected agentSet(): XdpAgentSet {
    if (this.#agents === undefined) throw new DataPlaneError('the BMv2 data plane is closed');
    return this.#agents;
  }

  // the switch half: P4RuntimeSwitches
  switches(): string[] {
    return this.#sw.switches();
  }
  portTowards(sw: string, instance: string): string | undefined {
    return this.#sw.portTowards(sw, instance);
  }
  addRule(r: Omit<Rule, 'id'> & { id?: number }): Promise<Rule> {
    return this.#sw.addRule(r);
  }
  deleteRule(id: number): Promise<void> {
    return this.#sw.deleteRule(id);
  }
  getRule(id: number): Rule | undefined {
    return this.#sw.getRule(id);
  }
  rules(): Rule[] {
    return this.#sw.rules();
  }
  setRuleAction(id: number, action: RuleAction): Promise<void> {
    return this.#sw.setRuleAction(id, action);
  }
  ruleCounters(id: number): Promise<Counter> {
    return this.#sw.ruleCounters(id);
  }
  portCounters(sw: string): Promise<PortCounters[]> {
    return this.#sw.portCounters(sw);
  }
  ingestedFromInstances(sw: string): Promise<SentTowards[]> {
    return this.#sw.ingestedFromInstances(sw);
  }
  inputShortfall(sw: string): Promise<Map<string, PortInput> | undefined> {
    return this.#sw.inputShortfall(sw);
  }
  countsInputDrops(sw: string): boolean {
    return this.#sw.countsInputDrops(sw);
  }
  handoverCounters(sw: string, hid: number): Promise<HandoverMarkCounters> {
    return this.#sw.handoverCounters(sw, hid);
  }
  resetHandoverCounters(sw: string, hid: number): Promise<void> {
    return this.#sw.resetHandoverCounters(sw, hid);
  }
  setRelay(sw: string, hid: number, outPort: string): Promise<void> {
    return this.#sw.setRelay(sw, hid, outPort);
  }
  clearRelay(sw: string, hid: number): Promise<void> {
    return this.#sw.clearRelay(sw, hid);
  }
  controllerDataPackets(): Promise<{ packets: bigint; bytes: bigint }> {
    return this.#sw.controllerDataPackets();
  }
  openControllerChannel(onFrame: (f: DivertedFrame) => void): ControllerChannel {
    return this.#sw.openControllerChannel(onFrame);
  }
  sendFromController(sw: string, port: string, frames: readonly Buffer[]): Promise<void> {
    return this.#sw.sendFromController(sw, port, frames);
  }

  /** The P4Runtime client of a switch (tests read tables and counters through it). */
  client(sw: string): P4RuntimeClient {
    return this.#sw.client(sw);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#agents?.close();
    this.#agents = undefined;
    this.#pass?.close();
    this.#pass = undefined;
    this.#switches?.close();
    this.#switches = undefined;
    this.#arrivals?.close();
    this.#arrivals = undefined;
  }
}
