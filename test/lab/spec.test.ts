// The lab spec: schema and semantic checks with readable messages (every
// problem at once), JSON and YAML parsing with positions, defaults, and the
// default lab (defaultSpec() and default.yaml agree).
import t, { type Test } from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { Ajv } from 'ajv';
import {
  SpecError,
  defaultSpec,
  defaultSpecPath,
  labSpecSchema,
  loadSpec,
  neighbours,
  parseSpec,
  schemaPath,
  specFromText,
  validateSpec,
  vnfSwitches,
  type LabSpec,
  type SpecIssue,
} from '../../src/lab/spec/index.js';

/** A valid spec as a user writes it (shorthands, defaults left out). */
function base(): any {
  return {
    name: 'demo',
    hosts: [
      { name: 'client', ip: '10.0.0.1/24' },
      { name: 'server', ip: '10.0.0.2/24' },
    ],
    switches: [{ name: 's1' }, { name: 's2' }],
    vnfs: [{ name: 'vnf1', type: 'counter', ringCapacity: 4096, ringCount: 4 }, { name: 'vnf2' }],
    links: [
      ['client', 's1'],
      ['s1', 'vnf1'],
      ['s1', 'vnf2'],
      ['vnf1', 's2'],
      ['vnf2', 's2'],
      ['s2', 'server'],
    ],
    rules: [
      { switch: 's1', match: { dst: '10.0.0.2/32', from: 'client' }, to: 'vnf1', priority: 10 },
      { switch: 's1', match: { dst: '10.0.0.1/32' }, to: 'client' },
      { switch: 's1', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 20000, dport: 9000, proto: 'udp' }, to: 'vnf1' },
    ],
  };
}

/** base() changed by `f` */
function mod(f: (s: any) => void): unknown {
  const s = base();
  f(s);
  return s;
}

/** Every issue matches exactly one expectation and vice versa: [path, substring | regex]. */
type Expect = [string, string | RegExp];

function matches(issue: SpecIssue, [p, m]: Expect): boolean {
  return issue.path === p && (typeof m === 'string' ? issue.message.includes(m) : m.test(issue.message));
}

function checkIssues(t: Test, errors: SpecIssue[], expect: Expect[]): void {
  const shown = errors.map((e) => `${e.path}: ${e.message}`).join('\n');
  t.equal(errors.length, expect.length, `exactly ${expect.length} issue(s); got:\n${shown}`);
  const left = [...errors];
  for (const ex of expect) {
    const i = left.findIndex((e) => matches(e, ex));
    t.ok(i >= 0, `reported: ${ex[0]}: ${String(ex[1])}\n(got:\n${shown})`);
    if (i >= 0) left.splice(i, 1);
  }
  t.same(left, [], 'no unexpected issue');
}


