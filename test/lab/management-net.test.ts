// A lab's controller reaches its node daemons as it would reach real hosts:
// over the lab's own management network, TCP with mutual TLS. Each lab has
// its own subnet, no host network is covered, only the lab's controller is
// accepted, and nothing of the network outlives the lab — also when its
// daemon was killed.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { openNodeLab } from '../../src/lab/lab-nodes.js';
import { destroyLab, standardSpec } from '../../src/lab/netns-lab.js';
import {
  createManagementNetwork,
  managementNetns,
  ManagementNetworkError,
  MGMT_IFNAME,
  MGMT_MAX_NODES,
  MGMT_NODE_PORT,
  removeManagementNetwork,
} from '../../src/lab/management-net.js';
import { createNetns, ip, linkExists, listNetns, deleteNetns, netnsExists } from '../../src/net/iproute.js';
import { ipv4Number } from '../../src/net/frame.js';
import { NodeClient } from '../../src/node/client.js';
import {
  controllerTlsFiles,
  createCa,
  createControllerCert,
  loadTls,
  nodeChannel,
  NodeUntrustedError,
  NodePermissionDeniedError,
  tlsEndpoint,
} from '../../src/node/transport/index.js';
import { repoRoot, uniqueName } from '../helpers/env.js';
import { sleep } from '../../src/util/mutex.js';

const cli = path.join(repoRoot, 'dist/src/cli/main.js');

const inSubnet = (addr: string, subnet: string): boolean => {
  const [net, len] = subnet.split('/');
  const mask = len === '0' ? 0 : (~0 << (32 - Number(len))) >>> 0;
  return ((ipv4Number(addr) & mask) >>> 0) === ((ipv4Number(net!) & mask) >>> 0);
};

/** Waits (bounded) until `cond` holds: a namespace's interfaces go a moment after it is deleted. */
async function eventually(cond: () => boolean, boundMs = 10_000): Promise<boolean> {
  for (let waited = 0; waited < boundMs; waited += 50) {
    if (cond()) return true;
    await sleep(50);
  }
  return cond();
}

t.test('a node lab: every node is reached over mutual TLS on its management address, and only by the lab controller', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-mgmt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const prefix = `${uniqueName('mg')}-`;
  const nl = await openNodeLab(standardSpec(), prefix, { dir: path.join(dir, 'nodes'), cli });
  t.teardown(() => nl.close());
  const m = nl.management;

  t.ok(inSubnet(m.controllerAddress, '198.18.0.0/15'), `the lab's subnet ${m.subnet} is in the benchmarking range 198.18.0.0/15`);
  const routes = JSON.parse(ip(['-j', '-4', 'route', 'show', 'table', 'main'])) as { dst: string; dev: string }[];
  const others = routes.filter((r) => r.dev !== m.rootIfname && r.dst !== 'default');
  t.same(
    others.filter((r) => inSubnet(r.dst.split('/')[0]!, m.subnet) || inSubnet(m.controllerAddress, r.dst.includes('/') ? r.dst : `${r.dst}/32`)),
    [],
    'no other route of the host overlaps the lab subnet',
  );
  const rootAddrs = JSON.parse(ip(['-j', '-4', 'addr', 'show', 'dev', m.rootIfname])) as { addr_info: { local: string }[] }[];
  t.same(rootAddrs[0]?.addr_info.map((a) => a.local), [m.controllerAddress], `the controller's end ${m.rootIfname} in the root namespace holds ${m.controllerAddress}`);

  t.equal(nl.nodes.length, 4, 'a node process per switch and VNF namespace');
  for (const p of nl.nodes) {
    const address = m.addresses.get(p.node.netns);
    t.ok(address !== undefined && inSubnet(address, m.subnet), `${p.node.config.name} has ${address} on ${MGMT_IFNAME}`);
    t.equal(p.node.config.listen.tcp, `${address}:${MGMT_NODE_PORT}`, `${p.node.config.name} listens on its management address`);
    t.same(p.node.config.tls?.allow, [`${prefix}lab-controller`], `${p.node.config.name} accepts the lab's controller only`);
  }
  t.same(
    nl.dp.deployment.nodes.map((c) => c.target).sort(),
    [...m.addresses.values()].map((a) => `${a}:${MGMT_NODE_PORT}`).sort(),
    'the controller talks to every node over TCP on the management network (no Unix socket)',
  );
  t.same(nl.dp.switches().sort(), ['s1', 's2'], 'the switch nodes answer over TLS');

  const s1 = nl.nodes.find((p) => p.node.role === 's1')!.node;
  const certsDir = path.join(dir, 'nodes', 'certs');
  // a controller certificate of the lab's CA, but not the lab's controller
  await createControllerCert(certsDir, 'intruder');
  const intruder = NodeClient.connect({ channel: nodeChannel(tlsEndpoint(s1.config.name, s1.config.listen.tcp!, loadTls(controllerTlsFiles(certsDir, 'intruder'), 'client'))), callTimeoutMs: 5000 });
  await t.rejects(intruder, NodePermissionDeniedError, 'a controller the node config does not allow is refused, named');
  // a controller of another CA altogether
  const otherCa = path.join(dir, 'other-ca');
  await createCa(otherCa);
  await createControllerCert(otherCa, `${prefix}lab-controller`);
  const stranger = NodeClient.connect({ channel: nodeChannel(tlsEndpoint(s1.config.name, s1.config.listen.tcp!, loadTls(controllerTlsFiles(otherCa, `${prefix}lab-controller`), 'client'))), callTimeoutMs: 5000 });
  await t.rejects(stranger, NodeUntrustedError, "the lab controller's name under another CA: the node's certificate is not of its CA, no call is made");
  t.same(nl.dp.rules(), [], 'nothing changed on the node');

  await nl.close();
  t.notOk(linkExists(m.rootIfname), `close removed ${m.rootIfname} from the root namespace`);
  t.notOk(netnsExists(m.netns), `close removed ${m.netns}`);
});

