// circuitviz browser renderer: a run's snapshots arrive once (a binary payload, see
// circuitviz/plotting/web/__init__.py) and every view change is redrawn here, with no server round
// trip. The scene rules mirror circuitviz/plotting/scene.py (the oracle the tests compare against):
//   1. shown edges: |score| >= threshold, > 0, finite, optionally in the run's circuit, top-N;
//      comparing shows the union of both steps, each edge classified (added, removed, ...);
//   2. a selected box keeps its edges coloured and fades the rest; focus keeps only the paths
//      through it, across the whole depth;
//   3. edge colour by sign / reader / diff category, width and opacity in four |score| bins;
//   4. box fill paler the less attribution flows through it (or by an analysis: DLA, a role's
//      score, at the latest analysed step at or before the one shown); the run's circuit outlined;
//   5. layers no shown edge touches may collapse.
// The view is reported to the server (so the URL and the other pages follow) once the user pauses,
// in one small message; never per slider move.

const STATES = new Map(); // component key -> renderer state (survives Streamlit re-invocations)
const SYNC_PAUSE_MS = 400; // report the view this long after the last change
const PLAY_MS = 700; // one frame per snapshot while playing
let HALF = null; // float16 bits -> float32, built on first use

// ---- payload ------------------------------------------------------------------------------------

const CTORS = {
  uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, int8: Int8Array,
  int32: Int32Array, float32: Float32Array, float64: Float64Array,
};

function halfTable() {
  if (HALF) return HALF;
  HALF = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h >> 15, exp = (h >> 10) & 31, frac = h & 1023;
    let v;
    if (exp === 0) v = frac * 2 ** -24;
    else if (exp === 31) v = frac ? NaN : Infinity;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    HALF[h] = sign ? -v : v;
  }
  return HALF;
}

function decodePayload(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (String.fromCharCode(u8[0], u8[1], u8[2], u8[3]) !== "CVZ1") {
    throw new Error("not a circuitviz renderer payload");
  }
  const length = new DataView(u8.buffer, u8.byteOffset + 4, 4).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + length)));
  let start = 8 + length;
  start += (8 - (start % 8)) % 8;
  const body = u8.slice(start); // a copy starting at offset 0: every array is aligned
  const arrays = {};
  for (const a of header.arrays) arrays[a.name] = new CTORS[a.dtype](body.buffer, a.offset, a.length);
  return { header, arrays };
}

function buildModel(bytes) {
  const { header, arrays } = decodePayload(bytes);
  const g = header.graph, run = header.run;
  const nE = g.n_edges, nS = run.tokens.length;
  let scores = arrays.scores;
  if (run.scores_dtype === "float16") {
    const table = halfTable(), out = new Float32Array(scores.length);
    for (let i = 0; i < scores.length; i++) out[i] = table[scores[i]];
    scores = out;
  }
  const m = {
    header, g, run, nE, nS, scores, style: header.style,
    selected: arrays.selected, rowBytes: Math.ceil(nE / 8),
    src: arrays.edge_src, dst: arrays.edge_dst,
    srcNode: arrays.edge_src_node, dstNode: arrays.edge_dst_node, target: arrays.edge_target,
    route: arrays.edge_route, noise: arrays.noise_std || null,
    changes: arrays.change_step ? {
      step: arrays.change_step, layer: arrays.change_layer, head: arrays.change_head,
      kind: arrays.change_kind, value: arrays.change_value,
    } : null,
    nodeIndex: new Map(g.node_names.map((n, i) => [n, i])),
    orders: new Array(nS).fill(null),
    maxStrength: 0,
  };
  m.points = sampleRoutes(m.route, nE, m.style.curve_points);
  for (let i = 0; i < scores.length; i++) {
    const s = Math.abs(scores[i]);
    if (s > m.maxStrength && Number.isFinite(s)) m.maxStrength = s;
  }
  m.kvLinks = kvLinks(m);
  m.nodeValues = {};
  for (const [mode, meta] of Object.entries(header.node_values || {})) {
    m.nodeValues[mode] = { ...meta, values: arrays[`node_values:${mode}`] };
  }
  return m;
}

// ---- geometry (same rules as layout.sample_routes) ----------------------------------------------

function sCurve(out, off, x0, y0, x1, y1, n) {
  const ym = (y0 + y1) / 2;
  for (let i = 0; i < n; i++) {
    const t = n === 1 ? 0 : i / (n - 1), u = 1 - t;
    const a = u * u * u + 3 * u * u * t, b = 3 * u * t * t + t * t * t;
    out[off + 2 * i] = a * x0 + b * x1;
    out[off + 2 * i + 1] = u * u * u * y0 + 3 * u * t * ym + t * t * t * y1;
  }
}

function sampleRoutes(route, nE, P) {
  const pts = new Float32Array(nE * P * 2), half = P >> 1;
  for (let e = 0; e < nE; e++) {
    const r = e * 7, off = e * P * 2;
    const x0 = route[r], y0 = route[r + 1], xg = route[r + 2], ya = route[r + 3];
    const yb = route[r + 4], x1 = route[r + 5], y1 = route[r + 6];
    if (Number.isNaN(xg)) sCurve(pts, off, x0, y0, x1, y1, P);
    else {
      sCurve(pts, off, x0, y0, xg, ya, half);
      sCurve(pts, off + 2 * half, xg, yb, x1, y1, P - half);
    }
  }
  return pts;
}

function kvLinks(m) {
  const g = m.g, src = [], dst = [];
  if (g.n_kv_heads >= g.n_heads) return { src, dst };
  const group = g.n_heads / g.n_kv_heads;
  for (let b = 0; b < g.node_names.length; b++) {
    if (g.node_kind[b] !== "kv") continue;
    for (let k = 0; k < group; k++) {
      const name = `a${g.node_layer[b]}.h${g.node_head[b] * group + k}`;
      src.push(b);
      dst.push(m.nodeIndex.get(name));
    }
  }
  return { src, dst };
}

// ---- 1. selection and diff (edges.py) -----------------------------------------------------------

function rowScores(m, row) {
  return m.scores.subarray(row * m.nE, (row + 1) * m.nE);
}

function orderOf(m, row) {
  if (m.orders[row]) return m.orders[row];
  const sc = rowScores(m, row), n = m.nE;
  const strength = new Float64Array(n), idx = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const s = Math.abs(sc[i]);
    strength[i] = Number.isFinite(s) ? s : -1;
    idx[i] = i;
  }
  idx.sort((a, b) => strength[b] - strength[a] || a - b);
  m.orders[row] = idx;
  return idx;
}

function ranksOf(m, row) {
  const order = orderOf(m, row), ranks = new Uint32Array(m.nE);
  for (let k = 0; k < order.length; k++) ranks[order[k]] = k + 1;
  return ranks;
}

function inCircuitBit(m, row, e) {
  return (m.selected[row * m.rowBytes + (e >> 3)] >> (e & 7)) & 1;
}

function selectEdges(m, row, threshold, topN, onlySelected) {
  const order = orderOf(m, row), sc = rowScores(m, row), out = [];
  const limit = topN == null ? Infinity : topN;
  for (let k = 0; k < order.length && out.length < limit; k++) {
    const e = order[k], s = Math.abs(sc[e]);
    if (!Number.isFinite(s) || !(s >= threshold) || !(s > 0)) break; // the rest are weaker
    if (onlySelected && !inCircuitBit(m, row, e)) continue;
    out.push(e);
  }
  return out;
}

