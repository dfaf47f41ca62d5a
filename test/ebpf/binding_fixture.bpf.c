// Fixture for the binding's tests: one map of each type the toolkit uses and
// small programs whose verdicts and side effects are easy to assert.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_FIXTURE_TX 0x88B5   /* swap MACs, bounce back (XDP_TX) */
#define ETH_P_FIXTURE_DROP 0x88B6 /* drop */
#define ETH_P_FIXTURE_TAIL 0x88B7 /* tail call prog_array[0] */

struct fixture_event {
	__u64 seq;
	__u32 len;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} fx_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} fx_array SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} fx_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} fx_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u32);
} fx_devmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} fx_progs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} fx_events SEC(".maps");

/* Tunable set from TypeScript before load. */
const volatile __u32 fx_tail_mark = 0xA5;

static __always_inline void bump(void *map, __u32 key)
{
	__u64 *v = bpf_map_lookup_elem(map, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("xdp")
int xdp_fixture(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;

	if ((void *)(eth + 1) > data_end)
		return XDP_ABORTED;
	bump(&fx_array, 0);
	__u64 *pc = bpf_map_lookup_elem(&fx_percpu, &zero);
	if (pc)
		*pc += 1;

	switch (bpf_ntohs(eth->h_proto)) {
	case ETH_P_FIXTURE_TX: {
		unsigned char tmp[ETH_ALEN];
		__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
		return XDP_TX;
	}
	case ETH_P_FIXTURE_DROP:
		return XDP_DROP;
	case ETH_P_FIXTURE_TAIL:
		bpf_tail_call(ctx, &fx_progs, 0);
		return XDP_ABORTED; /* empty slot */
	}
	return XDP_PASS;
}

/* Tail-call target: stamps the tunable into the first payload byte. */
SEC("xdp")
int xdp_tail(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p = data;

	if (p + sizeof(struct ethhdr) + 1 > (unsigned char *)data_end)
		return XDP_ABORTED;
	p[sizeof(struct ethhdr)] = (unsigned char)fx_tail_mark;
	return XDP_PASS;
}

/* Counts frames of the fixture EtherTypes per EtherType low byte, then drops them. */
SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__u16 proto = bpf_ntohs(eth->h_proto);
	if ((proto & 0xFFF0) != 0x88B0)
		return XDP_PASS;
	bump(&fx_array, proto & 0xF);
	return XDP_DROP;
}

/* Emits one ring-buffer event per run, numbered by a counter in fx_hash[0]. */
SEC("xdp")
int xdp_emit(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 init = 0, *seq;
	struct fixture_event *ev;

	seq = bpf_map_lookup_elem(&fx_hash, &key);
	if (!seq) {
		bpf_map_update_elem(&fx_hash, &key, &init, BPF_NOEXIST);
		seq = bpf_map_lookup_elem(&fx_hash, &key);
		if (!seq)
			return XDP_ABORTED;
	}
	ev = bpf_ringbuf_reserve(&fx_events, sizeof(*ev), 0);
	if (!ev)
		return XDP_DROP;
	ev->seq = __sync_fetch_and_add(seq, 1);
	ev->len = ctx->data_end - ctx->data;
	ev->pad = 0;
	bpf_ringbuf_submit(ev, 0);
	return XDP_PASS;
}

/* Redirects every frame through fx_devmap[0]. */
SEC("xdp")
int xdp_redirect_fixture(struct xdp_md *ctx)
{
	return bpf_redirect_map(&fx_devmap, 0, XDP_DROP);
}

/* tc: drops the fixture DROP EtherType, marks everything else. */
SEC("tc")
int tc_fixture(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_FIXTURE_DROP))
		return TC_ACT_SHOT;
	skb->mark = 0x5A;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

/* Sends the test run's frame out unchanged (live frames): raw frames from a host. */
SEC("xdp")
int xdp_tx_raw(struct xdp_md *ctx)
{
	return XDP_TX;
}