const invalid: { name: string; spec: unknown; expect: Expect[] }[] = [
  // ------------------------------------------------------------ schema
  { name: 'missing name', spec: mod((s) => delete s.name), expect: [['name', 'required property is missing']] },
  { name: 'missing host ip', spec: mod((s) => delete s.hosts[1].ip), expect: [['hosts[1].ip', /^required property is missing/]] },
  { name: 'hosts not a list', spec: mod((s) => (s.hosts = 'client')), expect: [['hosts', "must be a list, got the string 'client'"]] },
  { name: 'empty spec file (null)', spec: null, expect: [['', 'must be an object, got nothing (null)']] },
  { name: 'wrong type: port as string', spec: mod((s) => (s.rules[2].flow.dport = '9000')), expect: [['rules[2].flow.dport', "must be an integer (a port number 0..65535), got the string '9000'"]] },
  { name: 'wrong type: non-integer ringCount', spec: mod((s) => (s.vnfs[0].ringCount = 2.5)), expect: [['vnfs[0].ringCount', 'must be an integer (hold rings = concurrent incoming handovers), got the number 2.5']] },
  {
    name: 'unknown property in a host, with a hint',
    spec: mod((s) => (s.hosts[0].ipp = '10.0.0.9/24')),
    expect: [['hosts[0].ipp', "unknown property 'ipp' (did you mean 'ip'?); allowed here: name, ip, mac"]],
  },
  {
    name: 'unknown top-level property',
    spec: mod((s) => {
      s.vnf = s.vnfs;
      delete s.vnfs;
    }),
    // vnf1/vnf2 are now unknown names: the links and rules that use them are reported too
    expect: [
      ['vnf', "unknown property 'vnf' (did you mean 'vnfs'?); allowed here: name, description, target, state, redis, hosts, switches, vnfs, links, rules"],
      ['links[1][1]', "no node named 'vnf1'"],
      ['links[2][1]', "no node named 'vnf2'"],
      ['links[3][0]', "no node named 'vnf1'"],
      ['links[4][0]', "no node named 'vnf2'"],
      ['rules[0].to', "no node named 'vnf1'"],
      ['rules[2].to', "no node named 'vnf1'"],
    ],
  },
  { name: 'unknown property in an exact flow', spec: mod((s) => (s.rules[2].flow.from = 'client')), expect: [['rules[2].flow.from', "unknown property 'from'; allowed here: src, dst, sport, dport, proto"]] },
  { name: 'bad target', spec: mod((s) => (s.target = 'p4')), expect: [['target', "'p4' is not allowed; use one of: xdp, bmv2"]] },
  {
    name: 'redis: one server or a cluster, not both; failoverMs only for a cluster',
    spec: mod((s) => (s.redis = { url: 'redis://10.9.0.9:6379', cluster: ['10.9.0.9:7000'], failoverMs: 100 })),
    expect: [
      ['redis.cluster', 'give url (one server) or cluster (a Redis Cluster), not both'],
    ],
  },
  {
    name: 'redis: failoverMs without a cluster',
    spec: mod((s) => (s.redis = { url: 'redis://10.9.0.9:6379', failoverMs: 100 })),
    expect: [['redis.failoverMs', 'only for a cluster (one server has no failover to wait for)']],
  },
  {
    name: 'redis: a cluster node that is not host:port, by its index',
    spec: mod((s) => (s.redis = { cluster: ['10.9.0.9:7000', '10.9.0.9', '10.9.0.9:70000'] })),
    expect: [
      ['redis.cluster[1]', "'10.9.0.9' is not valid: must be host:port"],
      ['redis.cluster[2]', 'port 70000 is not 1-65535'],
    ],
  },
  {
    name: 'redis: a private cluster has at least 3 masters',
    spec: mod((s) => (s.redis = { cluster: { masters: 2, replica: 1 } })),
    expect: [
      ['redis.cluster.masters', 'must be between 3 and 16, got 2'],
      ['redis.cluster.replica', "unknown property 'replica' (did you mean 'replicas'?); allowed here: masters, replicas"],
    ],
  },
  { name: 'bad state backend', spec: mod((s) => (s.state = 'etcd')), expect: [['state', "'etcd' is not allowed; use one of: vnf-map, copy, estate, redis"]] },
  { name: 'bad VNF type', spec: mod((s) => (s.vnfs[1].type = 'nat')), expect: [['vnfs[1].type', "'nat' is not allowed; use one of: counter"]] },
  { name: 'bad proto name', spec: mod((s) => (s.rules[0].match.proto = 'ucp')), expect: [['rules[0].match.proto', "'ucp' is not allowed (did you mean 'udp'?); use one of: udp, tcp, icmp"]] },
  { name: 'proto number out of range', spec: mod((s) => (s.rules[2].flow.proto = 300)), expect: [['rules[2].flow.proto', 'must be between 0 and 255, got 300']] },
  { name: 'proto of the wrong type', spec: mod((s) => (s.rules[0].match.proto = true)), expect: [['rules[0].match.proto', 'must be udp, tcp, icmp or an IP protocol number 0..255, got true']] },
  { name: 'port out of range', spec: mod((s) => (s.rules[0].match.sport = 70000)), expect: [['rules[0].match.sport', 'must be between 0 and 65535, got 70000']] },
  { name: 'ringCount out of range', spec: mod((s) => (s.vnfs[0].ringCount = 17)), expect: [['vnfs[0].ringCount', 'must be between 1 and 16, got 17']] },
  { name: 'mtu out of range', spec: mod((s) => (s.links[0] = { ends: ['client', 's1'], mtu: 100 })), expect: [['links[0].mtu', 'must be between 576 and 9000, got 100']] },
  { name: 'link with three ends', spec: mod((s) => s.links[0].push('s2')), expect: [['links[0]', 'must have exactly 2 entries (two node names), got 3']] },
  {
    name: 'link neither list nor object',
    spec: mod((s) => (s.links[5] = 's2-server')),
    expect: [['links[5]', "must be a list of two node names, or an object { ends: [a, b], mtu }, got the string 's2-server'"]],
  },
  { name: 'no switches: only the missing list is reported', spec: mod((s) => delete s.switches), expect: [['switches', 'required property is missing']] },
  { name: 'empty host list', spec: mod((s) => ((s.hosts = []), s.links.splice(5, 1), s.links.splice(0, 1), s.rules.splice(1, 2), delete s.rules[0].match.from)), expect: [['hosts', 'must have at least 1 entry, got none']] },
  { name: 'bad lab name', spec: mod((s) => (s.name = 'My Lab')), expect: [['name', "'My Lab' is not valid: must be 1 to 10 lowercase letters or digits, starting with a letter"]] },
  // one rule for spec names and --name: no '-', so no lab's namespace prefix covers another's
  { name: "lab name with '-'", spec: mod((s) => (s.name = 'lab-2')), expect: [['name', "'lab-2' is not valid: must be 1 to 10 lowercase letters or digits, starting with a letter (no '-'"]] },
  {
    name: 'node name too long for an interface name',
    spec: mod((s) => {
      s.switches[1].name = 'switchnumber2';
      s.links = s.links.map((l: string[]) => l.map((e) => (e === 's2' ? 'switchnumber2' : e)));
    }),
    expect: [['switches[1].name', "'switchnumber2' is not valid: must be a lowercase letter followed by at most 9 lowercase letters or digits (names become interface names like p-<name>, at most 15 characters)"]],
  },
  { name: 'node name with upper case', spec: mod((s) => (s.switches[0].name = 'S1')), expect: [['switches[0].name', "'S1' is not valid"], ['links[0][1]', "no node named 's1' (did you mean 'S1'?)"], ['links[1][0]', "no node named 's1'"], ['links[2][0]', "no node named 's1'"], ['rules[0].switch', "no switch named 's1' (did you mean 'S1'?); switches: S1, s2"], ['rules[1].switch', "no switch named 's1'"], ['rules[2].switch', "no switch named 's1'"]] },

  // ------------------------------------------------------------ names and links
  {
    name: 'names unique across hosts, switches and VNFs',
    spec: mod((s) => s.switches.push({ name: 'vnf2' })),
    // the later one in document order is the duplicate
    expect: [['vnfs[1].name', "'vnf2' is already the name of switch switches[2]; names must be unique across hosts, switches and VNFs"]],
  },
  {
    name: 'link endpoint does not exist',
    spec: mod((s) => (s.links[5] = ['s2', 'srv'])),
    expect: [['links[5][1]', "no node named 'srv'; nodes: client, server, s1, s2, vnf1, vnf2"]],
  },
  {
    name: 'link endpoint does not exist (object form)',
    spec: mod((s) => (s.links[5] = { ends: ['s2', 'sever'], mtu: 9000 })),
    expect: [['links[5].ends[1]', "no node named 'sever' (did you mean 'server'?)"]],
  },
  {
    name: 'link between two hosts',
    spec: mod((s) => (s.links[5] = ['client', 'server'])),
    expect: [
      ['links[5]', 'cannot link host client to host server: hosts and VNFs connect only to switches'],
      ['hosts[0]', 'host client has 2 links (to s1, server); a host needs exactly one link, to a switch'],
    ],
  },
  {
    name: 'link between two VNFs',
    spec: mod((s) => s.links.push(['vnf1', 'vnf2'])),
    expect: [
      ['links[6]', 'cannot link VNF vnf1 to VNF vnf2: hosts and VNFs connect only to switches'],
      ['vnfs[0]', 'VNF vnf1 has 3 links (to s1, s2, vnf2); a VNF needs exactly two links'],
      ['vnfs[1]', 'VNF vnf2 has 3 links (to s1, s2, vnf1)'],
    ],
  },
  {
    name: 'link between a host and a VNF',
    spec: mod((s) => (s.links[0] = ['client', 'vnf1'])),
    expect: [
      ['links[0]', 'cannot link host client to VNF vnf1: hosts and VNFs connect only to switches'],
      ['vnfs[0]', 'VNF vnf1 has 3 links (to client, s1, s2)'],
      ['rules[0].match.from', "'client' is not a neighbour of switch s1 (neighbours: vnf1, vnf2)"],
      ['rules[1].to', "'client' is not a neighbour of switch s1 (neighbours: vnf1, vnf2)"],
    ],
  },
  { name: 'link from a node to itself', spec: mod((s) => s.links.push(['s1', 's1'])), expect: [['links[6]', 'links switch s1 to itself']] },
  {
    name: 'duplicate link, written the other way round',
    spec: mod((s) => s.links.push(['s2', 'vnf2'])),
    expect: [
      ['links[6]', 'duplicate link s2 — vnf2 (already listed as links[4])'],
      ['vnfs[1]', 'VNF vnf2 has 3 links (to s1, s2, s2)'],
    ],
  },
  {
    name: 'host without a link',
    spec: mod((s) => s.hosts.push({ name: 'idle', ip: '10.0.0.3/24' })),
    expect: [['hosts[2]', 'host idle has no links; a host needs exactly one link, to a switch']],
  },
  {
    name: 'host with two links',
    spec: mod((s) => s.links.push(['client', 's2'])),
    expect: [['hosts[0]', 'host client has 2 links (to s1, s2); a host needs exactly one link, to a switch']],
  },
  {
    name: 'VNF with one link',
    spec: mod((s) => s.links.splice(4, 1)),
    expect: [['vnfs[1]', 'VNF vnf2 has 1 link (to s1); a VNF needs exactly two links, to two different switches (its first listed link goes to its ingress switch)']],
  },
  {
    name: 'VNF with both links to the same switch',
    spec: mod((s) => (s.links[4] = ['vnf2', 's1'])),
    expect: [
      ['links[4]', 'duplicate link vnf2 — s1 (already listed as links[2])'],
      ['vnfs[1]', 'both links of VNF vnf2 go to switch s1; a VNF needs two links to two different switches'],
    ],
  },
  { name: 'switch without links', spec: mod((s) => s.switches.push({ name: 's3' })), expect: [['switches[2]', 'switch s3 has no links']] },

  // ------------------------------------------------------------ addresses
  { name: 'host IP not an address', spec: mod((s) => (s.hosts[1].ip = '10.0.0.256/24')), expect: [['hosts[1].ip', "'10.0.0.256/24' is not an IPv4 address with a prefix length (like 10.0.0.1/24)"]] },
  { name: 'host IP without prefix length', spec: mod((s) => (s.hosts[1].ip = '10.0.0.2')), expect: [['hosts[1].ip', '10.0.0.2 has no prefix length; write it like 10.0.0.2/24']] },
  { name: 'host IP is the network address', spec: mod((s) => (s.hosts[1].ip = '10.0.0.0/24')), expect: [['hosts[1].ip', '10.0.0.0/24 is the network address of 10.0.0.0/24; use an address from 10.0.0.1 to 10.0.0.254']] },
  { name: 'host IP used twice', spec: mod((s) => (s.hosts[1].ip = '10.0.0.1/24')), expect: [['hosts[1].ip', 'address 10.0.0.1 is already used by host client']] },
  {
    name: 'hosts in different subnets',
    spec: mod((s) => (s.hosts[1].ip = '10.0.1.2/24')),
    expect: [['hosts[1].ip', '10.0.1.2/24 is not in the subnet 10.0.0.0/24 of host client; all hosts must share one subnet']],
  },
  { name: 'hosts with different prefix lengths', spec: mod((s) => (s.hosts[1].ip = '10.0.0.2/16')), expect: [['hosts[1].ip', 'is not in the subnet 10.0.0.0/24 of host client']] },
  { name: 'loopback host address', spec: mod((s) => (s.hosts[1].ip = '127.0.0.2/8')), expect: [['hosts[1].ip', '127.0.0.2 is not a usable host address']] },
  { name: 'malformed MAC', spec: mod((s) => (s.hosts[0].mac = '02:00:0a:00:01')), expect: [['hosts[0].mac', "'02:00:0a:00:01' is not a MAC address (six hex bytes separated by ':', like 02:00:0a:00:00:01)"]] },
  { name: 'multicast MAC', spec: mod((s) => (s.hosts[0].mac = '01:00:5e:00:00:01')), expect: [['hosts[0].mac', '01:00:5e:00:00:01 is a multicast address']] },
  { name: 'MAC used twice', spec: mod((s) => ((s.hosts[0].mac = '02:00:00:00:00:aa'), (s.hosts[1].mac = '02:00:00:00:00:AA'))), expect: [['hosts[1].mac', 'MAC 02:00:00:00:00:aa is already used by host client']] },
  {
    name: 'written MAC equal to another host\u2019s derived MAC',
    spec: mod((s) => (s.hosts[0].mac = '02:00:0a:00:00:02')),
    expect: [['hosts[1]', "the MAC derived from its IP (02:00:0a:00:00:02) is already used by host client; give this host a 'mac'"]],
  },

  // ------------------------------------------------------------ VNFs
  { name: 'ringCapacity not a power of two', spec: mod((s) => (s.vnfs[0].ringCapacity = 1000)), expect: [['vnfs[0].ringCapacity', 'must be a power of two between 64 and 262144 (64, 128, ..., 262144), got 1000']] },
  { name: 'ringCapacity power of two but too large', spec: mod((s) => (s.vnfs[1].ringCapacity = 524288)), expect: [['vnfs[1].ringCapacity', 'must be a power of two between 64 and 262144']] },
  { name: 'a userspace VNF without state: estate', spec: mod((s) => (s.vnfs[0].type = 'userspace')), expect: [['vnfs[0].type', 'a userspace VNF keeps its state in E-State: give state: estate (the spec says nothing, so vnf-map)']] },
  { name: 'ringCapacity too small', spec: mod((s) => (s.vnfs[1].ringCapacity = 32)), expect: [['vnfs[1].ringCapacity', 'got 32']] },
  { name: 'vnfFlows on a stack VNF', spec: mod((s) => ((s.vnfs[1].type = 'linux'), (s.vnfs[1].vnfFlows = 1000))), expect: [['vnfs[1].vnfFlows', "sizes the example XDP VNF's flow_state map: only for type: counter (got linux)"]] },
  { name: 'vnfFlows beyond the map limit', spec: mod((s) => (s.vnfs[0].vnfFlows = 1 << 23)), expect: [['vnfs[0].vnfFlows', '4194304']] },
  { name: 'maxRules too small', spec: mod((s) => (s.switches[0].maxRules = 1)), expect: [['switches[0].maxRules', '2']] },

  // ------------------------------------------------------------ rules
  { name: 'rule on a switch that does not exist', spec: mod((s) => (s.rules[1].switch = 's3')), expect: [['rules[1].switch', "no switch named 's3' (did you mean 's1'?); switches: s1, s2"]] },
  { name: 'rule on a host', spec: mod((s) => (s.rules[1].switch = 'client')), expect: [['rules[1].switch', "'client' is a host, not a switch; switches: s1, s2"]] },
  { name: 'rule sends to a non-neighbour', spec: mod((s) => (s.rules[2].to = 'vnf9')), expect: [['rules[2].to', "'vnf9' is not a neighbour of switch s1 (neighbours: client, vnf1, vnf2)"]] },
  { name: 'rule sends to an existing node that is not a neighbour', spec: mod((s) => (s.rules[1].to = 'server')), expect: [['rules[1].to', "'server' is not a neighbour of switch s1 (neighbours: client, vnf1, vnf2)"]] },
  { name: 'match.from not a neighbour', spec: mod((s) => (s.rules[0].match.from = 's2')), expect: [['rules[0].match.from', "'s2' is not a neighbour of switch s1 (neighbours: client, vnf1, vnf2)"]] },
  { name: 'bad CIDR', spec: mod((s) => (s.rules[0].match.dst = '10.0.0/24')), expect: [['rules[0].match.dst', "'10.0.0/24' is not an IPv4 prefix (CIDR like 10.0.0.0/24, or a single address)"]] },
  { name: 'prefix length over 32', spec: mod((s) => (s.rules[0].match.src = '10.0.0.0/33')), expect: [['rules[0].match.src', "'10.0.0.0/33' is not an IPv4 prefix"]] },
  { name: 'CIDR with host bits set', spec: mod((s) => (s.rules[0].match.dst = '10.0.0.2/24')), expect: [['rules[0].match.dst', '10.0.0.2/24 has address bits set beyond its /24 prefix; did you mean 10.0.0.0/24?']] },
  { name: 'exact flow not fully specified', spec: mod((s) => delete s.rules[2].flow.dport), expect: [['rules[2].flow.dport', 'required property is missing']] },
  { name: 'exact flow with a prefix', spec: mod((s) => (s.rules[2].flow.dst = '10.0.0.2/32')), expect: [['rules[2].flow.dst', "'10.0.0.2/32' is not an IPv4 address (an exact flow names single addresses, like 10.0.0.1)"]] },
  {
    name: 'two exact rules for the same flow on one switch',
    spec: mod((s) => s.rules.push({ switch: 's1', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 20000, dport: 9000, proto: 17 }, to: 'vnf2' })),
    expect: [['rules[3].flow', 'switch s1 already has an exact rule for this flow (udp 10.0.0.1:20000 -> 10.0.0.2:9000): rules[2]']],
  },
  { name: 'rule with neither match nor flow', spec: mod((s) => delete s.rules[1].match), expect: [['rules[1]', "a rule needs either 'match' (a wildcard rule) or 'flow' (an exact rule)"]] },
  { name: 'rule with both match and flow', spec: mod((s) => (s.rules[2].match = {})), expect: [['rules[2]', "a rule has either 'match' (a wildcard rule) or 'flow' (an exact rule), not both"]] },
  { name: 'priority on an exact rule', spec: mod((s) => (s.rules[2].priority = 5)), expect: [['rules[2].priority', 'only wildcard rules have a priority']] },
  { name: 'ports in an exact icmp flow', spec: mod((s) => (s.rules[2].flow.proto = 'icmp')), expect: [['rules[2].flow.sport', 'must be 0 for icmp'], ['rules[2].flow.dport', 'must be 0 for icmp']] },
  { name: 'ports in an icmp wildcard', spec: mod((s) => Object.assign(s.rules[0].match, { proto: 1, dport: 53 })), expect: [['rules[0].match.dport', 'ports exist only for tcp and udp: the switch sees port 0 in icmp packets, so this rule could never match']] },
  { name: 'two wildcard rules with the same match and priority', spec: mod((s) => s.rules.push({ switch: 's1', match: { dst: '10.0.0.1' }, to: 'vnf2' })), expect: [['rules[3].match', 'rules[1] on switch s1 has the same match and priority']] },
  { name: 'rule names unique', spec: mod((s) => ((s.rules[0].name = 'fwd'), (s.rules[1].name = 'fwd'))), expect: [['rules[1].name', "rule name 'fwd' is already used by rules[0]"]] },
  {
    name: 'more wildcard rules than an XDP switch holds',
    spec: mod((s) => {
      for (let i = 0; i < 255; i++) s.rules.push({ switch: 's1', match: { dport: i + 1 }, to: 'vnf2' });
    }),
    expect: [['rules', 'switch s1 has 257 wildcard rules; an XDP switch holds at most 256']],
  },
  {
    name: 'more ports on a switch than its tables hold (120 VNFs)',
    spec: mod((s) => {
      const vnfs = Array.from({ length: 120 }, (_, i) => `v${i + 1}`);
      s.vnfs = vnfs.map((name) => ({ name }));
      s.links = [['client', 's1'], ...vnfs.map((v) => ['s1', v]), ...vnfs.map((v) => [v, 's2']), ['s2', 'server']];
      s.rules = [];
    }),
    expect: [
      ['switches[0]', 'switch s1 has 121 ports; a switch has at most 64 (SHARP_DEFAULT_MAX_PORTS: one per link), so at most 63 VNFs next to one host'],
      ['switches[1]', 'switch s2 has 121 ports; a switch has at most 64'],
    ],
  },
  {
    name: 'more rules than a lab has rule ids',
    spec: mod((s) => {
      for (let i = 0; i < 4093; i++) s.rules.push({ switch: 's2', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: i + 1, dport: 9, proto: 'udp' }, to: 'server' });
    }),
    expect: [['rules', 'the lab has 4096 rules; a lab holds at most 4095 (rule ids 1..4095, shared by its switches: SHARP_DEFAULT_MAX_RULES)']],
  },
];

