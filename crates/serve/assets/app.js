// sweep serve: the dashboard's one script. No framework, no chart library:
// the DOM is built with createElement and textContent (no string is ever
// parsed as HTML, so a name from the database is always text), and charts are SVG drawn here.
// Pages poll their JSON every few seconds and update in place: rows and
// curves are keyed by job id, so nothing is rebuilt and nothing flickers.
"use strict";

const POLL_MS = 3000;
// Rows of the jobs table a page shows, unless the URL says (`?rows=N`, 1 to 1000).
const PAGE_ROWS = 500;
const SVGNS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fdf", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#2c3e50", "#f1c40f",
  "#e84393", "#7f8c8d", "#6c5ce7", "#a0522d"];
const STATUSES = ["pending", "running", "done", "failed", "interrupted", "waiting", "pruned"];

// ---- DOM helpers ---------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function setText(node, text) {
  const t = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== t) node.textContent = t;
}

function link(href, text) {
  return el("a", { href }, text);
}

const sweepHref = (id) => "/sweeps/" + encodeURIComponent(id);
const jobHref = (id) => "/jobs/" + encodeURIComponent(id);

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new Error(url + ": " + response.status + " " + response.statusText);
  }
  if (!response.ok) throw new Error(url + ": " + (body && body.error ? body.error : response.status));
  return body;
}

// ---- formats --------------------------------------------------------------

function fmtAcc(x) {
  return x === null || x === undefined ? "-" : (100 * x).toFixed(2) + "%";
}

function fmtNum(x, digits) {
  if (x === null || x === undefined) return "-";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
  return String(Number(x.toPrecision(digits || 4)));
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "-";
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function fmtBytes(b) {
  if (b < 1024) return b + " B";
  if (b < 1024 * 1024) return (b / 1024).toFixed(1) + " KiB";
  return (b / 1024 / 1024).toFixed(2) + " MiB";
}

function fmtValue(v) {
  return typeof v === "number" ? fmtNum(v, 6) : v === null || v === undefined ? "-" : String(v);
}

function colorOf(id) {
  let h = 0;
  for (const ch of id) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

// ---- keyed tables ---------------------------------------------------------

// Updates `tbody` to one row per item, keyed, in order: cells change their
// text only where it changed, rows move only where the order changed.
function syncRows(tbody, items, keyOf, cellsOf, rowClass) {
  const existing = new Map();
  for (const tr of tbody.children) existing.set(tr.dataset.key, tr);
  const wanted = new Set();
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    wanted.add(key);
    const cells = cellsOf(item);
    let tr = existing.get(key);
    if (!tr || tr.children.length !== cells.length) {
      const fresh = el("tr");
      fresh.dataset.key = key;
      for (const c of cells) fresh.append(el("td", { class: c.cls }));
      if (tr) tr.replaceWith(fresh);
      tr = fresh;
    }
    cells.forEach((c, i) => {
      const td = tr.children[i];
      td.className = c.cls || "";
      if (c.href) {
        let a = td.firstChild;
        if (!a || a.nodeName !== "A") {
          td.replaceChildren((a = el("a")));
        }
        if (a.getAttribute("href") !== c.href) a.setAttribute("href", c.href);
        setText(a, c.text);
      } else {
        setText(td, c.text);
      }
    });
    tr.className = rowClass ? rowClass(item) : "";
    const next = previous ? previous.nextSibling : tbody.firstChild;
    if (next !== tr) tbody.insertBefore(tr, next);
    previous = tr;
  }
  for (const [key, tr] of existing) if (!wanted.has(key)) tr.remove();
}

function headerRow(columns, onSort, sort) {
  const tr = el("tr");
  for (const c of columns) {
    const th = el("th", { class: (c.num ? "num " : "") + (onSort ? "sortable" : ""), "data-key": c.key }, c.title);
    if (sort && sort.key === c.key) th.classList.add(sort.desc ? "sorted-desc" : "sorted-asc");
    if (onSort) th.addEventListener("click", () => onSort(c.key));
    tr.append(th);
  }
  return tr;
}

// ---- charts ---------------------------------------------------------------

const W = 560, H = 300, M = { l: 56, r: 16, t: 12, b: 36 };

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function logTicks(lo, hi) {
  const out = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * Math.pow(10, e);
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
    }
  }
  return out.length ? out : [lo, hi];
}

// A scale of [lo, hi] onto [a, b], linear or log.
function scale(lo, hi, a, b, log) {
  if (log) {
    const l0 = Math.log10(lo), l1 = Math.log10(hi);
    const span = l1 - l0 || 1;
    return (v) => a + ((Math.log10(v) - l0) / span) * (b - a);
  }
  const span = hi - lo || 1;
  return (v) => a + ((v - lo) / span) * (b - a);
}

function pad(lo, hi) {
  if (lo === hi) return [lo - (Math.abs(lo) || 1) * 0.05, hi + (Math.abs(hi) || 1) * 0.05];
  const m = (hi - lo) * 0.05;
  return [lo - m, hi + m];
}

