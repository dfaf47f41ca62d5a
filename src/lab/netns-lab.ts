/**
 * Builds a lab in network namespaces from a validated lab spec. Switches and
 * VNF instances are namespaces whose veth ends carry the XDP programs; hosts
 * are namespaces with one interface each. Every namespace name starts with
 * the lab's prefix, so leftovers of a crashed run are found and removed by
 * prefix.
 *
 * Interface names: in a switch, `p-<neighbour>`; in a VNF, eth0 (its first
 * link: side 0, towards the ingress switch) and eth1; in a host, eth0.
 */
import { createNetns, createVeth, deleteNetns, listNetns, ethtoolFeatures, addNeighbor, inNetns, ip } from '../net/iproute.js';
import type { XdpTopology, XdpSwitchPort } from '../dataplane/xdp/topology.js';
import { Phase, type Rule, type SwitchControl } from '../dataplane/types.js';
import type { LabSpec, RuleSpec, VnfType } from './spec/types.js';
import { DEFAULT_VNF_KIND, vnfKind } from '../node/vnf-kinds.js';
import { macFromIpv4 } from './spec/util.js';
import { ipv4Number } from '../net/frame.js';
import { execFileSync } from 'node:child_process';

function runWithInput(cmd: string, args: readonly string[], input: string): void {
  execFileSync(cmd, args, { input, stdio: ['pipe', 'ignore', 'pipe'] });
}

export interface LabHost {
  name: string;
  netns: string;
  ifname: string;
  ip: string;
  mac: string;
}

export interface NetnsLab {
  prefix: string;
  hosts: LabHost[];
  /** the first two hosts: where traffic starts and ends by default */
  client: LabHost;
  server: LabHost;
  topology: XdpTopology;
  namespaces: string[];
  spec: LabSpec;
}

export interface NetnsLabOptions {
  /** namespace name prefix, e.g. "sharp-lab-" */
  prefix: string;
  instances?: number;
  ringCapacity?: number;
  ringCount?: number;
  mtu?: number;
  /** the instances' VNF kind (default 'counter') */
  vnfType?: VnfType;
}

/** Removes every namespace whose name starts with `prefix`. */
export function destroyLab(prefix: string): string[] {
  const gone = listNetns(prefix);
  for (const ns of gone) deleteNetns(ns);
  return gone;
}

/** The standard lab client — s1 — {vnf1..vnfN} — s2 — server, traffic through vnf1. */
export function standardSpec(o: Omit<NetnsLabOptions, 'prefix'> = {}): LabSpec {
  const n = o.instances ?? 2;
  const vnfs = Array.from({ length: n }, (_, i) => `vnf${i + 1}`);
  const mtu = o.mtu ?? 1500;
  return {
    name: 'standard',
    target: 'xdp',
    // a userspace VNF's state is in its E-State node (the spec checker asks for it too)
    state: o.vnfType === 'userspace' ? 'estate' : 'vnf-map',
    hosts: [
      { name: 'client', ip: '10.0.0.1/24', mac: '02:00:0a:00:00:01' },
      { name: 'server', ip: '10.0.0.2/24', mac: '02:00:0a:00:00:02' },
    ],
    switches: [{ name: 's1' }, { name: 's2' }],
    vnfs: vnfs.map((name) => ({ name, type: o.vnfType ?? DEFAULT_VNF_KIND, ringCapacity: o.ringCapacity ?? 4096, ringCount: o.ringCount ?? 4 })),
    links: [
      { ends: ['client', 's1'], mtu },
      ...vnfs.map((v) => ({ ends: ['s1', v] as [string, string], mtu })),
      ...vnfs.map((v) => ({ ends: [v, 's2'] as [string, string], mtu })),
      { ends: ['s2', 'server'], mtu },
    ],
    rules: [
      { switch: 's1', match: { dst: '10.0.0.2/32', from: 'client' }, to: 'vnf1', priority: 1 },
      { switch: 's1', match: { dst: '10.0.0.1/32' }, to: 'client', priority: 1 },
      { switch: 's2', match: { dst: '10.0.0.1/32', from: 'server' }, to: 'vnf1', priority: 1 },
      { switch: 's2', match: { dst: '10.0.0.2/32' }, to: 'server', priority: 1 },
    ],
  };
}

