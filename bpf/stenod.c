//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * stenod.c: the XDP program in front of stenod's AF_XDP sockets, and the
 * socket filter of its AF_PACKET rings (stenod_socket, at the end).
 *
 * For every frame it
 *   1. parses the flow key (docs/flow-key.md, the same rules as flow.Parse),
 *   2. counts it in the per-CPU stats,
 *   3. drops it if a drop rule in config matches (before capture),
 *   4. enters it in the flows LRU table, announcing a new flow on the
 *      new_flows ring buffer,
 *   5. in observe mode passes it to the stack; otherwise drops it if it is
 *      past its connection's cutoff (cut(), below), or else puts struct
 *      packet_meta {flow id, TAI timestamp} in front of the packet and
 *      redirects it to the AF_XDP socket of its RX queue (XDP_PASS if that
 *      queue has none).
 *
 * Minimum kernel: 6.1 (bpf_ktime_get_tai_ns, in XDP and socket filters). Also used: multi-buffer XDP
 * ("xdp.frags"), bpf_xdp_load_bytes and bpf_xdp_get_buff_len (5.18), ring
 * buffers (5.8), bounded loops (5.3).
 *
 * Multi-buffer frames: the parser reads headers directly from the first
 * buffer's linear data when they lie there (always, in practice: a first
 * buffer holds at least ~3.5 KiB) and falls back to bpf_xdp_load_bytes for a
 * header that crosses into or lies in a fragment. So the key is derived from
 * the whole frame, exactly as flow.Parse derives it from the captured bytes.
 * Lengths (bytes counters, snap length) are bpf_xdp_get_buff_len: the whole
 * frame.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "stenod.h"

char __license[] SEC("license") = "Dual MIT/GPL";

/* ---- maps (docs/bpf.md) ---- */

/* The flow table: key -> {id, packets, bytes, first/last seen}. Pinned as "flows". */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144); /* ProgramOptions.MaxFlows */
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

/* struct new_flow records, one per flow entering flows. Pinned as "new_flows". */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* bytes; ProgramOptions.RingBufSize */
} new_flows SEC(".maps");

/* Counters indexed by enum stat, per CPU. Pinned as "stats". */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* The one struct config_value, written by Go. Pinned as "config". */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config_value);
} config SEC(".maps");

/* AF_XDP sockets by RX queue index, filled by Go. Pinned as "xsks". */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256); /* ProgramOptions.MaxQueues */
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Per-CPU flow id sequence (see FLOW_ID_CPU_BITS). Not pinned. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} flow_seq SEC(".maps");

/* The connection table of the cutoff: canonical key -> struct conn_value.
 * Pinned as "conns"; user space sets CONN_SUSPENDED in it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144); /* ProgramOptions.MaxFlows */
	__type(key, struct flow_key);
	__type(value, struct conn_value);
} conns SEC(".maps");

/* struct cut_conn records, one per connection when it first has a packet
 * cut: which entries of conns user space has to poll. Pinned as "cut_conns". */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10); /* bytes: 4096 records */
} cut_conns SEC(".maps");

/* Packets and bytes cut per cutoff rule (index MAX_CUTOFF_MATCHES: the
 * default limit), per CPU. Pinned as "cut_stats". */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_CUTOFF_MATCHES + 1);
	__type(key, __u32);
	__type(value, struct cut_count);
} cut_stats SEC(".maps");

/*
 * Put the types no map refers to into BTF, for bpf2go -type: one unused
 * global whose type mentions them all (it lands in .bss, 8 bytes).
 */
struct types_for_go {
	struct new_flow new_flow;
	struct packet_meta packet_meta;
	enum stat stat;
	enum mode mode;
	enum flow_flag flow_flag;
	enum drop_rule_flag drop_rule_flag;
	struct cut_conn cut_conn;
	enum conn_flag conn_flag;
};
const struct types_for_go *unused_types_for_go __attribute__((unused));

/* ---- helpers ---- */

/* Direct packet access is used below this offset; the verifier needs a bound. */
#define MAX_DIRECT_OFF 0xff00

static __always_inline void count(__u32 idx, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &idx);

	if (c)
		*c += n;
}

/*
 * Copy len bytes at offset off of the frame to dst. Returns 0, or non-zero
 * when the frame has fewer than off + len bytes. len must be a constant;
 * dst must be 4-byte aligned when len >= 4.
 */
