// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * trafficgen.bpf.c - test traffic at any rate without a socket in the loop.
 *
 * tg_tx: run through BPF_PROG_TEST_RUN with live frames (repeat = n) on a
 *   host's interface. It turns the template probe frame into the next probe
 *   (flow round robin, per-flow sequence number, send time) and returns
 *   XDP_TX, so the frame leaves through the interface into the network.
 *   The template's UDP checksum must be 0 (IPv4 allows it), so rewriting the
 *   source port and probe fields needs no checksum update.
 * tg_sink: attached (XDP) to the receiving host's interface. Every probe
 *   is checked here, against its flow's tg_flow_checks entry (delivered,
 *   reordered, duplicated, stamp != seq), so the checks keep up at line
 *   rate; one probe in tg_sink_config.event_every also becomes a tg_events
 *   record (times, for latency). Probes are consumed; anything else goes to
 *   the stack.
 */
#include "parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_tg_config);
} tg_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_TG_MAX_FLOWS);
	__type(key, __u32);			/* flow */
	__type(value, __u64);			/* last sequence number sent */
} tg_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SHARP_TG_EVENTS_BYTES);
} tg_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_tg_sink_stats);
} tg_sink_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_tg_sink_config);
} tg_sink_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_TG_CHECK_FLOWS);	/* set to the flows a sink expects before load */
	__type(key, __u32);			/* flow */
	__type(value, struct sharp_tg_flow_check);
} tg_flow_checks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHARP_TG_CHECK_FLOWS * SHARP_TG_MIN_WINDOW);	/* set to flows x seq_window before load */
	__type(key, __u32);
	__type(value, __u32);
} tg_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sharp_tg_check_stats);
} tg_check_stats SEC(".maps");

/* Offsets in a probe frame without IP options: eth 14 + ip 20 + udp 8. */
#define PROBE_OFF (SHARP_ETH_HLEN + 20 + 8)
#define SPORT_OFF (SHARP_ETH_HLEN + 20)

SEC("xdp")
int tg_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sharp_tg_config *cfg;
	struct sharp_probe *probe;
	__u32 zero = 0, flow;
	__u64 n, *seq;

	if (data + PROBE_OFF + sizeof(*probe) > data_end)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&tg_config, &zero);
	if (!cfg || cfg->flows == 0 || cfg->flows > SHARP_TG_MAX_FLOWS)
		return XDP_ABORTED;
	n = __sync_fetch_and_add(&cfg->next, 1);
	flow = (__u32)(n % cfg->flows);
	seq = bpf_map_lookup_elem(&tg_seq, &flow);
	if (!seq)
		return XDP_ABORTED;
	*(__be16 *)(data + SPORT_OFF) = bpf_htons(cfg->base_sport + flow);
	probe = data + PROBE_OFF;
	probe->magic = bpf_htonl(SHARP_PROBE_MAGIC);
	probe->flow = bpf_htonl(flow);
	probe->seq = bpf_cpu_to_be64(__sync_fetch_and_add(seq, 1) + 1);
	probe->stamp = 0;
	probe->tx_ns = bpf_cpu_to_be64(bpf_ktime_get_ns());
	return XDP_TX;
}

/*
 * One probe against its flow's record: the same rules as a set of seen
 * sequence numbers, with the set bounded to the last seq_window per flow.
 * The window slot is looked up before the lock (no helper calls under it).
 */
static __always_inline void check_probe(const struct sharp_tg_sink_config *cfg, __u32 flow, __u64 seq, __u64 stamp)
{
	struct sharp_tg_flow_check *c = bpf_map_lookup_elem(&tg_flow_checks, &flow);
	__u32 zero = 0, window = cfg ? cfg->seq_window : 0, key;
	struct sharp_tg_check_stats *cs;
	__u32 *seen = NULL;

	if (c && window && !(window & (window - 1))) {
		key = flow * window + (__u32)(seq & (window - 1));
		seen = bpf_map_lookup_elem(&tg_seen, &key);
	}
	if (!c || !seen) {
		cs = bpf_map_lookup_elem(&tg_check_stats, &zero);
		if (cs)
			cs->unchecked++;
		return;
	}
	bpf_spin_lock(&c->lock);
	if (stamp != seq)
		c->stamp_mismatches++;
	if (seq + window <= c->max_seq) {
		c->beyond_window++;
		c->delivered++;
		c->reordered++;
	} else if (*seen == (__u32)seq && seq != 0) {
		c->duplicated++;
	} else {
		*seen = (__u32)seq;
		c->delivered++;
		if (seq < c->max_seq)
			c->reordered++;
		else
			c->max_seq = seq;
	}
	bpf_spin_unlock(&c->lock);
}

SEC("xdp")
int tg_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sharp_tg_sink_stats *st;
	struct sharp_tg_sink_config *cfg;
	struct sharp_tg_event *ev;
	struct sharp_probe *probe;
	struct ethhdr *eth = data;
	__u32 zero = 0, flow, every;
	__u64 seq, stamp;

	st = bpf_map_lookup_elem(&tg_sink_stats, &zero);
	if (!st)
		return XDP_PASS;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(SHARP_ETH_P_SHIM)) {
		st->marked++;
		return XDP_DROP;
	}
	probe = data + PROBE_OFF;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || (void *)(probe + 1) > data_end ||
	    probe->magic != bpf_htonl(SHARP_PROBE_MAGIC)) {
		st->other++;
		return XDP_PASS;
	}
	flow = bpf_ntohl(probe->flow);
	seq = bpf_be64_to_cpu(probe->seq);
	stamp = bpf_be64_to_cpu(probe->stamp);
	cfg = bpf_map_lookup_elem(&tg_sink_config, &zero);
	check_probe(cfg, flow, seq, stamp);
	st->probes++;
	every = cfg ? cfg->event_every : 1;
	if (every == 0 || seq % every != 0)
		return XDP_DROP;
	ev = bpf_ringbuf_reserve(&tg_events, sizeof(*ev), 0);
	if (!ev) {
		st->lost_events++;
		return XDP_DROP;
	}
	ev->flow = flow;
	ev->len = (__u32)(data_end - data);
	ev->seq = seq;
	ev->stamp = stamp;
	ev->tx_ns = bpf_be64_to_cpu(probe->tx_ns);
	ev->rx_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(ev, 0);
	return XDP_DROP;
}