t.test('invalid specs: every problem named with its path, in words', async (t) => {
  t.ok(invalid.length >= 20, `${invalid.length} invalid specs`);
  for (const c of invalid) {
    t.test(c.name, async (t) => {
      const r = validateSpec(c.spec);
      t.equal(r.ok, false, 'rejected');
      if (!r.ok) checkIssues(t, r.errors, c.expect);
    });
  }
});

t.test('several problems at once: all reported, in document order', async (t) => {
  const spec = mod((s) => {
    s.target = 'p4'; // schema: enum
    s.hosts[0].addr = 1; // schema: unknown property
    s.hosts[1].ip = '10.0.1.2/24'; // semantic: subnet
    s.vnfs[0].ringCapacity = 100; // semantic: power of two
    s.vnfs[1].ringCount = 0; // schema: range
    s.links.push(['s1', 's1']); // semantic: self link
    s.rules[0].to = 'vnf9'; // semantic: neighbour
    s.rules[2].flow.sport = -1; // schema: range
  });
  const r = validateSpec(spec);
  t.equal(r.ok, false);
  if (r.ok) return;
  t.same(
    r.errors.map((e) => e.path),
    ['target', 'hosts[0].addr', 'hosts[1].ip', 'vnfs[0].ringCapacity', 'vnfs[1].ringCount', 'links[6]', 'rules[0].to', 'rules[2].flow.sport'],
  );
  checkIssues(t, r.errors, [
    ['target', "'p4' is not allowed; use one of: xdp, bmv2"],
    ['hosts[0].addr', "unknown property 'addr'"],
    ['hosts[1].ip', 'is not in the subnet 10.0.0.0/24'],
    ['vnfs[0].ringCapacity', 'power of two'],
    ['vnfs[1].ringCount', 'must be between 1 and 16, got 0'],
    ['links[6]', 'links switch s1 to itself'],
    ['rules[0].to', "'vnf9' is not a neighbour of switch s1"],
    ['rules[2].flow.sport', 'must be between 0 and 65535, got -1'],
  ]);
  // the SpecError message lists every issue, one per line
  const err = t.throws(() => specFromText(JSON.stringify(spec), 'json')) as SpecError;
  t.type(err, SpecError);
  t.equal(err.errors.length, 8);
  const lines = err.message.split('\n');
  t.equal(lines[0], 'lab spec: 8 problems');
  t.equal(lines.length, 9);
  t.match(lines[7], /^ {2}rules\[0\]\.to \(line 1, column \d+\): 'vnf9' is not a neighbour of switch s1 \(neighbours: client, vnf1, vnf2\)$/);
});

