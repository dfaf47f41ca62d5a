/**
 * The controller side of the `userspace` VNF kind: one VNF process per
 * instance, started in the instance's namespace, its TUN device wired into
 * the namespace's routing, its E-State node peered with the others'.
 *
 * Routing in an instance's namespace (what configureTunRouting sets up):
 *   - whatever IPv4 the stack receives on eth0 or eth1 (the agent's
 *     XDP_PASS, live or replayed) is forwarded into the TUN (policy rule
 *     `iif ethN lookup TUN_TABLE`, whose only route is the TUN);
 *   - what the process writes back arrives from the TUN and takes the main
 *     table: the host routes of configureStackVnfs (src/lab/netns-lab.ts)
 *     send it out of the side that reaches its destination;
 *   - the TUN has a 169.254.77.1/30 address: the process's barrier datagram
 *     to 169.254.77.2 is routed into the TUN behind every packet queued
 *     there, and not written back;
 *   - the TUN's queue is one FIFO (pfifo, txqueuelen TUN_QUEUE_LEN): the
 *     default fq_codel would interleave flows (and let the barrier overtake),
 *     and a full ring drops (a release replays a hold ring in one burst).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { inNetns, ip } from '../../net/iproute.js';
import type { DropCount, FlowKey } from '../../dataplane/types.js';
import { LIMITS } from '../../lab/spec/types.js';
import { flowItemKey } from '../../state/flow-key.js';
import type { VnfAnswer, VnfCommand, VnfProcessReady, VnfProcessSpec, VnfProcessStats } from './protocol.js';

/** the TUN device's name in every instance's namespace */
export const TUN_NAME = 'vnf0';
export const TUN_ADDRESS = '169.254.77.1/30';
export const BARRIER_ADDRESS = '169.254.77.2';
/** the routing table whose one route is the TUN */
export const TUN_TABLE = 77;
/** the TUN's transmit queue (and ring) in packets: above any hold ring's capacity (LIMITS.ringCapacity.max) */
export const TUN_QUEUE_LEN = LIMITS.ringCapacity.max;
const START_TIMEOUT_MS = 15_000;
const COMMAND_TIMEOUT_MS = 15_000;

const vnfProcessScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'vnf-process.js');

/** A userspace VNF process failed to start, died, or refused a command. */
export class UserspaceVnfError extends Error {
  override name = 'UserspaceVnfError';
  constructor(
    readonly instance: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`userspace VNF ${instance}: ${message}`, options);
  }
}

export interface UserspaceVnfInstanceSpec {
  name: string;
  netns: string;
  /** [side 0, side 1] */
  ifaces: readonly string[];
}

/** Wires an instance namespace's TUN into its routing (see the module comment). */
export function configureTunRouting(netns: string, tun: string, ifaces: readonly string[]): void {
  inNetns(netns, 'sysctl', ['-qw', `net.ipv4.conf.${tun}.rp_filter=0`, `net.ipv4.conf.${tun}.send_redirects=0`]);
  ip(['link', 'set', tun, 'txqueuelen', String(TUN_QUEUE_LEN), 'up'], netns);
  inNetns(netns, 'tc', ['qdisc', 'replace', 'dev', tun, 'root', 'pfifo', 'limit', String(TUN_QUEUE_LEN)]);
  ip(['addr', 'replace', TUN_ADDRESS, 'dev', tun], netns);
  ip(['route', 'replace', 'default', 'dev', tun, 'table', String(TUN_TABLE)], netns);
  for (const [i, ifname] of ifaces.entries()) {
    const pref = String(1000 + i);
    // replace: a rule of this preference left from before goes first
    try {
      ip(['rule', 'del', 'pref', pref], netns);
    } catch {
      // none there
    }
    ip(['rule', 'add', 'pref', pref, 'iif', ifname, 'lookup', String(TUN_TABLE)], netns);
  }
}

/** One instance's VNF process, as the controller drives it. */
export class UserspaceVnfProcess {
  readonly #waiting = new Map<number, { resolve: (a: VnfAnswer) => void; reject: (e: Error) => void }>();
  #sent = 0;
  readonly #exited: Promise<void>;
  #exitReason: string | undefined;

