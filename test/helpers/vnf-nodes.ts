/**
 * A lab whose switches and VNF instances are node processes, with a state
 * link between the two VNF hosts (each VNF node serves mutual TLS there and
 * names the other as its state peer), and optionally the deployment's Redis
 * on that link (password-protected; both VNF nodes have it as stateStore):
 * one redis-server, or a Redis Cluster of 3 masters with a replica each.
 * For the tests of state moving node to node.
 */
import type { Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLabFromSpec, destroyLab, installRules, standardSpec, type NetnsLab } from '../../src/lab/netns-lab.js';
import { labNodeConfigs, startNodeProcess, type LabNode, type NodeProcess } from '../../src/lab/lab-nodes.js';
import { NodeClient, NodeDeployment, type StatePeerVia } from '../../src/node/client.js';
import { caFiles, createCa, createNodeCert, nodeChannel, nodeTlsFiles, unixEndpoint } from '../../src/node/transport/index.js';
import type { NodeMethod } from '../../src/node/api.js';
import { startRedisServer, type RedisServer } from '../../src/state/redis-server.js';
import { startRedisCluster, type RedisCluster } from '../../src/state/redis-cluster-server.js';
import type { TrafficGenerator } from '../../src/traffic/generator.js';
import type { TrafficSink } from '../../src/traffic/sink.js';
import { repoRoot, uniqueName } from './env.js';
import { stopAndDetachNodes, twoWayTraffic } from './node-procs.js';
export { assertIntact, finishTraffic } from './node-procs.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');
const STATE_PORT = 7450;

export interface VnfNodesWorld {
  lab: NetnsLab;
  nodes: LabNode[];
  procs: Map<string, NodeProcess>;
  /** node name of each VNF instance's node */
  nodeOf: Record<'vnf1' | 'vnf2', string>;
  /** the address each VNF node's mutual-TLS API has on the state link */
  stateAddress: Record<'vnf1' | 'vnf2', string>;
  /** a controller whose nodes reach each other as `via` says (its own clients: what it sent is counted) */
  connect(via: (instance: 'vnf1' | 'vnf2') => StatePeerVia | undefined): Promise<NodeDeployment>;
  /** rewrites a VNF node's config and restarts its process (it adopts its pinned data plane) */
  restart(instance: 'vnf1' | 'vnf2', edit: (n: LabNode) => void): Promise<void>;
  traffic(flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] };
  /** the certificate folder (ca.crt, node-<name>.crt/.key of both VNF nodes) */
  certs: string;
  /** with o.redis: the server (in vnf1's namespace, on the state link), its Unix socket for inspection, its password */
  redis: { server: RedisServer; unixSocket: string; password: string } | undefined;
  /** with o.redis 'cluster': the cluster (in vnf1's namespace, on the state link, ports 7000-7005), its password */
  redisCluster: { cluster: RedisCluster; password: string } | undefined;
}