/** what validateSpec makes of base() */
function expectedBase(): LabSpec {
  const link = (a: string, b: string): LabSpec['links'][number] => ({ ends: [a, b], mtu: 1500 });
  return {
    name: 'demo',
    target: 'xdp',
    state: 'vnf-map',
    hosts: [
      { name: 'client', ip: '10.0.0.1/24', mac: '02:00:0a:00:00:01' },
      { name: 'server', ip: '10.0.0.2/24', mac: '02:00:0a:00:00:02' },
    ],
    switches: [{ name: 's1' }, { name: 's2' }],
    vnfs: [
      { name: 'vnf1', type: 'counter', ringCapacity: 4096, ringCount: 4 },
      { name: 'vnf2', type: 'counter', ringCapacity: 4096, ringCount: 4 },
    ],
    links: [link('client', 's1'), link('s1', 'vnf1'), link('s1', 'vnf2'), link('vnf1', 's2'), link('vnf2', 's2'), link('s2', 'server')],
    rules: [
      { switch: 's1', match: { dst: '10.0.0.2/32', from: 'client' }, to: 'vnf1', priority: 10 },
      { switch: 's1', match: { dst: '10.0.0.1/32' }, to: 'client', priority: 0 },
      { switch: 's1', flow: { src: '10.0.0.1', dst: '10.0.0.2', sport: 20000, dport: 9000, proto: 17 }, to: 'vnf1' },
    ],
  };
}

