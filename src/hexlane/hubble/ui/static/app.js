// The Hubble UI page (hexlane's own code, no libraries): a service map drawn in SVG from
// /api/map, a live flow table from /api/flows/stream (Server-Sent Events read with fetch),
// filters kept in the URL's query string, a flow's details on click. Everything it shows
// comes from hexlane's JSON API; it fetches nothing else.
"use strict";

const FILTERS = ["namespace", "verdict", "pod", "ip", "port", "protocol"];
const TABLE_FILTERS = FILTERS.filter((name) => name !== "namespace");
const SVG_NS = "http://www.w3.org/2000/svg";
const LAST = 100; // stored flows the table starts with
const MAX_ROWS = 500;
const MAP_EVERY = 2; // seconds
const STATUS_EVERY = 5;
const NAMESPACES_EVERY = 10;
const RETRY_MS = 2000;
// map layout, in pixels
const BOX_W = 160, BOX_H = 44, COL_GAP = 130, ROW_GAP = 26, PAD = 18, HEAD = 24, GAP = 28;

const state = {
  filters: readFilters(),
  errors: new Map(), // what failed (status, map, stream, namespaces) -> its message
  stream: null, // the AbortController of the live stream
  retry: null,
  rows: 0,
  lost: 0,
};

function $(id) {
  return document.getElementById(id);
}

function readFilters() {
  const query = new URLSearchParams(window.location.search);
  const out = {};
  for (const name of FILTERS) out[name] = (query.get(name) || "").trim();
  return out;
}

function queryString(filters, extra) {
  const query = new URLSearchParams();
  for (const name of FILTERS) if (filters[name]) query.set(name, filters[name]);
  for (const [name, value] of Object.entries(extra || {})) query.set(name, String(value));
  return query.toString();
}

function writeUrl() {
  const text = queryString(state.filters);
  window.history.replaceState(null, "", text ? "?" + text : window.location.pathname);
}

// --- errors -----------------------------------------------------------------------------

function setError(source, message) {
  if (message) state.errors.set(source, message);
  else state.errors.delete(source);
  const banner = $("error");
  const messages = [...new Set(state.errors.values())];
  banner.hidden = messages.length === 0;
  banner.textContent = messages.join(" — ");
  document.body.dataset.state = messages.length ? "error" : "ok";
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, Object.assign({ cache: "no-store" }, options || {}));
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError("hexlane hubble ui does not answer (" + err.message + ")", 0);
  }
  if (response.ok) return response;
  let message = response.status + " " + response.statusText;
  try {
    const body = await response.json();
    if (body && body.error) message = body.error;
  } catch (err) {
    // not JSON: the status line says it
  }
  throw new ApiError(message, response.status);
}

async function getJson(path) {
  return (await api(path)).json();
}

// --- status and namespaces ----------------------------------------------------------------

async function refreshStatus() {
  const el = $("status");
  try {
    const answer = await getJson("/api/status");
    setError("status", null);
    const status = answer.status;
    const nodes = answer.nodes.length;
    const rate = Number(status.flows_rate || 0).toFixed(2);
    el.textContent = `${answer.server} · ${nodes} node${nodes === 1 ? "" : "s"} · ` +
      `flows ${status.num_flows || 0}/${status.max_flows || 0} · ${rate}/s`;
  } catch (err) {
    setError("status", err.message);
    el.textContent = "not connected";
  }
}

// The selector's choices: every namespace, and the one chosen even before a flow names it.
function offerNamespaces(names) {
  const offered = new Set(names);
  if (state.filters.namespace) offered.add(state.filters.namespace);
  const select = $("namespace");
  const wanted = ["", ...[...offered].sort()];
  const have = [...select.options].map((o) => o.value);
  if (wanted.join("\n") !== have.join("\n")) {
    select.replaceChildren(...wanted.map((name) => {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name || "All namespaces";
      return option;
    }));
  }
  select.value = state.filters.namespace;
}

async function refreshNamespaces() {
  try {
    const answer = await getJson("/api/namespaces");
    setError("namespaces", null);
    offerNamespaces(answer.namespaces.map((ns) => ns.namespace));
  } catch (err) {
    setError("namespaces", err.message);
  }
}

