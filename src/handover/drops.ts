/**
 * Frames the data plane failed to redirect or transmit, by place and reason,
 * read from the switches' port counters and the instances' interfaces. A
 * handover compares a snapshot before it with one after it: what the ports
 * and agents it moved traffic through dropped meanwhile is loss, and the
 * outcome says so (never `completed`).
 */
import type { Deployment, DropCount, DropReason, SwitchControl } from '../dataplane/types.js';
import { leastDeficits } from './least-deficit.js';

/** "where|reason" -> frames, a point-in-time reading of drop counters; `exact`: a notIngested count that is the buffer's own drop count (nothing to settle) */
export type DropSnapshot = Map<string, DropCount & { exact?: boolean }>;

export interface DropScope {
  /** every switch of the deployment: a moved flow's frames cross the ones its rules are on and then any on its way to its host */
  switches: readonly string[];
  /** "switch/port" of ports towards instances the handover does not involve: their transmit failures are other traffic's */
  otherInstancePorts: ReadonlySet<string>;
  /** instances whose interfaces count */
  instances: readonly string[];
}

function put(s: DropSnapshot, where: string, reason: DropReason, frames: bigint, exact?: boolean): void {
  s.set(`${where}|${reason}`, { where, reason, frames, ...(exact === true ? { exact } : {}) });
}

/**
 * Reads the drop counters of a scope. Switch ports: `xmitFailed` (the
 * device could not transmit what the switch sent it) for every port but
 * those towards other instances — a released burst dies as readily at the
 * far switch's port towards the host as at the ports towards A and B;
 * `redirectFailed` and `switchDrop` (the switch program's own drops other
 * than no-rule and forged shims, which are not traffic of any rule) for every
 * port, because a moving flow may arrive on any of them.
 * `notIngested` (frames a port's interface received that the switch did not
 * take in: in flight or dropped by its input buffer) where the switch says,
 * for the ports xmitFailed counts: a release crowds out a host port's live
 * traffic as readily as it overflows the port it enters by.
 * Instances: both counters of every interface.
 * `unreadable`: an instance whose counters cannot be read is left out (and
 * reported to it) rather than failing the whole snapshot.
 */
export async function snapshotDrops(d: Deployment, scope: DropScope, unreadable?: (instance: string, e: unknown) => void): Promise<DropSnapshot> {
  const s: DropSnapshot = new Map();
  for (const sw of scope.switches) {
    for (const p of await d.switchControl.portCounters(sw)) {
      const where = `${sw}/${p.port}`;
      if (!scope.otherInstancePorts.has(where)) {
        put(s, where, 'xmitFailed', p.xmitFailed);
        if (p.notIngested !== undefined) put(s, where, 'notIngested', p.notIngested, p.notIngestedExact);
      }
      put(s, where, 'redirectFailed', p.redirectFailed);
      put(s, where, 'switchDrop', p.dropOther);
    }
  }
  const agents = d.agentControl;
  if (agents.interfaceDrops !== undefined)
    for (const inst of scope.instances) {
      let ifaces: Awaited<ReturnType<NonNullable<typeof agents.interfaceDrops>>>;
      try {
        ifaces = await agents.interfaceDrops(inst);
      } catch (e) {
        if (unreadable === undefined) throw e;
        unreadable(inst, e);
        continue;
      }
      for (const i of ifaces) {
        const where = `${inst}/${i.iface}`;
        put(s, where, 'xmitFailed', i.xmitFailed);
        put(s, where, 'redirectFailed', i.redirectFailed);
      }
    }
  return s;
}

/**
 * `after` with each notIngested count that grew since `before` lowered to
 * its least reading from then on (least-deficit.ts): read right after a
 * release, it also counts the frames still waiting in the switch's input
 * buffer, which go in. Exact counts (the buffer's own drops) stand as read.
 */
export async function settleNotIngested(sc: SwitchControl, before: DropSnapshot, after: DropSnapshot, remaining: () => number): Promise<DropSnapshot> {
  const grown = [...after.values()].filter((a) => a.reason === 'notIngested' && a.exact !== true && a.frames > (before.get(`${a.where}|notIngested`)?.frames ?? a.frames));
  const read = sc.inputShortfall;
  if (grown.length === 0 || read === undefined) return after;
  const keys = new Set(grown.map((a) => a.where));
  const switches = sc.switches().filter((sw) => grown.some((a) => a.where.startsWith(`${sw}/`)));
  const least = await leastDeficits(async () => {
    const out = new Map<string, bigint>();
    for (const sw of switches) {
      const m = await read.call(sc, sw).catch(() => undefined);
      if (m === undefined) return undefined;
      for (const [port, { waiting: v }] of m) {
        const where = `${sw}/${port}`;
        // as a deficit: what it holds more than before the handover
        if (keys.has(where)) out.set(where, v - (before.get(`${where}|notIngested`)?.frames ?? v));
      }
    }
    return out;
  }, remaining);
  const settled: DropSnapshot = new Map(after);
  for (const a of grown) {
    const d = least.get(a.where);
    const b = before.get(`${a.where}|notIngested`)!.frames;
    if (d !== undefined && b + d < a.frames) put(settled, a.where, 'notIngested', b + (d > 0n ? d : 0n));
  }
  return settled;
}

/** What grew between two snapshots (a counter that went down, e.g. an interface re-created, counts nothing). */
export function dropDelta(before: DropSnapshot, after: DropSnapshot): DropCount[] {
  const out: DropCount[] = [];
  for (const [k, a] of after) {
    const b = before.get(k)?.frames ?? 0n;
    if (a.frames > b) out.push({ where: a.where, reason: a.reason, frames: a.frames - b });
  }
  return out;
}

export const totalFrames = (xs: readonly DropCount[]): bigint => xs.reduce((a, x) => a + x.frames, 0n);

const WHY: Record<DropReason, string> = {
  xmitFailed: 'not transmitted by the device (its link or the far end is down)',
  redirectFailed: 'redirect refused by the kernel (the out device is down or cannot take the frame)',
  switchDrop: 'dropped by the switch program',
  overflow: 'did not fit the hold ring',
  replayFailed: 'held, failed to replay',
  stranded: "held in the new instance's ring, which the rollback could not bring back (its host did not answer)",
  vnfDropped: "not queued to the VNF process by its TUN device (the process's queue was full)",
  notIngested: 'arrived at the port, never taken in by the switch (its input buffer was full)',
};

/** "12 frames at s1/s1-vnf2: not transmitted by the device (…) [xmitFailed]" */
export function describeDrop(x: DropCount): string {
  return `${x.frames} frames at ${x.where}: ${WHY[x.reason]} [${x.reason}]`;
}
