/**
 * A lab as a deployment of node daemons: one node config per namespace that
 * runs a switch or a VNF instance, and the processes that run them
 * (`sharpctl node run` inside each namespace), reached over their Unix
 * sockets. The nodes are the same program a real host runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { NetnsLab } from './netns-lab.js';
import type { NodeConfig } from '../node/config.js';
import { DEFAULT_VNF_KIND } from '../node/vnf-kinds.js';
import { NodeClient, NodeDeployment } from '../node/client.js';
import { nodeChannel, unixEndpoint } from '../node/transport/index.js';

export interface LabNode {
  /** the lab's node name (switch or instance name) */
  role: string;
  netns: string;
  config: NodeConfig;
  configFile: string;
}

/** One node per switch and per VNF instance; names `${nodePrefix}${switch|instance}`. */
export function labNodeConfigs(lab: NetnsLab, o: { dir: string; nodePrefix: string; quiescenceMs?: number }): LabNode[] {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const out: LabNode[] = [];
  const add = (role: string, netns: string, c: Omit<NodeConfig, 'name' | 'listen' | 'stateDir' | 'quiescenceMs' | 'xdpMode'>): void => {
    const name = `${o.nodePrefix}${role}`;
    const config: NodeConfig = { name, listen: { unix: path.join(o.dir, `${role}.sock`) }, stateDir: path.join(o.dir, `${role}.state`), quiescenceMs: o.quiescenceMs ?? 5, xdpMode: 'native', ...c };
    const configFile = path.join(o.dir, `${role}.json`);
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    out.push({ role, netns, config, configFile });
  };
  for (const s of lab.topology.switches)
    add(s.name, s.netns!, {
      switches: [{ name: s.name, ports: s.ports.map((p) => ({ name: p.name, ifname: p.ifname, role: p.role, ...(p.instance === undefined ? {} : { instance: p.instance, side: p.instanceSide ?? 0 }) })) }],
      instances: [],
    });
  for (const i of lab.topology.instances) add(i.name, i.netns!, { switches: [], instances: [{ name: i.name, kind: i.kind ?? DEFAULT_VNF_KIND, ifaces: i.ifaces, ringCapacity: i.ringCapacity, ringCount: i.ringCount }] });
  return out;
}

export interface NodeProcess {
  node: LabNode;
  child: ChildProcess;
  /** what the node printed when ready */
  ready: { node: string; pid: number; adopted: boolean; unix: string | null };
  stderr: string[];
}

/** Starts `sharpctl node run` for a lab node inside its namespace; resolves once it serves. */
export function startNodeProcess(node: LabNode, o: { cli: string; timeoutMs?: number }): Promise<NodeProcess> {
  return new Promise((resolve, reject) => {
    // nsenter, not ip netns exec: the node must share the host's mount namespace, where its bpffs pins live
    const child = spawn('nsenter', [`--net=/run/netns/${node.netns}`, process.execPath, o.cli, 'node', 'run', '--config', node.configFile, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const stderr: string[] = [];
    createInterface({ input: child.stderr! }).on('line', (l) => stderr.push(l));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`node ${node.config.name} did not get ready within ${o.timeoutMs ?? 20_000} ms: ${stderr.join(' | ')}`));
    }, o.timeoutMs ?? 20_000);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`node ${node.config.name} exited (${code}) before it was ready: ${stderr.join(' | ')}`));
    };
    child.once('exit', onExit);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      child.off('exit', onExit);
      let msg: { ready?: boolean; error?: { message: string } };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch (e) {
        reject(new Error(`node ${node.config.name} printed '${line}' instead of its ready line`, { cause: e }));
        return;
      }
      if (msg.ready === true) resolve({ node, child, ready: msg as NodeProcess['ready'], stderr });
      else reject(new Error(`node ${node.config.name} failed to start: ${msg.error?.message ?? line}`));
    });
  });
}

/** Connects to every node over its Unix socket: the engine's Deployment. */
export async function connectLabNodes(nodes: readonly LabNode[]): Promise<NodeDeployment> {
  const clients: NodeClient[] = [];
  try {
    for (const n of nodes) clients.push(await NodeClient.connect({ channel: nodeChannel(unixEndpoint(n.config.listen.unix!, n.config.name)) }));
  } catch (e) {
    for (const c of clients) c.close();
    throw e;
  }
  return new NodeDeployment(clients);
}
