/**
 * A lab in Mininet with BMv2 switches: the same plan as the namespace lab
 * (names, interfaces, addresses), built by Mininet's Python API
 * (src/lab/mininet/sharp_topo.py) with one simple_switch_grpc per switch.
 * Mininet runs as a child process for the life of the lab; closing its stdin
 * stops it, and it removes everything it made.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { planLab, configureHosts, destroyLab, type NetnsLab } from './netns-lab.js';
import type { LabSpec } from './spec/types.js';
import { BMV2_CPU_PORT, type Bmv2Topology } from '../dataplane/bmv2/topology.js';
import { commandPath } from '../util/command.js';

/** Mininet's Python API is Debian's: it needs the system interpreter. */
export const SYSTEM_PYTHON = '/usr/bin/python3';
export const TOPO_SCRIPT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../src/lab/mininet/sharp_topo.py');

export class MininetLabError extends Error {
  override name = 'MininetLabError';
}

/** This machine cannot run a BMv2 lab (simple_switch_grpc or Mininet missing). */
export class Bmv2UnavailableError extends Error {
  override name = 'EnvironmentError';
}

export type Bmv2Availability = { ok: true; simpleSwitchGrpc: string } | { ok: false; reason: string };


/** Why Mininet cannot be used here, or undefined when it can. */
export function mininetMissing(): string | undefined {
  if (commandPath('mnexec') === undefined) return 'Mininet is not installed (apt-get install --no-install-recommends mininet)';
  try {
    execFileSync(SYSTEM_PYTHON, ['-c', 'import mininet.net'], { stdio: 'ignore' });
  } catch {
    return `${SYSTEM_PYTHON} cannot import mininet (apt-get install --no-install-recommends mininet)`;
  }
  return undefined;
}

/** Whether this machine can run a BMv2 lab; the reason when it cannot. */
export function bmv2Availability(): Bmv2Availability {
  const ssg = commandPath('simple_switch_grpc');
  if (ssg === undefined) return { ok: false, reason: 'simple_switch_grpc is not on PATH (BMv2 is in no package registry: build it from p4lang/behavioral-model, see README "P4 on BMv2")' };
  const mn = mininetMissing();
  return mn === undefined ? { ok: true, simpleSwitchGrpc: ssg } : { ok: false, reason: mn };
}

export interface MininetLabOptions {
  /** folder for sockets, the plan and logs (one per lab) */
  dir: string;
  /** the BMv2 binary (default: simple_switch_grpc on PATH) */
  simpleSwitchGrpc?: string;
  /** BMv2's own event log per switch (slow: only for debugging) */
  bmv2Log?: boolean;
  startTimeoutMs?: number;
  /** frames per BMv2 egress queue (default 16384: a whole hold ring's release fits) */
  queueDepth?: number;
}

export interface MininetLab extends NetnsLab {
  bmv2: Bmv2Topology;
  /** pid of the Mininet process */
  pid: number;
  /** what the lab could not set up as wanted (it runs anyway) */
  warnings: string[];
  /** stops BMv2, the nodes and links, and removes the namespace names */
  stop(): Promise<void>;
}

/** Builds the spec's lab in Mininet and waits until every switch answers on P4Runtime. */
export async function createMininetLab(spec: LabSpec, prefix: string, o: MininetLabOptions): Promise<MininetLab> {
  const avail = bmv2Availability();
  if (!avail.ok && (o.simpleSwitchGrpc === undefined || mininetMissing() !== undefined)) throw new Bmv2UnavailableError(`cannot build a BMv2 lab: ${avail.reason}`);
  const binary = o.simpleSwitchGrpc ?? (avail.ok ? avail.simpleSwitchGrpc : '');
  mkdirSync(o.dir, { recursive: true });
  const plan = planLab(spec, prefix);
  const bmv2: Bmv2Topology = {
    switches: plan.topology.switches.map((s, i) => ({
      name: s.name,
      netns: s.netns!,
      grpcAddress: `unix:${path.join(o.dir, `${s.name}.grpc`)}`,
      deviceId: i + 1,
      // BMv2 port = slot + 1 (port 0 is legal but easily mistaken for "none")
      ports: s.ports.map((p, slot) => ({ ...p, bmv2Port: slot + 1 })),
    })),
    instances: plan.topology.instances,
  };
  const planFile = path.join(o.dir, 'mininet-plan.json');
  writeFileSync(
    planFile,
    JSON.stringify(
      {
        nodes: plan.nodes,
        links: plan.links,
        bmv2: Object.fromEntries(
          bmv2.switches.map((s) => [
            s.name,
            {
              binary,
              deviceId: s.deviceId,
              cpuPort: BMV2_CPU_PORT,
              queueDepth: o.queueDepth ?? 16384,
              ports: s.ports.map((p) => ({ port: p.bmv2Port, ifname: p.ifname })),
              grpc: s.grpcAddress,
              notifications: path.join(o.dir, `${s.name}-notifications.ipc`),
              stdout: path.join(o.dir, `${s.name}-bmv2.out`),
              ...(o.bmv2Log === true ? { log: path.join(o.dir, `${s.name}-bmv2`) } : {}),
            },
          ]),
        ),
      },
      null,
      2,
    ),
  );
  destroyLab(prefix);
  const errLog = path.join(o.dir, 'mininet.err');
  const errFd = openSync(errLog, 'w');
  let child: ChildProcess;
  try {
    child = spawn(SYSTEM_PYTHON, [TOPO_SCRIPT, planFile], { stdio: ['pipe', 'pipe', errFd] });
  } finally {
    closeSync(errFd);
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopped ??= (async () => {
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGTERM'), 15_000);
      await exited;
      clearTimeout(timer);
      // a Mininet killed hard leaves its namespace names: remove them
      destroyLab(prefix);
    })());
  const stderrTail = (): string => (existsSync(errLog) ? readFileSync(errLog, 'utf8').trim().split('\n').slice(-5).join(' | ') : '');
  try {
    const ready = await new Promise<{ pid: number; warnings: string[]; switches?: Record<string, number> }>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      const timer = setTimeout(() => reject(new MininetLabError(`Mininet did not report ready within ${(o.startTimeoutMs ?? 60_000) / 1000} s (${errLog}: ${stderrTail()})`)), o.startTimeoutMs ?? 60_000);
      lines.on('line', (line) => {
        if (line.startsWith('READY ')) {
          clearTimeout(timer);
          resolve(JSON.parse(line.slice(6)) as { pid: number; warnings: string[]; switches?: Record<string, number> });
        } else if (line.startsWith('ERROR ')) {
          clearTimeout(timer);
          reject(new MininetLabError(`Mininet: ${line.slice(6)}${stderrTail() ? ` (${errLog}: ${stderrTail()})` : ''}`));
        }
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new MininetLabError(`Mininet exited (status ${code}) before the lab was ready (${errLog}: ${stderrTail()})`));
      });
    });
    configureHosts(plan.hosts);
    for (const s of bmv2.switches) {
      const pid = ready.switches?.[s.name];
      if (pid !== undefined) s.pid = pid;
    }
    return {
      prefix,
      hosts: plan.hosts,
      client: plan.hosts[0]!,
      server: plan.hosts[1] ?? plan.hosts[0]!,
      topology: plan.topology,
      namespaces: plan.nodes.map((n) => n.netns),
      spec,
      bmv2,
      pid: ready.pid,
      warnings: ready.warnings,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
