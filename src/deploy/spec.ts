/**
 * A deployment spec: the nodes a controller drives (each by its Unix socket
 * or by address with mutual TLS), the controller's identity and journal,
 * the state backend and the rules to install. Validated with ajv; every
 * problem is reported with its path.
 *
 *   controller: { name: ctl1, certs: ./certs, journal: /var/lib/sharpctl/journal }
 *   state: vnf-map
 *   nodes:
 *     - { name: sw1, address: "10.9.0.2:7441" }
 *     - { name: vnfa, socket: /run/sharpctl/vnfa.sock }
 *     - { name: vnfb, address: "10.9.0.4:7441", peerAddress: "10.8.0.4:7441" }   # peers hand it state on another network
 *   switches:                     # switches the controller drives itself, over P4Runtime
 *     - name: s2
 *       target: bmv2
 *       p4runtime: "10.9.0.5:9559"  # mutual TLS: certs/ca.crt, controller-ctl1.crt/.key; its certificate must name s2
 *                                   # (sharpctl certs switch s2); or unix:/run/bmv2/s2.grpc: plaintext, the socket's permissions guard it
 *       # tls: { ca: …, cert: …, key: …, serverName: s2.lab }   # per switch, each field defaulting as above
 *       # plaintext: true             # TCP without authentication: only when said, and warned about
 *       deviceId: 1
 *       pipeline: existing          # it must run p4/sharp.p4 already (push: install it, emptying its tables)
 *       node: sw2                   # the node on s2's host whose config lists s2 under p4Switches: it reads the
 *                                   # ports' receive counts (what BMv2's input buffers drop); without it they are unseen
 *       ports:                      # name: BMv2 port number, and the instance side it is cabled to
 *         s2-client: { port: 1 }
 *         s2-vnfa: { port: 2, instance: vnfa, side: 0 }
 *   rules:
 *     - { switch: s1, match: { dst: 10.0.0.2/32, from: client }, to: vnfa, priority: 1 }
 *     - { switch: s1, flow: { src: 10.0.0.1, dst: 10.0.0.2, sport: 20000, dport: 9000, proto: udp }, to: vnfa }
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { controllerTlsFiles, type TlsFiles } from '../node/transport/certs.js';
import { ConfigFileError, describeAjvError, readConfigFile } from '../util/config-file.js';
import { STATE_KINDS, type StateKind } from '../state/factory.js';
import { BMV2_CPU_PORT, type PipelineMode } from '../dataplane/bmv2/topology.js';

export interface DeployNode {
  name: string;
  socket?: string;
  address?: string;
  /**
   * host:port at which the other nodes reach this node's mutual-TLS API to
   * hand it VNF state (TransferState); default: `address`, or the socket
   * (nodes on the controller's host)
   */
  peerAddress?: string;
}

export interface DeployRule {
  switch: string;
  /** a port name of the switch, or the neighbour behind it */
  to: string;
  priority?: number;
  match?: { src?: string; dst?: string; sport?: number; dport?: number; proto?: string | number; from?: string };
  flow?: { src: string; dst: string; sport: number; dport: number; proto: string | number };
}

/** A switch the controller drives itself over P4Runtime (it runs p4/sharp.p4 on BMv2). */
export interface DeploySwitch {
  name: string;
  target: 'bmv2';
  /** gRPC target of its P4Runtime server: host:port or unix:/path */
  p4runtime: string;
  deviceId: number;
  pipeline: PipelineMode;
  /** this controller's election id (default 1) */
  electionId?: number;
  /** the instances' nodes relay around this switch (their directRelay: same kernel only); default false: no rollback after switch-over through it */
  relayAround: boolean;
  /** port name → BMv2 port number and what it faces; slots in this order */
  ports: Record<string, { port: number; instance?: string; side?: 0 | 1 }>;
  /**
   * mutual TLS on a TCP address (the default there): files default to
   * controller.certs' ca.crt and controller-<name>.crt/.key, serverName
   * (what the switch's certificate must name) to the switch's name
   */
  tls?: DeploySwitchTls;
  /** plaintext gRPC on a TCP address: no authentication, so only when the spec says so (a warning names the switch) */
  plaintext?: boolean;
  /**
   * a node of `nodes` on the switch's host whose config lists this switch
   * under p4Switches: it reads the ports' receive counts, with which the
   * controller sees the frames BMv2's input buffers drop (unseen without)
   */
  node?: string;
}

