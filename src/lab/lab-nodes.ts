/**
 * A lab as a deployment of node daemons: one node config per namespace that
 * runs a switch or a VNF instance, and the processes that run them
 * (`sharpctl node run` inside each namespace). openNodeLab reaches them as
 * a controller reaches real hosts: over the lab's management network
 * (management-net.ts), TCP with mutual TLS, certificates from a CA the lab
 * makes in its folder. Each node keeps its Unix socket for local use only:
 * `node detach` refuses while a node answers there, `node status --socket`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { createLabFromSpec, destroyLab, labOfPlan, planLab, type NetnsLab } from './netns-lab.js';
import { processRecord, sameProcess, stopRecordedProcesses, type DaemonRecord, type LabAdoption } from './run-dir.js';
import { createManagementNetwork, removeManagementNetwork, ManagementNetworkError, MGMT_NODE_PORT, MGMT_ESTATE_PORT, type ManagementNetwork } from './management-net.js';
import type { LabSpec } from './spec/types.js';
import {
  DataPlaneError,
  instancesOf,
  type AgentHandoverStatus,
  type AgentInstanceInfo,
  type ControllerChannel,
  type Counter,
  type DivertedFrame,
  type DataPlane,
  type FlowKey,
  type FlowSelection,
  type FlowStateEntry,
  type HandoverMarkCounters,
  type InstanceInfo,
  type InterfaceDrops,
  type PortCounters,
  type ReleaseOptions, type ReleaseResult,
  type Rule,
  type RuleAction,
  type RuleActionUpdate,
  type AfterWrite,
  type SentTowards,
  type PortInput,
  type StateTransferOptions,
  type StateTransferResult,
} from '../dataplane/types.js';
import type { NodeConfig } from '../node/config.js';
import type { StagingStoreKind, StoreStagedState } from '../state/types.js';
import type { AgentSwitchView } from '../dataplane/xdp/agents.js';
import { DEFAULT_VNF_KIND } from '../node/vnf-kinds.js';
import { NodeClient, NodeDeployment } from '../node/client.js';
import { nodeChannel, tlsEndpoint, unixEndpoint } from '../node/transport/index.js';
import { caFiles, controllerTlsFiles, createCa, createControllerCert, createNodeCert, loadTls, nodeTlsFiles, type TlsMaterial } from '../node/transport/certs.js';

const NODE_INDEX = 'lab-nodes.json';

export interface LabNode {
  /** the lab's node name (switch or instance name) */
  role: string;
  netns: string;
  config: NodeConfig;
  configFile: string;
}

/** How lab nodes are reached over the management network. */
export interface LabNodeManagement {
  /** node namespace → its management address */
  addresses: ReadonlyMap<string, string>;
  /** the certificate folder (labCertificates makes it) */
  certsDir: string;
  /** the one controller the nodes accept (its certificate's name) */
  controller: string;
}

/**
 * One node per switch and per VNF instance; names `${nodePrefix}${switch|instance}`.
 * With `management`, each listens on its management address with mutual
 * TLS too, accepting only the lab's controller. With `p4Switches` (BMv2
 * switches the controller drives over P4Runtime) the switches get no node;
 * the P4 switches relay rollbacks themselves, unless `relayAround`: then
 * the instances' agents relay around them (directRelay: same kernel).
 */
