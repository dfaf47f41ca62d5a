/**
 * The controller over a deployment spec: connects to every node (Unix
 * socket, or TCP with mutual TLS), installs the spec's rules, and runs
 * handovers with a journal on disk, so a controller killed mid-handover is
 * recovered by the next one it starts.
 */
import { NodeClient, NodeDeployment } from '../node/client.js';
import { controllerTlsFiles, loadTls, nodeChannel, tlsEndpoint, unixEndpoint } from '../node/transport/index.js';
import { HandoverEngine, type HandoverEvent, type HandoverResult } from '../handover/engine.js';
import { FileJournal } from '../handover/journal.js';
import { DelayedStateMover, type StateMover } from '../handover/state-mover.js';
import { controllerStateMover } from '../state/factory.js';
import { Phase, RuleError, type Rule, type RuleMatch } from '../dataplane/types.js';
import { protoNumber } from '../lab/spec/index.js';
import type { DeployRule, DeploySpec } from './spec.js';

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
  } catch (e) {
    for (const c of clients) c.close();
    throw e;
  }
  return new NodeDeployment(clients);
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
  const node = d.nodes.find((n) => n.switches().includes(sw));
  if (node === undefined) throw new RuleError(`no node runs switch '${sw}' (switches: ${d.switchControl.switches().join(', ')})`);
  const ports = node.health.switches.find((s) => s.name === sw)!.ports;
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
