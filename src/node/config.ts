/**
 * A node daemon's config (YAML or JSON): the interfaces it runs a switch on,
 * the interfaces that carry its VNF instances and their VNF kind, where it
 * listens and pins. Validated with ajv; every problem is reported with its
 * path.
 *
 *   name: s1
 *   listen: { unix: /run/sharpctl/node-s1.sock, tcp: "10.9.0.2:7441" }
 *     # frames (optional): the framed control channel beside gRPC (the unary calls, about a quarter of gRPC's CPU per call):
 *     #   { tcp: "10.9.0.2:7442", unix: /run/sharpctl/node-s1.sock.frames }; default: listen.unix + ".frames",
 *     #   and listen.tcp's host at a free port (Health tells clients); false: none (clients then use gRPC only)
 *   tls: { ca: certs/ca.crt, cert: certs/node-s1.crt, key: certs/node-s1.key, allow: [ctl1] }
 *   peers: { ca: certs/ca.crt, allow: [vnf2] }   # VNF nodes only: state goes node to node
 *   stateStore: { redis: { url: "redis://10.9.0.9:6379/0", passwordFile: redis.pass } }   # VNF nodes only
 *     # or a Redis Cluster: { redis: { cluster: ["10.9.0.9:7000", "10.9.0.10:7000"], passwordFile: redis.pass } }
 *     # and/or E-State on the nodes: { estate: { group: lab1, listen: "10.9.0.3:7451", members: [{ node: vnf2, address: "10.9.0.4:7451" }] } }
 *   metrics: { tcp: "10.9.0.2:9441", allow: [prometheus] }     # or { unix: /run/sharpctl/s1.metrics.sock }
 *   switches:
 *     - name: s1
 *       ports:
 *         - { name: s1-client, ifname: enp1s0, role: host }
 *         - { name: s1-vnf1, ifname: enp2s0, role: vnf, instance: vnf1, side: 0 }
 *   instances:
 *     - { name: vnf1, kind: counter, ifaces: [eth0, eth1] }
 *   directRelay:   # only beside a switch that cannot relay (BMv2 running p4/sharp.p4) in this kernel
 *     - { netns: s1ns, ports: [{ ifname: s1-eth2, instance: vnf1, side: 0 }, { ifname: s1-eth3, instance: vnf2, side: 0 }] }
 *   p4Switches:    # BMv2 switches on this host that the controller drives over P4Runtime: the node reads their ports' receive counts, nothing else
 *     - { name: s2, netns: s2ns, pidFile: /run/bmv2-s2.pid, ports: [{ name: s2-client, ifname: s2-eth1 }, { name: s2-vnf1, ifname: s2-eth2 }] }
 *       # pidFile (optional): BMv2's pid; the node then counts exactly what its input rings drop (it adopts BMv2's
 *       # packet sockets: root or CAP_SYS_PTRACE over BMv2, and the node must be their statistics' only reader)
 */
import path from 'node:path';
import { Ajv } from 'ajv';
import { ConfigFileError, describeAjvError, readConfigFile } from '../util/config-file.js';
import { VNF_KINDS, type VnfKindName } from './vnf-kinds.js';
import { SHARP_MAX_RULES_LIMIT, VNF_FLOWS_LIMIT } from '../dataplane/xdp/topology.js';

export interface NodeSwitchPortConfig {
  name: string;
  ifname: string;
  role: 'host' | 'vnf';
  instance?: string;
  /** the instance's side this port is cabled to (0: its ingress side) */
  side?: number;
}

