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
 *   rules:
 *     - { switch: s1, match: { dst: 10.0.0.2/32, from: client }, to: vnfa, priority: 1 }
 *     - { switch: s1, flow: { src: 10.0.0.1, dst: 10.0.0.2, sport: 20000, dport: 9000, proto: udp }, to: vnfa }
 */
import path from 'node:path';
import { Ajv } from 'ajv';
import { ConfigFileError, describeAjvError, readConfigFile } from '../util/config-file.js';
import { STATE_KINDS, type StateKind } from '../state/factory.js';

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

export interface DeploySpec {
  controller: { name: string; certs?: string; journal: string };
  state: StateKind;
  nodes: DeployNode[];
  rules: DeployRule[];
}

export const MAX_DEPLOY_SPEC_BYTES = 1 << 20;
const NAME = '^[A-Za-z0-9_-]{1,32}$';
const PROTO = { anyOf: [{ enum: ['udp', 'tcp', 'icmp'] }, { type: 'integer', minimum: 0, maximum: 255 }] };
const PORT = { type: 'integer', minimum: 0, maximum: 65535 };
const ADDRESS = '^(\\[[0-9a-fA-F:.]+\\]|[^:\\s]+):[0-9]{1,5}$';

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
  return {
    ...s,
    controller: { ...s.controller, journal: abs(s.controller.journal), ...(s.controller.certs === undefined ? {} : { certs: abs(s.controller.certs) }) },
    nodes: s.nodes.map((n) => ({ ...n, ...(n.socket === undefined ? {} : { socket: abs(n.socket) }) })),
  };
}
