#!/usr/bin/env python3
"""Writes eve.json and conn.log, events of connections of the test captures,
and expected.json, the number of packets each event's pivot must answer, as
tshark counts them with a display filter: an independent reference for
api.TestAlertPivot. Community IDs are computed here, from the spec, not by
stenod. Run from this directory: python3 make.py (needs tshark)."""
import base64, hashlib, ipaddress, json, struct, subprocess

CAPS = "../pcaps/chrissanders-packets/"

def community_id(proto, saddr, daddr, sport, dport, seed=0):
    s, d = ipaddress.ip_address(saddr).packed, ipaddress.ip_address(daddr).packed
    if (s, sport) > (d, dport):
        s, d, sport, dport = d, s, dport, sport
    data = struct.pack("!H", seed) + s + d + bytes([proto, 0]) + struct.pack("!HH", sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(data).digest()).decode()

def tshark_count(cap, flt):
    out = subprocess.run(["tshark", "-r", CAPS + cap, "-Y", flt, "-T", "fields", "-e", "frame.number"],
                         check=True, capture_output=True, text=True).stdout
    return len(out.split())

def eve_time(epoch):
    # Suricata's format: microseconds, offset without a colon.
    sec, frac = epoch.split(".")
    import datetime
    t = datetime.datetime.fromtimestamp(int(sec), datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + frac[:6] + "+0000"

eve, conn, expected = [], [], []

def alert(cap, ts, src, sport, dst, dport, proto, sid, sig, cid=True, start=None, flt=None):
    pname = {6: "TCP", 17: "UDP", 1: "ICMP"}[proto]
    ev = {"timestamp": eve_time(ts), "flow_id": 1000 + len(eve), "in_iface": "eth0",
          "event_type": "alert", "src_ip": src, "src_port": sport, "dest_ip": dst,
          "dest_port": dport, "proto": pname}
    if cid:
        ev["community_id"] = community_id(proto, src, dst, sport, dport)
    ev["alert"] = {"action": "allowed", "gid": 1, "signature_id": sid, "rev": 1,
                   "signature": sig, "category": "A Network Trojan was detected", "severity": 1}
    if start:
        ev["flow"] = {"pkts_toserver": 3, "pkts_toclient": 2, "bytes_toserver": 300,
                      "bytes_toclient": 200, "start": eve_time(start)}
    eve.append(ev)
    expected.append({"file": "eve.json", "line": len(eve), "capture": cap, "count": tshark_count(cap, flt)})

alert("aurora.pcapng", "1279129250.000000", "192.168.100.202", 4321, "192.168.100.206", 1032, 6,
      2012345, "ET EXPLOIT reverse shell (test)", start="1279129248.093816",
      flt="ip.addr==192.168.100.202 && ip.addr==192.168.100.206 && tcp.port==4321 && tcp.port==1032")
# No community_id: the 5-tuple, which must leave out the other two
# connections to the same server.
alert("cryptowall4_c2.pcapng", "1451924812.000000", "192.168.122.145", 49359, "184.170.149.44", 80, 6,
      2020000, "ET TROJAN CryptoWall Check-in (test)", cid=False,
      flt="ip.addr==192.168.122.145 && ip.addr==184.170.149.44 && tcp.port==49359 && tcp.port==80")
alert("dns.pcap", "1452286755.558135", "4.2.2.1", 53, "172.16.16.154", 22689, 17,
      2027863, "ET DNS Query (test)",
      flt="ip.addr==4.2.2.1 && ip.addr==172.16.16.154 && udp.port==53 && udp.port==22689")
alert("http_ip4and6.pcapng", "1448215096.400000", "2001:db8:1:2::1002", 35023, "2001:db8:1:2::1000", 80, 6,
      2100498, "GPL ATTACK_RESPONSE id check returned root (test)",
      flt="ipv6.addr==2001:db8:1:2::1002 && ipv6.addr==2001:db8:1:2::1000 && tcp.port==35023 && tcp.port==80")

def zeek(cap, ts, src, sport, dst, dport, proto, uid, duration=None, flt=None, cid=True):
    ev = {"ts": float(ts), "uid": uid, "id.orig_h": src, "id.orig_p": sport,
          "id.resp_h": dst, "id.resp_p": dport, "proto": proto}
    if duration is not None:
        ev["duration"] = duration
    ev["conn_state"] = "SF"
    if cid:
        num = {"tcp": 6, "udp": 17, "icmp": 1}[proto]
        if proto == "icmp":
            # Zeek logs type and code as the ports; an echo request's
            # counterpart type (0, the reply) stands in for its code.
            assert sport == 8
            dport = 0
        ev["community_id"] = community_id(num, src, dst, sport, dport)
    conn.append(ev)
    expected.append({"file": "conn.log", "line": len(conn), "capture": cap, "count": tshark_count(cap, flt)})

# Echo requests and replies share one ID (type 8, counterpart 0).
zeek("icmp_echo.pcapng", "1246563718.226354", "192.168.100.138", 8, "192.168.100.1", 0, "icmp",
     "CIcmpEcho1", duration=3.003792, flt="icmp && ip.addr==192.168.100.138 && ip.addr==192.168.100.1")
# Clipped: the log says the connection lasted 1.5 s; packets after that
# (and 1 us) are not its.
zeek("cryptowall4_c2.pcapng", "1451924795.521212", "192.168.122.145", 49357, "184.170.149.44", 80, "tcp",
     "CClipped1", duration=1.5,
     flt="ip.addr==192.168.122.145 && tcp.port==49357 && tcp.port==80 && frame.time_epoch <= 1451924797.021213")

with open("eve.json", "w") as f:
    for ev in eve:
        f.write(json.dumps(ev, separators=(",", ":")) + "\n")
with open("conn.log", "w") as f:
    for ev in conn:
        f.write(json.dumps(ev, separators=(",", ":")) + "\n")
with open("expected.json", "w") as f:
    json.dump(expected, f, indent=1)
    f.write("\n")
