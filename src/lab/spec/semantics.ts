/**
 * The checks a schema cannot express: names that refer to each other,
 * the shape of the topology, addresses, and rules that make sense for the
 * switch they sit on. They run on unchecked data (next to the schema
 * check, so that every problem is reported at once) and skip whatever the
 * schema already rejects.
 */
import {
  DEFAULTS,
  LIMITS,
  PROTO_NUMBERS,
  type FlowSpec,
  type LabSpec,
  type LabSpecInput,
  type LinkSpec,
  type RuleSpec,
  type WildcardMatchSpec,
} from './types.js';
import {
  asArray,
  asInt,
  asObject,
  asString,
  closest,
  formatIpv4,
  list,
  macFromIpv4,
  maskOf,
  networkOf,
  normalizeMac,
  parseCidr,
  pathString,
  quote,
  type RawIssue,
  type Segment,
} from './util.js';

type NodeKind = 'host' | 'switch' | 'vnf';

interface NodeInfo {
  name: string;
  kind: NodeKind;
  at: Segment[];
}

const COLLECTIONS: readonly [string, NodeKind][] = [
  ['hosts', 'host'],
  ['switches', 'switch'],
  ['vnfs', 'vnf'],
];

const KIND_WORD: Record<NodeKind, string> = { host: 'host', switch: 'switch', vnf: 'VNF' };

/** IP protocol number of a proto field, or undefined if it is not one */
export function protoNumber(p: unknown): number | undefined {
  if (typeof p === 'string') return (PROTO_NUMBERS as Record<string, number>)[p];
  const n = asInt(p);
  return n !== undefined && n >= 0 && n <= 255 ? n : undefined;
}

function protoWord(p: number): string {
  const name = Object.entries(PROTO_NUMBERS).find(([, n]) => n === p)?.[0];
  return name ?? `protocol ${p}`;
}

const hasPorts = (proto: number): boolean => proto === PROTO_NUMBERS.tcp || proto === PROTO_NUMBERS.udp;

/** Link endpoints as written: `[a, b]` or `{ ends: [a, b] }`, with where they sit. */
function linkEnds(l: unknown, i: number): { ends: [string, string]; at: Segment[] } | undefined {
  const endsAt: Segment[] = Array.isArray(l) ? ['links', i] : ['links', i, 'ends'];
  const ends = Array.isArray(l) ? l : asArray(asObject(l)?.ends);
  if (!ends || ends.length !== 2 || typeof ends[0] !== 'string' || typeof ends[1] !== 'string') return undefined;
  return { ends: [ends[0], ends[1]], at: endsAt };
}

