/**
 * The lab daemon: owns a running lab (namespaces, loaded programs, the
 * handover engine, traffic) between CLI invocations. Started detached by
 * `sharpctl lab up`; answers on a Unix socket in the lab's run directory;
 * tears everything down on `lab down`, SIGTERM or SIGINT.
 */
import { mkdirSync, writeFileSync, rmSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { standardSpec, destroyLab, installRules, type NetnsLab } from './netns-lab.js';
import { openLab, type OpenedLab } from './open-lab.js';
import type { LabSpec, RedisSpec } from './spec/types.js';
import type { RedisStateManagerOptions } from '../state/redis-manager.js';
import { HandoverEngine, type HandoverResult } from '../handover/engine.js';
import { DelayedStateMover, type StateMover } from '../handover/state-mover.js';
import { controllerStateMover, parseStateKind, type StateKind } from '../state/factory.js';
import { vnfKind } from '../node/vnf-kinds.js';
import { StateManagerMover } from '../state/mover.js';
import { UserspaceVnfProcessStateManager } from '../vnf/userspace/state-manager.js';
import { Phase, localDeployment, type DataPlane, type FlowKey, type Rule, type RuleMatch } from '../dataplane/types.js';
import { TrafficGenerator } from '../traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../traffic/sink.js';
import { TrafficAccounting } from '../traffic/accounting.js';
import { serve, toJson, type Handler } from './rpc.js';
import { labPaths, writeState, readState, processStartTime, type DaemonRecord, type LabState, type TrafficRecord } from './run-dir.js';
import { FileJournal } from '../handover/journal.js';
import { adoptNodeLab, type AdoptedNode } from './lab-nodes.js';
import { repoRoot } from '../cli/paths.js';
import { bpfNative } from '../bpf/native.js';
import { LIMITS } from './spec/types.js';
import { readDropCounters } from '../report/drop-counters.js';
import { HandoverMetrics } from '../handover/metrics.js';
import { startMetricsServer, type MetricsServer } from '../node/metrics-server.js';

interface Args {
  name: string;
  runDir: string;
  objectsDir: string;
  instances: number;
  /** a validated spec (JSON) to build instead of the standard lab */
  spec?: string;
  /** overrides the spec's target */
  target?: 'xdp' | 'bmv2';
  /** the lab's lock, inherited from `lab up` (held for the daemon's life) */
  lockFd?: number;
  /** adopt the lab a dead daemon left (lab recover) instead of building one */
  recover: boolean;
}

function parseArgs(argv: string[]): Args {
  const get = (k: string, d?: string): string => {
    const i = argv.indexOf(k);
    if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1]!;
    if (d !== undefined) return d;
    throw new Error(`missing ${k}`);
  };
  const spec = get('--spec', '');
  const target = get('--target', '');
  if (target !== '' && target !== 'xdp' && target !== 'bmv2') throw new Error(`--target must be xdp or bmv2, not '${target}'`);
  const lockFd = get('--lock-fd', '');
  return {
    name: get('--name'),
    runDir: get('--run-dir'),
    objectsDir: get('--objects'),
    instances: Number(get('--instances', '2')),
    ...(spec ? { spec } : {}),
    ...(target ? { target } : {}),
    ...(lockFd ? { lockFd: Number(lockFd) } : {}),
    recover: argv.includes('--recover'),
  };
}

/** the probes' flows: UDP from source ports TRAFFIC_BASE_PORT + flow to TRAFFIC_DST_PORT */
const TRAFFIC_BASE_PORT = 20000;
const TRAFFIC_DST_PORT = 9000;

/** A rule add the lab cannot honour: no free rule id. */
class RuleTableFullError extends Error {
  override name = 'RuleTableFullError';
}

/** Refused as asked (the CLI exits 2: bad usage, nothing changed). */
function usageError(message: string): Error {
  const e = new Error(message);
  e.name = 'UsageError';
  return e;
}

