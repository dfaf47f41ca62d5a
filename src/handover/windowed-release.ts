/**
 * A release flow-controlled by what the downstream P4 switch has taken in.
 *
 * BMv2 reads each port through libpcap, whose TPACKET ring (1,310 frame
 * slots here) drops silently once full: a release replays a ring of
 * thousands of frames out of the VNF far faster than BMv2 ingests them, and
 * the veth's tx count the agent paces against moves at once, whatever BMv2
 * took. So towards a switch that says what it ingested
 * (SwitchControl.ingestedFromInstances) the release goes in windows: at
 * most WINDOW frames per port in flight, the next window once the switch's
 * ingress counter shows enough of the last one taken in (a counter that
 * does not move for INGEST_STALL_MS: a warning, and the rest at once).
 * Elsewhere (XDP
 * switches ingest at line rate) it is one unbounded release, as before.
 *
 * The release shares the switch's input with the live traffic of its other
 * ports (the hosts'): BMv2 reads its ports in turn, so while a release keeps
 * it busy a host port's ring fills and drops as silently, out of sight of
 * the instance's counters. Where the switch says what each port's input
 * buffer holds (SwitchControl.inputShortfall), the next window also waits
 * until no port of the switch holds more than a window more than at the
 * baseline (for at most INGEST_STALL_MS at a time: then no longer).
 *
 * Counted from a baseline read before the release, other traffic entering
 * the same port only moves the counter on (the wait ends sooner, never
 * later). Where frames are lost anyway, the instance's interface tx count
 * against the port's ingress count over the release says how many: counted
 * as drops ('notIngested') at `<switch>/<port>`, so the handover cannot say
 * "completed" silently.
 */
import { releaseDone, type AgentControl, type DropCount, type PortInput, type ReleaseResult, type SwitchControl } from '../dataplane/types.js';
import { sleep } from '../util/mutex.js';
import { leastDeficits } from './least-deficit.js';

/** frames a release may have in flight towards one P4 switch port: well under BMv2's libpcap ring (1,310 slots) */
export const RELEASE_WINDOW = 512;
/** no progress of the switch's ingress counter this long: go on (with a warning) */
export const INGEST_STALL_MS = 1_000;
/**
 * The handover's time left below which the rest goes at once: a switch at
 * its capacity takes windows in more slowly than the flow fills the ring,
 * and a release cut off by the handover's deadline would leave the flow
 * held. Frames the switch then cannot take in are counted, the flow flows.
 */
export const RELEASE_RESERVE_MS = 3_000;
const POLL_MS = 2;

export interface WindowedReleaseOptions {
  /** the handover's time left (ms), asked before each call */
  remaining: () => number;
  warn: (detail: string) => void;
  window?: number;
  stallMs?: number;
  /** a rollback's relay: the ring goes back into the switches towards this instance (each side out of the interface it came in by) */
  relayTo?: string;
  /**
   * The instance the flow came through before (A, for B's release): its
   * last frames of the flow may still wait in the switches' input buffers
   * at the ports facing it, and BMv2 reads its ports in turn, so the
   * release goes in only once those buffers have been worked off (see
   * drainOldPorts).
   */
  after?: string;
}

export interface WindowedReleaseResult {
  result: ReleaseResult;
  /** frames the instance sent into a switch port that the switch did not take in, per port */
  notIngested: DropCount[];
  /** release calls made (1 where unbounded) */
  windows: number;
}

/** A switch port the released frames enter, with its ingress count at the baseline. */
interface Downstream {
  sw: string;
  port: string;
  /** the instance's side the port is cabled to: frames held on side 1 - side leave towards it (relayed: those held on this side) */
  side: number;
  rx0: bigint;
  /** the instance's interface tx count at the baseline, where its agent says */
  tx0: bigint | undefined;
}

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** The ingress counters of the P4 switch ports facing `instance`; [] where no switch offers them. */
async function readIngest(sc: SwitchControl, instance: string, only?: ReadonlySet<string>): Promise<{ sw: string; port: string; side: number; frames: bigint }[]> {
  const ingested = sc.ingestedFromInstances;
  if (ingested === undefined) return [];
  const per = await Promise.all(sc.switches().filter((sw) => only === undefined || only.has(sw)).map(async (sw) => ((await ingested.call(sc, sw)) ?? []).map((p) => ({ sw, ...p }))));
  return per.flat().filter((p) => p.instance === instance);
}