export function semanticIssues(raw: unknown): RawIssue[] {
  const root = asObject(raw);
  if (!root) return [];
  const issues: RawIssue[] = [];
  const add = (at: Segment[], message: string): void => {
    issues.push({ at, message });
  };

  // ---------------------------------------------------------------- redis
  const redis = asObject(root['redis']);
  if (redis) {
    if (redis['url'] !== undefined && redis['cluster'] !== undefined) add(['redis', 'cluster'], 'give url (one server) or cluster (a Redis Cluster), not both');
    if (redis['failoverMs'] !== undefined && redis['cluster'] === undefined) add(['redis', 'failoverMs'], 'only for a cluster (one server has no failover to wait for)');
    const cl = asArray(redis['cluster']);
    cl?.forEach((a, i) => {
      const s = asString(a);
      const port = s === undefined ? NaN : Number(s.slice(s.lastIndexOf(':') + 1));
      if (s !== undefined && /:[0-9]{1,5}$/.test(s) && !(port >= 1 && port <= 65535)) add(['redis', 'cluster', i], `port ${port} is not 1-65535`);
    });
  }

  // ---------------------------------------------------------------- vnf kinds vs state
  // a userspace VNF keeps its per-flow counters in its E-State node: any other backend would move nothing of it, and the stamps would break silently
  const state = asString(root['state']);
  asArray(root['vnfs'])?.forEach((v, i) => {
    if (asString(asObject(v)?.['type']) === 'userspace' && state !== 'estate') add(['vnfs', i, 'type'], `a userspace VNF keeps its state in E-State: give state: estate (the spec says ${state === undefined ? 'nothing, so vnf-map' : `state: ${state}`})`);
  });

  // ---------------------------------------------------------------- nodes
  const nodes = new Map<string, NodeInfo>();
  /** every node's name is known: "no such node" is then a real finding, not a follow-on error */
  let nodesComplete = true;
  for (const [key, kind] of COLLECTIONS) {
    const coll = root[key];
    if (coll === undefined) {
      if (key !== 'vnfs') nodesComplete = false;
      continue;
    }
    const arr = asArray(coll);
    if (!arr) {
      nodesComplete = false;
      continue;
    }
    arr.forEach((el, i) => {
      const name = asString(asObject(el)?.name);
      if (name === undefined) {
        nodesComplete = false;
        return;
      }
      const prev = nodes.get(name);
      if (prev) {
        add([key, i, 'name'], `${quote(name)} is already the name of ${KIND_WORD[prev.kind]} ${pathString(prev.at)}; names must be unique across hosts, switches and VNFs`);
        return;
      }
      nodes.set(name, { name, kind, at: [key, i] });
    });
  }
  const allNames = [...nodes.keys()];
  const switchNames = [...nodes.values()].filter((n) => n.kind === 'switch').map((n) => n.name);
  const noSuch = (what: string, name: string, candidates: string[], label: string): string => {
    const hint = closest(name, candidates);
    return `no ${what} named ${quote(name)}${hint ? ` (did you mean ${quote(hint)}?)` : ''}; ${label}: ${list(candidates)}`;
  };

  // ---------------------------------------------------------------- links
  /** per node, the peers of its links in the order the links are listed (duplicates included) */
  const peers = new Map<string, string[]>();
  const links = asArray(root.links);
  /** every link could be read and names existing nodes: link counts per node are then exact */
  let linksComplete = links !== undefined;
  const firstLink = new Map<string, number>();
  links?.forEach((l, i) => {
    const e = linkEnds(l, i);
    if (!e) {
      linksComplete = false;
      return;
    }
    const [a, b] = e.ends;
    let known = true;
    e.ends.forEach((end, j) => {
      if (nodes.has(end)) return;
      known = false;
      if (nodesComplete) add([...e.at, j], noSuch('node', end, allNames, 'nodes'));
    });
    if (!known) {
      linksComplete = false;
      return;
    }
    const na = nodes.get(a)!;
    const nb = nodes.get(b)!;
    if (a === b) {
      add(['links', i], `links ${KIND_WORD[na.kind]} ${a} to itself`);
      return;
    }
    if (na.kind !== 'switch' && nb.kind !== 'switch') {
      add(['links', i], `cannot link ${KIND_WORD[na.kind]} ${a} to ${KIND_WORD[nb.kind]} ${b}: hosts and VNFs connect only to switches`);
    }
    const pair = [a, b].sort().join('\u0000');
    const first = firstLink.get(pair);
    if (first !== undefined) add(['links', i], `duplicate link ${a} — ${b} (already listed as links[${first}])`);
    else firstLink.set(pair, i);
    peers.set(a, [...(peers.get(a) ?? []), b]);
    peers.set(b, [...(peers.get(b) ?? []), a]);
  });
  const neighbours = (n: string): string[] => [...new Set(peers.get(n) ?? [])];

  if (linksComplete) {
    for (const node of nodes.values()) {
      const p = peers.get(node.name) ?? [];
      const to = p.length ? ` (to ${p.join(', ')})` : '';
      const count = `${p.length === 0 ? 'no' : p.length} ${p.length === 1 ? 'link' : 'links'}`;
      if (node.kind === 'host' && p.length !== 1) {
        add(node.at, `host ${node.name} has ${count}${to}; a host needs exactly one link, to a switch`);
      } else if (node.kind === 'vnf') {
        if (p.length !== 2) {
          add(node.at, `VNF ${node.name} has ${count}${to}; a VNF needs exactly two links, to two different switches (its first listed link goes to its ingress switch)`);
        } else if (p[0] === p[1] && nodes.get(p[0]!)?.kind === 'switch') {
          add(node.at, `both links of VNF ${node.name} go to switch ${p[0]}; a VNF needs two links to two different switches`);
        }
      } else if (node.kind === 'switch' && p.length === 0) {
        add(node.at, `switch ${node.name} has no links`);
      } else if (node.kind === 'switch' && p.length > LIMITS.switchPorts) {
        const hosts = p.filter((x) => nodes.get(x)?.kind === 'host').length;
        add(
          node.at,
          `switch ${node.name} has ${p.length} ports; a switch has at most ${LIMITS.switchPorts} (SHARP_DEFAULT_MAX_PORTS: one per link), so at most ${LIMITS.switchPorts - hosts} VNFs next to ${hosts === 1 ? 'one host' : `${hosts} hosts`}`,
        );
      }
    }
  }

  // ---------------------------------------------------------------- host addresses
  const hosts = asArray(root.hosts) ?? [];
  const hostAddr = new Map<number, number>(); // host index -> address
  const ipOwner = new Map<number, string>();
  let subnet: { net: number; len: number; owner: string } | undefined;
  hosts.forEach((h, i) => {
    const o = asObject(h);
    const ip = asString(o?.ip);
    if (ip === undefined) return;
    const name = asString(o?.name) ?? `hosts[${i}]`;
    const at: Segment[] = ['hosts', i, 'ip'];
    const c = parseCidr(ip);
    if (!c) return add(at, `${quote(ip)} is not an IPv4 address with a prefix length (like 10.0.0.1/24)`);
    if (c.len === undefined) return add(at, `${ip} has no prefix length; write it like ${ip}/24`);
    if (c.len < 1 || c.len > 30) return add(at, `prefix length /${c.len} leaves no room for hosts; use 1 to 30 (like ${formatIpv4(c.addr)}/24)`);
    const first = c.addr >>> 24;
    if (first === 0 || first === 127 || first >= 224) {
      return add(at, `${formatIpv4(c.addr)} is not a usable host address (0.x.x.x, loopback 127.x.x.x and 224.0.0.0 and above are reserved)`);
    }
    const net = networkOf(c.addr, c.len);
    const bcast = (net | ~maskOf(c.len)) >>> 0;
    if (c.addr === net || c.addr === bcast) {
      return add(at, `${ip} is the ${c.addr === net ? 'network' : 'broadcast'} address of ${formatIpv4(net)}/${c.len}; use an address from ${formatIpv4(net + 1)} to ${formatIpv4(bcast - 1)}`);
    }
    const owner = ipOwner.get(c.addr);
    if (owner !== undefined) return add(at, `address ${formatIpv4(c.addr)} is already used by host ${owner}`);
    ipOwner.set(c.addr, name);
    hostAddr.set(i, c.addr);
    if (!subnet) subnet = { net, len: c.len, owner: name };
    else if (subnet.len !== c.len || subnet.net !== net) {
      add(at, `${ip} is not in the subnet ${formatIpv4(subnet.net)}/${subnet.len} of host ${subnet.owner}; all hosts must share one subnet`);
    }
  });

  // ---------------------------------------------------------------- MACs
  const macOwner = new Map<string, string>();
  hosts.forEach((h, i) => {
    const o = asObject(h);
    const mac = asString(o?.mac);
    if (mac === undefined) return;
    const at: Segment[] = ['hosts', i, 'mac'];
    const m = normalizeMac(mac);
    if (!m) return add(at, `${quote(mac)} is not a MAC address (six hex bytes separated by ':', like 02:00:0a:00:00:01)`);
    if (m === '00:00:00:00:00:00') return add(at, `${m} is not a usable MAC address`);
    if (parseInt(m.slice(0, 2), 16) & 1) return add(at, `${m} is a multicast address (lowest bit of the first byte set); a host needs a unicast MAC, like 02:00:0a:00:00:01`);
    const owner = macOwner.get(m);
    if (owner !== undefined) return add(at, `MAC ${m} is already used by host ${owner}`);
    macOwner.set(m, asString(o?.name) ?? `hosts[${i}]`);
  });
  hosts.forEach((h, i) => {
    const o = asObject(h);
    const addr = hostAddr.get(i);
    if (!o || o.mac !== undefined || addr === undefined) return;
    const m = macFromIpv4(addr);
    const owner = macOwner.get(m);
    if (owner !== undefined) {
      add(['hosts', i], `the MAC derived from its IP (${m}) is already used by host ${owner}; give this host a 'mac'`);
    } else macOwner.set(m, asString(o.name) ?? `hosts[${i}]`);
  });

  // ---------------------------------------------------------------- VNFs
  asArray(root.vnfs)?.forEach((v, i) => {
    const o = asObject(v);
    if (o?.nat !== undefined && (o.type ?? DEFAULTS.vnfType) !== 'linux') add(['vnfs', i, 'nat'], `a NAT runs on the instance's own stack: give it type: linux (got ${String(o.type ?? DEFAULTS.vnfType)})`);
    if (o?.vnfFlows !== undefined && (o.type ?? DEFAULTS.vnfType) !== 'counter') add(['vnfs', i, 'vnfFlows'], `sizes the example XDP VNF's flow_state map: only for type: counter (got ${String(o.type)})`);
  });
  asArray(root.vnfs)?.forEach((v, i) => {
    const cap = asInt(asObject(v)?.ringCapacity);
    if (cap === undefined) return;
    const { min, max } = LIMITS.ringCapacity;
    if (cap < min || cap > max || (cap & (cap - 1)) !== 0) {
      add(['vnfs', i, 'ringCapacity'], `must be a power of two between ${min} and ${max} (64, 128, ..., ${max}), got ${cap}`);
    }
  });

  // ---------------------------------------------------------------- rules
  const ruleNames = new Map<string, number>();
  const exactSeen = new Map<string, number>();
  const wildSeen = new Map<string, number>();
  const wildCount = new Map<string, number>();
  asArray(root.rules)?.forEach((r, i) => {
    const o = asObject(r);
    if (!o) return;
    const at = (...rest: Segment[]): Segment[] => ['rules', i, ...rest];

    const name = asString(o.name);
    if (name !== undefined) {
      const prev = ruleNames.get(name);
      if (prev !== undefined) add(at('name'), `rule name ${quote(name)} is already used by rules[${prev}]`);
      else ruleNames.set(name, i);
    }

    const sw = asString(o.switch);
    let swOk = false;
    if (sw !== undefined) {
      const node = nodes.get(sw);
      if (!node) {
        if (nodesComplete) add(at('switch'), noSuch('switch', sw, switchNames, 'switches'));
      } else if (node.kind !== 'switch') {
        add(at('switch'), `${quote(sw)} is a ${KIND_WORD[node.kind]}, not a switch; switches: ${list(switchNames)}`);
      } else swOk = true;
    }
    /** a node name the rule's switch must have a link to */
    const checkNeighbour = (where: Segment[], value: unknown): void => {
      const v = asString(value);
      if (v === undefined || !swOk) return;
      if (linksComplete) {
        const nb = neighbours(sw!);
        if (!nb.includes(v)) add(where, `${quote(v)} is not a neighbour of switch ${sw} (neighbours: ${list(nb)})`);
      } else if (nodesComplete && !nodes.has(v)) {
        add(where, noSuch('node', v, allNames, 'nodes'));
      }
    };
    checkNeighbour(at('to'), o.to);

    const hasMatch = o.match !== undefined;
    const hasFlow = o.flow !== undefined;
    if (!hasMatch && !hasFlow) {
      add(at(), `a rule needs either 'match' (a wildcard rule) or 'flow' (an exact rule)`);
    } else if (hasMatch && hasFlow) {
      add(at(), `a rule has either 'match' (a wildcard rule) or 'flow' (an exact rule), not both`);
    } else if (hasMatch) {
      const m = asObject(o.match);
      if (!m) return;
      checkNeighbour(at('match', 'from'), m.from);
      const key: string[] = [];
      let matchOk = true;
      for (const f of ['src', 'dst'] as const) {
        const s = asString(m[f]);
        if (s === undefined) {
          key.push('*');
          continue;
        }
        const c = parseCidr(s);
        if (!c) {
          add(at('match', f), `${quote(s)} is not an IPv4 prefix (CIDR like 10.0.0.0/24, or a single address)`);
          matchOk = false;
          continue;
        }
        const len = c.len ?? 32;
        const net = networkOf(c.addr, len);
        if (net !== c.addr) {
          add(at('match', f), `${s} has address bits set beyond its /${len} prefix; did you mean ${formatIpv4(net)}/${len}?`);
          matchOk = false;
          continue;
        }
        key.push(`${formatIpv4(net)}/${len}`);
      }
      const proto = protoNumber(m.proto);
      if (proto !== undefined && proto !== 0 && !hasPorts(proto)) {
        for (const f of ['sport', 'dport'] as const) {
          const p = asInt(m[f]);
          if (p !== undefined && p !== 0) {
            add(at('match', f), `ports exist only for tcp and udp: the switch sees port 0 in ${protoWord(proto)} packets, so this rule could never match`);
          }
        }
      }
      key.push(String(asInt(m.sport) ?? 0), String(asInt(m.dport) ?? 0), String(proto ?? 0), asString(m.from) ?? '*', String(asInt(o.priority) ?? 0));
      if (swOk) {
        wildCount.set(sw!, (wildCount.get(sw!) ?? 0) + 1);
        const k = `${sw}\u0000${key.join('\u0000')}`;
        const prev = wildSeen.get(k);
        if (matchOk && prev !== undefined) {
          add(at('match'), `rules[${prev}] on switch ${sw} has the same match and priority; which of the two applies would be arbitrary`);
        } else if (matchOk) wildSeen.set(k, i);
      }
    } else {
      if (o.priority !== undefined) add(at('priority'), `only wildcard rules have a priority (an exact rule always wins over wildcard rules)`);
      const f = asObject(o.flow);
      if (!f) return;
      let complete = true;
      for (const k of ['src', 'dst'] as const) {
        const s = asString(f[k]);
        if (s === undefined) {
          complete = false;
          continue;
        }
        const c = parseCidr(s);
        if (!c || c.len !== undefined) {
          add(at('flow', k), `${quote(s)} is not an IPv4 address (an exact flow names single addresses, like 10.0.0.1)`);
          complete = false;
        }
      }
      const proto = protoNumber(f.proto);
      const sport = asInt(f.sport);
      const dport = asInt(f.dport);
      if (proto !== undefined && !hasPorts(proto)) {
        for (const [k, p] of [['sport', sport], ['dport', dport]] as const) {
          if (p !== undefined && p !== 0) {
            add(at('flow', k), `must be 0 for ${protoWord(proto)}: ports exist only for tcp and udp (the switch sees port 0), got ${p}`);
            complete = false;
          }
        }
      }
      if (complete && swOk && proto !== undefined && sport !== undefined && dport !== undefined) {
        const flow = `${protoWord(proto)} ${String(f.src)}:${sport} -> ${String(f.dst)}:${dport}`;
        const k = `${sw}\u0000${flow}`;
        const prev = exactSeen.get(k);
        if (prev !== undefined) add(at('flow'), `switch ${sw} already has an exact rule for this flow (${flow}): rules[${prev}]`);
        else exactSeen.set(k, i);
      }
    }
  });
  const kind = root.target === 'bmv2' ? 'a BMv2' : 'an XDP';
  for (const [sw, n] of wildCount) {
    if (n > LIMITS.xdpWildcardRules) add(['rules'], `switch ${sw} has ${n} wildcard rules; ${kind} switch holds at most ${LIMITS.xdpWildcardRules}`);
  }
  const ruleCount = asArray(root.rules)?.length ?? 0;
  if (ruleCount > LIMITS.rules) {
    add(['rules'], `the lab has ${ruleCount} rules; a lab holds at most ${LIMITS.rules} (rule ids 1..${LIMITS.rules}, shared by its switches: SHARP_DEFAULT_MAX_RULES)`);
  }
  return issues;
}

