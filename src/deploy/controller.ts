/**
 * The controller over a deployment spec: connects to every node (Unix
 * socket, or TCP with mutual TLS), installs the spec's rules, and runs
 * handovers with a journal on disk, so a controller killed mid-handover is
 * recovered by the next one it starts.
 */
import * as grpc from '@grpc/grpc-js';
import { NodeCallError, NodeClient, NodeDeployment, type SwitchPortInputs } from '../node/client.js';
import { controllerTlsFiles, loadTls, nodeChannel, tlsEndpoint, unixEndpoint } from '../node/transport/index.js';
import { HandoverEngine, type HandoverEvent, type HandoverResult } from '../handover/engine.js';
import { FileJournal } from '../handover/journal.js';
import { DelayedStateMover, type StateMover } from '../handover/state-mover.js';
import { controllerStateMover } from '../state/factory.js';
import { DataPlaneError, Phase, RuleError, type Rule, type RuleMatch } from '../dataplane/types.js';
import { protoNumber } from '../lab/spec/index.js';
import { P4RuntimeSwitches, type PortArrivals, type PortInputDrops } from '../dataplane/bmv2/p4runtime-switches.js';
import { P4_ARTIFACTS } from '../dataplane/bmv2/artifacts.js';
import type { P4RuntimeTlsOptions } from '../p4runtime/index.js';
import { switchTransport, type DeployRule, type DeploySpec, type DeploySwitch, type SwitchController } from './spec.js';

export interface Controller {
  /** the spec it was opened with */
  spec: DeploySpec;
  deployment: NodeDeployment;
  engine: HandoverEngine;
  /** vnf-map: host to host where the nodes are each other's peers (else through the controller); redis and estate: through the nodes' common stateStore (a Redis; an E-State group of the nodes), else through the controller's manager; other kinds: their state manager */
  mover: StateMover & { close?(): Promise<void> };
  close(): Promise<void>;
}

export async function connectDeployment(spec: DeploySpec, o: { callTimeoutMs?: number } = {}): Promise<NodeDeployment> {
  const tls = spec.nodes.some((n) => n.address !== undefined) ? loadTls(controllerTlsFiles(spec.controller.certs!, spec.controller.name), 'client') : undefined;
  const clients: NodeClient[] = [];
  try {
    for (const n of spec.nodes) {
      const channel = n.socket !== undefined ? nodeChannel(unixEndpoint(n.socket, n.name)) : nodeChannel(tlsEndpoint(n.name, n.address!, tls!));
      clients.push(await NodeClient.connect({ channel, ...(n.peerAddress === undefined ? {} : { statePeer: { address: n.peerAddress } }), ...(o.callTimeoutMs === undefined ? {} : { callTimeoutMs: o.callTimeoutMs }) }));
    }
    const onNodes = spec.switches.filter((s) => clients.some((c) => c.switches().includes(s.name)));
    if (onNodes.length > 0) throw new DataPlaneError(`switch ${onNodes[0]!.name} is in the spec's switches and runs on node ${clients.find((c) => c.switches().includes(onNodes[0]!.name))!.name} too: one of them must be renamed`);
    const direct = spec.switches.length === 0 ? [] : [await connectP4RuntimeSwitches(spec.switches, { controller: spec.controller, nodes: new Map(spec.nodes.map((n, i) => [n.name, clients[i]!])) })];
    return new NodeDeployment(clients, direct);
  } catch (e) {
    for (const c of clients) c.close();
    throw e;
  }
}

const warnOnStderr = (message: string): void => void process.stderr.write(`sharpctl: warning: ${message}\n`);

/**
 * The spec's P4Runtime switches, with p4/sharp.p4's committed artifacts:
 * `push` installs them; `existing` refuses a switch running anything else
 * (PipelineMismatchError, naming what it runs) and leaves it untouched.
 * Over TCP each is reached with mutual TLS (the controller's certificate
 * from controller.certs unless the switch's tls names others), checked
 * before connecting (CertificateFileError naming the file); `plaintext:
 * true` is warned about, naming the switch. A switch with `node` has its
 * ports' receive counts read by that node (`nodes`: the connected ones),
 * and what its input rings drop where the node knows BMv2's pid (else
 * warned about: losses estimated, not counted); one without is warned
 * about (the frames its input buffers drop are not seen).
 */
/**
 * A switch's arrivals and input drops from one SwitchArrivals call each
 * poll: P4RuntimeSwitches reads arrivals, then drops; the drops are those
 * of the latest reading whose drops no one took yet, else a reading of
 * their own. One reading also makes the two of the same instant.
 */
