// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * agent.bpf.c - the sharpctl agent on a VNF instance.
 *
 * One loaded object per VNF instance, the entry program attached to both of
 * its interfaces. It strips the shim before the VNF sees a frame, counts PRE
 * frames on the old instance, and on the new instance holds frames of an
 * incoming handover in a ring (a BPF array) until user space releases them
 * with agent_replay / agent_release_finish. The VNF is a separate object,
 * tail-called through vnf_chain[0], so live and replayed frames take the
 * same path into it.
 *
 * Programs and return codes:
 *   agent (entry)
 *     XDP_PASS     iface not in `ifaces` (or its side > 1: config_error);
 *                  or the tail call to the VNF failed (chain_missing);
 *                  or STACK mode (vnf_mode): the frame goes to the stack
 *     XDP_DROP     shim rejected/malformed; frame held in a ring (consumed);
 *                  ring overflow; frame too big to hold; bad ring config
 *     otherwise    whatever the VNF returns (tail call)
 *   agent_replay (BPF_PROG_TEST_RUN, BPF_F_TEST_XDP_LIVE_FRAMES, repeat = n)
 *     XDP_DROP     nothing ready at the head of the ring (replay_empty)
 *     XDP_ABORTED  config error, or the held frame could not be rebuilt
 *                  (it is dropped from the ring and counted)
 *     XDP_TX       RELAY mode: the frame with shim(RELAY, hid), back out of
 *                  the interface it arrived on, to its switch (a live-frames
 *                  run turns XDP_TX into a redirect to the ingress device)
 *     XDP_REDIRECT RELAY_DIRECT mode: out through relay_tx[side]
 *     XDP_PASS     replayed frame, no VNF in vnf_chain; or STACK mode: the
 *                  replayed frame enters the stack of the run's ingress
 *                  device (live frames), in ring order
 *     otherwise    whatever the VNF returns for the replayed frame
 *   agent_release_finish (normal test run): enum sharp_finish_result
 *
 * Note for user space reading pre_seen: it is counted before the tail call
 * into the VNF, so when pre_seen reaches the switch's pre count the last PRE
 * frames may still be inside the VNF on another CPU. Wait for quiescence
 * after that (the engine's event: `arrivals`, then a CPU barrier; see
 * sharp_abi.h) before treating the old instance's state as final.
 */
#include "parse.h"
#include "capture.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by user space before load; slots must have
 * ring_count * 2 * ring_capacity entries. */
const volatile __u32 ring_capacity = SHARP_DEFAULT_RING_CAPACITY;
const volatile __u32 ring_count = SHARP_DEFAULT_RING_COUNT;
/* enum sharp_vnf_mode: the VNF is an XDP program (vnf_chain) or the stack */
const volatile __u32 vnf_mode = SHARP_VNF_XDP;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHARP_DEFAULT_AGENT_IFACES);
	__type(key, __u32);			/* ifindex */
	__type(value, struct sharp_agent_iface);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);			/* prog fd of the VNF */
} vnf_chain SEC(".maps");

/* NO_PREALLOC: a deleted handover's element is not recycled for a new one
 * while a program on another CPU still holds a pointer to it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SHARP_DEFAULT_AGENT_HANDOVERS);
	__type(key, __u32);			/* hid */
	__type(value, struct sharp_agent_ho);
} handovers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_DEFAULT_RING_COUNT * SHARP_SIDES * SHARP_DEFAULT_RING_CAPACITY);
	__type(key, __u32);
	__type(value, struct sharp_slot);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_SIDES);
	__type(key, __u32);			/* side */
	__type(value, __u32);			/* hid being released */
} replay_ctl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_SIDES);
	__type(key, __u32);			/* side */
	__type(value, __u32);			/* enum sharp_replay_mode */
} replay_mode SEC(".maps");

/* user space resizes to ring_count * 2 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_DEFAULT_RING_COUNT * SHARP_SIDES);
	__type(key, __u32);			/* ring * 2 + side */
	__type(value, struct sharp_release_ctl);
} release_ctl SEC(".maps");

/* STACK mode: the MAC of each side's interface (see enum sharp_vnf_mode). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_SIDES);
	__type(key, __u32);			/* side */
	__type(value, struct sharp_mac);
} stack_mac SEC(".maps");