export interface NodeConfig {
  name: string;
  listen: { unix?: string; tcp?: string; frames?: false | { unix?: string; tcp?: string } };
  tls?: { ca: string; cert: string; key: string; allow?: string[] };
  /**
   * Nodes this one moves VNF state with, node to node (TransferState): it
   * sends state only to these, and accepts a node certificate over TCP only
   * from these (and then only for Health and ImportState). ca: the CA their
   * certificates must be signed by (required with tls; this node presents
   * its own tls.cert to them).
   */
  peers?: { ca?: string; allow: string[] };
  /**
   * The store the node stages its instances' state in for handovers
   * (StageState / ObtainState): the old instance's node writes, the new
   * one's reads. Credentials stay on the node: the password is read from
   * passwordFile (relative to the config), never from the URL. One server
   * (url) or a Redis Cluster (cluster: some of its nodes, host:port; the
   * client learns the rest; failoverMs: how long a command keeps retrying
   * while the cluster fails over, default 5000).
   */
  stateStore?: {
    redis?: { url?: string; cluster?: string[]; username?: string; passwordFile?: string; keyPrefix: string; timeoutMs: number; failoverMs?: number };
    /**
     * E-State on the nodes: this node runs a member of the group (id: its
     * name) at `listen` (host:port: mutual TLS with tls.cert, members'
     * certificates checked against peers.ca and their names; or
     * unix:/path); the new instance's node fetches the staged records from
     * the members directly
     */
    estate?: { group: string; listen: string; members: { node: string; address: string }[]; timeoutMs: number };
  };
  /** Prometheus metrics: on a Unix socket (HTTP) and/or TCP (HTTPS, mutual TLS with the node's tls; allow: client certificate names, default any the CA issued) */
  metrics?: { unix?: string; tcp?: string; allow?: string[] };
  /** bpffs folder for this node's pins (default /sys/fs/bpf/sharpctl/<name>, or a private bpffs) */
  pinDir?: string;
  /** state folder (manifest), default /run/sharpctl/node-<name> */
  stateDir?: string;
  quiescenceMs: number;
  xdpMode: 'native' | 'generic';
  /** maxRules: the switch's rule tables (default SHARP_DEFAULT_MAX_RULES) */
  switches: { name: string; ports: NodeSwitchPortConfig[]; maxRules?: number }[];
  /** vnfFlows: records an XDP VNF's flow_state map holds (default SHARP_DEFAULT_VNF_FLOWS) */
  instances: { name: string; kind: VnfKindName; ifaces: [string, string]; ringCapacity: number; ringCount: number; vnfFlows?: number }[];
  /**
   * The switches this node's instances are cabled to when those cannot
   * relay (BMv2: p4/sharp.p4 drops every shim, and no p4c here to build a
   * relaying one): a rollback after switch-over then sends the held frames
   * straight out of the switch interface facing the target instance
   * (RELAY_DIRECT). Those interfaces must be in this kernel (netns: their
   * namespace), which a multi-host deployment cannot give: there a BMv2
   * rollback after switch-over needs a P4 relay. Absent: frames are
   * relayed through the switch (an XDP switch's relay route).
   */
  directRelay?: { netns?: string; ports: { ifname: string; instance: string; side: number }[] }[];
  /**
   * P4 switches (BMv2) on this host that the controller drives over
   * P4Runtime: the node reads their ports' receive counts and nothing else
   * (SwitchArrivals), so the controller can tell what BMv2's input buffers
   * hold or dropped (libpcap's ring drops silently). Port names as the
   * deployment spec names them; netns: the namespace of the interfaces
   * (default the node's). pidFile (relative to the config): the file
   * holding BMv2's pid; the node then adopts BMv2's packet sockets
   * (pidfd_getfd: root or CAP_SYS_PTRACE over BMv2) and reads exactly what
   * each port's input ring dropped. The kernel resets those statistics on
   * each read, so the node must be their only reader. Read at start (a
   * pid that cannot be adopted stops it) and again at every reading, so a
   * restarted BMv2's new pid is followed.
   */
  p4Switches?: { name: string; netns?: string; pidFile?: string; ports: { name: string; ifname: string }[] }[];
}

export const MAX_CONFIG_BYTES = 1 << 20;
const NAME = '^[A-Za-z0-9_-]{1,32}$';
const NETNS = '^[A-Za-z0-9_.-]{1,64}$';
const IFNAME = { type: 'string', minLength: 1, maxLength: 15 } as const;
/** the ports of a switch or of a namespace: 1 to 64 */
const portList = <R extends readonly string[], P extends object>(required: R, properties: P) => ({ type: 'array', minItems: 1, maxItems: 64, items: { type: 'object', additionalProperties: false, required, properties } }) as const;
const ADDRESS_OR_UNIX = '^((\\[[0-9a-fA-F:.]+\\]|[^:\\s/]+):[0-9]{1,5}|unix:/.{1,106})$';

