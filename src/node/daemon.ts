/**
 * The node daemon: the only process that touches BPF on its host. It loads
 * (or, after a restart, re-adopts from its pins) the switch and agent
 * programs its config names, and serves sharp.node.v1 on a Unix socket
 * and/or TCP with mutual TLS. Its death never stops traffic: every map,
 * program and link is pinned. `detach` removes everything it attached.
 */
import { XdpDataPlane } from '../dataplane/xdp/xdp-dataplane.js';
import type { XdpTopology } from '../dataplane/xdp/topology.js';
import { PinStore } from './pins.js';
import { NODE_API, NODE_SERVICE, type NodeHealth } from './api.js';
import { nodeService } from './service.js';
import type { FramedHandler } from './transport/frames.js';
import { loadTls, startNodeServer, type NodeServer, type TlsMaterial } from './transport/index.js';
import { splitAddress } from './transport/server.js';
import { StatePeers } from './state-transfer.js';
import { X509Certificate } from 'node:crypto';
import { NodeConfigError, type NodeConfig } from './config.js';
import { NodeRedisStore } from '../state/redis-stage.js';
import { NodeEStateStore } from '../state/estate-stage.js';
import type { TLSSocket } from 'node:tls';
import { describeIdentity, identityOf } from './transport/identity.js';
import { readFileSync } from 'node:fs';
import { apiLatencyHistogram, nodeExposition, NodeOperationMetrics } from './metrics.js';
import { startMetricsServer, type MetricsServer } from './metrics-server.js';
import { DEFAULT_VNF_KIND } from './vnf-kinds.js';
import { NodeCapture } from './capture-service.js';
import { NodeDivert } from './divert-service.js';
import { xdpCaptureTargets } from '../capture/targets.js';
import { disableCapture } from '../capture/tap.js';
import { SwitchDropsError, SwitchPortArrivals } from '../dataplane/bmv2/port-arrivals.js';
import { P4SwitchReaders, readPidFile } from './p4-switch-readers.js';

export const SHARPCTL_VERSION = '0.1.0';

/** what a state peer node may call here: who it is, and the records it pushes */
export const STATE_PEER_METHODS = ['Health', 'ImportState'].map((m) => `/${NODE_API}.Node/${m}`);

export interface RunningNode {
  readonly config: NodeConfig;
  readonly adopted: boolean;
  readonly server: NodeServer;
  readonly dataPlane: XdpDataPlane;
  /** where the metrics are served (metrics: in the config) */
  readonly metrics: MetricsServer | undefined;
  /** Stops serving; the data plane stays (pinned): a restarted node adopts it. */
  stop(): Promise<void>;
  /** Stops serving and removes every program, pin and link: the interfaces as they were found. */
  detach(): Promise<void>;
}

export function topologyOf(c: NodeConfig): XdpTopology {
  return {
    switches: c.switches.map((s) => ({
      name: s.name,
      ports: s.ports.map((p) => ({ name: p.name, ifname: p.ifname, role: p.role, ...(p.instance === undefined ? {} : { instance: p.instance, instanceSide: p.side ?? 0 }) })),
      ...(s.maxRules === undefined ? {} : { maxRules: s.maxRules }),
    })),
    instances: c.instances.map((i) => ({
      name: i.name,
      ifaces: i.ifaces,
      ringCapacity: i.ringCapacity,
      ringCount: i.ringCount,
      ...(i.kind === DEFAULT_VNF_KIND ? {} : { kind: i.kind }),
      ...(i.vnfFlows === undefined ? {} : { vnfFlows: i.vnfFlows }),
    })),
  };
}

