/**
 * The SHarP agents and the example VNF of every VNF instance: one agent
 * object on both of the instance's interfaces, the VNF tail-called behind it.
 * Agents are XDP whatever the switches are (XDP or P4), so every data plane
 * uses this one implementation of the agent half of the DataPlane contract.
 */
import path from 'node:path';
import {
  BpfObjectSpec,
  type BpfCollection,
  type BpfMap,
  ifindexOf,
  withNetns,
  xdpMd,
  u32,
  u64,
  cpuBarrier,
  interfaceFlags,
  MapUpdate,
  queryXdp,
  BpfError,
  XdpDispatcherAnchor,
  XdpLink as XdpLinkHandle,
} from '../../bpf/index.js';
import { deleteLink, linkExists, linkMac, rxQueueCount } from '../../net/iproute.js';
import { netdevDrops, interfaceDrops, TxPacketCounter } from '../../net/netdev-stats.js';
import { claimXdpHook, pinName, PinMismatchError, type PinStore, type PinnedObjectRecord, type JsonValue } from '../../node/pins.js';
import {
  SHARP_DEFAULT_VNF_FLOWS,
  sharpAgentIfaceCodec,
  sharpAgentHoCodec,
  sharpFlowKeyCodec,
  sharpFlowKeyLayout,
  sharpReleaseCtlCodec,
  rodataLayouts,
  SHARP_AGENT_OLD,
  SHARP_AGENT_NEW,
  SHARP_HOLD_HOLDING,
  SHARP_HOLD_PASSING,
  SHARP_FINISH_DONE,
  SHARP_FINISH_AGAIN,
  SHARP_REPLAY_RELAY,
  SHARP_REPLAY_RELAY_DIRECT,
  SHARP_REPLAY_TO_VNF,
  SHARP_VNF_CHAIN_INDEX,
  SHARP_VNF_STACK,
  SHARP_VNF_XDP,
  sharpMacCodec,
  type SharpAgentHo,
  type SharpFlowKey,
} from '../../generated/abi.js';
import { ipv4Number, ipv4String } from '../../net/frame.js';
import { Mutex, sleep } from '../../util/mutex.js';
import { compileWildcards, type FlowSelection, AgentUnavailableError, DataPlaneError, type InterfaceDrops, type AgentHandoverStatus, type FlowKey, type FlowStateEntry, type ReleaseOptions, type ReleaseResult, MAX_RELEASE_FRAMES } from '../types.js';
import { tableSize, VNF_FLOWS_LIMIT, type XdpInstance } from './topology.js';
import { vnfKind, type XdpVnfKind } from '../../node/vnf-kinds.js';
import { ConntrackTable } from '../../state/conntrack-table.js';
import { ReplayLossCounter } from './replay-losses.js';
import { macBytes } from '../../net/frame.js';

/**
 * A switch as far as a same-kernel relay cares: which of its interfaces face
 * which instance side (see XdpAgentSetOptions.directRelay).
 */
export interface AgentSwitchView {
  netns?: string;
  ports: readonly { ifname: string; instance?: string; instanceSide?: number }[];
}

/**
 * Persistence of the XDP objects in a node's pin store: maps, programs and
 * links are pinned, so they outlive the process that loaded them.
 */
export interface XdpPinning {
  store: PinStore;
  /** replace an XDP program this node did not attach (default: refuse, naming it) */
  replace?: boolean;
}

export interface XdpAgentSetOptions {
  /** folder with agent.bpf.o and vnf_counter.bpf.o */
  objectsDir: string;
  xdpMode?: 'native' | 'generic';
  /**
   * Only for switches that cannot relay (BMv2: p4/sharp.p4 drops every shim
   * and p4c is not available here to rebuild it): the switches the instances
   * are cabled to, in this kernel. A release with relayTo then sends the
   * frames straight out of the switch interface facing the target
   * (RELAY_DIRECT), which works only when switch and instances share one
   * kernel. Without it (XDP switches) frames are relayed through the switch
   * (RELAY): back out of the interface they came in on, marked RELAY, and
   * the switch forwards them by its relay route (SwitchControl.setRelay).
   */
  directRelay?: readonly AgentSwitchView[];
  /** pin everything into a node's store (see adopt()); without it, the objects live as long as this process */
  pins?: XdpPinning;
  /** without pins: replace an XDP program already attached (default: refuse, naming it) */
  replace?: boolean;
}

export interface XdpAgentAdoptOptions {
  pins: XdpPinning;
  /** see XdpAgentSetOptions.directRelay (BMv2 only) */
  directRelay?: readonly AgentSwitchView[];
  /** the instances expected (default: every instance pinned in the store); each must equal its pinned spec */
  instances?: readonly XdpInstance[];
  /** folder with redirect_errors.bpf.o: counts what a replay loses in the kernel (without it, such losses go uncounted) */
  objectsDir?: string;
}

/** The interface keeping agent_replay in the XDP dispatcher, one per instance namespace. */
export const AGENT_ANCHOR_IFNAME = 'sharp-anchor';
const ANCHOR_PIN = pinName('link', AGENT_ANCHOR_IFNAME);
const AGENT_KIND = 'agent';
const VNF_KIND = 'vnf';

/** Pinned config of an agent record. */
interface AgentPinConfig {
  instance: XdpInstance;
  xdpMode: 'native' | 'generic';
}

function agentConfig(c: JsonValue): AgentPinConfig {
  return c as unknown as AgentPinConfig;
}

