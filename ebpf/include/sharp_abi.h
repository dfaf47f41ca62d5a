/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sharp_abi.h - everything that crosses the kernel/user boundary in sharpctl:
 * the shim layout, the probe payload, map keys and values, constants.
 *
 * This is the ONLY definition of the ABI. The TypeScript codecs are generated
 * from the BTF of abi_anchor.o (see abi_anchor.c), which is why:
 *   - constants are C enums (enums reach BTF, #defines do not),
 *   - every struct uses fixed-width types, explicit pad* fields and a
 *     _Static_assert on its size,
 *   - every name is prefixed sharp_ / SHARP_ and must stay stable.
 * Byte order: fields typed __be16/__be32/__be64 are network byte order
 * (they are compared with packet bytes as-is); everything else is host order.
 *
 * Includable by BPF programs (clang -target bpf) and by plain C. It uses only
 * UAPI headers: <linux/types.h>, and <linux/bpf.h> for struct bpf_spin_lock
 * (the verifier recognises the lock by that BTF type name, so the agent's
 * handover value must embed exactly that struct).
 */
#ifndef SHARP_ABI_H
#define SHARP_ABI_H

#include <linux/types.h>
#include <linux/bpf.h>

/* ------------------------------------------------------------------------ */
/* Shim                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * A frame of a flow under handover:
 *
 *   dst(6) src(6) | 0x821C | tag(2) | inner EtherType(2) | payload...
 *
 * i.e. 4 bytes (the size of an 802.1Q tag, so a marked full-size frame fits
 * every link that carries VLAN frames) inserted after the MAC addresses.
 *   tag = phase << 14 | handover_id     (handover_id 1..16383, 0 is invalid)
 */
enum sharp_shim_const {
	SHARP_ETH_P_SHIM = 0x821C,	/* EtherType of the shim */
	SHARP_SHIM_LEN = 4,		/* bytes added by the shim */
	SHARP_ETH_HLEN = 14,		/* plain Ethernet header */
	SHARP_ETH_SHIM_HLEN = 18,	/* Ethernet header incl. shim */
	SHARP_TAG_PHASE_SHIFT = 14,
	SHARP_TAG_HID_MASK = 0x3FFF,
	SHARP_HID_MIN = 1,
	SHARP_HID_MAX = 16383,
	SHARP_HID_COUNT = 16384,	/* entries of per-hid arrays (ho_stats) */
};

/*
 * Handover phase carried in the tag (and in a switch rule action).
 *
 * The tag has 2 phase bits, and the value 3 has two meanings that never
 * meet: in a switch RULE ACTION it is DIVERT (the frame goes to the
 * controller and never reaches a link, so 3 never appears in a tag the
 * switch writes); in a TAG on a link it is RELAY, which only an agent
 * writes and no rule action can ask for (an action with phase 3 always
 * diverts). Agents drop any arriving shim whose phase is not PRE or POST.
 */
enum sharp_phase {
	SHARP_PHASE_NONE = 0,	/* not under handover: no shim */
	SHARP_PHASE_PRE = 1,	/* still going to the old instance, counted */
	SHARP_PHASE_POST = 2,	/* going to the new instance, held there */
	SHARP_PHASE_DIVERT = 3,	/* rule action only, baseline (controller-buffer
				 * mode): to the controller, never on a link */
	SHARP_PHASE_RELAY = 3,	/* tag only: a frame the new instance's agent
				 * sends back to the switch during a rollback after
				 * switch-over, for the switch to forward (unmarked)
				 * to the old instance; see `relays` */
};

/* The 4 shim bytes that follow an Ethernet header of type SHARP_ETH_P_SHIM
 * (same shape as struct vlan_hdr). */
struct sharp_shim {
	__be16 tag;		/* phase << 14 | hid, network order */
	__be16 inner_proto;	/* original EtherType */
};
_Static_assert(sizeof(struct sharp_shim) == 4, "sharp_shim size");

/* Whole Ethernet header of a marked frame. */
struct sharp_eth_shim_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;		/* SHARP_ETH_P_SHIM */
	__be16 tag;
	__be16 inner_proto;
};
_Static_assert(sizeof(struct sharp_eth_shim_hdr) == 18, "sharp_eth_shim_hdr size");

/* Tag helpers, host order in and out. */
static inline __u16 sharp_tag_make(__u32 phase, __u32 hid)
{
	return (__u16)((phase << SHARP_TAG_PHASE_SHIFT) | (hid & SHARP_TAG_HID_MASK));
}

static inline __u32 sharp_tag_phase(__u16 tag)
{
	return tag >> SHARP_TAG_PHASE_SHIFT;
}

static inline __u32 sharp_tag_hid(__u16 tag)
{
	return tag & SHARP_TAG_HID_MASK;
}