t.test('valid spec: defaults filled in, shorthands expanded', async (t) => {
  const r = validateSpec(base());
  t.equal(r.ok, true, r.ok ? 'valid' : r.errors.map((e) => `${e.path}: ${e.message}`).join('\n'));
  if (!r.ok) return;
  t.same(r.spec, expectedBase());
  t.strictSame(Object.keys(r.spec), ['name', 'target', 'state', 'hosts', 'switches', 'vnfs', 'links', 'rules'], 'no stray fields');
  // a validated spec is a valid input and validates to itself
  const again = validateSpec(JSON.parse(JSON.stringify(r.spec)));
  t.ok(again.ok);
  if (again.ok) t.same(again.spec, r.spec);

  t.same(neighbours(r.spec, 's1'), ['client', 'vnf1', 'vnf2']);
  t.same(vnfSwitches(r.spec, 'vnf1'), ['s1', 's2'], 'first listed link = ingress switch');

  // other values pass through; a bare match address becomes /32; a written MAC is lower-cased
  const other = validateSpec(
    mod((s) => {
      s.target = 'bmv2';
      s.state = 'estate';
      s.description = 'x';
      s.hosts[0].mac = '02:AB:00:00:00:01';
      s.links[0] = { ends: ['client', 's1'], mtu: 9000 };
      s.rules[1].match = { src: '10.0.0.0/24', dst: '10.0.0.1', proto: 'tcp', sport: 0, dport: 80 };
      s.rules[1].name = 'web';
    }),
  );
  t.ok(other.ok);
  if (!other.ok) return;
  t.equal(other.spec.target, 'bmv2');
  t.equal(other.spec.state, 'estate');
  for (const redis of [{ cluster: ['10.9.0.9:7000', '10.9.0.10:7000'], failoverMs: 8000, keyPrefix: 'lab:' }, { cluster: { masters: 3, replicas: 1 } }, { url: 'redis://10.9.0.9:6379/1', timeoutMs: 500 }]) {
    const r = validateSpec(mod((s) => ((s.state = 'redis'), (s.redis = redis))));
    t.ok(r.ok, `redis ${JSON.stringify(redis)} is valid${r.ok ? '' : `: ${r.errors.map((e) => `${e.path}: ${e.message}`).join('; ')}`}`);
    if (r.ok) t.same(r.spec.redis, redis, 'and kept as written');
  }
  t.equal(other.spec.description, 'x');
  t.equal(other.spec.hosts[0]!.mac, '02:ab:00:00:00:01');
  t.same(other.spec.links[0], { ends: ['client', 's1'], mtu: 9000 });
  t.same(other.spec.rules[1], { name: 'web', switch: 's1', match: { src: '10.0.0.0/24', dst: '10.0.0.1/32', proto: 6, sport: 0, dport: 80 }, to: 'client', priority: 0 });
});

