/** Stopping node daemon processes a test started, and removing what they attached and pinned; probe traffic through their lab. */
import path from 'node:path';
import type { Test } from 'tap';
import { detachLabNode, type LabNode, type NodeProcess } from '../../src/lab/lab-nodes.js';
import type { NetnsLab } from '../../src/lab/netns-lab.js';
import { TrafficGenerator } from '../../src/traffic/generator.js';
import { TrafficSink, type TrafficReport } from '../../src/traffic/sink.js';
import { sleep } from '../../src/util/mutex.js';
import { repoRoot } from './env.js';

const objectsDir = path.join(repoRoot, 'build/ebpf');

/** SIGTERM to each running process (5 s each at most), then `sharpctl node detach` of every node inside its namespace. */
export async function stopAndDetachNodes(procs: Iterable<NodeProcess>, nodes: readonly LabNode[], cli: string): Promise<void> {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.signalCode === null) {
      const exited = new Promise((r) => p.child.once('exit', r));
      p.child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }
  }
  // what the nodes pinned goes with them: the interfaces as they were found
  for (const n of nodes) {
    const err = detachLabNode(n, cli);
    if (err !== undefined) console.error(`# detach of ${n.config.name} failed: ${err}`);
  }
}

/** Probe traffic both ways between the lab's client and server (`flows` flows each); `closers` get the generators and sinks. */
export function twoWayTraffic(lab: NetnsLab, closers: (() => void)[], flows: number): { gens: TrafficGenerator[]; sinks: TrafficSink[] } {
  const gens: TrafficGenerator[] = [];
  const sinks: TrafficSink[] = [];
  for (const [from, to] of [
    [lab.client, lab.server],
    [lab.server, lab.client],
  ] as const) {
    const sink = new TrafficSink({ objectsDir, netns: to.netns, ifname: to.ifname });
    const gen = new TrafficGenerator({ objectsDir, netns: from.netns, ifname: from.ifname, srcMac: from.mac, dstMac: to.mac, srcIp: from.ip, dstIp: to.ip, flows });
    closers.push(() => sink.close(), () => gen.close());
    gens.push(gen);
    sinks.push(sink);
  }
  return { gens, sinks };
}

/** Stops the generators, waits for every probe sent to arrive (or be counted lost), reports each direction. */
export async function finishTraffic(gens: TrafficGenerator[], sinks: TrafficSink[]): Promise<TrafficReport[]> {
  await Promise.all(gens.map((g) => g.stop()));
  await Promise.all(sinks.map((s, i) => s.drain(gens[i]!.sent)));
  return sinks.map((s, i) => s.report(gens[i]!.sentPerFlow()));
}

/** Every probe of both directions delivered once, in order, the VNF's stamps continuous. */
export function assertIntact(t: Test, reports: TrafficReport[], what: string): void {
  reports.forEach((r, i) => {
    const dir = `${what}, ${i === 0 ? 'client→server' : 'server→client'}`;
    t.ok(r.sent > 0, `${dir}: ${r.sent} probes sent`);
    t.same({ delivered: r.delivered, lost: r.lost, reordered: r.reordered, duplicated: r.duplicated, stampMismatches: r.stampMismatches }, { delivered: r.sent, lost: 0, reordered: 0, duplicated: 0, stampMismatches: 0 }, `${dir}: every probe delivered once, in order, the VNF's counter continuous`);
  });
}
