/**
 * The BMv2 lab as a deployment: the Mininet lab's BMv2 switches driven over
 * P4Runtime by this process (P4RuntimeSwitches), and one node process
 * (`sharpctl node run`) per VNF namespace carrying the agents, reached over
 * its Unix socket (Mininet's namespaces have no management network). The
 * same NodeDeployment a controller builds from a deployment spec.
 *
 * Rollbacks relay through the P4 switch (its relays table), as across
 * hosts; with `relayAround` the agents relay around it instead (the nodes'
 * directRelay: the switch's veths are in this kernel). Either way the lab
 * puts xdp_pass on the switch's veths so that XDP may transmit into them.
 */
import path from 'node:path';
import { createMininetLab, type MininetLab } from './mininet-lab.js';
import { connectLabNodes, labNodeConfigs, startNodeProcess, stopLabNodes, NodeLabDataPlane, type LabNode, type NodeProcess } from './lab-nodes.js';
import type { LabSpec } from './spec/types.js';
import { NodeDeployment } from '../node/client.js';
import { P4RuntimeSwitches } from '../dataplane/bmv2/p4runtime-switches.js';
import { SwitchVethPass } from '../dataplane/bmv2/bmv2-dataplane.js';
import { SwitchPortArrivals } from '../dataplane/bmv2/port-arrivals.js';
import { P4_ARTIFACTS } from '../dataplane/bmv2/artifacts.js';
import type { PipelineMode } from '../dataplane/bmv2/topology.js';

export interface Bmv2NodeLab {
  lab: MininetLab;
  nodes: NodeProcess[];
  dp: NodeLabDataPlane;
  /** stops the nodes, detaches what they pinned, stops Mininet; idempotent */
  close(): Promise<void>;
}

/** how long one node process may take to get ready */
const NODE_START_MS = 20_000;

export async function openBmv2NodeLab(
  spec: LabSpec,
  prefix: string,
  o: { dir: string; cli: string; objectsDir: string; quiescenceMs?: number; callTimeoutMs?: number; bmv2Log?: boolean; simpleSwitchGrpc?: string; pipeline?: PipelineMode; relayAround?: boolean },
): Promise<Bmv2NodeLab> {
  const lab = await createMininetLab(spec, prefix, { dir: o.dir, ...(o.bmv2Log === undefined ? {} : { bmv2Log: o.bmv2Log }), ...(o.simpleSwitchGrpc === undefined ? {} : { simpleSwitchGrpc: o.simpleSwitchGrpc }) });
  const procs: NodeProcess[] = [];
  let nodes: LabNode[] = [];
  let pass: SwitchVethPass | undefined;
  let arrivals: SwitchPortArrivals | undefined;
  let dp: NodeLabDataPlane | undefined;
  let closed: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closed ??= (async () => {
      await dp?.close();
      await stopLabNodes(procs, nodes, o.cli);
      pass?.close();
      arrivals?.close();
      await lab.stop();
    })());
  try {
    pass = new SwitchVethPass(lab.bmv2, { objectsDir: o.objectsDir });
    // this process runs where the switches do: it reads their ports' interfaces (what BMv2's input buffers hold or dropped)
    const arrived = (arrivals = new SwitchPortArrivals(lab.bmv2));
    // node names are DNS names, as in the XDP lab
    const nodePrefix = prefix.replace(/[^A-Za-z0-9-]/g, '-');
    const relayAround = o.relayAround === true;
    nodes = labNodeConfigs(lab, { dir: path.join(o.dir, 'nodes'), nodePrefix, p4Switches: lab.bmv2.switches, relayAround });
    const started = await Promise.allSettled(nodes.map((n) => startNodeProcess(n, { cli: o.cli, timeoutMs: NODE_START_MS * nodes.length })));
    for (const r of started) if (r.status === 'fulfilled') procs.push(r.value);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    const agents = await connectLabNodes(nodes, o.callTimeoutMs === undefined ? {} : { callTimeoutMs: o.callTimeoutMs });
    let switches: P4RuntimeSwitches;
    try {
      switches = await P4RuntimeSwitches.connect(
        lab.bmv2.switches.map((s) => ({ ...s, pipeline: o.pipeline ?? 'push', relayAround, ...arrived.readers(s) })),
        { p4infoPath: P4_ARTIFACTS.p4info, deviceConfigPath: P4_ARTIFACTS.bmv2Json, ...(o.quiescenceMs === undefined ? {} : { quiescenceMs: o.quiescenceMs }) },
      );
    } catch (e) {
      agents.close();
      throw e;
    }
    dp = new NodeLabDataPlane(new NodeDeployment(agents.nodes, [switches]), 'bmv2');
    return { lab, nodes: procs, dp, close };
  } catch (e) {
    await close();
    throw e;
  }
}
