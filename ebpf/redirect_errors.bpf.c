// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * redirect_errors.bpf.c - counts the frames a release's replay loses in the
 * kernel.
 *
 * The release replays held frames with BPF_PROG_TEST_RUN in live-frames mode.
 * When the interface a replayed frame leaves by goes down during the run,
 * xdp_do_redirect_frame() refuses it and test_run frees it: no device
 * counter, no XDP program sees it. The kernel's xdp:xdp_redirect_err
 * tracepoint does (a raw tracepoint: fentry/fexit are not available on every
 * kernel we run on). Counted per (program, ingress interface), so a node
 * reads exactly its own replays' losses; errors of the NAPI path (programs
 * other than the replay) are the veths' rx_dropped already and not counted
 * here twice.
 *
 * TP_PROTO(const struct net_device *dev, const struct bpf_prog *xdp,
 *          const void *tgt, int err, enum bpf_map_type map_type,
 *          u32 map_id, u32 index)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "sharp_abi.h"

char LICENSE[] SEC("license") = "GPL";

/* The kernel's own types, only the members read here: CO-RE relocates the
 * offsets against the running kernel's BTF at load time. */
struct net_device {
	int ifindex;
} __attribute__((preserve_access_index));

struct bpf_prog_aux {
	__u32 id;
} __attribute__((preserve_access_index));

struct bpf_prog {
	struct bpf_prog_aux *aux;
} __attribute__((preserve_access_index));

/* prog ids of the replay programs to count: filled by user space */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} replay_progs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct sharp_refused_key);
	__type(value, __u64);
} replay_refused SEC(".maps");

SEC("raw_tracepoint/xdp_redirect_err")
int count_redirect_err(struct bpf_raw_tracepoint_args *ctx)
{
	const struct net_device *dev = (const struct net_device *)ctx->args[0];
	const struct bpf_prog *prog = (const struct bpf_prog *)ctx->args[1];
	struct sharp_refused_key key = {
		.prog_id = BPF_CORE_READ(prog, aux, id),
		.ifindex = (__u32)BPF_CORE_READ(dev, ifindex),
	};

	if (!bpf_map_lookup_elem(&replay_progs, &key.prog_id))
		return 0;
	__u64 *n = bpf_map_lookup_elem(&replay_refused, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	__u64 one = 1;
	/* a racing first error on another CPU inserted it: add to that one */
	if (bpf_map_update_elem(&replay_refused, &key, &one, BPF_NOEXIST) != 0) {
		n = bpf_map_lookup_elem(&replay_refused, &key);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
	return 0;
}