export function labNodeConfigs(
  lab: NetnsLab,
  o: { dir: string; nodePrefix: string; quiescenceMs?: number; management?: LabNodeManagement; p4Switches?: readonly AgentSwitchView[]; relayAround?: boolean },
): LabNode[] {
  mkdirSync(o.dir, { recursive: true, mode: 0o700 });
  const out: LabNode[] = [];
  const add = (role: string, netns: string, c: Omit<NodeConfig, 'name' | 'listen' | 'stateDir' | 'quiescenceMs' | 'xdpMode'>): void => {
    const name = `${o.nodePrefix}${role}`;
    const m = o.management;
    const address = m?.addresses.get(netns);
    if (m !== undefined && address === undefined) throw new ManagementNetworkError(`namespace ${netns} (node ${name}) has no management address`);
    const remote = m === undefined ? {} : { tls: { ...nodeTlsFiles(m.certsDir, name), allow: [m.controller] } };
    const listen = { unix: path.join(o.dir, `${role}.sock`), ...(address === undefined ? {} : { tcp: `${address}:${MGMT_NODE_PORT}` }) };
    // metrics on a Unix socket: the lab daemon reads every drop counter there (sharpctl status, report)
    const config: NodeConfig = { name, listen, ...remote, metrics: { unix: path.join(o.dir, `${role}.metrics.sock`) }, stateDir: path.join(o.dir, `${role}.state`), quiescenceMs: o.quiescenceMs ?? 5, xdpMode: 'native', ...c };
    const configFile = path.join(o.dir, `${role}.json`);
    writeFileSync(configFile, JSON.stringify(config, null, 2));
    out.push({ role, netns, config, configFile });
  };
  const directRelay: Pick<NodeConfig, 'directRelay'> =
    o.p4Switches === undefined || o.relayAround !== true
      ? {}
      : { directRelay: o.p4Switches.map((s) => ({ ...(s.netns === undefined ? {} : { netns: s.netns }), ports: s.ports.flatMap((p) => (p.instance === undefined ? [] : [{ ifname: p.ifname, instance: p.instance, side: p.instanceSide ?? 0 }])) })) };
  for (const s of o.p4Switches === undefined ? lab.topology.switches : [])
    add(s.name, s.netns!, {
      switches: [{ name: s.name, ports: s.ports.map((p) => ({ name: p.name, ifname: p.ifname, role: p.role, ...(p.instance === undefined ? {} : { instance: p.instance, side: p.instanceSide ?? 0 }) })), ...(s.maxRules === undefined ? {} : { maxRules: s.maxRules }) }],
      instances: [],
    });
  // with a management network the instances' nodes move VNF state to each
  // other directly (TransferState over mutual TLS), not through the controller
  const instanceNodes = lab.topology.instances.map((i) => `${o.nodePrefix}${i.name}`);
  const peersOf = (name: string): Pick<NodeConfig, 'peers'> => {
    const allow = instanceNodes.filter((n) => n !== name);
    return o.management === undefined || allow.length === 0 ? {} : { peers: { ca: caFiles(o.management.certsDir).cert, allow } };
  };
  // and are the members of one E-State group (a handover with --state estate stages there)
  const estateAt = (i: { name: string; netns?: string }): string => {
    const address = o.management?.addresses.get(i.netns!);
    return address === undefined ? `unix:${path.join(o.dir, `${i.name}.estate.sock`)}` : `${address}:${MGMT_ESTATE_PORT}`;
  };
  const estateOf = (i: { name: string; netns?: string }): Pick<NodeConfig, 'stateStore'> => {
    if (o.management === undefined || lab.topology.instances.length < 2) return {};
    const members = lab.topology.instances.filter((x) => x.name !== i.name).map((x) => ({ node: `${o.nodePrefix}${x.name}`, address: estateAt(x) }));
    return { stateStore: { estate: { group: `${o.nodePrefix}estate`.slice(0, 32), listen: estateAt(i), members, timeoutMs: 1000 } } };
  };
  for (const i of lab.topology.instances)
    add(i.name, i.netns!, {
      switches: [],
      instances: [{ name: i.name, kind: i.kind ?? DEFAULT_VNF_KIND, ifaces: i.ifaces, ringCapacity: i.ringCapacity, ringCount: i.ringCount, ...(i.vnfFlows === undefined ? {} : { vnfFlows: i.vnfFlows }) }],
      ...peersOf(`${o.nodePrefix}${i.name}`),
      ...estateOf(i),
      ...directRelay,
    });
  // the index lets a later `lab down` detach the nodes even when their daemon died
  writeFileSync(path.join(o.dir, NODE_INDEX), JSON.stringify(out.map((n) => ({ role: n.role, netns: n.netns, configFile: n.configFile }))));
  return out;
}

export interface NodeProcess {
  node: LabNode;
  child: ChildProcess;
  /** what the node printed when ready */
  ready: { node: string; pid: number; adopted: boolean; unix: string | null; frames?: { unix: string | null; tcpPort: number | null } | null };
  /** the node's log lines so far (its log file, nodeLogFile) */
  readonly stderr: string[];
}

/**
 * Where a lab node process logs: a file next to its config, not a pipe to
 * the process that started it, so that the node outlives that process (a
 * write to a pipe whose reader died is EPIPE) and a later lab daemon, or an
 * operator, can read what it said.
 */
