/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * stenod.h: the structures shared by the XDP program and the socket filter
 * (bpf/stenod.c) and Go.
 *
 * Go sees these through bpf2go (gen/stenod_bpfel.go, generated with -type for
 * each one), and flow.Key mirrors struct flow_key byte for byte. Every struct
 * here has its padding spelled out, so the layout is the same in C, in BTF and
 * in Go. All multi-byte integers are in host byte order (little endian on
 * every platform stenod runs on) unless a field says "network order".
 *
 * docs/bpf.md describes the maps built from these types; docs/flow-key.md the
 * rules that fill struct flow_key.
 */
#ifndef STENOD_H
#define STENOD_H

#include <linux/types.h>

/* Limits of the parser (docs/flow-key.md). */
#define MAX_VLAN_TAGS 2
#define MAX_MPLS_LABELS 8
#define MAX_IPV6_EXT_HDRS 8

/* Number of entries in config.rules. */
#define MAX_DROP_RULES 16

/* Number of entries in config.cutoff.matches (xdp.MaxCutoffMatches), and the
 * index of the default limit's counters in cut_stats. */
#define MAX_CUTOFF_MATCHES 32

/*
 * A flow id is (per-CPU sequence number << FLOW_ID_CPU_BITS) | CPU number.
 * Ids are unique among all flows one loaded program creates, on machines with
 * up to 1 << FLOW_ID_CPU_BITS CPUs, and never 0 (0 means "no flow id").
 */
#define FLOW_ID_CPU_BITS 12

/* Bits of flow_key.flags. */
enum flow_flag {
	FLOW_IPV4 = 1 << 0,     /* an IPv4 header was parsed: src, dst, proto valid */
	FLOW_IPV6 = 1 << 1,     /* an IPv6 header was parsed: src, dst, proto valid */
	FLOW_PORTS = 1 << 2,    /* sport and dport hold TCP/UDP/SCTP ports */
	FLOW_FRAGMENT = 1 << 3, /* an IPv4 or IPv6 fragment (first or not) */
	FLOW_VLAN0 = 1 << 4,    /* vlan[0] holds the outer tag's VID */
	FLOW_VLAN1 = 1 << 5,    /* vlan[1] holds the inner tag's VID */
	FLOW_MPLS = 1 << 6,     /* mpls holds the outermost MPLS label */
	FLOW_ICMP = 1 << 7,     /* sport and dport hold the ICMP/ICMPv6 type and code */
};

/*
 * The key of a unidirectional flow: 48 bytes, no implicit padding, identical
 * to flow.Key. Fields the parser did not set are zero, so equal flows have
 * equal bytes.
 */
struct flow_key {
	__u8 src[16];     /* offset 0: source address, network order; IPv4 in bytes 0-3 */
	__u8 dst[16];     /* offset 16: destination address, same encoding */
	__u16 sport;      /* offset 32: source port (FLOW_PORTS) or ICMP type (FLOW_ICMP), else 0 */
	__u16 dport;      /* offset 34: destination port (FLOW_PORTS) or ICMP code (FLOW_ICMP), else 0 */
	__u16 vlan[2];    /* offset 36: VIDs (12 bits) of the outer and inner VLAN tag */
	__u32 mpls;       /* offset 40: outermost MPLS label (20 bits) when FLOW_MPLS */
	__u16 ethertype;  /* offset 44: EtherType after the VLAN tags; 0 if < 14 bytes */
	__u8 proto;       /* offset 46: IP protocol (IPv6: after extension headers) */
	__u8 flags;       /* offset 47: enum flow_flag bits */
};

/* The value of the flows map: 48 bytes. */
struct flow_value {
	__u64 flow_id;       /* offset 0: the flow's id, see FLOW_ID_CPU_BITS */
	__u64 packets;       /* offset 8: packets seen, updated atomically */
	__u64 bytes;         /* offset 16: bytes seen (whole frames, all fragments of a multi-buffer frame) */
	__u64 first_seen_ns; /* offset 24: CLOCK_TAI ns of the first packet */
	__u64 last_seen_ns;  /* offset 32: CLOCK_TAI ns of the latest packet (racy across CPUs: roughly latest) */
	__u32 tcp_flags;     /* offset 40: OR of the TCP flags (header byte 13) of the flow's packets, updated atomically; 0 for other protocols */
	__u32 _pad;          /* offset 44: zero */
};

