// A few small SVG charts, enough for the operator page; no library, nothing fetched.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const M = { top: 10, right: 12, bottom: 24, left: 48 };

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) hi = lo + 1;
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const ticks = [];
    for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toFixed(10));
    if (ticks[ticks.length - 1] < hi) ticks.push(ticks[ticks.length - 1] + step);
    return ticks;
  }

  const mmss = (s) => { s = Math.round(s); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };

  function frame(svg, xs, yMax, yFormat) {
    const W = svg.clientWidth || 560, H = svg.clientHeight || 190;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.replaceChildren();
    const ticks = niceTicks(0, yMax, 4);
    const top = ticks[ticks.length - 1];
    const x0 = 0, x1 = Math.max(xs[xs.length - 1] || 1, 1);
    const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
    const sy = (y) => H - M.bottom - (y / top) * (H - M.top - M.bottom);
    for (const t of ticks) {
      svg.append(node("line", { x1: M.left, x2: W - M.right, y1: sy(t), y2: sy(t), stroke: "#e3e6ea" }));
      svg.append(node("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end", "font-size": 11, fill: "#59636e" },
        yFormat(t)));
    }
    // Time axis: whole seconds or minutes, about five labels.
    const xstep = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].find((st) => x1 / st <= 6) || 7200;
    const xt = [];
    for (let t = 0; t <= x1 + 1e-9; t += xstep) xt.push(t);
    for (const t of xt) {
      svg.append(node("text", { x: sx(t), y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "#59636e" }, mmss(t)));
    }
    return { W, H, sx, sy };
  }

  function legend(el, names, colors) {
    el.replaceChildren(...names.map((n) => {
      const s = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = colors(n);
      s.append(i, n);
      return s;
    }));
  }

  function empty(svg, text) {
    const W = svg.clientWidth || 560, H = svg.clientHeight || 190;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.replaceChildren(node("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, text));
  }

  // series: {name: [value per x, null where unknown]}
  function line(svg, legendEl, { x, series, colors, yFormat = String, yMin = 1e-9, emptyText = "no data yet" }) {
    const names = Object.keys(series);
    const values = names.flatMap((n) => series[n]).filter((v) => v !== null && v !== undefined);
    legend(legendEl, names, colors);
    if (!values.length) return empty(svg, emptyText);
    const { sx, sy } = frame(svg, x, Math.max(yMin, ...values), yFormat);
    for (const n of names) {
      let d = "";
      series[n].forEach((v, i) => {
        if (v === null || v === undefined) return;
        d += (d ? "L" : "M") + sx(x[i]).toFixed(1) + "," + sy(v).toFixed(1);
      });
      svg.append(node("path", { d, fill: "none", stroke: colors(n), "stroke-width": 2.2, "stroke-linejoin": "round" }));
      const lastI = series[n].map((v, i) => (v === null ? -1 : i)).filter((i) => i >= 0).pop();
      if (lastI !== undefined) {
        svg.append(node("circle", { cx: sx(x[lastI]), cy: sy(series[n][lastI]), r: 3.5, fill: colors(n) }));
      }
    }
  }

  // Grouped bars, one group per x bucket (x = bucket end).
  function bars(svg, legendEl, { x, series, colors, yFormat = String, emptyText = "no data yet" }) {
    const names = Object.keys(series);
    const values = names.flatMap((n) => series[n]).filter((v) => v !== null && v !== undefined);
    legend(legendEl, names, colors);
    if (!values.length || Math.max(...values) <= 0) return empty(svg, emptyText);
    const { sx, sy } = frame(svg, x, Math.max(...values), yFormat);
    const width = x.length > 1 ? sx(x[1]) - sx(x[0]) : 40;
    const bw = Math.max(1, (width * 0.8) / names.length);
    names.forEach((n, k) => {
      series[n].forEach((v, i) => {
        if (!v) return;
        const left = sx(x[i]) - width * 0.9 + k * bw;
        svg.append(node("rect", { x: left, y: sy(v), width: Math.max(1, bw - 1), height: sy(0) - sy(v), fill: colors(n), rx: 1 }));
      });
    });
  }

  // points: [{x, y, group}]
  function scatter(svg, legendEl, { points, colors, yFormat = String, xMax, emptyText = "no data yet" }) {
    const names = [...new Set(points.map((p) => p.group))];
    legend(legendEl, names, colors);
    if (!points.length) return empty(svg, emptyText);
    const { sx, sy } = frame(svg, [0, xMax], Math.max(...points.map((p) => p.y)), yFormat);
    for (const p of points) {
      svg.append(node("circle", { cx: sx(p.x), cy: sy(p.y), r: 4, fill: colors(p.group), "fill-opacity": 0.8 }));
    }
  }

  return { line, bars, scatter };
})();