export const nodeLogFile = (node: Pick<LabNode, 'role' | 'configFile'>): string => path.join(path.dirname(node.configFile), `${node.role}.log`);

function logLines(file: string): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
  } catch {
    return [];
  }
}

/** how long one node process may take to get ready */
const START_TIMEOUT_MS = 20_000;

/** Starts `sharpctl node run` for a lab node inside its namespace; resolves once it serves. */
export function startNodeProcess(node: LabNode, o: { cli: string; timeoutMs?: number }): Promise<NodeProcess> {
  return new Promise((resolve, reject) => {
    // nsenter, not ip netns exec: the node must share the host's mount namespace, where its bpffs pins live
    // two malloc arenas: a long-lived node's resident memory otherwise creeps with glibc's per-thread arenas (README, soak)
    const env = { ...process.env, MALLOC_ARENA_MAX: process.env['MALLOC_ARENA_MAX'] ?? '2' };
    // stdout (a pipe) carries the ready line only; the log goes to a file (nodeLogFile)
    const log = nodeLogFile(node);
    const since = logLines(log).length;
    const logFd = openSync(log, 'a', 0o600);
    let child: ChildProcess;
    try {
      child = spawn('nsenter', [`--net=/run/netns/${node.netns}`, process.execPath, o.cli, 'node', 'run', '--config', node.configFile, '--json'], { stdio: ['ignore', 'pipe', logFd], env });
    } finally {
      closeSync(logFd);
    }
    const said = (): string => logLines(log).slice(since).join(' | ');
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`node ${node.config.name} did not get ready within ${o.timeoutMs ?? START_TIMEOUT_MS} ms: ${said()}`));
    }, o.timeoutMs ?? START_TIMEOUT_MS);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`node ${node.config.name} exited (${code}) before it was ready: ${said()}`));
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
      if (msg.ready === true)
        resolve({
          node,
          child,
          ready: msg as NodeProcess['ready'],
          get stderr() {
            return logLines(log).slice(since);
          },
        });
      else reject(new Error(`node ${node.config.name} failed to start: ${msg.error?.message ?? line}`));
    });
  });
}

/**
 * The lab's certificates in `dir`: a CA, one certificate per node (naming
 * its management address too) and one for the controller; returns the
 * controller's TLS material. One openssl call each, the leaves in parallel.
 */
export async function labCertificates(dir: string, nodes: readonly { name: string; address?: string }[], controller: string): Promise<TlsMaterial> {
  await createCa(dir, { name: 'sharp-lab-ca', force: true });
  await Promise.all([
    ...nodes.map((n) => createNodeCert(dir, n.name, { force: true, ...(n.address === undefined ? {} : { ips: [n.address] }) })),
    createControllerCert(dir, controller, { force: true }),
  ]);
  return loadTls(controllerTlsFiles(dir, controller), 'client');
}

/**
 * Connects to every node: over mutual TLS on its management address when
 * its config listens on TCP and `controller` (the controller's TLS
 * material) is given, else over its Unix socket. The engine's Deployment.
 */
export async function connectLabNodes(nodes: readonly LabNode[], o: { controller?: TlsMaterial; callTimeoutMs?: number } = {}): Promise<NodeDeployment> {
  const clients: NodeClient[] = [];
  const timeout = o.callTimeoutMs === undefined ? {} : { callTimeoutMs: o.callTimeoutMs };
  try {
    for (const n of nodes) {
      const { tcp, unix } = n.config.listen;
      const endpoint = tcp !== undefined && o.controller !== undefined ? tlsEndpoint(n.config.name, tcp, o.controller) : unixEndpoint(unix!, n.config.name);
      clients.push(await NodeClient.connect({ channel: nodeChannel(endpoint), ...timeout }));
    }
  } catch (e) {
    for (const c of clients) c.close();
    throw e;
  }
  return new NodeDeployment(clients);
}

/**
 * The DataPlane of a lab whose switches and instances are node processes:
 * every operation goes over the node API, the controller-buffer baseline's
 * packet path too (DivertedFrames, SendFromController).
 */
export class NodeLabDataPlane implements DataPlane {
  readonly #d: NodeDeployment;

