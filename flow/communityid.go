package flow

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
)

// CommunityIDSize is the length of a Community ID v1 digest (SHA-1).
const CommunityIDSize = sha1.Size

// CommunityIDPrefix starts every Community ID v1 string.
const CommunityIDPrefix = "1:"

// The ICMP and ICMPv6 message types that come in request/reply pairs, as the
// Community ID specification takes them from Zeek: a message's counterpart
// stands in for the destination port, so that a request and its reply get
// one ID. Every other type is one-way: its code is the destination port and
// the endpoints are not reordered.
func icmpCounterpart(proto uint8, typ uint16) (uint16, bool) {
	if proto == ProtoICMP {
		switch typ {
		case 8: // echo request
			return 0, true
		case 0: // echo reply
			return 8, true
		case 13: // timestamp
			return 14, true
		case 14:
			return 13, true
		case 15: // information request
			return 16, true
		case 16:
			return 15, true
		case 10: // router solicitation
			return 9, true
		case 9: // router advertisement
			return 10, true
		case 17: // address mask request
			return 18, true
		case 18:
			return 17, true
		}
		return 0, false
	}
	switch typ {
	case 128: // echo request
		return 129, true
	case 129:
		return 128, true
	case 130: // multicast listener query
		return 131, true
	case 131: // multicast listener report
		return 130, true
	case 133: // router solicitation
		return 134, true
	case 134:
		return 133, true
	case 135: // neighbour solicitation
		return 136, true
	case 136:
		return 135, true
	case 139: // node information query ("who are you")
		return 140, true
	case 140:
		return 139, true
	case 144: // home agent address discovery
		return 145, true
	case 145:
		return 144, true
	}
	return 0, false
}

// CommunityIDHash computes the Community ID v1 digest of a flow key with the
// given seed (corelight/community-id-spec): SHA-1 over seed, the two
// endpoints' addresses ordered so that both directions of a connection hash
// alike, the protocol, a zero byte, and the two ports (for ICMP and ICMPv6
// the type and its counterpart or code). ok is false where the ID is not
// defined: frames that are not IP, and TCP, UDP, SCTP, ICMP or ICMPv6
// packets whose ports (or type and code) were not parsed, such as non-first
// fragments; the specification lets a monitor leave those empty. It does not
// allocate.
func CommunityIDHash(k *Key, seed uint16) (sum [CommunityIDSize]byte, ok bool) {
	var alen int
	switch {
	case k.Flags&FlagIPv4 != 0:
		alen = 4
	case k.Flags&FlagIPv6 != 0:
		alen = 16
	default:
		return sum, false
	}
	src, dst := k.Src[:alen], k.Dst[:alen]
	sport, dport := k.SrcPort, k.DstPort
	ports, oneWay := false, false
	switch k.Proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP:
		if k.Flags&FlagPorts == 0 {
			return sum, false
		}
		ports = true
	case ProtoICMP, ProtoICMPv6:
		if k.Flags&FlagICMP == 0 {
			return sum, false
		}
		ports = true
		if c, two := icmpCounterpart(k.Proto, sport); two {
			dport = c
		} else {
			oneWay = true
		}
	}
	if !oneWay {
		c := bytes.Compare(src, dst)
		if c > 0 || c == 0 && ports && sport >= dport {
			src, dst = dst, src
			sport, dport = dport, sport
		}
	}
	// At most 2 + 16 + 16 + 2 + 4 bytes; on the stack.
	var in [40]byte
	in[0], in[1] = byte(seed>>8), byte(seed)
	n := 2
	n += copy(in[n:], src)
	n += copy(in[n:], dst)
	in[n] = k.Proto
	n += 2 // and the zero padding byte
	if ports {
		in[n], in[n+1], in[n+2], in[n+3] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
		n += 4
	}
	return sha1.Sum(in[:n]), true
}

// CommunityIDHead returns the first 8 bytes of the key's Community ID,
// big endian, or 0 where it has none (a real ID may start with 8 zero bytes
// too: a prefix can rule a flow out, not in). Caches of it spare queries a
// SHA-1 per flow (query.MatchFlowWithID).
func CommunityIDHead(k *Key, seed uint16) uint64 {
	sum, ok := CommunityIDHash(k, seed)
	if !ok {
		return 0
	}
	return binary.BigEndian.Uint64(sum[:8])
}

// AppendCommunityID appends the key's Community ID v1 string ("1:" and the
// base64 digest) to dst, or nothing where the ID is not defined.
func AppendCommunityID(dst []byte, k *Key, seed uint16) []byte {
	sum, ok := CommunityIDHash(k, seed)
	if !ok {
		return dst
	}
	dst = append(dst, CommunityIDPrefix...)
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// CommunityID returns the key's Community ID v1 string, or "" where it is
// not defined (see CommunityIDHash).
func (k *Key) CommunityID(seed uint16) string {
	var b [len(CommunityIDPrefix) + 28]byte
	return string(AppendCommunityID(b[:0], k, seed))
}

// ParseCommunityID decodes a Community ID v1 string as Suricata, Zeek and
// Arkime write it ("1:" and 28 characters of base64); the hexadecimal form
// of the reference implementation's --no-base64 option is accepted too.
func ParseCommunityID(s string) ([CommunityIDSize]byte, error) {
	var sum [CommunityIDSize]byte
	body, ok := strings.CutPrefix(s, CommunityIDPrefix)
	if !ok {
		return sum, errors.New("community id: want version 1, written 1:BASE64")
	}
	var raw []byte
	var err error
	if len(body) == 2*CommunityIDSize {
		raw, err = hex.DecodeString(body)
	} else {
		raw, err = base64.StdEncoding.DecodeString(body)
	}
	if err != nil || len(raw) != CommunityIDSize {
		return sum, errors.New("community id: want 1: and the base64 of a 20-byte SHA-1 digest")
	}
	copy(sum[:], raw)
	return sum, nil
}