/**
 * Waits until each switch has taken in what waited at its ports facing
 * `old` when called: what its input buffer held there (inputShortfall:
 * exact where the switch counts its buffers' drops), read against the
 * port's ingress counter. The quiescence wait before saw the flow's last
 * frames leave towards the old instance; they come back out of it into
 * these buffers, and a release into another port of the same switch would
 * overtake them (reordered). A buffer that does not move for stallMs, or
 * the handover's time running out: a warning, and the release goes on.
 * Switches that say nothing of their buffers: nothing to wait for here.
 */
async function drainOldPorts(sc: SwitchControl, old: string, switches: ReadonlySet<string>, o: WindowedReleaseOptions, stallMs: number): Promise<void> {
  const inputs = await readInputs(sc, switches).catch(() => undefined);
  if (inputs === undefined) return;
  const facing = new Set((await readIngest(sc, old, switches)).map((p) => `${p.sw}/${p.port}`));
  // per port facing the old instance: the ingress count at which what waited there is in
  const owed = new Map([...inputs].flatMap(([k, v]) => (facing.has(k) && v.waiting > 0n ? [[k, { n: v.waiting, until: v.ingested + v.waiting }] as const] : [])));
  if (owed.size === 0) return;
  let moved = performance.now();
  let last = new Map<string, bigint>();
  for (;;) {
    const rx = new Map<string, bigint>((await readIngest(sc, old, switches)).map((p) => [`${p.sw}/${p.port}`, p.frames]));
    const left = [...owed].filter(([k, o]) => (rx.get(k) ?? 0n) < o.until).map(([k, o]) => [k, o.n] as const);
    if (left.length === 0) return;
    if ([...rx].some(([k, v]) => v !== last.get(k))) moved = performance.now();
    last = rx;
    if (performance.now() - moved > stallMs || o.remaining() < RELEASE_RESERVE_MS) {
      o.warn(`before releasing: ${left.map(([k, n]) => `${k} has not taken in the ${n} frames that waited there (from ${old})`).join(', ')}: the release goes on; it may overtake them`);
      return;
    }
    await sleep(POLL_MS);
  }
}

/** inputShortfall of every port of `switches`, keyed "switch/port"; undefined where a switch does not say */
async function readInputs(sc: SwitchControl, switches: ReadonlySet<string>): Promise<Map<string, PortInput> | undefined> {
  const read = sc.inputShortfall;
  if (read === undefined) return undefined;
  const out = new Map<string, PortInput>();
  for (const sw of switches) {
    const m = await read.call(sc, sw);
    if (m === undefined) return undefined;
    for (const [port, v] of m) out.set(`${sw}/${port}`, v);
  }
  return out;
}

/** the frames waiting at every port of `switches` (readInputs) */
async function readShortfalls(sc: SwitchControl, switches: ReadonlySet<string>): Promise<Map<string, bigint> | undefined> {
  const m = await readInputs(sc, switches);
  return m === undefined ? undefined : new Map([...m].map(([k, v]) => [k, v.waiting]));
}

async function readTx(ac: AgentControl, instance: string): Promise<Map<number, bigint> | undefined> {
  if (ac.interfaceDrops === undefined) return undefined;
  const out = new Map<number, bigint>();
  for (const i of await ac.interfaceDrops(instance)) if (i.txPackets !== undefined) out.set(i.side, i.txPackets);
  return out.size > 0 ? out : undefined;
}

/**
 * Releases `instance`'s ring of handover `hid` to its VNF, windowed towards
 * P4 switches (see the header). Resumable like the release itself: the ring
 * keeps what a window did not take, so a controller that dies between
 * windows leaves the rest held in order, and the next one's release (this,
 * or unbounded) goes on from there.
 */
