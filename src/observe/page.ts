/**
 * The directory's status page: one HTML document with its style and script inline, so that it works on a
 * machine with no way out to the internet and needs nothing served beside it. It reads the JSON APIs
 * next to it (relative URLs, so that it works behind a proxy that mounts it under a path), draws its own
 * chart, and builds every piece of text from the API with textContent: paths are user data.
 */

const STYLE = `
:root { --up: #1a7f37; --suspect: #b07800; --down: #cf222e; --line: #d0d7de; --muted: #57606a; --bg2: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: #1f2328; background: #fff; }
header { padding: 10px 16px; background: #24292f; color: #fff; display: flex; flex-wrap: wrap; gap: 4px 20px; align-items: baseline; }
header h1 { font-size: 18px; margin: 0 8px 0 0; }
header .k { color: #afb8c1; }
main { padding: 0 16px 24px; max-width: 1200px; }
h2 { font-size: 15px; margin: 20px 0 6px; }
#error { display: none; padding: 8px 16px; background: #ffebe9; color: var(--down); border-bottom: 1px solid var(--down); }
#error.on { display: block; }
table { border-collapse: collapse; width: 100%; }
.scroll { overflow-x: auto; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: var(--bg2); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, monospace; font-size: 12px; }
.state { display: inline-block; min-width: 64px; padding: 0 6px; border-radius: 9px; color: #fff; text-align: center; font-weight: 600; }
tr[data-state="up"] .state { background: var(--up); }
tr[data-state="suspect"] .state { background: var(--suspect); }
tr[data-state="down"] .state { background: var(--down); }
tr[data-state="down"] td { color: var(--down); }
.totals { display: flex; flex-wrap: wrap; gap: 8px 28px; }
.totals b { font-size: 18px; display: block; }
.muted { color: var(--muted); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 12px; }
svg { width: 100%; height: auto; background: var(--bg2); border: 1px solid var(--line); }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
.legend span { margin-right: 14px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
nav#crumbs a { margin-right: 2px; }
a { color: #0969da; text-decoration: none; }
a:hover { text-decoration: underline; }
tr.selected td { background: #ddf4ff; }
#file dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0 10px; }
#file dt { color: var(--muted); }
#file dd { margin: 0; word-break: break-all; }
#file h2 { word-break: break-all; }
`;

