/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * capture.h - the packet-capture hook of the switch and the agent.
 *
 * tcpdump sees no frame that XDP redirects between veths, so the programs
 * report what they do themselves: at each decision a program calls
 * SHARP_CAPTURE(ctx, ...) with what it decided, and, when user space has
 * switched capture on (capture_cfg[0].enabled), the frame's first snaplen
 * bytes and a struct sharp_capture_hdr go into the capture_ring ring buffer.
 *
 * Off: one inlined ARRAY lookup and one branch per frame (every frame takes
 * exactly one decision). On: the filters run first, in the kernel; a frame
 * they leave out costs the filter and one per-CPU increment. The ring never
 * pushes back: no room is a counted loss of the record (ring_full), and the
 * frame's verdict is the same as with capture off.
 *
 * Compiled with -DSHARP_CAPTURE_DISABLED the hook is nothing at all (the
 * bench compares both builds to show that "off" costs what nothing costs).
 *
 * Layouts and constants: sharp_abi.h, section "Packet capture".
 */
#ifndef SHARP_CAPTURE_H
#define SHARP_CAPTURE_H

#include "parse.h"

/* What a program decided about the frame in ctx (fields as in sharp_capture_hdr). */
struct sharp_capture_point {
	__u32 ifindex;
	__u32 out_slot_plus1;
	__u32 rule_id;
	__u32 pos;
	__u16 hid;
	__u16 shim_tag;		/* != 0: the frame lost this shim; put it back at offset 12 */
	__u8 program;
	__u8 direction;
	__u8 verdict;
	__u8 reason;
	__u8 ring;
};

#ifdef SHARP_CAPTURE_DISABLED

#define SHARP_CAPTURE(ctx, ...) do { } while (0)

#else

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_capture_config);
} capture_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SHARP_CAPTURE_RING_BYTES);
} capture_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_capture_stats);
} capture_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_capture_record);
} capture_scratch SEC(".maps");

/* 0 = any; a key field set must equal the frame's. */
static __always_inline int sharp_capture_flow_eq(const struct sharp_flow_key *f, __be32 sa, __be32 da, __be16 sp, __be16 dp, __u8 proto)
{
	return (!f->saddr || f->saddr == sa) && (!f->daddr || f->daddr == da) && (!f->sport || f->sport == sp) &&
	       (!f->dport || f->dport == dp) && (!f->proto || f->proto == proto);
}

/* The frame's IPv4 5-tuple (inside a shim too) matches the filter, either way round. */
static __always_inline int sharp_capture_flow_match(struct xdp_md *ctx, const struct sharp_flow_key *f)
{
	struct sharp_flow_key k = {};
	struct sharp_cursor c;
	struct ethhdr *eth;
	struct sharp_shim *shim;
	struct iphdr *iph;
	__be16 proto;

	sharp_cursor_init(&c, ctx);
	eth = sharp_parse_eth(&c);
	if (!eth)
		return 0;
	proto = eth->h_proto;
	if (proto == bpf_htons(SHARP_ETH_P_SHIM)) {
		shim = sharp_parse_shim(&c);
		if (!shim)
			return 0;
		proto = shim->inner_proto;
	}
	if (proto != bpf_htons(ETH_P_IP))
		return 0;
	iph = sharp_parse_ipv4(&c);
	if (!iph || sharp_flow_key_ipv4(&c, iph, &k))
		return 0;
	return sharp_capture_flow_eq(f, k.saddr, k.daddr, k.sport, k.dport, k.proto) ||
	       sharp_capture_flow_eq(f, k.daddr, k.saddr, k.dport, k.sport, k.proto);
}

static __always_inline int sharp_capture_wanted(struct xdp_md *ctx, const struct sharp_capture_config *cfg,
						const struct sharp_capture_point *p)
{
	__u32 f = cfg->filters;

	if ((f & SHARP_CAP_F_PORT) && p->ifindex != cfg->port_ifindex && (!p->out_slot_plus1 || p->out_slot_plus1 != cfg->port_slot))
		return 0;
	if ((f & SHARP_CAP_F_DIRECTION) && p->direction != cfg->direction)
		return 0;
	if ((f & SHARP_CAP_F_RULE) && p->rule_id != cfg->rule_id)
		return 0;
	if ((f & SHARP_CAP_F_HID) && p->hid != cfg->hid)
		return 0;
	if ((f & SHARP_CAP_F_FLOW) && !sharp_capture_flow_match(ctx, &cfg->flow))
		return 0;
	return 1;
}