/* ------------------------------------------------------------------------ */
/* Test-traffic probe (UDP payload, all fields big endian)                  */
/* ------------------------------------------------------------------------ */

enum sharp_probe_const {
	SHARP_PROBE_MAGIC = 0x53485250,	/* "SHRP" */
	SHARP_PROBE_LEN = 32,
};

struct sharp_probe {
	__be32 magic;	/* SHARP_PROBE_MAGIC */
	__be32 flow;	/* generator's flow number */
	__be64 seq;	/* per-flow sequence number, 1-based */
	__be64 stamp;	/* written by the VNF: its per-flow counter after this packet */
	__be64 tx_ns;	/* sender timestamp */
};
_Static_assert(sizeof(struct sharp_probe) == 32, "sharp_probe size");

/* ------------------------------------------------------------------------ */
/* Flow key (switch rules_exact, VNF flow_state)                            */
/* ------------------------------------------------------------------------ */

/* Directional IPv4 5-tuple. Ports are 0 for protocols other than TCP/UDP and
 * for non-first IPv4 fragments. pad must be 0 (it is part of the hash key). */
struct sharp_flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};
_Static_assert(sizeof(struct sharp_flow_key) == 16, "sharp_flow_key size");

/* ------------------------------------------------------------------------ */
/* Switch (switch.bpf.c)                                                    */
/* ------------------------------------------------------------------------ */

enum sharp_port_role {
	SHARP_PORT_HOST = 1,	/* faces a host (client/server) */
	SHARP_PORT_VNF = 2,	/* faces a VNF instance */
};

enum sharp_switch_limits {
	SHARP_MAX_WILD_RULES = 256,	/* rules_wild size == scan bound (fixed) */
	SHARP_DEFAULT_MAX_PORTS = 64,	/* tx_ports, port_stats (resizable) */
	SHARP_DEFAULT_MAX_IFINDEX = 1024,	/* ports: ifindexes below this (resizable) */
	SHARP_DEFAULT_MAX_RULES = 4096,	/* rules_exact, rule_actions, rule_stats (resizable) */
	SHARP_DEFAULT_MAX_RELAYS = 256,	/* relays: rollbacks relaying at once (resizable) */
};

/* ports: ARRAY indexed by ifindex -> sharp_port_info; role 0 = not a switch
 * port. An array, not a hash: its lookup is inlined, and it is on every
 * packet's path (user space sizes it above the largest port ifindex).
 * The program treats host and VNF ports alike except for incoming shims:
 * every shim is dropped as forged (drop_shim), except shim(RELAY, hid)
 * arriving on a VNF port while `relays` has a route for hid. */
struct sharp_port_info {
	__u32 slot;	/* index into tx_ports / port_stats, and wild rule in_slot */
	__u32 role;	/* enum sharp_port_role */
};
_Static_assert(sizeof(struct sharp_port_info) == 8, "sharp_port_info size");

/*
 * Rule lookup order (the switch program):
 *   1. rules_exact: HASH sharp_flow_key -> sharp_exact_rule (id and action).
 *      An exact rule ALWAYS wins over any wildcard rule, whatever its
 *      priority.
 *   2. rules_wild: ARRAY[SHARP_MAX_WILD_RULES] of sharp_wild_rule, with the
 *      number of used entries in wild_count[0]. User space keeps entries
 *      0..wild_count-1 sorted by priority, descending; the program scans
 *      them in index order and takes the FIRST match (priority itself is
 *      not read by the program). Entries with valid == 0 are skipped, which
 *      lets user space disable an entry before rewriting it in place.
 *   3. a wildcard rule's action is rule_actions[rule_id]; no rule, or no
 *      action for a wildcard rule -> XDP_DROP.
 * Wildcard match: (key.saddr & smask) == (saddr & smask), same for daddr;
 * sport/dport 0 = any; proto 0 = any; in_slot_plus1 0 = any ingress port,
 * else ingress slot + 1.
 */
struct sharp_wild_rule {
	__be32 saddr;
	__be32 smask;
	__be32 daddr;
	__be32 dmask;
	__be16 sport;		/* 0 = any */
	__be16 dport;		/* 0 = any */
	__u8 proto;		/* 0 = any */
	__u8 pad[3];
	__u32 in_slot_plus1;	/* 0 = any port, else ingress slot + 1 */
	__u32 rule_id;
	__u32 priority;		/* for user space ordering only */
	__u32 valid;		/* 0 = skip this entry */
};
_Static_assert(sizeof(struct sharp_wild_rule) == 40, "sharp_wild_rule size");