// Axes and grid into `g` (replaced whole: a handful of lines and labels).
function drawAxes(g, xs, ys, xTicks, yTicks, xLabel, yLabel, xFmt) {
  const parts = [];
  for (const t of yTicks) {
    const y = ys(t);
    parts.push(svg("line", { class: "grid", x1: M.l, x2: W - M.r, y1: y, y2: y }));
    const label = svg("text", { x: M.l - 6, y: y + 4, "text-anchor": "end" });
    label.textContent = fmtNum(t, 3);
    parts.push(label);
  }
  for (const t of xTicks) {
    const x = xs(t.v !== undefined ? t.v : t);
    const label = svg("text", { x, y: H - M.b + 16, "text-anchor": "middle" });
    label.textContent = t.label !== undefined ? t.label : xFmt ? xFmt(t) : fmtNum(t, 3);
    parts.push(label);
  }
  parts.push(svg("line", { class: "axis", x1: M.l, x2: M.l, y1: M.t, y2: H - M.b }));
  parts.push(svg("line", { class: "axis", x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }));
  const xl = svg("text", { x: (M.l + W - M.r) / 2, y: H - 4, "text-anchor": "middle" });
  xl.textContent = xLabel;
  const yl = svg("text", { x: 12, y: (M.t + H - M.b) / 2, "text-anchor": "middle",
    transform: `rotate(-90 12 ${(M.t + H - M.b) / 2})` });
  yl.textContent = yLabel;
  parts.push(xl, yl);
  g.replaceChildren(...parts);
}

const tip = () => document.getElementById("tip");

function showTip(event, text) {
  const t = tip();
  t.textContent = text;
  t.hidden = false;
  t.style.left = event.clientX + 14 + "px";
  t.style.top = event.clientY + 10 + "px";
}

function hideTip() {
  tip().hidden = true;
}