static __always_inline int load_xdp(struct xdp_md *ctx, __u32 off, void *dst, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (off <= MAX_DIRECT_OFF) {
		void *p = data + off;

		if (p + len <= data_end) {
			/* Packet headers are only 2-byte aligned (IPv4 at 14), but
			 * XDP allows unaligned loads where the CPU does (x86, arm64);
			 * promising 4 gets word loads instead of byte loads. */
			__builtin_memcpy(dst, __builtin_assume_aligned(p, 4), len);
			return 0;
		}
	}
	/* Beyond the first buffer (multi-buffer frames) or truncated. */
	return bpf_xdp_load_bytes(ctx, off, dst, len);
}

static __always_inline int load_skb(struct __sk_buff *ctx, __u32 off, void *dst, __u32 len)
{
	/* A socket filter has no direct packet access. */
	return bpf_skb_load_bytes(ctx, off, dst, len);
}

/* The parser, once per program type (bpf/parse.h). */
#define PARSE_CTX struct xdp_md
#define PARSE_FN(name) name##_xdp
#define PARSE_LOAD load_xdp
#define PARSE_LOAD_BYTES bpf_xdp_load_bytes
#include "parse.h"
#undef PARSE_CTX
#undef PARSE_FN
#undef PARSE_LOAD
#undef PARSE_LOAD_BYTES

#define PARSE_CTX struct __sk_buff
#define PARSE_FN(name) name##_skb
#define PARSE_LOAD load_skb
#define PARSE_LOAD_BYTES bpf_skb_load_bytes
#include "parse.h"
#undef PARSE_CTX
#undef PARSE_FN
#undef PARSE_LOAD
#undef PARSE_LOAD_BYTES

/* Count the parse outcome of key. */
static __always_inline void count_parse(const struct flow_key *key)
{
	if (key->flags & FLOW_IPV4)
		count(STAT_PARSE_IPV4, 1);
	else if (key->flags & FLOW_IPV6)
		count(STAT_PARSE_IPV6, 1);
	else
		count(STAT_PARSE_NOT_IP, 1);
	if (key->flags & FLOW_FRAGMENT)
		count(STAT_PARSE_FRAGMENT, 1);
	if (key->flags & FLOW_VLAN0)
		count(STAT_PARSE_VLAN, 1);
	if (key->flags & FLOW_MPLS)
		count(STAT_PARSE_MPLS, 1);
}

#define KEY_WORDS (sizeof(struct flow_key) / sizeof(__u32))

/* Whether (k & rule->mask) == rule->value. */
static __always_inline int rule_matches(const struct drop_rule *rule, const __u32 *k)
{
	const __u32 *v = (const __u32 *)&rule->value;
	const __u32 *m = (const __u32 *)&rule->mask;
	__u32 diff = 0;

#pragma unroll
	for (int i = 0; i < KEY_WORDS; i++)
		diff |= (k[i] & m[i]) ^ v[i];
	return diff == 0;
}

/* Whether a drop rule of cfg matches key. */
static __always_inline int drop_by_rule(const struct config_value *cfg, const struct flow_key *key)
{
	struct flow_key swapped = *key;
	__u32 n = cfg->n_rules;

	swapped.sport = key->dport;
	swapped.dport = key->sport;
	for (__u32 i = 0; i < MAX_DROP_RULES; i++) {
		const struct drop_rule *rule = &cfg->rules[i];

		if (i >= n)
			break;
		if (rule_matches(rule, (const __u32 *)key))
			return 1;
		if ((rule->flags & RULE_EITHER_PORT) && rule_matches(rule, (const __u32 *)&swapped))
			return 1;
	}
	return 0;
}

static __always_inline __u64 next_flow_id(void)
{
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&flow_seq, &zero);

	if (!seq)
		return 0;
	*seq += 1;
	return (*seq << FLOW_ID_CPU_BITS) |
	       (bpf_get_smp_processor_id() & ((1 << FLOW_ID_CPU_BITS) - 1));
}

/* Account the packet to its flow; returns the flow id, or 0 if the flow
 * could not be entered in the table. */