// --- the service map ----------------------------------------------------------------------

async function refreshMap() {
  try {
    const map = await getJson("/api/map?" + queryString({ namespace: state.filters.namespace }));
    setError("map", null);
    renderMap(map);
  } catch (err) {
    setError("map", err.message);
  }
}

function svg(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  if (parent) parent.appendChild(el);
  return el;
}

function svgText(text, attrs, parent) {
  const el = svg("text", attrs, parent);
  el.textContent = text;
  return el;
}

function formatRate(rate) {
  if (rate >= 10) return rate.toFixed(0);
  if (rate >= 1) return rate.toFixed(1);
  return rate.toFixed(2);
}

function edgeLabel(edge) {
  const port = edge.port ? " " + edge.port : "";
  const dropped = edge.dropped ? " · dropped" : "";
  return `${edge.protocol}${port} · ${formatRate(edge.rate)}/s${dropped}`;
}

// Columns: how far down the client -> server chains between workloads a box is (reserved
// identities have a column of their own; cycles are cut at the box count).
function ranks(nodes, edges) {
  const rank = new Map(nodes.map((n) => [n.id, 0]));
  const workloads = new Set(nodes.filter((n) => !n.reserved).map((n) => n.id));
  const inner = edges.filter((e) => e.source !== e.destination &&
    workloads.has(e.source) && workloads.has(e.destination));
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const e of inner) {
      const next = rank.get(e.source) + 1;
      if (next > rank.get(e.destination) && next < nodes.length) {
        rank.set(e.destination, next);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return rank;
}

const RESERVED_ORDER = ["world", "host", "remote-node", "kube-apiserver"];

function reservedOrder(id) {
  const i = RESERVED_ORDER.indexOf(id);
  return i < 0 ? RESERVED_ORDER.length : i;
}

// Reserved identities in a column on the left; each namespace a frame over the columns its
// workloads take, frames stacked top to bottom, so every box has a column of the same grid.
function layout(map) {
  const rank = ranks(map.nodes, map.edges);
  const reserved = map.nodes.filter((n) => n.reserved).sort((a, b) =>
    reservedOrder(a.id) - reservedOrder(b.id) || a.id.localeCompare(b.id));
  const left = PAD + (reserved.length ? BOX_W + COL_GAP : 0) + PAD;
  const columnX = (col) => left + col * (BOX_W + COL_GAP);
  const boxes = new Map();
  const frames = [];
  let y = PAD;
  for (const ns of map.namespaces) {
    const nodes = map.nodes.filter((n) => n.namespace === ns);
    const columns = [...new Set(nodes.map((n) => rank.get(n.id)))].sort((a, b) => a - b);
    let rows = 0;
    for (const col of columns) {
      nodes.filter((n) => rank.get(n.id) === col).forEach((node, row) => {
        boxes.set(node.id, { node, x: columnX(col), y: y + HEAD + PAD + row * (BOX_H + ROW_GAP),
          w: BOX_W, h: BOX_H });
        rows = Math.max(rows, row + 1);
      });
    }
    const x = columnX(columns[0]) - PAD;
    const frame = { namespace: ns, x, y, w: columnX(columns[columns.length - 1]) + BOX_W + PAD - x,
      h: HEAD + 2 * PAD + rows * BOX_H + (rows - 1) * ROW_GAP };
    frames.push(frame);
    y += frame.h + GAP;
  }
  reserved.forEach((node, row) => {
    boxes.set(node.id, { node, x: PAD, y: PAD + HEAD + PAD + row * (BOX_H + ROW_GAP),
      w: BOX_W, h: BOX_H });
  });
  const all = [...boxes.values()];
  return { frames, boxes,
    width: Math.max(0, ...all.map((b) => b.x + b.w), ...frames.map((f) => f.x + f.w)) + PAD,
    height: Math.max(0, ...all.map((b) => b.y + b.h), ...frames.map((f) => f.y + f.h)) + PAD };
}

// How an edge leaves its source box for its destination box.
function orientation(a, b) {
  if (a === b) return "self";
  if (b.x >= a.x + a.w) return "right";
  if (b.x + b.w <= a.x) return "left";
  return b.y > a.y ? "down" : "up";
}

const SIDES = { right: ["right", "left"], left: ["left", "right"], down: ["bottom", "top"],
  up: ["top", "bottom"] };

// Where each edge leaves and enters its boxes: the ends on one side of a box spread evenly
// along it, in the order of the boxes at their other ends (so edges do not cross there).
function anchors(edges, boxes) {
  const sides = new Map();
  edges.forEach((e, i) => {
    const a = boxes.get(e.source), b = boxes.get(e.destination);
    const way = orientation(a, b);
    if (way === "self") return;
    for (const [end, box, other, side] of [[0, a, b, SIDES[way][0]], [1, b, a, SIDES[way][1]]]) {
      const key = `${box.node.id}\n${side}`;
      if (!sides.has(key)) sides.set(key, []);
      sides.get(key).push({ i, end, box, other, side });
    }
  });
  const points = edges.map(() => [null, null]);
  for (const ends of sides.values()) {
    const across = ends[0].side === "left" || ends[0].side === "right" ? "y" : "x";
    ends.sort((p, q) => p.other[across] - q.other[across] || p.i - q.i);
    ends.forEach((p, k) => {
      const f = (k + 1) / (ends.length + 1), b = p.box;
      points[p.i][p.end] = {
        left: [b.x, b.y + b.h * f], right: [b.x + b.w, b.y + b.h * f],
        top: [b.x + b.w * f, b.y], bottom: [b.x + b.w * f, b.y + b.h] }[p.side];
    });
  }
  return points;
}

// An edge as a path of cubic Bézier segments [p0, p1, p2, p3]: one curve from side to side,
// or, when that curve would cross another box, out into the free lane above or below the
// boxes in its way, along it, and back in. A box's edges to itself are loops above it, the
// `loop`-th one higher. `lanes` are those taken by the edges drawn before.
function edgePath(a, b, ends, loop, boxes, lanes) {
  const way = orientation(a, b);
  if (way === "self") {
    const x1 = a.x + a.w * 0.62, x2 = a.x + a.w * 0.38, top = a.y - 34 - 14 * loop;
    return [[[x1, a.y], [x1, top], [x2, top], [x2, a.y]]];
  }
  const [p0, p3] = ends;
  if (way === "down" || way === "up") {
    const dy = Math.max(30, Math.abs(p3[1] - p0[1]) / 2) * (way === "down" ? 1 : -1);
    return [[p0, [p0[0], p0[1] + dy], [p3[0], p3[1] - dy], p3]];
  }
  const sign = way === "right" ? 1 : -1;
  const dx = Math.max(40, Math.abs(p3[0] - p0[0]) / 2) * sign;
  const direct = [[p0, [p0[0] + dx, p0[1]], [p3[0] - dx, p3[1]], p3]];
  const others = boxes.filter((box) => box !== a && box !== b);
  if (!crosses(direct, others)) return direct;
  // the lane: a height between p0's and p3's where no box lies between the two columns
  const xa = p0[0] + sign * COL_GAP / 2, xb = p3[0] - sign * COL_GAP / 2;
  const [lo, hi] = [Math.min(xa, xb), Math.max(xa, xb)];
  const inWay = others.filter((box) => box.x < hi && box.x + box.w > lo);
  const free = (y) => !inWay.some((box) => y > box.y - 6 && y < box.y + box.h + 6);
  // another edge's lane over the same stretch: 10 px apart
  const unused = (y) => !lanes.some((l) => Math.abs(l.y - y) < 10 && l.lo < hi && l.hi > lo);
  const middle = (p0[1] + p3[1]) / 2;
  const candidates = inWay.flatMap((box) => [box.y - ROW_GAP / 2, box.y + box.h + ROW_GAP / 2])
    .flatMap((y) => [y, y - 10, y + 10]).filter((y) => free(y) && unused(y))
    .sort((y1, y2) => Math.abs(y1 - middle) - Math.abs(y2 - middle));
  if (!candidates.length) return direct;
  const y = candidates[0], bend = sign * 30;
  lanes.push({ y, lo, hi });
  return [
    [p0, [p0[0] + bend, p0[1]], [xa - bend, y], [xa, y]],
    [[xa, y], [xa, y], [xb, y], [xb, y]],
    [[xb, y], [xb + bend, y], [p3[0] - bend, p3[1]], p3],
  ];
}

function pointAt(path, t) {
  const at = Math.min(t * path.length, path.length - 1e-9);
  const segment = path[Math.floor(at)], s = at - Math.floor(at), u = 1 - s;
  const k = [u * u * u, 3 * u * u * s, 3 * u * s * s, s * s * s];
  return [0, 1].map((i) => segment.reduce((sum, p, j) => sum + k[j] * p[i], 0));
}

function inside(point, box) {
  return point[0] > box.x && point[0] < box.x + box.w && point[1] > box.y &&
    point[1] < box.y + box.h;
}

function crosses(path, boxes) {
  for (let i = 1; i < 32; i++) {
    const point = pointAt(path, i / 32);
    if (boxes.some((box) => inside(point, box))) return true;
  }
  return false;
}

function pathData(path) {
  return `M${path[0][0]} ` + path.map(([, p1, p2, p3]) => `C${p1} ${p2} ${p3}`).join(" ");
}

function overlap(r, s) {
  const w = Math.min(r.x + r.w, s.x + s.w) - Math.max(r.x, s.x);
  const h = Math.min(r.y + r.h, s.y + s.h) - Math.max(r.y, s.y);
  return w > 0 && h > 0 ? w * h : 0;
}

// Where along its path an edge's label goes: the middle, else the nearest place that covers
// no box and no label placed before it, else the place covering least.
const LABEL_AT = [0.5, 0.4, 0.6, 0.3, 0.7, 0.45, 0.55, 0.35, 0.65, 0.25, 0.75, 0.2, 0.8,
  0.15, 0.85];

function placeLabel(path, width, height, taken) {
  let best = null, least = Infinity;
  for (const t of LABEL_AT) {
    const [x, y] = pointAt(path, t);
    const rect = { x: x - width / 2 - 3, y: y - height / 2 - 1, w: width + 6, h: height + 2 };
    const covered = taken.reduce((sum, r) => sum + overlap(r, rect), 0);
    if (covered === 0) return rect;
    if (covered < least) [best, least] = [rect, covered];
  }
  return best;
}

function renderMap(map) {
  const root = $("map");
  const { frames, boxes, width: w, height: h } = layout(map);
  root.replaceChildren();
  root.setAttribute("width", w);
  root.setAttribute("height", h);
  root.setAttribute("viewBox", `0 0 ${w} ${h}`);
  root.dataset.namespace = map.namespace;
  $("map-empty").hidden = map.nodes.length > 0;
  $("map-info").textContent = `${map.namespace || "all namespaces"} · ${map.nodes.length} ` +
    `boxes, ${map.edges.length} edges from the last ${map.flows} flows`;

  const defs = svg("defs", {}, root);
  for (const [id, cls] of [["arrow", "arrow"], ["arrow-dropped", "arrow dropped"]]) {
    const marker = svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5,
      markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" }, defs);
    svg("path", { d: "M0,0 L10,5 L0,10 z", class: cls }, marker);
  }
  for (const frame of frames) {
    const g = svg("g", { class: "ns-group", "data-namespace": frame.namespace }, root);
    svg("rect", { class: "ns-frame", x: frame.x, y: frame.y, width: frame.w, height: frame.h,
      rx: 8 }, g);
    svgText(frame.namespace, { class: "ns-label", x: frame.x + 10, y: frame.y + 17 }, g);
  }

  const edgeLayer = svg("g", { class: "edges" }, root);
  const nodeLayer = svg("g", { class: "nodes" }, root);
  const labelLayer = svg("g", { class: "edge-labels" }, root); // never hidden by a box
  const ends = anchors(map.edges, boxes);
  const loops = new Map(); // box -> its loops drawn so far
  const lanes = [];
  // what a label must not cover: the boxes and the namespaces' names
  const taken = [...boxes.values(), ...frames.map((f) => ({ x: f.x, y: f.y, w: 120, h: HEAD }))];
  map.edges.forEach((e, i) => {
    const loop = e.source === e.destination ? (loops.get(e.source) || 0) : 0;
    if (e.source === e.destination) loops.set(e.source, loop + 1);
    const path = edgePath(boxes.get(e.source), boxes.get(e.destination), ends[i], loop,
      [...boxes.values()], lanes);
    const attrs = { class: "edge" + (e.dropped ? " dropped" : ""),
      "data-edge": `${e.source}->${e.destination}`, "data-protocol": e.protocol,
      "data-port": e.port, "data-verdict": e.verdict, "data-flows": e.flows,
      "data-rate": e.rate };
    const g = svg("g", attrs, edgeLayer);
    svg("path", { d: pathData(path),
      "marker-end": `url(#${e.dropped ? "arrow-dropped" : "arrow"})` }, g);
    svg("title", {}, g).textContent = `${e.source} → ${e.destination}\n` +
      `${e.protocol} ${e.port || ""} ${e.verdict}\n${e.flows} flows, ` +
      `${formatRate(e.rate)}/s` + (e.drop_reasons.length ? "\n" + e.drop_reasons.join(", ") : "");
    const label = svg("g", Object.assign({}, attrs, { class: attrs.class + " label" }),
      labelLayer);
    const back = svg("rect", { class: "edge-label-back", rx: 3 }, label);
    const text = svgText(edgeLabel(e), { class: "edge-label", "text-anchor": "middle" }, label);
    const size = text.getBBox();
    const rect = placeLabel(path, size.width, size.height, taken);
    taken.push(rect);
    for (const [k, v] of Object.entries({ x: rect.x, y: rect.y, width: rect.w, height: rect.h })) {
      back.setAttribute(k, v);
    }
    text.setAttribute("x", rect.x + rect.w / 2);
    text.setAttribute("y", rect.y + rect.h / 2 + size.height * 0.3);
  });

  for (const box of boxes.values()) {
    const n = box.node;
    const g = svg("g", { class: "node" + (n.reserved ? " reserved" : ""), "data-node": n.id,
      "data-namespace": n.namespace }, nodeLayer);
    svg("rect", { x: box.x, y: box.y, width: box.w, height: box.h, rx: 6 }, g);
    svgText(n.name, { class: "node-name", x: box.x + 10, y: box.y + 18 }, g);
    const pods = n.pods.length;
    const sub = n.reserved ? "reserved identity"
      : `${n.kind || "pods"} · ${pods} pod${pods === 1 ? "" : "s"}`;
    svgText(sub, { class: "node-sub", x: box.x + 10, y: box.y + 35 }, g);
    svg("title", {}, g).textContent = n.id + (pods ? "\n" + n.pods.join("\n") : "");
    if (!n.reserved) {
      // its flows in the table (and its namespace's map, when one namespace is shown)
      g.addEventListener("click", () => {
        const namespace = state.filters.namespace && n.namespace;
        applyFilters({ pod: n.id, namespace });
        refreshMap();
      });
    }
  }
}

// --- the flow table -----------------------------------------------------------------------

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function addRow(item) {
  const tbody = $("flows").tBodies[0];
  const row = document.createElement("tr");
  const verdict = item.verdict.toLowerCase();
  row.className = "flow-row verdict-row-" + verdict;
  row.dataset.uuid = item.uuid;
  row.dataset.verdict = item.verdict;
  row.dataset.source = item.source;
  row.dataset.destination = item.destination;
  cell(row, item.time);
  cell(row, item.node_name);
  cell(row, item.source);
  cell(row, item.destination);
  cell(row, item.type);
  cell(row, item.verdict, "verdict verdict-" + verdict);
  cell(row, item.summary);
  row.addEventListener("click", () => showDetails(item, row));
  tbody.insertBefore(row, tbody.firstChild);
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
  state.rows = tbody.rows.length;
  showTableInfo();
}

function showTableInfo() {
  const lost = state.lost ? ` · ${state.lost} lost (the Observer's ring overran)` : "";
  $("flows-info").textContent = `${state.rows} shown, newest first${lost}`;
}

function parseEvent(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, data: JSON.parse(data.join("\n")) } : null;
}