/** The standard lab (see standardSpec), built in namespaces. */
export function createNetnsLab(o: NetnsLabOptions): NetnsLab {
  return createLabFromSpec(standardSpec(o), o.prefix);
}

/** One end of a planned link. */
export interface PlannedLinkEnd {
  node: string;
  netns: string;
  ifname: string;
  mac?: string;
  /** address with prefix length (hosts only) */
  address?: string;
}

/** What a lab is made of, whoever builds it (plain namespaces or Mininet). */
export interface LabPlan {
  nodes: { name: string; kind: 'host' | 'switch' | 'vnf'; netns: string }[];
  links: { ends: [PlannedLinkEnd, PlannedLinkEnd]; mtu: number }[];
  hosts: LabHost[];
  topology: XdpTopology;
}

/** Names every namespace and interface of a spec's lab (pure). */
export function planLab(spec: LabSpec, prefix: string): LabPlan {
  const ns = (node: string): string => `${prefix}${node}`;
  const kind = new Map<string, 'host' | 'switch' | 'vnf'>([
    ...spec.hosts.map((h) => [h.name, 'host'] as const),
    ...spec.switches.map((s) => [s.name, 'switch'] as const),
    ...spec.vnfs.map((v) => [v.name, 'vnf'] as const),
  ]);
  /** links of each VNF seen so far: its next link is that side */
  const vnfSides = new Map<string, number>();
  const ports = new Map<string, XdpSwitchPort[]>(spec.switches.map((s) => [s.name, []]));
  const hostIf = new Map<string, string>();
  const links: LabPlan['links'] = [];
  for (const link of spec.links) {
    const [a, b] = link.ends;
    const side = (node: string): number => (kind.get(node) === 'vnf' ? (vnfSides.get(node) ?? 0) : 0);
    const name = (node: string, other: string): string => (kind.get(node) === 'switch' ? `p-${other}` : kind.get(node) === 'host' ? 'eth0' : `eth${side(node)}`);
    const hostEnd = (node: string, ifname: string): { mac?: string; address?: string } => {
      const h = spec.hosts.find((x) => x.name === node);
      if (h === undefined) return {};
      hostIf.set(node, ifname);
      return { mac: h.mac, address: h.ip };
    };
    const ends = [
      { node: a, other: b, ifname: name(a, b), side: side(a) },
      { node: b, other: a, ifname: name(b, a), side: side(b) },
    ] as const;
    links.push({
      ends: [
        { node: a, netns: ns(a), ifname: ends[0].ifname, ...hostEnd(a, ends[0].ifname) },
        { node: b, netns: ns(b), ifname: ends[1].ifname, ...hostEnd(b, ends[1].ifname) },
      ],
      mtu: link.mtu,
    });
    for (const [i, e] of ends.entries()) {
      const far = ends[1 - i]!;
      if (kind.get(e.node) === 'vnf') vnfSides.set(e.node, e.side + 1);
      if (kind.get(e.node) === 'switch') {
        const farKind = kind.get(far.node);
        ports.get(e.node)!.push({
          name: `${e.node}-${far.node}`,
          ifname: e.ifname,
          role: farKind === 'host' ? 'host' : 'vnf',
          ...(farKind === 'vnf' ? { instance: far.node, instanceSide: far.side } : {}),
        });
      }
    }
  }
  return {
    nodes: [...kind.entries()].map(([name, k]) => ({ name, kind: k, netns: ns(name) })),
    links,
    hosts: spec.hosts.map((h) => ({ name: h.name, netns: ns(h.name), ifname: hostIf.get(h.name) ?? 'eth0', ip: h.ip.split('/')[0]!, mac: h.mac })),
    topology: {
      switches: spec.switches.map((s) => ({ name: s.name, netns: ns(s.name), ports: ports.get(s.name)!, ...(s.maxRules === undefined ? {} : { maxRules: s.maxRules }) })),
      instances: spec.vnfs.map((v) => ({
        name: v.name,
        netns: ns(v.name),
        ifaces: ['eth0', 'eth1'],
        ringCapacity: v.ringCapacity,
        ringCount: v.ringCount,
        ...(v.type === DEFAULT_VNF_KIND ? {} : { kind: v.type }),
        ...(v.vnfFlows === undefined ? {} : { vnfFlows: v.vnfFlows }),
      })),
    },
  };
}