t.test('the wildcard-rule limit holds on bmv2 too (its ternary table has SHARP_MAX_WILD_RULES entries)', async (t) => {
  const spec = mod((s) => {
    s.target = 'bmv2';
    for (let i = 0; i < 255; i++) s.rules.push({ switch: 's1', match: { dport: i + 1 }, to: 'vnf2' });
  });
  const r = validateSpec(spec);
  t.equal(r.ok, false);
  if (!r.ok) checkIssues(t, r.errors, [['rules', 'switch s1 has 257 wildcard rules; a BMv2 switch holds at most 256']]);
  const fits = mod((s) => {
    s.target = 'bmv2';
    for (let i = 0; i < 254; i++) s.rules.push({ switch: 's1', match: { dport: i + 1 }, to: 'vnf2' });
  });
  t.equal(validateSpec(fits).ok, true, '256 fit');
});

t.test('JSON and YAML round trips, from text and from files', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharp-spec-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const want = expectedBase();

  const json = JSON.stringify(base(), null, 2);
  t.same(specFromText(json, 'json'), want, 'JSON text');
  t.same(validateSpec(parseSpec(json, 'json')), { ok: true, spec: want }, 'parseSpec + validateSpec');
  writeFileSync(path.join(dir, 'lab.json'), json);
  t.same(loadSpec(path.join(dir, 'lab.json')), want, '.json file');

  const yaml = toYaml(base());
  t.same(specFromText(yaml, 'yaml'), want, 'YAML text');
  writeFileSync(path.join(dir, 'lab.yaml'), yaml);
  writeFileSync(path.join(dir, 'lab.yml'), yaml);
  t.same(loadSpec(path.join(dir, 'lab.yaml')), want, '.yaml file');
  t.same(loadSpec(path.join(dir, 'lab.yml')), want, '.yml file');

  // the normalized spec written out and read back is unchanged, both ways
  t.same(specFromText(toYaml(want), 'yaml'), want);
  t.same(specFromText(JSON.stringify(want), 'json'), want);

  // hand-written YAML with unquoted MACs and flow-style rules
  const hand = `
name: hand
hosts:
  - { name: a, ip: 192.168.1.10/24, mac: 02:00:00:00:00:10 }
  - { name: b, ip: 192.168.1.20/24 }
switches: [{ name: s1 }]
links: [[a, s1], [b, s1]]
rules:
  - { switch: s1, match: { dst: 192.168.1.20 }, to: b }
`;
  const h = specFromText(hand, 'yaml');
  t.equal(h.hosts[0]!.mac, '02:00:00:00:00:10');
  t.equal(h.hosts[1]!.mac, '02:00:c0:a8:01:14', 'derived from 192.168.1.20');
  t.same(h.vnfs, []);
  t.same(h.rules, [{ switch: 's1', match: { dst: '192.168.1.20/32' }, to: 'b', priority: 0 }]);

  // YAML anchors and merge keys
  const merged = specFromText(
    `
name: merge
hosts: [{ name: a, ip: 10.1.0.1/16 }, { name: b, ip: 10.1.0.2/16 }]
switches: [{ name: s1 }, { name: s2 }]
vnfs:
  - &big { name: v1, ringCapacity: 16384, ringCount: 2 }
  - { <<: *big, name: v2 }
links: [[a, s1], [s1, v1], [s1, v2], [v1, s2], [v2, s2], [s2, b]]
`,
    'yaml',
  );
  t.same(merged.vnfs, [
    { name: 'v1', type: 'counter', ringCapacity: 16384, ringCount: 2 },
    { name: 'v2', type: 'counter', ringCapacity: 16384, ringCount: 2 },
  ]);

  t.throws(() => loadSpec(path.join(dir, 'lab.txt')), { name: 'SpecError', message: /use \.json, \.yaml or \.yml/ });
  t.throws(() => loadSpec(path.join(dir, 'missing.yaml')), { name: 'SpecError', message: /missing\.yaml: lab spec: 1 problem\n {2}spec: cannot read the file: ENOENT/ });
});