export async function windowedRelease(sc: SwitchControl, ac: AgentControl, instance: string, hid: number, o: WindowedReleaseOptions): Promise<WindowedReleaseResult> {
  const window = o.window ?? RELEASE_WINDOW;
  const stallMs = o.stallMs ?? INGEST_STALL_MS;
  let ports: Downstream[];
  try {
    const rx = await readIngest(sc, instance);
    // only then: a release towards XDP switches costs no call more than before
    const tx = rx.length === 0 ? undefined : await readTx(ac, instance).catch(() => undefined);
    ports = rx.map((p) => ({ sw: p.sw, port: p.port, side: p.side, rx0: p.frames, tx0: tx?.get(p.side) }));
    // a port takes in what its side's frames relayed back, or (to the VNF) what went through the VNF from the other side
  } catch (e) {
    o.warn(`the ingress counters of the switch ports facing ${instance} cannot be read (${errText(e)}): its release goes unbounded, and frames the switches do not take in would go unseen`);
    ports = [];
  }
  const relay = o.relayTo === undefined ? {} : { relayTo: o.relayTo };
  if (ports.length > 0 && o.after !== undefined) await drainOldPorts(sc, o.after, new Set(ports.map((p) => p.sw)), o, stallMs);
  if (ports.length === 0) return { result: await ac.release(instance, hid, { timeoutMs: o.remaining(), ...relay }), notIngested: [], windows: 1 };
  /** the ring side whose frames enter port p */
  const feeding = (p: Downstream): 0 | 1 => (o.relayTo === undefined ? 1 - p.side : p.side) as 0 | 1;

  const switches = new Set(ports.map((p) => p.sw));
  const key = (p: { sw: string; port: string }): string => `${p.sw}/${p.port}`;
  // per side of the ring: released by this helper
  const released: [bigint, bigint] = [0n, 0n];
  const readRx = async (): Promise<Map<string, bigint>> => new Map((await readIngest(sc, instance, switches)).map((p) => [key(p), p.frames]));
  /** per port: frames released into it (from the ring's other side) not yet taken in (other traffic there only lowers it) */
  const inFlight = (rx: Map<string, bigint>): bigint[] =>
    ports.map((p) => {
      const d = released[feeding(p)] - ((rx.get(key(p)) ?? p.rx0) - p.rx0);
      return d > 0n ? d : 0n;
    });
  let stalled = false;
  // every port of those switches, the hosts' too: the release shares the switch's input with their live traffic
  const shortfall0 = await readShortfalls(sc, switches).catch(() => undefined);
  let behindGivenUp = shortfall0 === undefined;
  /** when the current wait on the switches' other ports began (undefined: not waiting on them) */
  let behindSince: number | undefined;
  /**
   * Ports of the switches whose input buffers hold more than a window more
   * than at the baseline (the release's frames are in there, or the live
   * traffic they crowd out). A wait on them longer than stallMs: the live
   * traffic alone is about what the switch takes in, and waiting on it from
   * then on would only hold the flow while its ring fills: given up for the
   * rest of the release.
   */
  const behind = async (what: string): Promise<boolean> => {
    if (behindGivenUp) return false;
    const now = await readShortfalls(sc, switches).catch(() => undefined);
    if (now === undefined) return false;
    const most = BigInt(window);
    const over = [...now].flatMap(([k, v]) => {
      const b = v - (shortfall0!.get(k) ?? v);
      return b > most ? [{ k, b }] : [];
    });
    if (over.length === 0) {
      behindSince = undefined;
      return false;
    }
    behindSince ??= performance.now();
    if (performance.now() - behindSince > Math.min(stallMs, Math.max(0, o.remaining()))) {
      behindGivenUp = true;
      o.warn(`${what}: ${over.map((x) => `${x.k} has ${x.b} frames waiting to go in`).join(', ')}, more than a window for ${stallMs} ms with the release held: the switch takes in little more than arrives there; the release goes on without waiting for it`);
      return false;
    }
    return true;
  };
  /** waits until every port has at most `most` in flight, or its counter stalls (then `stalled`), and no port of the switches is behind */
  // the ring's fill after each window: one that has not gone below its least for stallMs fills faster than the switch takes the release in
  let ringLeast: number | undefined;
  let ringFell = performance.now();
  const ringNotDraining = (r: ReleaseResult, what: string): void => {
    if (stalled || r.queued === undefined) return;
    const q = r.queued[0] + r.queued[1];
    if (ringLeast === undefined || q < ringLeast) {
      ringLeast = q;
      ringFell = performance.now();
    } else if (performance.now() - ringFell > stallMs) {
      stalled = true;
      o.warn(`${what}: the ring still holds ${q} frames, not fewer for ${stallMs} ms: the flow fills it faster than the switch takes the windows in; the rest goes at once (frames the switch cannot take in are counted)`);
    }
  };
  const outOfTime = (what: string): boolean => {
    if (stalled || o.remaining() >= RELEASE_RESERVE_MS) return stalled;
    stalled = true;
    o.warn(`${what}: the handover has ${Math.max(0, Math.round(o.remaining()))} ms left: the rest goes at once (frames the switch cannot take in are counted)`);
    return true;
  };
  const settle = async (most: bigint, what: string): Promise<Map<string, bigint>> => {
    let rx = await readRx();
    let moved = performance.now();
    for (;;) {
      const f = inFlight(rx);
      if (outOfTime(what) || (f.every((x) => x <= most) && !(await behind(what)))) return rx;
      if (performance.now() - moved > Math.min(stallMs, Math.max(0, o.remaining()))) {
        const stuck = ports.map((p, i) => ({ p, n: f[i]! })).filter((x) => x.n > most);
        stalled = true;
        o.warn(`${what}: ${stuck.map(({ p, n }) => `${p.sw}/${p.port} took in none of ${n} frames in flight for ${stallMs} ms`).join(', ')}; its counter says nothing now: the rest goes at once`);
        return rx;
      }
      await sleep(POLL_MS);
      const next = await readRx();
      if ([...next].some(([k, v]) => v !== rx.get(k))) moved = performance.now();
      rx = next;
    }
  };

  let result: ReleaseResult | undefined;
  let windows = 0;
  let rx = new Map(ports.map((p) => [key(p), p.rx0]));
  for (;;) {
    const busy = inFlight(rx).reduce((a, b) => (b > a ? b : a), 0n);
    outOfTime(`releasing ${instance} in windows of ${window}`);
    // after a stall, holding the flow's frames for a counter that does not move only delays them: the rest at once
    const r = await ac.release(instance, hid, { timeoutMs: o.remaining(), ...relay, ...(stalled ? {} : { maxFrames: window - Number(busy) }) });
    windows++;
    result = r;
    if (r.releasedNow === undefined) break; // a node that predates windows: it released everything
    released[0] += r.releasedNow[0];
    released[1] += r.releasedNow[1];
    if (releaseDone(r)) break;
    ringNotDraining(r, `releasing ${instance} in windows of ${window}`);
    // the next window once half of this one is in: the switch stays busy meanwhile, and never has more than `window` waiting
    rx = await settle(BigInt(Math.floor(window / 2)), `releasing ${instance} in windows of ${window}`);
  }
  // the last window is still going in: the count below waits for it
  return { result, notIngested: await notIngested(sc, ac, instance, ports, o.remaining), windows };
}

