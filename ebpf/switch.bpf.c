// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * switch.bpf.c - the sharpctl XDP switch.
 *
 * Attached to every port of a switch (ingress and egress switch run the same
 * object). Classifies IPv4 frames into rules (exact 5-tuple first, then a
 * priority-ordered wildcard list), marks frames of rules under handover with
 * the shim, counts, and forwards through a devmap.
 *
 * Shims: only switches mark frames, so a shim arriving on a port is forged
 * handover traffic and dropped (drop_shim) -- with one exception. During a
 * rollback after switch-over the new instance's agent sends the frames it
 * held back into the switch with shim(RELAY, hid); such a frame arriving on
 * a VNF port while `relays` has a route for hid is stripped and redirected
 * to the route's out slot (the old instance), counted as `relayed` on the
 * ingress port and as tx on the out port.
 *
 * Return codes:
 *   XDP_PASS      ingress port not in `ports`, or non-IPv4 frame
 *   XDP_DROP      shim frame that is not a routed relay, malformed IPv4,
 *                 no rule/action, bad action, no headroom for the shim
 *   XDP_REDIRECT  forwarded to tx_ports[action.out_slot], or a relayed
 *                 frame, stripped, to tx_ports[relays[hid]]
 *   XDP_ABORTED   the out slot has no tx_ports entry (what
 *                 bpf_redirect_map with flags 0 returns; counted as
 *                 drop_no_tx, also visible in the xdp_exception tracepoint)
 */
#include "parse.h"
#include "capture.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_DEFAULT_MAX_IFINDEX);
	__type(key, __u32);			/* ifindex */
	__type(value, struct sharp_port_info);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, SHARP_DEFAULT_MAX_PORTS);
	__type(key, __u32);			/* slot */
	__type(value, __u32);			/* ifindex */
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SHARP_DEFAULT_MAX_RULES);
	__type(key, struct sharp_flow_key);
	__type(value, struct sharp_exact_rule);
} rules_exact SEC(".maps");

/* Fixed size: the scan bound of the program is the array size. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_MAX_WILD_RULES);
	__type(key, __u32);
	__type(value, struct sharp_wild_rule);
} rules_wild SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);			/* used entries of rules_wild */
} wild_count SEC(".maps");

/* HASH, not ARRAY: updates replace the element atomically for readers
 * (array values can tear), and all micro-flows of a wildcard rule share this
 * ONE action, so a handover flips them together. NO_PREALLOC: a replaced
 * element is freed after an RCU grace period instead of being recycled
 * immediately under a reader. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SHARP_DEFAULT_MAX_RULES);
	__type(key, __u32);			/* rule_id */
	__type(value, struct sharp_rule_action);
} rule_actions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHARP_DEFAULT_MAX_RULES);
	__type(key, __u32);			/* rule_id */
	__type(value, struct sharp_rule_stats);
} rule_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHARP_DEFAULT_MAX_PORTS);
	__type(key, __u32);			/* slot */
	__type(value, struct sharp_port_stats);
} port_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SHARP_HID_COUNT);
	__type(key, __u32);			/* hid */
	__type(value, struct sharp_ho_stats);
} ho_stats SEC(".maps");

/* Rollback relay routes: hid -> out slot, see sharp_abi.h. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SHARP_DEFAULT_MAX_RELAYS);
	__type(key, __u32);			/* hid */
	__type(value, __u32);			/* out slot */
} relays SEC(".maps");

/* Stats are per-CPU: plain increments, no atomics. */
#define PSTAT_INC(ps, field) do { if (ps) (ps)->field++; } while (0)

struct wild_scan {
	const struct sharp_flow_key *key;
	__u32 in_slot;
	__u32 n;
	__u32 rule_id;
	__u32 found;
};

/* bpf_loop callback: the verifier checks the body once instead of walking
 * up to SHARP_MAX_WILD_RULES unrolled iterations (an open-coded loop costs
 * ~170k verified instructions and seconds of load time). Returns 1 to stop. */