export const nodeConfigSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'listen'],
  properties: {
    name: { type: 'string', pattern: NAME, description: 'the node name: letters, digits, _ and -, up to 32' },
    listen: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        unix: { type: 'string', minLength: 1, maxLength: 107 },
        tcp: { type: 'string', pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$' },
        frames: {
          description: 'the framed control channel beside gRPC: { unix, tcp } (defaults: listen.unix + ".frames"; listen.tcp\'s host, a free port), or false for none',
          anyOf: [
            { const: false },
            {
              type: 'object',
              additionalProperties: false,
              properties: { unix: { type: 'string', minLength: 1, maxLength: 107 }, tcp: { type: 'string', pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$' } },
            },
          ],
        },
      },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['ca', 'cert', 'key'],
      properties: { ca: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, allow: { type: 'array', items: { type: 'string', minLength: 1 } } },
    },
    peers: {
      type: 'object',
      additionalProperties: false,
      required: ['allow'],
      properties: { ca: { type: 'string', minLength: 1 }, allow: { type: 'array', maxItems: 256, uniqueItems: true, items: { type: 'string', pattern: NAME } } },
    },
    stateStore: {
      type: 'object',
      additionalProperties: false,
      properties: {
        estate: {
          type: 'object',
          additionalProperties: false,
          required: ['group', 'listen', 'members'],
          properties: {
            group: { type: 'string', pattern: NAME, description: "the group's name: nodes stage state for each other only in the same group" },
            listen: { type: 'string', pattern: ADDRESS_OR_UNIX, description: "host:port (mutual TLS) or unix:/path of this node's E-State member" },
            members: {
              type: 'array',
              maxItems: 256,
              items: {
                type: 'object',
                additionalProperties: false,
                required: ['node', 'address'],
                properties: { node: { type: 'string', pattern: NAME }, address: { type: 'string', pattern: ADDRESS_OR_UNIX } },
              },
            },
            timeoutMs: { type: 'integer', minimum: 10, maximum: 60000, default: 1000 },
          },
        },
        redis: {
          type: 'object',
          additionalProperties: false,
          properties: {
            url: { type: 'string', pattern: '^rediss?://[^\\s/@]+(/[0-9]{1,2})?$', description: 'redis://host:port[/db] or rediss:// (TLS); no credentials in it' },
            cluster: {
              type: 'array',
              minItems: 1,
              maxItems: 64,
              uniqueItems: true,
              description: 'a Redis Cluster instead of url: host:port of some of its nodes',
              items: { type: 'string', pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s/@]+):[0-9]{1,5}$' },
            },
            failoverMs: { type: 'integer', minimum: 0, maximum: 60000, description: 'cluster only: how long a command keeps retrying while the cluster fails over (default 5000)' },
            username: { type: 'string', minLength: 1, maxLength: 128 },
            passwordFile: { type: 'string', minLength: 1 },
            keyPrefix: { type: 'string', pattern: '^[A-Za-z0-9:_.-]{1,64}$', default: 'sharp:' },
            timeoutMs: { type: 'integer', minimum: 10, maximum: 60000, default: 2000 },
          },
        },
      },
    },
    metrics: {
      type: 'object',
      additionalProperties: false,
      minProperties: 1,
      properties: {
        unix: { type: 'string', minLength: 1, maxLength: 107 },
        tcp: { type: 'string', pattern: '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$' },
        allow: { type: 'array', items: { type: 'string', minLength: 1 } },
      },
    },
    pinDir: { type: 'string', minLength: 1 },
    stateDir: { type: 'string', minLength: 1 },
    quiescenceMs: { type: 'integer', minimum: 1, maximum: 1000, default: 5 },
    xdpMode: { enum: ['native', 'generic'], default: 'native' },
    switches: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'ports'],
        properties: {
          name: { type: 'string', pattern: NAME },
          maxRules: { type: 'integer', minimum: 2, maximum: SHARP_MAX_RULES_LIMIT },
          ports: portList(['name', 'ifname', 'role'], {
            name: { type: 'string', pattern: NAME },
            ifname: IFNAME,
            role: { enum: ['host', 'vnf'] },
            instance: { type: 'string', pattern: NAME },
            side: { type: 'integer', minimum: 0, maximum: 1 },
          }),
        },
      },
    },
    directRelay: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['ports'],
        properties: {
          netns: { type: 'string', pattern: NETNS },
          ports: portList(['ifname', 'instance', 'side'], { ifname: IFNAME, instance: { type: 'string', pattern: NAME }, side: { type: 'integer', minimum: 0, maximum: 1 } }),
        },
      },
    },
    p4Switches: {
      type: 'array',
      minItems: 1,
      maxItems: 64,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'ports'],
        properties: {
          name: { type: 'string', pattern: NAME },
          netns: { type: 'string', pattern: NETNS },
          pidFile: { type: 'string', minLength: 1, maxLength: 4096 },
          ports: portList(['name', 'ifname'], { name: { type: 'string', pattern: NAME }, ifname: IFNAME }),
        },
      },
    },
    instances: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'kind', 'ifaces'],
        properties: {
          name: { type: 'string', pattern: NAME },
          kind: { enum: Object.keys(VNF_KINDS) },
          ifaces: { type: 'array', minItems: 2, maxItems: 2, items: IFNAME },
          ringCapacity: { type: 'integer', minimum: 16, maximum: 262144, default: 8192 },
          ringCount: { type: 'integer', minimum: 1, maximum: 64, default: 4 },
          vnfFlows: { type: 'integer', minimum: 1, maximum: VNF_FLOWS_LIMIT },
        },
      },
    },
  },
} as const;