function handleEvent(message) {
  if (message.event === "flow") addRow(message.data);
  else if (message.event === "lost") {
    state.lost += message.data.lost;
    showTableInfo();
  } else if (message.event === "error") setError("stream", message.data.error);
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  clearTimeout(state.retry);
}

async function startStream() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  $("flows").tBodies[0].replaceChildren();
  state.rows = 0;
  state.lost = 0;
  showTableInfo();
  const url = "/api/flows/stream?" + queryString(state.filters, { last: LAST });
  try {
    const response = await api(url, { signal: controller.signal });
    setError("stream", null);
    showFilterError(null);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (message) handleEvent(message);
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err.status === 400) {
      showFilterError(err.message);
      return; // the filters must change first
    }
    setError("stream", err.message);
  }
  if (state.stream === controller) {
    state.retry = setTimeout(startStream, RETRY_MS); // the Observer went away: follow again
  }
}

function showFilterError(message) {
  const el = $("filter-error");
  el.hidden = !message;
  el.textContent = message || "";
}

// --- details ------------------------------------------------------------------------------

function showDetails(item, row) {
  for (const selected of document.querySelectorAll("tr.flow-row.selected")) {
    selected.classList.remove("selected");
  }
  row.classList.add("selected");
  const flow = item.flow;
  const reply = item.is_reply === null ? "unknown" : item.is_reply ? "yes" : "no";
  const fields = [
    ["Time", item.time], ["Node", item.node_name], ["Source", item.source],
    ["Destination", item.destination], ["Type", item.type], ["Verdict", item.verdict],
    ["Summary", item.summary], ["Reply", reply],
    ["Direction", flow.traffic_direction || ""], ["Drop reason", flow.drop_reason_desc || ""],
    ["UUID", item.uuid],
  ];
  const list = $("details-fields");
  list.replaceChildren();
  for (const [name, value] of fields) {
    if (!value) continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.field = name.toLowerCase().replace(/ /g, "-");
    list.append(dt, dd);
  }
  $("details-json").textContent = JSON.stringify(flow, null, 2);
  const panel = $("details");
  panel.dataset.uuid = item.uuid;
  panel.hidden = false;
}