function finite(x) {
  if (Number.isNaN(x)) return 0;
  if (x === Infinity) return Number.MAX_VALUE;
  if (x === -Infinity) return -Number.MAX_VALUE;
  return x;
}

function diffEdges(m, rowA, rowB, threshold, topN) {
  const st = m.style, cats = st.diff_categories, code = Object.fromEntries(cats.map((c, i) => [c, i]));
  const a = rowScores(m, rowA), b = rowScores(m, rowB);
  const inA = new Uint8Array(m.nE), inB = new Uint8Array(m.nE);
  for (const e of selectEdges(m, rowA, threshold, topN, false)) inA[e] = 1;
  for (const e of selectEdges(m, rowB, threshold, topN, false)) inB[e] = 1;
  const edges = [], category = [];
  let nBoth = 0, nA = 0, nB = 0;
  for (let e = 0; e < m.nE; e++) {
    nA += inA[e];
    nB += inB[e];
    if (!inA[e] && !inB[e]) continue;
    const ua = finite(a[e]), ub = finite(b[e]), both = inA[e] && inB[e];
    let c = code.unchanged;
    const larger = Math.max(Math.abs(ua), Math.abs(ub)), delta = Math.abs(ub) - Math.abs(ua);
    if (both && delta > st.rel_tol * larger) c = code.strengthened;
    if (both && delta < -st.rel_tol * larger) c = code.weakened;
    if (both && Math.sign(ua) * Math.sign(ub) < 0) c = code.flipped;
    if (!inA[e]) c = code.added;
    if (!inB[e]) c = code.removed;
    if (m.noise && Math.abs(ub - ua) < st.noise_k * finite(m.noise[e])) c = code.noise;
    nBoth += both ? 1 : 0;
    edges.push(e);
    category.push(c);
  }
  const edgeIou = edges.length ? nBoth / edges.length : 1;
  const nodesA = new Set(), nodesB = new Set();
  for (let e = 0; e < m.nE; e++) {
    if (inA[e]) { nodesA.add(m.srcNode[e]); nodesA.add(m.dstNode[e]); }
    if (inB[e]) { nodesB.add(m.srcNode[e]); nodesB.add(m.dstNode[e]); }
  }
  let inter = 0;
  for (const n of nodesA) if (nodesB.has(n)) inter++;
  const union = nodesA.size + nodesB.size - inter;
  const counts = Object.fromEntries(cats.map((c) => [c, 0]));
  for (const c of category) counts[cats[c]]++;
  return {
    edges, category, counts, edgeIou, nodeIou: union ? inter / union : 1, nA, nB,
  };
}

// ---- 2. focus -----------------------------------------------------------------------------------

function onPathsThrough(m, edges, node) {
  const src = [], dst = [];
  for (const e of edges) { src.push(m.srcNode[e]); dst.push(m.dstNode[e]); }
  src.push(...m.kvLinks.src);
  dst.push(...m.kvLinks.dst);
  const nN = m.g.node_names.length;
  const up = new Uint8Array(nN), down = new Uint8Array(nN);
  up[node] = down[node] = 1;
  for (let changed = true; changed;) {
    changed = false;
    for (let i = 0; i < src.length; i++) {
      if (up[dst[i]] && !up[src[i]]) { up[src[i]] = 1; changed = true; }
      if (down[src[i]] && !down[dst[i]]) { down[dst[i]] = 1; changed = true; }
    }
  }
  return edges.map((e) => Boolean(up[m.dstNode[e]] || down[m.srcNode[e]]));
}

// ---- 3-5. the scene (scene.build_scene) ---------------------------------------------------------

function densityScale(n) {
  return Math.min(1, Math.max(0.4, Math.sqrt(150 / Math.max(n, 1))));
}

function widthBin(ratio, bins) {
  let level = 0;
  for (const b of bins) if (ratio >= b) level++;
  return level;
}

function classesOf(m, view, scB, edges, diff) {
  const st = m.style;
  if (diff) {
    return st.diff_categories.map((name, code) => ({
      label: st.diff_labels[name], color: st.diff_colors[name],
      dash: name === "removed" ? "dot" : "solid", member: (i) => diff.category[i] === code,
    }));
  }
  const negative = (i) => scB[edges[i]] < 0;
  if (view.color_by === "sign") {
    return [
      { label: st.helps_label, color: st.helps, dash: "solid", member: negative },
      { label: st.hurts_label, color: st.hurts, dash: "solid", member: (i) => !negative(i) },
    ];
  }
  const codes = { q: 0, k: 1, v: 2, mlp: 3, logits: 4 }, out = [];
  for (const [name, color] of Object.entries(st.target_colors)) {
    const is = (i) => m.target[edges[i]] === codes[name];
    out.push({ label: `into ${name}`, color, dash: "solid", member: (i) => is(i) && negative(i) });
    out.push({ label: `into ${name}`, color, dash: "dot", member: (i) => is(i) && !negative(i) });
  }
  return out;
}

function labelColor(fill) {
  // white on a dark fill (scene.label_color)
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(fill.slice(i, i + 2), 16));
  return 299 * r + 587 * g + 114 * b < 127500 ? "#ffffff" : "#333333";
}

function mixWhite(hex, t) {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return "#" + c.map((v) => Math.floor(255 + (v - 255) * t + 0.5).toString(16).padStart(2, "0")).join("");
}

// boxes by an analysis (scene.NodeValues, scene.value_fills)
function valueRow(m, mode, rowB) {
  const nv = m.nodeValues[mode];
  if (!nv) return null;
  const step = m.run.token_steps[rowB];
  let r = 0;
  for (let i = 0; i < nv.steps.length; i++) if (nv.steps[i] <= step) r = i;
  const nN = m.g.node_names.length;
  return { nv, step: nv.steps[r], values: nv.values.subarray(r * nN, (r + 1) * nN) };
}

function valueFills(m, mode, row) {
  const st = m.style, nv = row.nv, out = [];
  for (const value of row.values) {
    if (Number.isNaN(value)) { out.push(st.no_value_fill); continue; }
    let ratio = Math.min(Math.abs(value) / nv.scale, 1);
    if (nv.sqrt) ratio = Math.sqrt(ratio);
    let level = Math.floor(ratio * st.fill_levels + 0.5) / st.fill_levels, color = st.role_fill;
    if (mode === "dla") color = value > 0 ? st.helps : st.hurts;
    else if (!(value > 0)) level = 0;
    out.push(mixWhite(color, level));
  }
  return out;
}

function scaleText(scale) {
  // three significant digits in fixed notation (scene.scale_text)
  return scale.toFixed(Math.max(0, 2 - Math.floor(Math.log10(scale))));
}

function valueLegend(m, mode, step, scale) {
  const st = m.style, colors = mode === "dla" ? [st.helps, st.hurts] : [st.role_fill];
  const labels = st.node_color_labels[mode].slice();
  const full = `full colour at ${mode === "dla" ? "±" : ""}${scaleText(scale)}`;
  if (labels.length === 1) labels[0] += ` (step ${step}; ${full})`;
  else { labels[0] += ` (step ${step})`; labels[labels.length - 1] += ` (${full})`; }
  return labels.map((label, i) => ({ label, color: colors[i], dash: "solid", kind: "fill" }));
}

