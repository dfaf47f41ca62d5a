// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * vnf_counter.bpf.c - example stateful VNF: a per-flow packet counter.
 *
 * Tail-called by the agent (frames arrive with the shim already stripped)
 * or attached directly. Its state - one counter per DIRECTIONAL IPv4
 * 5-tuple - is what a handover must move; the counter is stamped into every
 * sharp_probe, so a receiver can check that stamp == seq on every packet
 * (state continuous, nothing lost, reordered or duplicated).
 *
 * Return codes:
 *   XDP_REDIRECT  to vnf_tx[vnf_ports[ingress_ifindex]] (any EtherType)
 *   XDP_PASS      no vnf_ports entry for the ingress interface
 *   XDP_ABORTED   vnf_ports names a slot with no vnf_tx entry
 */
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHARP_DEFAULT_VNF_PORTS);
	__type(key, __u32);			/* ingress ifindex */
	__type(value, __u32);			/* vnf_tx slot of the other side */
} vnf_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, SHARP_DEFAULT_VNF_PORTS);
	__type(key, __u32);			/* slot */
	__type(value, __u32);			/* ifindex */
} vnf_tx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHARP_DEFAULT_VNF_FLOWS);
	__type(key, struct sharp_flow_key);
	__type(value, struct sharp_vnf_flow_state);
} flow_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_vnf_stats);
} vnf_stats SEC(".maps");

#define STAT_INC(st, field) do { if (st) (st)->field++; } while (0)

/*
 * RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), over the four 16-bit words of a
 * 64-bit field. Words are taken as stored in the packet: one's complement
 * sums do not depend on byte order as long as all terms use the same one.
 * A zero UDP checksum means "none" and stays 0; a computed 0 is sent as
 * 0xffff (RFC 768).
 * Note: assumes a complete checksum in the frame. A frame captured from a
 * veth with tx checksum offload carries only a partial one; lab senders
 * turn offload off (see DESIGN).
 */
static __always_inline void udp_csum_replace64(__sum16 *check, __u64 old_raw, __u64 new_raw)
{
	__u32 sum;
	int i;

	if (*check == 0)
		return;
	sum = (__u16)~*check;
#pragma unroll
	for (i = 0; i < 4; i++) {
		sum += (__u16)~(__u16)(old_raw >> (16 * i));
		sum += (__u16)(new_raw >> (16 * i));
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (__u16)~sum;
	*check = sum ? (__sum16)sum : (__sum16)0xffff;
}

/* Per-flow counter += 1 (atomic); returns the new value, 0 if no state. */
static __always_inline __u64 count_flow(const struct sharp_flow_key *key, __u64 bytes,
					struct sharp_vnf_stats *st)
{
	struct sharp_vnf_flow_state *fs, zero = {};

	fs = bpf_map_lookup_elem(&flow_state, key);
	if (!fs) {
		/* NOEXIST: if another CPU created it first, use theirs. */
		bpf_map_update_elem(&flow_state, key, &zero, BPF_NOEXIST);
		fs = bpf_map_lookup_elem(&flow_state, key);
		if (!fs) {
			STAT_INC(st, table_full);
			return 0;
		}
	}
	__sync_fetch_and_add(&fs->bytes, bytes);
	STAT_INC(st, processed);
	return __sync_fetch_and_add(&fs->packets, 1) + 1;
}

/* Stamp the counter into a probe, if the UDP payload is one. Map helpers
 * do not move packet data, so the parse pointers are still valid. */
static __always_inline void stamp_probe(struct sharp_cursor *c, __u64 counter,
					struct sharp_vnf_stats *st)
{
	struct sharp_probe *probe;
	struct udphdr *udp;
	__u64 old_raw, new_raw;

	udp = sharp_parse_udp(c);
	if (!udp || bpf_ntohs(udp->len) < sizeof(*udp) + sizeof(*probe))
		return;
	probe = sharp_cursor_take(c, sizeof(*probe));
	if (!probe || probe->magic != bpf_htonl(SHARP_PROBE_MAGIC))
		return;

	__builtin_memcpy(&old_raw, &probe->stamp, sizeof(old_raw));
	new_raw = bpf_cpu_to_be64(counter);
	__builtin_memcpy(&probe->stamp, &new_raw, sizeof(new_raw));
	udp_csum_replace64(&udp->check, old_raw, new_raw);
	STAT_INC(st, stamped);
}

SEC("xdp")
int vnf_counter(struct xdp_md *ctx)
{
	struct sharp_flow_key key = {};
	struct sharp_vnf_stats *st;
	struct sharp_cursor c;
	struct ethhdr *eth;
	struct iphdr *iph;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 zero = 0, *out;
	__u64 len, counter;

	st = bpf_map_lookup_elem(&vnf_stats, &zero);
	sharp_cursor_init(&c, ctx);
	len = (__u64)(c.end - c.pos);

	eth = sharp_parse_eth(&c);
	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP)) {
		/* A bump in the wire: forward what it does not understand. */
		STAT_INC(st, non_ipv4);
		goto route;
	}
	iph = sharp_parse_ipv4(&c);
	if (!iph || sharp_flow_key_ipv4(&c, iph, &key)) {
		STAT_INC(st, malformed);
		goto route;
	}
	counter = count_flow(&key, len, st);
	if (counter && iph->protocol == IPPROTO_UDP && !sharp_ipv4_is_later_fragment(iph))
		stamp_probe(&c, counter, st);

route:
	out = bpf_map_lookup_elem(&vnf_ports, &ifindex);
	if (!out) {
		STAT_INC(st, no_route);
		return XDP_PASS;
	}
	return bpf_redirect_map(&vnf_tx, *out, 0);
}