// ---------------------------------------------------------------- normalization

/** Fills in defaults and expands shorthands. Only for input that passed every check. */
export function normalize(input: LabSpecInput): LabSpec {
  const links: LinkSpec[] = input.links.map((l) =>
    Array.isArray(l) ? { ends: [l[0], l[1]], mtu: DEFAULTS.mtu } : { ends: [l.ends[0], l.ends[1]], mtu: l.mtu ?? DEFAULTS.mtu },
  );
  const rules: RuleSpec[] = (input.rules ?? []).map((r): RuleSpec => {
    const named = r.name === undefined ? {} : { name: r.name };
    if ('flow' in r) {
      const f = r.flow;
      const flow: FlowSpec = { src: f.src, dst: f.dst, sport: f.sport, dport: f.dport, proto: protoNumber(f.proto)! };
      return { ...named, switch: r.switch, flow, to: r.to };
    }
    const m = r.match;
    const match: WildcardMatchSpec = {};
    const prefix = (s: string): string => (s.includes('/') ? s : `${s}/32`);
    if (m.src !== undefined) match.src = prefix(m.src);
    if (m.dst !== undefined) match.dst = prefix(m.dst);
    if (m.sport !== undefined) match.sport = m.sport;
    if (m.dport !== undefined) match.dport = m.dport;
    if (m.proto !== undefined) match.proto = protoNumber(m.proto)!;
    if (m.from !== undefined) match.from = m.from;
    return { ...named, switch: r.switch, match, to: r.to, priority: r.priority ?? DEFAULTS.priority };
  });
  const spec: LabSpec = {
    name: input.name,
    target: input.target ?? DEFAULTS.target,
    state: input.state ?? DEFAULTS.state,
    ...(input.redis === undefined ? {} : { redis: structuredClone(input.redis) }),
    hosts: input.hosts.map((h) => ({ name: h.name, ip: h.ip, mac: h.mac !== undefined ? normalizeMac(h.mac)! : macFromIpv4(parseCidr(h.ip)!.addr) })),
    switches: input.switches.map((s) => ({ name: s.name, ...(s.maxRules === undefined ? {} : { maxRules: s.maxRules }) })),
    vnfs: (input.vnfs ?? []).map((v) => ({
      name: v.name,
      type: v.type ?? DEFAULTS.vnfType,
      ringCapacity: v.ringCapacity ?? DEFAULTS.ringCapacity,
      ringCount: v.ringCount ?? DEFAULTS.ringCount,
      ...(v.vnfFlows === undefined ? {} : { vnfFlows: v.vnfFlows }),
      ...(v.nat === undefined ? {} : { nat: { outside: v.nat.outside } }),
    })),
    links,
    rules,
  };
  if (input.description === undefined) return spec;
  const { name, ...rest } = spec;
  return { name, description: input.description, ...rest };
}
