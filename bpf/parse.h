/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * parse.h: the flow key parser (docs/flow-key.md), a template that
 * stenod.c includes once per program type, so that the XDP program and the
 * socket filter derive keys by one and the same code. No include guard: it
 * is meant to be included more than once. Before each inclusion define
 *
 *   PARSE_CTX          the context type: struct xdp_md, struct __sk_buff
 *   PARSE_FN(name)     name with the type's suffix: name##_xdp, name##_skb
 *   PARSE_LOAD         static __always_inline int f(PARSE_CTX *, __u32 off,
 *                      void *dst, __u32 len): 0, or non-zero when the frame
 *                      has fewer than off + len bytes; len a constant
 *   PARSE_LOAD_BYTES   the helper that reads anywhere in the frame
 *                      (bpf_xdp_load_bytes, bpf_skb_load_bytes)
 *
 * and the functions below get the suffix: parse_xdp(), parse_skb(), ...
 * The structs and is_ipv6_ext() are shared and defined once.
 */
#ifndef STENOD_PARSE_SHARED
#define STENOD_PARSE_SHARED

#define ETH_P_MPLS_MC_ 0x8848 /* not in every linux/if_ether.h */

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

#endif /* STENOD_PARSE_SHARED */

/*
 * The parser is split at two global (non-inlined) functions, parse_ip and
 * parse_ports. The verifier checks a global function once, for any value of
 * its scalar arguments, instead of once per distinct offset the callers
 * reach (up to 2 VLAN tags x 8 MPLS labels x IPv6 extension headers), which
 * would multiply the states it explores. The calls cost a few ns per packet.
 */

/*
 * Rule 6: ports at off for TCP, UDP and SCTP, or the type and code of ICMP
 * and ICMPv6 (key->proto). Returns the TCP flags (byte 13 of the TCP
 * header) of a TCP packet whose ports were read and whose header holds
 * them, else 0: flow.TCPFlags is the Go twin.
 */
__noinline int PARSE_FN(parse_ports)(PARSE_CTX *ctx, __u32 off, struct flow_key *key)
{
	struct ports p;
	__u8 tc[2];
	__u8 tcp_flags;

	if (!key)
		return 0;
	if (key->proto == 1 || key->proto == 58) {
		if (PARSE_LOAD(ctx, off, tc, sizeof(tc)))
			return 0;
		key->sport = tc[0];
		key->dport = tc[1];
		key->flags |= FLOW_ICMP;
		return 0;
	}
	if (key->proto != 6 && key->proto != 17 && key->proto != 132)
		return 0;
	if (PARSE_LOAD(ctx, off, &p, sizeof(p)))
		return 0;
	key->sport = bpf_ntohs(p.src);
	key->dport = bpf_ntohs(p.dst);
	key->flags |= FLOW_PORTS;
	if (key->proto != 6 || PARSE_LOAD(ctx, off + 13, &tcp_flags, sizeof(tcp_flags)))
		return 0;
	return tcp_flags;
}

/* Rule 4: IPv4 at off. Returns the TCP flags (parse_ports). */
static __always_inline int PARSE_FN(parse_ipv4)(PARSE_CTX *ctx, __u32 off, __u32 len,
						struct flow_key *key)
{
	struct ipv4_hdr ip;
	__u32 hlen;
	__u16 frag;

	if (PARSE_LOAD(ctx, off, &ip, sizeof(ip)))
		return 0;
	hlen = (ip.vihl & 0xf) * 4;
	if ((ip.vihl >> 4) != 4 || hlen < 20 || off + hlen > len)
		return 0;

	key->flags |= FLOW_IPV4;
	__builtin_memcpy(key->src, &ip.src, 4);
	__builtin_memcpy(key->dst, &ip.dst, 4);
	key->proto = ip.proto;

	frag = bpf_ntohs(ip.frag);
	if (frag & 0x3fff) /* MF or an offset */
		key->flags |= FLOW_FRAGMENT;
	if (frag & 0x1fff) /* not the first fragment: no ports */
		return 0;
	return PARSE_FN(parse_ports)(ctx, off + hlen, key);
}

/*
 * Rule 5: IPv6 at off, with up to MAX_IPV6_EXT_HDRS extension headers. The
 * extension header walk reads with PARSE_LOAD_BYTES only: with direct
 * packet access every header length would become part of the verifier's
 * state. Extension headers are rare; plain IPv6 costs no helper call (XDP).
 */
static __always_inline int PARSE_FN(parse_ipv6)(PARSE_CTX *ctx, __u32 off, __u32 len,
						struct flow_key *key)
{
	struct ipv6_hdr ip;
	int ports = 1;
	__u8 nh;

	if (PARSE_LOAD(ctx, off, &ip, sizeof(ip)))
		return 0;
	if ((bpf_ntohl(ip.vtcfl) >> 28) != 6)
		return 0;

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

			if (PARSE_LOAD_BYTES(ctx, off, &fh, sizeof(fh)))
				goto stop;
			key->flags |= FLOW_FRAGMENT;
			if (bpf_ntohs(fh.off) & 0xfff8)
				ports = 0;
			next = fh.next;
			hlen = sizeof(fh);
		} else {
			__u8 h[2];

			if (PARSE_LOAD_BYTES(ctx, off, h, sizeof(h)))
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
		return 0;
	return PARSE_FN(parse_ports)(ctx, off, key);

stop:
	/* The extension header nh does not fit in the frame. */
	key->proto = nh;
	return 0;
}

/* Rules 4-6: the IP header at off (ip is 4 or 6). Returns the TCP flags
 * (parse_ports). */
__noinline int PARSE_FN(parse_ip)(PARSE_CTX *ctx, __u32 off, __u32 len, __u32 ip, struct flow_key *key)
{
	if (!key)
		return 0;
	if (ip == 4)
		return PARSE_FN(parse_ipv4)(ctx, off, len, key);
	if (ip == 6)
		return PARSE_FN(parse_ipv6)(ctx, off, len, key);
	return 0;
}

/*
 * Fill key from the frame (docs/flow-key.md); len is the frame's length.
 * tags VLAN tags were taken out of the frame before (the socket filter's
 * skb: the stack strips the outer tag into skb->vlan_tci); the caller has
 * put them in key, and the frame's EtherType at offset 12 is the one after
 * them. Returns the TCP flags of a TCP packet (parse_ports), else 0.
 */
static __always_inline __u32 PARSE_FN(parse)(PARSE_CTX *ctx, __u32 len, struct flow_key *key, int tags)
{
	__u32 off = ETH_HLEN;
	__be16 be;
	__u16 et;
	__u8 ip = 0;

	/* Rule 1: fewer than 14 bytes leave the key all zero. */
	if (PARSE_LOAD(ctx, 12, &be, sizeof(be)))
		return 0;
	et = bpf_ntohs(be);

	/* Rule 2: up to two VLAN tags. */
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_tag tag;

		if (i < tags)
			continue;
		if (et != ETH_P_8021Q && et != ETH_P_8021AD)
			break;
		if (PARSE_LOAD(ctx, off, &tag, sizeof(tag)))
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

			if (PARSE_LOAD(ctx, off, &be_entry, sizeof(be_entry)))
				return 0;
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
		if (!bos || PARSE_LOAD(ctx, off, &first, sizeof(first)))
			return 0;
		ip = first >> 4;
	}

	if (ip == 4 || ip == 6)
		return PARSE_FN(parse_ip)(ctx, off, len, ip, key);
	return 0;
}