/*
 * rule_actions: HASH rule_id (__u32) -> sharp_rule_action. A HASH on purpose:
 * a hash update replaces the element atomically for concurrent readers
 * (array values can tear), and a handover of a wildcard rule changes the ONE
 * action all its micro-flows share. The map is BPF_F_NO_PREALLOC so a
 * replaced element is not recycled while a reader may still hold it.
 */
struct sharp_rule_action {
	__u32 out_slot;	/* tx_ports key (egress port slot) */
	__u16 hid;	/* handover id, host order; used when phase != NONE */
	__u8 phase;	/* enum sharp_phase; != NONE -> insert shim(phase, hid) */
	__u8 flags;	/* reserved, must be 0 */
};
_Static_assert(sizeof(struct sharp_rule_action) == 8, "sharp_rule_action size");

/*
 * rules_exact: HASH sharp_flow_key -> sharp_exact_rule (BPF_F_NO_PREALLOC).
 * The action travels with the match, so an exact hit costs one lookup; a
 * value update replaces the element atomically, exactly like rule_actions.
 */
struct sharp_exact_rule {
	__u32 rule_id;
	struct sharp_rule_action action;
};
_Static_assert(sizeof(struct sharp_exact_rule) == 12, "sharp_exact_rule size");

/* rule_stats: PERCPU_ARRAY rule_id -> sharp_rule_stats (frames that matched
 * the rule and were redirected; bytes as received, without shim). Rule ids
 * >= max_entries are forwarded but not counted. */
struct sharp_rule_stats {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct sharp_rule_stats) == 16, "sharp_rule_stats size");

/*
 * relays: HASH hid (__u32) -> __u32 out slot (BPF_F_NO_PREALLOC, like the
 * rule maps: a replaced element is not recycled under a reader). Written by
 * the controller only for the duration of a rollback after switch-over:
 * the new instance's agent replays its hold ring of handover hid with
 * shim(RELAY, hid) back out of the interface the frames came in on, i.e.
 * into this switch; a frame with that shim arriving on a VNF port is
 * stripped and redirected to tx_ports[out slot] (the port towards the old
 * instance), so it reaches the old instance unmarked and in ring order.
 * No entry for hid, a host port, or any other phase: dropped as forged.
 */

/* port_stats: PERCPU_ARRAY slot -> sharp_port_stats.
 * rx_* count every frame received on a known port (ingress slot);
 * tx_* count frames bpf_redirect_map accepted for that egress slot, bytes
 * as they leave (including an inserted shim, without a stripped one);
 * relayed, drop_* and pass_* are charged to the ingress slot. */
struct sharp_port_stats {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 drop_no_rule;	/* IPv4, no matching rule or no action */
	__u64 drop_shim;	/* shim frame arrived on a switch port */
	__u64 pass_non_ip;	/* non-IPv4 (ARP, ...) passed to the stack */
	__u64 drop_malformed;	/* truncated Ethernet/IPv4/L4 header, bad ihl */
	__u64 drop_bad_action;	/* action with invalid phase or hid */
	__u64 drop_no_headroom;	/* bpf_xdp_adjust_head failed inserting shim */
	__u64 drop_no_tx;	/* action.out_slot (or a relay's out slot) not in
				 * tx_ports (XDP_ABORTED) */
	__u64 relayed;		/* shim(RELAY) frames from this VNF port, stripped
				 * and sent on by a `relays` route */
};
_Static_assert(sizeof(struct sharp_port_stats) == 96, "sharp_port_stats size");

/* ho_stats: PERCPU_ARRAY hid (SHARP_HID_COUNT entries) -> sharp_ho_stats.
 * Sum over CPUs: pre_packets is the "pre_sent" of the protocol. */
struct sharp_ho_stats {
	__u64 pre_packets;
	__u64 post_packets;
};
_Static_assert(sizeof(struct sharp_ho_stats) == 16, "sharp_ho_stats size");

/* ------------------------------------------------------------------------ */
/* Agent (agent.bpf.c)                                                      */
/* ------------------------------------------------------------------------ */

enum sharp_agent_role {
	SHARP_AGENT_OLD = 1,	/* old instance A: count PRE, pass everything */
	SHARP_AGENT_NEW = 2,	/* new instance B: hold until released */
};

enum sharp_hold_state {
	SHARP_HOLD_HOLDING = 1,	/* frames of this side go into the ring */
	SHARP_HOLD_PASSING = 2,	/* ring drained: frames pass to the VNF */
};

enum sharp_agent_side {
	SHARP_SIDE_0 = 0,
	SHARP_SIDE_1 = 1,
	SHARP_SIDES = 2,
};

