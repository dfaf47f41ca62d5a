/**
 * The instance half of the DataPlane contract, the same for every switch
 * kind: the instances run XDP agents and the example VNF (XdpAgentSet).
 * A data plane supplies its switches; this supplies the rest.
 */
import type { XdpAgentSet } from './xdp/agents.js';
import { instancesOf, type AgentHandoverStatus, type AgentInstanceInfo, type FlowKey, type FlowSelection, type FlowStateEntry, type InstanceInfo, type InterfaceDrops, type ReleaseOptions, type ReleaseResult } from './types.js';

export abstract class AgentBackedDataPlane {
  /** the agents of the instances (throws once the data plane is closed) */
  protected abstract agentSet(): XdpAgentSet;
  abstract switches(): string[];
  abstract portTowards(sw: string, instance: string): string | undefined;

  agentInstances(): AgentInstanceInfo[] {
    const agents = this.agentSet();
    return agents.names().map((name) => {
      const spec = agents.spec(name);
      return { name, ringCapacity: spec.ringCapacity, ringCount: spec.ringCount };
    });
  }

  instances(): InstanceInfo[] {
    return instancesOf({ switchControl: this, agentControl: this });
  }

  checkAgent(name: string): Promise<void> {
    return this.agentSet().checkAgent(name);
  }

  armOld(name: string, hid: number): Promise<void> {
    return this.agentSet().armOld(name, hid);
  }

  armNew(name: string, hid: number, ring: number): Promise<void> {
    return this.agentSet().armNew(name, hid, ring);
  }

  agentStatus(name: string, hid: number): Promise<AgentHandoverStatus | undefined> {
    return this.agentSet().agentStatus(name, hid);
  }

  arrivedFrames(name: string): Promise<[bigint, bigint] | undefined> {
    return this.agentSet().arrivedFrames(name);
  }

  release(name: string, hid: number, options: ReleaseOptions = {}): Promise<ReleaseResult> {
    return this.agentSet().release(name, hid, options);
  }

  disarm(name: string, hid: number): Promise<void> {
    return this.agentSet().disarm(name, hid);
  }

  interfaceDrops(name: string): Promise<InterfaceDrops[]> {
    return this.agentSet().interfaceDrops(name);
  }

  exportState(name: string, select: FlowSelection): Promise<FlowStateEntry[]> {
    return this.agentSet().exportState(name, select);
  }

  importState(name: string, entries: readonly FlowStateEntry[]): Promise<void> {
    return this.agentSet().importState(name, entries);
  }

  deleteState(name: string, flows: readonly FlowKey[]): Promise<void> {
    return this.agentSet().deleteState(name, flows);
  }

  /** Detaches an instance's agent from its interfaces (as if it had crashed). */
  detachAgent(name: string): void {
    this.agentSet().detach(name);
  }
}