export function nodePortReaders(read: () => Promise<SwitchPortInputs | undefined>): { arrivals: PortArrivals; inputDrops: PortInputDrops } {
  let latest: { reading: Promise<SwitchPortInputs | undefined>; dropsTaken: boolean } | undefined;
  return {
    arrivals: async () => {
      const reading = read();
      latest = { reading, dropsTaken: false };
      return (await reading)?.arrivals;
    },
    inputDrops: async () => {
      const l = latest;
      if (l === undefined || l.dropsTaken) return (await read())?.dropped;
      l.dropsTaken = true;
      return (await l.reading)?.dropped;
    },
  };
}

export async function connectP4RuntimeSwitches(
  switches: readonly DeploySwitch[],
  o: { controller?: SwitchController; warn?: (message: string) => void; nodes?: ReadonlyMap<string, Pick<NodeClient, 'switchPortInputs'>> } = {},
): Promise<P4RuntimeSwitches> {
  const warn = o.warn ?? warnOnStderr;
  const tlsOf = (s: DeploySwitch): { tls?: P4RuntimeTlsOptions } => {
    const tr = switchTransport(o.controller ?? {}, s);
    if (tr === undefined) throw new DataPlaneError(`switch ${s.name} at ${s.p4runtime}: P4Runtime over TCP takes mutual TLS and no certificates are given (controller.certs or the switch's tls), nor plaintext: true`);
    if (tr.kind === 'plaintext') warn(`switch ${s.name}: P4Runtime at ${s.p4runtime} in plaintext (plaintext: true): whoever reaches that address can drive the switch`);
    if (tr.kind !== 'tls') return {};
    const m = loadTls(tr.files, 'client');
    return { tls: { ca: m.ca, cert: m.cert, key: m.key, serverName: tr.serverName } };
  };
  const readersOf = (s: DeploySwitch): { arrivals?: PortArrivals; inputDrops?: PortInputDrops } => {
    if (s.node === undefined) return {};
    const client = o.nodes?.get(s.node);
    if (client === undefined) throw new DataPlaneError(`switch ${s.name}: its node ${s.node} (which reads its ports) is not connected`);
    return nodePortReaders(() => client.switchPortInputs(s.name));
  };
  const readers = switches.map(readersOf);
  // one reading now: a node that does not list the switch is a mistake in the configs, better seen before any handover
  for (const [i, s] of switches.entries()) {
    const r = readers[i]!;
    if (r.arrivals === undefined) continue;
    const now = await r.arrivals().catch((e: unknown) => {
      if (e instanceof NodeCallError && e.code === grpc.status.NOT_FOUND) throw new DataPlaneError(`switch ${s.name}: node ${s.node} does not read its ports (${e.message}): list the switch under that node's p4Switches`, { cause: e });
      throw e;
    });
    if (now === undefined) {
      // no call each time that can only answer UNIMPLEMENTED
      readers[i] = {};
      warn(`switch ${s.name}: node ${s.node} predates SwitchArrivals: frames the switch's input buffers drop are not seen`);
      continue;
    }
    // the same reading's drops (no second call)
    if ((await r.inputDrops!()) !== undefined) continue;
    readers[i] = { arrivals: r.arrivals };
    warn(`switch ${s.name}: node ${s.node} reads its ports' arrivals but not what BMv2's input rings drop (give the node's p4Switches entry pidFile): losses are estimated, not counted`);
  }
  const connected = await P4RuntimeSwitches.connect(
    switches.map((s, i) => ({
      ...tlsOf(s),
      ...readers[i]!,
      name: s.name,
      grpcAddress: s.p4runtime,
      deviceId: s.deviceId,
      pipeline: s.pipeline,
      relayAround: s.relayAround,
      ...(s.electionId === undefined ? {} : { electionId: BigInt(s.electionId) }),
      ports: Object.entries(s.ports).map(([name, p]) => ({ name, bmv2Port: p.port, role: p.instance === undefined ? ('host' as const) : ('vnf' as const), ...(p.instance === undefined ? {} : { instance: p.instance, instanceSide: p.side ?? 0 }) })),
    })),
    { p4infoPath: P4_ARTIFACTS.p4info, deviceConfigPath: P4_ARTIFACTS.bmv2Json },
  );
  // once connected: about switches that run
  for (const s of switches) if (s.node === undefined) warn(`switch ${s.name}: no node reads its ports (give it node: the node on its host, listing the switch under its p4Switches): frames its input buffers drop are not seen`);
  return connected;
}

export async function openController(spec: DeploySpec): Promise<Controller> {
  const deployment = await connectDeployment(spec);
  // vnf-map, conntrack, redis, estate: the nodes move the state themselves where they can (peers, a common stateStore)
  const mover: Controller['mover'] = controllerStateMover(spec.state);
  const engine = new HandoverEngine(deployment, { mover, journal: new FileJournal(spec.controller.journal) });
  return {
    spec,
    deployment,
    engine,
    mover,
    close: async () => {
      await mover.close?.().catch(() => undefined);
      deployment.close();
    },
  };
}