const SCRIPT = String.raw`
"use strict";
var STATUS_MS = 1000, HISTORY_MS = 3000, FOLDER_MS = 4000;
var COLORS = { written: "#0969da", read: "#1a7f37", under: "#cf222e", repaired: "#8250df" };
var failures = {};
var skewMs = 0;
var view = { prefix: "/", file: null, seq: 0, lsJson: "", fileJson: "" };

function $(id) { return document.getElementById(id); }
function el(tag, attrs, children) {
  var e = document.createElement(tag);
  for (var k in attrs || {}) {
    if (k === "text") e.textContent = attrs[k];
    else if (k === "class") e.className = attrs[k];
    else e.setAttribute(k, attrs[k]);
  }
  (children || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
  return e;
}
function td(text, cls) { return el("td", { text: String(text), class: cls || "" }); }
function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }

var UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
function bytes(n) {
  if (n == null) return "\u2014";
  var i = 0;
  while (Math.abs(n) >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + " " + UNITS[i];
}
function count(n) { return Number(n).toLocaleString("en"); }
function ago(ms) {
  var s = Math.max(0, Math.round((Date.now() + skewMs - ms) / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function pad(n) { return (n < 10 ? "0" : "") + n; }
function stamp(ms) {
  var d = new Date(ms);
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
}
function clock() { return new Date().toLocaleTimeString("en-GB"); }

// A failing source keeps what it last showed; the banner says what failed and since when.
function failed(source, err) {
  failures[source] = failures[source] || { since: clock() };
  failures[source].message = err && err.message ? err.message : String(err);
  banner();
}
function recovered(source) { if (failures[source]) { delete failures[source]; banner(); } }
function banner() {
  var lines = Object.keys(failures).map(function (s) { return s + ": " + failures[s].message + " (since " + failures[s].since + ")"; });
  $("error").textContent = lines.length ? "Could not refresh \u2014 showing the last data. " + lines.join("; ") : "";
  $("error").className = lines.length ? "on" : "";
}

function getJson(url) {
  return fetch(url, { credentials: "same-origin", cache: "no-store" }).then(function (res) {
    return res.text().then(function (text) {
      var body = null;
      try { body = JSON.parse(text); } catch (e) { /* an error page of a proxy, say */ }
      if (!res.ok) {
        var err = new Error(body && body.error ? body.error.code + ": " + body.error.message : "HTTP " + res.status);
        err.status = res.status;
        throw err;
      }
      if (body === null) throw new Error("not JSON");
      // A browser on another clock would show wrong ages; a second's rounding is not worth correcting.
      var date = Date.parse(res.headers.get("Date") || "");
      if (!isNaN(date)) skewMs = Math.abs(date - Date.now()) > 5000 ? date - Date.now() : 0;
      return body;
    });
  });
}

// Each source polls on its own: the next request leaves only after the last one ended.
function poll(source, ms, load) {
  function tick() {
    load().then(function () { recovered(source); }, function (err) { failed(source, err); })
      .then(function () { setTimeout(tick, ms); });
  }
  tick();
}

function loadStatus() {
  return getJson("api/status").then(function (s) {
    var d = s.directory;
    document.title = "dfs " + d.clusterId;
    $("cluster").textContent = d.clusterId;
    $("dirurl").textContent = d.url;
    $("replicas").textContent = d.replicas + " (at least " + d.minReplicas + ")";
    $("deadafter").textContent = d.deadAfterSeconds + " s";
    $("refreshed").textContent = clock();
    var body = clear($("nodes"));
    s.nodes.slice().sort(function (a, b) { return a.role.localeCompare(b.role) || a.url.localeCompare(b.url); }).forEach(function (n) {
      body.appendChild(el("tr", { "data-state": n.state, "data-url": n.url, "data-id": n.id }, [
        td(n.role), td(n.url, "mono"), td(n.zone || "\u2014"),
        el("td", {}, [el("span", { class: "state", text: n.state })]),
        td(bytes(n.capacity), "n"), td(bytes(n.used), "n"), td(bytes(n.free), "n"), td(count(n.chunks), "n"),
        el("td", { text: ago(Date.parse(n.lastSeen)), title: n.lastSeen }),
      ]));
    });
    if (!s.nodes.length) body.appendChild(el("tr", {}, [el("td", { colspan: "9", class: "muted", text: "No node has registered yet." })]));
    $("t-files").textContent = count(s.files);
    $("t-bytes").textContent = bytes(s.bytes);
    $("t-chunks").textContent = count(s.chunks);
    $("t-under").textContent = count(s.underReplicated);
    $("t-under").style.color = s.underReplicated > 0 ? "var(--down)" : "";
    $("t-scanned").textContent = s.scannedAt ? ago(Date.parse(s.scannedAt)) : "not yet";
    $("t-scanned").title = s.scannedAt || "";
  });
}

var SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  var e = document.createElementNS(SVGNS, tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text != null) e.textContent = text;
  return e;
}
// The smallest of 1, 2 or 5 times a power of ten at or above v: a top of the scale that reads well.
function niceMax(v) {
  if (!(v > 0)) return 1;
  var p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 5, 10].map(function (m) { return m * p; }).find(function (m) { return m >= v; });
}
// series: [{ name, color, values, bars? }]; every value lines up with samples[i].t.
function drawChart(box, samples, series, fmt) {
  var W = 560, H = 170, L = 64, R = 8, T = 8, B = 22;
  var root = clear(box).appendChild(svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" }));
  if (!samples.length) {
    root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "No samples yet"));
    return;
  }
  var t1 = Date.now() + skewMs, t0 = Math.min(samples[0].t, t1 - 60000);
  var top = niceMax(Math.max.apply(null, series.map(function (s) { return Math.max.apply(null, s.values); })));
  function x(t) { return L + (W - L - R) * (t - t0) / (t1 - t0); }
  function y(v) { return T + (H - T - B) * (1 - v / top); }
  [0, 0.5, 1].forEach(function (f) {
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(top * f), y2: y(top * f), stroke: "#d0d7de" }));
    root.appendChild(svg("text", { x: L - 4, y: y(top * f) + 4, "text-anchor": "end" }, fmt(top * f)));
  });
  var mins = Math.round((t1 - t0) / 60000);
  root.appendChild(svg("text", { x: L, y: H - 6 }, "\u2212" + mins + " min"));
  root.appendChild(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "now"));
  var step = samples.length > 1 ? (x(samples[samples.length - 1].t) - x(samples[0].t)) / (samples.length - 1) : 4;
  series.forEach(function (s) {
    if (s.bars) {
      s.values.forEach(function (v, i) {
        if (v > 0) root.appendChild(svg("rect", { x: x(samples[i].t) - Math.max(1, step / 2), width: Math.max(2, step), y: y(v), height: y(0) - y(v), fill: s.color, opacity: 0.6 }));
      });
    } else {
      var pts = s.values.map(function (v, i) { return x(samples[i].t).toFixed(1) + "," + y(v).toFixed(1); });
      root.appendChild(svg("polyline", { points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 1.6 }));
    }
  });
}
function legend(box, series, fmt) {
  clear(box);
  series.forEach(function (s) {
    var last = s.values.length ? s.values[s.values.length - 1] : 0;
    box.appendChild(el("span", {}, [el("i", { style: "background:" + s.color }), s.name + " " + fmt(last)]));
  });
}

function loadHistory() {
  return getJson("api/history").then(function (h) {
    var per = h.intervalSeconds || 1, ss = h.samples;
    function col(k, scale) { return ss.map(function (s) { return s[k] * (scale || 1); }); }
    var rate = function (v) { return bytes(v) + "/s"; };
    var flow = [
      { name: "written", color: COLORS.written, values: col("writtenBytes", 1 / per) },
      { name: "read", color: COLORS.read, values: col("readBytes", 1 / per) },
    ];
    var repair = [
      { name: "under-replicated", color: COLORS.under, values: col("underReplicated") },
      { name: "copies made by repair", color: COLORS.repaired, values: col("repaired"), bars: true },
    ];
    drawChart($("chart-flow"), ss, flow, rate);
    legend($("legend-flow"), flow, rate);
    drawChart($("chart-repair"), ss, repair, count);
    legend($("legend-repair"), repair, count);
    $("interval").textContent = "one sample every " + per + " s";
  });
}

// The place in the namespace lives in the URL's fragment: reload and the back button keep it.
function hashOf(path) { return "#" + encodeURIComponent(path).replace(/%2F/g, "/"); }
function fromHash() {
  var p = "/";
  try { p = decodeURIComponent(location.hash.slice(1)) || "/"; } catch (e) { /* a hand-typed fragment */ }
  if (p.charAt(0) !== "/") p = "/" + p;
  var slash = p.lastIndexOf("/");
  view.prefix = p.slice(0, slash + 1);
  view.file = slash === p.length - 1 ? null : p;
  view.seq++;
  view.lsJson = view.fileJson = "";
  crumbs();
  clear($("ls"));
  clear($("file"));
  loadFolder().catch(function (err) { failed("folder", err); });
}
function baseName(p) { var parts = p.split("/"); return parts[parts.length - 1] || parts[parts.length - 2] + "/"; }
function crumbs() {
  var nav = clear($("crumbs")), at = "/";
  nav.appendChild(el("a", { href: hashOf("/"), text: "/" }));
  view.prefix.split("/").filter(Boolean).forEach(function (seg) {
    at += seg + "/";
    nav.appendChild(el("a", { href: hashOf(at), text: seg }));
    nav.appendChild(document.createTextNode("/"));
  });
}

function loadFolder() {
  var seq = view.seq, prefix = view.prefix, file = view.file;
  var ls = getJson("api/ls?prefix=" + encodeURIComponent(prefix));
  var detail = file ? getJson("api/file?path=" + encodeURIComponent(file)).catch(function (err) {
    if (err.status === 404) return { missing: true };
    throw err;
  }) : Promise.resolve(null);
  return Promise.all([ls, detail]).then(function (r) {
    if (seq !== view.seq) return; // the user went elsewhere while this was on its way
    var lsJson = JSON.stringify(r[0]), fileJson = JSON.stringify(r[1]);
    if (lsJson !== view.lsJson) { view.lsJson = lsJson; showFolder(r[0]); }
    if (fileJson !== view.fileJson) { view.fileJson = fileJson; showFile(file, r[1]); }
  });
}
function showFolder(l) {
  var body = clear($("ls"));
  if (view.prefix !== "/") {
    var up = view.prefix.slice(0, view.prefix.slice(0, -1).lastIndexOf("/") + 1);
    body.appendChild(el("tr", { "data-path": up, class: "up" }, [el("td", {}, [el("a", { href: hashOf(up), text: "../" })]), td(""), td(""), td("")]));
  }
  l.folders.slice().sort().forEach(function (f) {
    body.appendChild(el("tr", { "data-path": f, class: "folder" }, [el("td", {}, [el("a", { href: hashOf(f), text: baseName(f) })]), td(""), td(""), td("")]));
  });
  l.files.slice().sort(function (a, b) { return a.path < b.path ? -1 : a.path > b.path ? 1 : 0; }).forEach(function (f) {
    body.appendChild(el("tr", { "data-path": f.path, class: "file" + (f.path === view.file ? " selected" : "") }, [
      el("td", {}, [el("a", { href: hashOf(f.path), text: baseName(f.path) })]),
      td(bytes(f.size), "n"), td(f.version, "n"), el("td", { text: stamp(f.mtime), title: ago(f.mtime) }),
    ]));
  });
  if (!l.folders.length && !l.files.length) body.appendChild(el("tr", {}, [el("td", { colspan: "4", class: "muted", text: "This folder is empty." })]));
  if (l.truncated) body.appendChild(el("tr", {}, [el("td", { colspan: "4", class: "muted", text: "Only the first entries are shown." })]));
}
function showFile(path, f) {
  var box = clear($("file"));
  if (!path) return;
  box.appendChild(el("h2", { text: path }));
  if (!f || f.missing) { box.appendChild(el("p", { class: "muted", text: "This file does not exist (any more)." })); return; }
  box.appendChild(el("dl", {}, [
    el("dt", { text: "Version" }), el("dd", { id: "file-version", text: String(f.version) }),
    el("dt", { text: "Size" }), el("dd", { id: "file-size", text: bytes(f.size) + " (" + count(f.size) + " bytes)" }),
    el("dt", { text: "Modified" }), el("dd", { id: "file-mtime", text: stamp(f.mtime) }),
    el("dt", { text: "SHA-256" }), el("dd", { id: "file-sha256", class: "mono", text: f.sha256 }),
  ]));
  var rows = f.chunks.map(function (c, i) {
    var where = c.replicas.length ? c.replicas.map(function (r) { return el("div", { class: "replica", text: r.url }); }) : ["nowhere live"];
    return el("tr", { "data-hash": c.hash }, [td(i, "n"), td(c.hash, "mono"), td(bytes(c.size), "n"), el("td", { class: "mono" }, where)]);
  });
  box.appendChild(el("div", { class: "scroll" }, [el("table", { id: "chunks" }, [
    el("thead", {}, [el("tr", {}, [el("th", { class: "n", text: "#" }), el("th", { text: "Chunk hash" }), el("th", { class: "n", text: "Size" }), el("th", { text: "Replicas" })])]),
    el("tbody", {}, rows.length ? rows : [el("tr", {}, [el("td", { colspan: "4", class: "muted", text: "No chunks: the file is empty." })])]),
  ])]));
}

window.addEventListener("hashchange", fromHash);
fromHash();
poll("status", STATUS_MS, loadStatus);
poll("history", HISTORY_MS, loadHistory);
setTimeout(function () { poll("folder", FOLDER_MS, loadFolder); }, FOLDER_MS);
`;

