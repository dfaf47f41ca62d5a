/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h - bounds-checked packet parsing for the sharpctl XDP programs.
 *
 * A cursor walks the linear part of the frame; every step checks against
 * data_end before it hands out a pointer, so callers never touch unchecked
 * bytes. All helpers are __always_inline: the verifier must see the bounds
 * checks in the caller's context. Packet pointers (and cursors) are invalid
 * after any helper that changes packet data (adjust_head/tail, store_bytes):
 * re-initialise the cursor then.
 */
#ifndef SHARP_PARSE_H
#define SHARP_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sharp_abi.h"

/* One load the compiler may not merge, repeat or tear. */
#define SHARP_READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))

struct sharp_cursor {
	void *pos;
	void *end;
};

/* First 4 bytes of a TCP or UDP header. */
struct sharp_l4_ports {
	__be16 sport;
	__be16 dport;
};

static __always_inline void sharp_cursor_init(struct sharp_cursor *c, struct xdp_md *ctx)
{
	c->pos = (void *)(long)ctx->data;
	c->end = (void *)(long)ctx->data_end;
}

/* Pointer to the next len bytes and advance, or NULL if the frame is shorter. */
static __always_inline void *sharp_cursor_take(struct sharp_cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end)
		return NULL;
	c->pos = p + len;
	return p;
}

/* Same, without advancing. */
static __always_inline void *sharp_cursor_peek(struct sharp_cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end)
		return NULL;
	return p;
}

static __always_inline struct ethhdr *sharp_parse_eth(struct sharp_cursor *c)
{
	return sharp_cursor_take(c, sizeof(struct ethhdr));
}

/* The 4 shim bytes after an Ethernet header of type SHARP_ETH_P_SHIM. */
static __always_inline struct sharp_shim *sharp_parse_shim(struct sharp_cursor *c)
{
	return sharp_cursor_take(c, sizeof(struct sharp_shim));
}

/*
 * IPv4 header including options: checks version 4, ihl >= 5 and that all
 * ihl * 4 bytes are present; the cursor ends at the L4 header.
 */
static __always_inline struct iphdr *sharp_parse_ipv4(struct sharp_cursor *c)
{
	struct iphdr *iph = sharp_cursor_peek(c, sizeof(struct iphdr));
	__u32 hlen;

	if (!iph || iph->version != 4 || iph->ihl < 5)
		return NULL;
	hlen = iph->ihl * 4;	/* 20..60, bounded by the 4-bit field */
	if ((void *)iph + hlen > c->end)
		return NULL;
	c->pos = (void *)iph + hlen;
	return iph;
}

/* Non-first fragment: no L4 header in this frame. */
static __always_inline int sharp_ipv4_is_later_fragment(const struct iphdr *iph)
{
	return (iph->frag_off & bpf_htons(0x1FFF)) != 0;
}

static __always_inline struct udphdr *sharp_parse_udp(struct sharp_cursor *c)
{
	return sharp_cursor_take(c, sizeof(struct udphdr));
}

static __always_inline struct tcphdr *sharp_parse_tcp(struct sharp_cursor *c)
{
	return sharp_cursor_take(c, sizeof(struct tcphdr));
}

/*
 * Fill a directional flow key from an IPv4 header whose L4 header starts at
 * the cursor (as left by sharp_parse_ipv4). Ports are read for TCP and UDP
 * unless the frame is a non-first fragment; the cursor is NOT advanced, so
 * the caller can parse the L4 header itself. Returns 0, or -1 if a TCP/UDP
 * frame is too short to hold its ports.
 */
static __always_inline int sharp_flow_key_ipv4(struct sharp_cursor *c, const struct iphdr *iph,
					       struct sharp_flow_key *key)
{
	struct sharp_l4_ports *ports;

	key->saddr = iph->saddr;
	key->daddr = iph->daddr;
	key->sport = 0;
	key->dport = 0;
	key->proto = iph->protocol;
	key->pad[0] = 0;
	key->pad[1] = 0;
	key->pad[2] = 0;

	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return 0;
	if (sharp_ipv4_is_later_fragment(iph))
		return 0;
	ports = sharp_cursor_peek(c, sizeof(*ports));
	if (!ports)
		return -1;
	key->sport = ports->sport;
	key->dport = ports->dport;
	return 0;
}

/*
 * Insert shim(phase, hid) after the MAC addresses. The original EtherType
 * stays where it is and becomes the shim's inner_proto:
 *   before: dst src type payload
 *   after:  dst src 0x821C tag type payload
 * Needs 4 bytes of headroom. Every packet pointer is invalid afterwards,
 * also when it fails. Returns 0 or -1.
 */
static __always_inline int sharp_push_shim(struct xdp_md *ctx, __u32 phase, __u32 hid)
{
	struct sharp_eth_shim_hdr *h;
	void *data, *data_end;

	if (bpf_xdp_adjust_head(ctx, -(int)SHARP_SHIM_LEN))
		return -1;
	/* adjust_head invalidated every packet pointer: re-check. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	h = data;
	if ((void *)(h + 1) > data_end)
		return -1;
	/* The 12 MAC bytes move 4 to the front as one 8- and one 4-byte word,
	 * in ascending order (the regions overlap; each word is read before
	 * it is overwritten), then EtherType and tag as one 4-byte word: 3
	 * stores on the marked path (a byte-wise copy is 24 loads and stores). */
	*(__u64 *)data = *(__u64 *)(data + 4);
	*(__u32 *)(data + 8) = *(__u32 *)(data + 12);
	*(__be32 *)&h->proto = bpf_htonl((__u32)SHARP_ETH_P_SHIM << 16 | sharp_tag_make(phase, hid));
	return 0;
}

/*
 * Remove the 4 shim bytes: move the MACs forward over them, then drop the
 * first 4 bytes. The shim's inner_proto becomes the EtherType in place:
 *   before: dst src 0x821C tag type payload
 *   after:  dst src type payload
 * Every packet pointer is invalid afterwards. Returns 0 or < 0.
 */
static __always_inline int sharp_strip_shim(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 macs[12];

	if (data + SHARP_ETH_SHIM_HLEN > data_end)
		return -1;
	__builtin_memcpy(macs, data, sizeof(macs));
	__builtin_memcpy(data + SHARP_SHIM_LEN, macs, sizeof(macs));
	return bpf_xdp_adjust_head(ctx, SHARP_SHIM_LEN);
}

#endif /* SHARP_PARSE_H */
