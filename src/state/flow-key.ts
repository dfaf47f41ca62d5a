/**
 * Flow keys as strings, for the keys of state stores:
 * "17/10.0.0.1:20000>10.0.0.2:9000" (proto/src:sport>dst:dport), and
 * conversion of the XDP example VNF's record bytes (struct
 * sharp_vnf_flow_state, host byte order).
 */
import type { FlowKey } from '../dataplane/types.js';
import { StateError } from './types.js';

const FLOW_RE = /^(\d{1,3})\/(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})>(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/;

export function flowKeyString(f: FlowKey): string {
  return `${f.proto}/${f.src}:${f.sport}>${f.dst}:${f.dport}`;
}

export function parseFlowKeyString(s: string): FlowKey {
  const m = FLOW_RE.exec(s);
  if (m === null) throw new StateError(`not a flow key: '${s}' (expected proto/src:sport>dst:dport)`);
  return { proto: Number(m[1]), src: m[2]!, sport: Number(m[3]), dst: m[4]!, dport: Number(m[5]) };
}

/** Prefix of every per-flow item key: "flow/<flow>/". */
export const FLOW_PREFIX = 'flow/';

/** Store key of one flow's item: "flow/<flow>" or "flow/<flow>/<field>". */
export function flowItemKey(f: FlowKey, field?: string): string {
  return `${FLOW_PREFIX}${flowKeyString(f)}${field === undefined ? '' : `/${field}`}`;
}

/** The flow (and field, if any) of a store key made by flowItemKey; undefined for other keys. */
export function parseFlowItemKey(key: string): { flow: FlowKey; field: string | undefined } | undefined {
  if (!key.startsWith(FLOW_PREFIX)) return undefined;
  const rest = key.slice(FLOW_PREFIX.length);
  const slash = rest.indexOf('/', rest.indexOf('>'));
  const flowPart = slash < 0 ? rest : rest.slice(0, slash);
  if (!FLOW_RE.test(flowPart)) return undefined;
  return { flow: parseFlowKeyString(flowPart), field: slash < 0 ? undefined : rest.slice(slash + 1) };
}