enum sharp_agent_limits {
	SHARP_MAX_FRAME = 1536,			/* bytes per ring slot */
	SHARP_DEFAULT_RING_CAPACITY = 1024,	/* default of const ring_capacity */
	SHARP_DEFAULT_RING_COUNT = 4,		/* default of const ring_count */
	SHARP_DEFAULT_AGENT_HANDOVERS = 256,	/* handovers max_entries */
	SHARP_DEFAULT_AGENT_IFACES = 8,		/* ifaces max_entries */
	SHARP_VNF_CHAIN_INDEX = 0,		/* vnf_chain key of the VNF program */
};

/*
 * Result of agent_release_finish (values are the XDP action codes it
 * returns, so a test run's retval can be compared directly).
 */
enum sharp_finish_result {
	SHARP_FINISH_ERROR = 0,	/* XDP_ABORTED: unknown iface, no handover
				 * for replay_ctl[side], or role != NEW */
	SHARP_FINISH_AGAIN = 1,	/* XDP_DROP: ring not empty (or a replay is
				 * copying a slot out): replay again */
	SHARP_FINISH_DONE = 2,	/* XDP_PASS: ring empty, side now PASSING */
};

/* ifaces: HASH ifindex (__u32) -> sharp_agent_iface. */
struct sharp_agent_iface {
	__u32 side;		/* 0 or 1 */
	__u32 accept_shim;	/* 0: a shim frame on this iface is dropped */
};
_Static_assert(sizeof(struct sharp_agent_iface) == 8, "sharp_agent_iface size");

/*
 * arrivals: PERCPU_ARRAY side (SHARP_SIDES entries) -> __u64: IPv4 and shim
 * frames that entered the agent on that side, counted first, before
 * anything can drop them. The switch counts the same kinds of frames as tx
 * of its port (the only sender into that side: a veth pair, one rx queue, a
 * FIFO ring). So once the sum reaches the port's tx count read after a
 * switch-side barrier, every frame the switch had sent has entered the
 * agent; a barrier on the agent's host then proves its run (and the XDP
 * VNF's) has finished. This is the engine's exact quiescence event.
 */

/*
 * handovers: HASH hid (__u32) -> sharp_agent_ho (BPF_F_NO_PREALLOC).
 *
 * Arrays [2] are indexed by side. head/tail are free-running u32 counters
 * (tail - head = frames in the ring); user space creates the element with
 * head = tail = 0. Ring position p of side s lives in slot
 *   (ring * 2 + s) * ring_capacity + p % ring_capacity
 * (keep ring_capacity a power of two if a ring may see 2^32 frames).
 *
 * Locking: lock protects state, head, tail, replaying, held, released.
 * pre_seen, post_seen, overflow, passed and replay_failed are updated with
 * atomic adds. Once the element exists, user space must change it only with
 * BPF_F_LOCK (in place); a plain update replaces the element under a
 * program that may hold a pointer to the old one.
 */
struct sharp_agent_ho {
	struct bpf_spin_lock lock;
	__u32 role;		/* enum sharp_agent_role */
	__u32 ring;		/* ring index, < ring_count (NEW only) */
	__u32 state[2];		/* enum sharp_hold_state, per side */
	__u32 head[2];		/* next position to replay */
	__u32 tail[2];		/* next position to fill */
	__u32 replaying[2];	/* 1 while agent_replay copies slot(head) out */
	__u32 pad0;
	__u64 pre_seen;		/* PRE frames received (any role) */
	__u64 post_seen;	/* POST frames received (any role) */
	__u64 held[2];		/* frames put into the ring */
	__u64 released[2];	/* frames replayed out of the ring */
	__u64 overflow[2];	/* frames dropped: ring full or frame > SHARP_MAX_FRAME
				 * or bad ring configuration */
	__u64 passed[2];	/* frames handed straight to the VNF */
	__u64 replay_failed[2];	/* ring frames that could not be re-injected */
};
_Static_assert(sizeof(struct sharp_agent_ho) == 144, "sharp_agent_ho size");

/*
 * slots: ARRAY of sharp_slot, max_entries = ring_count * 2 * ring_capacity.
 * Frames are stored WITHOUT the shim. ready is set (atomic xchg, after the
 * copy) when data/len are complete, and cleared by agent_replay after the
 * frame has been copied out. len == 0 with ready == 1 is a slot whose copy
 * failed (replay drops it and counts replay_failed).
 */
struct sharp_slot {
	__u32 len;
	__u32 ready;
	__u8 data[SHARP_MAX_FRAME];
};
_Static_assert(sizeof(struct sharp_slot) == 1544, "sharp_slot size");