t.test('labs up at the same time get different subnets; the network goes with its namespace', async (t) => {
  const prefixes = [`${uniqueName('ma')}-`, `${uniqueName('mb')}-`];
  t.teardown(() => prefixes.forEach((p) => destroyLab(p)));
  const nets = prefixes.map((p) => {
    const nodes = ['x', 'y'].map((n) => `${p}${n}`);
    for (const ns of nodes) createNetns(ns);
    return createManagementNetwork(p, nodes);
  });
  t.not(nets[0]!.subnet, nets[1]!.subnet, `${nets[0]!.subnet} and ${nets[1]!.subnet}`);
  t.not(nets[0]!.rootIfname, nets[1]!.rootIfname);
  t.equal(nets[0]!.netns, managementNetns(prefixes[0]!), "the bridge lives in a namespace carrying the lab's prefix");
  // what lab down does after a crash: delete the lab's namespaces, nothing else
  destroyLab(prefixes[0]!);
  t.ok(await eventually(() => !linkExists(nets[0]!.rootIfname)), `deleting the namespaces removed ${nets[0]!.rootIfname} from the root namespace`);
  t.ok(linkExists(nets[1]!.rootIfname), "the other lab's network is untouched");
  removeManagementNetwork(nets[1]!);
  t.notOk(linkExists(nets[1]!.rootIfname), 'removeManagementNetwork removes the root end at once');
});

t.test('more nodes than a /24 holds is refused before anything is made', async (t) => {
  const prefix = `${uniqueName('mc')}-`;
  const many = Array.from({ length: MGMT_MAX_NODES + 1 }, (_, i) => `${prefix}n${i}`);
  t.throws(() => createManagementNetwork(prefix, many), new ManagementNetworkError(`a lab's management network holds at most ${MGMT_MAX_NODES} nodes (one /24), this lab has ${MGMT_MAX_NODES + 1} switches and VNF instances`));
  t.same(listNetns(prefix), [], 'no namespace was made');
});

t.test('lab down after kill -9 of the lab daemon removes the management network', async (t) => {
  const runDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-run-'));
  const name = `zt${randomBytes(3).toString('hex')}`;
  const env = { ...process.env, SHARPCTL_RUN_DIR: runDir };
  const sharpctl = (args: string[]): { status: number | null; stdout: string; stderr: string } => spawnSync(process.execPath, [cli, ...args, '--name', name, '--json'], { encoding: 'utf8', timeout: 120_000, cwd: repoRoot, env });
  t.teardown(() => {
    sharpctl(['lab', 'down']);
    for (const ns of listNetns(`sharp-${name}-`)) deleteNetns(ns);
    rmSync(runDir, { recursive: true, force: true });
  });
  const up = sharpctl(['lab', 'up']);
  t.equal(up.status, 0, `lab up: ${up.stderr}`);
  const mgmt = managementNetns(`sharp-${name}-`);
  t.ok(netnsExists(mgmt), `the lab has its management namespace ${mgmt}`);
  const rootEnd = (JSON.parse(ip(['-j', 'link', 'show'])) as { ifname: string; ifalias?: string }[]).find((l) => l.ifalias?.startsWith(`${mgmt}:`))?.ifname;
  t.ok(rootEnd !== undefined, `its root-namespace end is ${rootEnd}`);
  const status = sharpctl(['status']);
  t.equal(status.status, 0, 'the daemon answers status over the management network');
  const pid = (JSON.parse(readFileSync(path.join(runDir, name, 'state.json'), 'utf8')) as { pid: number }).pid;
  process.kill(pid, 'SIGKILL'); // the daemon this test started
  const down = sharpctl(['lab', 'down']);
  t.equal(down.status, 0, `lab down: ${down.stderr}`);
  t.same(listNetns(`sharp-${name}-`), [], 'every namespace of the lab is gone, the management one too');
  t.ok(await eventually(() => rootEnd === undefined || !linkExists(rootEnd)), `${rootEnd} is gone from the root namespace`);
});
