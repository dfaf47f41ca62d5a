// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench.bpf.c - the reference points `make bench` measures against.
 *
 * bench_tx:    live-frames generator: sends the test run's frame out (XDP_TX).
 * bench_bare:  the bare XDP redirect the switch is compared with: every
 *              frame to bench_tx_port[0], nothing else.
 * bench_sink:  counts and drops every frame (per CPU, no atomics).
 *
 * What marking adds to the switch, one step at a time (the marking-cost
 * bench puts each between the bare redirect and the marked switch):
 * bench_push4: bpf_xdp_adjust_head by -4 and the bare redirect, nothing
 *              written (the 4 new bytes are whatever the headroom held).
 * bench_touch: the bare redirect after storing the first 12 bytes back
 *              unchanged: a written frame without a moved head.
 * bench_shim:  the switch's own shim push (sharp_push_shim, PRE, hid 1)
 *              and the bare redirect.
 * bench_pushpop: adjust_head by -4 and back by +4, then the bare redirect:
 *              the helper's cost twice in a plain (not live) test run,
 *              which never resets the frame between repetitions (one push
 *              alone would run out of headroom after 64 of them).
 * bench_calls: 8 calls of a helper that does next to nothing
 *              (bpf_get_prandom_u32), then the bare redirect: what any
 *              helper call costs on this kernel and CPU.
 */
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_tx_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bench_count SEC(".maps");

SEC("xdp")
int bench_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp")
int bench_bare(struct xdp_md *ctx)
{
	return bpf_redirect_map(&bench_tx_port, 0, 0);
}

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&bench_count, &zero);

	if (n)
		*n += 1;
	return XDP_DROP;
}

SEC("xdp")
int bench_push4(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -(int)SHARP_SHIM_LEN))
		return XDP_DROP;
	return bpf_redirect_map(&bench_tx_port, 0, 0);
}

SEC("xdp")
int bench_touch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	volatile __u32 *w = data;

	if (data + 12 > data_end)
		return XDP_DROP;
	w[0] = w[0];
	w[1] = w[1];
	w[2] = w[2];
	return bpf_redirect_map(&bench_tx_port, 0, 0);
}

SEC("xdp")
int bench_shim(struct xdp_md *ctx)
{
	if (sharp_push_shim(ctx, SHARP_PHASE_PRE, SHARP_HID_MIN))
		return XDP_DROP;
	return bpf_redirect_map(&bench_tx_port, 0, 0);
}

SEC("xdp")
int bench_pushpop(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -(int)SHARP_SHIM_LEN))
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, SHARP_SHIM_LEN))
		return XDP_DROP;
	return bpf_redirect_map(&bench_tx_port, 0, 0);
}

SEC("xdp")
int bench_calls(struct xdp_md *ctx)
{
	__u32 x = 0;

#pragma unroll
	for (int i = 0; i < 8; i++)
		x ^= bpf_get_prandom_u32();
	/* used, so the calls stay */
	return bpf_redirect_map(&bench_tx_port, x & 0, 0);
}