/*
 * replay_mode: ARRAY side -> __u32 enum sharp_replay_mode. Where agent_replay
 * sends a frame it took out of the ring:
 *   TO_VNF        into this instance's VNF (vnf_chain), the normal release;
 *   RELAY         back to the switch the frame came from, so a handover
 *                 rolled back after switch-over delivers the frames held here
 *                 to the old instance, in order: the frame gets
 *                 shim(RELAY, replay_ctl[side]) and leaves by XDP_TX, i.e.
 *                 out of the interface it arrived on (a live-frames test run
 *                 turns XDP_TX into a redirect to its ingress device). The
 *                 switch strips the shim and forwards the frame by its
 *                 `relays` route. The agent needs to know nothing about the
 *                 other instance or another host's interfaces.
 *   RELAY_DIRECT  out through relay_tx[side] (a DEVMAP entry user space
 *                 points at the switch interface facing the old instance),
 *                 bypassing the switch program. Works only when the switch's
 *                 interfaces are in this kernel; kept for the BMv2 lab,
 *                 whose P4 switch does not forward RELAY shims yet.
 */
enum sharp_replay_mode {
	SHARP_REPLAY_TO_VNF = 0,
	SHARP_REPLAY_RELAY = 1,
	SHARP_REPLAY_RELAY_DIRECT = 2,
};

/*
 * What "the VNF" is behind an agent: the agent's .rodata vnf_mode, set by
 * user space before load (one value per loaded agent).
 *   XDP    an XDP program tail-called through vnf_chain[0] (vnf_counter):
 *          frames for the VNF are whatever it returns;
 *   STACK  the host's own network stack (routing, nftables, conntrack, a
 *          userspace process): frames for the VNF are XDP_PASS, their
 *          destination MAC rewritten to stack_mac[side] first (unicast only,
 *          when set) so the stack takes them as its own; replayed frames
 *          (live frames) enter the stack the same way, in ring order.
 */
enum sharp_vnf_mode {
	SHARP_VNF_XDP = 0,
	SHARP_VNF_STACK = 1,
};

/* stack_mac: ARRAY side -> sharp_mac, the MAC of the side's interface
 * (all zero: leave the frame's destination as it is). STACK mode only. */
struct sharp_mac {
	__u8 addr[6];
	__u8 pad[2];
};
_Static_assert(sizeof(struct sharp_mac) == 8, "sharp_mac size");

/*
 * release_ctl: ARRAY (ring * 2 + side) -> sharp_release_ctl, written by user
 * space only. Lets a HOLDING side switch to PASSING by itself, on the
 * arrival path, so a release converges under any arrival rate: a new frame
 * passes directly iff release was requested, the ring is empty, no replay is
 * copying a slot, and every frame popped so far has been flushed to the next
 * device (user space sets flushed_head to head after each replay test run
 * returned). Otherwise it is queued behind the held frames as before.
 * User space zeroes the entry when it arms the ring.
 */
struct sharp_release_ctl {
	__u32 requested;	/* 1 once user space started releasing */
	__u32 flushed_head;	/* head value up to which replayed frames are flushed */
};
_Static_assert(sizeof(struct sharp_release_ctl) == 8, "sharp_release_ctl size");

/* replay_ctl: ARRAY side -> __u32 hid drained by agent_replay and
 * agent_release_finish on that side. */

/* agent_stats: PERCPU_ARRAY (1 entry) -> sharp_agent_stats. */
struct sharp_agent_stats {
	__u64 passed_plain;	/* frame without shim -> VNF */
	__u64 stripped;		/* shim removed */
	__u64 shim_rejected;	/* shim on an iface with accept_shim == 0: dropped */
	__u64 shim_malformed;	/* truncated shim, hid 0 or bad phase: dropped */
	__u64 unknown_hid;	/* shim with hid not in handovers: stripped, passed */
	__u64 held;		/* frames stored in a ring */
	__u64 overflow;		/* frames dropped because the ring was full */
	__u64 too_big;		/* frames dropped, longer than SHARP_MAX_FRAME */
	__u64 replayed;		/* frames re-injected by agent_replay */
	__u64 replay_empty;	/* agent_replay found nothing ready */
	__u64 replay_error;	/* agent_replay could not rebuild a frame */
	__u64 chain_missing;	/* tail call to vnf_chain[0] failed: XDP_PASS */
	__u64 config_error;	/* bad side/ring/replay_ctl/slots size */
	__u64 relayed;		/* replayed frames sent back to the switch with
				 * shim(RELAY) (also counted in replayed) */
	__u64 to_stack;		/* STACK mode: frames handed to the stack (XDP_PASS) */
};
_Static_assert(sizeof(struct sharp_agent_stats) == 120, "sharp_agent_stats size");

/* replay_refused (redirect_errors.bpf.c): HASH sharp_refused_key -> __u64.
 * A frame that a live-frames test run (the release's replay) redirects or
 * sends back out of an interface that cannot take it dies in the kernel:
 * test_run drops a refused redirect without a counter. The xdp_redirect_err
 * tracepoint sees it; counted per replaying program and ingress interface. */
