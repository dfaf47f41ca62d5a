/** A netns lab with the XDP data plane, traffic generators and sinks, torn down after the test. */
import path from 'node:path';
import type { Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { standardSpec, installRules, type NetnsLab } from '../../src/lab/netns-lab.js';
import { openLab } from '../../src/lab/open-lab.js';
import { bmv2Availability } from '../../src/lab/mininet-lab.js';
import type { XdpDataPlane } from '../../src/dataplane/xdp/xdp-dataplane.js';
import type { Bmv2DataPlane } from '../../src/dataplane/bmv2/bmv2-dataplane.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import { TrafficSink } from '../../src/traffic/sink.js';
import { repoRoot, uniqueName } from './env.js';
import { vnfKind } from '../../src/node/vnf-kinds.js';
import type { LabSpec, VnfType } from '../../src/lab/spec/types.js';
import type { UserspaceVnfFleet } from '../../src/vnf/userspace/fleet.js';

export const objectsDir = path.join(repoRoot, 'build/ebpf');

export interface TestLab {
  lab: NetnsLab;
  dp: XdpDataPlane | Bmv2DataPlane;
  /** the VNF processes of the lab's `userspace` instances */
  userspaceVnfs?: UserspaceVnfFleet;
  /** client -> server */
  forward(flows?: number, frameSize?: number): { gen: TrafficGenerator; sink: TrafficSink };
  /** server -> client */
  reverse(flows?: number, frameSize?: number): { gen: TrafficGenerator; sink: TrafficSink };
}

/**
 * client — s1 — {vnf1, vnf2} — s2 — server, with default routes through
 * vnf1: s1 sends client traffic to vnf1, s2 sends server traffic to vnf1,
 * and both switches deliver to their host whatever comes back.
 */
export async function testLab(
  t: Test,
  options: { ringCapacity?: number; ringCount?: number; instances?: number; defaultRules?: boolean; target?: 'xdp' | 'bmv2'; vnfType?: VnfType; spec?: LabSpec } = {},
): Promise<TestLab> {
  const prefix = `${uniqueName('lab')}-`;
  const workDir = mkdtempSync(path.join(os.tmpdir(), 'sharpt-lab-'));
  t.teardown(() => rmSync(workDir, { recursive: true, force: true }));
  const target = options.target ?? 'xdp';
  // in-process: these tests inspect the loaded BPF objects directly (the node path has its own tests, test/node/)
  const opened = await openLab(options.spec ?? standardSpec(options), prefix, { objectsDir, workDir, target, via: 'in-process' });
  const lab = opened.lab;
  const dp = opened.dp as XdpDataPlane | Bmv2DataPlane;
  const closers: (() => void)[] = [];
  t.teardown(async () => {
    for (const c of closers.reverse()) c();
    await opened.close();
  });
  if (options.defaultRules !== false) await installRules(dp, lab.spec.rules);
  const pair = (from: typeof lab.client, to: typeof lab.client, flows = 1, frameSize = 128): { gen: TrafficGenerator; sink: TrafficSink } => {
    // stamps are checked only when every VNF of the lab stamps (a 'linux' VNF does not)
    const stamps = lab.spec.vnfs.every((v) => vnfKind(v.type).stamps);
    const sink = new TrafficSink({ objectsDir, netns: to.netns, ifname: to.ifname, stamps, flows });
    closers.push(() => sink.close());
    const gen = new TrafficGenerator({ objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows, frameSize });
    closers.push(() => gen.close());
    return { gen, sink };
  };
  return { lab, dp, ...(opened.userspaceVnfs === undefined ? {} : { userspaceVnfs: opened.userspaceVnfs }), forward: (f, s) => pair(lab.client, lab.server, f, s), reverse: (f, s) => pair(lab.server, lab.client, f, s) };
}

/** Why BMv2 tests cannot run here (printed as the skip reason), or false. */
export function bmv2Skip(): string | false {
  const a = bmv2Availability();
  return a.ok ? false : a.reason;
}