const BODY = `
<header>
  <h1>dfs</h1>
  <span><span class="k">cluster</span> <span id="cluster">\u2026</span></span>
  <span><span class="k">directory</span> <span id="dirurl"></span></span>
  <span><span class="k">replicas</span> <span id="replicas"></span></span>
  <span><span class="k">dead after</span> <span id="deadafter"></span></span>
  <span><span class="k">refreshed</span> <span id="refreshed">never</span></span>
</header>
<div id="error" role="alert"></div>
<main>
  <h2>Nodes</h2>
  <div class="scroll"><table>
    <thead><tr><th>Role</th><th>URL</th><th>Zone</th><th>State</th><th class="n">Capacity</th><th class="n">Used</th><th class="n">Free</th><th class="n">Chunks</th><th>Last seen</th></tr></thead>
    <tbody id="nodes"></tbody>
  </table></div>
  <h2>Totals</h2>
  <div class="totals">
    <div><span class="muted">files</span><b id="t-files">\u2014</b></div>
    <div><span class="muted">bytes</span><b id="t-bytes">\u2014</b></div>
    <div><span class="muted">chunks</span><b id="t-chunks">\u2014</b></div>
    <div><span class="muted">under-replicated</span><b id="t-under">\u2014</b></div>
    <div><span class="muted">last scan</span><b id="t-scanned">\u2014</b></div>
  </div>
  <h2>Activity <span class="muted" id="interval"></span></h2>
  <div class="charts">
    <div><div class="legend" id="legend-flow"></div><div id="chart-flow"></div></div>
    <div><div class="legend" id="legend-repair"></div><div id="chart-repair"></div></div>
  </div>
  <h2>Files</h2>
  <nav id="crumbs"></nav>
  <div class="scroll"><table>
    <thead><tr><th>Name</th><th class="n">Size</th><th class="n">Version</th><th>Modified</th></tr></thead>
    <tbody id="ls"></tbody>
  </table></div>
  <section id="file"></section>
</main>
`;

// Nothing from elsewhere may load, even if a page were ever to slip: the page needs only itself and its APIs.
const CSP = "default-src 'none'; connect-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

export function statusPage(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="${CSP}">
<link rel="icon" href="data:,">
<title>dfs</title>
<style>${STYLE}</style>
</head>
<body>${BODY}<script>${SCRIPT}</script>
</body>
</html>
`;
}
