// A program the verifier must reject: it reads packet bytes without checking
// them against data_end.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_unchecked(struct xdp_md *ctx)
{
	unsigned char *p = (unsigned char *)(long)ctx->data;
	return p[20] == 0x42 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