struct sharp_refused_key {
	__u32 prog_id;		/* the program the test run ran (agent_replay) */
	__u32 ifindex;		/* the interface the run's frames "arrived" on */
};
_Static_assert(sizeof(struct sharp_refused_key) == 8, "sharp_refused_key size");

/* ------------------------------------------------------------------------ */
/* Example VNF (vnf_counter.bpf.c)                                          */
/* ------------------------------------------------------------------------ */

enum sharp_vnf_limits {
	SHARP_DEFAULT_VNF_FLOWS = 65536,	/* flow_state max_entries (resizable) */
	SHARP_DEFAULT_VNF_PORTS = 8,		/* vnf_ports, vnf_tx max_entries */
};

/* flow_state: HASH sharp_flow_key (directional) -> sharp_vnf_flow_state. */
struct sharp_vnf_flow_state {
	__u64 packets;	/* the counter stamped into probes */
	__u64 bytes;
};
_Static_assert(sizeof(struct sharp_vnf_flow_state) == 16, "sharp_vnf_flow_state size");

/* vnf_stats: PERCPU_ARRAY (1 entry) -> sharp_vnf_stats. */
struct sharp_vnf_stats {
	__u64 processed;	/* IPv4 frames counted in flow_state */
	__u64 stamped;		/* probes stamped */
	__u64 no_route;		/* no vnf_ports entry: XDP_PASS */
	__u64 non_ipv4;		/* forwarded without per-flow state */
	__u64 table_full;	/* flow_state full: forwarded uncounted */
	__u64 malformed;	/* truncated IPv4/L4 header: forwarded uncounted */
};
_Static_assert(sizeof(struct sharp_vnf_stats) == 48, "sharp_vnf_stats size");

/*
 * The controller-buffer baseline (OpenNF-style, what SHarP replaces): a rule
 * whose action has phase DIVERT sends its frames to the controller instead of
 * a port. The switch copies each frame into the `divert` ring buffer as one
 * sharp_divert_record and drops it; the controller buffers them in its own
 * memory and later sends them on (tx_inject). Frames larger than
 * SHARP_MAX_FRAME, or arriving while the ring buffer is full, are counted in
 * divert_stats.dropped — and reported, never silent.
 */
struct sharp_divert_record {
	__u32 hid;
	__u32 len;
	__u32 in_slot;
	__u32 pad;
	__u8 data[SHARP_MAX_FRAME];
};
_Static_assert(sizeof(struct sharp_divert_record) == 1552, "sharp_divert_record size");

/* divert_stats: PERCPU_ARRAY[1]. */
struct sharp_divert_stats {
	__u64 packets;
	__u64 bytes;
	__u64 dropped;
};
_Static_assert(sizeof(struct sharp_divert_stats) == 24, "sharp_divert_stats size");

/* ------------------------------------------------------------------------ */
/* Traffic generator and sink (trafficgen.bpf.c)                            */
/* ------------------------------------------------------------------------ */
enum sharp_tg_limits {
	SHARP_TG_MAX_FLOWS = 4096,	/* tg_seq entries: per-flow sequence numbers */
	SHARP_TG_EVENTS_BYTES = 8 << 20,	/* tg_events ring buffer size */
};
/* tg_config: ARRAY[1]. The generator turns one template frame into probes of
 * `flows` flows, round robin: flow f has UDP source port base_sport + f. */
struct sharp_tg_config {
	__u32 flows;		/* 1..SHARP_TG_MAX_FLOWS */
	__u16 base_sport;	/* host order */
	__u16 pad;
	__u64 next;		/* packets generated so far (the round-robin cursor) */
};
_Static_assert(sizeof(struct sharp_tg_config) == 16, "sharp_tg_config size");
/* tg_events: RINGBUF of sharp_tg_event, one per probe the sink received. */
struct sharp_tg_event {
	__u32 flow;
	__u32 len;		/* frame length as received */
	__u64 seq;
	__u64 stamp;
	__u64 tx_ns;
	__u64 rx_ns;
};
_Static_assert(sizeof(struct sharp_tg_event) == 40, "sharp_tg_event size");
/* tg_sink_stats: PERCPU_ARRAY[1]. */
struct sharp_tg_sink_stats {
	__u64 probes;		/* probes received and reported */
	__u64 lost_events;	/* probes received but the ring buffer was full */
	__u64 other;		/* frames that were not probes (passed to the stack) */
	__u64 marked;		/* probes that still carried a shim (must stay 0) */
};
_Static_assert(sizeof(struct sharp_tg_sink_stats) == 32, "sharp_tg_sink_stats size");