interface LoadedInstance {
  spec: XdpInstance;
  /** keeps agent_replay in the XDP dispatcher: repeated test runs stay fast */
  anchor: XdpDispatcherAnchor;
  agent: BpfCollection;
  /** the XDP VNF tail-called behind the agent; absent for a stack VNF (kind 'linux') */
  vnf: BpfCollection | undefined;
  links: XdpLinkHandle[];
  ifindex: [number, number];
  /** the pinned records (agent, vnf) when persistent */
  pinned?: { agent: PinnedObjectRecord; vnf?: PinnedObjectRecord | undefined };
  /** serialises replays: replay_ctl/replay_mode are per side, not per handover */
  releaseLock: Mutex;
  xdpMode: 'native' | 'generic';
  /** whether `arrivals` proves the quiescence event here (see arrivedFrames); decided on first use */
  arrivalsExact?: boolean;
}

const sum = (xs: readonly bigint[]): bigint => xs.reduce((a, b) => a + b, 0n);

/**
 * Release rounds. A replayed frame leaves through a veth into its peer's rx
 * ring (VETH_RING_SIZE, 256 frames); a full ring refuses it (the veth's
 * tx_dropped, ethtool tx_queue_0_xdp_xmit_errors) and it is gone. The peer
 * drains that ring in its NAPI poll, inline in the softirq the replay runs
 * between its batches or elsewhere (another CPU, ksoftirqd, a NAPI thread),
 * and nothing in a run waits for it: one run of thousands of frames
 * overflows a ring drained elsewhere. So a round replays at most
 * RELEASE_ROUND frames (the ring less a test-run batch of 64, for frames of
 * other flows leaving the same way) and the next one starts once the way out
 * has taken them: its tx packets, for a veth whose peer runs XDP what the
 * peer took from the ring. A way out that does not count what a round sent
 * (a VNF that dropped it, no veth) cannot be paced against: rounds go on
 * unpaced, at RELEASE_ROUND_UNPACED. The price: a live-frames run costs
 * about 100 µs of set-up however few frames it has (its page pool; 75-107
 * µs for one frame here), so paced rounds replay at about half the rate of
 * one long run.
 */
const RELEASE_ROUND = 192;
const RELEASE_ROUND_UNPACED = 8192;
/** spin this long re-reading the counter, then poll with timers */
const RELEASE_SPIN_MS = 1;
/** no progress this long: the way out does not count what the round sent (a NAPI thread waiting for a CPU on a loaded machine waits some ms, not this long) */
const RELEASE_STALL_MS = 200;

/** The interface a side's replayed frames leave by, in the instance's namespace; undefined for RELAY_DIRECT (a switch's interface). */
function releaseOutIface(inst: { spec: XdpInstance }, side: number, replayMode: number): string | undefined {
  if (replayMode === SHARP_REPLAY_RELAY_DIRECT) return undefined;
  // to the VNF: out by the other side; relayed: XDP_TX, out by the side it came in
  return inst.spec.ifaces[replayMode === SHARP_REPLAY_TO_VNF ? 1 - side : side];
}

/** After a round: waits until `out` has transmitted `target` packets; what it has then, or undefined when it stalled short of them (or is gone). */
async function paceRelease(out: TxPacketCounter, target: bigint): Promise<bigint | undefined> {
  let taken = out.read();
  if (taken === undefined || taken >= target) return taken;
  const start = performance.now();
  let progressAt = start;
  for (;;) {
    const now = performance.now();
    if (now - progressAt > RELEASE_STALL_MS) return undefined;
    if (now - start > RELEASE_SPIN_MS) await sleep(1);
    const t = out.read();
    if (t === undefined || t >= target) return t;
    if (t !== taken) {
      taken = t;
      progressAt = performance.now();
    }
  }
}

/**
 * A synchronous test run, repeated while a signal interrupts it (EINTR: the
 * kernel checks for pending signals between batches of a live-frames run).
 * Safe for the replay: each run pops frames off the ring, so a repeat goes
 * on where the interrupted one stopped; for agent_release_finish, a run that
 * returned EINTR did not run at all.
 */
function untilNotInterrupted<T>(run: () => T): T {
  for (let attempt = 1; ; attempt++) {
    try {
      return run();
    } catch (e) {
      if (!(e instanceof BpfError && e.code === 'EINTR') || attempt >= 100) throw e;
    }
  }
}

/** the key's padding: only read by the encoder, so one buffer serves every key */
const KEY_PAD = Buffer.alloc(3);

export function flowKeyToAbi(f: FlowKey): SharpFlowKey {
  return { saddr: ipv4Number(f.src), daddr: ipv4Number(f.dst), sport: f.sport, dport: f.dport, proto: f.proto, pad: KEY_PAD };
}

export function flowKeyFromAbi(k: SharpFlowKey): FlowKey {
  return { src: ipv4String(k.saddr), dst: ipv4String(k.daddr), sport: k.sport, dport: k.dport, proto: k.proto };
}

/**
 * A selection compiled against the flow_state map's raw keys: exact
 * matches by their key bytes, wildcards on the key's numbers; only the
 * records selected become FlowKeys (a move of 100,000 records tests every
 * record of the map).
 */
function rawKeySelection(sel: FlowSelection): (key: Buffer) => boolean {
  if (sel === 'all') return () => true;
  const exact = new Set<string>();
  for (const m of sel) if (m.kind === 'exact') exact.add(sharpFlowKeyCodec.encode(flowKeyToAbi(m.flow)).toString('latin1'));
  const wild = compileWildcards(sel);
  // the key's fields read in place (network byte order, as the codec's layout says)
  const at = Object.fromEntries(sharpFlowKeyLayout.fields.map((f) => [f.name, f.offset]));
  const [sa, da, sp, dp, pr] = [at['saddr']!, at['daddr']!, at['sport']!, at['dport']!, at['proto']!];
  return (k) => {
    if (exact.size > 0 && exact.has(k.toString('latin1'))) return true;
    if (wild === undefined) return false;
    return wild(k.readUInt32BE(sa), k.readUInt32BE(da), k.readUInt16BE(sp), k.readUInt16BE(dp), k[pr]!);
  };
}