static long wild_scan_one(__u32 i, void *arg)
{
	struct wild_scan *s = arg;
	const struct sharp_flow_key *key = s->key;
	struct sharp_wild_rule *r;

	if (i >= s->n)
		return 1;
	r = bpf_map_lookup_elem(&rules_wild, &i);
	if (!r)
		return 1;
	if (!r->valid)
		return 0;
	if ((key->saddr & r->smask) != (r->saddr & r->smask))
		return 0;
	if ((key->daddr & r->dmask) != (r->daddr & r->dmask))
		return 0;
	if (r->proto && r->proto != key->proto)
		return 0;
	if (r->sport && r->sport != key->sport)
		return 0;
	if (r->dport && r->dport != key->dport)
		return 0;
	if (r->in_slot_plus1 && r->in_slot_plus1 != s->in_slot + 1)
		return 0;
	s->rule_id = r->rule_id;
	s->found = 1;
	return 1;
}

/* First wildcard rule (in array order) matching key and ingress slot. */
static __always_inline int wild_lookup(const struct sharp_flow_key *key, __u32 in_slot,
				       __u32 *rule_id)
{
	struct wild_scan s = { .key = key, .in_slot = in_slot };
	__u32 zero = 0;
	__u32 *cnt = bpf_map_lookup_elem(&wild_count, &zero);

	if (!cnt)
		return -1;
	s.n = *cnt;
	if (s.n > SHARP_MAX_WILD_RULES)
		s.n = SHARP_MAX_WILD_RULES;
	if (!s.n)
		return -1;
	bpf_loop(s.n, wild_scan_one, &s, 0);
	if (!s.found)
		return -1;
	*rule_id = s.rule_id;
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} divert SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_divert_stats);
} divert_stats SEC(".maps");

/* Baseline (controller-buffer mode): the frame goes to the controller. */
static __always_inline int divert_to_controller(struct xdp_md *ctx, __u32 hid, __u32 in_slot)
{
	struct sharp_divert_record *rec;
	struct sharp_divert_stats *ds;
	__u32 zero = 0;
	__u64 len = bpf_xdp_get_buff_len(ctx);

	CAPTURE_SWITCH_IN(ctx, ctx->ingress_ifindex, SHARP_CAP_DIVERTED, SHARP_CAP_R_NONE);
	ds = bpf_map_lookup_elem(&divert_stats, &zero);
	if (len < SHARP_ETH_HLEN || len > SHARP_MAX_FRAME) {
		if (ds)
			ds->dropped++;
		return XDP_DROP;
	}
	rec = bpf_ringbuf_reserve(&divert, sizeof(*rec), 0);
	if (!rec) {
		if (ds)
			ds->dropped++;
		return XDP_DROP;
	}
	len &= 0x7ff;
	if (len < SHARP_ETH_HLEN || len > SHARP_MAX_FRAME || bpf_xdp_load_bytes(ctx, 0, rec->data, len)) {
		bpf_ringbuf_discard(rec, 0);
		if (ds)
			ds->dropped++;
		return XDP_DROP;
	}
	rec->hid = hid;
	rec->len = len;
	rec->in_slot = in_slot;
	rec->pad = 0;
	bpf_ringbuf_submit(rec, 0);
	if (ds) {
		ds->packets++;
		ds->bytes += len;
	}
	return XDP_DROP;
}

/* The controller sends a frame out of a switch port: a live-frames test run
 * with the port as ingress device, and XDP_TX. */
SEC("xdp")
int tx_inject(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	struct sharp_port_info *pi = bpf_map_lookup_elem(&ports, &ifindex);
	struct sharp_port_stats *ps;
	__u32 slot;

	/* Counted as the port's tx like a redirect: the agent behind the port
	 * compares its arrivals with it (see sharp_abi.h, arrivals). */
	if (pi) {
		slot = pi->slot;
		ps = bpf_map_lookup_elem(&port_stats, &slot);
		if (ps) {
			ps->tx_packets++;
			ps->tx_bytes += ctx->data_end - ctx->data;
		}
	}
	return XDP_TX;
}