function computeScene(m, view, rowB, rowA) {
  const st = m.style, scB = rowScores(m, rowB);
  const focus = view.node != null && m.nodeIndex.has(view.node) ? m.nodeIndex.get(view.node) : null;
  let edges, strength, diff = null;
  if (rowA == null) {
    edges = selectEdges(m, rowB, view.threshold, view.top_n, view.only_circuit);
    strength = edges.map((e) => Math.abs(finite(scB[e])));
  } else {
    diff = diffEdges(m, rowA, rowB, view.threshold, view.top_n);
    const scA = rowScores(m, rowA);
    const s = diff.edges.map((e) => Math.max(Math.abs(finite(scA[e])), Math.abs(finite(scB[e]))));
    const ranking = s.map((_, i) => i).sort((i, j) => s[j] - s[i] || i - j);
    edges = ranking.map((i) => diff.edges[i]);
    strength = ranking.map((i) => s[i]);
    diff = { ...diff, category: ranking.map((i) => diff.category[i]) };
  }
  // 2. focus
  let dim = edges.map(() => false);
  if (focus != null) {
    if (view.focus) {
      const keep = onPathsThrough(m, edges, focus);
      edges = edges.filter((_, i) => keep[i]);
      strength = strength.filter((_, i) => keep[i]);
      if (diff) diff = { ...diff, category: diff.category.filter((_, i) => keep[i]) };
      dim = edges.map(() => false);
    } else {
      dim = edges.map((e) => m.srcNode[e] !== focus && m.dstNode[e] !== focus);
    }
  }
  // 3. groups
  const scale = st.line_scale * densityScale(edges.length);
  const groups = [];
  if (dim.some(Boolean)) {
    groups.push({
      edges: edges.filter((_, i) => dim[i]), color: st.faded, width: st.faded_width,
      opacity: st.faded_opacity, label: st.faded_label, dash: "solid", legend: false,
    });
  }
  let top = 0;
  for (const s of strength) if (s > top) top = s;
  top = top || 1;
  const bins = strength.map((s) => widthBin(Math.sqrt(s / top), st.width_bins));
  for (const cls of classesOf(m, view, scB, edges, diff)) {
    let first = true;
    for (let level = st.widths.length - 1; level >= 0; level--) {
      const chosen = [];
      for (let i = 0; i < edges.length; i++) {
        if (!dim[i] && bins[i] === level && cls.member(i)) chosen.push(edges[i]);
      }
      if (!chosen.length) continue;
      groups.push({
        edges: chosen, color: cls.color, width: st.widths[level] * scale,
        opacity: st.opacities[level], label: cls.label, dash: cls.dash,
        legend: first && (cls.dash === "solid" || diff !== null),
      });
      first = false;
    }
  }
  if (!diff && view.color_by === "target" && edges.some((e, i) => !dim[i] && scB[e] >= 0)) {
    groups.push({
      edges: [], color: st.dotted_sample, width: 0, opacity: 1, label: st.dotted_label,
      dash: "dot", legend: true,
    });
  }
  groups.sort((a, b) => a.width - b.width); // stable: ties keep their order
  // legend
  const seen = new Map();
  for (const gr of groups) {
    if (gr.legend && !seen.has(gr.label)) {
      seen.set(gr.label, { label: gr.label, color: gr.color, dash: gr.dash, kind: "line" });
    }
  }
  const order = (l) => (l in st.legend_order ? st.legend_order[l] : 99);
  const legend = [...seen.values()].sort((a, b) => order(a.label) - order(b.label));
  // 4. boxes
  const nN = m.g.node_names.length;
  const massSrc = new Float64Array(nN), massDst = new Float64Array(nN);
  const active = new Uint8Array(nN);
  for (let i = 0; i < edges.length; i++) {
    const e = edges[i];
    massSrc[m.srcNode[e]] += strength[i];
    massDst[m.dstNode[e]] += strength[i];
    active[m.srcNode[e]] = active[m.dstNode[e]] = 1;
  }
  const mass = new Float64Array(nN);
  let maxMass = 0;
  for (let n = 0; n < nN; n++) {
    mass[n] = massSrc[n] + massDst[n];
    if (mass[n] > maxMass) maxMass = mass[n];
  }
  const topMass = maxMass > 0 ? maxMass : 1;
  const fills = [];
  for (let n = 0; n < nN; n++) {
    if (!active[n]) { fills.push(st.idle_fill); continue; }
    const ratio = Math.min(1, Math.max(0, mass[n] / topMass));
    const level = Math.floor(Math.sqrt(ratio) * st.fill_levels + 0.5) / st.fill_levels;
    fills.push(mixWhite(st.kind_fill[m.g.node_kind[n]], st.min_fill + (1 - st.min_fill) * level));
  }
  const inCircuit = circuitNodes(m, rowB);
  if (inCircuit.some(Boolean)) {
    legend.push({ label: "trained by the run's circuit", color: st.circuit_line, dash: "solid", kind: "box" });
  }
  const mode = view.node_color || "kind";
  const values = mode === "kind" ? null : valueRow(m, mode, rowB);
  let boxFills = fills;
  if (values) {
    boxFills = valueFills(m, mode, values);
    legend.push(...valueLegend(m, mode, values.step, values.nv.scale));
  }
  // 5. bands
  const bandIn = m.g.band_edges, bandOut = bandIn.slice();
  if (view.collapse) {
    const busy = new Uint8Array(m.g.n_layers);
    for (let n = 0; n < nN; n++) {
      const k = m.g.node_kind[n];
      if (active[n] && (k === "head" || k === "kv" || k === "mlp")) busy[m.g.node_layer[n]] = 1;
    }
    const first = m.g.paper ? 0 : 1;
    let y = bandIn[0];
    for (let b = 0; b < bandIn.length - 1; b++) {
      bandOut[b] = y;
      const layer = b - first, isLayer = layer >= 0 && layer < m.g.n_layers;
      y += isLayer && !busy[layer] ? st.collapsed_band : bandIn[b + 1] - bandIn[b];
    }
    bandOut[bandIn.length - 1] = y;
  }
  return {
    edges, strength, diff, groups, legend, fills: boxFills, mass, active, inCircuit, focus,
    bandIn, bandOut, rowB, rowA, values,
  };
}

function circuitNodes(m, row) {
  const nN = m.g.node_names.length, out = new Array(nN).fill(false);
  const base = row * m.rowBytes;
  for (let byte = 0; byte < m.rowBytes; byte++) {
    const bits = m.selected[base + byte];
    if (!bits) continue;
    for (let k = 0; k < 8; k++) {
      if (!((bits >> k) & 1)) continue;
      const e = byte * 8 + k;
      out[m.srcNode[e]] = true;
      out[m.dstNode[e]] = true;
    }
  }
  return out.map((on, n) => on && ["head", "kv", "mlp"].includes(m.g.node_kind[n]));
}

function warp(scene, y) {
  const bi = scene.bandIn, bo = scene.bandOut, last = bi.length - 1;
  if (y <= bi[0]) return bo[0] + (y - bi[0]);
  if (y >= bi[last]) return bo[last] + (y - bi[last]);
  let k = 0;
  while (k < last - 1 && y > bi[k + 1]) k++;
  return bo[k] + ((y - bi[k]) * (bo[k + 1] - bo[k])) / (bi[k + 1] - bi[k]);
}

// ---- the view ------------------------------------------------------------------------------------

function rowOf(m, token) {
  if (token == null) return m.nS - 1;
  const i = m.run.tokens.indexOf(token);
  return i < 0 ? m.nS - 1 : i;
}