  /** kind: the lab's switch target ('bmv2': its switches are the deployment's P4Runtime switches) */
  constructor(
    d: NodeDeployment,
    readonly kind: 'xdp' | 'bmv2' = 'xdp',
  ) {
    this.#d = d;
  }

  get deployment(): NodeDeployment {
    return this.#d;
  }

  get quiescenceMs(): number {
    return this.#d.switchControl.quiescenceMs;
  }

  switches(): string[] {
    return this.#d.switchControl.switches();
  }
  portTowards(sw: string, instance: string): string | undefined {
    return this.#d.switchControl.portTowards(sw, instance);
  }
  addRule(r: Omit<Rule, 'id'> & { id?: number }): Promise<Rule> {
    return this.#d.switchControl.addRule(r);
  }
  deleteRule(id: number): Promise<void> {
    return this.#d.switchControl.deleteRule(id);
  }
  getRule(id: number): Rule | undefined {
    return this.#d.switchControl.getRule(id);
  }
  rules(): Rule[] {
    return this.#d.switchControl.rules();
  }
  setRuleAction(id: number, a: RuleAction): Promise<void> {
    return this.#d.switchControl.setRuleAction(id, a);
  }
  async setRuleActions(updates: readonly RuleActionUpdate[]): Promise<void> {
    const sc = this.#d.switchControl;
    if (sc.setRuleActions !== undefined) return sc.setRuleActions(updates);
    for (const u of updates) await sc.setRuleAction(u.id, u.action);
  }
  setRuleActionsThenRead(updates: readonly RuleActionUpdate[], marksOf?: number): Promise<Map<string, AfterWrite>> {
    return this.#d.switchControl.setRuleActionsThenRead!(updates, marksOf);
  }
  ruleCounters(id: number): Promise<Counter> {
    return this.#d.switchControl.ruleCounters(id);
  }
  portCounters(sw: string): Promise<PortCounters[]> {
    return this.#d.switchControl.portCounters(sw);
  }
  handoverCounters(sw: string, hid: number): Promise<HandoverMarkCounters> {
    return this.#d.switchControl.handoverCounters(sw, hid);
  }
  resetHandoverCounters(sw: string, hid: number): Promise<void> {
    return this.#d.switchControl.resetHandoverCounters(sw, hid);
  }
  setRelay(sw: string, hid: number, port: string): Promise<void> {
    return this.#d.switchControl.setRelay(sw, hid, port);
  }
  clearRelay(sw: string, hid: number): Promise<void> {
    return this.#d.switchControl.clearRelay(sw, hid);
  }
  agentInstances(): AgentInstanceInfo[] {
    return this.#d.agentControl.agentInstances();
  }
  instances(): InstanceInfo[] {
    return instancesOf(this.#d);
  }
  checkAgent(i: string): Promise<void> {
    return this.#d.agentControl.checkAgent(i);
  }
  armOld(i: string, hid: number): Promise<void> {
    return this.#d.agentControl.armOld(i, hid);
  }
  armNew(i: string, hid: number, ring: number): Promise<void> {
    return this.#d.agentControl.armNew(i, hid, ring);
  }
  agentStatus(i: string, hid: number): Promise<AgentHandoverStatus | undefined> {
    return this.#d.agentControl.agentStatus(i, hid);
  }
  release(i: string, hid: number, o?: ReleaseOptions): Promise<ReleaseResult> {
    return this.#d.agentControl.release(i, hid, o);
  }
  disarm(i: string, hid: number): Promise<void> {
    return this.#d.agentControl.disarm(i, hid);
  }
  interfaceDrops(i: string): Promise<InterfaceDrops[]> {
    return this.#d.agentControl.interfaceDrops!(i);
  }
  // the exact quiescence event and host-to-host state moves, where the nodes offer them
  async sentTowardsInstances(sw: string): Promise<SentTowards[] | undefined> {
    return this.#d.switchControl.sentTowardsInstances?.(sw);
  }
  async ingestedFromInstances(sw: string): Promise<SentTowards[] | undefined> {
    return this.#d.switchControl.ingestedFromInstances?.(sw);
  }
  async inputShortfall(sw: string): Promise<Map<string, PortInput> | undefined> {
    return this.#d.switchControl.inputShortfall?.(sw);
  }
  countsInputDrops(sw: string): boolean {
    return this.#d.switchControl.countsInputDrops?.(sw) === true;
  }
  async arrivedFrames(i: string): Promise<[bigint, bigint] | undefined> {
    return this.#d.agentControl.arrivedFrames?.(i);
  }
  canTransferState(from: string, to: string): boolean {
    return this.#d.vnfState.canTransferState?.(from, to) === true;
  }
  transferState(from: string, to: string, sel: FlowSelection, o?: StateTransferOptions): Promise<StateTransferResult> {
    const vs = this.#d.vnfState;
    if (vs.transferState === undefined) return Promise.reject(new DataPlaneError('the nodes cannot move state host to host'));
    return vs.transferState(from, to, sel, o);
  }
  // staging in a store on the nodes' side (the lab's nodes: their E-State group)
  canStageState(from: string, to: string, store?: StagingStoreKind): boolean {
    return this.#d.vnfState.canStageState(from, to, store);
  }
  stageState(...a: Parameters<StoreStagedState['stageState']>): ReturnType<StoreStagedState['stageState']> {
    return this.#d.vnfState.stageState(...a);
  }
  obtainState(...a: Parameters<StoreStagedState['obtainState']>): ReturnType<StoreStagedState['obtainState']> {
    return this.#d.vnfState.obtainState(...a);
  }
  discardStagedState(...a: Parameters<StoreStagedState['discardStagedState']>): ReturnType<StoreStagedState['discardStagedState']> {
    return this.#d.vnfState.discardStagedState(...a);
  }
  exportState(i: string, sel: FlowSelection): Promise<FlowStateEntry[]> {
    return this.#d.vnfState.exportState(i, sel);
  }
  importState(i: string, e: readonly FlowStateEntry[]): Promise<void> {
    return this.#d.vnfState.importState(i, e);
  }
  deleteState(i: string, f: readonly FlowKey[]): Promise<void> {
    return this.#d.vnfState.deleteState(i, f);
  }

  // the controller-buffer baseline: diverted frames stream up from the switches' nodes (or P4 packet-ins), the buffer goes back down
  controllerDataPackets(): Promise<Counter> {
    return this.#d.packetPath.controllerDataPackets();
  }

  openControllerChannel(onFrame: (f: DivertedFrame) => void): ControllerChannel {
    return this.#d.packetPath.openControllerChannel(onFrame);
  }

  sendFromController(sw: string, port: string, frames: readonly Buffer[]): Promise<void> {
    return this.#d.packetPath.sendFromController(sw, port, frames);
  }

  async close(): Promise<void> {
    this.#d.close();
  }
}

export interface NodeLab {
  lab: NetnsLab;
  /** how the controller (this process) reaches the nodes */
  management: ManagementNetwork;
  nodes: NodeProcess[];
  dp: NodeLabDataPlane;
  /** the controller's certificate and key, to open more connections to the nodes */
  controllerTls: TlsMaterial;
  /** stops the nodes, detaches what they pinned, removes the namespaces; idempotent */
  close(): Promise<void>;
}

/**
 * Detaches a lab node's pins and programs (`sharpctl node detach` in its
 * namespace; in a fresh empty one if the namespace is gone, so nothing of
 * this host's is touched).
 */
export function detachLabNode(n: Pick<LabNode, 'netns' | 'configFile'>, cli: string): string | undefined {
  const enter = existsSync(`/run/netns/${n.netns}`) ? ['nsenter', `--net=/run/netns/${n.netns}`] : ['unshare', '--net'];
  try {
    execFileSync(enter[0]!, [...enter.slice(1), process.execPath, cli, 'node', 'detach', '--config', n.configFile], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    return String((e as { stderr?: Buffer }).stderr ?? e).trim();
  }
}

/** Stops the node processes a lab started (SIGTERM, by their pids), then detaches what each node pinned. */
export async function stopLabNodes(procs: readonly NodeProcess[], nodes: readonly LabNode[], cli: string): Promise<void> {
  for (const p of procs) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) continue;
    const exited = new Promise((r) => p.child.once('exit', r));
    p.child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  }
  for (const n of nodes) detachLabNode(n, cli);
}