/*
 * A shim frame arrived on a switch port (cursor after the Ethernet header).
 * shim(RELAY, hid) on a VNF port with a relays[hid] route: stripped and
 * redirected to the route's out slot. Anything else: forged, dropped.
 */
static __always_inline int shim_in(struct xdp_md *ctx, struct sharp_cursor *c, __u32 role,
				   struct sharp_port_stats *ps_in, __u64 len)
{
	struct sharp_port_stats *ps_out;
	struct sharp_shim *shim;
	__u32 hid, out_slot, *route;
	__u16 tag;
	long rc;

	shim = sharp_parse_shim(c);
	if (role != SHARP_PORT_VNF || !shim)
		goto forged;
	tag = bpf_ntohs(shim->tag);
	hid = sharp_tag_hid(tag);
	if (sharp_tag_phase(tag) != SHARP_PHASE_RELAY || hid < SHARP_HID_MIN)
		goto forged;
	route = bpf_map_lookup_elem(&relays, &hid);
	if (!route)
		goto forged;
	out_slot = *route;	/* one snapshot: the route may be replaced */
	if (sharp_strip_shim(ctx))
		goto forged;
	rc = bpf_redirect_map(&tx_ports, out_slot, 0);
	if (rc != XDP_REDIRECT) {
		CAPTURE_SWITCH_DROP(ctx, ctx->ingress_ifindex, SHARP_CAP_R_NO_TX);
		PSTAT_INC(ps_in, drop_no_tx);
		return rc;
	}
	CAPTURE_SWITCH(ctx, .ifindex = ctx->ingress_ifindex, .out_slot_plus1 = out_slot + 1, .direction = SHARP_CAP_DIR_OUT, .verdict = SHARP_CAP_RELAYED, .hid = hid);
	PSTAT_INC(ps_in, relayed);
	ps_out = bpf_map_lookup_elem(&port_stats, &out_slot);
	if (ps_out) {
		ps_out->tx_packets++;
		ps_out->tx_bytes += len - SHARP_SHIM_LEN;
	}
	return rc;

forged:
	CAPTURE_SWITCH_DROP(ctx, ctx->ingress_ifindex, SHARP_CAP_R_FORGED_SHIM);
	PSTAT_INC(ps_in, drop_shim);
	return XDP_DROP;
}