function tokenOf(m, row) {
  return m.run.tokens[row];
}

function evalAt(m, row) {
  const ev = m.header.evals, step = m.run.token_steps[row];
  let best = -1;
  for (let i = 0; i < ev.step.length; i++) if (ev.step[i] <= step) best = i;
  return best;
}

function fmt(x, digits = 3) {
  if (x == null || Number.isNaN(x)) return "–";
  return Math.abs(x) >= 1000 ? x.toFixed(0) : Number(x.toPrecision(digits)).toString();
}

// ---- DOM -------------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function buildDom(s) {
  const root = el("div", { class: "cvz" + (s.m.header.presentation ? " cvz-presentation" : ""), "data-cvz": "1" });
  root.tabIndex = -1;
  const title = el("div", { class: "cvz-title" });
  const strip = el("div", { class: "cvz-strip", "data-testid": "cvz-strip" });
  const row1 = el("div", { class: "cvz-controls" });
  // In presentation mode the secondary controls fold away behind "more", leaving the graph room.
  const more = el("button", { class: "cvz-more", type: "button", text: "more ▾", title: "More controls" });
  const play = el("button", { class: "cvz-play", type: "button", title: "Play / pause (one frame per snapshot)", text: "▶" });
  const step = el("input", { class: "cvz-step", type: "range", min: "0", step: "1", "aria-label": "Step" });
  const stepLabel = el("span", { class: "cvz-step-label" });
  const topN = el("input", { class: "cvz-topn", type: "range", min: "0", max: "1000", step: "1", "aria-label": "Top-N edges" });
  const topNBox = el("input", { class: "cvz-topn-box", type: "text", size: "6", "aria-label": "Top-N edges (number, or all)" });
  const thr = el("input", { class: "cvz-threshold", type: "range", min: "0", max: "400", step: "1", "aria-label": "Threshold on |score|" });
  const thrLabel = el("span", { class: "cvz-threshold-label" });
  row1.append(
    play,
    el("span", { class: "cvz-group cvz-grow" }, el("label", { class: "cvz-lbl", text: "step" }), step, stepLabel),
    el("span", { class: "cvz-group" }, el("label", { class: "cvz-lbl", text: "top-N" }), topN, topNBox),
    el("span", { class: "cvz-group" }, el("label", { class: "cvz-lbl", text: "|score| ≥" }), thr, thrLabel),
  );
  if (s.m.header.presentation) row1.append(more);
  const row2 = el("div", { class: "cvz-controls cvz-secondary" });
  if (s.m.header.presentation) row2.classList.add("cvz-folded");
  const colorBy = el("select", { class: "cvz-color", "aria-label": "Colour edges by" });
  for (const [v, t] of [["sign", "colour: sign"], ["target", "colour: reader"]]) colorBy.append(el("option", { value: v, text: t }));
  const nodeColor = el("select", { class: "cvz-node-color", "aria-label": "Colour boxes by" });
  for (const mode of ["kind", ...Object.keys(s.m.nodeValues)]) {
    const text = mode === "kind" ? "boxes: kind" : mode === "dla" ? "boxes: DLA" : `boxes: ${s.m.style.role_labels[mode]}`;
    nodeColor.append(el("option", { value: mode, text }));
  }
  const onlyCircuit = el("input", { type: "checkbox", class: "cvz-only" });
  const compare = el("select", { class: "cvz-compare", "aria-label": "Compare with step" });
  const mode = el("select", { class: "cvz-mode", "aria-label": "Compare mode" });
  for (const [v, t] of [["overlay", "overlay"], ["side", "side by side"]]) mode.append(el("option", { value: v, text: t }));
  const focus = el("input", { type: "checkbox", class: "cvz-focus" });
  const collapse = el("input", { type: "checkbox", class: "cvz-collapse" });
  const find = el("input", { class: "cvz-find", type: "text", size: "9", placeholder: "find box…", "aria-label": "Find a box by name" });
  const reset = el("button", { class: "cvz-reset", type: "button", text: "fit", title: "Fit the whole graph (double-click does the same)" });
  row2.append(
    colorBy,
    nodeColor,
    el("label", { class: "cvz-check" }, onlyCircuit, " only the run's circuit"),
    el("span", { class: "cvz-group" }, el("span", { class: "cvz-lbl", text: "compare with" }), compare, mode),
    el("label", { class: "cvz-check" }, focus, " focus on the selected box"),
    el("label", { class: "cvz-check" }, collapse, " collapse empty layers"),
    el("span", { class: "cvz-group" }, find, reset),
  );
  const summary = el("div", { class: "cvz-summary", "data-testid": "cvz-summary" });
  const legend = el("div", { class: "cvz-legend" });
  const body = el("div", { class: "cvz-body" });
  const stage = el("div", { class: "cvz-stage" });
  const canvas = el("canvas", { class: "cvz-canvas", "data-testid": "cvz-canvas" });
  const tip = el("div", { class: "cvz-tip" });
  stage.append(canvas, tip);
  const details = el("div", { class: "cvz-details", "data-testid": "cvz-details" });
  body.append(stage, details);
  const notices = el("div", { class: "cvz-notices" });
  root.append(title, notices, strip, row1, row2, summary, legend, body);
  return {
    root, title, notices, strip, play, more, row2, step, stepLabel, topN, topNBox, thr, thrLabel, colorBy,
    nodeColor, onlyCircuit, compare, mode, focus, collapse, find, reset, summary, legend, body, stage,
    canvas, tip, details,
  };
}

// top-N slider: log scale from 1 to the number of edges; the far right end means "all"
function topNToSlider(m, n) {
  if (n == null) return 1000;
  return Math.round((1000 * Math.log(Math.max(1, n))) / Math.log(Math.max(2, m.nE)));
}

function sliderToTopN(m, pos) {
  if (pos >= 1000) return null;
  return Math.max(1, Math.round(Math.exp((pos / 1000) * Math.log(Math.max(2, m.nE)))));
}

function thresholdToSlider(m, t) {
  return Math.round((400 * t) / (m.maxStrength || 1));
}

function syncControls(s) {
  const { m, dom: d, view: v } = s;
  d.step.max = String(m.nS - 1);
  d.step.value = String(rowOf(m, v.step));
  d.step.disabled = m.nS < 2;
  d.stepLabel.textContent = m.run.token_labels[rowOf(m, v.step)];
  d.topN.value = String(topNToSlider(m, v.top_n));
  d.topNBox.value = v.top_n == null ? "all" : String(v.top_n);
  d.thr.value = String(thresholdToSlider(m, v.threshold));
  d.thrLabel.textContent = fmt(v.threshold);
  d.colorBy.value = v.color_by;
  d.nodeColor.value = v.node_color && s.m.nodeValues[v.node_color] ? v.node_color : "kind";
  d.nodeColor.hidden = d.nodeColor.options.length < 2;
  d.onlyCircuit.checked = Boolean(v.only_circuit);
  if (d.compare.options.length !== m.nS + 1) {
    d.compare.replaceChildren(el("option", { value: "", text: "(off)" }));
    m.run.tokens.forEach((t, i) => d.compare.append(el("option", { value: t, text: m.run.token_labels[i] })));
  }
  d.compare.value = v.compare == null ? "" : v.compare;
  d.mode.value = v.compare_mode;
  d.mode.disabled = v.compare == null;
  d.focus.checked = Boolean(v.focus);
  d.collapse.checked = Boolean(v.collapse);
  d.play.textContent = s.playing ? "❚❚" : "▶";
}