export class NodeConfigError extends ConfigFileError {
  override name = 'NodeConfigError';
}

let validate: ReturnType<Ajv['compile']> | undefined;

/** Validates a parsed config: schema, then cross-field rules; throws NodeConfigError listing every problem. */
export function validateNodeConfig(value: unknown, file = 'node config'): NodeConfig {
  validate ??= new Ajv({ allErrors: true, useDefaults: true, strict: true }).compile(nodeConfigSchema);
  const copy = structuredClone(value);
  if (!validate(copy)) throw new NodeConfigError(file, (validate.errors ?? []).map(describeAjvError));
  const c = copy as NodeConfig;
  const issues: string[] = [];
  if (c.listen.tcp !== undefined && c.tls === undefined) issues.push('listen.tcp: a node listens on TCP only with mutual TLS: add tls { ca, cert, key }');
  if (c.metrics?.tcp !== undefined && c.tls === undefined) issues.push('metrics.tcp: metrics are served on TCP only over HTTPS with mutual TLS: add tls { ca, cert, key } (or use metrics.unix)');
  if (c.metrics !== undefined && c.metrics.unix === undefined && c.metrics.tcp === undefined) issues.push('metrics: give unix and/or tcp');
  if (c.metrics?.unix !== undefined && c.metrics.unix === c.listen.unix) issues.push(`metrics.unix: ${c.metrics.unix} is the API socket (listen.unix)`);
  if (c.metrics?.tcp !== undefined && c.metrics.tcp === c.listen.tcp) issues.push(`metrics.tcp: ${c.metrics.tcp} is the API address (listen.tcp)`);
  const frames = c.listen.frames;
  if (frames !== undefined && frames !== false) {
    if (frames.tcp !== undefined && c.listen.tcp === undefined) issues.push('listen.frames.tcp: the framed channel is served on TCP with the API\'s mutual TLS: give listen.tcp (and tls) too');
    if (frames.tcp !== undefined && frames.tcp === c.listen.tcp) issues.push(`listen.frames.tcp: ${frames.tcp} is the gRPC address (listen.tcp)`);
    if (frames.tcp !== undefined && frames.tcp === c.metrics?.tcp) issues.push(`listen.frames.tcp: ${frames.tcp} is the metrics address (metrics.tcp)`);
    if (frames.unix !== undefined && (frames.unix === c.listen.unix || frames.unix === c.metrics?.unix)) issues.push(`listen.frames.unix: ${frames.unix} is ${frames.unix === c.listen.unix ? 'the gRPC socket (listen.unix)' : 'the metrics socket (metrics.unix)'}`);
  }
  if (c.peers !== undefined && c.tls !== undefined && c.peers.ca === undefined) issues.push("peers.ca: name the CA the peers' certificates must be signed by (it may be tls.ca)");
  if (c.peers?.ca !== undefined && c.tls === undefined) issues.push('peers.ca: without tls this node has no certificate to present to its peers: add tls { ca, cert, key } (or drop peers.ca: Unix-socket peers only)');
  if (c.peers?.allow.includes(c.name)) issues.push(`peers.allow: '${c.name}' is this node itself (state between its own instances never leaves it)`);
  if (c.stateStore !== undefined && c.instances.length === 0) issues.push('stateStore: this node carries no VNF instance: it has no state to stage');
  const store = c.stateStore?.redis;
  if (store !== undefined && store.url === undefined && store.cluster === undefined) issues.push('stateStore.redis: give url (one server, redis://host:port) or cluster (a Redis Cluster: [host:port, …])');
  if (store?.url !== undefined && store.cluster !== undefined) issues.push('stateStore.redis.cluster: give url (one server) or cluster (a Redis Cluster), not both');
  if (store?.failoverMs !== undefined && store.cluster === undefined) issues.push('stateStore.redis.failoverMs: only for a cluster (one server has no failover to wait for)');
  store?.cluster?.forEach((a, i) => {
    const port = Number(a.slice(a.lastIndexOf(':') + 1));
    if (!(port >= 1 && port <= 65535)) issues.push(`stateStore.redis.cluster.${i}: port ${port} is not 1-65535`);
  });
  if (c.peers !== undefined && c.instances.length === 0) issues.push('peers: this node carries no VNF instance: it has no state to move');
  if (c.stateStore !== undefined && c.stateStore.redis === undefined && c.stateStore.estate === undefined) issues.push('stateStore: give redis { url | cluster } and/or estate { group, listen, members }');
  const es = c.stateStore?.estate;
  if (es !== undefined) {
    const tcp = (a: string): boolean => !a.startsWith('unix:');
    if (tcp(es.listen) && (c.tls === undefined || c.peers?.ca === undefined)) issues.push("stateStore.estate.listen: a member on TCP serves mutual TLS only: add tls { ca, cert, key } and peers.ca (the CA of the members' certificates), or listen on unix:/path");
    es.members.forEach((m, i) => {
      if (m.node === c.name) issues.push(`stateStore.estate.members.${i}.node: '${m.node}' is this node itself`);
      if (tcp(m.address) && c.tls === undefined) issues.push(`stateStore.estate.members.${i}.address: reaching ${m.address} takes mutual TLS: add tls { ca, cert, key }`);
      if (es.members.findIndex((x) => x.node === m.node) !== i) issues.push(`stateStore.estate.members.${i}.node: '${m.node}' twice`);
    });
  }
  const instances = new Set(c.instances.map((i) => i.name));
  const seen = new Set<string>();
  const ifnames = new Set<string>();
  const claim = (at: string, ifname: string): void => {
    if (ifnames.has(ifname)) issues.push(`${at}: interface ${ifname} is used twice on this node`);
    ifnames.add(ifname);
  };
  c.switches.forEach((s, si) => {
    if (seen.has(s.name)) issues.push(`switches.${si}.name: '${s.name}' twice`);
    seen.add(s.name);
    s.ports.forEach((p, pi) => {
      const at = `switches.${si}.ports.${pi}`;
      claim(`${at}.ifname`, p.ifname);
      if (p.role === 'vnf' && p.instance === undefined) issues.push(`${at}: a vnf port names the instance behind it (instance: …)`);
      if (p.role === 'host' && p.instance !== undefined) issues.push(`${at}: a host port has no instance`);
    });
  });
  c.instances.forEach((i, ii) => {
    if (seen.has(i.name) || instances.size !== c.instances.length) if (c.instances.findIndex((x) => x.name === i.name) !== ii) issues.push(`instances.${ii}.name: '${i.name}' twice`);
    i.ifaces.forEach((f, k) => claim(`instances.${ii}.ifaces.${k}`, f));
    if ((i.ringCapacity & (i.ringCapacity - 1)) !== 0) issues.push(`instances.${ii}.ringCapacity: ${i.ringCapacity} is not a power of two`);
  });
  if (c.directRelay !== undefined && c.instances.length === 0) issues.push('directRelay: this node carries no VNF instance: it has nothing to relay');
  if (c.directRelay !== undefined && c.switches.length > 0) issues.push("directRelay: this node's own switches relay (their relay route); directRelay is for switches that cannot (BMv2), not beside them");
  // the ports facing this node's instances and those facing the instances they may relay to (on other nodes too)
  if (c.directRelay !== undefined && !c.instances.some((i) => c.directRelay!.some((d) => d.ports.some((p) => p.instance === i.name))))
    issues.push(`directRelay: no port faces an instance of this node (${c.instances.map((i) => i.name).join(', ')}): list the switch interfaces facing them and their targets`);
  // interfaces of the same namespace: the node's own (netns unset) are claimed with its switches' and instances'
  const p4Ifnames = new Map<string, Set<string>>();
  const p4Names = new Set<string>();
  c.p4Switches?.forEach((s, si) => {
    const at = `p4Switches.${si}`;
    if (p4Names.has(s.name)) issues.push(`${at}.name: '${s.name}' twice`);
    p4Names.add(s.name);
    if (seen.has(s.name)) issues.push(`${at}.name: '${s.name}' is a switch this node runs itself (switches): a P4 switch here is one the controller drives over P4Runtime`);
    const ports = new Set<string>();
    s.ports.forEach((p, pi) => {
      if (ports.has(p.name)) issues.push(`${at}.ports.${pi}.name: '${p.name}' twice in switch ${s.name}`);
      ports.add(p.name);
      if (s.netns === undefined) return claim(`${at}.ports.${pi}.ifname`, p.ifname);
      const ns = p4Ifnames.get(s.netns) ?? new Set<string>();
      if (ns.has(p.ifname)) issues.push(`${at}.ports.${pi}.ifname: interface ${p.ifname} of namespace ${s.netns} is used twice`);
      p4Ifnames.set(s.netns, ns.add(p.ifname));
    });
  });
  if (c.switches.length === 0 && c.instances.length === 0 && c.p4Switches === undefined) issues.push('(top level): the node runs nothing: give switches, instances and/or p4Switches');
  if (issues.length) throw new NodeConfigError(file, issues);
  return c;
}