export interface DeploySwitchTls {
  ca?: string;
  cert?: string;
  key?: string;
  serverName?: string;
}

/** What a switch's default certificates come from: controller.certs' ca.crt and controller-<name>.crt/.key. */
export type SwitchController = Partial<Pick<DeploySpec['controller'], 'name' | 'certs'>>;

/** How the controller reaches a switch's P4Runtime server. */
export type SwitchTransport =
  | { kind: 'unix' }
  | { kind: 'plaintext' }
  | {
      kind: 'tls';
      files: TlsFiles;
      /** where each file came from: the switch's tls field, or controller.certs */
      from: Record<keyof TlsFiles, 'tls' | 'controller.certs'>;
      serverName: string;
    };

export interface DeploySpec {
  controller: { name: string; certs?: string; journal: string };
  state: StateKind;
  nodes: DeployNode[];
  switches: DeploySwitch[];
  rules: DeployRule[];
}

export const MAX_DEPLOY_SPEC_BYTES = 1 << 20;
const NAME = '^[A-Za-z0-9_-]{1,32}$';
const PROTO = { anyOf: [{ enum: ['udp', 'tcp', 'icmp'] }, { type: 'integer', minimum: 0, maximum: 255 }] };
const PORT = { type: 'integer', minimum: 0, maximum: 65535 };
const ADDRESS = '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$';
/** host:port, or a Unix socket of at most 107 bytes */
const P4RUNTIME_TARGET = '^((\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}|unix:/.{1,106})$';

const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['controller', 'nodes'],
  properties: {
    controller: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'journal'],
      properties: { name: { type: 'string', pattern: NAME }, certs: { type: 'string', minLength: 1 }, journal: { type: 'string', minLength: 1 } },
    },
    state: { enum: [...STATE_KINDS], default: 'vnf-map' },
    nodes: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name'],
        properties: { name: { type: 'string', pattern: NAME }, socket: { type: 'string', minLength: 1, maxLength: 107 }, address: { type: 'string', pattern: ADDRESS }, peerAddress: { type: 'string', pattern: ADDRESS } },
      },
    },
    switches: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'target', 'p4runtime', 'deviceId', 'pipeline', 'ports'],
        properties: {
          name: { type: 'string', pattern: NAME },
          target: { enum: ['bmv2'] },
          p4runtime: { type: 'string', pattern: P4RUNTIME_TARGET },
          deviceId: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
          pipeline: { enum: ['push', 'existing'] },
          electionId: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
          relayAround: { type: 'boolean', default: false },
          tls: {
            type: 'object',
            additionalProperties: false,
            properties: { ca: { type: 'string', minLength: 1 }, cert: { type: 'string', minLength: 1 }, key: { type: 'string', minLength: 1 }, serverName: { type: 'string', pattern: '^[A-Za-z0-9.:_-]{1,253}$' } },
          },
          plaintext: { type: 'boolean' },
          node: { type: 'string', pattern: NAME },
          ports: {
            type: 'object',
            minProperties: 1,
            // p4/sharp.p4's slots are 8 bits wide
            maxProperties: 255,
            propertyNames: { pattern: NAME },
            additionalProperties: {
              type: 'object',
              additionalProperties: false,
              required: ['port'],
              // BMv2 port numbers are 9 bits; 255 is the CPU port
              properties: { port: { type: 'integer', minimum: 0, maximum: 510 }, instance: { type: 'string', pattern: NAME }, side: { enum: [0, 1] } },
            },
          },
        },
      },
    },
    rules: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['switch', 'to'],
        properties: {
          switch: { type: 'string', minLength: 1 },
          to: { type: 'string', minLength: 1 },
          priority: { type: 'integer', minimum: 0, maximum: 65535 },
          match: {
            type: 'object',
            additionalProperties: false,
            properties: { src: { type: 'string' }, dst: { type: 'string' }, sport: PORT, dport: PORT, proto: PROTO, from: { type: 'string' } },
          },
          flow: {
            type: 'object',
            additionalProperties: false,
            required: ['src', 'dst', 'sport', 'dport', 'proto'],
            properties: { src: { type: 'string' }, dst: { type: 'string' }, sport: PORT, dport: PORT, proto: PROTO },
          },
        },
      },
    },
  },
} as const;

