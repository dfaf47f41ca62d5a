/**
 * An E-State node in a process of its own — a VNF instance's store as a
 * separate program, for tests (a peer that is frozen or killed mid-request)
 * and benchmarks (peers that do not share the asking node's event loop).
 *
 * Run directly: node peer-process.js '<json PeerSpec>'. It prints one JSON
 * line {"id","address","pid"} once it serves, and exits when its standard
 * input closes (so it never outlives its parent) or on SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { EStateNode } from './node.js';
import type { StateValue } from './proto.js';

/** JSON form of a value: a number, {"int": "<decimal>"}, {"str": "..."} or {"raw": "<base64>"}. */
export type JsonValue = number | { int: string } | { str: string } | { raw: string };

export interface PeerSpec {
  id: string;
  host?: string;
  port?: number;
  /** join the group of this member (host:port) */
  seed?: string;
  items?: [string, JsonValue][];
  answerDelayMs?: number;
  timeoutMs?: number;
  retries?: number;
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

export interface PeerProcess {
  readonly id: string;
  readonly address: string;
  readonly pid: number;
  readonly child: ChildProcess;
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
  try {
    const hello = await new Promise<{ id: string; address: string; pid: number }>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`E-State peer ${spec.id} did not start within ${startTimeoutMs} ms`)), startTimeoutMs);
      const rl = createInterface({ input: child.stdout! });
      rl.once('line', (line) => {
        clearTimeout(t);
        rl.close();
        child.stdout!.resume();
        try {
          resolve(JSON.parse(line) as { id: string; address: string; pid: number });
        } catch (e) {
          reject(new Error(`E-State peer ${spec.id} said '${line}'`, { cause: e }));
        }
      });
      child.once('exit', (code, sig) => {
        clearTimeout(t);
        reject(new Error(`E-State peer ${spec.id} exited (${sig ?? code}) before it served`));
      });
    });
    return { ...hello, child, signal: (s) => child.kill(s), stop };
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
    ...(spec.answerDelayMs === undefined ? {} : { answerDelayMs: spec.answerDelayMs }),
    ...(spec.timeoutMs === undefined ? {} : { timeoutMs: spec.timeoutMs }),
    ...(spec.retries === undefined ? {} : { retries: spec.retries }),
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
  process.stdin.on('end', quit);
  process.stdin.on('close', quit);
  process.stdin.resume();
  process.stdout.write(`${JSON.stringify({ id: node.id, address: node.address, pid: process.pid })}\n`);
}

if (process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