/* The slow half: only ever reached with capture on. */
static __always_inline void sharp_capture_record(struct xdp_md *ctx, const struct sharp_capture_config *cfg,
						 const struct sharp_capture_point *p)
{
	struct sharp_capture_stats *st;
	struct sharp_capture_record *rec;
	__u32 zero = 0;
	__u64 len, snap, cap, rest, head = 0;

	st = bpf_map_lookup_elem(&capture_stats, &zero);
	if (!sharp_capture_wanted(ctx, cfg, p)) {
		if (st)
			st->filtered++;
		return;
	}
	rec = bpf_map_lookup_elem(&capture_scratch, &zero);
	if (!rec)
		return;
	len = bpf_xdp_get_buff_len(ctx);
	snap = cfg->snaplen;
	if (snap > SHARP_CAPTURE_MAX_SNAP)
		snap = SHARP_CAPTURE_MAX_SNAP;
	rest = len;
	if (p->shim_tag) {
		/* dst src | 0x821C tag | the frame's own EtherType onwards */
		if (len < SHARP_ETH_HLEN || snap < SHARP_ETH_SHIM_HLEN)
			return;
		if (bpf_xdp_load_bytes(ctx, 0, rec->data, 12))
			return;
		rec->data[12] = SHARP_ETH_P_SHIM >> 8;
		rec->data[13] = SHARP_ETH_P_SHIM & 0xff;
		rec->data[14] = p->shim_tag >> 8;
		rec->data[15] = p->shim_tag & 0xff;
		head = SHARP_SHIM_LEN;
		len += SHARP_SHIM_LEN;
		rest -= 12;
	}
	cap = len < snap ? len : snap;
	/* Verifier (clang 14): the length masked and range-checked in one register. */
	if (head) {
		cap -= 16;	/* what follows the 16 bytes written above */
		cap &= 0x7ff;
		if (cap > rest || cap > SHARP_CAPTURE_MAX_SNAP - 16)
			return;
		if (cap && bpf_xdp_load_bytes(ctx, 12, rec->data + 16, cap))
			return;
		cap += 16;
	} else {
		cap &= 0x7ff;
		if (cap > SHARP_CAPTURE_MAX_SNAP)
			return;
		if (cap && bpf_xdp_load_bytes(ctx, 0, rec->data, cap))
			return;
	}
	rec->hdr.ts_ns = bpf_ktime_get_ns();
	rec->hdr.ifindex = p->ifindex;
	rec->hdr.out_slot_plus1 = p->out_slot_plus1;
	rec->hdr.rule_id = p->rule_id;
	rec->hdr.pos = p->pos;
	rec->hdr.orig_len = len;
	rec->hdr.cap_len = cap;
	rec->hdr.hid = p->hid;
	rec->hdr.program = p->program;
	rec->hdr.direction = p->direction;
	rec->hdr.verdict = p->verdict;
	rec->hdr.reason = p->reason;
	rec->hdr.ring = p->ring;
	rec->hdr.pad = 0;
	cap &= 0x7ff;
	if (cap > SHARP_CAPTURE_MAX_SNAP)
		return;
	if (bpf_ringbuf_output(&capture_ring, rec, sizeof(rec->hdr) + cap, 0)) {
		if (st)
			st->ring_full++;
		return;
	}
	if (st)
		st->captured++;
}

static __always_inline void sharp_capture(struct xdp_md *ctx, struct sharp_capture_point p)
{
	__u32 zero = 0;
	struct sharp_capture_config *cfg = bpf_map_lookup_elem(&capture_cfg, &zero);

	if (cfg && __builtin_expect(cfg->enabled, 0))
		sharp_capture_record(ctx, cfg, &p);
}

/* One line at a decision: SHARP_CAPTURE(ctx, .verdict = ..., .ifindex = ...). */
#define SHARP_CAPTURE(ctx, ...) sharp_capture(ctx, (struct sharp_capture_point){ __VA_ARGS__ })

#endif /* SHARP_CAPTURE_DISABLED */

/* The two programs' call sites, so each stays one short line. */
#define CAPTURE_SWITCH(ctx, ...) SHARP_CAPTURE(ctx, .program = SHARP_CAP_PROG_SWITCH, __VA_ARGS__)
#define CAPTURE_SWITCH_IN(ctx, in, v, why) CAPTURE_SWITCH(ctx, .ifindex = (in), .direction = SHARP_CAP_DIR_IN, .verdict = (v), .reason = (why))
#define CAPTURE_SWITCH_DROP(ctx, in, why) CAPTURE_SWITCH_IN(ctx, in, SHARP_CAP_DROPPED, why)
#define CAPTURE_AGENT(ctx, ...) SHARP_CAPTURE(ctx, .program = SHARP_CAP_PROG_AGENT, __VA_ARGS__)
#define CAPTURE_AGENT_IN(ctx, v, why, tag, h) CAPTURE_AGENT(ctx, .ifindex = ctx->ingress_ifindex, .direction = SHARP_CAP_DIR_IN, .verdict = (v), .reason = (why), .shim_tag = (tag), .hid = (h))

#endif /* SHARP_CAPTURE_H */