/* A record in the new_flows ring buffer, one per flow entering the flows map: 64 bytes. */
struct new_flow {
	__u64 flow_id;        /* offset 0: the id the flow's packets carry in packet_meta */
	__u64 first_seen_ns;  /* offset 8: CLOCK_TAI ns of the flow's first packet */
	struct flow_key key;  /* offset 16: the flow */
};

/*
 * Metadata the program writes in front of every packet it tries to redirect
 * (bpf_xdp_adjust_meta): 16 bytes ending exactly where the packet data
 * begins. An AF_XDP consumer finds it at umem[desc.addr - sizeof(struct
 * packet_meta)].
 */
struct packet_meta {
	__u64 flow_id; /* offset 0: flow id, or 0 when the packet could not be entered in the flows map */
	__u64 ts_ns;   /* offset 8: bpf_ktime_get_tai_ns() when the program ran */
};

/* Values of config.mode. */
enum mode {
	MODE_REDIRECT = 0, /* redirect to the AF_XDP socket of the RX queue (XDP_PASS if none) */
	MODE_OBSERVE = 1,  /* account, then XDP_PASS every packet: no capture */
};

/* Bits of drop_rule.flags. */
enum drop_rule_flag {
	/* Also match with sport and dport of the packet's key swapped: a port
	 * in value.sport then matches either port. */
	RULE_EITHER_PORT = 1 << 0,
};

/*
 * A pre-capture drop rule: a packet whose key k has (k & mask) == value,
 * compared over all 48 bytes, is dropped (XDP_DROP) before it is accounted or
 * captured. The Go side builds value and mask from protocol, port and
 * networks; value must already be masked. 104 bytes.
 */
struct drop_rule {
	struct flow_key value; /* offset 0: the bits to match, already masked */
	struct flow_key mask;  /* offset 48: which bits of the key take part */
	__u32 flags;           /* offset 96: enum drop_rule_flag bits */
	__u32 _pad;            /* offset 100: zero */
};

/*
 * One match of a cutoff rule: the rule applies to a new connection whose
 * first packet's key, or that key reversed, matches (as a drop rule does).
 * A rule with several matches has one entry per match, all with its index
 * and limits. 128 bytes.
 */
struct cutoff_match {
	struct drop_rule match; /* offset 0: masked key match, RULE_EITHER_PORT */
	__u32 rule;             /* offset 104: index of the rule (CutoffConfig.Rules) */
	__u32 _pad;             /* offset 108: zero */
	__u64 limit_bytes;      /* offset 112: the rule's byte limit, 0 = none */
	__u64 limit_packets;    /* offset 120: the rule's packet limit, 0 = none */
};

/* The cutoff part of config_value: 4128 bytes. */
struct cutoff_config {
	__u32 enabled;         /* offset 0: 0 = no connection table, nothing cut */
	__u32 jitter_percent;  /* offset 4: 0..100, see conn_limit() */
	__u32 n_matches;       /* offset 8: matches[0..n_matches) are in use */
	__u32 _pad;            /* offset 12: zero */
	__u64 default_bytes;   /* offset 16: limits of connections no rule matches, 0 = none */
	__u64 default_packets; /* offset 24 */
	struct cutoff_match matches[MAX_CUTOFF_MATCHES]; /* offset 32, first match wins */
};

/* The single entry of the config array map: 5808 bytes. (Not "struct config":
 * that name is taken by the map, and bpf2go -type needs it unique.) */