export async function vnfNodesWorld(t: Test, o: { redis?: boolean | 'cluster'; failoverMs?: number } = {}): Promise<VnfNodesWorld> {
  const prefix = `${uniqueName('nx')}-`;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-nodestate-'));
  const certs = path.join(dir, 'certs');
  // node names go into certificates: DNS labels (no '_')
  const lab = createLabFromSpec(standardSpec({ ringCapacity: 8192 }), prefix);
  const nodes = labNodeConfigs(lab, { dir, nodePrefix: prefix });
  const procs = new Map<string, NodeProcess>();
  const closers: (() => void)[] = [];
  const deployments: NodeDeployment[] = [];
  const ns = (i: string): string => lab.topology.instances.find((x) => x.name === i)!.netns!;
  // the state link between the two VNF hosts (their management network, as it were)
  const tag = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const link = { a: `sa${tag}`, b: `sb${tag}` };
  const net = `10.${200 + (process.pid % 50)}.${randomBytes(1)[0]!}`;
  let redis: VnfNodesWorld['redis'];
  let redisCluster: VnfNodesWorld['redisCluster'];
  // every step runs whatever an earlier one threw: the nodes, the store, the link and the namespaces always go
  t.teardown(async () => {
    const failures: unknown[] = [];
    const step = async (f: () => unknown): Promise<void> => {
      try {
        await f();
      } catch (e) {
        failures.push(e);
      }
    };
    for (const c of closers.reverse()) await step(c);
    for (const d of deployments) await step(() => d.close());
    await step(() => stopAndDetachNodes(procs.values(), nodes, cli));
    await step(() => redis?.server.stop());
    await step(() => redisCluster?.cluster.stop());
    try {
      execFileSync('ip', ['-n', ns('vnf1'), 'link', 'del', link.a], { stdio: 'ignore' });
    } catch {
      // never made, or gone with its namespace
    }
    await step(() => destroyLab(prefix));
    await step(() => rmSync(dir, { recursive: true, force: true }));
    if (failures.length > 0) throw new AggregateError(failures, `cleaning up the VNF-nodes world: ${failures.map(String).join('; ')}`);
  });
  execFileSync('ip', ['-n', ns('vnf1'), 'link', 'add', link.a, 'type', 'veth', 'peer', 'name', link.b, 'netns', ns('vnf2')]);
  const stateAddress = { vnf1: `${net}.1:${STATE_PORT}`, vnf2: `${net}.2:${STATE_PORT}` };
  for (const [i, ifname, ipAddr] of [
    ['vnf1', link.a, `${net}.1`],
    ['vnf2', link.b, `${net}.2`],
  ] as const) {
    execFileSync('ip', ['-n', ns(i), 'addr', 'add', `${ipAddr}/30`, 'dev', ifname]);
    execFileSync('ip', ['-n', ns(i), 'link', 'set', ifname, 'up']);
  }
  // the deployment's Redis: on the state link, with a password only the nodes' configs point to
  if (o.redis === true) {
    const password = randomBytes(12).toString('hex');
    const unixSocket = path.join(dir, 'redis.sock');
    redis = { server: await startRedisServer({ netns: ns('vnf1'), host: `${net}.1`, port: 6379, unixSocket, password }), unixSocket, password };
    writeFileSync(path.join(dir, 'redis.pass'), `${password}\n`, { mode: 0o600 });
  }
  if (o.redis === 'cluster') {
    const password = randomBytes(12).toString('hex');
    redisCluster = { cluster: await startRedisCluster({ netns: ns('vnf1'), host: `${net}.1`, password }), password };
    writeFileSync(path.join(dir, 'redis.pass'), `${password}\n`, { mode: 0o600 });
  }
  const stateStore =
    redis !== undefined
      ? { redis: { url: `redis://${net}.1:6379`, passwordFile: path.join(dir, 'redis.pass'), keyPrefix: 'sharp:', timeoutMs: 2000 } }
      : redisCluster !== undefined
        ? // one node named: the nodes learn the others from it; 1 s per command, so a frozen master costs one short attempt
          { redis: { cluster: [redisCluster.cluster.startupNodes[0]!], passwordFile: path.join(dir, 'redis.pass'), keyPrefix: 'sharp:', timeoutMs: 1000, failoverMs: o.failoverMs ?? 15_000 } }
        : undefined;
  const node = (i: 'vnf1' | 'vnf2'): LabNode => nodes.find((n) => n.role === i)!;
  const nodeOf = { vnf1: node('vnf1').config.name, vnf2: node('vnf2').config.name };
  await createCa(certs);
  for (const i of ['vnf1', 'vnf2'] as const) {
    await createNodeCert(certs, nodeOf[i], { ips: [stateAddress[i].split(':')[0]!] });
    const n = node(i);
    const other = i === 'vnf1' ? 'vnf2' : 'vnf1';
    // over TCP only peers: no controller is on tls.allow (the controller uses the Unix socket)
    n.config = { ...n.config, listen: { ...n.config.listen, tcp: stateAddress[i] }, tls: { ...nodeTlsFiles(certs, nodeOf[i]), allow: [] }, peers: { ca: caFiles(certs).cert, allow: [nodeOf[other]] }, ...(stateStore === undefined ? {} : { stateStore }) };
    writeFileSync(n.configFile, JSON.stringify(n.config, null, 2));
  }
  for (const n of nodes) procs.set(n.role, await startNodeProcess(n, { cli }));
  const connect = async (via: (instance: 'vnf1' | 'vnf2') => StatePeerVia | undefined): Promise<NodeDeployment> => {
    const clients: NodeClient[] = [];
    for (const n of nodes) {
      const v = n.role === 'vnf1' || n.role === 'vnf2' ? via(n.role) : undefined;
      clients.push(await NodeClient.connect({ channel: nodeChannel(unixEndpoint(n.config.listen.unix!, n.config.name)), ...(v === undefined ? {} : { statePeer: v }) }));
    }
    const d = new NodeDeployment(clients);
    deployments.push(d);
    return d;
  };
  const d0 = await connect(() => undefined);
  await installRules(d0.switchControl, lab.spec.rules);
  const restart = async (i: 'vnf1' | 'vnf2', edit: (n: LabNode) => void): Promise<void> => {
    const p = procs.get(i)!;
    const exited = new Promise((r) => p.child.once('exit', r));
    p.child.kill('SIGTERM');
    await exited;
    const n = node(i);
    edit(n);
    writeFileSync(n.configFile, JSON.stringify(n.config, null, 2));
    procs.set(i, await startNodeProcess(n, { cli }));
  };
  const traffic = (flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] } => twoWayTraffic(lab, closers, flows);
  return { lab, nodes, procs, nodeOf, stateAddress, connect, restart, traffic, redis, redisCluster, certs };
}

/** calls of these methods the controller's clients made */
export const controllerCalls = (d: NodeDeployment, methods: readonly NodeMethod[]): number => d.nodes.reduce((a, n) => a + methods.reduce((b, m) => b + (n.calls.get(m) ?? 0), 0), 0);
/** the methods that carry state records */
export const STATE_BYTES_METHODS: readonly NodeMethod[] = ['ExportState', 'ImportState', 'DeleteState'];

/** the rules that send to vnf1 in the standard lab (forward on s1, reverse on s2) */
export const movingRules = (d: NodeDeployment): number[] => d.switchControl.rules().filter((r) => r.action.outPort.endsWith('-vnf1')).map((r) => r.id);