static __always_inline __u64 account(const struct flow_key *key, __u64 len, __u64 now, __u32 tcp_flags)
{
	struct flow_value *v = bpf_map_lookup_elem(&flows, key);
	struct flow_value nv;
	struct new_flow *rec;
	long err;

	if (v)
		goto update;

	nv.flow_id = next_flow_id();
	nv.packets = 1;
	nv.bytes = len;
	nv.first_seen_ns = now;
	nv.last_seen_ns = now;
	nv.tcp_flags = tcp_flags;
	nv._pad = 0;
	err = bpf_map_update_elem(&flows, key, &nv, BPF_NOEXIST);
	if (err) {
		/* Another CPU entered the flow first: count on its entry. */
		v = bpf_map_lookup_elem(&flows, key);
		if (v)
			goto update;
		count(STAT_FLOW_INSERT_FAILED, 1);
		return 0;
	}
	count(STAT_NEW_FLOWS, 1);

	rec = bpf_ringbuf_reserve(&new_flows, sizeof(*rec), 0);
	if (!rec) {
		count(STAT_RINGBUF_FULL, 1);
		return nv.flow_id;
	}
	rec->flow_id = nv.flow_id;
	rec->first_seen_ns = now;
	__builtin_memcpy(&rec->key, key, sizeof(*key));
	/* No wake-up: the capture loops drain the ring as they go (before
	 * keying a batch, after a ring block). Woken for each record, a
	 * reader thread switched in for every new flow. */
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	return nv.flow_id;

update:
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
	v->last_seen_ns = now;
	/* Most packets bring no new flag: the atomic OR only when one does. */
	if ((v->tcp_flags & tcp_flags) != tcp_flags)
		__sync_fetch_and_or(&v->tcp_flags, tcp_flags);
	return v->flow_id;
}

/* ---- the cutoff (docs/bpf.md, "Cutoff") ---- */

#define TCP_FIN_SYN_RST 0x07

/*
 * The canonical key of key's connection, in ck: FLOW_FRAGMENT cleared (a
 * datagram's first fragment belongs with the unfragmented packets), ICMP
 * type and code zeroed (all ICMP between two hosts is one connection), and
 * the endpoints ordered so that (src, sport) <= (dst, dport): addresses
 * compared as bytes, then ports as numbers. Returns 1 if the endpoints were
 * swapped (the packet goes in the reverse direction), else 0. xdp.ConnKey
 * is the Go twin; a test requires the two to agree.
 */
static __always_inline __u32 conn_key(const struct flow_key *key, struct flow_key *ck)
{
	const __u32 *s = (const __u32 *)key->src;
	const __u32 *d = (const __u32 *)key->dst;
	__u32 swap = 0, decided = 0;
	__u16 port;

	*ck = *key;
	ck->flags &= ~FLOW_FRAGMENT;
	if (ck->flags & FLOW_ICMP) {
		ck->sport = 0;
		ck->dport = 0;
	}
	/* Big-endian words compare like the bytes they hold. */
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 a = bpf_ntohl(s[i]), b = bpf_ntohl(d[i]);

		if (!decided && a != b) {
			swap = a > b;
			decided = 1;
		}
	}
	if (!decided)
		swap = ck->sport > ck->dport;
	if (swap) {
		__builtin_memcpy(ck->src, key->dst, sizeof(ck->src));
		__builtin_memcpy(ck->dst, key->src, sizeof(ck->dst));
		port = ck->sport;
		ck->sport = ck->dport;
		ck->dport = port;
	}
	return swap;
}

/*
 * Whether rule matches key or key reversed (the other direction of its
 * connection), with RULE_EITHER_PORT also with their ports swapped. A
 * global function: checked once by the verifier, and its key copy is not
 * on its callers' stack.
 */
__noinline int match_either(const struct drop_rule *rule, const struct flow_key *key)
{
	struct flow_key k __attribute__((aligned(8)));
	__u16 port;

	if (!rule || !key)
		return 0;
	/* o bit 1: key reversed; bit 0: ports swapped (RULE_EITHER_PORT).
	 * Not unrolled: unrolled, the compiler keeps the rule's words for all
	 * four in registers and spills them. */
#pragma clang loop unroll(disable)
	for (int o = 0; o < 4; o++) {
		if ((o & 1) && !(rule->flags & RULE_EITHER_PORT))
			continue;
		k = *key;
		if (o & 2) {
			__builtin_memcpy(k.src, key->dst, sizeof(k.src));
			__builtin_memcpy(k.dst, key->src, sizeof(k.dst));
		}
		if (((o >> 1) ^ o) & 1) {
			port = k.sport;
			k.sport = k.dport;
			k.dport = port;
		}
		if (rule_matches(rule, (const __u32 *)&k))
			return 1;
	}
	return 0;
}

/* The index in c->matches of the first match that key, or key reversed,
 * matches, or -1. */
static __always_inline int first_cutoff_match(const struct cutoff_config *c, const struct flow_key *key)
{
	for (__u32 i = 0; i < MAX_CUTOFF_MATCHES; i++) {
		if (i >= c->n_matches)
			break;
		if (match_either(&c->matches[i].match, key))
			return i;
	}
	return -1;
}

