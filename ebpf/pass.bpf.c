// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * pass.bpf.c - hands every frame to the kernel stack.
 *
 * Attached to the veth ports of a BMv2 switch. A veth accepts frames that
 * XDP redirects into it (agents, VNFs and traffic generators do) only when
 * its receiving end runs XDP or has GRO on. GRO would do, but libpcap (how
 * BMv2 reads its ports) then sizes its ring for 64 KiB frames: 32 slots,
 * and a released hold ring overflows it. With this program GRO stays off.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