/** Host interface settings every lab needs, once the namespaces and links exist. */
export function configureHosts(hosts: readonly LabHost[]): void {
  for (const h of hosts) {
    // complete checksums on the wire: frames are replayed as new frames
    ethtoolFeatures(h.ifname, { tx: 'off' }, h.netns);
    // frames redirected into a veth need XDP or GRO on the receiving end
    ethtoolFeatures(h.ifname, { gro: 'on' }, h.netns);
    for (const other of hosts) if (other !== h) addNeighbor(h.ifname, other.ip, other.mac, h.netns);
  }
}

/**
 * For every VNF instance whose kind runs on the stack ('linux'): which side
 * reaches each host. A host is behind side i when side i's switch reaches
 * the host's switch over switch-to-switch links only (not through a VNF).
 * Hosts behind neither side (or both) get no route.
 */
export function stackRoutes(spec: LabSpec, vnf: string): { host: LabSpec['hosts'][number]; side: 0 | 1 }[] {
  const switches = new Set(spec.switches.map((s) => s.name));
  const reach = (from: string): Set<string> => {
    const seen = new Set([from]);
    const todo = [from];
    while (todo.length) {
      const n = todo.pop()!;
      for (const l of spec.links) {
        const other = l.ends[0] === n ? l.ends[1] : l.ends[1] === n ? l.ends[0] : undefined;
        if (other === undefined || seen.has(other)) continue;
        seen.add(other);
        if (switches.has(other)) todo.push(other);
      }
    }
    return seen;
  };
  const sides = spec.links.filter((l) => l.ends.includes(vnf)).map((l) => (l.ends[0] === vnf ? l.ends[1] : l.ends[0]));
  if (sides.length !== 2) return [];
  const reached = sides.map((s) => reach(s));
  const out: { host: LabSpec['hosts'][number]; side: 0 | 1 }[] = [];
  for (const h of spec.hosts) {
    const via = ([0, 1] as const).filter((i) => reached[i]!.has(h.name));
    if (via.length === 1) out.push({ host: h, side: via[0]! });
  }
  return out;
}

/**
 * Instances whose VNF is the stack ('linux'): the namespace forwards IPv4
 * between its two interfaces (ip_forward, no reverse-path filter, no
 * redirects), a /32 route and a permanent neighbour per host on the side
 * that reaches it, and transmit checksum offload off on both interfaces
 * (the frames it sends cross veths and XDP redirects, and may be held and
 * replayed elsewhere: complete checksums only).
 */