/* RELAY_DIRECT replays (BMv2 lab only, same kernel): where they go, per side. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, SHARP_SIDES);
	__type(key, __u32);			/* side */
	__type(value, __u32);			/* ifindex */
} relay_tx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_agent_stats);
} agent_stats SEC(".maps");

/* see sharp_abi.h: the engine's quiescence event */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHARP_SIDES);
	__type(key, __u32);			/* side */
	__type(value, __u64);
} arrivals SEC(".maps");

#define STAT_INC(st, field) do { if (st) (st)->field++; } while (0)

static __always_inline struct sharp_agent_stats *agent_stats_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&agent_stats, &zero);
}

/*
 * STACK mode: hand the frame to the host's stack. A unicast frame is
 * re-addressed to the interface's own MAC first: the switch forwarded it
 * unchanged, addressed to the far host, and the stack would otherwise take
 * it for another host's frame (PACKET_OTHERHOST) and drop it.
 */
static __always_inline int to_stack(struct xdp_md *ctx, __u32 side, struct sharp_agent_stats *st)
{
	__u32 key = side;
	struct sharp_mac *mac = bpf_map_lookup_elem(&stack_mac, &key);
	__u8 dst[6];

	if (mac && (mac->addr[0] | mac->addr[1] | mac->addr[2] | mac->addr[3] | mac->addr[4] | mac->addr[5]) &&
	    !bpf_xdp_load_bytes(ctx, 0, dst, sizeof(dst)) && !(dst[0] & 1))
		bpf_xdp_store_bytes(ctx, 0, mac->addr, sizeof(mac->addr));
	STAT_INC(st, to_stack);
	return XDP_PASS;
}

/* Hand the frame to the VNF: the stack (STACK mode), else the tail call,
 * which only returns if vnf_chain[0] is empty. */
static __always_inline int to_vnf(struct xdp_md *ctx, __u32 side, struct sharp_agent_stats *st)
{
	if (vnf_mode == SHARP_VNF_STACK)
		return to_stack(ctx, side, st);
	bpf_tail_call(ctx, &vnf_chain, SHARP_VNF_CHAIN_INDEX);
	STAT_INC(st, chain_missing);
	return XDP_PASS;
}

/* First slot index of ring `ring`, side `side`; -1 if the configuration
 * (ring number, ring_capacity, size of `slots`) cannot hold that ring. */
static __always_inline int ring_base(__u32 ring, __u32 side, __u32 *base)
{
	__u32 cap = ring_capacity;
	__u32 last;

	if (cap == 0 || ring >= ring_count)
		return -1;
	*base = (ring * SHARP_SIDES + side) * cap;
	/* If the last slot of the ring exists, every slot of it does. */
	last = *base + cap - 1;
	if (!bpf_map_lookup_elem(&slots, &last))
		return -1;
	return 0;
}

enum hold_verdict {
	HOLD_PASS,
	HOLD_STORE,
	HOLD_OVERFLOW,
	HOLD_TOO_BIG,
};

/* Role NEW, shim already stripped. */
static __always_inline int hold_or_pass(struct xdp_md *ctx, struct sharp_agent_ho *ho, __u32 side,
					struct sharp_agent_stats *st, __u16 tag)
{
	enum hold_verdict v;
	struct sharp_slot *slot;
	struct sharp_release_ctl *ctl;
	__u32 cap = ring_capacity;
	__u32 base, pos = 0, idx, ckey, requested = 0, flushed = 0;
	__u64 len;
	int fits;