/* Limit l with jitter p percent: l + random % (l*p/100 + 1), so that
 * l <= limit <= l*(1+p/100); l*p/100 computed without overflow. 0 stays 0
 * (no limit). */
static __always_inline __u64 jitter(__u64 l, __u32 p)
{
	__u64 span;

	if (!l || !p)
		return l;
	span = l / 100 * p + l % 100 * p / 100;
	return l + bpf_get_prandom_u32() % (span + 1);
}

/*
 * Enter the connection ck, whose first packet (len bytes) has the key key,
 * in conns with its limits. Returns 0 when entered, else non-zero (another
 * CPU entered it first, or the table refused it). A global function: the
 * verifier checks the rule loop once, not in every state of its callers,
 * and its stack (the new entry) is not added to theirs; it only runs for a
 * connection's first packet.
 */
__noinline int enter_conn(const struct cutoff_config *c, const struct flow_key *key,
			  const struct flow_key *ck, __u64 len)
{
	struct conn_value nv = {};
	int m;

	if (!c || !key || !ck)
		return -1;
	m = first_cutoff_match(c, key);
	nv.packets = 1;
	nv.bytes = len;
	nv.rule = -1;
	nv.limit_bytes = c->default_bytes;
	nv.limit_packets = c->default_packets;
	if (m >= 0 && m < MAX_CUTOFF_MATCHES) {
		nv.rule = c->matches[m].rule;
		nv.limit_bytes = c->matches[m].limit_bytes;
		nv.limit_packets = c->matches[m].limit_packets;
	}
	nv.limit_bytes = jitter(nv.limit_bytes, c->jitter_percent);
	nv.limit_packets = jitter(nv.limit_packets, c->jitter_percent);
	return bpf_map_update_elem(&conns, ck, &nv, BPF_NOEXIST);
}

/*
 * The cutoff decision, one for both programs. Counts the packet (len: the
 * wire frame's length) to its connection in conns and returns 1 if it is
 * not to be stored: when, before this packet, the connection has reached
 * its byte or its packet limit, unless the connection is suspended or the
 * packet is a TCP SYN, FIN or RST. So a connection keeps its first packets
 * up to and including the one that crosses a limit, and every SYN, FIN and
 * RST: its start and its end stay visible. Limits are fixed when the
 * connection enters the table, from the first rule that matches its first
 * packet, else the default. Each cut is counted per direction in the
 * connection, per rule in cut_stats and in stats; the connection's first
 * cut is announced on cut_conns.
 */
static __always_inline int cut(const struct cutoff_config *c, const struct flow_key *key,
			       __u64 len, __u32 tcp_flags, __u64 now)
{
	struct flow_key ck __attribute__((aligned(8)));
	struct conn_value *v;
	struct cut_count *cc;
	struct cut_conn *rec;
	__u64 packets, bytes;
	__u32 dir, idx;

	dir = conn_key(key, &ck);
	v = bpf_map_lookup_elem(&conns, &ck);
	if (!v) {
		/* Counted with nothing before it, a first packet is never cut. */
		if (!enter_conn(c, key, &ck, len))
			return 0;
		/* Another CPU entered it first: count on its entry. */
		v = bpf_map_lookup_elem(&conns, &ck);
		if (!v)
			return 0;
	}
	/* The counts before this packet decide, fetched as it is added. */
	packets = __sync_fetch_and_add(&v->packets, 1);
	bytes = __sync_fetch_and_add(&v->bytes, len);
	if ((v->flags & CONN_SUSPENDED) || (tcp_flags & TCP_FIN_SYN_RST))
		return 0;
	if (!(v->limit_bytes && bytes >= v->limit_bytes) &&
	    !(v->limit_packets && packets >= v->limit_packets))
		return 0;

	dir &= 1;
	__sync_fetch_and_add(&v->cut_packets[dir], 1);
	__sync_fetch_and_add(&v->cut_bytes[dir], len);
	v->last_cut_ns = now;
	count(STAT_CUT_PACKETS, 1);
	count(STAT_CUT_BYTES, len);
	idx = v->rule < 0 ? MAX_CUTOFF_MATCHES : (__u32)v->rule;
	cc = bpf_map_lookup_elem(&cut_stats, &idx);
	if (cc) {
		cc->packets += 1;
		cc->bytes += len;
	}
	/* One record per connection: the CPU that sets CONN_REPORTED writes it. */
	if (!(v->flags & CONN_REPORTED) &&
	    !(__sync_fetch_and_or(&v->flags, CONN_REPORTED) & CONN_REPORTED)) {
		rec = bpf_ringbuf_reserve(&cut_conns, sizeof(*rec), 0);
		if (!rec) {
			count(STAT_CUT_RINGBUF_FULL, 1);
			return 1;
		}
		__builtin_memcpy(&rec->key, &ck, sizeof(ck));
		rec->ts_ns = now;
		/* No wake-up: the reporter reads the ring once a second. */
		bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
	}
	return 1;
}