// ---- drawing ------------------------------------------------------------------------------------

const MARGIN = { left: 56, right: 10, top: 8, bottom: 8 };

function panels(s) {
  const v = s.view, m = s.m;
  const rowB = rowOf(m, v.step);
  const rowA = v.compare == null ? null : rowOf(m, v.compare);
  if (rowA == null) return [{ scene: computeScene(m, v, rowB, null), title: null }];
  if (v.compare_mode === "side") {
    return [
      { scene: computeScene(m, v, rowA, null), title: `A: ${m.run.token_labels[rowA]}` },
      { scene: computeScene(m, v, rowB, null), title: `B: ${m.run.token_labels[rowB]}` },
    ];
  }
  return [{ scene: computeScene(m, v, rowB, rowA), title: null }];
}

function frameOf(s, width, height, scene) {
  // One frame (the same scale) for every panel: x over the layout, y over the (warped) bands.
  const g = s.m.g, z = s.zoom;
  const [x0, x1] = g.x_range;
  const yLow = warp(scene, g.y_range[0]), yHigh = warp(scene, g.y_range[1]);
  const w = width - MARGIN.left - MARGIN.right, h = height - MARGIN.top - MARGIN.bottom;
  const kx = (w / (x1 - x0)) * z.k, ky = (h / (yHigh - yLow)) * z.k;
  return {
    kx, ky,
    sx: (x) => MARGIN.left + (x - x0) * kx + z.dx,
    sy: (y) => MARGIN.top + h - (y - yLow) * ky + z.dy,
  };
}

function scroller(node) {
  for (let p = node.parentElement; p; p = p.parentElement) {
    const overflow = getComputedStyle(p).overflowY;
    if ((overflow === "auto" || overflow === "scroll") && p.scrollHeight > p.clientHeight) return p;
  }
  return null;
}

function fitHeight(s) {
  // The graph takes the rest of the window below its controls, so input and logits are visible
  // together; measured from the top of the scrolled content, so scrolling does not change it.
  const d = s.dom, box = scroller(d.stage);
  const scrolled = box ? box.scrollTop - box.getBoundingClientRect().top : window.scrollY || 0;
  const top = d.stage.getBoundingClientRect().top + scrolled;
  const room = (window.innerHeight || 800) - top - 16;
  s.height = Math.round(Math.min(Math.max(s.standalone ? Math.max(room, 560) : room, 300), 4000));
}

function fitCanvas(s) {
  const d = s.dom, dpr = window.devicePixelRatio || 1;
  const width = Math.max(320, d.stage.clientWidth || d.root.clientWidth || 800);
  fitHeight(s);
  const height = s.height;
  if (d.canvas.width !== Math.round(width * dpr) || d.canvas.height !== Math.round(height * dpr)) {
    d.canvas.width = Math.round(width * dpr);
    d.canvas.height = Math.round(height * dpr);
    d.canvas.style.width = width + "px";
    d.canvas.style.height = height + "px";
  }
  return { width, height, dpr };
}

function draw(s) {
  const t0 = performance.now();
  const { m, dom: d } = s;
  const { width, height, dpr } = fitCanvas(s);
  const ctx = d.canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  const list = panels(s);
  const panelW = width / list.length;
  s.drawn = [];
  list.forEach((p, i) => {
    ctx.save();
    ctx.beginPath();
    ctx.rect(i * panelW, 0, panelW, height);
    ctx.clip();
    ctx.translate(i * panelW, 0);
    const frame = frameOf(s, panelW, height, p.scene);
    drawScene(s, ctx, p.scene, frame, panelW, height, p.title);
    ctx.restore();
    s.drawn.push({ scene: p.scene, frame, x0: i * panelW, width: panelW });
  });
  updateText(s, list);
  s.lastScenes = list.map((p) => p.scene);
  s.renderCount += 1;
  d.root.dataset.renderCount = String(s.renderCount);
  d.root.dataset.renderMs = (performance.now() - t0).toFixed(2);
  d.root.dataset.shown = String(list[list.length - 1].scene.edges.length);
  d.root.dataset.step = tokenOf(m, rowOf(m, s.view.step));
}

function drawScene(s, ctx, scene, f, width, height, title) {
  const m = s.m, g = m.g, P = m.style.curve_points, pts = m.points;
  // layer labels
  ctx.fillStyle = "#555";
  ctx.font = `${m.style.label_size + 1}px ${m.style.font_family}`;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  let lastY = Infinity;
  for (let L = 0; L < g.n_layers; L++) {
    const y = f.sy(warp(scene, L));
    const band = f.ky * (warp(scene, L + 0.5) - warp(scene, L - 0.5));
    if (band < 6 || Math.abs(lastY - y) < m.style.label_size + 2) continue;
    ctx.fillText(band > 40 ? `layer ${L}` : `L${L}`, MARGIN.left - 6, y);
    lastY = y;
  }
  // edges, weakest group first
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const gr of scene.groups) {
    if (!gr.edges.length) continue;
    ctx.strokeStyle = gr.color;
    ctx.globalAlpha = gr.opacity;
    ctx.lineWidth = gr.width;
    ctx.setLineDash(gr.dash === "dot" ? [Math.max(1.5, gr.width), Math.max(2, gr.width * 1.5)] : []);
    ctx.beginPath();
    for (const e of gr.edges) {
      const off = e * P * 2;
      ctx.moveTo(f.sx(pts[off]), f.sy(warp(scene, pts[off + 1])));
      for (let k = 1; k < P; k++) ctx.lineTo(f.sx(pts[off + 2 * k]), f.sy(warp(scene, pts[off + 2 * k + 1])));
    }
    ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.globalAlpha = 1;
  // boxes
  const nN = g.node_names.length;
  ctx.textAlign = "center";
  for (let n = 0; n < nN; n++) {
    const r = boxRect(scene, f, g, n);
    ctx.fillStyle = scene.fills[n];
    ctx.fillRect(r.x, r.y, r.w, r.h);
    const strong = scene.inCircuit[n];
    if (g.node_kind[n] === "kv" && r.h < 5) {
      // a thin key/value bar: its fill says it all (an idle one is a hairline, so that it stays
      // visible); a dark underline marks the circuit's
      if (!scene.active[n]) { ctx.fillStyle = m.style.node_line; ctx.fillRect(r.x, r.y + r.h / 2, r.w, 0.7); }
      if (strong) { ctx.fillStyle = m.style.circuit_line; ctx.fillRect(r.x, r.y + r.h, r.w, 1); }
      continue;
    }
    ctx.strokeStyle = strong ? m.style.circuit_line : m.style.node_line;
    // outlines scale with the box, so that a 30-layer graph is not drawn in black
    const outline = Math.min(strong ? 2 : 0.8, Math.max(0.6, r.h / (strong ? 9 : 14)));
    ctx.lineWidth = outline * m.style.line_scale;
    ctx.strokeRect(r.x, r.y, r.w, r.h);
    if (r.h >= 11 && r.w >= 16 && g.node_kind[n] !== "kv") {
      const size = Math.min(m.style.label_size, r.h * 0.7);
      ctx.font = `${size}px ${m.style.font_family}`;
      ctx.fillStyle = labelColor(scene.fills[n]);
      ctx.fillText(nodeLabel(g, n), r.x + r.w / 2, r.y + r.h / 2);
    }
  }
  if (scene.focus != null) {
    const r = boxRect(scene, f, g, scene.focus);
    ctx.strokeStyle = m.style.highlight_line;
    ctx.lineWidth = 3 * m.style.line_scale;
    ctx.strokeRect(r.x - 3, r.y - 3, r.w + 6, r.h + 6);
  }
  if (title) {
    ctx.font = `bold ${m.style.font_size}px ${m.style.font_family}`;
    ctx.fillStyle = "#222";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText(title, MARGIN.left, 4);
  }
}