/* ------------------------------------------------------------------------ */
/* Line-rate probe checks in the sink (tg_sink, issue 13)                   */
/* ------------------------------------------------------------------------ */

enum sharp_tg_check_limits {
	SHARP_TG_CHECK_FLOWS = 1024,	/* default max_entries of tg_flow_checks */
	/* tg_seen entries per sink: flows x window, a power-of-two window of at
	 * least SHARP_TG_MIN_WINDOW sequence numbers per flow */
	SHARP_TG_SEEN_BUDGET = 1 << 20,
	SHARP_TG_MIN_WINDOW = 1024,
	SHARP_TG_MAX_WINDOW = 1 << 16,
};
/* tg_sink_config: ARRAY[1]. */
struct sharp_tg_sink_config {
	/* a tg_events record for probes whose seq % event_every == 0
	 * (1: every probe, 0: none); the checks below cover every probe */
	__u32 event_every;
	/* per flow, the last seq_window sequence numbers are remembered
	 * (tg_seen): a duplicate within that distance of the highest one seen
	 * is recognised exactly; an older probe counts as beyond_window. A
	 * power of two; tg_seen has flows x seq_window entries. */
	__u32 seq_window;
};
_Static_assert(sizeof(struct sharp_tg_sink_config) == 8, "sharp_tg_sink_config size");
/* tg_flow_checks: ARRAY[flows], key = flow. Updated under `lock`. */
struct sharp_tg_flow_check {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 max_seq;		/* highest sequence number seen */
	__u64 delivered;	/* distinct probes */
	__u64 reordered;	/* distinct probes below max_seq on arrival */
	__u64 duplicated;	/* probes seen before (within the window) */
	__u64 stamp_mismatches;	/* probes whose stamp != seq (every arrival) */
	__u64 beyond_window;	/* probes older than the window: delivered and reordered, duplicate unknown */
};
_Static_assert(sizeof(struct sharp_tg_flow_check) == 56, "sharp_tg_flow_check size");
/* tg_seen: ARRAY of __u32, key = flow * seq_window + seq % seq_window,
 * value = low 32 bits of the last seq seen there (0: none). */
/* tg_check_stats: PERCPU_ARRAY[1]. */
struct sharp_tg_check_stats {
	__u64 unchecked;	/* probes whose flow has no tg_flow_checks entry, or the config is unusable */
};
_Static_assert(sizeof(struct sharp_tg_check_stats) == 8, "sharp_tg_check_stats size");

/* ------------------------------------------------------------------------ */
/* Packet capture (ebpf/include/capture.h, in the switch and agent)         */
/* ------------------------------------------------------------------------ */

/*
 * When capture_cfg[0].enabled is set, the switch and the agent copy every
 * frame they decide on (up to snaplen bytes) with a sharp_capture_hdr into
 * the capture_ring ring buffer: one record per decision, where it is made.
 * Off, the cost is one inlined array lookup and a branch per frame. Filters
 * are evaluated in the kernel; a record the ring has no room for is counted
 * (capture_stats.ring_full) and the frame goes on as if capture were off:
 * never back-pressure, never a data-path drop.
 */
enum sharp_capture_limits {
	SHARP_CAPTURE_MAX_SNAP = 1540,		/* SHARP_MAX_FRAME + a shim put back */
	SHARP_CAPTURE_RING_BYTES = 4 << 20,	/* default capture_ring size */
};

enum sharp_capture_program {
	SHARP_CAP_PROG_SWITCH = 1,
	SHARP_CAP_PROG_AGENT = 2,
};

enum sharp_capture_direction {
	SHARP_CAP_DIR_IN = 1,	/* as it arrived on ifindex (dropped, passed, held, to the VNF) */
	SHARP_CAP_DIR_OUT = 2,	/* as it leaves: the switch's egress slot, or the agent's release */
};

enum sharp_capture_verdict {
	SHARP_CAP_FORWARDED = 1,	/* switch: redirected unmarked */
	SHARP_CAP_MARKED_PRE = 2,	/* switch: redirected with shim(PRE, hid) */
	SHARP_CAP_MARKED_POST = 3,	/* switch: redirected with shim(POST, hid) */
	SHARP_CAP_HELD = 4,		/* agent: stored in hold ring `ring` at `pos` */
	SHARP_CAP_RELEASED = 5,		/* agent: replayed from ring `ring` at `pos` to the VNF */
	SHARP_CAP_RELAYED = 6,		/* switch: RELAY frame forwarded; agent: ring frame sent back */
	SHARP_CAP_DROPPED = 7,		/* see reason */
	SHARP_CAP_PASSED = 8,		/* to the kernel stack (not a managed frame, or STACK mode) */
	SHARP_CAP_TO_VNF = 9,		/* agent: handed to the VNF (stripped if it had a shim) */
	SHARP_CAP_DIVERTED = 10,	/* switch: to the controller (baseline) */
};

