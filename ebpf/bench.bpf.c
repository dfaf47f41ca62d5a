// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench.bpf.c - the reference points `make bench` measures against.
 *
 * bench_tx:    live-frames generator: sends the test run's frame out (XDP_TX).
 * bench_bare:  the bare XDP redirect the switch is compared with: every
 *              frame to bench_tx_port[0], nothing else.
 * bench_sink:  counts and drops every frame (per CPU, no atomics).
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