// --- filters ------------------------------------------------------------------------------

function fillForm() {
  for (const name of TABLE_FILTERS) $("filter-" + name).value = state.filters[name];
  offerNamespaces([...$("namespace").options].map((o) => o.value).filter(Boolean));
}

function applyFilters(changes) {
  Object.assign(state.filters, changes);
  writeUrl();
  fillForm();
  startStream();
}

function readForm() {
  const out = {};
  for (const name of TABLE_FILTERS) out[name] = $("filter-" + name).value.trim();
  return out;
}

function start() {
  fillForm();
  refreshNamespaces();
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilters(readForm());
  });
  for (const name of TABLE_FILTERS) {
    $("filter-" + name).addEventListener("change", () => applyFilters(readForm()));
  }
  $("clear-filters").addEventListener("click", () => {
    applyFilters(Object.fromEntries(TABLE_FILTERS.map((name) => [name, ""])));
  });
  $("namespace").addEventListener("change", (event) => {
    applyFilters({ namespace: event.target.value });
    refreshMap();
  });
  $("details-close").addEventListener("click", () => {
    $("details").hidden = true;
  });
  refreshStatus();
  refreshMap();
  startStream();
  let seconds = 0;
  setInterval(() => {
    seconds += 1;
    // every few seconds; every other second while it fails, to recover soon
    const due = (source, every) => seconds % (state.errors.has(source) ? 2 : every) === 0;
    if (due("map", MAP_EVERY)) refreshMap();
    if (due("status", STATUS_EVERY)) refreshStatus();
    if (due("namespaces", NAMESPACES_EVERY)) refreshNamespaces();
  }, 1000);
}

document.addEventListener("DOMContentLoaded", start);
