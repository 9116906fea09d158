//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * stenod.c: the XDP program in front of stenod's AF_XDP sockets.
 *
 * For every frame it
 *   1. parses the flow key (docs/flow-key.md, the same rules as flow.Parse),
 *   2. counts it in the per-CPU stats,
 *   3. drops it if a drop rule in config matches (before capture),
 *   4. enters it in the flows LRU table, announcing a new flow on the
 *      new_flows ring buffer,
 *   5. in observe mode passes it to the stack; otherwise puts struct
 *      packet_meta {flow id, TAI timestamp} in front of the packet and
 *      redirects it to the AF_XDP socket of its RX queue (XDP_PASS if that
 *      queue has none).
 *
 * Minimum kernel: 6.1 (bpf_ktime_get_tai_ns). Also used: multi-buffer XDP
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
};
const struct types_for_go *unused_types_for_go __attribute__((unused));

/* ---- helpers ---- */

#define ETH_P_MPLS_MC_ 0x8848 /* not in every linux/if_ether.h */

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
static __always_inline int load(struct xdp_md *ctx, __u32 off, void *dst, __u32 len)
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

struct vlan_tag {
	__be16 tci;
	__be16 next;
};

struct ipv4_hdr {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag;
	__u8 ttl;
	__u8 proto;
	__be16 csum;
	__u32 src; /* network order */
	__u32 dst;
};

struct ipv6_hdr {
	__be32 vtcfl;
	__be16 plen;
	__u8 next;
	__u8 hlim;
	__u32 src[4]; /* network order */
	__u32 dst[4];
};

struct ipv6_frag_hdr {
	__u8 next;
	__u8 reserved;
	__be16 off;
	__be32 id;
};

struct ports {
	__be16 src;
	__be16 dst;
};

static __always_inline int is_ipv6_ext(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44;
}

/*
 * The parser is split at two global (non-inlined) functions, parse_ip and
 * parse_ports. The verifier checks a global function once, for any value of
 * its scalar arguments, instead of once per distinct offset the callers
 * reach (up to 2 VLAN tags x 8 MPLS labels x IPv6 extension headers), which
 * would multiply the states it explores. The calls cost a few ns per packet.
 */

/*
 * Rule 6: ports at off for TCP, UDP and SCTP, or the type and code of ICMP
 * and ICMPv6 (key->proto). Returns 0.
 */
__noinline int parse_ports(struct xdp_md *ctx, __u32 off, struct flow_key *key)
{
	struct ports p;
	__u8 tc[2];

	if (!key)
		return 0;
	if (key->proto == 1 || key->proto == 58) {
		if (load(ctx, off, tc, sizeof(tc)))
			return 0;
		key->sport = tc[0];
		key->dport = tc[1];
		key->flags |= FLOW_ICMP;
		return 0;
	}
	if (key->proto != 6 && key->proto != 17 && key->proto != 132)
		return 0;
	if (load(ctx, off, &p, sizeof(p)))
		return 0;
	key->sport = bpf_ntohs(p.src);
	key->dport = bpf_ntohs(p.dst);
	key->flags |= FLOW_PORTS;
	return 0;
}

/* Rule 4: IPv4 at off. */
static __always_inline void parse_ipv4(struct xdp_md *ctx, __u32 off, __u32 len,
				       struct flow_key *key)
{
	struct ipv4_hdr ip;
	__u32 hlen;
	__u16 frag;

	if (load(ctx, off, &ip, sizeof(ip)))
		return;
	hlen = (ip.vihl & 0xf) * 4;
	if ((ip.vihl >> 4) != 4 || hlen < 20 || off + hlen > len)
		return;

	key->flags |= FLOW_IPV4;
	__builtin_memcpy(key->src, &ip.src, 4);
	__builtin_memcpy(key->dst, &ip.dst, 4);
	key->proto = ip.proto;

	frag = bpf_ntohs(ip.frag);
	if (frag & 0x3fff) /* MF or an offset */
		key->flags |= FLOW_FRAGMENT;
	if (frag & 0x1fff) /* not the first fragment: no ports */
		return;
	parse_ports(ctx, off + hlen, key);
}

/*
 * Rule 5: IPv6 at off, with up to MAX_IPV6_EXT_HDRS extension headers. The
 * extension header walk reads with bpf_xdp_load_bytes only: with direct
 * packet access every header length would become part of the verifier's
 * state. Extension headers are rare; plain IPv6 costs no helper call.
 */
static __always_inline void parse_ipv6(struct xdp_md *ctx, __u32 off, __u32 len,
				       struct flow_key *key)
{
	struct ipv6_hdr ip;
	int ports = 1;
	__u8 nh;

	if (load(ctx, off, &ip, sizeof(ip)))
		return;
	if ((bpf_ntohl(ip.vtcfl) >> 28) != 6)
		return;