function boxRect(scene, f, g, n) {
  const yTop = warp(scene, g.node_y[n] + g.node_h[n] / 2), yBot = warp(scene, g.node_y[n] - g.node_h[n] / 2);
  const x = f.sx(g.node_x[n] - g.node_w[n] / 2), w = g.node_w[n] * f.kx;
  const y = f.sy(yTop), h = Math.max(1.5, (yTop - yBot) * f.ky);
  return { x, y, w, h };
}

function nodeLabel(g, n) {
  const k = g.node_kind[n];
  if (k === "head") return `h${g.node_head[n]}`;
  if (k === "kv") return `kv${g.node_head[n]}`;
  if (k === "mlp") return "MLP";
  return k;
}

// ---- text around the graph -------------------------------------------------------------------------

function updateText(s, list) {
  const { m, dom: d, view: v } = s;
  const row = rowOf(m, v.step);
  const shown = v.top_n == null ? "all edges" : `top ${v.top_n}`;
  const cut = v.threshold > 0 ? `, |score| ≥ ${fmt(v.threshold)}` : "";
  const what = v.compare == null
    ? m.run.token_labels[row]
    : `${m.run.token_labels[rowOf(m, v.compare)]} → ${m.run.token_labels[row]}`;
  d.title.textContent = `${m.run.label}: ${what} (${shown}${cut})`;
  d.title.dataset.status = m.run.status;
  // the step in numbers
  const ev = m.header.evals, i = evalAt(m, row);
  const parts = [["step", m.run.token_labels[row]]];
  if (i >= 0) {
    if (ev.accuracy) parts.push(["accuracy", fmt(ev.accuracy[i])]);
    if (ev.task_metric) parts.push(["task metric", fmt(ev.task_metric[i])]);
    if (ev.lm_loss) parts.push(["held-out LM loss", fmt(ev.lm_loss[i], 4)]);
    if (ev.step[i] !== m.run.token_steps[row]) parts.push(["evaluated at step", String(ev.step[i])]);
  } else {
    parts.push(["evaluation", "none yet"]);
  }
  const last = list[list.length - 1].scene;
  parts.push(["edges drawn", String(last.edges.length)]);
  d.strip.replaceChildren(...parts.map(([k, val]) => el("span", { class: "cvz-metric" }, el("b", { text: val }), " " + k)));
  // compare summary
  const diff = list.length === 1 ? last.diff : null;
  if (v.compare != null && list.length === 2) {
    const both = diffEdges(m, rowOf(m, v.compare), row, v.threshold, v.top_n);
    d.summary.replaceChildren(...summaryParts(m, both));
  } else if (diff) {
    d.summary.replaceChildren(...summaryParts(m, diff));
  } else {
    d.summary.replaceChildren();
  }
  // legend
  // side by side, boxes coloured by an analysis: each panel's analysed step (A | B)
  const first = list[0].scene;
  const both = list.length === 2 && first.values && last.values && first.values.step !== last.values.step;
  const steps = both ? `(steps ${first.values.step} | ${last.values.step}` : null;
  d.legend.replaceChildren(...last.legend.map((entry) => {
    if (steps && entry.kind === "fill") entry = { ...entry, label: entry.label.replace(/\(step \d+/, steps) };
    const cls = { box: "cvz-swatch-box", fill: "cvz-swatch-fill" }[entry.kind] || "cvz-swatch";
    const sample = el("span", { class: cls });
    sample.style.borderColor = entry.color;
    if (entry.kind === "fill") sample.style.backgroundColor = entry.color;
    if (entry.kind === "line") sample.style.borderTopStyle = entry.dash === "dot" ? "dotted" : "solid";
    return el("span", { class: "cvz-legend-item" }, sample, entry.label);
  }));
  renderDetails(s);
}

function summaryParts(m, diff) {
  const c = diff.counts;
  const items = [
    ["edge IoU", fmt(diff.edgeIou, 2)], ["node IoU", fmt(diff.nodeIou, 2)],
    ["added", c.added], ["removed", c.removed],
    ["stronger / weaker", `${c.strengthened} / ${c.weakened}`], ["sign flips", c.flipped],
  ];
  const out = items.map(([k, v]) => el("span", { class: "cvz-metric" }, el("b", { text: String(v) }), " " + k));
  out.push(el("span", {
    class: "cvz-note",
    text: m.run.has_noise
      ? `${c.noise} changes are inside the noise floor (under 2× the edge's rescoring std) and drawn light grey.`
      : "No rescoring for this run, so no noise floor: `circuitviz rescore RUN` greys out changes batch noise alone could explain.",
  }));
  return out;
}

function renderDetails(s) {
  const { m, dom: d, view: v } = s;
  const n = v.node != null && m.nodeIndex.has(v.node) ? m.nodeIndex.get(v.node) : null;
  d.details.classList.toggle("cvz-open", n != null);
  if (n == null) { d.details.replaceChildren(); return; }
  const t0 = performance.now();
  const row = rowOf(m, v.step), sc = rowScores(m, row);
  const kind = m.g.node_kind[n];
  const touching = [];
  for (let e = 0; e < m.nE; e++) if (m.srcNode[e] === n || m.dstNode[e] === n) touching.push(e);
  const top = touching.slice().sort((a, b) => Math.abs(finite(sc[b])) - Math.abs(finite(sc[a])) || a - b).slice(0, 12);
  const close = el("button", { class: "cvz-close", type: "button", text: "×", title: "Deselect" });
  close.onclick = () => setView(s, { node: null, focus: false }, 0);
  const table = el("table", { class: "cvz-table" },
    el("tr", {}, el("th", { text: "edge" }), el("th", { text: "score" }), el("th", { text: "circuit" })));
  for (const e of top) {
    table.append(el("tr", {},
      el("td", { text: `${m.g.src_names[m.src[e]]} → ${m.g.dst_names[m.dst[e]]}` }),
      el("td", { text: (sc[e] >= 0 ? "+" : "") + fmt(sc[e], 4) }),
      el("td", { text: inCircuitBit(m, row, e) ? "✓" : "" })));
  }
  const history = [];
  for (let r = 0; r < m.nS; r++) {
    const row_ = rowScores(m, r);
    let total = 0;
    for (const e of touching) total += Math.abs(finite(row_[e]));
    history.push(total);
  }
  const parts = [
    el("div", { class: "cvz-details-head" }, el("b", { text: v.node }), close),
    el("div", { class: "cvz-owns", text: `${v.node} owns ${m.style.owned[kind]}.` }),
    el("div", { class: "cvz-note", text: `Σ|score| of its ${touching.length} edges across the run (cursor: this step)` }),
    sparkline(history, row, m.run.token_steps),
  ];
  const changes = changesOf(m, n, m.run.token_steps[row]);
  if (changes.length) {
    parts.push(el("div", { class: "cvz-note", text: "‖ΔW‖/‖W‖ of what it owns, at this step" }));
    parts.push(el("div", { class: "cvz-changes" }, ...changes.map(([k, val]) => el("span", { class: "cvz-metric" }, el("b", { text: fmt(val, 3) }), " " + k))));
  }
  parts.push(el("div", { class: "cvz-note", text: "Its strongest edges at this step" }), table);
  d.details.replaceChildren(...parts);
  d.details.dataset.node = v.node;
  d.details.dataset.ms = (performance.now() - t0).toFixed(2);
}

function changesOf(m, n, step) {
  const c = m.changes;
  if (!c) return [];
  const kind = m.g.node_kind[n], layer = m.g.node_layer[n], head = m.g.node_head[n];
  if (kind !== "head" && kind !== "mlp") return [];
  const names = ["W_Q", "W_K", "W_V", "W_O", "MLP"], latest = new Map();
  for (let i = 0; i < c.step.length; i++) {
    if (c.step[i] > step || c.layer[i] !== layer) continue;
    if (kind === "mlp" ? c.kind[i] !== 4 : c.head[i] !== head || c.kind[i] === 4) continue;
    latest.set(names[c.kind[i]], c.value[i]);
  }
  return [...latest.entries()];
}

function sparkline(values, cursor, steps) {
  const w = 260, h = 54, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("class", "cvz-spark");
  const lo = Math.min(...steps), hi = Math.max(...steps), vmax = Math.max(...values, 1e-12);
  const px = (i) => 4 + ((steps[i] - lo) / (hi - lo || 1)) * (w - 8);
  const py = (val) => h - 4 - (val / vmax) * (h - 8);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", values.map((val, i) => `${px(i)},${py(val)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#0072B2");
  line.setAttribute("stroke-width", "2");
  const mark = document.createElementNS(ns, "line");
  mark.setAttribute("x1", px(cursor));
  mark.setAttribute("x2", px(cursor));
  mark.setAttribute("y1", 0);
  mark.setAttribute("y2", h);
  mark.setAttribute("stroke", "#D55E00");
  mark.setAttribute("stroke-width", "1.5");
  svg.append(line, mark);
  return svg;
}