/**
 * What the instance sent into each port over the release that the switch
 * did not take in: its interface's tx count against the port's ingress
 * count, both from the baseline. Traffic keeps flowing (the flow passes
 * now), so one reading is off by the frames in flight: each reading reads
 * tx first and the ingress counter after it (a frame sent in between counts
 * as taken in, never as lost), and the least deficit is the loss
 * (least-deficit.ts).
 */
async function notIngested(sc: SwitchControl, ac: AgentControl, instance: string, ports: readonly Downstream[], remaining: () => number): Promise<DropCount[]> {
  // switches that count their buffers' drops themselves: the handover's drop count has them exactly, nothing to estimate
  if (ports.every((p) => p.tx0 === undefined || sc.countsInputDrops?.(p.sw) === true)) return [];
  const switches = new Set(ports.map((p) => p.sw));
  const least = await leastDeficits(async () => {
    let tx: Map<number, bigint> | undefined;
    try {
      tx = await readTx(ac, instance);
    } catch {
      return undefined;
    }
    if (tx === undefined) return undefined;
    const rx = await readIngest(sc, instance, switches);
    const out = new Map<string, bigint>();
    for (const p of ports) {
      const t = tx.get(p.side);
      const r = rx.find((x) => x.sw === p.sw && x.port === p.port)?.frames;
      if (p.tx0 !== undefined && t !== undefined && r !== undefined) out.set(`${p.sw}/${p.port}`, t - p.tx0 - (r - p.rx0));
    }
    return out;
  }, remaining);
  return [...least].filter(([, d]) => d > 0n).map(([where, frames]) => ({ where, reason: 'notIngested' as const, frames }));
}