/** The switch port a rule's `to` names: a port name, `<switch>-<to>`, or the port facing instance `to`. */
function portOf(d: NodeDeployment, sw: string, to: string): string {
  const ports = d.switchPorts(sw);
  if (ports === undefined) throw new RuleError(`no node runs switch '${sw}' and the spec's switches do not name it (switches: ${d.switchControl.switches().join(', ')})`);
  const p = ports.find((x) => x.name === to) ?? ports.find((x) => x.name === `${sw}-${to}`) ?? ports.find((x) => x.instance === to);
  if (p === undefined) throw new RuleError(`switch ${sw} has no port towards '${to}' (ports: ${ports.map((x) => x.name).join(', ')})`);
  return p.name;
}

function proto(p: string | number): number {
  if (typeof p === 'number') return p;
  const n = protoNumber(p);
  if (n === undefined) throw new RuleError(`unknown protocol '${p}' (udp, tcp, icmp or a number)`);
  return n;
}

function matchOf(d: NodeDeployment, r: DeployRule): RuleMatch {
  if (r.flow !== undefined) return { kind: 'exact', flow: { ...r.flow, proto: proto(r.flow.proto) } };
  const m = r.match!;
  return {
    kind: 'wildcard',
    priority: r.priority ?? 0,
    ...(m.src === undefined ? {} : { src: m.src }),
    ...(m.dst === undefined ? {} : { dst: m.dst }),
    ...(m.sport === undefined ? {} : { sport: m.sport }),
    ...(m.dport === undefined ? {} : { dport: m.dport }),
    ...(m.proto === undefined ? {} : { proto: proto(m.proto) }),
    ...(m.from === undefined ? {} : { inPort: portOf(d, r.switch, m.from) }),
  };
}

const canon = (m: RuleMatch): string => JSON.stringify(m.kind === 'exact' ? { e: m.flow } : { w: [m.src ?? '', m.dst ?? '', m.sport ?? 0, m.dport ?? 0, m.proto ?? 0, m.inPort ?? '', m.priority] });

/** Installs the spec's rules a switch does not hold yet (same switch and match); returns what it added and what was there. */
export async function applyRules(d: NodeDeployment, rules: readonly DeployRule[]): Promise<{ added: Rule[]; present: Rule[] }> {
  const added: Rule[] = [];
  const present: Rule[] = [];
  for (const r of rules) {
    const match = matchOf(d, r);
    const have = d.switchControl.rules().find((x) => x.switch === r.switch && canon(x.match) === canon(match));
    if (have !== undefined) {
      present.push(have);
      continue;
    }
    added.push(await d.switchControl.addRule({ switch: r.switch, match, action: { outPort: portOf(d, r.switch, r.to), phase: Phase.NONE, handoverId: 0 } }));
  }
  return { added, present };
}

/** The rules to move: ids, or every rule sending to `from`. */
export function rulesToMove(d: NodeDeployment, ids: number[] | 'all', from: string | undefined): { rules: number[]; from: string } {
  const sc = d.switchControl;
  if (ids === 'all') {
    if (from === undefined) throw Object.assign(new Error('handover all needs --from: the instance whose rules move'), { name: 'UsageError' });
    const rules = sc.rules().filter((r) => sc.portTowards(r.switch, from) === r.action.outPort).map((r) => r.id);
    if (rules.length === 0) throw new RuleError(`no rule sends traffic to ${from}`);
    return { rules, from };
  }
  if (from !== undefined) return { rules: ids, from };
  const first = sc.getRule(ids[0]!);
  if (first === undefined) throw new RuleError(`no rule ${ids[0]}`);
  const inferred = d.agentControl.agentInstances().find((i) => sc.portTowards(first.switch, i.name) === first.action.outPort)?.name;
  if (inferred === undefined) throw new RuleError(`rule ${first.id} does not send to a VNF instance (it sends to ${first.action.outPort})`);
  return { rules: ids, from: inferred };
}

export async function runHandover(c: Controller, req: { rules: number[]; from: string; to: string; stateDelayMs: number; timeoutMs?: number; onEvent?: (ev: HandoverEvent) => void }): Promise<HandoverResult> {
  return c.engine.handover({
    rules: req.rules,
    from: req.from,
    to: req.to,
    mover: req.stateDelayMs > 0 ? new DelayedStateMover(c.mover, req.stateDelayMs) : c.mover,
    ...(req.timeoutMs === undefined ? {} : { timeoutMs: req.timeoutMs }),
    ...(req.onEvent === undefined ? {} : { onEvent: req.onEvent }),
  });
}