	key->flags |= FLOW_IPV6;
	__builtin_memcpy(key->src, ip.src, 16);
	__builtin_memcpy(key->dst, ip.dst, 16);
	nh = ip.next;
	off += sizeof(ip);

	for (int i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		__u32 hlen;
		__u8 next;

		if (!is_ipv6_ext(nh))
			break;
		if (nh == 44) {
			struct ipv6_frag_hdr fh;

			if (bpf_xdp_load_bytes(ctx, off, &fh, sizeof(fh)))
				goto stop;
			key->flags |= FLOW_FRAGMENT;
			if (bpf_ntohs(fh.off) & 0xfff8)
				ports = 0;
			next = fh.next;
			hlen = sizeof(fh);
		} else {
			__u8 h[2];

			if (bpf_xdp_load_bytes(ctx, off, h, sizeof(h)))
				goto stop;
			hlen = nh == 51 ? (h[1] + 2) * 4 : (h[1] + 1) * 8;
			if (off + hlen > len)
				goto stop;
			next = h[0];
		}
		nh = next;
		off += hlen;
	}

	key->proto = nh;
	/* 8 headers walked and the next one is still an extension header. */
	if (is_ipv6_ext(nh) || !ports)
		return;
	parse_ports(ctx, off, key);
	return;

stop:
	/* The extension header nh does not fit in the frame. */
	key->proto = nh;
}

/* Rules 4-6: the IP header at off (ip is 4 or 6). Returns 0. */
__noinline int parse_ip(struct xdp_md *ctx, __u32 off, __u32 len, __u32 ip, struct flow_key *key)
{
	if (!key)
		return 0;
	if (ip == 4)
		parse_ipv4(ctx, off, len, key);
	else if (ip == 6)
		parse_ipv6(ctx, off, len, key);
	return 0;
}

/* Fill key from the frame (docs/flow-key.md); len is the frame's length. */
static __always_inline void parse(struct xdp_md *ctx, __u32 len, struct flow_key *key)
{
	__u32 off = ETH_HLEN;
	__be16 be;
	__u16 et;
	__u8 ip = 0;

	/* Rule 1: fewer than 14 bytes leave the key all zero. */
	if (load(ctx, 12, &be, sizeof(be)))
		return;
	et = bpf_ntohs(be);

	/* Rule 2: up to two VLAN tags. */
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_tag tag;

		if (et != ETH_P_8021Q && et != ETH_P_8021AD)
			break;
		if (load(ctx, off, &tag, sizeof(tag)))
			break;
		key->vlan[i] = bpf_ntohs(tag.tci) & 0x0fff;
		key->flags |= i == 0 ? FLOW_VLAN0 : FLOW_VLAN1;
		et = bpf_ntohs(tag.next);
		off += sizeof(tag);
	}
	key->ethertype = et;

	if (et == ETH_P_IP) {
		ip = 4;
	} else if (et == ETH_P_IPV6) {
		ip = 6;
	} else if (et == ETH_P_MPLS_UC || et == ETH_P_MPLS_MC_) {
		/* Rule 3: up to 8 label stack entries, then the payload's first nibble. */
		int bos = 0;
		__u8 first;

		for (int i = 0; i < MAX_MPLS_LABELS; i++) {
			__be32 be_entry;
			__u32 entry;

			if (load(ctx, off, &be_entry, sizeof(be_entry)))
				return;
			entry = bpf_ntohl(be_entry);
			if (i == 0) {
				key->mpls = entry >> 12;
				key->flags |= FLOW_MPLS;
			}
			off += sizeof(be_entry);
			if (entry & 0x100) {
				bos = 1;
				break;
			}
		}
		if (!bos || load(ctx, off, &first, sizeof(first)))
			return;
		ip = first >> 4;
	}

	if (ip == 4 || ip == 6)
		parse_ip(ctx, off, len, ip, key);
}

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
static __always_inline __u64 account(const struct flow_key *key, __u64 len, __u64 now)
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
	bpf_ringbuf_submit(rec, 0);
	return nv.flow_id;

update:
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->bytes, len);
	v->last_seen_ns = now;
	return v->flow_id;
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
	__u64 flow_id;

	count(STAT_PACKETS, 1);
	count(STAT_BYTES, len);

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg) /* cannot happen: an array map always has entry 0 */
		goto out;

	parse(ctx, len, &key);
	count_parse(&key);

	if (cfg->snap_len && len > cfg->snap_len)
		count(STAT_OVER_SNAPLEN, 1);

	if (cfg->n_rules && drop_by_rule(cfg, &key)) {
		count(STAT_DROPPED_RULE, 1);
		action = XDP_DROP;
		goto out;
	}

	flow_id = account(&key, len, now);

	if (cfg->mode == MODE_OBSERVE) {
		count(STAT_PASSED, 1);
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
