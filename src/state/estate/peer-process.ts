/**
 * An E-State node in a process of its own — a VNF instance's store as a
 * separate program, for tests (a peer that is frozen or killed mid-request)
 * and benchmarks (peers that do not share the asking node's event loop).
 *
 * Run directly: node peer-process.js '<json PeerSpec>'. It prints one JSON
 * line {"id","address","pid"} once it serves, and exits when its standard
 * input closes (so it never outlives its parent) or on SIGTERM. Further
 * lines on its standard input are commands (PeerProcess.set, .getGlobal),
 * each answered by one line on its standard output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { EStateNode } from './node.js';
import { HybridClock, wallClockUs } from './clock.js';
import type { StateItem, StateValue } from './proto.js';
import { loadTls, type TlsFiles } from '../../node/transport/certs.js';
import type { ReduceName } from './reduce.js';

/** JSON form of a value: a number, {"int": "<decimal>"}, {"str": "..."} or {"raw": "<base64>"}. */
export type JsonValue = number | { int: string } | { str: string } | { raw: string };

export interface PeerSpec {
  id: string;
  /** serve on TCP (needs tls); default: a Unix socket */
  host?: string;
  port?: number;
  /** the node's certificate files (mutual TLS on TCP) */
  tls?: TlsFiles;
  /** join the group of this member (host:port) */
  seed?: string;
  items?: [string, JsonValue][];
  answerDelayMs?: number;
  timeoutMs?: number;
  retries?: number;
  /**
   * fault injection for tests: the node's wall clock is this far (µs) ahead
   * of the host's (behind if negative), as if the process's clock were
   * skewed; the node then has a clock of its own instead of the process's
   */
  clockSkewUs?: number;
}

/** JSON form of an item. */
export interface JsonItem {
  key: string;
  owner: string;
  ts: number;
  value: JsonValue;
}

export function toJsonValue(v: StateValue): JsonValue {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return { int: v.toString() };
  if (typeof v === 'string') return { str: v };
  return { raw: v.toString('base64') };
}

export function fromJsonValue(v: JsonValue): StateValue {
  if (typeof v === 'number') return v;
  if ('int' in v) return BigInt(v.int);
  if ('str' in v) return v.str;
  return Buffer.from(v.raw, 'base64');
}

const itemToJson = (i: StateItem): JsonItem => ({ key: i.key, owner: i.owner, ts: i.ts, value: toJsonValue(i.value) });
const itemFromJson = (i: JsonItem): StateItem => ({ key: i.key, owner: i.owner, ts: i.ts, value: fromJsonValue(i.value) });

/** a command line on the peer's standard input, and its answer on its standard output (same n) */
type Op = { op: 'set'; key: string; value: JsonValue } | { op: 'global'; key: string; reduce: ReduceName };
type Command = { n: number } & Op;
type Answer = { n: number; item?: JsonItem; value?: JsonValue | null; items?: JsonItem[]; error?: string };

export interface PeerProcess {
  readonly id: string;
  readonly address: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** a write to the peer's local view (its set()); resolves with the item */
  set(key: string, value: StateValue): Promise<StateItem>;
  /** a read of the global view by the peer (its getGlobal()) */
  getGlobal(key: string, reduce: ReduceName): Promise<{ value: StateValue | undefined; items: StateItem[] }>;
  /** sends a signal (SIGSTOP freezes it, SIGCONT thaws it, SIGKILL kills it) */
  signal(sig: NodeJS.Signals): void;
  /** ends it (SIGKILL after 3 s) and waits for its exit */
  stop(): Promise<void>;
}

const thisFile = fileURLToPath(import.meta.url);