export function configureStackVnfs(spec: LabSpec, plan: LabPlan): void {
  for (const v of spec.vnfs) {
    if (vnfKind(v.type).datapath !== 'stack') continue;
    const inst = plan.topology.instances.find((i) => i.name === v.name)!;
    const ns = inst.netns!;
    inNetns(ns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', 'net.ipv4.conf.all.send_redirects=0']);
    for (const ifname of inst.ifaces) {
      inNetns(ns, 'sysctl', ['-qw', `net.ipv4.conf.${ifname}.rp_filter=0`, `net.ipv4.conf.${ifname}.send_redirects=0`]);
      ethtoolFeatures(ifname, { tx: 'off' }, ns);
    }
    for (const { host, side } of stackRoutes(spec, v.name)) {
      const ifname = inst.ifaces[side];
      const addr = host.ip.split('/')[0]!;
      ip(['route', 'replace', `${addr}/32`, 'dev', ifname], ns);
      addNeighbor(ifname, addr, host.mac, ns);
    }
  }
}

/** The nftables ruleset of a NAT instance (table `ip sharp_nat`, in the instance's namespace only). */
export function natRuleset(outside: string, inside: string, outsideIf: string): string {
  return `table ip sharp_nat {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state invalid counter drop comment "mid-stream packets of flows without an entry (tcp_loose 0)"
    iifname "${outsideIf}" ct state new counter drop comment "no connection from the outside"
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    iifname "${inside}" oifname "${outsideIf}" counter snat to ${outside}
  }
}
`;
}

/**
 * Instances with \`nat\`: the nftables NAT in their namespace (natRuleset),
 * no mid-stream pickup (nf_conntrack_tcp_loose=0: a packet of a flow the
 * table does not know is INVALID and dropped), TCP window tracking liberal
 * (nf_conntrack_tcp_be_liberal=1: ctnetlink cannot move window data; see
 * src/state/conntrack-manager.ts), and on every host behind the outside, a
 * neighbour entry for the outside address (its derived MAC: 02:00 + the
 * address; the switch forwards by rule, the agent re-addresses anyway).
 */
export function configureNats(spec: LabSpec, plan: LabPlan): void {
  for (const v of spec.vnfs) {
    if (v.nat === undefined) continue;
    const inst = plan.topology.instances.find((i) => i.name === v.name)!;
    const ns = inst.netns!;
    runWithInput('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], natRuleset(v.nat.outside, inst.ifaces[0], inst.ifaces[1]));
    inNetns(ns, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_loose=0', 'net.netfilter.nf_conntrack_tcp_be_liberal=1']);
    for (const { host, side } of stackRoutes(spec, v.name)) {
      if (side !== 1) continue;
      const h = plan.hosts.find((x) => x.name === host.name)!;
      addNeighbor(h.ifname, v.nat.outside, macFromIpv4(ipv4Number(v.nat.outside)), h.netns);
    }
  }
}

/** The lab a plan describes, with the namespaces it has (built now, or adopted from a daemon that died). */
export function labOfPlan(plan: LabPlan, spec: LabSpec, prefix: string, namespaces: string[]): NetnsLab {
  return { prefix, hosts: plan.hosts, client: plan.hosts[0]!, server: plan.hosts[1] ?? plan.hosts[0]!, topology: plan.topology, namespaces, spec };
}

export function createLabFromSpec(spec: LabSpec, prefix: string): NetnsLab {
  const plan = planLab(spec, prefix);
  const created: string[] = [];
  try {
    for (const node of plan.nodes) {
      createNetns(node.netns);
      created.push(node.netns);
      // no IPv6 autoconfiguration chatter: every frame on the lab's links is ours
      inNetns(node.netns, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    }
    for (const link of plan.links) {
      const end = (e: PlannedLinkEnd): { name: string; netns: string; mac?: string; address?: string } => ({
        name: e.ifname,
        netns: e.netns,
        ...(e.mac === undefined ? {} : { mac: e.mac }),
        ...(e.address === undefined ? {} : { address: e.address }),
      });
      createVeth(end(link.ends[0]), end(link.ends[1]), link.mtu);
    }
    configureHosts(plan.hosts);
    configureStackVnfs(spec, plan);
    configureNats(spec, plan);
    return labOfPlan(plan, spec, prefix, created);
  } catch (e) {
    for (const c of created) deleteNetns(c);
    throw e;
  }
}

/** Installs the spec's rules; returns them in spec order. */
export async function installRules(dp: Pick<SwitchControl, 'addRule'>, rules: readonly RuleSpec[]): Promise<Rule[]> {
  const out: Rule[] = [];
  for (const r of rules) {
    const action = { outPort: `${r.switch}-${r.to}`, phase: Phase.NONE, handoverId: 0 };
    if ('flow' in r) out.push(await dp.addRule({ switch: r.switch, match: { kind: 'exact', flow: r.flow }, action }));
    else {
      const m = r.match;
      out.push(
        await dp.addRule({
          switch: r.switch,
          match: {
            kind: 'wildcard',
            priority: r.priority,
            ...(m.src === undefined ? {} : { src: m.src }),
            ...(m.dst === undefined ? {} : { dst: m.dst }),
            ...(m.sport === undefined ? {} : { sport: m.sport }),
            ...(m.dport === undefined ? {} : { dport: m.dport }),
            ...(m.proto === undefined ? {} : { proto: m.proto }),
            ...(m.from === undefined ? {} : { inPort: `${r.switch}-${m.from}` }),
          },
          action,
        }),
      );
    }
  }
  return out;
}