// ---- interaction ---------------------------------------------------------------------------------

function setView(s, changes, syncDelay = SYNC_PAUSE_MS) {
  s.view = { ...s.view, ...changes };
  syncControls(s);
  draw(s);
  scheduleSync(s, syncDelay);
}

function scheduleSync(s, delay) {
  if (!s.report) return;
  clearTimeout(s.syncTimer);
  if (s.playing) return; // reported when playing stops
  s.syncTimer = setTimeout(() => {
    s.seq += 1;
    s.report({ ...s.view, run: s.m.run.id, seq: s.seq });
  }, delay);
}

function hit(s, px, py) {
  for (const p of s.drawn || []) {
    if (px < p.x0 || px >= p.x0 + p.width) continue;
    const x = px - p.x0, g = s.m.g;
    for (let n = g.node_names.length - 1; n >= 0; n--) {
      const r = boxRect(p.scene, p.frame, g, n);
      const padY = Math.max(0, (6 - r.h) / 2);
      if (x >= r.x && x <= r.x + r.w && py >= r.y - padY && py <= r.y + r.h + padY) {
        return { node: n, panel: p };
      }
    }
    return { edge: nearestEdge(s, p, x, py), panel: p };
  }
  return {};
}

function nearestEdge(s, p, x, y) {
  const edges = p.scene.edges;
  if (edges.length > 8000) return null;
  const P = s.m.style.curve_points, pts = s.m.points, f = p.frame;
  let best = null, bestD = 36; // 6 px, squared
  for (const e of edges) {
    const off = e * P * 2;
    let ax = f.sx(pts[off]), ay = f.sy(warp(p.scene, pts[off + 1]));
    for (let k = 1; k < P; k++) {
      const bx = f.sx(pts[off + 2 * k]), by = f.sy(warp(p.scene, pts[off + 2 * k + 1]));
      const dx = bx - ax, dy = by - ay, len = dx * dx + dy * dy;
      const t = len > 0 ? Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / len)) : 0;
      const qx = ax + t * dx - x, qy = ay + t * dy - y, dist = qx * qx + qy * qy;
      if (dist < bestD) { bestD = dist; best = e; }
      ax = bx; ay = by;
    }
  }
  return best;
}

function tooltipText(s, target) {
  const m = s.m, scene = target.panel.scene;
  if (target.node != null) {
    const n = target.node;
    let nIn = 0, nOut = 0;
    for (const e of scene.edges) { if (m.dstNode[e] === n) nIn++; if (m.srcNode[e] === n) nOut++; }
    return `${m.g.node_names[n]}\nedges shown: ${nIn} in, ${nOut} out\nΣ|score| shown ${fmt(scene.mass[n], 4)}${valueLine(s, scene, n)}\n(click for details)`;
  }
  const e = target.edge, row = scene.rowB, sc = rowScores(m, row);
  const name = `${m.g.src_names[m.src[e]]} → ${m.g.dst_names[m.dst[e]]}`;
  if (!s.ranks || s.ranksRow !== row) { s.ranks = ranksOf(m, row); s.ranksRow = row; }
  const rank = `rank ${s.ranks[e]} of ${m.nE}`;
  if (scene.diff) {
    const a = rowScores(m, scene.rowA)[e], i = scene.edges.indexOf(e);
    const label = m.style.diff_labels[m.style.diff_categories[scene.diff.category[i]]];
    return `${name}\nA ${signed(a)} → B ${signed(sc[e])}\n${label}; ${rank} in B`;
  }
  return `${name}\nscore ${signed(sc[e])}\n${rank}`;
}

function valueLine(s, scene, n) {
  // the box's colouring value, when boxes are coloured by an analysis
  const row = scene.values;
  if (!row || Number.isNaN(row.values[n])) return "";
  const mode = s.view.node_color, name = mode === "dla" ? "DLA" : `${s.m.style.role_labels[mode]} score`;
  return `\n${name} ${signed(row.values[n])} at step ${row.step}`;
}

function signed(x) {
  return (x >= 0 ? "+" : "") + Number(x.toPrecision(4)).toString();
}

