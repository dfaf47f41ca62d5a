/**
 * A lab and the data plane driving it, for either target: XDP switches in
 * plain namespaces, or BMv2 switches in Mininet. Everything above this
 * (daemon, demo, tests) is the same for both.
 */
import { createLabFromSpec, destroyLab, type NetnsLab } from './netns-lab.js';
import { createMininetLab } from './mininet-lab.js';
import type { LabSpec, Target } from './spec/types.js';
import type { DataPlane } from '../dataplane/types.js';
import { XdpDataPlane } from '../dataplane/xdp/xdp-dataplane.js';
import { Bmv2DataPlane } from '../dataplane/bmv2/bmv2-dataplane.js';
import { P4_ARTIFACTS } from '../dataplane/bmv2/artifacts.js';
import { nodeLabAdoption, openNodeLab } from './lab-nodes.js';
import type { LabAdoption } from './run-dir.js';
import { openBmv2NodeLab } from './bmv2-node-lab.js';
import { repoRoot } from '../cli/paths.js';
import path from 'node:path';
import { userspaceProcess } from '../node/vnf-kinds.js';
import type { UserspaceVnfFleet } from '../vnf/userspace/fleet.js';

export interface OpenLabOptions {
  objectsDir: string;
  /** bmv2: folder for the switches' sockets and logs */
  workDir: string;
  /** overrides the spec's target */
  target?: Target;
  quiescenceMs?: number;
  /** bmv2: BMv2's per-packet event log (slow) */
  bmv2Log?: boolean;
  /** bmv2: the simple_switch_grpc to run (default: the first on PATH), e.g. to compare two builds */
  simpleSwitchGrpc?: string;
  /**
   * 'nodes' (default) runs a node daemon process in every switch (xdp) and
   * VNF namespace and drives them over the node API, and BMv2 switches over
   * P4Runtime — the production path; 'in-process' loads every program in
   * this process (the tests that inspect BPF objects directly, and the
   * paper's experiments, measured as they were before the nodes; the
   * baseline runs on nodes too).
   */
  via?: 'nodes' | 'in-process';
}

export interface OpenedLab {
  target: Target;
  lab: NetnsLab;
  dp: DataPlane;
  /** the Unix sockets of the nodes' Prometheus metrics (a lab of node processes): every drop counter by reason */
  metricsSockets?: readonly string[];
  /** the VNF processes of the lab's `userspace` instances (started with the lab, stopped by close) */
  userspaceVnfs?: UserspaceVnfFleet;
  /** what a replacement daemon needs to adopt the lab (an XDP lab of node processes only: everything else lives in the process that opened it) */
  adoption?: Omit<LabAdoption, 'instances' | 'spec'>;
  /** closes the data plane, then removes the lab; idempotent */
  close(): Promise<void>;
}

export async function openLab(spec: LabSpec, prefix: string, o: OpenLabOptions): Promise<OpenedLab> {
  return withUserspaceVnfs(await openDataPlane(spec, prefix, o));
}

/**
 * Instances whose kind has a userspace VNF process: one process each in
 * the instance's namespace (src/vnf/userspace), once the lab is up; the
 * lab's close stops them first. Loaded only for labs that have such
 * instances.
 */
async function withUserspaceVnfs(opened: OpenedLab): Promise<OpenedLab> {
  const insts = opened.lab.topology.instances.filter((i) => userspaceProcess(i.kind) === 'userspace');
  if (insts.length === 0) return opened;
  let fleet: UserspaceVnfFleet;
  try {
    const { UserspaceVnfFleet } = await import('../vnf/userspace/fleet.js');
    fleet = await UserspaceVnfFleet.start(
      insts.map((i) => {
        if (i.netns === undefined) throw new Error(`instance ${i.name}: a userspace VNF runs in the instance's namespace, and it has none`);
        return { name: i.name, netns: i.netns, ifaces: i.ifaces };
      }),
    );
  } catch (e) {
    await opened.close();
    throw e;
  }
  let closed: Promise<void> | undefined;
  // the VNF processes are this process's, their E-State with them: a replacement daemon could not adopt them
  const { adoption: _notAdoptable, ...rest } = opened;
  return { ...rest, userspaceVnfs: fleet, close: () => (closed ??= fleet.close().finally(() => opened.close())) };
}

async function openDataPlane(spec: LabSpec, prefix: string, o: OpenLabOptions): Promise<OpenedLab> {
  const target = o.target ?? spec.target;
  const q = o.quiescenceMs === undefined ? {} : { quiescenceMs: o.quiescenceMs };
  const bmv2 = { ...(o.bmv2Log === undefined ? {} : { bmv2Log: o.bmv2Log }), ...(o.simpleSwitchGrpc === undefined ? {} : { simpleSwitchGrpc: o.simpleSwitchGrpc }) };
  if (target === 'xdp' && (o.via ?? 'nodes') === 'nodes') {
    const nodesDir = path.join(o.workDir, 'nodes');
    const nl = await openNodeLab({ ...spec, target }, prefix, { dir: nodesDir, cli: path.join(repoRoot, 'dist/src/cli/main.js'), ...q });
    const metricsSockets = nl.nodes.flatMap((p) => (p.node.config.metrics?.unix === undefined ? [] : [p.node.config.metrics.unix]));
    return { target, lab: nl.lab, dp: nl.dp, metricsSockets, adoption: nodeLabAdoption(nl, nodesDir), close: nl.close };
  }
  if (target === 'xdp') {
    destroyLab(prefix);
    const lab = createLabFromSpec({ ...spec, target }, prefix);
    let dp: XdpDataPlane;
    try {
      dp = await XdpDataPlane.create(lab.topology, { objectsDir: o.objectsDir, ...q });
    } catch (e) {
      destroyLab(prefix);
      throw e;
    }
    let closed: Promise<void> | undefined;
    return { target, lab, dp, close: () => (closed ??= dp.close().finally(() => void destroyLab(prefix))) };
  }
  const cli = path.join(repoRoot, 'dist/src/cli/main.js');
  if ((o.via ?? 'nodes') === 'nodes') {
    const bl = await openBmv2NodeLab({ ...spec, target }, prefix, { dir: o.workDir, cli, objectsDir: o.objectsDir, ...q, ...bmv2 });
    const metricsSockets = bl.nodes.flatMap((p) => (p.node.config.metrics?.unix === undefined ? [] : [p.node.config.metrics.unix]));
    return { target, lab: bl.lab, dp: bl.dp, metricsSockets, close: bl.close };
  }
  const lab = await createMininetLab({ ...spec, target }, prefix, { dir: o.workDir, ...bmv2 });
  let dp: Bmv2DataPlane;
  try {
    dp = await Bmv2DataPlane.create(lab.bmv2, { objectsDir: o.objectsDir, p4infoPath: P4_ARTIFACTS.p4info, deviceConfigPath: P4_ARTIFACTS.bmv2Json, ...q });
  } catch (e) {
    await lab.stop();
    throw e;
  }
  let closed: Promise<void> | undefined;
  return { target, lab, dp, close: () => (closed ??= dp.close().finally(() => lab.stop())) };
}
