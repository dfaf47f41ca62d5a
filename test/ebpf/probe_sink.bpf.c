// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * probe_sink.bpf.c - test fixture: records the probes arriving on an
 * interface, in arrival order, with their first bytes, so a test can check
 * order, sequence numbers, stamps and checksums of every frame.
 *
 * probe_sink (XDP, attached to the receiving interface):
 *   IPv4/UDP frame carrying a sharp_probe, or any frame with a shim
 *     -> sink_log[n] = { len, first SINK_COPY bytes }, n = sink_count[0]++,
 *        XDP_DROP (consumed)
 *   anything else (IPv6 ND, ARP, ...) -> XDP_PASS, not recorded
 * sink_count[0] counts every recorded frame, also those past SINK_MAX
 * (their bytes are not kept).
 */
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SINK_MAX 256
#define SINK_COPY 128

struct sink_rec {
	__u32 len;	/* frame length as received */
	__u32 copied;	/* bytes of data[] that hold the frame */
	__u8 data[SINK_COPY];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SINK_MAX);
	__type(key, __u32);
	__type(value, struct sink_rec);
} sink_log SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

static __always_inline int is_recorded(struct xdp_md *ctx)
{
	struct sharp_cursor c;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct udphdr *udp;
	struct sharp_probe *probe;

	sharp_cursor_init(&c, ctx);
	eth = sharp_parse_eth(&c);
	if (!eth)
		return 0;
	if (eth->h_proto == bpf_htons(SHARP_ETH_P_SHIM))
		return 1;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	iph = sharp_parse_ipv4(&c);
	if (!iph || iph->protocol != IPPROTO_UDP)
		return 0;
	udp = sharp_parse_udp(&c);
	if (!udp)
		return 0;
	probe = sharp_cursor_take(&c, sizeof(*probe));
	return probe && probe->magic == bpf_htonl(SHARP_PROBE_MAGIC);
}

SEC("xdp")
int probe_sink(struct xdp_md *ctx)
{
	struct sink_rec *rec;
	__u32 zero = 0, idx;
	__u64 *cnt, len, n;

	if (!is_recorded(ctx))
		return XDP_PASS;
	cnt = bpf_map_lookup_elem(&sink_count, &zero);
	if (!cnt)
		return XDP_DROP;
	idx = (__u32)__sync_fetch_and_add(cnt, 1);
	rec = bpf_map_lookup_elem(&sink_log, &idx);
	if (!rec)
		return XDP_DROP;
	len = bpf_xdp_get_buff_len(ctx);
	rec->len = (__u32)len;
	n = len > SINK_COPY ? SINK_COPY : len;
	/* one register, masked and range-checked where the helper takes it */
	n &= 0xff;
	if (n < SHARP_ETH_HLEN || n > SINK_COPY || bpf_xdp_load_bytes(ctx, 0, rec->data, n))
		n = 0;
	rec->copied = (__u32)n;
	return XDP_DROP;
}
