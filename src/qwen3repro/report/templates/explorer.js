// The sampling explorer: step through recorded generations and re-filter each step's distribution
// at any temperature, top-k, top-p and min-p, as the engine's sampler (engine/sampler.py) filters
// the full logits. Each step stores the top candidates' logits exactly and a histogram of the rest
// of the vocabulary (sweep/traces.py); the tail's weight is bracketed per bin, so every probability
// shown comes with a bound on its error.
"use strict";
(function () {
  const MEAN_STEPS = 10000; // a bin's mean gap is stored as its position in the bin, in these steps
  const GAP_ROUNDING = 0.5e-6; // the top candidates' gaps are rounded to 6 decimals

  // A bin's tokens lie between its edges, and no tail token above the last stored candidate.
  function tailBins(step, edges) {
    const t = step.tail, floor = step.gaps[step.gaps.length - 1] - GAP_ROUNDING;
    return t.bins.map((b, i) => {
      const edge = edges[b], hi = edges[b + 1], w = hi - edge, lo = Math.max(edge, floor);
      const mean = Math.min(hi, Math.max(lo, edge + (w * t.means[i]) / MEAN_STEPS));
      return { lo, hi, w, n: t.counts[i], mean, variance: ((w * w) / 4) * (t.spreads[i] / MEAN_STEPS) };
    });
  }

  // A bin's sum of exp(-gap / T), bracketed as sweep/traces.py's tail_mass brackets it: Jensen and a
  // second-order expansion about the mean below, the chord and the same expansion above. The
  // midpoint is the estimate, half the bracket its error.
  function binWeight(b, T) {
    const mu = b.w / (2 * MEAN_STEPS), delta = (b.w * b.w) / 4 / (2 * MEAN_STEPS); // stored rounding
    const f = b.n * Math.exp(-b.mean / T);
    const taylorLo = f * (1 - mu / T + (Math.max(b.variance - delta, 0) * Math.exp(-(b.hi - b.mean) / T)) / (2 * T * T));
    const taylorHi = f * (1 + mu / T + ((b.variance + delta + mu * mu) * Math.exp((b.mean - b.lo) / T)) / (2 * T * T));
    const jensen = f * Math.exp(-mu / T);
    const eLo = Math.exp(-b.lo / T), eHi = Math.exp(-b.hi / T);
    const chord = (b.n * ((b.hi - b.mean) * eLo + (b.mean - b.lo) * eHi + mu * (eLo - eHi))) / Math.max(b.hi - b.lo, 1e-12);
    const lower = Math.max(taylorLo, jensen), upper = Math.min(taylorHi, chord);
    return { w: (lower + upper) / 2, err: (upper - lower) / 2 };
  }

  // The sampler's filters on one step: temperature, then top-k, top-p and min-p (transformers' order).
  // Tokens are taken most likely first: the stored candidates one by one, then the tail bin by bin,
  // then banned tokens (probability 0). Where a filter reaches into the tail, its count and mass come
  // from the histogram and the result says so (beyond).
  function distribution(step, edges, params) {
    const greedy = !(params.temperature > 0);
    const T = greedy ? 1 : params.temperature;
    const bins = tailBins(step, edges);
    const weights = step.gaps.map((g) => Math.exp(-g / T));
    const tail = bins.map((b) => binWeight(b, T));
    let total = 0, tailError = 0;
    for (const w of weights) total += w;
    for (const t of tail) { total += t.w; tailError += t.err; }
    const eps = tailError / total + 2 * Math.expm1(GAP_ROUNDING / T);
    const probs = weights.map((w) => w / total);
    const groups = probs.map((p, i) => ({ stored: i, count: 1, mass: p }));
    bins.forEach((b, i) => groups.push({ stored: -1, count: b.n, mass: tail[i].w / total, lo: b.lo, hi: b.hi }));
    if (step.banned) groups.push({ stored: -1, count: step.banned, mass: 0, lo: Infinity, hi: Infinity });
    const vocab = groups.reduce((n, g) => n + g.count, 0);

    // take the first `limit` tokens of a list of groups; a group cut in two keeps its mean share
    const take = (list, limit) => {
      const out = [];
      for (const g of list) {
        if (limit <= 0) break;
        const c = Math.min(g.count, limit);
        out.push(c === g.count ? g : { ...g, count: c, mass: (g.mass * c) / g.count, partial: true });
        limit -= c;
      }
      return out;
    };
    if (greedy) {
      return summarise(probs, take(groups, 1), eps, greedy, T, false);
    }
    // top-k
    const k = params.top_k > 0 && params.top_k < vocab ? params.top_k : vocab;
    let kept = take(groups, k);
    // a top-k that ends inside a tail bin leaves top-p a share of an estimated mass
    const estimatedCut = params.top_p < 1 && kept.some((g) => g.partial);
    // top-p: the smallest prefix whose share of what top-k kept reaches top_p
    if (params.top_p < 1) {
      const keptMass = kept.reduce((m, g) => m + g.mass, 0);
      const target = params.top_p * keptMass;
      let cum = 0, n = 0;
      for (const g of kept) {
        if (g.stored >= 0) {
          n += g.count;
          cum += g.mass;
          if (cum / keptMass >= params.top_p) break;
        } else if (cum + g.mass >= target) {
          n += Math.min(g.count, Math.max(1, Math.ceil((target - cum) / (g.mass / g.count))));
          break;
        } else {
          n += g.count;
          cum += g.mass;
        }
      }
      kept = take(kept, n);
    }
    // min-p: tokens at least min_p times as likely as the most likely one
    if (params.min_p > 0 && kept.length) {
      const threshold = params.min_p * kept[0].mass;
      const maxGap = T * Math.log(1 / (threshold * total)); // exp(-gap / T) / total >= threshold
      const out = [];
      for (const g of kept) {
        if (g.stored >= 0) {
          if (g.mass >= threshold) out.push(g);
        } else if (g.hi <= maxGap) {
          out.push(g);
        } else if (g.lo < maxGap && g.mass > 0) {
          const c = Math.round((g.count * (maxGap - g.lo)) / (g.hi - g.lo));
          if (c > 0) out.push({ ...g, count: c, mass: (g.mass * c) / g.count, partial: true });
        }
      }
      kept = out;
    }
    return summarise(probs, kept, eps, greedy, T, estimatedCut);
  }

  function summarise(probs, kept, eps, greedy, T, estimatedCut) {
    const nucleus = new Set(kept.filter((g) => g.stored >= 0).map((g) => g.stored));
    const size = kept.reduce((n, g) => n + g.count, 0);
    const mass = kept.reduce((m, g) => m + g.mass, 0);
    const last = kept[kept.length - 1];
    const beyond = kept.some((g) => g.stored < 0 && g.count > 0);
    const cutoff = last.stored >= 0 ? last.mass : last.mass / last.count;
    // within the stored candidates a probability after the filters is a ratio of their own weights:
    // the tail's estimate cancels and only the gaps' rounding is left
    const epsAfter = beyond ? 2 * eps : 4 * Math.expm1(GAP_ROUNDING / T);
    return {
      probs, // every stored candidate's probability after temperature, before the filters
      after: probs.map((p, i) => (nucleus.has(i) ? (greedy ? 1 : p / mass) : 0)),
      nucleus, size, mass, cutoff, beyond, estimated: beyond || estimatedCut, eps, epsAfter, greedy,
    };
  }

  // ------------------------------------------------------------------ the page
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  };
  const shown = (piece) => piece.replace(/\n/g, "\u21b5").replace(/ /g, "\u2423") || "\u2205";
  const fmt = (p) => (p >= 0.0001 || p === 0 ? p.toFixed(4) : p.toExponential(1));

  const CONTROLS = [
    { name: "temperature", label: "temperature", min: 0, max: 2, step: 0.05 },
    { name: "top_k", label: "top-k (0 off)", min: 0, max: 100, step: 1 },
    { name: "top_p", label: "top-p", min: 0.05, max: 1, step: 0.01 },
    { name: "min_p", label: "min-p", min: 0, max: 0.5, step: 0.01 },
  ];

  class Explorer {
    constructor(root) {
      this.root = root;
      this.data = JSON.parse(root.querySelector("script.explorer-data").textContent);
      this.trace = 0;
      this.step = 0;
      this.rows = 20;
      const types = this.data.types;
      this.sides = [types[0], types[types.length - 1]];
      this.build();
      this.reset();
    }

    build() {
      const d = this.data;
      const option = (value, text) => el("option", { value }, text);
      this.traceSelect = el("select", { class: "trace-select", "aria-label": "generation", onchange: () => { this.trace = +this.traceSelect.value; this.reset(); } },
        ...d.traces.map((t, i) => option(i, t.key)));
      this.typeSelects = [0, 1].map((side) => {
        const s = el("select", { class: `type-select side-${side}`, "aria-label": `file type ${side + 1}`, onchange: () => { this.sides[side] = s.value; this.render(); } },
          ...d.types.map((t) => option(t, t)));
        s.value = this.sides[side];
        return s;
      });
      this.slider = el("input", { type: "range", class: "step-slider", min: 0, value: 0, step: 1, "aria-label": "step", oninput: () => this.go(+this.slider.value) });
      this.stepLabel = el("span", { class: "step-label" });
      this.controls = {};
      const controlRow = el("div", { class: "controls" });
      for (const c of CONTROLS) {
        const input = el("input", { type: "range", class: `control control-${c.name}`, min: c.min, max: c.max, step: c.step, "aria-label": c.label, oninput: () => this.render() });
        const value = el("output", { class: `value-${c.name}` });
        this.controls[c.name] = { input, value };
        controlRow.append(el("label", {}, `${c.label} `, input, " ", value));
      }
      controlRow.append(el("button", { type: "button", class: "reset", onclick: () => this.reset() }, "recorded settings"));
      this.panels = [0, 1].map((side) => el("div", { class: `panel side-${side}` }));
      this.root.tabIndex = 0;
      this.root.addEventListener("keydown", (e) => {
        if (e.target.classList && e.target.classList.contains("control")) return; // its own arrows
        if (e.key === "ArrowRight") { this.go(this.step + 1); e.preventDefault(); }
        if (e.key === "ArrowLeft") { this.go(this.step - 1); e.preventDefault(); }
      });
      this.root.append(
        el("div", { class: "pickers" }, el("label", {}, "generation ", this.traceSelect), el("label", {}, "left ", this.typeSelects[0]), el("label", {}, "right ", this.typeSelects[1])),
        el("div", { class: "stepper" },
          el("button", { type: "button", class: "prev", "aria-label": "previous step", onclick: () => this.go(this.step - 1) }, "\u25c0"),
          this.slider,
          el("button", { type: "button", class: "next", "aria-label": "next step", onclick: () => this.go(this.step + 1) }, "\u25b6"),
          this.stepLabel),
        controlRow,
        el("div", { class: "panels" }, ...this.panels));
    }

    get current() { return this.data.traces[this.trace]; }

    steps() { return Math.max(...this.data.types.map((t) => (this.current.by_type[t] || { steps: [] }).steps.length)); }

    reset() {
      const p = this.current.params;
      for (const c of CONTROLS) this.controls[c.name].input.value = p[c.name];
      this.slider.max = Math.max(0, this.steps() - 1);
      this.go(Math.min(this.step, this.steps() - 1));
    }

    go(step) {
      this.step = Math.max(0, Math.min(step, this.steps() - 1));
      this.slider.value = this.step;
      this.render();
    }

    params() {
      const p = {};
      for (const c of CONTROLS) p[c.name] = +this.controls[c.name].input.value;
      return p;
    }

    render() {
      const params = this.params();
      for (const c of CONTROLS) this.controls[c.name].value.textContent = c.name === "top_k" && !params.top_k ? "off" : String(params[c.name]);
      this.stepLabel.textContent = `step ${this.step + 1} of ${this.steps()}`;
      this.panels.forEach((panel, side) => this.renderPanel(panel, this.sides[side], params));
    }

    renderPanel(panel, type, params) {
      const d = this.data, gen = this.current.by_type[type];
      panel.replaceChildren(el("h4", {}, type));
      panel.dataset.type = type;
      if (!gen || this.step >= gen.steps.length) {
        panel.append(el("p", { class: "note" }, gen ? `this generation ended after ${gen.steps.length} tokens` : "no trace for this file type"));
        return;
      }
      const step = gen.steps[this.step];
      const r = distribution(step, d.edges, params);
      const stats = el("p", { class: "stats" });
      Object.assign(stats.dataset, { size: r.size, mass: r.mass, cutoff: r.cutoff, eps: r.eps, epsAfter: r.epsAfter, beyond: r.beyond, estimated: r.estimated });
      stats.append(
        r.greedy ? "greedy: the most likely token. " : "",
        el("b", {}, `nucleus ${r.size.toLocaleString("en")} tokens`), `, mass ${fmt(r.mass)}, cutoff p \u2265 ${fmt(r.cutoff)}`,
        el("span", { class: "eps" }, ` (\u00b1${(r.eps * 100).toPrecision(1)}% on every probability)`));
      panel.append(stats);
      if (r.beyond) {
        panel.append(el("p", { class: "beyond" }, `The nucleus reaches past the ${step.ids.length} stored candidates: its size, mass and cutoff are estimated from the histogram of the other tokens.`));
      } else if (r.estimated) {
        panel.append(el("p", { class: "beyond" }, `Top-k reaches past the ${step.ids.length} stored candidates: top-p's share is of a mass estimated from the histogram, so its cut may be off by a token.`));
      }
      const first = this.firstDifference(type);
      if (first !== null && this.step > first) panel.append(el("p", { class: "note" }, `The context differs from the left file's since step ${first + 1}.`));
      const bars = el("div", { class: "bars", role: "list" });
      const top = r.probs[0] || 1;
      step.ids.slice(0, this.rows).forEach((id, i) => {
        const chosen = id === step.token, inside = r.nucleus.has(i);
        const row = el("div", { class: `bar ${inside ? "in" : "out"}${chosen ? " chosen" : ""}`, role: "listitem" },
          el("span", { class: "piece", title: `token ${id}` }, (chosen ? "\u2605 " : "") + shown(d.pieces[id] ?? `#${id}`)),
          el("span", { class: "track" }, el("span", { class: "fill", style: `width:${((100 * r.probs[i]) / top).toFixed(2)}%` })),
          el("span", { class: "num" }, fmt(r.probs[i])),
          el("span", { class: "num after" }, inside ? fmt(r.after[i]) : "cut"));
        Object.assign(row.dataset, { id, p: r.probs[i], after: r.after[i], inside });
        bars.append(row);
      });
      if (!step.ids.includes(step.token)) bars.append(el("p", { class: "note" }, `drawn: ${shown(d.pieces[step.token] ?? "")} (outside the stored candidates)`));
      panel.append(el("div", { class: "bar-head" }, el("span", {}, "token"), el("span", {}, "p after temperature (bar: relative to the top)"), el("span", {}, "p"), el("span", {}, "p in nucleus")), bars);
      const text = el("p", { class: "text" });
      gen.tokens.forEach((id, i) => {
        const span = el("span", { class: i === this.step ? "token current" : "token", onclick: () => this.go(i) }, d.pieces[id] ?? "");
        text.append(span);
      });
      panel.append(text);
    }

    // the first step where this file drew another token than the left file
    firstDifference(type) {
      const a = this.current.by_type[this.sides[0]], b = this.current.by_type[type];
      if (!a || !b || a === b) return null;
      const n = Math.min(a.tokens.length, b.tokens.length);
      for (let i = 0; i < n; i++) if (a.tokens[i] !== b.tokens[i]) return i;
      return null;
    }
  }

  const explorers = Array.from(document.querySelectorAll(".explorer")).map((root) => new Explorer(root));
  window.qwen3Explorer = { distribution, tailBins, explorers };
})();