	if (ring_base(ho->ring, side, &base)) {
		/* Cannot hold: a lost frame, reported as overflow + cause. */
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_CONFIG, tag, sharp_tag_hid(tag));
		STAT_INC(st, config_error);
		__sync_fetch_and_add(&ho->overflow[side], 1);
		return XDP_DROP;
	}

	/* Length from the helper, not data_end - data (frags, verifier). */
	len = bpf_xdp_get_buff_len(ctx);
	fits = len >= SHARP_ETH_HLEN && len <= SHARP_MAX_FRAME;

	/* Release progress, read before the lock (no helper calls under it). */
	ckey = ho->ring * SHARP_SIDES + side;
	ctl = bpf_map_lookup_elem(&release_ctl, &ckey);
	if (ctl) {
		requested = SHARP_READ_ONCE(ctl->requested);
		flushed = SHARP_READ_ONCE(ctl->flushed_head);
	}

	bpf_spin_lock(&ho->lock);
	if (ho->state[side] != SHARP_HOLD_HOLDING) {
		v = HOLD_PASS;
	} else if (requested && ho->head[side] == ho->tail[side] && !ho->replaying[side] &&
		   flushed == ho->head[side]) {
		/* Everything held before this frame is out of the ring and
		 * flushed: this frame may overtake nothing, so it passes, and
		 * so do all that follow. */
		ho->state[side] = SHARP_HOLD_PASSING;
		v = HOLD_PASS;
	} else if (!fits) {
		v = HOLD_TOO_BIG;
	} else if (ho->tail[side] - ho->head[side] >= cap) {
		v = HOLD_OVERFLOW;
	} else {
		pos = ho->tail[side]++;
		ho->held[side]++;
		v = HOLD_STORE;
	}
	bpf_spin_unlock(&ho->lock);

	switch (v) {
	case HOLD_PASS:
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_TO_VNF, SHARP_CAP_R_NONE, tag, sharp_tag_hid(tag));
		__sync_fetch_and_add(&ho->passed[side], 1);
		return to_vnf(ctx, side, st);
	case HOLD_TOO_BIG:
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_TOO_BIG, tag, sharp_tag_hid(tag));
		STAT_INC(st, too_big);
		__sync_fetch_and_add(&ho->overflow[side], 1);
		return XDP_DROP;
	case HOLD_OVERFLOW:
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_RING_FULL, tag, sharp_tag_hid(tag));
		STAT_INC(st, overflow);
		__sync_fetch_and_add(&ho->overflow[side], 1);
		return XDP_DROP;
	default:
		break;
	}

	/* pos is reserved: whatever happens, publish the slot so the replay
	 * never waits forever on it. */
	idx = base + pos % cap;
	slot = bpf_map_lookup_elem(&slots, &idx);
	if (!slot) {
		/* Unreachable: ring_base() checked the whole ring exists. */
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_CONFIG, tag, sharp_tag_hid(tag));
		STAT_INC(st, config_error);
		return XDP_DROP;
	}
	/* Verifier (clang 14): keep the length in one 64-bit register, masked
	 * and range-checked, right where the helper takes it. */
	len &= 0x7ff;
	if (len < SHARP_ETH_HLEN || len > SHARP_MAX_FRAME || bpf_xdp_load_bytes(ctx, 0, slot->data, len))
		len = 0;	/* tombstone: replay drops and counts it */
	slot->len = len;
	/* Publish after the copy; the xchg is a full barrier. */
	__atomic_exchange_n(&slot->ready, 1, __ATOMIC_SEQ_CST);
	CAPTURE_AGENT(ctx, .ifindex = ctx->ingress_ifindex, .direction = SHARP_CAP_DIR_IN, .verdict = SHARP_CAP_HELD, .shim_tag = tag, .hid = sharp_tag_hid(tag), .ring = ho->ring, .pos = pos);
	STAT_INC(st, held);
	return XDP_DROP;
}

