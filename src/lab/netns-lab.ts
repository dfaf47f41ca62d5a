/**
 * Builds a lab in network namespaces: client — s1 — {vnf1..vnfN} — s2 — server.
 * Switches and VNF instances are namespaces whose veth ends carry the XDP
 * programs; hosts are namespaces with one interface each. Every namespace
 * name starts with the lab's prefix, so leftovers of a crashed run are found
 * and removed by prefix.
 */
import { createNetns, createVeth, deleteNetns, listNetns, ethtoolFeatures, addNeighbor, inNetns } from '../net/iproute.js';
import type { XdpTopology } from '../dataplane/xdp/topology.js';

export interface LabHost {
  name: string;
  netns: string;
  ifname: string;
  ip: string;
  mac: string;
}

export interface NetnsLab {
  prefix: string;
  client: LabHost;
  server: LabHost;
  topology: XdpTopology;
  namespaces: string[];
}

export interface NetnsLabOptions {
  /** namespace name prefix, e.g. "sharp-lab-" */
  prefix: string;
  instances?: number;
  ringCapacity?: number;
  ringCount?: number;
  mtu?: number;
}

/** Removes every namespace whose name starts with `prefix`. */
export function destroyLab(prefix: string): string[] {
  const gone = listNetns(prefix);
  for (const ns of gone) deleteNetns(ns);
  return gone;
}

export function createNetnsLab(o: NetnsLabOptions): NetnsLab {
  const n = o.instances ?? 2;
  const ns = (role: string): string => `${o.prefix}${role}`;
  const names = ['client', 'server', 's1', 's2', ...Array.from({ length: n }, (_, i) => `vnf${i + 1}`)];
  const created: string[] = [];
  try {
    for (const r of names) {
      createNetns(ns(r));
      created.push(ns(r));
      // no IPv6 autoconfiguration chatter: every frame on the lab's links is ours
      inNetns(ns(r), 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    const client: LabHost = { name: 'client', netns: ns('client'), ifname: 'eth0', ip: '10.0.0.1', mac: '02:00:0a:00:00:01' };
    const server: LabHost = { name: 'server', netns: ns('server'), ifname: 'eth0', ip: '10.0.0.2', mac: '02:00:0a:00:00:02' };
    createVeth({ name: 'eth0', netns: client.netns, mac: client.mac, address: `${client.ip}/24` }, { name: 'p-client', netns: ns('s1') }, o.mtu);
    createVeth({ name: 'eth0', netns: server.netns, mac: server.mac, address: `${server.ip}/24` }, { name: 'p-server', netns: ns('s2') }, o.mtu);
    for (let i = 1; i <= n; i++) {
      const v = ns(`vnf${i}`);
      createVeth({ name: `p-vnf${i}`, netns: ns('s1') }, { name: 'eth0', netns: v }, o.mtu);
      createVeth({ name: 'eth1', netns: v }, { name: `p-vnf${i}`, netns: ns('s2') }, o.mtu);
    }
    for (const h of [client, server]) {
      // complete checksums on the wire: frames are replayed as new frames
      ethtoolFeatures(h.ifname, { tx: 'off' }, h.netns);
      // frames redirected into a veth need XDP or GRO on the receiving end
      ethtoolFeatures(h.ifname, { gro: 'on' }, h.netns);
    }
    addNeighbor(client.ifname, server.ip, server.mac, client.netns);
    addNeighbor(server.ifname, client.ip, client.mac, server.netns);
    const vnfs = Array.from({ length: n }, (_, i) => `vnf${i + 1}`);
    const topology: XdpTopology = {
      switches: [
        {
          name: 's1',
          netns: ns('s1'),
          ports: [{ name: 's1-client', ifname: 'p-client', role: 'host' }, ...vnfs.map((v) => ({ name: `s1-${v}`, ifname: `p-${v}`, role: 'vnf' as const, instance: v }))],
        },
        {
          name: 's2',
          netns: ns('s2'),
          ports: [{ name: 's2-server', ifname: 'p-server', role: 'host' }, ...vnfs.map((v) => ({ name: `s2-${v}`, ifname: `p-${v}`, role: 'vnf' as const, instance: v }))],
        },
      ],
      instances: vnfs.map((v) => ({ name: v, netns: ns(v), ifaces: ['eth0', 'eth1'], ringCapacity: o.ringCapacity ?? 4096, ringCount: o.ringCount ?? 4 })),
    };
    return { prefix: o.prefix, client, server, topology, namespaces: created };
  } catch (e) {
    for (const c of created) deleteNetns(c);
    throw e;
  }
}