export async function spawnPeer(spec: PeerSpec, startTimeoutMs = 10_000): Promise<PeerProcess> {
  const child = spawn(process.execPath, [thisFile, JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
    child.kill('SIGCONT');
    child.stdin?.end();
    child.kill('SIGTERM');
    await exited;
    clearTimeout(t);
  };
  // line 1: the hello; then one answer per command
  const rl = createInterface({ input: child.stdout! });
  const waiting = new Map<number, { resolve: (a: Answer) => void; reject: (e: Error) => void }>();
  let sent = 0;
  let onHello: ((line: string) => void) | undefined;
  rl.on('line', (line) => {
    if (onHello !== undefined) return onHello(line);
    let a: Answer;
    try {
      a = JSON.parse(line) as Answer;
    } catch {
      return;
    }
    waiting.get(a.n)?.resolve(a);
    waiting.delete(a.n);
  });
  child.once('exit', (code, sig) => {
    for (const w of waiting.values()) w.reject(new Error(`E-State peer ${spec.id} exited (${sig ?? code})`));
    waiting.clear();
  });
  const command = (op: Op): Promise<Answer> =>
    new Promise<Answer>((resolve, reject) => {
      if (child.exitCode !== null || child.signalCode !== null || !child.stdin?.writable) return reject(new Error(`E-State peer ${spec.id} has exited`));
      const n = ++sent;
      waiting.set(n, { resolve, reject });
      child.stdin.write(`${JSON.stringify({ n, ...op })}\n`);
    }).then((a) => {
      if (a.error !== undefined) throw new Error(`E-State peer ${spec.id}: ${a.error}`);
      return a;
    });
  try {
    const hello = await new Promise<{ id: string; address: string; pid: number }>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`E-State peer ${spec.id} did not start within ${startTimeoutMs} ms`)), startTimeoutMs);
      onHello = (line): void => {
        clearTimeout(t);
        onHello = undefined;
        try {
          resolve(JSON.parse(line) as { id: string; address: string; pid: number });
        } catch (e) {
          reject(new Error(`E-State peer ${spec.id} said '${line}'`, { cause: e }));
        }
      };
      child.once('exit', (code, sig) => {
        clearTimeout(t);
        reject(new Error(`E-State peer ${spec.id} exited (${sig ?? code}) before it served`));
      });
    });
    return {
      ...hello,
      child,
      signal: (s) => child.kill(s),
      stop,
      set: async (key, value) => itemFromJson((await command({ op: 'set', key, value: toJsonValue(value) })).item!),
      getGlobal: async (key, reduce) => {
        const a = await command({ op: 'global', key, reduce });
        return { value: a.value === null || a.value === undefined ? undefined : fromJsonValue(a.value), items: (a.items ?? []).map(itemFromJson) };
      },
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as PeerSpec;
  const node = await EStateNode.start({
    id: spec.id,
    ...(spec.host === undefined ? {} : { host: spec.host }),
    ...(spec.port === undefined ? {} : { port: spec.port }),
    ...(spec.tls === undefined ? {} : { tls: loadTls(spec.tls, 'server') }),
    ...(spec.answerDelayMs === undefined ? {} : { answerDelayMs: spec.answerDelayMs }),
    ...(spec.timeoutMs === undefined ? {} : { timeoutMs: spec.timeoutMs }),
    ...(spec.retries === undefined ? {} : { retries: spec.retries }),
    ...(spec.clockSkewUs === undefined ? {} : { clock: new HybridClock(() => wallClockUs() + spec.clockSkewUs!) }),
  });
  for (const [k, v] of spec.items ?? []) node.set(k, fromJsonValue(v));
  if (spec.seed !== undefined) await node.join(spec.seed);
  let closing = false;
  const quit = (): void => {
    if (closing) return;
    closing = true;
    void node.close().finally(() => process.exit(0));
  };
  process.on('SIGTERM', quit);
  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    void answer(node, line).then((a) => process.stdout.write(`${JSON.stringify(a)}\n`));
  });
  commands.on('close', quit);
  process.stdout.write(`${JSON.stringify({ id: node.id, address: node.address, pid: process.pid })}\n`);
}

async function answer(node: EStateNode, line: string): Promise<Answer> {
  let n = 0;
  try {
    const c = JSON.parse(line) as Command;
    n = c.n;
    if (c.op === 'set') return { n, item: itemToJson(node.set(c.key, fromJsonValue(c.value))) };
    if (c.op === 'global') {
      const r = await node.getGlobal(c.key, c.reduce);
      const v = r.value as StateValue | undefined;
      return { n, value: v === undefined ? null : toJsonValue(v), items: r.items.map(itemToJson) };
    }
    return { n, error: `unknown command '${String((c as { op?: unknown }).op)}'` };
  } catch (e) {
    return { n, error: e instanceof Error ? e.message : String(e) };
  }
}

if (process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
