// The Health of a node in front of a FakeDeployment: its switches (every
// instance's port, s1 on side 0, s2 on side 1) and/or its instances.
import { NODE_API, type NodeHealth } from '../../src/node/api.js';
import type { FakeDeployment } from './fake-deployment.js';

export function fakeNodeHealth(d: FakeDeployment, node: string, o: { switches: boolean; instances: boolean; quiescenceMs?: number }): NodeHealth {
  const sc = d.switchControl;
  const instances = d.agentControl.agentInstances();
  return {
    node,
    api: NODE_API,
    version: 'test',
    pid: process.pid,
    startedAt: Date.now(),
    adopted: false,
    quiescenceMs: o.quiescenceMs ?? sc.quiescenceMs,
    switches: o.switches ? sc.switches().map((s) => ({ name: s, ports: instances.map((i) => ({ name: sc.portTowards(s, i.name)!, ifname: `${s}${i.name}`, role: 'vnf' as const, instance: i.name, instanceSide: s === 's1' ? 0 : 1 })) })) : [],
    instances: o.instances ? instances.map((i) => ({ name: i.name, kind: 'counter', ifaces: [`${i.name}a`, `${i.name}b`], ringCapacity: i.ringCapacity, ringCount: i.ringCount })) : [],
  };
}