  private constructor(
    readonly name: string,
    readonly netns: string,
    readonly child: ChildProcess,
    readonly ready: VnfProcessReady,
    lines: ReturnType<typeof createInterface>,
  ) {
    this.#exited = new Promise<void>((r) => child.once('exit', () => r()));
    lines.on('line', (line) => {
      let a: VnfAnswer;
      try {
        a = JSON.parse(line) as VnfAnswer;
      } catch {
        return;
      }
      this.#waiting.get(a.n)?.resolve(a);
      this.#waiting.delete(a.n);
    });
    child.once('exit', (code, sig) => {
      this.#exitReason = `exited (${sig ?? code})`;
      for (const w of this.#waiting.values()) w.reject(new UserspaceVnfError(name, this.#exitReason));
      this.#waiting.clear();
    });
  }

  /** its E-State node's address */
  get address(): string {
    return this.ready.address;
  }

  get pid(): number {
    return this.ready.pid;
  }

  /** Starts the process in `spec.netns` and waits for its ready line. */
  static async start(inst: UserspaceVnfInstanceSpec, spec: Omit<VnfProcessSpec, 'name' | 'tun' | 'barrierAddress'> = {}): Promise<UserspaceVnfProcess> {
    const full: VnfProcessSpec = { ...spec, name: inst.name, tun: TUN_NAME, barrierAddress: BARRIER_ADDRESS };
    const child = spawn('ip', ['netns', 'exec', inst.netns, process.execPath, vnfProcessScript, JSON.stringify(full)], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, MALLOC_ARENA_MAX: '2' },
    });
    const lines = createInterface({ input: child.stdout! });
    let ready: VnfProcessReady;
    try {
      ready = await new Promise<VnfProcessReady>((resolve, reject) => {
        const t = setTimeout(() => reject(new UserspaceVnfError(inst.name, `did not start within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
        const onLine = (line: string): void => {
          clearTimeout(t);
          lines.off('line', onLine);
          try {
            const r = JSON.parse(line) as VnfProcessReady;
            if (r.ready !== true) throw new Error('not a ready line');
            resolve(r);
          } catch (e) {
            reject(new UserspaceVnfError(inst.name, `said '${line}' instead of its ready line`, { cause: e }));
          }
        };
        lines.on('line', onLine);
        child.once('error', (e) => reject(new UserspaceVnfError(inst.name, 'could not be started', { cause: e })));
        child.once('exit', (code, sig) => {
          clearTimeout(t);
          reject(new UserspaceVnfError(inst.name, `exited (${sig ?? code}) before it served`));
        });
      });
    } catch (e) {
      await stopChild(child);
      throw e;
    }
    const p = new UserspaceVnfProcess(inst.name, inst.netns, child, ready, lines);
    try {
      configureTunRouting(inst.netns, ready.tun, inst.ifaces);
    } catch (e) {
      await p.stop();
      throw new UserspaceVnfError(inst.name, `wiring ${ready.tun} into the routing of ${inst.netns} failed`, { cause: e });
    }
    return p;
  }

  /** One command; rejects with the process's error, after COMMAND_TIMEOUT_MS, or when it exits. */
  command(c: VnfCommand, timeoutMs = COMMAND_TIMEOUT_MS): Promise<VnfAnswer> {
    return new Promise<VnfAnswer>((resolve, reject) => {
      const stdin = this.child.stdin;
      if (this.#exitReason !== undefined || stdin === null || !stdin.writable) return reject(new UserspaceVnfError(this.name, this.#exitReason ?? 'has exited'));
      const n = ++this.#sent;
      const t = setTimeout(() => {
        this.#waiting.delete(n);
        reject(new UserspaceVnfError(this.name, `no answer to '${c.op}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiting.set(n, {
        resolve: (a) => {
          clearTimeout(t);
          if (a.error !== undefined) reject(new UserspaceVnfError(this.name, `${c.op}: ${a.error}`));
          else resolve(a);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      stdin.write(`${JSON.stringify({ n, ...c })}\n`);
    });
  }

  async stats(): Promise<VnfProcessStats> {
    return (await this.command({ op: 'stats' })).stats!;
  }

  /** Ends it (stdin closed, SIGTERM, SIGKILL after 3 s) and waits for its exit; idempotent. */
  async stop(): Promise<void> {
    await stopChild(this.child);
    await this.#exited;
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
  child.stdin?.end();
  child.kill('SIGTERM');
  await exited;
  clearTimeout(t);
}

/** Every userspace VNF process of a lab, their E-State nodes one group. */
export class UserspaceVnfFleet {
  readonly #procs: Map<string, UserspaceVnfProcess>;

  private constructor(procs: readonly UserspaceVnfProcess[]) {
    this.#procs = new Map(procs.map((p) => [p.name, p]));
  }

  /**
   * Starts one process per instance, one after the other: each later one
   * joins the E-State group through the first one's node. On failure, the
   * ones started are stopped again.
   */
  static async start(instances: readonly UserspaceVnfInstanceSpec[], o: { timeoutMs?: number } = {}): Promise<UserspaceVnfFleet> {
    const started: UserspaceVnfProcess[] = [];
    try {
      for (const inst of instances) {
        const seed = started[0]?.address;
        started.push(await UserspaceVnfProcess.start(inst, { ...(seed === undefined ? {} : { seed }), ...(o.timeoutMs === undefined ? {} : { timeoutMs: o.timeoutMs }) }));
      }
    } catch (e) {
      await Promise.all(started.map((p) => p.stop()));
      throw e;
    }
    return new UserspaceVnfFleet(started);
  }

  names(): string[] {
    return [...this.#procs.keys()];
  }

  has(name: string): boolean {
    return this.#procs.has(name);
  }

  get(name: string): UserspaceVnfProcess {
    const p = this.#procs.get(name);
    if (p === undefined) throw new UserspaceVnfError(name, `no such userspace VNF instance (known: ${this.names().join(', ') || 'none'})`);
    return p;
  }

  /** Per instance, the frames its TUN device could not queue to the process (cumulative; an unreadable counter is left out). */
  async tunDrops(): Promise<DropCount[]> {
    const out: DropCount[] = [];
    for (const p of this.#procs.values()) {
      const n = (await p.stats()).tunDropped;
      if (n >= 0) out.push({ where: `${p.name}/tun`, reason: 'vnfDropped', frames: BigInt(n) });
    }
    return out;
  }

  /** Deletes the flows' items (their counters) on every instance: a traffic run starts them over. */
  async deleteFlows(flows: readonly FlowKey[]): Promise<number> {
    const keys = flows.flatMap((f) => [flowItemKey(f, 'packets'), flowItemKey(f, 'bytes')]);
    let n = 0;
    for (const p of this.#procs.values()) n += (await p.command({ op: 'del', keys })).count ?? 0;
    return n;
  }

  /** Stops every process; idempotent. */
  async close(): Promise<void> {
    await Promise.all([...this.#procs.values()].map((p) => p.stop()));
  }
}