/** Detaches every node a lab's node folder lists (lab down, also after its daemon was killed); returns the failures. */
export function detachLabNodesIn(dir: string, cli: string): string[] {
  let index: { netns: string; configFile: string }[];
  try {
    index = JSON.parse(readFileSync(path.join(dir, NODE_INDEX), 'utf8')) as typeof index;
  } catch {
    return [];
  }
  return index.flatMap((n) => {
    const err = detachLabNode(n, cli);
    return err === undefined ? [] : [`${n.configFile}: ${err}`];
  });
}

/** The node name and Unix socket of every node a lab's node folder lists (sharpctl capture --lab reaches them directly). */
export function labNodeSockets(dir: string): { name: string; socket: string }[] {
  let index: { configFile: string }[];
  try {
    index = JSON.parse(readFileSync(path.join(dir, NODE_INDEX), 'utf8')) as typeof index;
  } catch {
    return [];
  }
  return index.flatMap((n) => {
    const c = JSON.parse(readFileSync(n.configFile, 'utf8')) as NodeConfig;
    return c.listen.unix === undefined ? [] : [{ name: c.name, socket: c.listen.unix }];
  });
}

/** node names are DNS names: they are what the nodes' certificates name */
const labNodePrefix = (prefix: string): string => prefix.replace(/[^A-Za-z0-9-]/g, '-');
/** the one controller a lab's nodes accept (its certificate's name) */
const labControllerName = (prefix: string): string => `${labNodePrefix(prefix)}lab-controller`;