// Learning curves of one metric: a dashed train and a solid valid line per
// job, the best job bold. `update` keeps each job's paths and moves their
// points; the nearest point under the pointer is shown with its values.
class CurveChart {
  constructor(parent, id, title, metric, yLabel) {
    this.metric = metric;
    this.yLabel = yLabel;
    this.paths = new Map();
    this.points = [];
    this.root = el("div", { class: "chart" }, el("div", { class: "title" }, title));
    this.svg = svg("svg", { id, width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    this.axes = svg("g");
    this.lines = svg("g");
    this.svg.append(this.axes, this.lines);
    this.root.append(this.svg);
    parent.append(this.root);
    this.svg.addEventListener("mousemove", (e) => this.hover(e));
    this.svg.addEventListener("mouseleave", hideTip);
  }

  update(jobs) {
    let maxEpoch = 1, lo = Infinity, hi = -Infinity;
    for (const j of jobs) {
      maxEpoch = Math.max(maxEpoch, j.epochs, ...j.epoch);
      for (const kind of ["train", "valid"]) {
        for (const v of j[kind + "_" + this.metric]) {
          if (v !== null && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
        }
      }
    }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    if (this.metric === "acc") { lo = Math.min(lo, 0); hi = Math.max(hi, 1); } else { [lo, hi] = pad(Math.min(lo, 0), hi); }
    const xs = scale(1, Math.max(maxEpoch, 2), M.l, W - M.r, false);
    const ys = scale(lo, hi, H - M.b, M.t, false);
    const xTicks = niceTicks(1, Math.max(maxEpoch, 2), 7).filter((t) => Number.isInteger(t));
    drawAxes(this.axes, xs, ys, xTicks, niceTicks(lo, hi, 5), "epoch", this.yLabel);
    const wanted = new Set();
    this.points = [];
    for (const j of jobs) {
      for (const kind of ["train", "valid"]) {
        const key = j.id + ":" + kind;
        wanted.add(key);
        let path = this.paths.get(key);
        if (!path) {
          path = svg("path", { "data-job": j.id, "data-kind": kind });
          this.paths.set(key, path);
          this.lines.append(path);
        }
        const values = j[kind + "_" + this.metric];
        let d = "";
        values.forEach((v, i) => {
          if (v === null || !Number.isFinite(v)) return;
          const x = xs(j.epoch[i]), y = ys(v);
          d += (d ? "L" : "M") + x.toFixed(1) + "," + y.toFixed(1);
          this.points.push({ x, y, text: `${j.label}\n${kind} ${this.metric} ${fmtNum(v, 4)}\nepoch ${j.epoch[i]}` });
        });
        const cls = "series " + kind + (j.best ? " best" : "");
        if (path.getAttribute("class") !== cls) path.setAttribute("class", cls);
        if (path.getAttribute("d") !== d) path.setAttribute("d", d);
        path.setAttribute("stroke", j.color || colorOf(j.id));
        path.setAttribute("data-points", String(j.epoch.length));
        if (j.best) this.lines.append(path); // drawn last, on top
      }
    }
    for (const [key, path] of this.paths) if (!wanted.has(key)) { path.remove(); this.paths.delete(key); }
  }

  hover(event) {
    const box = this.svg.getBoundingClientRect();
    const x = ((event.clientX - box.left) * W) / box.width, y = ((event.clientY - box.top) * H) / box.height;
    let best = null, dist = 400;
    for (const p of this.points) {
      const d = (p.x - x) ** 2 + (p.y - y) ** 2;
      if (d < dist) { dist = d; best = p; }
    }
    if (best) showTip(event, best.text); else hideTip();
  }
}

// The categories of a choice axis in order: numbers numerically, then words.
function categories(values) {
  const seen = new Map();
  for (const v of values) if (v !== null && v !== undefined) seen.set(String(v), v);
  return [...seen.values()].sort((a, b) => (typeof a === "number" && typeof b === "number" ? a - b
    : typeof a === "number" ? -1 : typeof b === "number" ? 1 : String(a).localeCompare(String(b)))).map(String);
}

// A legend inside a chart, top right: entries {mark: "dot" | "line", cls, label}.
function chartLegend(width, entries) {
  const g = svg("g", { class: "legend" });
  const x0 = width - M.r - 110;
  entries.forEach((e, i) => {
    const y = M.t + 10 + i * 16;
    g.append(e.mark === "line"
      ? svg("line", { class: e.cls, x1: x0, x2: x0 + 16, y1: y, y2: y })
      : svg("circle", { class: e.cls, cx: x0 + 8, cy: y, r: 3.5, fill: PALETTE[0] }));
    const t = svg("text", { x: x0 + 22, y: y + 4 });
    t.textContent = e.label;
    g.append(t);
  });
  return g;
}

// A scatter of points {x, y, id, best, pruned, text}; x numeric (`scale`
// "linear" or "log") or categories ("choice", or any words: evenly spaced);
// `step` adds a best-so-far line. Pruned trials are hollow grey rings, with
// a legend entry.
class Scatter {
  constructor(parent, title, xLabel, yLabel) {
    this.xLabel = xLabel;
    this.yLabel = yLabel;
    this.root = el("div", { class: "chart" }, el("div", { class: "title" }, title));
    this.svg = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
    this.axes = svg("g");
    this.marks = svg("g");
    this.svg.append(this.axes, this.marks);
    this.root.append(this.svg);
    parent.append(this.root);
    this.points = [];
    this.svg.addEventListener("mousemove", (e) => this.hover(e));
    this.svg.addEventListener("mouseleave", hideTip);
  }

  update(points, scale_, step) {
    const log = scale_ === "log";
    const words = scale_ === "choice" || points.some((p) => typeof p.x !== "number");
    let xs, xTicks;
    if (words) {
      const cats = categories(points.map((p) => p.x));
      const pos = scale(-0.5, cats.length - 0.5, M.l, W - M.r, false);
      xs = (v) => pos(cats.indexOf(String(v)));
      xTicks = cats.map((c) => ({ v: c, label: c }));
    } else {
      let lo = Math.min(...points.map((p) => p.x)), hi = Math.max(...points.map((p) => p.x));
      if (!points.length) { lo = 0; hi = 1; }
      if (log) {
        xs = scale(lo / 1.3, hi * 1.3, M.l, W - M.r, true);
        xTicks = logTicks(lo / 1.3, hi * 1.3);
      } else {
        [lo, hi] = pad(lo, hi);
        xs = scale(lo, hi, M.l, W - M.r, false);
        xTicks = niceTicks(lo, hi, 6);
      }
    }
    let ylo = Math.min(...points.map((p) => p.y)), yhi = Math.max(...points.map((p) => p.y));
    if (!points.length) { ylo = 0; yhi = 1; }
    [ylo, yhi] = pad(ylo, yhi);
    const ys = scale(ylo, yhi, H - M.b, M.t, false);
    drawAxes(this.axes, xs, ys, xTicks, niceTicks(ylo, yhi, 5), this.xLabel + (log ? " (log)" : ""), this.yLabel);
    const marks = [];
    this.points = [];
    if (step && points.length) {
      let d = "";
      step.forEach((s, i) => { d += (i ? "L" : "M") + xs(s.x).toFixed(1) + "," + ys(s.y).toFixed(1); });
      marks.push(svg("path", { class: "step", d }));
    }
    const jitter = words ? (i) => ((i * 37) % 11 - 5) * 2 : () => 0;
    points.forEach((p, i) => {
      const x = xs(p.x) + jitter(i), y = ys(p.y);
      marks.push(svg("circle", { class: "dot" + (p.best ? " best" : "") + (p.pruned ? " pruned" : ""),
        cx: x.toFixed(1), cy: y.toFixed(1), r: p.best ? 5 : 3.5, fill: PALETTE[0], "data-job": p.id }));
      this.points.push({ x, y, text: p.text + (p.pruned ? "\npruned" : "") });
    });
    if (points.some((p) => p.pruned)) {
      const entries = [{ mark: "dot", cls: "dot", label: "done" }, { mark: "dot", cls: "dot pruned", label: "pruned" }];
      if (step) entries.push({ mark: "line", cls: "step", label: "best so far" });
      marks.push(chartLegend(W, entries));
    }
    this.marks.replaceChildren(...marks);
  }

  hover(event) {
    const box = this.svg.getBoundingClientRect();
    const x = ((event.clientX - box.left) * W) / box.width, y = ((event.clientY - box.top) * H) / box.height;
    let best = null, dist = 200;
    for (const p of this.points) {
      const d = (p.x - x) ** 2 + (p.y - y) ** 2;
      if (d < dist) { dist = d; best = p; }
    }
    if (best) showTip(event, best.text); else hideTip();
  }
}

// The objective's colour, from low (0) to high (1): a viridis-like ramp.
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function rampColor(t) {
  const u = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(u)), f = u - i;
  const c = RAMP[i].map((a, k) => Math.round(a + (RAMP[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// Parallel coordinates: one vertical axis per varying key (log, linear or
// categories, as the search endpoint says) and one for the objective; one
// path per trial through its values, coloured by its objective; pruned
// trials grey and dashed, under the others; the best bold, on top.
const PW = 2 * W + 16, PH = 340, PM = { l: 70, r: 70, t: 30, b: 40 };

class ParallelChart {
  constructor(parent) {
    this.root = el("div", { class: "chart" },
      el("div", { class: "title" }, "Parallel coordinates (colour: best valid acc; pruned grey dashed; best bold)"));
    this.svg = svg("svg", { id: "parallel", width: PW, height: PH, viewBox: `0 0 ${PW} ${PH}` });
    this.axes = svg("g");
    this.lines = svg("g", { class: "trials" });
    this.legend = svg("g");
    this.svg.append(this.lines, this.axes, this.legend);
    this.root.append(this.svg);
    parent.append(this.root);
    this.texts = new Map();
    this.svg.addEventListener("mousemove", (e) => {
      const text = e.target.dataset && this.texts.get(e.target.dataset.job);
      if (text) showTip(e, text); else hideTip();
    });
    this.svg.addEventListener("mouseleave", hideTip);
    this.svg.addEventListener("click", (e) => {
      const job = e.target.dataset && e.target.dataset.job;
      if (job) location.href = jobHref(job);
    });
  }

  // One axis: its position function of a value, and its drawing (tick
  // labels to its left, or to its right for the last axis).
  axis(x, key, scale_, values, format, right) {
    const top = PM.t, bottom = PH - PM.b;
    const parts = [svg("line", { class: "axis", x1: x, x2: x, y1: top, y2: bottom })];
    let pos, ticks;
    if (scale_ === "choice" || values.some((v) => v !== null && typeof v !== "number")) {
      scale_ = "choice";
      const cats = categories(values);
      const at = scale(-0.5, cats.length - 0.5, bottom, top, false);
      pos = (v) => (v === null || v === undefined ? null : at(cats.indexOf(String(v))));
      ticks = cats.map((c, i) => ({ y: at(i), label: c }));
    } else {
      const nums = values.filter((v) => typeof v === "number" && Number.isFinite(v));
      let lo = nums.length ? Math.min(...nums) : 0, hi = nums.length ? Math.max(...nums) : 1;
      if (scale_ === "log" && lo > 0) {
        [lo, hi] = lo === hi ? [lo / 1.5, hi * 1.5] : [lo, hi];
        const at = scale(lo, hi, bottom, top, true);
        pos = (v) => (typeof v === "number" && v > 0 ? at(v) : null);
        ticks = logTicks(lo, hi).map((t) => ({ y: at(t), label: format(t) }));
      } else {
        scale_ = "linear";
        [lo, hi] = lo === hi ? pad(lo, hi) : [lo, hi];
        const at = scale(lo, hi, bottom, top, false);
        pos = (v) => (typeof v === "number" && Number.isFinite(v) ? at(v) : null);
        ticks = niceTicks(lo, hi, 5).map((t) => ({ y: at(t), label: format(t) }));
      }
    }
    for (const t of ticks) {
      parts.push(svg("line", { class: "tick", x1: right ? x + 4 : x - 4, x2: x, y1: t.y, y2: t.y }));
      const label = svg("text", { x: right ? x + 6 : x - 6, y: t.y + 4, "text-anchor": right ? "start" : "end" });
      label.textContent = t.label;
      parts.push(label);
    }
    const name = svg("text", { class: "axis-name", x, y: top - 12, "text-anchor": "middle" });
    name.textContent = key + (scale_ === "log" ? " (log)" : "");
    parts.push(name);
    const g = svg("g", { class: "pc-axis", "data-key": key, "data-scale": scale_ });
    g.append(...parts);
    return { g, pos };
  }

  // `sr`: the search endpoint's columns; `bestId`: the best job.
  update(sr, bestId) {
    const n = sr.jobs.length;
    const keys = sr.axes.map((a) => a.key);
    const count = keys.length + 1;
    const xAt = (i) => PM.l + (count === 1 ? 0 : (i * (PW - PM.l - PM.r)) / (count - 1));
    const axes = sr.axes.map((a, i) => this.axis(xAt(i), a.key, a.scale || (a.log ? "log" : "linear"), a.values,
      (v) => fmtNum(v, 3)));
    const objective = this.axis(xAt(keys.length), "best valid acc", "linear", sr.objective, (v) => fmtAcc(v), true);
    this.axes.replaceChildren(...axes.map((a) => a.g), objective.g);
    const ys = sr.objective.filter((y) => Number.isFinite(y));
    const lo = ys.length ? Math.min(...ys) : 0, hi = ys.length ? Math.max(...ys) : 1;
    const colorOfY = (y) => rampColor(hi > lo ? (y - lo) / (hi - lo) : 1);
    // Pruned first (underneath), then by objective so the best lie on top.
    const order = [...Array(n).keys()].sort((a, b) => (sr.pruned[b] - sr.pruned[a]) ||
      (sr.jobs[a] === bestId) - (sr.jobs[b] === bestId) || sr.objective[a] - sr.objective[b]);
    this.texts = new Map();
    const paths = order.map((i) => {
      let d = "", gap = true;
      const point = (y, x) => {
        if (y === null) { gap = true; return; }
        d += (gap ? "M" : "L") + x.toFixed(1) + "," + y.toFixed(1);
        gap = false;
      };
      axes.forEach((a, k) => point(a.pos(sr.axes[k].values[i]), xAt(k)));
      point(objective.pos(sr.objective[i]), xAt(keys.length));
      const job = sr.jobs[i], pruned = sr.pruned[i], best = job === bestId;
      this.texts.set(job, job.slice(0, 8) + (pruned ? " (pruned)" : "") + "\n" +
        sr.axes.map((a) => a.key + " " + fmtValue(a.values[i])).join("\n") + "\nbest valid acc " + fmtAcc(sr.objective[i]));
      return svg("path", { class: "trial" + (pruned ? " pruned" : "") + (best ? " best" : ""), d, "data-job": job,
        stroke: pruned ? "#9aa1b0" : colorOfY(sr.objective[i]) });
    });
    this.lines.replaceChildren(...paths);
    // The legend: the colour ramp's ends, and the pruned trials' dashes.
    const x0 = PW - PM.r - 330, y0 = PH - 14;
    const parts = [];
    [[0, fmtAcc(lo)], [1, fmtAcc(hi)]].forEach(([t, label], i) => {
      const x = x0 + i * 110;
      parts.push(svg("line", { class: "trial", x1: x, x2: x + 18, y1: y0 - 4, y2: y0 - 4, stroke: rampColor(t) }));
      const text = svg("text", { x: x + 22, y: y0 });
      text.textContent = (i ? "high " : "low ") + label;
      parts.push(text);
    });
    if (sr.pruned.some((p) => p)) {
      const x = x0 + 220;
      parts.push(svg("line", { class: "trial pruned", x1: x, x2: x + 18, y1: y0 - 4, y2: y0 - 4, stroke: "#9aa1b0" }));
      const text = svg("text", { x: x + 22, y: y0 });
      text.textContent = "pruned";
      parts.push(text);
    }
    this.legend.setAttribute("class", "legend");
    this.legend.replaceChildren(...parts);
  }
}

// Horizontal bars: one per key, its score.
function drawImportance(parent, imp) {
  const rowH = 26, left = 140, width = 380;
  const h = Math.max(1, imp.keys.length) * rowH + 10;
  const root = svg("svg", { id: "importance-chart", width: left + width + 70, height: h });
  imp.keys.forEach((k, i) => {
    const y = 5 + i * rowH;
    const label = svg("text", { x: left - 8, y: y + 16, "text-anchor": "end" });
    label.textContent = k.key;
    const bar = svg("rect", { class: "bar", x: left, y: y + 3, height: rowH - 8, width: Math.max(1, k.score * width),
      "data-key": k.key, "data-score": k.score });
    const value = svg("text", { x: left + Math.max(1, k.score * width) + 6, y: y + 16 });
    value.textContent = k.score.toFixed(3) + "  (" + k.levels + " levels)";
    root.append(label, bar, value);
  });
  parent.replaceChildren(root);
}

// ---- pages ----------------------------------------------------------------

const main = () => document.getElementById("main");

function setLive(text) {
  setText(document.getElementById("live"), text);
}

function crumbs(...parts) {
  const c = document.getElementById("crumbs");
  c.replaceChildren();
  for (const p of parts) c.append(" / ", p);
}

function card(k, v, id) {
  return el("div", { class: "card" }, el("div", { class: "k" }, k), el("div", { class: "v", id }, v));
}

function poll(fn) {
  let stopped = false;
  const tick = async () => {
    try {
      const again = await fn();
      const now = new Date();
      setLive("updated " + now.toLocaleTimeString());
      if (again === false) { setLive("finished · " + now.toLocaleTimeString()); return; }
    } catch (e) {
      setLive("update failed: " + e.message);
    }
    if (!stopped) setTimeout(tick, POLL_MS);
  };
  tick();
  return () => { stopped = true; };
}

function showError(e) {
  main().replaceChildren(el("p", { class: "error", id: "error" }, e.message || String(e)));
}

// The sweeps.
function sweepsPage() {
  document.title = "sweep · sweeps";
  crumbs();
  const tbody = el("tbody");
  const columns = [
    { key: "name", title: "Sweep" }, { key: "id", title: "Id" }, { key: "created", title: "Created" },
    ...STATUSES.map((s) => ({ key: s, title: s, num: true })),
    { key: "features", title: "Features" }, { key: "epochs", title: "Epochs", num: true },
    { key: "elapsed", title: "Elapsed" }, { key: "remaining", title: "Remaining" },
  ];
  const table = el("table", { id: "sweeps" }, el("thead", {}, headerRow(columns)), tbody);
  const empty = el("p", { class: "muted", id: "empty", hidden: "" }, "No sweeps yet: run one with `sweep run FILE`.");
  main().replaceChildren(el("h1", {}, "Sweeps"), el("div", { class: "scroll" }, table), empty);
  poll(async () => {
    const sweeps = await getJSON("/api/sweeps");
    empty.hidden = sweeps.length > 0;
    syncRows(tbody, sweeps.slice().reverse(), (s) => s.id, (s) => [
      { text: s.name, href: sweepHref(s.id) },
      { text: s.id.slice(0, 12) },
      { text: s.created_at },
      ...STATUSES.map((st) => ({ text: s.counts[st], cls: "num status-" + st })),
      { text: s.features ? s.features.source + " (" + s.features.images + " images)" : "-" },
      { text: s.progress.epochs_done + "/" + s.progress.epochs_total, cls: "num" },
      { text: fmtDuration(s.progress.elapsed_seconds) },
      { text: s.progress.remaining_seconds === null ? "-" : fmtDuration(s.progress.remaining_seconds) },
    ]);
  });
}

// One sweep: summary, best configuration, curves, importance, search views, jobs.
function sweepPage(id) {
  const title = el("h1", { id: "title" }, "…");
  const cards = el("div", { class: "cards", id: "summary" });
  const bestBox = el("div", { id: "best" });
  const curves = el("div", { class: "charts" });
  const legend = el("div", { class: "legend", id: "legend" });
  const acc = new CurveChart(curves, "curves-acc", "Accuracy (train dashed, valid solid; best bold)", "acc", "accuracy");
  const loss = new CurveChart(curves, "curves-loss", "Loss (train dashed, valid solid; best bold)", "loss", "loss");
  const importance = el("div", { id: "importance" });
  const method = el("p", { class: "muted", id: "importance-method" });
  const parallelBox = el("div", { class: "charts", id: "parallel-box" });
  const search = el("div", { class: "charts", id: "search" });
  const filter = el("select", { id: "status-filter" }, el("option", { value: "" }, "all"),
    ...STATUSES.map((s) => el("option", { value: s }, s)));
  const count = el("span", { class: "muted", id: "count" });
  const prev = el("button", { id: "jobs-prev", type: "button" }, "‹ previous");
  const next = el("button", { id: "jobs-next", type: "button" }, "next ›");
  const thead = el("thead");
  const tbody = el("tbody");
  const table = el("table", { id: "jobs" }, thead, tbody);
  main().replaceChildren(title, cards, el("h2", {}, "Best configuration"), bestBox,
    el("h2", {}, "Learning curves"), curves, legend,
    el("h2", {}, "Which hyperparameter matters"), importance, method,
    el("h2", {}, "Search"), parallelBox, search,
    el("h2", {}, "Jobs"), el("div", { class: "controls" }, el("label", {}, "status ", filter), prev, next, count),
    el("div", { class: "scroll" }, table));

  let data = null;
  let sort = { key: "best_valid_acc", desc: true };
  let offset = 0;
  let keysShown = "";
  let lastDone = -1;
  const scatters = new Map();
  let bestSoFar = null;
  let parallel = null;

  const base = "/api/sweeps/" + encodeURIComponent(id);
  const columnsOf = (keys) => [
    { key: "id", title: "Job" },
    ...keys.map((k) => ({ key: "param:" + k, title: k, num: true })),
    { key: "best_valid_acc", title: "Best Acc", num: true }, { key: "best_epoch", title: "Best Epoch", num: true },
    { key: "epochs_done", title: "Epochs", num: true }, { key: "status", title: "Status" },
    { key: "seconds", title: "Seconds", num: true }, { key: "same_as", title: "Same As" },
  ];
  // The table is sorted, filtered and paged by the server: the page asks
  // for the rows it shows (a sweep of 10,000 jobs is never sent whole).
  let asked = 0;
  const rowsAsked = Number(new URLSearchParams(location.search).get("rows"));
  const pageRows = Number.isInteger(rowsAsked) && rowsAsked >= 1 && rowsAsked <= 1000 ? rowsAsked : PAGE_ROWS;
  async function fetchJobs() {
    const serverKey = sort.key.startsWith("param:") ? sort.key.slice(6) : sort.key;
    const query = new URLSearchParams({ offset: String(offset), limit: String(pageRows), sort: serverKey,
      order: sort.desc ? "desc" : "asc", status: filter.value });
    const ticket = ++asked;
    const page = await getJSON(base + "/jobs?" + query);
    if (ticket === asked) renderJobs(page);
  }
  const refetch = () => fetchJobs().catch((e) => setLive("update failed: " + e.message));
  const onSort = (key) => {
    sort = { key, desc: sort.key === key ? !sort.desc : key === "best_valid_acc" };
    offset = 0;
    keysShown = "";
    refetch();
  };
  prev.addEventListener("click", () => { offset = Math.max(0, offset - pageRows); refetch(); });
  next.addEventListener("click", () => { offset += pageRows; refetch(); });

  function renderJobs(page) {
    const keys = page.keys;
    if (keysShown !== keys.join("\u0000")) {
      thead.replaceChildren(headerRow(columnsOf(keys), onSort, sort));
      tbody.replaceChildren();
      keysShown = keys.join("\u0000");
    }
    const rows = page.jobs;
    const first = page.total ? page.offset + 1 : 0, last = page.offset + rows.length;
    setText(count, page.total > rows.length || page.offset
      ? `showing ${first}–${last} of ${page.total} jobs` : `${page.total} jobs`);
    prev.disabled = page.offset === 0;
    next.disabled = last >= page.total;
    const bestId = page.best;
    syncRows(tbody, rows, (j) => j.id, (j) => [
      { text: j.id.slice(0, 12), href: jobHref(j.id) },
      ...keys.map((k) => ({ text: fmtValue(j.params[k]), cls: "num" })),
      { text: fmtAcc(j.best_valid_acc), cls: "num" },
      { text: j.best_epoch === null ? "-" : j.best_epoch, cls: "num" },
      { text: j.epochs_done + "/" + j.epochs, cls: "num" },
      { text: j.status_text, cls: "status-" + j.status },
      { text: j.seconds.toFixed(1), cls: "num" },
      { text: j.same_as ? j.same_as.slice(0, 12) : "" },
    ], (j) => (j.id === bestId ? "best" : ""));
  }
  filter.addEventListener("change", () => { offset = 0; refetch(); });

  function renderSummary(s) {
    document.title = "sweep · " + s.name;
    setText(title, s.name);
    crumbs(el("span", {}, s.name));
    const items = [
      ["created", s.created_at, "created"],
      ["jobs", STATUSES.filter((st) => s.counts[st]).map((st) => s.counts[st] + " " + st).join(", ") || "none", "counts"],
      ["features", s.features ? s.features.source + ", " + s.features.images + " images" : "-", "features"],
      ["epochs", s.progress.epochs_done + " / " + s.progress.epochs_total, "epochs"],
      ["elapsed (training)", fmtDuration(s.progress.elapsed_seconds), "elapsed"],
      ["remaining (estimate)", s.progress.remaining_seconds === null ? "-" : fmtDuration(s.progress.remaining_seconds), "remaining"],
    ];
    if (!cards.children.length) cards.append(...items.map(([k, v, i]) => card(k, v, "summary-" + i)));
    else items.forEach(([, v, i]) => setText(document.getElementById("summary-" + i), v));
  }

  function renderBest(best) {
    if (!best) { bestBox.replaceChildren(el("p", { class: "muted" }, "No job has finished an epoch yet.")); return; }
    const text = JSON.stringify(best.config, null, 2);
    const pre = bestBox.querySelector("pre");
    const a = bestBox.querySelector("a");
    if (pre && a && a.getAttribute("href") === jobHref(best.id) && pre.textContent === text) {
      setText(bestBox.querySelector(".best-acc"), fmtAcc(best.best_valid_acc) + " at epoch " + best.best_epoch);
      return;
    }
    bestBox.replaceChildren(
      el("p", {}, "job ", el("a", { href: jobHref(best.id), id: "best-job", "data-job": best.id }, best.id),
        ": ", el("span", { class: "best-acc" }, fmtAcc(best.best_valid_acc) + " at epoch " + best.best_epoch)),
      el("pre", { class: "config" }, text));
  }

  function renderCurves(c) {
    // Colours by rank (the best first), distinct for the 12 jobs drawn.
    const jobs = c.jobs.map((j, i) => ({ ...j, color: PALETTE[i % PALETTE.length], label: j.id.slice(0, 8) + " " +
      c.keys.map((k) => k + "=" + fmtValue(j.params[k])).join(" ") }));
    acc.update(jobs);
    loss.update(jobs);
    legend.replaceChildren(...jobs.map((j) => {
      const s = el("span", { class: j.best ? "best" : "", "data-job": j.id }, j.label);
      s.style.setProperty("--c", j.color);
      return s;
    }));
  }

  function renderSearch(sr) {
    const bestId = data && data.best ? data.best.id : null;
    if (!parallel) parallel = new ParallelChart(parallelBox);
    parallel.update(sr, bestId);
    const ys = sr.objective, jobs = sr.jobs;
    for (const axis of sr.axes) {
      let chart = scatters.get(axis.key);
      if (!chart) { chart = new Scatter(search, "best valid acc vs " + axis.key, axis.key, "best valid acc"); scatters.set(axis.key, chart); }
      const points = [];
      axis.values.forEach((v, i) => {
        if (v === null) return; // a trial that does not record this key
        points.push({ x: v, y: ys[i], id: jobs[i], best: jobs[i] === bestId, pruned: sr.pruned[i],
          text: `${jobs[i].slice(0, 8)}\n${axis.key} ${fmtValue(v)}\nbest valid acc ${fmtAcc(ys[i])}` });
      });
      chart.update(points, axis.scale || (axis.log ? "log" : "linear"));
    }
    if (!bestSoFar) bestSoFar = new Scatter(search, "best so far vs trial", "trial", "best valid acc");
    const t = sr.best_so_far;
    bestSoFar.update(t.number.map((n, i) => ({ x: n, y: t.objective[i], id: t.job[i], pruned: t.pruned[i],
      text: `trial ${n} (${t.job[i].slice(0, 8)})\nbest valid acc ${fmtAcc(t.objective[i])}\nbest so far ${fmtAcc(t.best_so_far[i])}` })),
    "linear", t.number.map((n, i) => ({ x: n, y: t.best_so_far[i] })));
  }

  poll(async () => {
    const [sweep, c] = await Promise.all([getJSON(base), getJSON(base + "/curves"), fetchJobs()]);
    data = sweep;
    renderSummary(sweep.sweep);
    renderBest(sweep.best);
    renderCurves(c);
    // The search views change when a trial finishes or is pruned.
    const done = sweep.sweep.counts.done + sweep.sweep.counts.pruned;
    if (done !== lastDone) {
      lastDone = done;
      const [imp, sr] = await Promise.all([getJSON(base + "/importance"), getJSON(base + "/search")]);
      if (imp.jobs < 2) importance.replaceChildren(el("p", { class: "muted" }, "Fewer than two jobs done: nothing to explain yet."));
      else drawImportance(importance, imp);
      setText(method, `The share of the variance of ${imp.objective} over the ${imp.jobs} done jobs that each key ` +
        "explains alone: first-order Sobol indices from the key's (binned) marginal means, which on a full grid " +
        `are fANOVA's main effects. Left to interactions and noise: ${imp.unexplained.toFixed(3)}.`);
      renderSearch(sr);
    }
    return true; // a finished sweep may be resumed: keep watching
  });
}

// One job: settings, every epoch, checkpoints, error, its curves.
function jobPage(id) {
  const title = el("h1", { id: "title" }, "job " + id);
  const cards = el("div", { class: "cards", id: "summary" });
  const errorBox = el("div", { id: "job-error" });
  const sweeps = el("p", { id: "job-sweeps" });
  const config = el("pre", { class: "config", id: "config" });
  const ckBody = el("tbody");
  const epBody = el("tbody");
  const curves = el("div", { class: "charts" });
  const acc = new CurveChart(curves, "curves-acc", "Accuracy (train dashed, valid solid)", "acc", "accuracy");
  const loss = new CurveChart(curves, "curves-loss", "Loss (train dashed, valid solid)", "loss", "loss");
  const epochCols = [
    { key: "epoch", title: "Epoch", num: true }, { key: "train_loss", title: "Train Loss", num: true },
    { key: "train_acc", title: "Train Acc", num: true }, { key: "valid_loss", title: "Valid Loss", num: true },
    { key: "valid_acc", title: "Valid Acc", num: true }, { key: "lr", title: "LR", num: true },
    { key: "seconds", title: "Seconds", num: true },
  ];
  main().replaceChildren(title, cards, errorBox, sweeps, el("h2", {}, "Configuration"), config,
    el("h2", {}, "Learning curves"), curves,
    el("h2", {}, "Epochs"), el("table", { id: "epochs" }, el("thead", {}, headerRow(epochCols)), epBody),
    el("h2", {}, "Checkpoints"),
    el("table", { id: "checkpoints" }, el("thead", {}, headerRow([{ key: "kind", title: "Kind" },
      { key: "epoch", title: "Epoch", num: true }, { key: "bytes", title: "Size", num: true }])), ckBody));
  document.title = "sweep · job " + id.slice(0, 12);
  crumbs(el("span", {}, "job " + id.slice(0, 12)));
  poll(async () => {
    const j = await getJSON("/api/jobs/" + encodeURIComponent(id));
    const items = [
      ["status", j.status_text, "status"], ["best valid acc", fmtAcc(j.best_valid_acc), "best"],
      ["best epoch", j.best_epoch === null ? "-" : j.best_epoch, "best-epoch"],
      ["epochs", j.epochs_done + " / " + j.epochs, "epochs"], ["attempts", j.attempts, "attempts"],
      ["seconds", j.seconds.toFixed(1), "seconds"],
    ];
    if (!cards.children.length) cards.append(...items.map(([k, v, i]) => card(k, v, "summary-" + i)));
    else items.forEach(([, v, i]) => setText(document.getElementById("summary-" + i), v));
    if (j.error) {
      if (!errorBox.firstChild) errorBox.append(el("h2", {}, "Error"), el("pre", { class: "error" }));
      setText(errorBox.querySelector("pre"), j.error);
    }
    if (sweeps.children.length !== j.sweeps.length) {
      sweeps.replaceChildren("in sweep" + (j.sweeps.length === 1 ? " " : "s "));
      j.sweeps.forEach((s, i) => sweeps.append(i ? ", " : "", link(sweepHref(s.id), s.name)));
    }
    setText(config, JSON.stringify(j.config, null, 2));
    syncRows(epBody, j.epoch_rows, (e) => String(e.epoch), (e) => [
      { text: e.epoch, cls: "num" }, { text: e.train_loss.toFixed(4), cls: "num" }, { text: fmtAcc(e.train_acc), cls: "num" },
      { text: e.valid_loss.toFixed(4), cls: "num" }, { text: fmtAcc(e.valid_acc), cls: "num" },
      { text: fmtNum(e.lr, 4), cls: "num" }, { text: e.seconds.toFixed(2), cls: "num" },
    ], (e) => (e.epoch === j.best_epoch ? "best" : ""));
    syncRows(ckBody, j.checkpoints, (c) => c.kind, (c) => [
      { text: c.kind }, { text: c.epoch, cls: "num" }, { text: fmtBytes(c.bytes), cls: "num" },
    ]);
    const series = [{ id: j.id, label: j.id.slice(0, 8), best: false, epochs: j.epochs,
      epoch: j.epoch_rows.map((e) => e.epoch),
      train_acc: j.epoch_rows.map((e) => e.train_acc), valid_acc: j.epoch_rows.map((e) => e.valid_acc),
      train_loss: j.epoch_rows.map((e) => e.train_loss), valid_loss: j.epoch_rows.map((e) => e.valid_loss) }];
    acc.update(series);
    loss.update(series);
    return j.status === "running" || j.status === "pending" || j.status === "interrupted";
  });
}

function route() {
  const path = location.pathname;
  try {
    let m;
    if (path === "/") sweepsPage();
    else if ((m = path.match(/^\/sweeps\/([^/]+)$/))) sweepPage(decodeURIComponent(m[1]));
    else if ((m = path.match(/^\/jobs\/([^/]+)$/))) jobPage(decodeURIComponent(m[1]));
    else showError(new Error("no such page: " + path));
  } catch (e) {
    showError(e);
  }
}

document.addEventListener("DOMContentLoaded", route);