export class XdpAgentSet {
  readonly #instances = new Map<string, LoadedInstance>();
  readonly #directRelay: readonly AgentSwitchView[] | undefined;
  readonly #store: PinStore | undefined;
  /** frames replays lost to refused redirects (see replay-losses.ts) */
  #replayLosses: ReplayLossCounter | undefined;
  #closed = false;

  private constructor(o: { directRelay?: readonly AgentSwitchView[] | undefined; pins?: XdpPinning }) {
    this.#directRelay = o.directRelay;
    this.#store = o.pins?.store;
  }

  /** Whether the objects are pinned (they outlive this process; detachAll() removes them). */
  get persistent(): boolean {
    return this.#store !== undefined;
  }

  /**
   * Loads and attaches the agent and VNF of every instance; on failure nothing
   * stays attached (or pinned). Never clobbers an XDP program already attached
   * (XdpBusyError names it) unless `replace`.
   */
  static load(instances: readonly XdpInstance[], o: XdpAgentSetOptions): XdpAgentSet {
    const set = new XdpAgentSet(o);
    try {
      set.#replayLosses = ReplayLossCounter.load(o.objectsDir);
      for (const inst of instances) set.#loadInstance(inst, o);
    } catch (e) {
      set.detachAll();
      throw e;
    }
    return set;
  }

  /**
   * Re-opens the agents and VNFs a (dead or restarted) process pinned, instead
   * of loading them: the same programs, maps (armed handovers, held frames,
   * VNF state) and links — traffic never stopped. A missing dispatcher anchor
   * is re-created; a lost tail-call entry re-inserted. Throws
   * PinMismatchError when the pins are not what the manifest recorded.
   */
  static adopt(o: XdpAgentAdoptOptions): XdpAgentSet {
    const store = o.pins.store;
    const set = new XdpAgentSet(o);
    const names = o.instances?.map((i) => i.name) ?? store.list(AGENT_KIND).map((r) => r.name);
    try {
      if (o.objectsDir !== undefined) set.#replayLosses = ReplayLossCounter.load(o.objectsDir);
      for (const name of names) set.#adoptInstance(store, name, o.instances?.find((i) => i.name === name));
    } catch (e) {
      set.close();
      throw e;
    }
    return set;
  }