/** What a lab of node processes records for a daemon that may have to adopt it (LabAdoption, less what the daemon knows). */
export function nodeLabAdoption(nl: Pick<NodeLab, 'management' | 'nodes'>, nodesDir: string): Omit<LabAdoption, 'instances' | 'spec'> {
  return {
    nodesDir,
    nodes: nl.nodes.map((p) => ({ role: p.node.role, ...processRecord(p.ready.pid) })),
    management: { netns: nl.management.netns, rootIfname: nl.management.rootIfname },
  };
}

export class LabAdoptionError extends Error {
  override name = 'LabAdoptionError';
}

export interface AdoptedNode {
  role: string;
  name: string;
  pid: number;
  pidStart?: number;
  /** adopted: its process outlived the daemon that started it; restarted: it had died too, a new one re-adopted its pins */
  how: 'adopted' | 'restarted';
  /** its metrics socket */
  metrics?: string;
}

export interface AdoptedNodeLab {
  lab: NetnsLab;
  dp: NodeLabDataPlane;
  nodes: AdoptedNode[];
  /** stops the node processes (by pid and start time), detaches what they pinned, removes the namespaces; idempotent */
  close(): Promise<void>;
}

/**
 * Takes over a lab of node processes whose daemon died (lab recover): the
 * namespaces and the management network are there, each node process still
 * runs (the same pid and start time) or is started again (it re-adopts its
 * pins), and all are reached over the management network with the lab's
 * certificates, as the dead daemon reached them. Nothing is created but the
 * node processes that had died; nothing is removed if it fails.
 */