struct config_value {
	__u32 snap_len;  /* offset 0: packets longer than this are counted (STAT_OVER_SNAPLEN); 0 = no limit.
			  * The socket filter cuts what it returns to it. */
	__u32 mode;      /* offset 4: enum mode */
	__u32 n_rules;   /* offset 8: rules[0..n_rules) are in use (at most MAX_DROP_RULES) */
	__u32 _pad;      /* offset 12: zero */
	struct drop_rule rules[MAX_DROP_RULES]; /* offset 16 */
	struct cutoff_config cutoff;            /* offset 1680 */
};

/* Bits of conn_value.flags. */
enum conn_flag {
	/* Never cut this connection. Set by user space (xdp.SuspendConns,
	 * bpftool map update); the kernel never clears it. */
	CONN_SUSPENDED = 1 << 0,
	/* The connection's cut_conns record was written (or lost). Kernel only. */
	CONN_REPORTED = 1 << 1,
};

/*
 * The value of the conns map, keyed by the canonical struct flow_key of a
 * connection (both directions of one conversation, see conn_key()). 80 bytes.
 */
struct conn_value {
	__u64 packets;        /* offset 0: packets counted, both directions, atomic */
	__u64 bytes;          /* offset 8: their bytes (whole frames), atomic */
	__u64 limit_bytes;    /* offset 16: byte limit with jitter, fixed at entry; 0 = none */
	__u64 limit_packets;  /* offset 24: packet limit with jitter; 0 = none */
	__u64 cut_packets[2]; /* offset 32: packets cut: [0] in the key's orientation, [1] reversed */
	__u64 cut_bytes[2];   /* offset 48: their bytes */
	__u64 last_cut_ns;    /* offset 64: CLOCK_TAI ns of the latest cut packet, 0 = none */
	__u32 flags;          /* offset 72: enum conn_flag bits */
	__s32 rule;           /* offset 76: the rule that gave the limits, -1 = the default */
};

/* A record in the cut_conns ring buffer, one per connection the first time
 * it has a packet cut: 56 bytes. */
struct cut_conn {
	struct flow_key key; /* offset 0: the connection, canonical */
	__u64 ts_ns;         /* offset 48: CLOCK_TAI ns of its first cut packet */
};

/* The value of cut_stats (per CPU, index = rule, MAX_CUTOFF_MATCHES = the
 * default): 16 bytes. */
struct cut_count {
	__u64 packets; /* offset 0 */
	__u64 bytes;   /* offset 8 */
};

/* Indexes of the stats per-CPU array: one u64 counter each. */
enum stat {
	STAT_PACKETS = 0,        /* every frame the program ran on */
	STAT_BYTES,              /* their length (all fragments of a multi-buffer frame) */
	STAT_REDIRECTED,         /* bpf_redirect_map found a socket: XDP_REDIRECT */
	STAT_REDIRECT_FAILED,    /* no socket on the frame's RX queue: XDP_PASS */
	STAT_META_FAILED,        /* bpf_xdp_adjust_meta failed: redirected without metadata */
	STAT_RINGBUF_FULL,       /* a new flow's new_flows record was lost */
	STAT_DROPPED_RULE,       /* dropped by a drop rule */
	STAT_OVER_SNAPLEN,       /* longer than config.snap_len */
	STAT_PASSED,             /* observe mode: XDP_PASS after accounting */
	STAT_NEW_FLOWS,          /* flows entered in the flows map */
	STAT_FLOW_INSERT_FAILED, /* a new flow could not be entered: flow id 0 */
	STAT_PARSE_NOT_IP,       /* no IPv4/IPv6 header parsed (ARP, truncated, ...) */
	STAT_PARSE_IPV4,         /* an IPv4 header was parsed */
	STAT_PARSE_IPV6,         /* an IPv6 header was parsed */
	STAT_PARSE_FRAGMENT,     /* an IP fragment */
	STAT_PARSE_VLAN,         /* at least one VLAN tag */
	STAT_PARSE_MPLS,         /* an MPLS label stack */
	STAT_CUT_PACKETS,        /* not stored: past their connection's cutoff (both programs) */
	STAT_CUT_BYTES,          /* their length */
	STAT_CUT_RINGBUF_FULL,   /* a cut_conns record was lost */
	STAT_MAX,                /* number of counters */
};

#endif /* STENOD_H */