export class DeploySpecError extends ConfigFileError {
  override name = 'DeploySpecError';
}

let validate: ReturnType<Ajv['compile']> | undefined;

const TLS_FIELDS = ['ca', 'cert', 'key'] as const;

/**
 * A switch's transport: a Unix socket is plaintext (its file permissions
 * guard it); TCP is mutual TLS unless the spec says `plaintext: true`.
 * Undefined when TCP with TLS lacks files (no tls field and no controller.certs).
 */
export function switchTransport(controller: SwitchController, sw: DeploySwitch): SwitchTransport | undefined {
  if (sw.p4runtime.startsWith('unix:')) return { kind: 'unix' };
  if (sw.plaintext === true) return { kind: 'plaintext' };
  const defaults = controller.certs === undefined || controller.name === undefined ? undefined : controllerTlsFiles(controller.certs, controller.name);
  const files: Partial<TlsFiles> = {};
  const from: Partial<Record<keyof TlsFiles, 'tls' | 'controller.certs'>> = {};
  for (const f of TLS_FIELDS) {
    const v = sw.tls?.[f] ?? defaults?.[f];
    if (v === undefined) return undefined;
    files[f] = v;
    from[f] = sw.tls?.[f] === undefined ? 'controller.certs' : 'tls';
  }
  return { kind: 'tls', files: files as TlsFiles, from: from as Record<keyof TlsFiles, 'tls' | 'controller.certs'>, serverName: sw.tls?.serverName ?? sw.name };
}