/** A prefix as the switch matches it: "10.0.0.2" and "10.0.0.2/32" are one. */
const prefixKey = (p: string | undefined): string => (p === undefined ? '*' : p.includes('/') ? p : `${p}/32`);

/** Two matches the switch cannot tell apart (wildcards: with their priority). */
function sameMatch(a: Rule['match'], b: RuleMatch): boolean {
  if (a.kind === 'exact' || b.kind === 'exact') {
    return a.kind === 'exact' && b.kind === 'exact' && a.flow.src === b.flow.src && a.flow.dst === b.flow.dst && a.flow.sport === b.flow.sport && a.flow.dport === b.flow.dport && a.flow.proto === b.flow.proto;
  }
  return (
    prefixKey(a.src) === prefixKey(b.src) &&
    prefixKey(a.dst) === prefixKey(b.dst) &&
    (a.sport ?? 0) === (b.sport ?? 0) &&
    (a.dport ?? 0) === (b.dport ?? 0) &&
    (a.proto ?? 0) === (b.proto ?? 0) &&
    a.inPort === b.inPort &&
    a.priority === b.priority
  );
}

interface Traffic {
  name: string;
  gen: TrafficGenerator;
  sink: TrafficSink;
}

function summarize(r: HandoverResult): Record<string, unknown> {
  return {
    id: r.id,
    from: r.from,
    to: r.to,
    rules: r.rules,
    outcome: r.outcome,
    ...(r.reason === undefined ? {} : { reason: r.reason }),
    durationMs: +r.durationMs.toFixed(2),
    stateMs: +r.stateMs.toFixed(2),
    counts: r.counts,
    ...(r.drops.length ? { drops: r.drops } : {}),
    mode: r.mode,
    controllerBuffer: r.controllerBuffer,
  };
}

/** The spec's redis as the Redis manager's options: a list of cluster nodes is an existing cluster, { masters, replicas } a private one. */
function redisOptionsOf(r: RedisSpec): RedisStateManagerOptions {
  const where = r.cluster === undefined ? (r.url === undefined ? { spawn: true } : { url: r.url }) : Array.isArray(r.cluster) ? { cluster: r.cluster } : { spawnCluster: { ...(r.cluster.masters === undefined ? {} : { masters: r.cluster.masters }), ...(r.cluster.replicas === undefined ? {} : { replicas: r.cluster.replicas }) } };
  return { ...where, ...(r.keyPrefix === undefined ? {} : { keyPrefix: r.keyPrefix }), ...(r.timeoutMs === undefined ? {} : { timeoutMs: r.timeoutMs }), ...(r.failoverMs === undefined ? {} : { failoverMs: r.failoverMs }) };
}

/** A request that would touch a rule a handover is moving. */
class LockedRuleError extends Error {
  override name = 'LockedRuleError';
}

/** The lab's spec: the validated spec file `lab up` wrote, or the standard lab. */
function labSpecOf(specFile: string | undefined, instances: number): LabSpec {
  return specFile === undefined ? standardSpec({ instances, ringCapacity: 8192, ringCount: 4 }) : (JSON.parse(readFileSync(specFile, 'utf8')) as LabSpec);
}

const processRecordOf = (st: Pick<LabState, 'pid' | 'pidStart'>): DaemonRecord => (st.pidStart === undefined ? { pid: st.pid } : { pid: st.pid, pidStart: st.pidStart });

/** What a replacement daemon says of the traffic run its dead predecessor had going: no numbers, they died with it. */
function trafficEndedNote(t: TrafficRecord, pid: number): TrafficRecord & { endedWithDaemon: number; note: string } {
  const what = `${t.flows} flows at ${t.rate} pps${t.reverse ? ', both directions' : ''}`;
  return { ...t, endedWithDaemon: pid, note: `the traffic run started at ${t.startedAt} (${what}) ended with lab daemon pid ${pid}, which died: its generator and sink ran inside that daemon, and their counts died with it` };
}

