/**
 * P4Runtime calls made from inside a network namespace: this module, run
 * as `ip netns exec NS node p4runtime-in-netns.js '<op JSON>'`, performs one
 * operation there and prints its outcome as one JSON line (the error's name,
 * message and the fields of a P4RuntimeSecurityError when it fails). gRPC
 * connects asynchronously, so the namespace is entered by a process of its
 * own rather than by the test's thread.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { P4Info, P4RuntimeClient, P4RuntimeSecurityError, type P4RuntimeTlsOptions } from '../../src/p4runtime/index.js';
import { P4_ARTIFACTS } from '../../src/dataplane/bmv2/artifacts.js';
import { loadDeploySpec } from '../../src/deploy/spec.js';
import { connectP4RuntimeSwitches } from '../../src/deploy/controller.js';
import { runIn } from './bmv2.js';

export interface TlsFileOptions {
  ca: string;
  cert?: string;
  key?: string;
  serverName?: string;
}

export type NetnsOp =
  /** connect as primary and, if that works, install p4/sharp.p4 with cookie 42 and one tx_port entry: what an intruder would change */
  | { op: 'intrude'; address: string; deviceId: number; tls?: TlsFileOptions; timeoutMs?: number }
  /** a deployment spec's switches through the controller's path (loadDeploySpec, connectP4RuntimeSwitches) */
  | { op: 'deploy'; spec: string }
  /** what the switch runs: its pipeline cookie and the entries of the port tables */
  | { op: 'inspect'; address: string; deviceId: number; tls: TlsFileOptions };

export interface SwitchSnapshot {
  cookie: string | undefined;
  tables: Record<string, string[]>;
}

export type NetnsOutcome =
  | { ok: true; warnings: string[]; snapshot?: SwitchSnapshot; switches?: string[] }
  | { ok: false; warnings: string[]; error: { name: string; message: string; code?: number; address?: string; client?: string | null; serverName?: string | null } };

const TABLES = ['port_info', 'tx_port'];

function tlsOptions(o: TlsFileOptions | undefined): { tls?: P4RuntimeTlsOptions } {
  if (o === undefined) return {};
  return {
    tls: {
      ca: readFileSync(o.ca),
      ...(o.cert === undefined ? {} : { cert: readFileSync(o.cert) }),
      ...(o.key === undefined ? {} : { key: readFileSync(o.key) }),
      ...(o.serverName === undefined ? {} : { serverName: o.serverName }),
    },
  };
}

async function perform(op: NetnsOp, warnings: string[]): Promise<NetnsOutcome> {
  const p4info = P4Info.load(P4_ARTIFACTS.p4info);
  if (op.op === 'deploy') {
    const spec = loadDeploySpec(op.spec);
    const s = await connectP4RuntimeSwitches(spec.switches, { controller: spec.controller, warn: (m) => warnings.push(m) });
    const switches = s.switches();
    s.close();
    return { ok: true, warnings, switches };
  }
  const c = await P4RuntimeClient.connect({ address: op.address, deviceId: op.deviceId, electionId: op.op === 'intrude' ? 100n : 50n, timeoutMs: op.op === 'intrude' ? (op.timeoutMs ?? 5000) : 10_000, p4info, ...tlsOptions(op.tls) });
  try {
    if (op.op === 'intrude') {
      await c.setPipeline(p4info, readFileSync(P4_ARTIFACTS.bmv2Json), { cookie: 42n });
      await c.insertEntry({ table: 'tx_port', match: { slot: { exact: 9 } }, action: { name: 'set_tx', params: { port: 9 } } });
      return { ok: true, warnings };
    }
    const pipeline = await c.getPipeline('COOKIE_ONLY');
    const tables: Record<string, string[]> = {};
    for (const t of TABLES) tables[t] = (await c.readEntries(t)).map((e) => JSON.stringify(e, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))).sort();
    return { ok: true, warnings, snapshot: { cookie: pipeline?.cookie?.toString(), tables } };
  } finally {
    c.close();
  }
}

async function main(): Promise<void> {
  const warnings: string[] = [];
  let out: NetnsOutcome;
  try {
    out = await perform(JSON.parse(process.argv[2]!) as NetnsOp, warnings);
  } catch (e) {
    const err = e as Error & { code?: unknown };
    const sec = e instanceof P4RuntimeSecurityError ? { address: e.address, client: e.client ?? null, serverName: e.serverName ?? null } : {};
    out = { ok: false, warnings, error: { name: err.name, message: err.message, ...(typeof err.code === 'number' ? { code: err.code } : {}), ...sec } };
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  // open gRPC handles must not keep the process
  process.exit(0);
}

const self = fileURLToPath(import.meta.url);

/** Runs `op` in namespace `netns` (a child node process) and returns its outcome; rejects only when the child itself fails. */
export async function inNetnsP4Runtime(netns: string, op: NetnsOp, timeoutMs = 60_000): Promise<NetnsOutcome> {
  const out = await runIn(netns, process.execPath, [self, JSON.stringify(op)], '', timeoutMs);
  const line = out.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as NetnsOutcome;
  } catch (e) {
    throw new Error(`${op.op} in ${netns} printed no outcome: ${out.trim()}`, { cause: e });
  }
}

if (process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url) await main();