/* Put struct packet_meta in front of the packet. Returns 0 on success. */
static __always_inline int write_meta(struct xdp_md *ctx, __u64 flow_id, __u64 now)
{
	struct packet_meta *meta;
	void *data;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*meta)))
		return -1;
	/* adjust_meta invalidated every packet pointer: reload. */
	meta = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(meta + 1) > data)
		return -1;
	meta->flow_id = flow_id;
	meta->ts_ns = now;
	return 0;
}

SEC("xdp.frags")
int stenod_xdp(struct xdp_md *ctx)
{
	/* aligned(8): cleared with 8-byte stores */
	struct flow_key key __attribute__((aligned(8))) = {};
	__u64 now = bpf_ktime_get_tai_ns();
	__u64 len = bpf_xdp_get_buff_len(ctx);
	const struct config_value *cfg;
	int action = XDP_PASS;
	__u32 zero = 0;
	__u32 tcp_flags;
	__u64 flow_id;

	count(STAT_PACKETS, 1);
	count(STAT_BYTES, len);

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg) /* cannot happen: an array map always has entry 0 */
		goto out;

	tcp_flags = parse_xdp(ctx, len, &key, 0);
	count_parse(&key);

	if (cfg->snap_len && len > cfg->snap_len)
		count(STAT_OVER_SNAPLEN, 1);

	if (cfg->n_rules && drop_by_rule(cfg, &key)) {
		count(STAT_DROPPED_RULE, 1);
		action = XDP_DROP;
		goto out;
	}

	flow_id = account(&key, len, now, tcp_flags);

	if (cfg->mode == MODE_OBSERVE) {
		count(STAT_PASSED, 1);
		goto out;
	}

	/* Only in redirect mode: in observe mode beside AF_PACKET the socket
	 * filter decides, and a connection must be counted once. */
	if (cfg->cutoff.enabled && cut(&cfg->cutoff, &key, len, tcp_flags, now)) {
		action = XDP_DROP;
		goto out;
	}

	if (write_meta(ctx, flow_id, now))
		count(STAT_META_FAILED, 1);

	/* XDP_PASS when the queue has no socket: the frame goes to the stack. */
	action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	count(action == XDP_REDIRECT ? STAT_REDIRECTED : STAT_REDIRECT_FAILED, 1);

out:
	return action;
}

/*
 * The socket filter of the AF_PACKET rings (SO_ATTACH_BPF): the cutoff for
 * the capture path without AF_XDP, on the same maps. It sees the frame as
 * the packet socket does: from the Ethernet header on, with the outer VLAN
 * tag (if any) already taken out into skb->vlan_tci by the stack, so the
 * key starts with that tag and lengths add its 4 bytes back. Returns 0 for
 * a cut packet (the socket never sees it), else how many bytes to keep,
 * exactly as the classic filter it replaces (afpacket attachSnapFilter):
 * snap_len, 4 less when a tag was taken out (afpacket puts it back into the
 * frame, which is then snap_len bytes of the wire frame), or the whole
 * packet without a snap length. It counts nothing but the cutoff: the XDP
 * program, if attached beside it, counts the rest.
 */
SEC("socket")
int stenod_socket(struct __sk_buff *skb)
{
	/* aligned(8): cleared with 8-byte stores */
	struct flow_key key __attribute__((aligned(8))) = {};
	const struct config_value *cfg;
	__u32 len = skb->len;
	__u64 wire = len;
	__u32 zero = 0;
	__u32 tcp_flags;
	int tags = 0;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return len;
	if (skb->vlan_present) {
		tags = 1;
		key.vlan[0] = skb->vlan_tci & 0x0fff;
		key.flags |= FLOW_VLAN0;
		wire += 4;
	}
	if (cfg->cutoff.enabled) {
		tcp_flags = parse_skb(skb, len, &key, tags);
		if (cut(&cfg->cutoff, &key, wire, tcp_flags, bpf_ktime_get_tai_ns()))
			return 0;
	}
	if (cfg->snap_len <= 4)
		return len;
	return tags ? cfg->snap_len - 4 : cfg->snap_len;
}