export async function adoptNodeLab(
  spec: LabSpec,
  prefix: string,
  o: {
    adoption: Omit<LabAdoption, 'instances' | 'spec'>;
    namespaces: readonly string[];
    cli: string;
    callTimeoutMs?: number;
    /** after each node process started again: the lab's node processes as they are now (recorded before anything else can fail) */
    onRestart?: (nodes: LabAdoption['nodes']) => void;
  },
): Promise<AdoptedNodeLab> {
  const gone = o.namespaces.filter((ns) => !existsSync(`/run/netns/${ns}`));
  if (gone.length) throw new LabAdoptionError(`namespace(s) ${gone.join(', ')} of the lab are gone: it cannot be adopted`);
  const lab = labOfPlan(planLab(spec, prefix), spec, prefix, [...o.namespaces]);
  let index: { role: string; netns: string; configFile: string }[];
  try {
    index = JSON.parse(readFileSync(path.join(o.adoption.nodesDir, NODE_INDEX), 'utf8')) as typeof index;
  } catch (e) {
    throw new LabAdoptionError(`the lab's node index ${path.join(o.adoption.nodesDir, NODE_INDEX)} cannot be read: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  const nodes: LabNode[] = index.map((n) => ({ ...n, config: JSON.parse(readFileSync(n.configFile, 'utf8')) as NodeConfig }));
  const adopted: AdoptedNode[] = [];
  const procs: DaemonRecord[] = [];
  /** the node processes as recorded, with those started again here */
  let current = [...o.adoption.nodes];
  const close = async (): Promise<void> => {
    await dp?.close();
    await stopRecordedProcesses(procs);
    for (const n of nodes) detachLabNode(n, o.cli);
    removeManagementNetwork(o.adoption.management);
    destroyLab(prefix);
  };
  let dp: NodeLabDataPlane | undefined;
  for (const n of nodes) {
    const was = o.adoption.nodes.find((x) => x.role === n.role);
    const metrics = n.config.metrics?.unix === undefined ? {} : { metrics: n.config.metrics.unix };
    if (was !== undefined && sameProcess(was.pid, was.pidStart)) {
      procs.push(was);
      adopted.push({ role: n.role, name: n.config.name, pid: was.pid, ...(was.pidStart === undefined ? {} : { pidStart: was.pidStart }), how: 'adopted', ...metrics });
      continue;
    }
    // one at a time: usually none or one has died with the daemon
    const p = await startNodeProcess(n, { cli: o.cli });
    const rec = processRecord(p.ready.pid);
    procs.push(rec);
    adopted.push({ role: n.role, name: n.config.name, ...rec, how: 'restarted', ...metrics });
    current = [...current.filter((x) => x.role !== n.role), { role: n.role, ...rec }];
    o.onRestart?.(current);
  }
  const tls = loadTls(controllerTlsFiles(path.join(o.adoption.nodesDir, 'certs'), labControllerName(prefix)), 'client');
  dp = new NodeLabDataPlane(await connectLabNodes(nodes, { controller: tls, ...(o.callTimeoutMs === undefined ? {} : { callTimeoutMs: o.callTimeoutMs }) }));
  let closed: Promise<void> | undefined;
  return { lab, dp, nodes: adopted, close: () => (closed ??= close()) };
}

/**
 * Builds the spec's namespaces and their management network, makes the
 * lab's certificates, runs a node process in each switch and VNF namespace
 * and connects to each over mutual TLS.
 */
export async function openNodeLab(spec: LabSpec, prefix: string, o: { dir: string; cli: string; quiescenceMs?: number; callTimeoutMs?: number }): Promise<NodeLab> {
  destroyLab(prefix);
  const lab = createLabFromSpec(spec, prefix);
  const nodePrefix = labNodePrefix(prefix);
  const controller = labControllerName(prefix);
  const procs: NodeProcess[] = [];
  let nodes: LabNode[] = [];
  let dp: NodeLabDataPlane | undefined;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      await dp?.close();
      await stopLabNodes(procs, nodes, o.cli);
      if (management !== undefined) removeManagementNetwork(management);
      destroyLab(prefix);
    })());
  let management: ManagementNetwork | undefined;
  try {
    const nodeNamespaces = [...lab.topology.switches, ...lab.topology.instances].map((x) => x.netns!);
    management = createManagementNetwork(prefix, nodeNamespaces);
    // the lab's namespaces: lab status calls the lab degraded when one is missing
    lab.namespaces.push(management.netns);
    const certsDir = path.join(o.dir, 'certs');
    nodes = labNodeConfigs(lab, { dir: o.dir, nodePrefix, management: { addresses: management.addresses, certsDir, controller }, ...(o.quiescenceMs === undefined ? {} : { quiescenceMs: o.quiescenceMs }) });
    const tls = await labCertificates(certsDir, nodes.map((n) => ({ name: n.config.name, address: management!.addresses.get(n.netns)! })), controller);
    // all at once: each spends most of its start loading programs into the kernel;
    // started together they share the CPUs, so each gets the time a start one after the other would have had
    const timeoutMs = START_TIMEOUT_MS * nodes.length;
    const started = await Promise.allSettled(nodes.map((n) => startNodeProcess(n, { cli: o.cli, timeoutMs })));
    for (const r of started) if (r.status === 'fulfilled') procs.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    dp = new NodeLabDataPlane(await connectLabNodes(nodes, { controller: tls, ...(o.callTimeoutMs === undefined ? {} : { callTimeoutMs: o.callTimeoutMs }) }));
    return { lab, management, nodes: procs, dp, controllerTls: tls, close };
  } catch (e) {
    await close();
    throw e;
  }
}
