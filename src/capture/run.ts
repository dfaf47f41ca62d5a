/**
 * One `sharpctl capture`: the nodes to capture on (a lab's node processes,
 * a deployment spec's nodes, or one node socket), the Capture rpc on each
 * of them at once, every frame into the pcapng file as it comes, and a
 * summary. Ends on the count, the duration, or `signal` (Ctrl-C).
 */
import path from 'node:path';
import { NodeClient } from '../node/client.js';
import { nodeChannel, unixEndpoint } from '../node/transport/index.js';
import type { CaptureProgress, NodeCapturedFrame } from '../node/capture-service.js';
import type { CaptureRequest } from './filter.js';
import { PcapngCaptureFile } from './pcapng-out.js';

/** Capture asked of a data plane that has no capture hook (BMv2). */
export class CaptureUnsupportedError extends Error {
  override name = 'CaptureUnsupportedError';
}

/** The P4 switch has no hook: what BMv2 offers instead is not wired up. */
export const BMV2_CAPTURE_UNSUPPORTED =
  "capture is not supported on bmv2 switches: the P4 switch runs in BMv2, whose packets the XDP capture hook never sees, and sharpctl does not drive BMv2's own pcap dumping (simple_switch --pcap) or a packet-in mirror yet; this lab runs its agents in its own process, with no node to capture at either; capture on an XDP lab (sharpctl lab up --target xdp) or on a BMv2 lab whose agents run on nodes (the default)";

/** A BMv2 lab on nodes: the agents capture, the P4 switches cannot. */
export const BMV2_CAPTURE_AGENTS_ONLY = 'the P4 switches are BMv2, with no capture hook: frames as the agents see them only';

/** A node asked for something it cannot do (no such port, a capture running already): its message, with the node named. */
export class CaptureNodeError extends Error {
  override name = 'CaptureNodeError';
}

export interface CaptureSummary {
  file: string;
  /** frames written to the file */
  frames: number;
  /** records the programs lost because a capture ring was full (the frames themselves were not lost) */
  ringFull: number;
  /** frames the kernel filters left out */
  filtered: number;
  stoppedBy: 'count' | 'duration' | 'interrupt';
  nodes: string[];
  interfaces: string[];
  verdicts: Record<string, number>;
}

export interface NodeSocket {
  name: string;
  socket: string;
}

/** Connects to nodes by their Unix sockets. */
export async function connectNodeSockets(sockets: readonly NodeSocket[]): Promise<NodeClient[]> {
  const clients: NodeClient[] = [];
  try {
    for (const s of sockets) clients.push(await NodeClient.connect({ channel: nodeChannel(unixEndpoint(s.socket, s.name)) }));
  } catch (e) {
    for (const c of clients) c.close();
    throw e;
  }
  return clients;
}

/** The ports and interfaces a node has, by the names a request uses. */
export function nodePorts(c: NodeClient): string[] {
  return [...c.health.switches.flatMap((s) => s.ports.map((p) => p.name)), ...c.health.instances.flatMap((i) => i.ifaces)];
}

/** The nodes a request can match anything on. */
export function nodesFor(clients: readonly NodeClient[], r: CaptureRequest): NodeClient[] {
  let out = [...clients];
  if (r.port !== undefined) {
    out = out.filter((c) => nodePorts(c).includes(r.port!));
    if (out.length === 0) throw new CaptureNodeError(`no node has a port or interface '${r.port}' (ports: ${clients.flatMap(nodePorts).join(', ')})`);
  }
  // agents know no rules
  if (r.rule !== undefined) out = out.filter((c) => c.health.switches.length > 0);
  if (out.length === 0) throw new CaptureNodeError('no node runs a switch to capture rule matches on');
  return out;
}

export async function runCapture(
  clients: readonly NodeClient[],
  r: CaptureRequest,
  o: { file: string; signal: AbortSignal; progress?: (line: string) => void },
): Promise<CaptureSummary> {
  const nodes = nodesFor(clients, r);
  const file = new PcapngCaptureFile(path.resolve(o.file), r.snaplen);
  const stop = new AbortController();
  let stoppedBy: CaptureSummary['stoppedBy'] = 'duration';
  const onInterrupt = (): void => {
    stoppedBy = 'interrupt';
    stop.abort();
  };
  if (o.signal.aborted) onInterrupt();
  o.signal.addEventListener('abort', onInterrupt, { once: true });
  const counts = new Map<string, CaptureProgress>();
  const verdicts: Record<string, number> = {};
  const ringFull = (): number => Number([...counts.values()].reduce((a, c) => a + c.ringFull, 0n));
  const ticker = o.progress === undefined ? undefined : setInterval(() => o.progress!(`${file.frames} frames written${ringFull() ? `, ${ringFull()} records lost to a full capture ring` : ''}`), 1000);
  // a node's first counts say its hooks are on; once all are, the capture runs
  const onCounts = (node: string, c: CaptureProgress): void => {
    const first = !counts.has(node);
    counts.set(node, c);
    if (first && counts.size === nodes.length) o.progress?.(`capturing on ${nodes.map((n) => n.name).join(', ')} into ${file.path}${r.count ? `, ${r.count} frames` : ''}${r.durationMs ? `, ${r.durationMs / 1000} s` : ''}; Ctrl-C ends`);
  };
  try {
    const onFrames = (fs: readonly NodeCapturedFrame[]): void => {
      if (stop.signal.aborted) return;
      const take = r.count > 0 ? fs.slice(0, Math.max(0, r.count - file.frames)) : fs;
      file.addAll(take);
      for (const f of take) verdicts[f.verdict] = (verdicts[f.verdict] ?? 0) + 1;
      if (r.count > 0 && file.frames >= r.count) {
        stoppedBy = 'count';
        stop.abort();
      }
    };
    await Promise.all(
      nodes.map((n) =>
        n.capture(r, { onFrames, onCounts: (c) => onCounts(n.name, c), signal: stop.signal }).catch((e: unknown) => {
          // one node failing ends the others' captures too
          stop.abort();
          throw e;
        }),
      ),
    );
  } finally {
    clearInterval(ticker);
    o.signal.removeEventListener('abort', onInterrupt);
    file.close();
  }
  return {
    file: file.path,
    frames: file.frames,
    ringFull: ringFull(),
    filtered: Number([...counts.values()].reduce((a, c) => a + c.filtered, 0n)),
    stoppedBy,
    nodes: nodes.map((n) => n.name),
    interfaces: file.interfaces,
    verdicts,
  };
}