/**
 * Tests only (test/lab/daemon-recovery): SHARP_LAB_PAUSE_AT=<step> freezes
 * this daemon, the whole thread, when its first handover enters that step
 * (journalled, none of its operations run yet), so that a test can kill -9
 * it exactly there, as test/node/fixtures/controller.ts does a controller.
 */
const PAUSE_AT = process.env['SHARP_LAB_PAUSE_AT'];
let pausedOnce = false;
function pauseHook(step: string): void {
  if (PAUSE_AT === undefined || step !== PAUSE_AT || pausedOnce) return;
  pausedOnce = true;
  process.stderr.write(`paused at ${step} (SHARP_LAB_PAUSE_AT)\n`);
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 120_000);
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  // the lock stays with this process: the children it starts (redis-server, E-State peers, Mininet) must not keep it
  if (a.lockFd !== undefined) bpfNative.setCloexec(a.lockFd, true);
  const paths = labPaths(a.runDir, a.name);
  mkdirSync(paths.dir, { recursive: true });
  // every temporary file of the lab (a redis-server's folder, BMv2's) lives in its run directory:
  // lab down removes it even after a kill -9 of this daemon
  process.env['TMPDIR'] = paths.dir;
  const prefix = `sharp-${a.name}-`;
  const journalDir = path.join(paths.dir, 'journal');
  // lab recover: the state the dead daemon left says what to adopt
  const old = a.recover ? readState(paths) : undefined;
  if (a.recover && old?.adopt === undefined) {
    process.stderr.write(`lab daemon: lab '${a.name}' has no adoption record in ${paths.state}: it cannot be recovered\n`);
    process.exit(1);
  }
  let state: LabState = {
    name: a.name,
    pid: process.pid,
    pidStart: processStartTime(process.pid)!,
    prefix,
    status: 'starting',
    startedAt: new Date().toISOString(),
    socket: paths.socket,
    namespaces: old?.namespaces ?? [],
    target: old?.target ?? 'xdp',
    journal: journalDir,
    // the dead daemon's session may still hold what it started (its node processes are adopted below; lab down stops the rest)
    ...(old === undefined ? {} : { adopt: old.adopt!, previousDaemons: [...(old.previousDaemons ?? []), processRecordOf(old)] }),
  };
  const save = (next: LabState): void => writeState(paths, (state = next));
  save(state);
  let lab: NetnsLab | undefined;
  let dp: DataPlane | undefined;
  let opened: OpenedLab | undefined;
  let server: net.Server | undefined;
  let metricsServer: MetricsServer | undefined;
  let traffic: Traffic[] = [];
  let lastTraffic: TrafficReport[] | undefined;
  /** the running traffic's reconciliation: counted drops since it started */
  let accounting: TrafficAccounting | undefined;
  /** history.length when the traffic started: later handovers' ring losses are the run's */
  let trafficFrom = 0;
  const history: HandoverResult[] = [];
  let stopping = false;
  /** lab recover: what the replacement found and did (status and report show it) */
  let recovery: Record<string, unknown> | undefined;
  /** the traffic run the dead daemon had going: it ended with that daemon, and so did its numbers */
  const trafficEnded = old?.traffic === undefined ? undefined : trafficEndedNote(old.traffic, old.pid);
  let closeMovers: () => Promise<void> = async () => undefined;

  /** a recovery until it is ready: stopped then, it leaves the lab as the dead daemon did (lab recover can be run again) */
  let recovering = old !== undefined;
  const teardown = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    if (recovering) {
      save({ ...state, status: 'failed', error: 'stopped while recovering: the lab is left as the dead daemon left it, with what was recovered so far in the journal' });
      await dp?.close();
      process.exit(1);
    }
    for (const t of traffic) await t.gen.stop().catch(() => undefined);
    for (const t of traffic) {
      t.sink.close();
      t.gen.close();
    }
    traffic = [];
    server?.close();
    await metricsServer?.close();
    await closeMovers();
    await opened?.close();
    destroyLab(prefix);
    rmSync(paths.dir, { recursive: true, force: true });
  };
  process.on('SIGTERM', () => void teardown().then(() => process.exit(0)));
  process.on('SIGINT', () => void teardown().then(() => process.exit(0)));

  let adoptedNodes: AdoptedNode[] = [];
  try {
    if (old !== undefined) {
      const adopt = old.adopt!;
      const spec = labSpecOf(adopt.spec, adopt.instances);
      const adopted = await adoptNodeLab(spec, prefix, {
        adoption: adopt,
        namespaces: old.namespaces,
        cli: path.join(repoRoot, 'dist/src/cli/main.js'),
        // a node started again is recorded at once: should the recovery fail later, the next one adopts it rather than starting another
        onRestart: (nodes) => save({ ...state, adopt: { ...adopt, nodes } }),
      });
      adoptedNodes = adopted.nodes;
      const nodes = adopted.nodes.map((n) => ({ role: n.role, pid: n.pid, ...(n.pidStart === undefined ? {} : { pidStart: n.pidStart }) }));
      opened = { target: 'xdp', lab: adopted.lab, dp: adopted.dp, metricsSockets: adopted.nodes.flatMap((n) => (n.metrics === undefined ? [] : [n.metrics])), adoption: { ...adopt, nodes }, close: adopted.close };
      lab = opened.lab;
      dp = opened.dp;
      // the node processes as they are now (a restarted one has a new pid)
      save({ ...state, adopt: { ...adopt, nodes } });
    } else {
      destroyLab(prefix);
      const spec = labSpecOf(a.spec, a.instances);
      const target = a.target ?? spec.target;
      save({ ...state, target });
      opened = await openLab(spec, prefix, { objectsDir: a.objectsDir, workDir: path.join(paths.dir, 'work'), target });
      lab = opened.lab;
      dp = opened.dp;
      await installRules(dp, lab.spec.rules);
      if (opened.adoption !== undefined) save({ ...state, adopt: { ...opened.adoption, instances: a.instances, ...(a.spec === undefined ? {} : { spec: a.spec }) } });
    }
  } catch (e) {
    save({ ...state, status: 'failed', error: e instanceof Error ? e.message : String(e) });
    if (old !== undefined) {
      // a failed recovery removes nothing: the data plane still forwards, and lab recover (or lab down) can be run again
      await dp?.close();
      process.exit(1);
    }
    await opened?.close();
    destroyLab(prefix);
    process.exit(1);
  }
  const theLab = lab;
  const theDp = dp;
  /** every drop counter of the lab, by reason (status, report) */
  const drops = (): ReturnType<typeof readDropCounters> => readDropCounters({ dp: theDp, ...(opened?.metricsSockets === undefined ? {} : { metricsSockets: opened.metricsSockets }) });
  // one state mover per backend, made when first used, closed with the lab
  // (vnf-map, conntrack and redis: moved by the lab's nodes, as a deployment's are)
  const movers = new Map<StateKind, StateMover & { close?(): Promise<void> }>();
  const mover = (kind: string): StateMover => {
    const k = parseStateKind(kind);
    let m = movers.get(k);
    // a lab of userspace VNF processes keeps its state in their E-State nodes: 'estate' moves it there
    const fleet = opened?.userspaceVnfs;
    if (m === undefined && k === 'estate' && fleet !== undefined) movers.set(k, (m = new StateManagerMover(new UserspaceVnfProcessStateManager(fleet))));
    if (m === undefined) movers.set(k, (m = controllerStateMover(k, theLab.spec.redis === undefined ? {} : { redis: redisOptionsOf(theLab.spec.redis) })));
    return m;
  };
  closeMovers = async () => {
    for (const m of movers.values()) await m.close?.().catch(() => undefined);
  };
  // journalled as the deployment controller journals: a daemon that dies mid-handover leaves what the next one recovers
  const engine = new HandoverEngine(theDp, { mover: mover('vnf-map'), journal: new FileJournal(journalDir) });
  const handoverMetrics = new HandoverMetrics();
  if (old !== undefined) {
    engine.on('event', (ev: { step: string; detail?: string }) => process.stderr.write(`recovery: ${ev.step}${ev.detail ? `: ${ev.detail}` : ''}\n`));
    let recovered: HandoverResult[] = [];
    let recoverError: string | undefined;
    try {
      recovered = await engine.recover({ moverFor: (backend) => mover(backend) });
    } catch (e) {
      recoverError = e instanceof Error ? e.message : String(e);
    }
    for (const r of recovered) {
      history.push(r);
      handoverMetrics.observe(r, { backend: theLab.spec.state });
    }
    recovery = {
      previousDaemon: processRecordOf(old),
      at: new Date().toISOString(),
      nodes: adoptedNodes.map((n) => ({ node: n.name, how: n.how, pid: n.pid })),
      handovers: recovered.map(summarize),
      ...(recoverError === undefined ? {} : { error: recoverError }),
      ...(trafficEnded === undefined ? {} : { trafficEnded }),
    };
    process.stderr.write(`recovered lab '${a.name}' from daemon pid ${old.pid}: ${toJson(recovery)}\n`);
  }

  /** A port by its name ("s1-vnf1") or by the node behind it ("vnf1"). */
  const port = (sw: string, to: string): string => {
    const ports = theLab.topology.switches.find((s) => s.name === sw)?.ports;
    if (ports === undefined) throw new Error(`no switch '${sw}' (switches: ${theDp.switches().join(', ')})`);
    const p = ports.find((x) => x.name === to || x.name === `${sw}-${to}`);
    if (p === undefined) throw new Error(`switch ${sw} has no port towards '${to}' (ports: ${ports.map((x) => x.name).join(', ')})`);
    return p.name;
  };

  const counters = async (): Promise<unknown[]> =>
    Promise.all(theDp.rules().map(async (r) => ({ ...r, counters: await theDp.ruleCounters(r.id) })));

  /**
   * The running traffic's numbers: probes held in the hold rings of the
   * handovers in flight (the agents' queued counts) and probes counted as
   * dropped are told apart from those still on their way; none is called
   * lost by guess.
   */
  const runningReports = async (): Promise<TrafficReport[]> => {
    const acc = accounting;
    const a = acc === undefined ? undefined : await acc.read(history.slice(trafficFrom));
    const held = new Map<string, number>();
    for (const h of engine.active()) {
      const st = await theDp.agentStatus(h.to, h.id).catch(() => undefined);
      if (st === undefined) continue;
      st.queued.forEach((q, side) => {
        const dir = acc?.directionOfSide(h.to, side);
        if (dir !== undefined) held.set(dir, (held.get(dir) ?? 0) + q);
      });
    }
    return traffic.map((t) => t.sink.report(t.gen.sentPerFlow(), { running: true, held: held.get(t.name) ?? 0, ...(a === undefined ? {} : { accounting: a.directions.get(t.name)! }) }));
  };
  const trafficNow = async (): Promise<TrafficReport[] | undefined> => (traffic.length ? runningReports() : lastTraffic);

  /** Why the sinks compare no stamps (the lab's VNF kinds that do not stamp), or undefined when they do. */
  const unstampedKinds = [...new Set(theLab.spec.vnfs.filter((v) => !vnfKind(v.type).stamps).map((v) => v.type))];
  const stampsNotChecked = unstampedKinds.length ? `${unstampedKinds.join(' and ')} VNFs do not stamp` : undefined;
  /** a report's stamp fields: stampMismatches stays (0 when not checked) for old readers; stampsNotChecked says why nothing was compared */
  const stampNote = (r: TrafficReport): { stampsNotChecked?: string } => (r.stampsChecked || stampsNotChecked === undefined ? {} : { stampsNotChecked });

  /** A handover request: the rules to move resolved, then the engine's handover (refusals are counted by the caller). */
  const handover: Handler = async (p, emit) => {
    const q = p as { rules: number[] | 'all'; from?: string; to: string; stateDelayMs?: number; timeoutMs?: number; mode?: 'sharp' | 'controller-buffer'; state?: string };
    let rules = q.rules;
    let from = q.from;
    if (rules === 'all') {
      if (from === undefined) throw new Error("handover all needs --from: the instance whose rules move");
      rules = theDp.rules().filter((r) => theDp.portTowards(r.switch, from!) === r.action.outPort).map((r) => r.id);
      if (rules.length === 0) throw new Error(`no rule sends traffic to ${from}`);
    }
    // a rule another handover moves is named first: its action says where that one takes it
    for (const rid of rules) {
      const busy = engine.ruleLock(rid);
      if (busy !== undefined) throw new LockedRuleError(`rule ${rid} is being moved by handover ${busy}`);
    }
    if (from === undefined) {
      const first = theDp.getRule(rules[0]!);
      if (first === undefined) throw new Error(`no rule ${rules[0]}`);
      from = theDp.instances().find((i) => theDp.portTowards(first.switch, i.name) === first.action.outPort)?.name;
      if (from === undefined) throw new Error(`rule ${first.id} does not send to a VNF instance (it sends to ${first.action.outPort})`);
    }
    {
      // this handover's events only: a concurrent one's progress is not ours to show
      const backend = q.state ?? theLab.spec.state;
      const r = await engine.handover({
        onEvent: (ev) => {
          emit(ev);
          pauseHook(ev.step);
        },
        rules,
        from,
        to: q.to,
        mover: new DelayedStateMover(mover(backend), q.stateDelayMs ?? 0),
        // journalled: a daemon recovering this handover moves or rolls back its state with the same backend
        stateBackend: backend,
        // refused up front when the ring may overflow at the measured rate and the requested state delay
        capacityPolicy: 'refuse',
        mode: q.mode ?? 'sharp',
        ...(q.timeoutMs === undefined ? {} : { timeoutMs: q.timeoutMs }),
      });
      history.push(r);
      handoverMetrics.observe(r, { backend });
      return summarize(r);
    }
  };
  const handlers: Record<string, Handler> = {
    status: async () => {
      // the reads at once: each is a round trip to the lab's node processes
      const [rules, trafficReports, controllerDataPackets, dropCounters] = await Promise.all([counters(), trafficNow(), theDp.controllerDataPackets(), drops()]);
      return {
        name: a.name,
        prefix,
        pid: process.pid,
        switches: theLab.topology.switches.map((s) => ({ name: s.name, netns: s.netns, ports: s.ports.map((p) => p.name) })),
        instances: theDp.instances(),
        hosts: [theLab.client, theLab.server],
        rules,
        active: engine.active(),
        traffic: trafficReports?.map((r, i) => ({
          direction: traffic[i]?.name ?? (i === 0 ? 'client→server' : 'server→client'),
          running: traffic.length > 0,
          sent: r.sent,
          delivered: r.delivered,
          // held frames (in kernel rings) and frames in flight are not lost
          held: r.held,
          inFlight: r.inFlight,
          lost: r.lost,
          reported: r.reported,
          unaccounted: r.unaccounted,
          reordered: r.reordered,
          duplicated: r.duplicated,
          stampMismatches: r.stampMismatches,
          // false: the lab's VNFs do not stamp (linux), stampMismatches is 0 because nothing was compared
          stampsChecked: r.stampsChecked,
          ...stampNote(r),
        })),
        handovers: history.slice(-20).map(summarize),
        controllerDataPackets,
        drops: dropCounters,
        ...(recovery === undefined ? {} : { recovery }),
        ...(trafficEnded === undefined || lastTraffic !== undefined || traffic.length ? {} : { trafficEnded }),
      };
    },
    'rule.list': async () => counters(),
    'rule.add': async (p) => {
      const q = p as { switch: string; to: string; match: RuleMatch; id?: number };
      const rules = theDp.rules();
      if (q.id === undefined && rules.length >= LIMITS.rules) {
        throw new RuleTableFullError(`the rule table is full: a lab holds at most ${LIMITS.rules} rules (rule ids 1..${LIMITS.rules}, shared by its switches: SHARP_DEFAULT_MAX_RULES); delete one first (sharpctl rule del <id>)`);
      }
      const match: RuleMatch = q.match.kind === 'wildcard' ? { ...q.match, ...(q.match.inPort === undefined ? {} : { inPort: port(q.switch, q.match.inPort) }) } : q.match;
      const outPort = port(q.switch, q.to);
      const same = rules.find((r) => r.switch === q.switch && sameMatch(r.match, match));
      if (same !== undefined) {
        throw usageError(
          match.kind === 'exact'
            ? `rule ${same.id} on switch ${q.switch} is an exact rule for this flow already; change its action with a handover, or delete it first`
            : `rule ${same.id} on switch ${q.switch} has the same match and priority; which of the two applies would be arbitrary (give this one another --priority)`,
        );
      }
      // the lowest free id: ids of deleted rules are used again
      let id = q.id;
      for (let i = 1; id === undefined && i <= LIMITS.rules; i++) if (theDp.getRule(i) === undefined) id = i;
      return theDp.addRule({ switch: q.switch, match, action: { outPort, phase: Phase.NONE, handoverId: 0 }, id: id! });
    },
    'rule.del': async (p) => {
      const id = (p as { id: number }).id;
      // a rule under handover is locked: deleting it would strand the handover's marks
      const busy = engine.ruleLock(id);
      if (busy !== undefined) throw new LockedRuleError(`rule ${id} is being moved by handover ${busy}: delete it once the handover has ended (sharpctl status)`);
      await theDp.deleteRule(id);
      return { deleted: (p as { id: number }).id };
    },
    handover: async (p, emit) => {
      try {
        return await handover(p, emit);
      } catch (e) {
        handoverMetrics.refused(e);
        throw e;
      }
    },

    'traffic.start': async (p) => {
      const q = p as { rate: number; flows: number; reverse: boolean };
      if (traffic.length) throw new Error('traffic is running already (sharpctl traffic stop)');
      if (engine.active().length) throw new Error(`a handover is in flight (${engine.active().map((h) => h.id).join(', ')}); start traffic when it is done`);
      const mk = (from: typeof theLab.client, to: typeof theLab.client, name: string, basePort: number): Traffic => {
        const sink = new TrafficSink({ objectsDir: a.objectsDir, netns: to.netns, ifname: to.ifname, sampleEvery: Math.max(1, Math.floor(q.rate / 200)), flows: q.flows, stamps: theLab.spec.vnfs.every((v) => vnfKind(v.type).stamps) });
        const gen = new TrafficGenerator({ objectsDir: a.objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows: q.flows, burst: 128, basePort, dstPort: TRAFFIC_DST_PORT });
        return { name, gen, sink };
      };
      // Every run uses the same flows (source ports base..base+flows-1) and
      // starts them from a clean VNF state: their per-flow counters, on every
      // instance (a handover may have moved them), are deleted first, so the
      // VNF's stamp of a probe is its sequence number of this run.
      const base = TRAFFIC_BASE_PORT;
      const flowsOf = (from: typeof theLab.client, to: typeof theLab.client): FlowKey[] =>
        Array.from({ length: q.flows }, (_, f) => ({ src: from.ip, dst: to.ip, sport: base + f, dport: TRAFFIC_DST_PORT, proto: 17 }));
      const fresh = [...flowsOf(theLab.client, theLab.server), ...(q.reverse ? flowsOf(theLab.server, theLab.client) : [])];
      for (const inst of theDp.instances()) await theDp.deleteState(inst.name, fresh);
      await opened?.userspaceVnfs?.deleteFlows(fresh);
      traffic = [mk(theLab.client, theLab.server, 'client→server', base)];
      if (q.reverse) traffic.push(mk(theLab.server, theLab.client, 'server→client', base));
      // from now on every frame the data plane drops is counted against the run
      const fleet = opened?.userspaceVnfs;
      accounting = new TrafficAccounting(
        localDeployment(theDp),
        theLab.topology,
        [
          { name: 'client→server', from: theLab.client.name, to: theLab.server.name },
          { name: 'server→client', from: theLab.server.name, to: theLab.client.name },
        ],
        // userspace VNFs: what their TUN devices could not queue to the process
        fleet === undefined ? {} : { extraDrops: () => fleet.tunDrops() },
      );
      await accounting.start();
      trafficFrom = history.length;
      for (const t of traffic) t.gen.start(q.rate);
      // a daemon that replaces this one must know the run died with it
      save({ ...state, traffic: { startedAt: new Date().toISOString(), rate: q.rate, flows: q.flows, reverse: q.reverse } });
      return { started: traffic.map((t) => t.name), rate: q.rate, flows: q.flows };
    },
    'traffic.stop': async () => {
      if (!traffic.length) throw new Error(trafficEnded === undefined || lastTraffic !== undefined ? 'no traffic is running (sharpctl traffic start)' : `no traffic is running: ${trafficEnded.note}`);
      for (const t of traffic) await t.gen.stop();
      for (const t of traffic) await t.sink.drain(t.gen.sent);
      const a = await accounting?.read(history.slice(trafficFrom));
      // sent = delivered + reported + unaccounted (which must be 0)
      lastTraffic = traffic.map((t) => t.sink.report(t.gen.sentPerFlow(), a === undefined ? {} : { accounting: a.directions.get(t.name)! }));
      accounting = undefined;
      const names = traffic.map((t) => t.name);
      for (const t of traffic) {
        t.sink.close();
        t.gen.close();
      }
      traffic = [];
      const { traffic: _ended, ...rest } = state;
      save(rest);
      return lastTraffic.map((r, i) => ({ direction: names[i], ...r, ...stampNote(r), timeline: undefined, flows: undefined }));
    },
    report: async () => ({
      handovers: history.map(summarize),
      traffic: (await trafficNow())?.map((r) => ({ ...r, ...stampNote(r), timeline: undefined })),
      drops: await drops(),
      ...(recovery === undefined ? {} : { recovery }),
      ...(trafficEnded === undefined ? {} : { trafficEnded }),
    }),
    shutdown: async () => {
      setImmediate(() => void teardown().then(() => process.exit(0)));
      return { stopping: true };
    },
  };

  if (existsSync(paths.socket)) rmSync(paths.socket);
  server = serve(paths.socket, handlers);
  await new Promise<void>((r) => server!.once('listening', () => r()));
  // HTTP on a Unix socket of the run directory only (mode 0600): a TCP listener would need mutual TLS, which a lab has no certificates for
  metricsServer = await startMetricsServer({ unix: paths.metrics, render: () => handoverMetrics.text(), log: (l) => process.stderr.write(`${l}\n`) });
  recovering = false;
  save({ ...state, status: 'ready', metricsSocket: paths.metrics, namespaces: theLab.namespaces });
  writeFileSync(path.join(paths.dir, 'ready'), '');
}

main().catch((e: unknown) => {
  process.stderr.write(`lab daemon: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
