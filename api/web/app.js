// stenod's page: plain JavaScript, no build step, nothing from elsewhere.
// It talks to the JSON endpoints of docs/api.md only, so anything it shows
// a script can get too. The state (query, range, sort, page) lives in the
// URL's fragment, so a URL is a shareable view.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  // Matches everything: the query language has no empty query.
  const EVERYTHING = "after 1970-01-01T00:00:00Z";

  const state = {
    q: "", range: "all", from: "", to: "",
    sort: "bytes", order: "desc", page: 0, size: 100,
  };
  // The resolved query of the last search (relative times made absolute
  // once, so the table, histogram, packets and downloads agree).
  let resolved = "";
  let rangeTerms = "", resolvedRange = "";
  let flows = [];              // the rows on screen
  const selected = new Map();  // flow id -> flow, across pages
  let packetsQuery = "", packetsOffset = 0, packetsMore = false;
  const PACKETS_PAGE = 100;
  let searchSeq = 0;           // answers to an older search are dropped

  // ---- URL state -------------------------------------------------------

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    state.q = p.get("q") || "";
    state.range = p.get("range") || "all";
    state.from = p.get("from") || "";
    state.to = p.get("to") || "";
    state.sort = p.get("sort") || "bytes";
    state.order = p.get("order") || (state.sort === "bytes" || state.sort === "packets" ? "desc" : "asc");
    state.page = Math.max(0, parseInt(p.get("page") || "0", 10) || 0);
    const size = parseInt(p.get("size") || "100", 10);
    state.size = [50, 100, 500, 1000].includes(size) ? size : 100;
  }

  function writeHash() {
    const p = new URLSearchParams();
    if (state.q) p.set("q", state.q);
    if (state.range !== "all") p.set("range", state.range);
    if (state.range === "custom") {
      if (state.from) p.set("from", state.from);
      if (state.to) p.set("to", state.to);
    }
    if (state.sort !== "bytes") p.set("sort", state.sort);
    if (state.order !== (state.sort === "bytes" || state.sort === "packets" ? "desc" : "asc")) p.set("order", state.order);
    if (state.page) p.set("page", String(state.page));
    if (state.size !== 100) p.set("size", String(state.size));
    const h = "#" + p.toString();
    if (location.hash !== h) history.pushState(null, "", h);
  }

  function stateToForm() {
    $("q").value = state.q;
    $("range").value = state.range;
    $("from").value = state.from;
    $("to").value = state.to;
    $("custom").hidden = state.range !== "custom";
    $("size").value = String(state.size);
  }

  // ---- fetching --------------------------------------------------------

  class HTTPError extends Error {
    constructor(status, text, json) { super(text); this.status = status; this.json = json; }
  }

  async function getJSON(path, params) {
    const u = path + "?" + new URLSearchParams(params).toString();
    const r = await fetch(u, { headers: { Accept: "application/json" } });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { /* plain-text error */ }
    if (!r.ok) throw new HTTPError(r.status, (json && json.error) || text.trim() || r.statusText, json);
    return json;
  }

  // ---- formatting ------------------------------------------------------

  const PROTO = { 1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 58: "ICMPv6", 132: "SCTP" };
  const ETHERTYPE = { 0x0806: "ARP", 0x88cc: "LLDP", 0x8035: "RARP", 0x888e: "EAPOL" };

  function protoName(f) {
    if (f.proto === undefined) {
      const e = ETHERTYPE[f.ethertype];
      return e || "0x" + f.ethertype.toString(16).padStart(4, "0");
    }
    return PROTO[f.proto] || String(f.proto);
  }

  function fmtTime(s) {
    // 2024-03-01T11:59:15.34658Z -> 2024-03-01 11:59:15.346580: the
    // server trims trailing zeros; columns read better aligned, to the
    // microsecond or, when the capture has them, the nanosecond.
    if (!s) return "";
    const m = s.match(/^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/);
    if (!m) return s;
    const f = m[3] || "";
    return `${m[1]} ${m[2]}.${f.padEnd(f.length > 6 ? 9 : 6, "0")}`;
  }

  function fmtBytes(n) {
    if (n < 1024) return n + " B";
    const u = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
    return n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0) + " " + u[i];
  }

  const fmtInt = (n) => Number(n).toLocaleString("en-US");

  function td(text, cls, title) {
    const c = document.createElement("td");
    c.textContent = text;
    if (cls) c.className = cls;
    if (title) c.title = title;
    return c;
  }

  // ---- time range -------------------------------------------------------

  // rangeQuery returns the query terms of the chosen range, or throws
  // with a message for a bad custom time.
  function rangeQuery() {
    switch (state.range) {
      case "all": return "";
      case "custom": {
        const terms = [];
        for (const [word, v, name] of [["after", state.from, "from"], ["before", state.to, "to"]]) {
          if (!v) continue;
          const t = new Date(v);
          if (isNaN(t)) throw new Error(`${name} ${JSON.stringify(v)}: want a time such as 2024-03-01T11:00:00Z (or with an offset, +01:00)`);
          terms.push(`${word} ${t.toISOString()}`);
        }
        return terms.join(" and ");
      }
      default: return `after ${state.range} ago`;
    }
  }

  function combine(user, range) {
    if (user && range) return `(${user}) and ${range}`;
    return user || range || EVERYTHING;
  }

  // ---- query errors ------------------------------------------------------

  function showQueryError(text, err) {
    const box = $("query-error");
    const line = $("qe-line");
    line.textContent = "";
    const j = err.json;
    if (j && j.offset_utf16 !== undefined) {
      const at = j.offset_utf16;
      const tok = j.token || "";
      line.append(text.slice(0, at));
      const m = document.createElement("mark");
      m.textContent = tok || " ";
      line.append(m, text.slice(at + tok.length), "\n");
      const caret = document.createElement("span");
      caret.className = "caret";
      caret.textContent = " ".repeat(at) + "^" + "~".repeat(Math.max(0, tok.length - 1));
      line.append(caret);
      $("qe-msg").textContent = `at ${at + 1}: ${j.message || j.error}`;
    } else {
      line.textContent = text;
      $("qe-msg").textContent = err.message;
    }
    box.hidden = false;
    $("q").setAttribute("aria-invalid", "true");
  }

  function clearQueryError() {
    $("query-error").hidden = true;
    $("q").removeAttribute("aria-invalid");
  }

  function setStatus(text, bad) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("bad", !!bad);
  }

  // ---- search --------------------------------------------------------------

  async function search() {
    const seq = ++searchSeq;
    clearQueryError();
    stateToForm();
    try {
      rangeTerms = rangeQuery();
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    setStatus("Searching…");
    // The analyst's own text first, so an error points into it.
    if (state.q.trim()) {
      try {
        await getJSON("/v1/parse", { q: state.q });
      } catch (e) {
        if (seq !== searchSeq) return;
        if (e.status === 400) {
          showQueryError(state.q, e);
          setStatus("The query does not parse.", true);
          clearResults();
          return;
        }
        setStatus(e.message, true);
        return;
      }
    }
    let parsed, range;
    try {
      parsed = await getJSON("/v1/parse", { q: combine(state.q.trim(), rangeTerms) });
      range = rangeTerms ? await getJSON("/v1/parse", { q: rangeTerms }) : null;
    } catch (e) {
      if (seq !== searchSeq) return;
      setStatus(e.message, true);
      return;
    }
    if (seq !== searchSeq) return;
    resolved = parsed.query;
    // The range as absolute times ("after 1h ago" resolved once): the
    // flow's packets and selected downloads cover what the table shows.
    resolvedRange = range ? range.query : "";
    updateDownloads();
    const t0 = performance.now();
    const [fl, hi] = await Promise.allSettled([loadFlows(seq), loadHistogram(seq)]);
    if (seq !== searchSeq) return;
    const errs = [fl, hi].filter((r) => r.status === "rejected").map((r) => r.reason.message);
    if (errs.length) setStatus(errs.join("; "), true);
    else setStatus(`${resolved} · ${Math.round(performance.now() - t0)} ms`);
  }

  function clearResults() {
    flows = [];
    resolved = "";
    updateDownloads();
    $("packets-section").hidden = true;
    $("flows").tBodies[0].textContent = "";
    $("hist").textContent = "";
    $("flows-info").textContent = "";
    $("hist-info").textContent = "";
    $("flows-range").textContent = "";
  }

  // ---- flows table ------------------------------------------------------------

  const flowID = (f) => f.key + "|" + (f.iface || "");

  async function loadFlows(seq) {
    if (!resolved) return; // no good query yet: nothing to sort or page
    const a = await getJSON("/v1/flows", {
      q: resolved, sort: state.sort, order: state.order,
      offset: String(state.page * state.size), limit: String(state.size),
    });
    if (seq !== searchSeq) return;
    if (a.total > 0 && state.page * state.size >= a.total) {
      // A shared URL's page past the end of today's answer.
      state.page = Math.floor((a.total - 1) / state.size);
      writeHash();
      return loadFlows(seq);
    }
    flows = a.flows;
    renderFlows(a);
  }

  function renderFlows(a) {
    const body = $("flows").tBodies[0];
    body.textContent = "";
    for (const f of a.flows) {
      const tr = document.createElement("tr");
      const id = flowID(f);
      tr.dataset.id = id;
      const cb = document.createElement("input");
      cb.type = "checkbox";
      cb.checked = selected.has(id);
      cb.setAttribute("aria-label", "Select " + f.key);
      if (!flowTerms(f, false)) {
        cb.disabled = true;
        cb.title = "The query language cannot name a non-IP flow on its own";
      }
      cb.addEventListener("click", (ev) => {
        ev.stopPropagation();
        if (cb.checked) selected.set(id, f); else selected.delete(id);
        updateDownloads();
      });
      const c0 = document.createElement("td");
      c0.append(cb);
      tr.append(c0,
        td(f.src || "", "addr"), td(f.sport ?? "", "num"),
        td(f.dst || "", "addr"), td(f.dport ?? "", "num"),
        td(protoName(f) + (f.icmp_type !== undefined ? ` ${f.icmp_type}/${f.icmp_code}` : "") + (f.fragment ? " frag" : ""), "", f.key),
        td((f.vlan || []).join(","), "num"),
        td(f.community_id || "", "cid"),
        td(fmtInt(f.packets), "num"),
        td(fmtBytes(f.bytes), "num", fmtInt(f.bytes) + " bytes on the wire"),
        td(fmtTime(f.first)), td(fmtTime(f.last)),
        td(f.iface || ""),
        f.cut ? td(fmtBytes(f.cut_bytes), "num cut", `cut: ${fmtInt(f.cut_packets)} packets, ${fmtInt(f.cut_bytes)} bytes not stored`) : td(""));
      tr.tabIndex = 0;
      tr.setAttribute("aria-label", `Packets of ${f.key}`);
      tr.addEventListener("click", () => openFlow(f, tr));
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") openFlow(f, tr); });
      body.append(tr);
    }
    const from = a.total ? a.offset + 1 : 0;
    const to = a.offset + a.flows.length;
    $("flows-range").textContent = `${fmtInt(from)}–${fmtInt(to)} of ${fmtInt(a.total)}`;
    $("flows-info").textContent = `${fmtInt(a.total)} flows`;
    const pager = $("flows-pager");
    pager.querySelector("[data-page=prev]").disabled = a.offset === 0;
    pager.querySelector("[data-page=next]").disabled = !a.truncated;
    for (const th of $("flows").tHead.querySelectorAll("th[data-sort]")) {
      if (th.dataset.sort === state.sort) th.setAttribute("aria-sort", state.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    $("sel-page").checked = a.flows.length > 0 && a.flows.every((f) => selected.has(flowID(f)));
  }

  // flowTerms returns query terms selecting a flow's packets: exactly its
  // direction, or (both) the reverse too; its Community ID when the sensor
  // gives one and both directions are wanted. "" for a flow the query
  // language cannot name (not IP).
  function flowTerms(f, both) {
    if (f.src === undefined) return "";
    if (both && f.community_id) return `community-id ${f.community_id}`;
    const dir = (s, d, sp, dp) => {
      const t = [`src host ${s}`, `dst host ${d}`];
      if (sp !== undefined) t.push(`src port ${sp}`, `dst port ${dp}`);
      return t;
    };
    const common = [`ip proto ${f.proto}`];
    for (const v of f.vlan || []) common.push(`vlan ${v}`);
    const fwd = dir(f.src, f.dst, f.sport, f.dport).concat(common).join(" and ");
    if (!both) return fwd;
    const rev = dir(f.dst, f.src, f.dport, f.sport).concat(common).join(" and ");
    return `(${fwd}) or (${rev})`;
  }

  function selectionQuery() {
    const both = $("both").checked;
    const parts = [...selected.values()].map((f) => flowTerms(f, both)).filter(Boolean);
    if (!parts.length) return "";
    const any = parts.map((p) => `(${p})`).join(" or ");
    return resolvedRange ? `(${any}) and ${resolvedRange}` : any;
  }

  function pcapURL(q, format) {
    return "/v1/pcap?" + new URLSearchParams({ q, format }).toString();
  }

  function updateDownloads() {
    for (const fmt of ["pcap", "pcapng"]) {
      const a = $("dl-" + fmt);
      a.href = resolved ? pcapURL(resolved, fmt) : "#";
      a.setAttribute("aria-disabled", resolved ? "false" : "true");
      const s = $("dl-sel-" + fmt);
      const q = selectionQuery();
      s.href = q ? pcapURL(q, fmt) : "#";
      s.setAttribute("aria-disabled", q ? "false" : "true");
      s.title = q;
    }
    $("sel-count").textContent = String(selected.size);
  }

  // ---- histogram ---------------------------------------------------------------

  async function loadHistogram(seq) {
    const box = $("hist");
    const width = Math.max(300, box.clientWidth || 900);
    // About one bucket per 6 pixels, never more than the server's cap.
    const buckets = Math.min(1000, Math.max(10, Math.floor(width / 6)));
    const h = await getJSON("/v1/histogram", { q: resolved, buckets: String(buckets) });
    if (seq !== searchSeq) return;
    renderHistogram(h, width);
  }

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderHistogram(h, width) {
    const box = $("hist");
    box.textContent = "";
    const n = h.packets.length;
    if (!n) {
      $("hist-info").textContent = "(no packets)";
      return;
    }
    $("hist-info").textContent =
      `${fmtInt(h.total_packets)} packets, ${fmtBytes(h.total_bytes)} · ${n} buckets of ${h.width}` +
      (h.estimated_packets ? ` · ${fmtInt(h.estimated_packets)} packets placed by estimate` : "");
    const H = 150, top = 14, mid = 72, bottom = 132, left = 4, right = 4;
    const svg = el("svg", { viewBox: `0 0 ${width} ${H}`, role: "img", "aria-label": `Histogram: ${h.total_packets} packets over ${n} buckets of ${h.width}` });
    const bw = (width - left - right) / n;
    const maxP = Math.max(1, ...h.packets), maxB = Math.max(1, ...h.bytes);
    const ph = mid - top - 4, bh = bottom - mid - 6;
    for (let i = 0; i < n; i++) {
      const x = left + i * bw;
      const start = new Date(h.start_ns / 1e6 + (i * h.width_ns) / 1e6);
      const label = `${start.toISOString()} (+${h.width}): ${fmtInt(h.packets[i])} packets, ${fmtBytes(h.bytes[i])}`;
      if (h.packets[i]) {
        const y = Math.max(1, (h.packets[i] / maxP) * ph);
        svg.append(el("rect", { class: "bar bar-p", x: x + 0.5, y: mid - 4 - y, width: Math.max(1, bw - 1), height: y }));
      }
      if (h.bytes[i]) {
        const y = Math.max(1, (h.bytes[i] / maxB) * bh);
        svg.append(el("rect", { class: "bar bar-b", x: x + 0.5, y: mid + 2, width: Math.max(1, bw - 1), height: y }));
      }
      // A full-height target per bucket: its tooltip, and a click zooms in.
      const hit = el("rect", { class: "hit", x, y: top, width: bw, height: bottom - top, "data-i": i });
      hit.append(el("title", {}, label));
      svg.append(hit);
    }
    svg.append(el("text", { x: left, y: 11, class: "legend-p" }, `packets (max ${fmtInt(maxP)})`));
    svg.append(el("text", { x: width - right, y: 11, "text-anchor": "end", class: "legend-b" }, `bytes (max ${fmtBytes(maxB)})`));
    const t0 = new Date(h.start_ns / 1e6), t1 = new Date(h.start_ns / 1e6 + (n * h.width_ns) / 1e6);
    svg.append(el("text", { x: left, y: H - 4 }, t0.toISOString().replace(".000Z", "Z")));
    svg.append(el("text", { x: width - right, y: H - 4, "text-anchor": "end" }, t1.toISOString().replace(".000Z", "Z")));
    svg.addEventListener("click", (ev) => {
      const i = ev.target.getAttribute && ev.target.getAttribute("data-i");
      if (i === null || i === undefined) return;
      const s = h.start_ns / 1e6 + (Number(i) * h.width_ns) / 1e6;
      state.range = "custom";
      state.from = new Date(s).toISOString();
      state.to = new Date(s + h.width_ns / 1e6).toISOString();
      state.page = 0;
      writeHash();
      search();
    });
    box.append(svg);
  }

  // ---- packets of a flow ----------------------------------------------------------

  function openFlow(f, tr) {
    for (const r of $("flows").tBodies[0].rows) r.classList.toggle("open", r === tr);
    const terms = flowTerms(f, false);
    if (!terms) {
      setStatus("The query language cannot name a non-IP flow on its own: search for it by time instead.", true);
      return;
    }
    packetsQuery = resolvedRange ? `(${terms}) and ${resolvedRange}` : terms;
    packetsOffset = 0;
    $("packets-section").hidden = false;
    $("packets-info").textContent = `${f.key}${f.iface ? " on " + f.iface : ""} · ${fmtInt(f.packets)} packets`;
    $("hex").textContent = "Choose a packet.";
    loadPackets();
    $("packets-section").scrollIntoView({ block: "nearest" });
  }

  async function loadPackets() {
    const body = $("packets").tBodies[0];
    try {
      const a = await getJSON("/v1/packets", { q: packetsQuery, offset: String(packetsOffset), limit: String(PACKETS_PAGE) });
      body.textContent = "";
      for (const p of a.packets) {
        const tr = document.createElement("tr");
        tr.tabIndex = 0;
        tr.append(td(String(p.n + 1), "num"), td(fmtTime(p.time)), td(fmtInt(p.len), "num"), td(fmtInt(p.caplen), "num"),
          td(p.iface || ""), td(p.summary, "summary"));
        const open = () => showPacket(p, tr);
        tr.addEventListener("click", open);
        tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
        body.append(tr);
      }
      packetsMore = a.more;
      $("packets-range").textContent = a.packets.length ? `${fmtInt(a.offset + 1)}–${fmtInt(a.offset + a.packets.length)}` : "none";
      const pager = $("packets-pager");
      pager.querySelector("[data-page=prev]").disabled = packetsOffset === 0;
      pager.querySelector("[data-page=next]").disabled = !packetsMore;
    } catch (e) {
      setStatus(e.message, true);
    }
  }

  async function showPacket(p, tr) {
    for (const r of $("packets").tBodies[0].rows) r.classList.toggle("chosen", r === tr);
    const hex = $("hex");
    hex.textContent = "Loading…";
    try {
      const a = await getJSON("/v1/packets", { q: packetsQuery, offset: String(p.n), limit: "1", data: "1" });
      const pk = a.packets[0];
      if (!pk) throw new Error("the packet is no longer in the spool");
      renderHex(pk);
    } catch (e) {
      hex.textContent = e.message;
    }
  }

  function renderHex(pk) {
    const bin = atob(pk.data || "");
    const hex = $("hex");
    hex.textContent = "";
    const head = `#${pk.n + 1}  ${fmtTime(pk.time)}  ${pk.caplen} of ${pk.len} bytes${pk.iface ? "  on " + pk.iface : ""}\n${pk.summary}\n\n`;
    hex.append(head);
    for (let off = 0; off < bin.length; off += 16) {
      const o = document.createElement("span");
      o.className = "off";
      o.textContent = off.toString(16).padStart(4, "0") + "  ";
      let h = "", s = "";
      for (let i = 0; i < 16; i++) {
        if (off + i < bin.length) {
          const c = bin.charCodeAt(off + i);
          h += c.toString(16).padStart(2, "0") + " ";
          s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : ".";
        } else {
          h += "   ";
        }
        if (i === 7) h += " ";
      }
      const a = document.createElement("span");
      a.className = "asc";
      a.textContent = s;
      hex.append(o, h + " ", a, "\n");
    }
  }

  // ---- header: retention, drops, disk -----------------------------------------

  async function loadStats() {
    try {
      const s = await getJSON("/v1/stats", {});
      const sp = s.spool;
      $("st-oldest").textContent = sp.oldest ? fmtTime(sp.oldest) + " UTC" : "no packets yet";
      $("st-retention").textContent = sp.retention || "0s";
      let used = 0, budget = 0, avail = 0;
      for (const d of sp.dirs || []) {
        used += d.file_bytes || 0;
        budget += d.budget_bytes || 0;
        avail += d.disk_available_bytes || 0;
      }
      const disk = $("st-disk");
      disk.textContent = budget ? `${fmtBytes(used)} of ${fmtBytes(budget)} (${Math.round((100 * used) / budget)}%)` : fmtBytes(used);
      disk.title = `${fmtBytes(avail)} free on the spool's file systems`;
      const [drops, parts] = countDrops(s);
      const d = $("st-drops");
      d.textContent = drops === null ? "—" : fmtInt(drops);
      d.title = parts.length ? parts.join("\n") : "no capture on this server";
      d.classList.toggle("bad", drops > 0);
    } catch (e) {
      $("st-oldest").textContent = "stats unavailable: " + e.message;
    }
  }

  // countDrops adds up what capture lost: the kernel's drop counters of
  // each queue and the packets failed spool writes lost (docs/api.md,
  // /v1/stats).
  function countDrops(s) {
    const c = s.capture;
    if (!c || !c.interfaces) return [null, []];
    let total = 0;
    const parts = [];
    const add = (what, n) => {
      if (n) { total += n; parts.push(`${what}: ${fmtInt(n)}`); }
    };
    for (const i of c.interfaces) {
      for (const q of i.queues || []) {
        const at = `${i.name} queue ${q.queue}`;
        if (q.ring) add(`${at} ring drops`, q.ring.drops);
        if (q.socket) {
          add(`${at} rx_dropped`, q.socket.rx_dropped);
          add(`${at} rx_ring_full`, q.socket.rx_ring_full);
        }
        add(`${at} spool write lost`, q.spool_write_lost);
      }
      if (i.program) add(`${i.name} redirect failed`, i.program.redirect_failed);
    }
    if (!parts.length) parts.push("no drops");
    return [total, parts];
  }

  // ---- wiring ------------------------------------------------------------------------

  function formToState() {
    state.q = $("q").value;
    state.range = $("range").value;
    state.from = $("from").value.trim();
    state.to = $("to").value.trim();
  }

  $("search").addEventListener("submit", (ev) => {
    ev.preventDefault();
    formToState();
    state.page = 0;
    writeHash();
    search();
  });
  $("range").addEventListener("change", () => {
    $("custom").hidden = $("range").value !== "custom";
    if ($("range").value !== "custom") $("search").requestSubmit();
  });
  for (const th of $("flows").tHead.querySelectorAll("th[data-sort]")) {
    th.tabIndex = 0;
    const sortBy = () => {
      const s = th.dataset.sort;
      if (state.sort === s) state.order = state.order === "asc" ? "desc" : "asc";
      else {
        state.sort = s;
        state.order = s === "bytes" || s === "packets" || s === "first" || s === "last" ? "desc" : "asc";
      }
      state.page = 0;
      writeHash();
      loadFlows(searchSeq).catch((e) => setStatus(e.message, true));
    };
    th.addEventListener("click", sortBy);
    th.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(); } });
  }
  $("flows-pager").addEventListener("click", (ev) => {
    const dir = ev.target.dataset && ev.target.dataset.page;
    if (!dir) return;
    state.page = Math.max(0, state.page + (dir === "next" ? 1 : -1));
    writeHash();
    loadFlows(searchSeq).catch((e) => setStatus(e.message, true));
  });
  $("size").addEventListener("change", () => {
    state.size = parseInt($("size").value, 10);
    state.page = 0;
    writeHash();
    loadFlows(searchSeq).catch((e) => setStatus(e.message, true));
  });
  $("packets-pager").addEventListener("click", (ev) => {
    const dir = ev.target.dataset && ev.target.dataset.page;
    if (!dir) return;
    packetsOffset = Math.max(0, packetsOffset + (dir === "next" ? PACKETS_PAGE : -PACKETS_PAGE));
    loadPackets();
  });
  $("packets-close").addEventListener("click", () => { $("packets-section").hidden = true; });
  $("sel-page").addEventListener("change", () => {
    const on = $("sel-page").checked;
    for (const f of flows) {
      if (!flowTerms(f, false)) continue;
      if (on) selected.set(flowID(f), f); else selected.delete(flowID(f));
    }
    for (const cb of $("flows").tBodies[0].querySelectorAll("input[type=checkbox]:not(:disabled)")) cb.checked = on;
    updateDownloads();
  });
  $("sel-clear").addEventListener("click", () => {
    selected.clear();
    for (const cb of $("flows").querySelectorAll("input[type=checkbox]")) cb.checked = false;
    updateDownloads();
  });
  $("both").addEventListener("change", updateDownloads);
  window.addEventListener("popstate", () => { readHash(); search(); });

  readHash();
  stateToForm();
  updateDownloads();
  loadStats();
  setInterval(loadStats, 30000);
  search();
})();