SEC("xdp")
int agent(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct sharp_agent_stats *st;
	struct sharp_agent_iface *ifc;
	struct sharp_agent_ho *ho;
	struct sharp_cursor c;
	struct sharp_shim *shim;
	struct ethhdr *eth;
	__u32 side, hid, phase;
	__u16 tag;

	ifc = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!ifc)
		return XDP_PASS;
	st = agent_stats_get();
	if (ifc->side > SHARP_SIDE_1) {
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_PASSED, SHARP_CAP_R_CONFIG, 0, 0);
		STAT_INC(st, config_error);
		return XDP_PASS;
	}
	side = ifc->side;

	sharp_cursor_init(&c, ctx);
	eth = sharp_parse_eth(&c);
	/* Only the kinds of frames the switch counts as tx (see arrivals). */
	if (eth && (eth->h_proto == bpf_htons(ETH_P_IP) || eth->h_proto == bpf_htons(SHARP_ETH_P_SHIM))) {
		__u32 akey = side;	/* a copy: &side would lose its bound */
		__u64 *n = bpf_map_lookup_elem(&arrivals, &akey);

		if (n)
			*n += 1;
	}
	if (!eth || eth->h_proto != bpf_htons(SHARP_ETH_P_SHIM)) {
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_TO_VNF, SHARP_CAP_R_NONE, 0, 0);
		STAT_INC(st, passed_plain);
		return to_vnf(ctx, side, st);
	}
	if (!ifc->accept_shim) {
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_SHIM_REJECTED, 0, 0);
		STAT_INC(st, shim_rejected);
		return XDP_DROP;
	}
	shim = sharp_parse_shim(&c);
	if (!shim) {
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_SHIM_MALFORMED, 0, 0);
		STAT_INC(st, shim_malformed);
		return XDP_DROP;
	}
	tag = bpf_ntohs(shim->tag);
	phase = sharp_tag_phase(tag);
	hid = sharp_tag_hid(tag);
	if (hid < SHARP_HID_MIN || (phase != SHARP_PHASE_PRE && phase != SHARP_PHASE_POST)) {
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_SHIM_MALFORMED, 0, hid);
		STAT_INC(st, shim_malformed);
		return XDP_DROP;
	}

	ho = bpf_map_lookup_elem(&handovers, &hid);
	if (ho) {
		/* Counted on arrival, before the VNF ran (see header note). */
		if (phase == SHARP_PHASE_PRE)
			__sync_fetch_and_add(&ho->pre_seen, 1);
		else
			__sync_fetch_and_add(&ho->post_seen, 1);
	}

	if (sharp_strip_shim(ctx)) {
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_DROPPED, SHARP_CAP_R_SHIM_MALFORMED, 0, hid);
		STAT_INC(st, shim_malformed);
		return XDP_DROP;
	}
	STAT_INC(st, stripped);

	if (!ho) {
		/* Late frame of a finished handover, or an early one: the
		 * shim is only a mark, the frame itself is valid. */
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_TO_VNF, SHARP_CAP_R_UNKNOWN_HID, tag, hid);
		STAT_INC(st, unknown_hid);
		return to_vnf(ctx, side, st);
	}
	if (ho->role != SHARP_AGENT_NEW) {
		/* OLD: counting above is all it does. */
		CAPTURE_AGENT_IN(ctx, SHARP_CAP_TO_VNF, SHARP_CAP_R_NONE, tag, hid);
		__sync_fetch_and_add(&ho->passed[side], 1);
		return to_vnf(ctx, side, st);
	}
	return hold_or_pass(ctx, ho, side, st, tag);
}

/* Side and handover (and its id) that replay/finish act on; NULL on config error. */
static __always_inline struct sharp_agent_ho *release_target(struct xdp_md *ctx, __u32 *side, __u32 *hid_out)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct sharp_agent_iface *ifc;
	__u32 *hid;

	__u32 s;

	ifc = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!ifc)
		return NULL;
	s = ifc->side;
	if (s > SHARP_SIDE_1)
		return NULL;
	*side = s;
	hid = bpf_map_lookup_elem(&replay_ctl, &s);
	if (!hid)
		return NULL;
	*hid_out = *hid;
	return bpf_map_lookup_elem(&handovers, hid);
}

/*
 * Re-inject the frame at the head of the ring. The test run's data_in is
 * only a template buffer: it is resized to the held frame and overwritten.
 *
 * The head advances only AFTER the frame was copied out of its slot: the
 * free space the holder sees (tail - head < capacity) then never includes
 * a slot still being read, so a frame arriving meanwhile cannot overwrite
 * it. `replaying` marks the copy-out window; a second concurrent replay of
 * the same side sees it and returns empty instead of duplicating a frame.
 *
 * RELAY mode pushes shim(RELAY, hid) in the same window, so a frame that
 * cannot get its shim counts as replay_failed like any frame that could not
 * be rebuilt, never as released.
 */