SEC("xdp")
int sharp_switch(struct xdp_md *ctx)
{
	struct sharp_flow_key key = {};
	struct sharp_port_stats *ps_in, *ps_out;
	struct sharp_rule_action *act;
	struct sharp_rule_stats *rs;
	struct sharp_port_info *pi;
	struct sharp_cursor c;
	struct ethhdr *eth;
	struct iphdr *iph;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 in_slot, rule_id, out_slot, hid, phase;
	__u64 len;
	struct sharp_exact_rule *ex;
	long rc;

	pi = bpf_map_lookup_elem(&ports, &ifindex);
	if (!pi || pi->role == 0)
		return XDP_PASS;	/* not a switch port we manage */
	in_slot = pi->slot;
	ps_in = bpf_map_lookup_elem(&port_stats, &in_slot);

	sharp_cursor_init(&c, ctx);
	len = (__u64)(c.end - c.pos);
	if (ps_in) {
		ps_in->rx_packets++;
		ps_in->rx_bytes += len;
	}

	eth = sharp_parse_eth(&c);
	if (!eth) {
		CAPTURE_SWITCH_DROP(ctx, ifindex, SHARP_CAP_R_MALFORMED);
		PSTAT_INC(ps_in, drop_malformed);
		return XDP_DROP;
	}
	/* Only switches mark frames, and switches never exchange marked frames:
	 * a shim arriving from a host or a VNF is forged handover traffic,
	 * unless it is a routed relay from a VNF port (see shim_in). */
	if (eth->h_proto == bpf_htons(SHARP_ETH_P_SHIM))
		return shim_in(ctx, &c, pi->role, ps_in, len);
	if (eth->h_proto != bpf_htons(ETH_P_IP)) {
		CAPTURE_SWITCH_IN(ctx, ifindex, SHARP_CAP_PASSED, SHARP_CAP_R_NON_IP);
		PSTAT_INC(ps_in, pass_non_ip);
		return XDP_PASS;
	}

	iph = sharp_parse_ipv4(&c);
	if (!iph || sharp_flow_key_ipv4(&c, iph, &key)) {
		CAPTURE_SWITCH_DROP(ctx, ifindex, SHARP_CAP_R_MALFORMED);
		PSTAT_INC(ps_in, drop_malformed);
		return XDP_DROP;
	}

	/* Exact rules always win over wildcard rules. */
	ex = bpf_map_lookup_elem(&rules_exact, &key);
	if (ex) {
		rule_id = ex->rule_id;
		act = &ex->action;
	} else {
		if (wild_lookup(&key, in_slot, &rule_id)) {
			CAPTURE_SWITCH_DROP(ctx, ifindex, SHARP_CAP_R_NO_RULE);
			PSTAT_INC(ps_in, drop_no_rule);
			return XDP_DROP;
		}
		act = bpf_map_lookup_elem(&rule_actions, &rule_id);
		if (!act) {
			CAPTURE_SWITCH_DROP(ctx, ifindex, SHARP_CAP_R_NO_RULE);
			PSTAT_INC(ps_in, drop_no_rule);
			return XDP_DROP;
		}
	}
	/* One snapshot of the action: it may be replaced concurrently. */
	out_slot = act->out_slot;
	hid = act->hid;
	phase = act->phase;

	if (phase == SHARP_PHASE_DIVERT)
		return divert_to_controller(ctx, hid, in_slot);

	if (phase != SHARP_PHASE_NONE) {
		if (phase > SHARP_PHASE_POST || hid < SHARP_HID_MIN || hid > SHARP_HID_MAX) {
			CAPTURE_SWITCH_DROP(ctx, ifindex, SHARP_CAP_R_BAD_ACTION);
			PSTAT_INC(ps_in, drop_bad_action);
			return XDP_DROP;
		}
		if (sharp_push_shim(ctx, phase, hid)) {
			CAPTURE_SWITCH_DROP(ctx, ifindex, SHARP_CAP_R_NO_HEADROOM);
			PSTAT_INC(ps_in, drop_no_headroom);
			return XDP_DROP;
		}
	}

	/* bpf_redirect_map only looks the slot up; count once it accepted it. */
	rc = bpf_redirect_map(&tx_ports, out_slot, 0);
	if (rc != XDP_REDIRECT) {
		CAPTURE_SWITCH_DROP(ctx, ifindex, SHARP_CAP_R_NO_TX);
		PSTAT_INC(ps_in, drop_no_tx);
		return rc;
	}
	if (phase != SHARP_PHASE_NONE) {
		/* Counted only once the frame carries the shim and is on its way:
		 * this is the pre_sent the old instance must reach. */
		struct sharp_ho_stats *hs = bpf_map_lookup_elem(&ho_stats, &hid);

		if (hs) {
			if (phase == SHARP_PHASE_PRE)
				hs->pre_packets++;
			else
				hs->post_packets++;
		}
	}
	rs = bpf_map_lookup_elem(&rule_stats, &rule_id);
	if (rs) {
		rs->packets++;
		rs->bytes += len;
	}
	ps_out = bpf_map_lookup_elem(&port_stats, &out_slot);
	if (ps_out) {
		ps_out->tx_packets++;
		ps_out->tx_bytes += len + (phase != SHARP_PHASE_NONE ? SHARP_SHIM_LEN : 0);
	}
	CAPTURE_SWITCH(ctx, .ifindex = ifindex, .out_slot_plus1 = out_slot + 1, .rule_id = rule_id, .hid = phase ? hid : 0, .direction = SHARP_CAP_DIR_OUT, .verdict = SHARP_CAP_FORWARDED + phase);
	return rc;
}