/** The node's state store; the password is read from its file now, so a bad file stops the start with its name. */
function openStateStore(c: NodeConfig): NodeRedisStore {
  const r = c.stateStore!.redis!;
  let password: string | undefined;
  if (r.passwordFile !== undefined) {
    try {
      password = readFileSync(r.passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw new NodeConfigError(r.passwordFile, [`stateStore.redis.passwordFile: cannot read ${r.passwordFile}: ${(e as Error).message}`], { cause: e });
    }
  }
  return new NodeRedisStore({
    ...(r.cluster === undefined ? { url: r.url! } : { cluster: r.cluster, ...(r.failoverMs === undefined ? {} : { failoverMs: r.failoverMs }) }),
    keyPrefix: r.keyPrefix,
    timeoutMs: r.timeoutMs,
    connectionName: `sharp-node-${c.name}`,
    ...(r.username === undefined ? {} : { username: r.username }),
    ...(password === undefined ? {} : { password }),
  });
}

/**
 * The node's E-State member: over TCP it admits only node certificates of
 * the group's members (signed by peers.ca: the TLS layer checks that).
 */
async function startEStateStore(c: NodeConfig, es: NonNullable<NonNullable<NodeConfig['stateStore']>['estate']>, peersTls: TlsMaterial | undefined, log: (line: string) => void): Promise<NodeEStateStore> {
  const members = new Set(es.members.map((m) => m.node));
  const admit = (s: TLSSocket): string | undefined => {
    const raw = s.getPeerCertificate().raw;
    const id = raw === undefined ? undefined : identityOf(raw);
    const refused = id === undefined ? 'no certificate' : id.role !== 'node' ? `${describeIdentity(id)} is not a node certificate` : !members.has(id.name) ? `${describeIdentity(id)} is not a member of estate group ${es.group}` : undefined;
    if (refused !== undefined) log(`estate: refused a connection: ${refused}`);
    return refused;
  };
  const store = await NodeEStateStore.start({ id: c.name, group: es.group, listen: es.listen, members: es.members, timeoutMs: es.timeoutMs, ...(peersTls === undefined ? {} : { tls: peersTls, admit }) });
  log(`estate group ${es.group}: member ${c.name} serving on ${store.address}, ${es.members.length} other member(s)`);
  return store;
}

/**
 * The P4 switches' port readers; a switch with pidFile has BMv2's packet
 * sockets adopted now. Whatever is missing (a namespace, a pid file, a
 * process this node may not adopt) stops the start naming its field.
 */
function openP4Switches(c: NodeConfig, switches: NonNullable<NodeConfig['p4Switches']>, log: (line: string) => void): P4SwitchReaders {
  const pids = switches.map((s, i) => {
    if (s.pidFile === undefined) return undefined;
    try {
      return readPidFile(s.pidFile);
    } catch (e) {
      throw new NodeConfigError(`node ${c.name}'s config`, [`p4Switches.${i}.pidFile: ${(e as Error).message}`], { cause: e });
    }
  });
  let arrivals: SwitchPortArrivals;
  try {
    arrivals = new SwitchPortArrivals({ switches: switches.map((s, i) => ({ name: s.name, ports: s.ports, ...(s.netns === undefined ? {} : { netns: s.netns }), ...(pids[i] === undefined ? {} : { pid: pids[i] }) })) });
  } catch (e) {
    if (e instanceof SwitchDropsError) {
      const i = switches.findIndex((s) => s.name === e.switchName);
      throw new NodeConfigError(`node ${c.name}'s config`, [`p4Switches.${i}.pidFile: ${e.message} (BMv2's pid from ${switches[i]?.pidFile}): adopting its packet sockets takes root or CAP_SYS_PTRACE over it`], { cause: e });
    }
    throw new NodeConfigError(`node ${c.name}'s config`, [`p4Switches: ${(e as Error).message}: a P4 switch's interfaces are read in their namespace, which must exist when the node starts`], { cause: e });
  }
  return new P4SwitchReaders(arrivals, new Map(switches.flatMap((s, i) => (s.pidFile === undefined ? [] : [[s.name, { pidFile: s.pidFile, pid: pids[i]! }]]))), log);
}

export function pinStoreOf(c: NodeConfig): PinStore {
  return PinStore.open({ node: c.name, ...(c.pinDir === undefined ? {} : { pinDir: c.pinDir }), ...(c.stateDir === undefined ? {} : { stateDir: c.stateDir }) });
}

/** Where the framed control channel listens: the config's listen.frames, else beside the gRPC socket and on the gRPC host at a free port; none with frames: false. */
function framesListen(c: NodeConfig, handler: FramedHandler): { frames?: { handler: FramedHandler; service: string; unix?: string; tcp?: string } } {
  const f = c.listen.frames;
  if (f === false) return {};
  const besideUnix = c.listen.unix === undefined ? undefined : `${c.listen.unix}.frames`;
  // a default path too long for sun_path means no framed socket, not a failed start
  const unix = f?.unix ?? (besideUnix !== undefined && Buffer.byteLength(besideUnix) <= 107 ? besideUnix : undefined);
  const tcp = f?.tcp ?? (c.listen.tcp === undefined ? undefined : `${splitAddress(c.listen.tcp)[0]}:0`);
  if (unix === undefined && tcp === undefined) return {};
  return { frames: { handler, service: `${NODE_API}.Node`, ...(unix === undefined ? {} : { unix }), ...(tcp === undefined ? {} : { tcp }) } };
}

export async function startNode(c: NodeConfig, o: { objectsDir: string; replace?: boolean; log?: (line: string) => void }): Promise<RunningNode> {
  const log = o.log ?? (() => undefined);
  const store = pinStoreOf(c);
  const topology = topologyOf(c);
  // before the data plane: a password file that cannot be read stops the start with nothing opened
  const stateStore = c.stateStore?.redis === undefined ? undefined : openStateStore(c);
  // likewise a P4 switch's namespace that is not there
  let p4Arrivals: P4SwitchReaders | undefined;
  try {
    p4Arrivals = c.p4Switches === undefined ? undefined : openP4Switches(c, c.p4Switches, log);
  } catch (e) {
    await stateStore?.close();
    throw e;
  }
  const adopted = store.list().length > 0;
  const directRelay = c.directRelay === undefined ? {} : { directRelay: c.directRelay.map((d) => ({ ...(d.netns === undefined ? {} : { netns: d.netns }), ports: d.ports.map((p) => ({ ifname: p.ifname, instance: p.instance, instanceSide: p.side })) })) };
  let dp: XdpDataPlane;
  try {
    dp = adopted
      ? await XdpDataPlane.adopt({ pins: { store }, quiescenceMs: c.quiescenceMs, topology, objectsDir: o.objectsDir, ...directRelay })
      : await XdpDataPlane.create(topology, { objectsDir: o.objectsDir, pins: { store, ...(o.replace === undefined ? {} : { replace: o.replace }) }, quiescenceMs: c.quiescenceMs, xdpMode: c.xdpMode, ...directRelay });
  } catch (e) {
    p4Arrivals?.close();
    await stateStore?.close();
    throw e;
  }
  log(`${adopted ? 'adopted' : 'loaded'} ${c.switches.length} switch(es), ${c.instances.length} instance(s); pins in ${store.pinDir}`);
  if (p4Arrivals !== undefined) log(`reading the ports of P4 switch(es) ${p4Arrivals.switches().join(', ')}`);
  const startedAt = Date.now();
  const health = (): NodeHealth => ({
    node: c.name,
    api: NODE_API,
    version: SHARPCTL_VERSION,
    pid: process.pid,
    startedAt,
    adopted,
    quiescenceMs: c.quiescenceMs,
    switches: c.switches.map((s) => ({ name: s.name, ports: s.ports.map((p) => ({ name: p.name, ifname: p.ifname, role: p.role, ...(p.instance === undefined ? {} : { instance: p.instance, instanceSide: p.side ?? 0 }) })) })),
    instances: c.instances.map((i) => ({ name: i.name, kind: i.kind, ifaces: [...i.ifaces], ringCapacity: i.ringCapacity, ringCount: i.ringCount })),
    statePeers: [...(c.peers?.allow ?? [])],
    stateStore: stateStore?.describe() ?? '',
    estateStore: estateStore?.describe() ?? '',
    ...(server === undefined || (server.framesUnixPath === undefined && server.framesTcpPort === undefined) ? {} : { frames: { ...(server.framesUnixPath === undefined ? {} : { unix: server.framesUnixPath }), ...(server.framesTcpPort === undefined ? {} : { port: server.framesTcpPort }) } }),
  });
  const captureTargets = xdpCaptureTargets(dp, topology);
  // a capture that died with an earlier node may have left a hook on
  for (const t of captureTargets) disableCapture(t.coll);
  const capture = new NodeCapture(c.name, () => captureTargets);
  const api = apiLatencyHistogram();
  const operations = new NodeOperationMetrics(c.instances);
  let statePeers: StatePeers | undefined;
  let estateStore: NodeEStateStore | undefined;
  let server: NodeServer | undefined;
  let metrics: MetricsServer | undefined;
  try {
    // state peers: this node's certificate as a client, their CA trusted beside the controllers'
    const peersTls = c.peers?.ca === undefined || c.tls === undefined ? undefined : loadTls({ ca: c.peers.ca, cert: c.tls.cert, key: c.tls.key }, 'client');
    if (c.peers !== undefined) statePeers = new StatePeers({ self: c.name, allow: c.peers.allow, tls: peersTls });
    if (c.stateStore?.estate !== undefined) estateStore = await startEStateStore(c, c.stateStore.estate, peersTls, log);
    const ownTls = c.tls === undefined || c.listen.tcp === undefined ? undefined : loadTls(c.tls, 'server');
    const twoCas = ownTls !== undefined && peersTls !== undefined && !peersTls.ca.equals(ownTls.ca);
    const serverTls = (t: TlsMaterial): TlsMaterial => (twoCas ? { ...t, ca: Buffer.concat([t.ca, Buffer.from('\n'), peersTls!.ca]) } : t);
    const service = nodeService({ health, ...(c.switches.length ? { switchControl: dp, divert: new NodeDivert(dp) } : {}), ...(c.instances.length ? { agents: dp } : {}), ...(statePeers === undefined ? {} : { statePeers }), ...(p4Arrivals === undefined ? {} : { p4Arrivals }), stateStores: { ...(stateStore === undefined ? {} : { redis: stateStore }), ...(estateStore === undefined ? {} : { estate: estateStore }) }, log, capture, observe: (method, code, seconds) => api.observe({ method, code }, seconds), operations });
    server = await startNodeServer({
      node: c.name,
      services: [{ definition: NODE_SERVICE, implementation: service.implementation }],
      ...framesListen(c, service.framed),
      ...(c.listen.unix === undefined ? {} : { unix: { path: c.listen.unix } }),
      ...(c.listen.tcp === undefined || c.tls === undefined ? {} : { tcp: { address: c.listen.tcp, tls: serverTls(ownTls!) } }),
      ...(c.tls?.allow === undefined ? {} : { allowControllers: c.tls.allow }),
      ...(c.peers === undefined ? {} : { allowNodes: { names: c.peers.allow, methods: STATE_PEER_METHODS, ...(peersTls === undefined ? {} : { ca: new X509Certificate(peersTls.ca) }) } }),
      // two CAs trusted: controllers must still come from the node's own
      ...(twoCas ? { controllersCa: new X509Certificate(ownTls!.ca) } : {}),
      onRefused: (r) => log(`refused a call: ${JSON.stringify(r)}`),
    });
    if (c.metrics !== undefined) {
      try {
        metrics = await startMetricsServer({
          ...(c.metrics.unix === undefined ? {} : { unix: c.metrics.unix }),
          ...(c.metrics.tcp === undefined || c.tls === undefined ? {} : { tcp: { address: c.metrics.tcp, tls: loadTls(c.tls, 'server'), ...(c.metrics.allow === undefined ? {} : { allow: c.metrics.allow }) } }),
          render: () => nodeExposition({ config: c, dataPlane: dp, api, operations, startedAt, version: SHARPCTL_VERSION }),
          log,
        });
      } catch (e) {
        await server.close(0);
        throw e;
      }
      log(`serving metrics on ${[metrics.unixPath && `unix:${metrics.unixPath}`, metrics.tcpAddress && `https://${metrics.tcpAddress}/metrics (mutual TLS)`].filter(Boolean).join(' and ')}`);
    }
  } catch (e) {
    statePeers?.close();
    await stateStore?.close();
    await estateStore?.close();
    p4Arrivals?.close();
    // the data plane stays (pinned) for the next start; only this process's handles go
    await dp.close();
    throw e;
  }
  log(`serving ${NODE_API} on ${[server.unixPath && `unix:${server.unixPath}`, server.tcpAddress && `tcp ${server.tcpAddress} (mutual TLS)`].filter(Boolean).join(' and ')}${server.framesUnixPath === undefined && server.framesTcpPort === undefined ? '' : `; framed calls on ${[server.framesUnixPath && `unix:${server.framesUnixPath}`, server.framesTcpPort && `tcp port ${server.framesTcpPort} (mutual TLS)`].filter(Boolean).join(' and ')}`}`);
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    statePeers?.close();
    await Promise.all([server.close(500), metrics?.close(), stateStore?.close(), estateStore?.close()]);
    // after the server: no call reads them any more
    p4Arrivals?.close();
  };
  return {
    config: c,
    adopted,
    server,
    dataPlane: dp,
    metrics,
    stop: async () => {
      await stop();
      await dp.close();
    },
    detach: async () => {
      await stop();
      await dp.detach();
    },
  };
}