function wire(s) {
  const d = s.dom, m = s.m;
  const stepTo = (row) => setView(s, { step: tokenOf(m, row) });
  d.step.addEventListener("input", () => stepTo(Number(d.step.value)));
  d.topN.addEventListener("input", () => setView(s, { top_n: sliderToTopN(m, Number(d.topN.value)) }));
  d.topNBox.addEventListener("change", () => {
    const raw = d.topNBox.value.trim().toLowerCase();
    const n = raw === "all" || raw === "" ? null : Number.parseInt(raw, 10);
    if (n === null || (Number.isFinite(n) && n >= 1)) setView(s, { top_n: n });
    else syncControls(s);
  });
  d.thr.addEventListener("input", () => setView(s, { threshold: (Number(d.thr.value) / 400) * m.maxStrength }));
  d.colorBy.addEventListener("change", () => setView(s, { color_by: d.colorBy.value }, 0));
  d.nodeColor.addEventListener("change", () => setView(s, { node_color: d.nodeColor.value }, 0));
  d.onlyCircuit.addEventListener("change", () => setView(s, { only_circuit: d.onlyCircuit.checked }, 0));
  d.compare.addEventListener("change", () => setView(s, { compare: d.compare.value || null }, 0));
  d.mode.addEventListener("change", () => setView(s, { compare_mode: d.mode.value }, 0));
  d.focus.addEventListener("change", () => setView(s, { focus: d.focus.checked }, 0));
  d.collapse.addEventListener("change", () => setView(s, { collapse: d.collapse.checked }, 0));
  d.find.addEventListener("change", () => {
    const name = d.find.value.trim();
    if (m.nodeIndex.has(name)) setView(s, { node: name }, 0);
    d.find.classList.toggle("cvz-bad", name !== "" && !m.nodeIndex.has(name));
  });
  d.reset.addEventListener("click", () => { s.zoom = { k: 1, dx: 0, dy: 0 }; draw(s); });
  d.play.addEventListener("click", () => togglePlay(s));
  d.more.addEventListener("click", () => {
    d.row2.classList.toggle("cvz-folded");
    s.height = 0;
    draw(s);
  });
  const c = d.canvas;
  c.addEventListener("dblclick", () => { s.zoom = { k: 1, dx: 0, dy: 0 }; draw(s); });
  c.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const rect = c.getBoundingClientRect(), px = ev.clientX - rect.left, py = ev.clientY - rect.top;
    const p = (s.drawn || []).find((q) => px >= q.x0 && px < q.x0 + q.width) || { x0: 0 };
    const factor = Math.exp(-ev.deltaY * 0.0015), z = s.zoom;
    const k = Math.min(40, Math.max(1, z.k * factor)), ratio = k / z.k;
    const ax = px - p.x0 - MARGIN.left, ay = py - MARGIN.top;
    s.zoom = { k, dx: ax - (ax - z.dx) * ratio, dy: ay - (ay - z.dy) * ratio };
    if (k === 1) s.zoom = { k: 1, dx: 0, dy: 0 };
    draw(s);
  }, { passive: false });
  let drag = null;
  c.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, z: s.zoom, moved: false }; });
  c.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
  c.addEventListener("mousemove", (ev) => {
    if (drag && (ev.buttons & 1)) {
      const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved && s.zoom.k > 1) {
        s.zoom = { ...drag.z, dx: drag.z.dx + dx, dy: drag.z.dy + dy };
        draw(s);
      }
      return;
    }
    if (s.hoverFrame) return;
    s.hoverFrame = requestAnimationFrame(() => {
      s.hoverFrame = 0;
      const rect = c.getBoundingClientRect(), x = ev.clientX - rect.left, y = ev.clientY - rect.top;
      const target = hit(s, x, y);
      if (target.node == null && target.edge == null) { d.tip.style.display = "none"; c.style.cursor = "default"; return; }
      d.tip.textContent = tooltipText(s, target);
      d.tip.style.display = "block";
      d.tip.style.left = Math.min(x + 14, c.clientWidth - 240) + "px";
      d.tip.style.top = y + 14 + "px";
      c.style.cursor = target.node != null ? "pointer" : "default";
    });
  });
  c.addEventListener("mouseleave", () => { d.tip.style.display = "none"; });
  c.addEventListener("click", (ev) => {
    if (drag && drag.moved) return;
    const rect = c.getBoundingClientRect();
    const target = hit(s, ev.clientX - rect.left, ev.clientY - rect.top);
    if (target.node == null) return;
    const name = m.g.node_names[target.node];
    setView(s, { node: s.view.node === name ? null : name }, 0);
  });
}

function togglePlay(s) {
  const m = s.m;
  if (s.playing) {
    clearInterval(s.playTimer);
    s.playing = false;
    syncControls(s);
    scheduleSync(s, 0);
    return;
  }
  if (m.nS < 2) return;
  s.playing = true;
  if (rowOf(m, s.view.step) >= m.nS - 1) setView(s, { step: tokenOf(m, 0) });
  syncControls(s);
  s.playTimer = setInterval(() => {
    const row = rowOf(m, s.view.step);
    if (row + 1 >= m.nS) { togglePlay(s); return; }
    s.view = { ...s.view, step: tokenOf(m, row + 1) };
    syncControls(s);
    draw(s);
  }, PLAY_MS);
}

function warmOrders(s) {
  // Sort every snapshot's edges by |score| in idle time, so the first visit of a step is as fast
  // as the others.
  const m = s.m;
  let row = 0;
  const next = () => {
    while (row < m.nS && m.orders[row]) row++;
    if (row >= m.nS || s.dead) return;
    orderOf(m, row);
    setTimeout(next, 0);
  };
  setTimeout(next, 50);
}

// ---- mounting ---------------------------------------------------------------------------------------

function showNotices(s) {
  const items = s.m.header.notices || [];
  s.dom.notices.replaceChildren(...items.map((text) => el("div", { class: "cvz-notice", text })));
}

export default function (component) {
  const { data, parentElement, key, setStateValue } = component;
  if (!data) return undefined;
  let s = STATES.get(key);
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const header = decodePayload(bytes).header;
  const fresh = !s || s.m.header.payload_id !== header.payload_id;
  if (fresh) {
    const m = buildModel(bytes);
    const keepView = s && s.m.run.id === m.run.id && s.viewRev === header.view_rev;
    s = {
      m, view: keepView ? { ...s.view } : { ...m.header.view }, viewRev: header.view_rev,
      seq: s ? s.seq : 0, zoom: s ? s.zoom : { k: 1, dx: 0, dy: 0 }, playing: false,
      renderCount: s ? s.renderCount : 0, standalone: !setStateValue,
    };
    if (s.view.step != null && !m.run.tokens.includes(s.view.step)) s.view.step = null;
    STATES.set(key, s);
  } else {
    s.m.header.notices = header.notices;
    if (header.view_rev !== s.viewRev) {
      s.view = { ...header.view };
      s.viewRev = header.view_rev;
    }
  }
  s.dead = false;
  s.report = setStateValue ? (value) => setStateValue("view", value) : null;
  let root = parentElement.querySelector(":scope > .cvz");
  if (!root || fresh || !s.dom || s.dom.root !== root) {
    if (root) root.remove();
    s.dom = buildDom(s);
    parentElement.append(s.dom.root);
    wire(s);
    s.height = 0; // measured on the first draw
  }
  showNotices(s);
  syncControls(s);
  draw(s);
  if (fresh) warmOrders(s);
  const onResize = () => { fitHeight(s); draw(s); };
  window.addEventListener("resize", onResize);
  // Elements above the graph may appear after it mounted (a warning, a caption): keep fitting.
  const refit = setInterval(() => {
    const before = s.height;
    fitHeight(s);
    if (Math.abs(s.height - before) > 3) draw(s);
  }, 400);
  // For tests and benchmarks: the scene of any view, computed exactly as drawn.
  window.__circuitviz = window.__circuitviz || {};
  window.__circuitviz[key] = window.__circuitviz.main = {
    state: s,
    scene: (changes) => {
      const v = { ...s.view, ...(changes || {}) };
      return computeScene(s.m, v, rowOf(s.m, v.step), v.compare == null ? null : rowOf(s.m, v.compare));
    },
    points: (e) => Array.from(s.m.points.subarray(e * s.m.style.curve_points * 2, (e + 1) * s.m.style.curve_points * 2)),
    ready: () => s.m.orders.every(Boolean),
    setView: (changes) => setView(s, changes),
  };
  return () => {
    clearInterval(refit);
    window.removeEventListener("resize", onResize);
    clearInterval(s.playTimer);
    s.playing = false;
    s.dead = true;
  };
}