  #loadInstance(inst: XdpInstance, o: XdpAgentSetOptions): void {
    const store = o.pins?.store;
    const replace = o.pins?.replace ?? o.replace ?? false;
    const mode = o.xdpMode ?? 'native';
    // refuse before loading anything when an interface runs a program we must not clobber
    if (!replace) for (const ifname of inst.ifaces) claimXdpHook(ifname, inst.netns, { replace: false, ...(store === undefined ? {} : { store }) });
    const kind = vnfKind(inst.kind);
    const xdpVnf: XdpVnfKind | undefined = kind.datapath === 'xdp' ? kind : undefined;
    const spec = BpfObjectSpec.open(path.join(o.objectsDir, 'agent.bpf.o'));
    spec.setConstants(rodataLayouts['agent']!, { ring_capacity: inst.ringCapacity, ring_count: inst.ringCount, vnf_mode: xdpVnf === undefined ? SHARP_VNF_STACK : SHARP_VNF_XDP });
    spec.setMaxEntries('slots', inst.ringCount * 2 * inst.ringCapacity);
    spec.setMaxEntries('release_ctl', inst.ringCount * 2);
    const agent = spec.load();
    let vnf: BpfCollection | undefined;
    try {
      if (xdpVnf !== undefined) {
        const vnfSpec = BpfObjectSpec.open(path.join(o.objectsDir, xdpVnf.object));
        if (inst.vnfFlows !== undefined) vnfSpec.setMaxEntries('flow_state', tableSize(`instance ${inst.name}: vnfFlows`, inst.vnfFlows, SHARP_DEFAULT_VNF_FLOWS, 1, VNF_FLOWS_LIMIT));
        vnf = vnfSpec.load();
      }
    } catch (e) {
      agent.close();
      throw e;
    }
    let ifindex: [number, number];
    let anchor: XdpDispatcherAnchor;
    let pinned: { agent: PinnedObjectRecord; vnf?: PinnedObjectRecord } | undefined;
    let pinnedAgent: PinnedObjectRecord | undefined;
    let pinnedVnf: PinnedObjectRecord | undefined;
    try {
      ifindex = [ifindexOf(inst.ifaces[0], inst.netns), ifindexOf(inst.ifaces[1], inst.netns)];
      if (store !== undefined) {
        const config: AgentPinConfig = { instance: inst, xdpMode: mode };
        pinnedAgent = store.pinCollection(AGENT_KIND, inst.name, agent, { object: 'agent.bpf.o', config: config as unknown as JsonValue });
        if (vnf !== undefined && xdpVnf !== undefined) pinnedVnf = store.pinCollection(VNF_KIND, inst.name, vnf, { object: xdpVnf.object, config: null });
        pinned = { agent: pinnedAgent, ...(pinnedVnf === undefined ? {} : { vnf: pinnedVnf }) };
        anchor = this.#pinnedAnchor(store, pinnedAgent, agent, inst.netns);
      } else anchor = new XdpDispatcherAnchor(agent.program('agent_replay'), AGENT_ANCHOR_IFNAME, inst.netns);
    } catch (e) {
      agent.close();
      vnf?.close();
      // only what this load pinned: pins refused because they exist already stay
      if (pinnedAgent !== undefined) store?.unpin(AGENT_KIND, inst.name);
      if (pinnedVnf !== undefined) store?.unpin(VNF_KIND, inst.name);
      throw e;
    }
    const loaded: LoadedInstance = { spec: inst, agent, vnf, anchor, links: [], ifindex, releaseLock: new Mutex(), xdpMode: mode, ...(pinned === undefined ? {} : { pinned }) };
    this.#instances.set(inst.name, loaded);
    this.#replayLosses?.watch(agent.program('agent_replay'));
    if (vnf !== undefined && xdpVnf !== undefined) {
      // the VNF forwards between its two interfaces: side 0 <-> side 1
      withNetns(inst.netns, () => {
        vnf.map('vnf_tx').update(u32.encode(0), u32.encode(ifindex[0]));
        vnf.map('vnf_tx').update(u32.encode(1), u32.encode(ifindex[1]));
      });
      vnf.map('vnf_ports').update(u32.encode(ifindex[0]), u32.encode(1));
      vnf.map('vnf_ports').update(u32.encode(ifindex[1]), u32.encode(0));
      // vnf_chain is pinned when persistent: a prog array loses its entries when its last user reference goes
      agent.map('vnf_chain').update(u32.encode(SHARP_VNF_CHAIN_INDEX), u32.encode(vnf.program(xdpVnf.program).fd));
    } else {
      // the stack takes a frame as its own only when it is addressed to the interface
      inst.ifaces.forEach((ifname, side) => agent.map('stack_mac').update(u32.encode(side), sharpMacCodec.encode({ addr: macBytes(linkMac(ifname, inst.netns)), pad: Buffer.alloc(2) })));
    }
    ifindex.forEach((ix, side) => agent.map('ifaces').update(u32.encode(ix), sharpAgentIfaceCodec.encode({ side, accept_shim: 1 })));
    for (const ifname of inst.ifaces) {
      if (store !== undefined && pinned !== undefined) loaded.links.push(store.attachPinned(pinned.agent, agent.program('agent'), 'agent', ifname, { netns: inst.netns, mode, replace }));
      else {
        claimXdpHook(ifname, inst.netns, { replace });
        loaded.links.push(agent.program('agent').attachXdp(ifname, { netns: inst.netns, mode }));
      }
    }
    if (store !== undefined && pinned !== undefined) {
      if (pinned.vnf !== undefined) store.markReady(pinned.vnf);
      store.markReady(pinned.agent);
    }
  }

  /** Creates the dispatcher anchor with its link pinned and recorded (its interface too, to delete on detach). */
  #pinnedAnchor(store: PinStore, rec: PinnedObjectRecord, agent: BpfCollection, netns: string | undefined): XdpDispatcherAnchor {
    const pinPath = store.pinPath(rec, ANCHOR_PIN);
    const anchor = new XdpDispatcherAnchor(agent.program('agent_replay'), AGENT_ANCHOR_IFNAME, netns, { pinPath });
    // recorded once it is ours: an interface of that name that was there already is not deleted on detach
    store.addInterface(rec, AGENT_ANCHOR_IFNAME, netns);
    store.recordLink(rec, anchor.link!, { pin: ANCHOR_PIN, program: 'agent_replay', programId: agent.program('agent_replay').id, mode: 'generic', purpose: 'anchor' });
    return anchor;
  }

  #adoptInstance(store: PinStore, name: string, expected: XdpInstance | undefined): void {
    const recA = store.adoptable(AGENT_KIND, name);
    const config = agentConfig(recA.config);
    const inst = config.instance;
    if (expected !== undefined && JSON.stringify(expected) !== JSON.stringify(inst))
      throw new PinMismatchError(AGENT_KIND, name, [`pinned for ${JSON.stringify(inst)}, asked for ${JSON.stringify(expected)}`]);
    const kind = vnfKind(inst.kind);
    const xdpVnf: XdpVnfKind | undefined = kind.datapath === 'xdp' ? kind : undefined;
    const recV = xdpVnf === undefined ? undefined : store.adoptable(VNF_KIND, name);
    const agent = store.openCollection(recA);
    let vnf: BpfCollection | undefined;
    try {
      if (recV !== undefined) vnf = store.openCollection(recV);
    } catch (e) {
      agent.close();
      throw e;
    }
    const links: XdpLinkHandle[] = [];
    let anchor: XdpDispatcherAnchor;
    try {
      for (const l of recA.links.filter((x) => x.purpose === 'attach')) links.push(store.openLink(recA, l));
      const missing = inst.ifaces.filter((i) => !links.some((l) => l.ifname === i));
      if (missing.length > 0) throw new PinMismatchError(AGENT_KIND, name, [`no pinned link on ${missing.join(', ')}`]);
      if (vnf !== undefined && xdpVnf !== undefined) {
        // the tail call into the VNF: verify the pinned prog array still holds it (re-insert if not)
        const chain = agent.map('vnf_chain');
        const entry = chain.lookup(u32.encode(SHARP_VNF_CHAIN_INDEX));
        const vnfProg = vnf.program(xdpVnf.program);
        if (entry === undefined || entry.readUInt32LE(0) !== vnfProg.id) chain.update(u32.encode(SHARP_VNF_CHAIN_INDEX), u32.encode(vnfProg.fd));
      }
      anchor = this.#adoptAnchor(store, recA, agent, inst.netns);
    } catch (e) {
      for (const l of links) l.close();
      agent.close();
      vnf?.close();
      throw e;
    }
    const ifindex: [number, number] = [links.find((l) => l.ifname === inst.ifaces[0])!.ifindex, links.find((l) => l.ifname === inst.ifaces[1])!.ifindex];
    this.#instances.set(name, { spec: inst, agent, vnf, anchor, links, ifindex, releaseLock: new Mutex(), xdpMode: config.xdpMode, pinned: { agent: store.get(AGENT_KIND, name)!, ...(recV === undefined ? {} : { vnf: recV }) } });
    this.#replayLosses?.watch(agent.program('agent_replay'));
  }

  /** The pinned anchor if it is intact, else a new one (the old pin and interface removed). */
  #adoptAnchor(store: PinStore, rec: PinnedObjectRecord, agent: BpfCollection, netns: string | undefined): XdpDispatcherAnchor {
    const l = rec.links.find((x) => x.purpose === 'anchor');
    if (l !== undefined) {
      try {
        const link = store.openLink(rec, l);
        return new XdpDispatcherAnchor(agent.program('agent_replay'), AGENT_ANCHOR_IFNAME, netns, { adopt: link, pinPath: store.pinPath(rec, ANCHOR_PIN) });
      } catch (e) {
        if (!(e instanceof PinMismatchError || e instanceof BpfError)) throw e;
      }
      store.dropLink(rec, l.pin);
    }
    if (linkExists(AGENT_ANCHOR_IFNAME, netns)) deleteLink(AGENT_ANCHOR_IFNAME, netns);
    return this.#pinnedAnchor(store, rec, agent, netns);
  }

  names(): string[] {
    return [...this.#instances.keys()];
  }

  spec(name: string): XdpInstance {
    return this.#instance(name).spec;
  }

  #instance(name: string): LoadedInstance {
    const i = this.#instances.get(name);
    if (i === undefined) throw new AgentUnavailableError(name, `no such VNF instance (instances: ${[...this.#instances.keys()].join(', ')})`);
    return i;
  }

  // ------------------------------------------------------------ agents

  async checkAgent(name: string): Promise<void> {
    const inst = this.#instance(name);
    if (inst.agent.closed) throw new AgentUnavailableError(name, 'the agent was unloaded');
    const agentId = inst.agent.program('agent').id;
    inst.spec.ifaces.forEach((ifname, side) => {
      let attached: number;
      try {
        attached = queryXdp(inst.ifindex[side]!, inst.spec.netns).progId;
      } catch (e) {
        throw new AgentUnavailableError(name, `interface ${ifname} cannot be queried (${e instanceof Error ? e.message : String(e)})`, { cause: e });
      }
      if (attached !== agentId) throw new AgentUnavailableError(name, `the agent program is not attached to ${ifname} (attached program id: ${attached || 'none'})`);
    });
  }

  async armOld(name: string, hid: number): Promise<void> {
    await this.checkAgent(name);
    this.#putHandover(name, hid, { role: SHARP_AGENT_OLD, ring: 0, state: [SHARP_HOLD_PASSING, SHARP_HOLD_PASSING] });
  }

  async armNew(name: string, hid: number, ring: number): Promise<void> {
    await this.checkAgent(name);
    const inst = this.#instance(name);
    if (!Number.isInteger(ring) || ring < 0 || ring >= inst.spec.ringCount) throw new DataPlaneError(`ring ${ring} out of range 0..${inst.spec.ringCount - 1} on ${name}`);
    const ctl = inst.agent.map('release_ctl');
    for (const side of [0, 1]) ctl.update(u32.encode(ring * 2 + side), sharpReleaseCtlCodec.encode({ requested: 0, flushed_head: 0 }));
    this.#putHandover(name, hid, { role: SHARP_AGENT_NEW, ring, state: [SHARP_HOLD_HOLDING, SHARP_HOLD_HOLDING] });
  }

  #putHandover(name: string, hid: number, v: Partial<SharpAgentHo>): void {
    const m = this.#instance(name).agent.map('handovers');
    try {
      m.update(u32.encode(hid), sharpAgentHoCodec.encode(v), MapUpdate.NOEXIST);
    } catch (e) {
      if (e instanceof BpfError && e.code === 'EEXIST') throw new DataPlaneError(`${name}: handover ${hid} is armed already`, { cause: e });
      throw e;
    }
  }

  #readHandover(name: string, hid: number): SharpAgentHo | undefined {
    const raw = this.#instance(name).agent.map('handovers').lookup(u32.encode(hid));
    return raw === undefined ? undefined : sharpAgentHoCodec.decode(raw);
  }

  async agentStatus(name: string, hid: number): Promise<AgentHandoverStatus | undefined> {
    const h = this.#readHandover(name, hid);
    if (h === undefined) return undefined;
    const pair = <T>(xs: T[]): [T, T] => [xs[0]!, xs[1]!];
    return {
      role: h.role === SHARP_AGENT_NEW ? 'new' : 'old',
      preSeen: h.pre_seen,
      postSeen: h.post_seen,
      held: pair(h.held as bigint[]),
      released: pair(h.released as bigint[]),
      overflow: pair(h.overflow as bigint[]),
      passed: pair(h.passed as bigint[]),
      replayFailed: pair(h.replay_failed as bigint[]),
      queued: [((h.tail[0] as number) - (h.head[0] as number)) >>> 0, ((h.tail[1] as number) - (h.head[1] as number)) >>> 0],
      passing: [h.state[0] === SHARP_HOLD_PASSING, h.state[1] === SHARP_HOLD_PASSING],
    };
  }

  async arrivedFrames(name: string): Promise<[bigint, bigint] | undefined> {
    const inst = this.#instance(name);
    inst.arrivalsExact ??= this.#arrivalsProve(inst);
    if (!inst.arrivalsExact) return undefined;
    const arrivals = inst.agent.map('arrivals').typed(u32, u64);
    const n: [bigint, bigint] = [sum(arrivals.getPerCpu(0) ?? []), sum(arrivals.getPerCpu(1) ?? [])];
    // after the read: every frame counted has left the agent and its VNF
    cpuBarrier();
    return n;
  }

  /**
   * The arrivals are a prefix of what the switch port sent, and a finished
   * run means a finished VNF, only with native XDP (one FIFO ring per rx
   * queue, filled by the sender), one rx queue per interface, and an XDP VNF
   * (a stack VNF works after the agent's run). An agent pinned before the
   * counter existed has no `arrivals` map.
   */
  #arrivalsProve(inst: LoadedInstance): boolean {
    if (inst.xdpMode !== 'native' || inst.vnf === undefined || !inst.agent.maps.has('arrivals')) return false;
    return inst.spec.ifaces.every((ifname) => rxQueueCount(ifname, inst.spec.netns) === 1);
  }

  async release(name: string, hid: number, options: ReleaseOptions = {}): Promise<ReleaseResult> {
    const inst = this.#instance(name);
    const max = options.maxFrames;
    if (max !== undefined && (!Number.isInteger(max) || max < 1 || max > MAX_RELEASE_FRAMES)) throw new DataPlaneError(`maxFrames ${max}: must be an integer 1..${MAX_RELEASE_FRAMES}`);
    return inst.releaseLock.run(async () => {
      const releasedNow: [bigint, bigint] = [0n, 0n];
      const deadline = performance.now() + (options.timeoutMs ?? 10_000);
      const ctl = inst.agent.map('replay_ctl');
      const mode = inst.agent.map('replay_mode');
      let rounds = 0;
      const replayMode = options.relayTo === undefined ? SHARP_REPLAY_TO_VNF : this.#relayMode(inst, options.relayTo);
      const template = Buffer.alloc(64);
      const releaseCtl = inst.agent.map('release_ctl');
      for (const side of [0, 1] as const) {
        ctl.update(u32.encode(side), u32.encode(hid));
        mode.update(u32.encode(side), u32.encode(replayMode));
        const ctx = xdpMd({ dataLen: template.length, ingressIfindex: inst.ifindex[side] });
        let st = this.#readHandover(name, hid);
        if (st === undefined) throw new DataPlaneError(`${name}: handover ${hid} is not armed`);
        const key = u32.encode(st.ring * 2 + side);
        // from now on a frame finding the ring empty and flushed passes by itself
        releaseCtl.update(key, sharpReleaseCtlCodec.encode({ requested: 1, flushed_head: st.head[side] as number }));
        let checked = false;
        const outIface = releaseOutIface(inst, side, replayMode);
        let pace = outIface === undefined ? undefined : TxPacketCounter.open(outIface, inst.spec.netns);
        let round: number = RELEASE_ROUND;
        // packets the way out has transmitted (undefined: it is not in the instance's namespace, nothing to pace against)
        let taken = pace?.read();
        if (taken === undefined) round = RELEASE_ROUND_UNPACED;
        // the handover as the last round left it: read once a round
        let after: SharpAgentHo | undefined;
        try {
          for (;;) {
            st = after ?? this.#readHandover(name, hid);
            after = undefined;
            if (st === undefined) throw new DataPlaneError(`${name}: handover ${hid} was disarmed during its release`);
            if (st.state[side] === SHARP_HOLD_PASSING) break;
            const queued = ((st.tail[side] as number) - (st.head[side] as number)) >>> 0;
            if (queued > 0) {
              // a frame replayed into a device that is down dies in the kernel (a live-frames test run
              // frees a refused redirect; only ReplayLossCounter sees it): the ring keeps its frames
              // until the way out is up. Checked before the side's first round only: the rounds after
              // it follow at once, and what a link going down during them refuses is counted
              if (!checked) {
                const down = await this.#downLink(inst, replayMode === SHARP_REPLAY_TO_VNF ? 1 - side : side, replayMode);
                if (down !== undefined) {
                  if (performance.now() > deadline) throw new DataPlaneError(`${name}: cannot release handover ${hid}: interface ${down} is down (its ${queued} held frames stay in the ring)`);
                  await sleep(5);
                  continue;
                }
                checked = true;
              }
              // bounded (windowed against a P4 switch): the rest stays held, in order, for the next call
              const left = max === undefined ? queued : max - Number(releasedNow[side]);
              if (left <= 0) break;
              // frames arriving as fast as they are sent would keep this loop going past any budget: the
              // call ends at its deadline, saying so, and what is still held stays in the ring, in order
              if (rounds > 0 && performance.now() > deadline)
                throw new DataPlaneError(`${name}: releasing handover ${hid} did not finish within ${options.timeoutMs ?? 10_000} ms: ${queued} frames still held on side ${side} (${releasedNow[side]} sent in this call; they stay in the ring, in order)`);
              rounds++;
              const releasedBefore = st.released[side] as bigint;
              // synchronous: the shorter the gap between replay and flush mark, the sooner a live frame may pass
              // a signal (a child process's SIGCHLD) interrupts a test run between batches: the frames
              // replayed so far have left and been flushed, the ring says what is left, the next round goes on
              untilNotInterrupted(() => inst.agent.program('agent_replay').run({ data: template, context: ctx, repeat: Math.min(queued, round, left), liveFrames: true, netns: inst.spec.netns }));
              after = this.#readHandover(name, hid);
              if (after !== undefined) releasedNow[side] += (after.released[side] as bigint) - releasedBefore;
              // the flush mark matters once the ring is empty (a frame passes only then): one update, not one a round
              const head = after?.head[side] as number | undefined;
              if (head !== undefined && head === after!.tail[side]) releaseCtl.update(key, sharpReleaseCtlCodec.encode({ requested: 1, flushed_head: head }));
              if (pace !== undefined && taken !== undefined && after !== undefined) {
                // counted from the last read (after the round before had left): one read a round
                taken = await paceRelease(pace, taken + ((after.released[side] as bigint) - releasedBefore));
                if (taken === undefined) round = RELEASE_ROUND_UNPACED;
              }
              continue;
            }
            // nothing queued and no frame arrived to flip the side: flip it here
            const fin = untilNotInterrupted(() => inst.agent.program('agent_release_finish').run({ data: template, context: ctx, netns: inst.spec.netns })).retval;
            if (fin === SHARP_FINISH_DONE) break;
            if (fin !== SHARP_FINISH_AGAIN) throw new DataPlaneError(`${name}: releasing handover ${hid} failed on side ${side} (finish returned ${fin})`);
            if (performance.now() > deadline) throw new DataPlaneError(`${name}: releasing handover ${hid} did not finish within ${options.timeoutMs ?? 10_000} ms (side ${side})`);
            await sleep(0); // a frame is being written into its slot: let it finish
          }
        } finally {
          pace?.close();
        }
        mode.update(u32.encode(side), u32.encode(SHARP_REPLAY_TO_VNF));
      }
      const after = this.#readHandover(name, hid)!;
      const sides: [0, 1] = [0, 1];
      return {
        released: sum(after.released as bigint[]),
        rounds,
        releasedNow,
        queued: sides.map((x) => ((after.tail[x] as number) - (after.head[x] as number)) >>> 0) as [number, number],
        passing: sides.map((x) => after.state[x] === SHARP_HOLD_PASSING) as [boolean, boolean],
      };
    });
  }

  /** The interface replayed frames of a side leave by, when it cannot carry them (down or without carrier); RELAY_DIRECT leaves by a switch's interface: not checked. */
  async #downLink(inst: LoadedInstance, outSide: number, replayMode: number): Promise<string | undefined> {
    if (replayMode === SHARP_REPLAY_RELAY_DIRECT) return undefined;
    const ifname = inst.spec.ifaces[outSide]!;
    // ioctls (the carrier: for a veth, its peer up); `ip link` would cost a process, ~9 ms
    let st: { up: boolean; carrier: boolean };
    try {
      st = withNetns(inst.spec.netns, () => interfaceFlags(ifname));
    } catch (e) {
      if (e instanceof BpfError && e.code === 'ENODEV') return ifname;
      throw e;
    }
    return st.up && st.carrier ? undefined : ifname;
  }

  /** The kernel's drop counters of an instance's interfaces. */
  async interfaceDrops(name: string): Promise<InterfaceDrops[]> {
    const inst = this.#instance(name);
    const all = netdevDrops(inst.spec.netns);
    return inst.spec.ifaces.map((iface, side) => {
      const d = interfaceDrops(iface, inst.spec.netns, all);
      const replayLost = this.#replayLosses?.refused(inst.agent.program('agent_replay'), inst.ifindex[side === 0 ? 0 : 1]) ?? 0n;
      return { iface, side, xmitFailed: d.txDropped, redirectFailed: d.rxDropped + replayLost, ...(d.txPackets === undefined ? {} : { txPackets: d.txPackets }) };
    });
  }

  /**
   * The replay mode of a release relaying to `target`: through the switch
   * (RELAY; the target may be on another host, the switch's relay route
   * knows the way), or, for switches that cannot relay, RELAY_DIRECT with
   * the relay devmap pointed at the switch interfaces facing the target.
   */
  #relayMode(inst: LoadedInstance, target: string): number {
    if (this.#directRelay === undefined) return SHARP_REPLAY_RELAY;
    this.#pointRelay(inst, target, this.#directRelay);
    return SHARP_REPLAY_RELAY_DIRECT;
  }

  /**
   * Points the agent's relay devmap, per side, at the switch interface facing
   * `target` on that side's switch: a frame sent out of it reaches `target`
   * directly (same kernel only).
   */
  #pointRelay(inst: LoadedInstance, target: string, switches: readonly AgentSwitchView[]): void {
    // the target may be another node's instance: the switch views name it
    if (!switches.some((sw) => sw.ports.some((p) => p.instance === target))) throw new AgentUnavailableError(target, `no switch interface of this agent's direct relay faces it (it cannot relay there)`);
    const relay = inst.agent.map('relay_tx');
    for (const sw of switches) {
      const mine = sw.ports.find((p) => p.instance === inst.spec.name);
      const theirs = sw.ports.find((p) => p.instance === target);
      if (mine === undefined || theirs === undefined) continue;
      const ifindex = ifindexOf(theirs.ifname, sw.netns);
      withNetns(sw.netns, () => relay.update(u32.encode(mine.instanceSide ?? 0), u32.encode(ifindex)));
    }
  }

  async disarm(name: string, hid: number): Promise<void> {
    this.#instance(name).agent.map('handovers').delete(u32.encode(hid));
  }

  // ------------------------------------------------------------ VNF state

  /** The XDP VNF's per-flow map; undefined for a stack VNF (its state is the stack's: conntrack, …). */
  #flowState(name: string): BpfMap | undefined {
    return this.#instance(name).vnf?.map('flow_state');
  }

  readonly #stackTables = new Map<string, ConntrackTable>();

  /** A stack VNF's per-flow state: its namespace's conntrack table (the VNF kind says so); undefined for an XDP VNF. */
  #stackState(name: string): ConntrackTable | undefined {
    const inst = this.#instance(name);
    const kind = vnfKind(inst.spec.kind);
    if (kind.datapath !== 'stack') return undefined;
    let t = this.#stackTables.get(name);
    if (t === undefined) this.#stackTables.set(name, (t = new ConntrackTable(inst.spec.netns === undefined ? {} : { netns: inst.spec.netns })));
    return t;
  }

  /** The per-flow state the selection covers: the XDP VNF's map entries, or a stack VNF's conntrack entries. */
  async exportState(name: string, select: FlowSelection): Promise<FlowStateEntry[]> {
    const stack = this.#stackState(name);
    if (stack !== undefined) return stack.exportState(select);
    const m = this.#flowState(name);
    if (m === undefined) return [];
    const { keys, values } = m.lookupBatch(4096);
    const selected = rawKeySelection(select);
    const out: FlowStateEntry[] = [];
    keys.forEach((k, i) => {
      if (selected(k)) out.push({ flow: flowKeyFromAbi(sharpFlowKeyCodec.decode(k)), value: values[i]! });
    });
    return out;
  }

  async importState(name: string, entries: readonly FlowStateEntry[]): Promise<void> {
    const stack = this.#stackState(name);
    if (stack !== undefined) return stack.importState(entries);
    const m = this.#flowState(name);
    if (m === undefined) {
      if (entries.length > 0) throw new DataPlaneError(`${name} has no per-flow map to import ${entries.length} entries into`);
      return;
    }
    try {
      m.updateBatch(
        entries.map((e) => sharpFlowKeyCodec.encode(flowKeyToAbi(e.flow))),
        entries.map((e) => e.value),
      );
    } catch (e) {
      // a full hash map refuses new elements with E2BIG
      if (e instanceof BpfError && e.code === 'E2BIG')
        throw new VnfStateFullError(name, m.info.maxEntries, entries.length, { cause: e });
      throw e;
    }
  }

  async deleteState(name: string, flows: readonly FlowKey[]): Promise<void> {
    const stack = this.#stackState(name);
    if (stack !== undefined) return stack.deleteState(flows);
    const m = this.#flowState(name);
    if (m === undefined) return;
    // flows it has no record of are no error (as one delete each was not)
    m.deletePresentBatch(flows.map((f) => sharpFlowKeyCodec.encode(flowKeyToAbi(f))));
  }

  /** The loaded objects of an instance (tests and the lab inspect them). */
  objects(name: string): { agent: BpfCollection; vnf: BpfCollection } {
    const i = this.#instance(name);
    if (i.vnf === undefined) throw new DataPlaneError(`${name} runs a stack VNF (kind ${i.spec.kind ?? 'counter'}): no XDP VNF object (agentObject() has the agent)`);
    return { agent: i.agent, vnf: i.vnf };
  }

  /** The loaded agent object of an instance, whatever its VNF kind. */
  agentObject(name: string): BpfCollection {
    return this.#instance(name).agent;
  }

  /** Detaches an instance's agent from its interfaces (as if it had crashed). */
  detach(name: string): void {
    const i = this.#instance(name);
    for (const l of i.links) {
      // a pinned link outlives its fd: detach it explicitly
      if (i.pinned !== undefined && !l.closed) l.detach();
      l.close();
    }
    i.links = [];
  }

  /** The pinned records of an instance (agent, vnf), when persistent. */
  pinnedRecords(name: string): { agent: PinnedObjectRecord; vnf?: PinnedObjectRecord } | undefined {
    const p = this.#instance(name).pinned;
    return p === undefined ? undefined : { agent: structuredClone(p.agent), ...(p.vnf === undefined ? {} : { vnf: structuredClone(p.vnf) }) };
  }

  /**
   * Lets go of this process's handles. Not persistent: everything is
   * detached and unloaded. Persistent: everything stays attached and pinned
   * (adopt() picks it up again); detachAll() removes it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#replayLosses?.close();
    for (const i of this.#instances.values()) {
      for (const l of i.links) l.close();
      i.anchor.close();
      i.agent.close();
      i.vnf?.close();
    }
    this.#instances.clear();
  }

  /**
   * Detaches every agent (the interfaces run no XDP program afterwards),
   * removes the dispatcher anchors, and, when persistent, the pins and
   * records of every instance. Idempotent.
   */
  detachAll(): void {
    const pinned = [...this.#instances.values()].filter((i) => i.pinned !== undefined).map((i) => i.spec.name);
    for (const i of this.#instances.values()) {
      for (const l of i.links) {
        try {
          if (!l.closed) l.detach();
        } catch {
          // defunct: its interface is gone
        }
      }
      i.anchor.detach();
    }
    this.close();
    if (this.#store !== undefined) {
      for (const name of pinned) {
        this.#store.unpin(AGENT_KIND, name);
        if (this.#store.get(VNF_KIND, name) !== undefined) this.#store.unpin(VNF_KIND, name);
      }
    }
  }
}

/** An import that does not fit the VNF's flow_state map. */
export class VnfStateFullError extends DataPlaneError {
  override name = 'VnfStateFullError';
  constructor(
    readonly instance: string,
    readonly maxEntries: number,
    readonly importing: number,
    options?: ErrorOptions,
  ) {
    super(`${instance}: its VNF's flow_state map holds at most ${maxEntries} flow records (vnfFlows), and importing ${importing} would exceed it (the records imported before it stay)`, options);
  }
}