/* Why a frame was dropped (or passed): the counter that counted it. */
enum sharp_capture_reason {
	SHARP_CAP_R_NONE = 0,
	SHARP_CAP_R_MALFORMED = 1,	/* drop_malformed */
	SHARP_CAP_R_NO_RULE = 2,	/* drop_no_rule */
	SHARP_CAP_R_FORGED_SHIM = 3,	/* drop_shim */
	SHARP_CAP_R_BAD_ACTION = 4,	/* drop_bad_action */
	SHARP_CAP_R_NO_HEADROOM = 5,	/* drop_no_headroom */
	SHARP_CAP_R_NO_TX = 6,		/* drop_no_tx */
	SHARP_CAP_R_NON_IP = 7,		/* pass_non_ip */
	SHARP_CAP_R_SHIM_REJECTED = 8,	/* agent shim_rejected */
	SHARP_CAP_R_SHIM_MALFORMED = 9,	/* agent shim_malformed */
	SHARP_CAP_R_RING_FULL = 10,	/* agent overflow */
	SHARP_CAP_R_TOO_BIG = 11,	/* agent too_big */
	SHARP_CAP_R_CONFIG = 12,	/* agent config_error */
	SHARP_CAP_R_REPLAY = 13,	/* agent replay_error */
	SHARP_CAP_R_UNKNOWN_HID = 14,	/* agent unknown_hid (passed on, not dropped) */
};

/* capture_cfg filter bits: a record is kept iff every set filter matches. */
enum sharp_capture_filter {
	SHARP_CAP_F_PORT = 1,		/* ifindex == port_ifindex or out_slot_plus1 == port_slot */
	SHARP_CAP_F_DIRECTION = 2,	/* direction == direction */
	SHARP_CAP_F_FLOW = 4,		/* IPv4 5-tuple equals flow, either way round (0 = any field) */
	SHARP_CAP_F_RULE = 8,		/* rule_id == rule_id (switch records only) */
	SHARP_CAP_F_HID = 16,		/* hid == hid */
};

/* capture_cfg: ARRAY[1], written by user space only. */
struct sharp_capture_config {
	__u32 enabled;		/* 0: the hook returns at once */
	__u32 snaplen;		/* 1..SHARP_CAPTURE_MAX_SNAP */
	__u32 filters;		/* enum sharp_capture_filter bits */
	__u32 direction;	/* enum sharp_capture_direction */
	__u32 port_ifindex;	/* 0: none */
	__u32 port_slot;	/* switch slot + 1 (0: none) */
	__u32 rule_id;
	__u32 hid;
	struct sharp_flow_key flow;
};
_Static_assert(sizeof(struct sharp_capture_config) == 48, "sharp_capture_config size");

/* The head of every capture_ring record; cap_len bytes of frame follow. */
struct sharp_capture_hdr {
	__u64 ts_ns;		/* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u32 ifindex;		/* switch: ingress port; agent: its interface */
	__u32 out_slot_plus1;	/* switch: egress slot + 1 (0: none) */
	__u32 rule_id;		/* switch: the matched rule (0: none) */
	__u32 pos;		/* agent HELD/RELEASED/RELAYED: ring position */
	__u32 orig_len;		/* the frame's length as captured (with a shim put back) */
	__u32 cap_len;		/* bytes of it that follow */
	__u16 hid;		/* the handover the frame belongs to (0: none) */
	__u8 program;		/* enum sharp_capture_program */
	__u8 direction;		/* enum sharp_capture_direction */
	__u8 verdict;		/* enum sharp_capture_verdict */
	__u8 reason;		/* enum sharp_capture_reason */
	__u8 ring;		/* agent: hold ring */
	__u8 pad;
};
_Static_assert(sizeof(struct sharp_capture_hdr) == 40, "sharp_capture_hdr size");

/* capture_scratch: PERCPU_ARRAY[1], where a record is built before output. */
struct sharp_capture_record {
	struct sharp_capture_hdr hdr;
	__u8 data[SHARP_CAPTURE_MAX_SNAP];
};
_Static_assert(sizeof(struct sharp_capture_record) == 1584, "sharp_capture_record size");

/* capture_stats: PERCPU_ARRAY[1]. */
struct sharp_capture_stats {
	__u64 captured;		/* records written to capture_ring */
	__u64 ring_full;	/* records lost: capture_ring had no room */
	__u64 filtered;		/* frames the filters left out */
};
_Static_assert(sizeof(struct sharp_capture_stats) == 24, "sharp_capture_stats size");

#endif /* SHARP_ABI_H */