SEC("xdp")
int agent_replay(struct xdp_md *ctx)
{
	struct sharp_agent_stats *st = agent_stats_get();
	struct sharp_agent_ho *ho;
	struct sharp_slot *slot;
	__u32 side = 0, hid = 0, base, snap, idx, mkey, mode = SHARP_REPLAY_TO_VNF, *m;
	__u64 len, cur;
	int ok, good;

	ho = release_target(ctx, &side, &hid);
	side &= 1;	/* already checked; keeps the bound visible to the verifier */
	if (!ho || ring_base(ho->ring, side, &base)) {
		STAT_INC(st, config_error);
		return XDP_ABORTED;
	}
	/* a copy: taking side's address would spill it and lose its bound */
	mkey = side;
	m = bpf_map_lookup_elem(&replay_mode, &mkey);
	if (m)
		mode = *m;
	if (mode == SHARP_REPLAY_RELAY && (hid < SHARP_HID_MIN || hid > SHARP_HID_MAX)) {
		/* the tag could not name this handover */
		STAT_INC(st, config_error);
		return XDP_ABORTED;
	}

	/* Look the slot up before taking the lock (no helper calls under it);
	 * the lock then confirms head has not moved. */
	snap = SHARP_READ_ONCE(ho->head[side]);
	idx = base + snap % ring_capacity;
	slot = bpf_map_lookup_elem(&slots, &idx);
	if (!slot) {
		STAT_INC(st, config_error);
		return XDP_ABORTED;
	}

	bpf_spin_lock(&ho->lock);
	ok = !ho->replaying[side] && ho->head[side] == snap && ho->tail[side] != snap &&
	     SHARP_READ_ONCE(slot->ready);
	if (ok)
		ho->replaying[side] = 1;
	bpf_spin_unlock(&ho->lock);
	if (!ok) {
		STAT_INC(st, replay_empty);
		return XDP_DROP;
	}

	len = slot->len;
	good = len >= SHARP_ETH_HLEN && len <= SHARP_MAX_FRAME;
	if (good) {
		cur = bpf_xdp_get_buff_len(ctx);
		if (bpf_xdp_adjust_tail(ctx, (int)((__s64)len - (__s64)cur)))
			good = 0;
	}
	if (good) {
		len &= 0x7ff;
		if (len < SHARP_ETH_HLEN || len > SHARP_MAX_FRAME ||
		    bpf_xdp_store_bytes(ctx, 0, slot->data, len))
			good = 0;
	}
	if (good && mode == SHARP_REPLAY_RELAY && sharp_push_shim(ctx, SHARP_PHASE_RELAY, hid))
		good = 0;
	__atomic_exchange_n(&slot->ready, 0, __ATOMIC_SEQ_CST);

	bpf_spin_lock(&ho->lock);
	ho->head[side] = snap + 1;
	if (good)
		ho->released[side]++;
	ho->replaying[side] = 0;
	bpf_spin_unlock(&ho->lock);

	if (!good) {
		__sync_fetch_and_add(&ho->replay_failed[side], 1);
		STAT_INC(st, replay_error);
		return XDP_ABORTED;
	}
	CAPTURE_AGENT(ctx, .ifindex = ctx->ingress_ifindex, .direction = SHARP_CAP_DIR_OUT, .verdict = mode == SHARP_REPLAY_TO_VNF ? SHARP_CAP_RELEASED : SHARP_CAP_RELAYED, .hid = hid, .ring = ho->ring, .pos = snap);
	STAT_INC(st, replayed);
	if (mode == SHARP_REPLAY_RELAY) {
		/* back to the switch that sent it, which routes it to the old
		 * instance (its `relays` map) */
		STAT_INC(st, relayed);
		return XDP_TX;
	}
	if (mode == SHARP_REPLAY_RELAY_DIRECT)
		return bpf_redirect_map(&relay_tx, mkey, XDP_ABORTED);
	return to_vnf(ctx, side, st);
}

/*
 * Switch a side to PASSING iff its ring is empty, atomically with the
 * emptiness check: a frame that arrived before the switch is still in the
 * ring (caller replays again), one that arrives after it passes directly.
 * Run only after the replay test run returned, so everything it popped has
 * already been flushed to the next device.
 */
SEC("xdp")
int agent_release_finish(struct xdp_md *ctx)
{
	struct sharp_agent_ho *ho;
	__u32 side = 0, hid = 0;
	int done;

	ho = release_target(ctx, &side, &hid);
	side &= 1;	/* already checked; keeps the bound visible to the verifier */
	if (!ho || ho->role != SHARP_AGENT_NEW) {
		struct sharp_agent_stats *st = agent_stats_get();

		STAT_INC(st, config_error);
		return SHARP_FINISH_ERROR;
	}

	bpf_spin_lock(&ho->lock);
	done = ho->head[side] == ho->tail[side] && !ho->replaying[side];
	if (done)
		ho->state[side] = SHARP_HOLD_PASSING;
	bpf_spin_unlock(&ho->lock);

	return done ? SHARP_FINISH_DONE : SHARP_FINISH_AGAIN;
}