t.test('syntax errors carry line and column', async (t) => {
  const yaml = ['name: broken', 'hosts:', '  - { name: a, ip: 10.0.0.1/24 }', 'switches: [ { name: s1 }', 'links: []', ''].join('\n');
  const e1 = t.throws(() => parseSpec(yaml, 'yaml')) as SpecError;
  t.type(e1, SpecError);
  t.ok(e1.errors.length >= 1);
  t.equal(e1.errors[0]!.path, '');
  t.match(e1.errors[0]!.message, /^not valid YAML: /);
  t.equal(e1.errors[0]!.line, 5, 'the unterminated flow sequence is noticed on line 5');
  t.match(e1.message, /spec \(line 5, column \d+\): not valid YAML/);

  const dup = t.throws(() => parseSpec('name: a\nname: b\n', 'yaml')) as SpecError;
  t.equal(dup.errors[0]!.line, 2);
  t.match(dup.errors[0]!.message, /Map keys must be unique/);

  const json = '{\n  "name": "x",\n  "hosts": [,]\n}';
  const e2 = t.throws(() => parseSpec(json, 'json')) as SpecError;
  t.type(e2, SpecError);
  t.match(e2.errors[0], { path: '', line: 3, column: 13 });
  t.match(e2.errors[0]!.message, /^not valid JSON: /);

  // what the JSON scanner says, and where, for common mistakes
  const broken: [string, RegExp, number, number][] = [
    ['{"name": "x",}', /unexpected '}', expected a property name in double quotes/, 1, 14],
    ["{'name': 'x'}", /unexpected ''', expected a property name in double quotes/, 1, 2],
    ['{"name": "x"', /unexpected end of text, expected ',' or '}'/, 1, 13],
    ['{"a": [1 2]}', /unexpected '2', expected ',' or ']'/, 1, 10],
    ['{"a": tru}', /unexpected 't', expected a value/, 1, 7],
    ['{"a": 1}\n{"b": 2}', /unexpected '\{', expected end of text/, 2, 1],
    ['', /unexpected end of text, expected a value/, 1, 1],
  ];
  for (const [text, msg, line, column] of broken) {
    const e = t.throws(() => parseSpec(text, 'json')) as SpecError;
    t.match(e.errors, [{ path: '', message: msg, line, column }], JSON.stringify(text));
  }

  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharp-spec-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, 'bad.yaml'), yaml);
  const e3 = t.throws(() => loadSpec(path.join(dir, 'bad.yaml'))) as SpecError;
  t.match(e3.message, /bad\.yaml: lab spec: 1 problem\n {2}spec \(line 5, column \d+\): not valid YAML/);
});

t.test('validation problems in a file carry the line of the offending value', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharp-spec-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const yaml = [
    'name: lines', //  1
    'hosts:', //  2
    '  - name: a', //  3
    '    ip: 10.0.0.1/24', //  4
    '  - name: b', //  5
    '    ip: 10.0.0.2/24', //  6
    '    mac: nope', //  7
    'switches: [{ name: s1 }]', //  8
    'links:', //  9
    '  - [a, s1]', // 10
    '  - [b, s1]', // 11
    'rules:', // 12
    '  - switch: s1', // 13
    '    match: { dst: 10.0.0.2/32 }', // 14
    '    to: c', // 15
    '',
  ].join('\n');
  writeFileSync(path.join(dir, 'l.yaml'), yaml);
  const e = t.throws(() => loadSpec(path.join(dir, 'l.yaml'))) as SpecError;
  t.match(e.errors, [
    { path: 'hosts[1].mac', line: 7, column: 10 },
    { path: 'rules[0].to', line: 15, column: 9, message: "'c' is not a neighbour of switch s1 (neighbours: a, b)" },
  ]);
  t.equal(e.errors.length, 2);
  // a missing property points at the object that lacks it
  writeFileSync(path.join(dir, 'm.yaml'), yaml.replace('    ip: 10.0.0.2/24\n', ''));
  const m = t.throws(() => loadSpec(path.join(dir, 'm.yaml'))) as SpecError;
  t.match(m.errors, [{ path: 'hosts[1].ip', line: 5, message: /^required property is missing/ }, { path: 'hosts[1].mac' }, { path: 'rules[0].to' }]);
  // JSON files too
  writeFileSync(path.join(dir, 'j.json'), JSON.stringify({ ...(base() as object), target: 'tofino' }, null, 2));
  const j = t.throws(() => loadSpec(path.join(dir, 'j.json'))) as SpecError;
  t.match(j.errors, [{ path: 'target', message: "'tofino' is not allowed; use one of: xdp, bmv2" }]);
  const targetLine = readFileSync(path.join(dir, 'j.json'), 'utf8').split('\n').findIndex((l) => l.includes('"target"')) + 1;
  t.equal(j.errors[0]!.line, targetLine);
});

t.test('the default spec', async (t) => {
  const d = defaultSpec();
  t.same(validateSpec(d), { ok: true, spec: d }, 'valid, and already complete');
  t.ok(defaultSpecPath().endsWith(path.join('src', 'lab', 'spec', 'default.yaml')), defaultSpecPath());
  t.same(loadSpec(defaultSpecPath()), d, 'default.yaml and defaultSpec() agree');
  t.not(defaultSpec(), d, 'a fresh object each call');
  t.same(d.hosts.map((h) => h.ip), ['10.0.0.1/24', '10.0.0.2/24']);
  t.same(vnfSwitches(d, 'vnf1'), ['s1', 's2']);
  t.same(vnfSwitches(d, 'vnf2'), ['s1', 's2']);
  // client -> server goes to vnf1 on s1; server -> client goes to vnf1 on s2; both deliver back
  t.match(d.rules, [
    { switch: 's1', match: { dst: '10.0.0.2/32', from: 'client' }, to: 'vnf1' },
    { switch: 's1', match: { dst: '10.0.0.1/32' }, to: 'client' },
    { switch: 's2', match: { dst: '10.0.0.1/32', from: 'server' }, to: 'vnf1' },
    { switch: 's2', match: { dst: '10.0.0.2/32' }, to: 'server' },
  ]);
});

t.test('the schema file is a valid draft-07 schema that accepts the written specs', async (t) => {
  t.ok(schemaPath().endsWith(path.join('src', 'lab', 'spec', 'lab-spec.schema.json')));
  const ajv = new Ajv({ strict: true, allErrors: true });
  const validate = ajv.compile(labSpecSchema());
  t.equal(validate(parseSpec(readFileSync(defaultSpecPath(), 'utf8'), 'yaml')), true, 'default.yaml');
  t.equal(validate(base()), true, 'shorthand input');
  t.equal(validate(expectedBase()), true, 'normalized output');
});