export function validateDeploySpec(value: unknown, file = 'deployment spec'): DeploySpec {
  validate ??= new Ajv({ allErrors: true, useDefaults: true, strict: false }).compile(schema);
  const copy = structuredClone(value);
  if (!validate(copy)) throw new DeploySpecError(file, (validate.errors ?? []).filter((e) => e.keyword !== 'anyOf').map(describeAjvError));
  const s = copy as DeploySpec;
  const issues: string[] = [];
  const names = new Set<string>();
  s.nodes.forEach((n, i) => {
    if (names.has(n.name)) issues.push(`nodes.${i}.name: '${n.name}' twice`);
    names.add(n.name);
    if ((n.socket === undefined) === (n.address === undefined)) issues.push(`nodes.${i}: give exactly one of socket (local) or address (mutual TLS)`);
    if (n.address !== undefined && s.controller.certs === undefined) issues.push(`nodes.${i}.address: a node over TCP needs controller.certs (ca.crt, controller-${s.controller.name}.crt/.key)`);
  });
  const switchNames = new Set<string>();
  s.switches.forEach((sw, i) => {
    if (switchNames.has(sw.name)) issues.push(`switches.${i}.name: '${sw.name}' twice`);
    switchNames.add(sw.name);
    const ports = new Map<number, string>();
    for (const [name, p] of Object.entries(sw.ports)) {
      if (p.port === BMV2_CPU_PORT) issues.push(`switches.${i}.ports.${name}.port: ${BMV2_CPU_PORT} is the switch's CPU port (simple_switch_grpc --cpu-port ${BMV2_CPU_PORT})`);
      const other = ports.get(p.port);
      if (other !== undefined) issues.push(`switches.${i}.ports.${name}.port: BMv2 port ${p.port} is port ${other} already`);
      ports.set(p.port, name);
      if (p.side !== undefined && p.instance === undefined) issues.push(`switches.${i}.ports.${name}.side: only a port facing an instance has a side (give instance)`);
    }
    if (sw.node !== undefined && !names.has(sw.node)) issues.push(`switches.${i}.node: '${sw.node}' is not a node of nodes (${[...names].join(', ')}): name the node on switch ${sw.name}'s host that reads its ports`);
    const unix = sw.p4runtime.startsWith('unix:');
    if (unix && sw.tls !== undefined) issues.push(`switches.${i}.tls: switch ${sw.name} is on a Unix socket (${sw.p4runtime}): P4Runtime there is plaintext, its file permissions guard it; drop tls (or give a TCP address)`);
    else if (sw.plaintext === true && sw.tls !== undefined) issues.push(`switches.${i}.plaintext: give tls (mutual TLS) or plaintext: true, not both`);
    else if (!unix && switchTransport(s.controller, sw) === undefined) {
      const missing = TLS_FIELDS.filter((f) => sw.tls?.[f] === undefined);
      issues.push(
        `switches.${i}.p4runtime: switch ${sw.name} over TCP takes mutual TLS: add controller.certs (ca.crt, controller-${s.controller.name}.crt/.key) or switches.${i}.tls { ${missing.join(', ')} }; plaintext: true to run it without authentication`,
      );
    }
  });
  s.rules.forEach((r, i) => {
    if ((r.match === undefined) === (r.flow === undefined)) issues.push(`rules.${i}: give exactly one of match (wildcard) or flow (exact)`);
    if (r.flow !== undefined && r.priority !== undefined) issues.push(`rules.${i}.priority: exact rules always win over wildcards; no priority`);
  });
  if (issues.length) throw new DeploySpecError(file, issues);
  return s;
}

/** Reads a spec file (a regular file up to 1 MiB; YAML or JSON); relative paths are relative to its folder. */
export function loadDeploySpec(file: string): DeploySpec {
  const value = readConfigFile(file, MAX_DEPLOY_SPEC_BYTES, 'a deployment spec', (issues, cause) => new DeploySpecError(file, issues, cause === undefined ? undefined : { cause }));
  const s = validateDeploySpec(value, file);
  const dir = path.dirname(path.resolve(file));
  const abs = (p: string): string => path.resolve(dir, p);
  const resolved: DeploySpec = {
    ...s,
    controller: { ...s.controller, journal: abs(s.controller.journal), ...(s.controller.certs === undefined ? {} : { certs: abs(s.controller.certs) }) },
    nodes: s.nodes.map((n) => ({ ...n, ...(n.socket === undefined ? {} : { socket: abs(n.socket) }) })),
    switches: s.switches.map((sw) => (sw.tls === undefined ? sw : { ...sw, tls: { ...sw.tls, ...Object.fromEntries(TLS_FIELDS.flatMap((f) => (sw.tls![f] === undefined ? [] : [[f, abs(sw.tls![f]!)]]))) } })),
  };
  // the certificates of the switches' mutual TLS, named by the field they come from: before any connection
  const issues: string[] = [];
  resolved.switches.forEach((sw, i) => {
    const tr = switchTransport(resolved.controller, sw);
    if (tr?.kind !== 'tls') return;
    for (const f of TLS_FIELDS) {
      if (existsSync(tr.files[f])) continue;
      issues.push(tr.from[f] === 'tls' ? `switches.${i}.tls.${f}: no such file ${tr.files[f]}` : `controller.certs: no such file ${tr.files[f]} (the ${f} of switch ${sw.name}'s mutual TLS, switches.${i})`);
    }
  });
  if (issues.length) throw new DeploySpecError(file, issues);
  return resolved;
}