/** Reads and validates a config file (a regular file up to 1 MiB; YAML or JSON). */
export function loadNodeConfig(file: string): NodeConfig {
  const value = readConfigFile(file, MAX_CONFIG_BYTES, 'a node config', (issues, cause) => new NodeConfigError(file, issues, cause === undefined ? undefined : { cause }));
  const c = validateNodeConfig(value, file);
  // relative TLS paths are relative to the config's folder
  if (c.tls !== undefined) {
    const dir = path.dirname(path.resolve(file));
    c.tls = { ...c.tls, ca: path.resolve(dir, c.tls.ca), cert: path.resolve(dir, c.tls.cert), key: path.resolve(dir, c.tls.key) };
  }
  if (c.peers?.ca !== undefined) c.peers = { ...c.peers, ca: path.resolve(path.dirname(path.resolve(file)), c.peers.ca) };
  const pw = c.stateStore?.redis?.passwordFile;
  if (pw !== undefined) c.stateStore = { ...c.stateStore, redis: { ...c.stateStore!.redis!, passwordFile: path.resolve(path.dirname(path.resolve(file)), pw) } };
  if (c.p4Switches !== undefined) c.p4Switches = c.p4Switches.map((s) => (s.pidFile === undefined ? s : { ...s, pidFile: path.resolve(path.dirname(path.resolve(file)), s.pidFile) }));
  return c;
}
