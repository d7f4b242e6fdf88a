/* llmstudy calculators: the memory model and the KV planner, run in the reader's browser.
 *
 * Every <div class="llmstudy-calc" data-calc="memory|capacity"> on a page becomes a form. Nothing heavy loads with
 * the page: the first click or edit loads Pyodide (served from this site's _static/pyodide/, no CDN) and the
 * study's own Python (_static/calc/gen/llmstudy-calc.zip, built from src/llmstudy/calc at book-build time), then
 * every answer is a call to llmstudy.calc.browser: the functions the `llmstudy` CLI calls.
 * Optional attributes: data-model (the model selected first), data-method, data-gpu, data-num-gpus, data-kv-dtype,
 * data-version, data-preload="idle" (start loading the runtime when the page is idle, not at the first interaction).
 */
(function () {
  "use strict";
  if (window.__llmstudyCalc) return; // a page that includes the script twice (two snippets) boots once
  window.__llmstudyCalc = true;
  var script = document.currentScript;
  var STATIC = new URL("../", script.src).href; // .../_static/
  var PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"];
  var GIB = Math.pow(2, 30);
  var runtime = { loading: null, api: null, info: null, loadMs: null };

  function h(tag, attrs) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "html") e.innerHTML = attrs[k];
      else if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) e.setAttribute(k, attrs[k]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  }
  function gib(b) { return b === null || b === undefined ? "—" : (b / GIB).toFixed(2); }
  function int(n) { return n === null || n === undefined ? "—" : Math.round(n).toLocaleString("en-US"); }
  function pct(x) { return x === null || x === undefined ? "—" : (x >= 0 ? "+" : "") + x.toFixed(2) + "%"; }

  function loadScript(src) {
    return new Promise(function (ok, fail) {
      var s = document.createElement("script");
      s.src = src; s.onload = ok; s.onerror = function () { fail(new Error("could not load " + src)); };
      document.head.appendChild(s);
    });
  }

  function load() {
    if (runtime.loading) return runtime.loading;
    var t0 = performance.now();
    var mark = function (name) { runtime.timings[name] = Math.round(performance.now() - t0); };
    runtime.timings = {};
    runtime.loading = (async function () {
      if (typeof loadPyodide === "undefined") await loadScript(STATIC + "pyodide/pyodide.js");
      mark("script");
      var py = await loadPyodide({ indexURL: STATIC + "pyodide/" });
      mark("pyodide");
      var got = await Promise.all([
        fetch(STATIC + "calc/gen/llmstudy-calc.zip").then(function (r) {
          if (!r.ok) throw new Error("llmstudy-calc.zip: HTTP " + r.status + " (build the book with `make book`)");
          return r.arrayBuffer();
        }),
        fetch(STATIC + "calc/gen/measured.json").then(function (r) { return r.ok ? r.text() : ""; }),
      ]);
      mark("fetch");
      py.unpackArchive(got[0], "zip", { extractDir: "/calc" });
      py.runPython("import sys; sys.path.insert(0, '/calc/src')");
      runtime.api = py.pyimport("llmstudy.calc.browser");
      mark("import");
      runtime.info = JSON.parse(runtime.api.init("/calc/root", got[1]));
      mark("init");
      runtime.loadMs = performance.now() - t0;
      document.documentElement.dataset.llmstudyCalcTimings = JSON.stringify(runtime.timings);
      return runtime.api;
    })();
    return runtime.loading;
  }

  // --- form helpers ---------------------------------------------------------------------------------------
  function field(label, input, help) {
    return h("label", { class: "llmstudy-calc-field" }, h("span", { class: "llmstudy-calc-label", text: label }), input,
      help ? h("span", { class: "llmstudy-calc-help", text: help }) : null);
  }
  function select(name, options, value) {
    var s = h("select", { name: name });
    options.forEach(function (o) {
      var opt = h("option", { value: o[0], text: o[1] });
      if (String(o[0]) === String(value)) opt.selected = true;
      s.appendChild(opt);
    });
    return s;
  }
  function number(name, value, attrs) {
    var a = Object.assign({ type: "number", name: name, value: value, min: 1, step: 1 }, attrs || {});
    return h("input", a);
  }
  function checkbox(name, checked) { return h("input", { type: "checkbox", name: name, checked: checked ? "checked" : null }); }

  function values(form) {
    var out = {};
    Array.prototype.forEach.call(form.elements, function (e) {
      if (!e.name) return;
      if (e.type === "checkbox") out[e.name] = e.checked;
      else if (e.type === "number") out[e.name] = e.value === "" ? null : Number(e.value);
      else if (e.type !== "file") out[e.name] = e.value;
    });
    return out;
  }

  function modelChooser(root, initial) {
    var wrap = h("div", { class: "llmstudy-calc-model" });
    var sel = select("model", [[initial, initial]], initial);
    var custom = h("div", { class: "llmstudy-calc-custom", hidden: "hidden" },
      h("textarea", { name: "config_text", rows: 6, placeholder: "paste a Hugging Face config.json here", spellcheck: "false" }),
      h("input", { type: "file", name: "config_file", accept: ".json,application/json" }),
      h("span", { class: "llmstudy-calc-help", text: "Or choose a config.json file. It stays in this page: nothing is uploaded anywhere." }));
    wrap.appendChild(field("Model", sel, "a config shipped with the study, or your own"));
    wrap.appendChild(custom);
    sel.addEventListener("change", function () { custom.hidden = sel.value !== "__custom__"; });
    custom.querySelector("input[type=file]").addEventListener("change", function (ev) {
      var f = ev.target.files[0];
      if (!f) return;
      f.text().then(function (t) {
        var ta = custom.querySelector("textarea");
        ta.value = t; ta.dataset.filename = f.name;
        ta.dispatchEvent(new Event("input", { bubbles: true }));
      });
    });
    root._fillModels = function (info) {
      var keep = sel.value;
      sel.innerHTML = "";
      info.models.forEach(function (m) {
        var o = h("option", { value: m.name, text: m.name + (m.families ? " (" + m.families + ")" : "") });
        if (!m.listed) o.disabled = true;
        sel.appendChild(o);
      });
      sel.appendChild(h("option", { value: "__custom__", text: "your config.json (paste or choose a file)…" }));
      sel.value = keep;
      if (sel.value !== keep) sel.selectedIndex = 0; // a page's model that is not shipped: the first one
    };
    return wrap;
  }

  function resolveModel(root, v) {
    if (v.model !== "__custom__") return { model: v.model };
    var ta = root.querySelector("textarea[name=config_text]");
    if (!ta.value.trim()) return { error: "llmstudy: error: paste a config.json or choose a file" };
    var r = JSON.parse(runtime.api.add_config(ta.value, ta.dataset.filename || "config.json"));
    return r;
  }

  function bar(parts, total, caption) {
    var sum = parts.reduce(function (a, p) { return a + Math.max(0, p.bytes || 0); }, 0);
    var scale = Math.max(sum, total || 0) || 1;
    var b = h("div", { class: "llmstudy-calc-bar", role: "img", "aria-label": caption });
    var legend = h("ul", { class: "llmstudy-calc-legend" });
    parts.forEach(function (p, i) {
      var w = 100 * Math.max(0, p.bytes || 0) / scale;
      var color = PALETTE[i % PALETTE.length];
      b.appendChild(h("span", { class: "llmstudy-calc-seg", style: "width:" + w.toFixed(3) + "%;background:" + color, title: p.label + ": " + gib(p.bytes) + " GiB" }));
      legend.appendChild(h("li", {}, h("span", { class: "llmstudy-calc-swatch", style: "background:" + color }), p.label + " " + gib(p.bytes) + " GiB"));
    });
    var wrap = h("figure", { class: "llmstudy-calc-figure" }, b);
    if (total) {
      var mark = h("span", { class: "llmstudy-calc-total", style: "left:" + (100 * total / scale).toFixed(3) + "%", title: "GPU total" });
      b.appendChild(mark);
    }
    wrap.appendChild(legend);
    wrap.appendChild(h("figcaption", { text: caption }));
    return wrap;
  }

  function table(head, rows, cls) {
    var t = h("table", { class: "llmstudy-calc-table " + (cls || "") });
    var tr = h("tr");
    head.forEach(function (c) { tr.appendChild(h("th", { text: c })); });
    t.appendChild(h("thead", {}, tr));
    var tb = h("tbody");
    rows.forEach(function (r) {
      var row = h("tr");
      r.forEach(function (c) {
        if (c && c.nodeType) row.appendChild(h("td", {}, c));
        else row.appendChild(h("td", { text: c }));
      });
      tb.appendChild(row);
    });
    t.appendChild(tb);
    return t;
  }
  function out(key, value, text) { return h("span", { "data-out": key, "data-value": value === null || value === undefined ? "" : String(value), text: text }); }

  // --- the memory calculator -----------------------------------------------------------------------------
  var COMPONENT_LABEL = { weights: "weights", gradients: "gradients", optimizer: "optimizer states", activations: "activations", temporary: "temporary buffers" };

  function memoryForm(root) {
    var d = root.dataset;
    var form = h("form", { class: "llmstudy-calc-form", autocomplete: "off" },
      modelChooser(root, d.model || "llama-2-7b"),
      h("div", { class: "llmstudy-calc-row" },
        field("Method", select("method", [["lora", "LoRA"], ["qlora", "QLoRA (4-bit NF4)"], ["full", "full fine-tuning"]], d.method || "lora")),
        field("Optimizer", select("optimizer", [["paged_adamw_8bit", "paged_adamw_8bit"], ["adamw_8bit", "adamw_8bit"], ["adamw_torch", "adamw_torch"], ["sgd", "sgd"],
          ["adamw_fp32_states", "rule: two fp32 moments"], ["adamw_mixed", "rule: mixed precision (ZeRO K=12)"]], d.optimizer || "paged_adamw_8bit")),
        field("Weights dtype", select("weight_dtype", [["bf16", "bf16"], ["fp16", "fp16"], ["fp32", "fp32"]], "bf16"))),
      h("div", { class: "llmstudy-calc-row" },
        field("Sequence length", number("seq_len", d.seqLen || 2048), "tokens per sample"),
        field("Micro-batch", number("micro_batch", 1), "samples per step"),
        field("Gradient checkpointing", checkbox("grad_ckpt", true))),
      h("div", { class: "llmstudy-calc-row" },
        field("LoRA rank r", number("lora_r", 16)),
        field("LoRA targets", h("input", { type: "text", name: "lora_targets", placeholder: "all linear projections", value: "" }), "module names, comma-separated; empty: every linear projection and fused expert tensor")));
    return form;
  }

  function renderMemory(res, el) {
    el.innerHTML = "";
    if (res.error) { el.appendChild(h("p", { class: "llmstudy-calc-error", role: "alert", "data-out": "error", text: res.error })); return; }
    var c = res.components;
    var head = h("p", { class: "llmstudy-calc-answer" },
      "Allocator peak: ", h("strong", {}, out("peak_gib", res.peak_bytes === null ? "" : (res.peak_bytes / GIB).toFixed(2), res.peak_bytes === null ? "not modelled" : gib(res.peak_bytes) + " GiB")),
      out("peak_bytes", res.peak_bytes, res.peak_bytes === null ? "" : " (" + int(res.peak_bytes) + " B, at the " + res.peak_phase + " phase)"),
      res.paged_bytes ? h("span", {}, "; plus ", out("paged_gib", (res.paged_bytes / GIB).toFixed(2), gib(res.paged_bytes) + " GiB"), " of paged optimizer states in CUDA managed memory") : null,
      ". " + res.title + ", " + int(res.params) + " parameters.");
    el.appendChild(head);
    var fits = Object.keys(res.gpus).map(function (k) {
      var g = res.gpus[k];
      var longest = g.longest_seq_len === null ? "—" : int(g.longest_seq_len) + (g.capped ? " (the model's max_position_embeddings)" : "");
      return [g.name, gib(g.total_bytes), g.fits === null ? "—" : out("fits_" + k, g.fits, g.fits ? "yes" : "no"),
        out("longest_" + k, g.longest_seq_len, longest)];
    });
    el.appendChild(table(["GPU", "torch total (GiB)", "peak below it", "longest sequence that fits (tokens per sample)"], fits, "llmstudy-calc-fits"));
    el.appendChild(h("p", { class: "llmstudy-calc-note", text: "The peak is the PyTorch allocator's. The CUDA context and memory the allocator reserves but does not use come on top; they are not modelled." }));
    var parts = Object.keys(COMPONENT_LABEL).map(function (k) { return { label: COMPONENT_LABEL[k], bytes: c[k] }; });
    el.appendChild(bar(parts, null, "Memory at the allocator's peak by component (GiB)" + (res.not_modelled ? "; activations not modelled" : "")));
    el.appendChild(table(["component", "GiB", "bytes"], Object.keys(COMPONENT_LABEL).map(function (k) {
      return [COMPONENT_LABEL[k], out("gib_" + k, c[k] === null ? "" : (c[k] / GIB).toFixed(2), c[k] === null ? "not modelled" : gib(c[k])), int(c[k])];
    }).concat([["paged (outside the allocator)", out("gib_paged", (res.paged_bytes / GIB).toFixed(2), gib(res.paged_bytes)), int(res.paged_bytes)]]), "llmstudy-calc-components"));
    if (res.lora) {
      el.appendChild(h("p", {}, "LoRA: ", out("lora_trainable", res.lora.trainable, int(res.lora.trainable)), " trainable parameters of " + int(res.lora.total) +
        " (" + (100 * res.lora.trainable / res.lora.total).toFixed(4) + "%), on " + (res.lora.modules.concat(res.lora.parameters).join(", ") || "nothing") + "."));
      res.lora.not_adapted.forEach(function (n) { el.appendChild(h("p", { class: "llmstudy-calc-note", text: "Not adapted: " + n })); });
    }
    if (res.not_modelled) el.appendChild(h("p", { class: "llmstudy-calc-note", "data-out": "not_modelled", text: "Not modelled: " + res.not_modelled + ". The peak is left out rather than guessed." }));
    res.approximations.forEach(function (n) { el.appendChild(h("p", { class: "llmstudy-calc-note", text: "Approximate: " + n + "." })); });
    if (res.measured.length) {
      el.appendChild(h("p", { class: "llmstudy-calc-measured-head", text: "Measured runs of this exact setup:" }));
      el.appendChild(table(["run record", "GPU", "measured peak (GiB)", "predicted (GiB)", "error"], res.measured.map(function (m) {
        return [m.run_id, m.gpu, m.peak_allocated_GiB === null ? m.outcome : m.peak_allocated_GiB.toFixed(2), gib(res.peak_bytes), out("error_pct", m.error_pct, pct(m.error_pct))];
      }), "llmstudy-calc-measured"));
    } else {
      el.appendChild(h("p", { class: "llmstudy-calc-note", "data-out": "no_measured", text: "No run record of this exact setup: the number above is the model's prediction alone." }));
    }
    var det = h("details", {}, h("summary", { text: "Every term of the prediction" }));
    det.appendChild(table(["component", "GiB", "phase", "where", "what"], res.rows.map(function (r) {
      return [r.component, r.bytes === null ? "not modelled" : gib(r.bytes), r.phase, r.location, r.detail];
    }), "llmstudy-calc-terms"));
    el.appendChild(det);
  }

  function memoryParams(root, v) {
    var m = resolveModel(root, v);
    if (m.error) return { error: m.error };
    var targets = (v.lora_targets || "").split(/[\s,]+/).filter(Boolean);
    return { model: m.model, method: v.method, optimizer: v.optimizer, weight_dtype: v.weight_dtype, seq_len: v.seq_len,
      micro_batch: v.micro_batch, grad_ckpt: v.grad_ckpt, lora_r: v.lora_r, lora_targets: targets };
  }

  // --- the capacity calculator ---------------------------------------------------------------------------
  function capacityForm(root) {
    var d = root.dataset;
    return h("form", { class: "llmstudy-calc-form", autocomplete: "off" },
      modelChooser(root, d.model || "llama-4-scout-17b-16e-instruct"),
      h("div", { class: "llmstudy-calc-row" },
        field("GPU", select("gpu", [["h100-80gb", "H100 80GB"], ["h200", "H200"]], d.gpu || "h200")),
        field("GPUs", number("num_gpus", d.numGpus || 8)),
        field("TP", number("tp", "", { placeholder: "GPUs / PP" }), "tensor parallel"),
        field("PP", number("pp", 1), "pipeline parallel")),
      h("div", { class: "llmstudy-calc-row" },
        field("Weights", select("weights", [["bf16", "bf16 (checkpoint dtype)"], ["fp8-online", "fp8 online (--quantization fp8)"], ["fp8-checkpoint", "fp8 checkpoint (compressed-tensors)"], ["mxfp4-checkpoint", "mxfp4 checkpoint (gpt-oss)"]], d.weights || "bf16")),
        field("KV cache dtype", select("kv_dtype", [["auto", "auto (model dtype)"], ["fp8", "fp8"]], d.kvDtype || "auto")),
        field("vLLM version", select("vllm_version", [["0.25.0", "0.25.0"], ["0.8.3", "0.8.3"]], d.version || "0.25.0"))),
      h("div", { class: "llmstudy-calc-row" },
        field("max_model_len", number("max_model_len", d.maxModelLen || "", { placeholder: "the model's maximum" })),
        field("gpu_memory_utilization", number("gpu_memory_utilization", "", { min: 0.01, max: 1, step: 0.01, placeholder: "the version's default" })),
        field("max_num_seqs", number("max_num_seqs", "", { placeholder: "vLLM's default" }))),
      h("div", { class: "llmstudy-calc-row" },
        field("enforce eager (no CUDA graphs)", checkbox("enforce_eager", false)),
        field("language model only (text_only)", checkbox("text_only", d.textOnly === "true"))));
  }

  function capacityParams(root, v) {
    var m = resolveModel(root, v);
    if (m.error) return { error: m.error };
    var p = { model: m.model };
    ["gpu", "num_gpus", "tp", "pp", "weights", "kv_dtype", "vllm_version", "max_model_len", "gpu_memory_utilization", "max_num_seqs", "enforce_eager", "text_only"].forEach(function (k) {
      if (v[k] !== null && v[k] !== "" && v[k] !== undefined) p[k] = v[k];
    });
    return p;
  }

  function renderCapacity(res, el, root) {
    el.innerHTML = "";
    if (res.error) { el.appendChild(h("p", { class: "llmstudy-calc-error", role: "alert", "data-out": "error", text: res.error })); return; }
    el.appendChild(h("p", { class: "llmstudy-calc-answer" },
      "Longest context that starts: ", h("strong", {}, out("max_model_len_that_starts", res.max_model_len_that_starts, int(res.max_model_len_that_starts) + " tokens")),
      ". GPU KV cache size: ", out("kv_cache_tokens", res.kv_cache_tokens, int(res.kv_cache_tokens) + " tokens"),
      ", maximum concurrency ", out("max_concurrency", res.max_concurrency, res.max_concurrency.toFixed(2) + "x"),
      " at max_model_len " + int(res.max_model_len) + ". Outcome: ", out("outcome", res.outcome, res.outcome),
      res.message ? " — " + res.message : ""));
    var parts = [{ label: "weights", bytes: res.weights_bytes }, { label: "activation peak", bytes: res.activation_peak_bytes },
      { label: "non-torch", bytes: res.non_torch_bytes }, { label: "CUDA graphs", bytes: res.cudagraph_bytes },
      { label: "KV cache", bytes: Math.max(0, res.available_kv_bytes) }];
    el.appendChild(bar(parts, res.total_bytes, "One GPU's budget (gpu_memory_utilization " + res.gpu_memory_utilization + " of " + gib(res.total_bytes) + " GiB; the mark is the GPU's total), GiB"));
    if (res.measured.length) {
      el.appendChild(h("p", { class: "llmstudy-calc-measured-head", text: "Measured runs of this exact deployment:" }));
      el.appendChild(table(["run record", "outcome", "vLLM logged (tokens)", "predicted (tokens)", "error"], res.measured.map(function (m) {
        return [m.run_id + " (" + m.config + ")", m.outcome, int(m.kv_cache_tokens), int(m.predicted_kv_cache_tokens), out("error_pct", m.error_pct, pct(m.error_pct))];
      }), "llmstudy-calc-measured"));
    } else {
      el.appendChild(h("p", { class: "llmstudy-calc-note", "data-out": "no_measured", text: "No run record of this exact deployment: the numbers above are the planner's prediction alone." }));
    }
    el.appendChild(h("pre", { class: "llmstudy-calc-cli", "data-out": "lines", text: res.lines.join("\n") }));
    res.notes.forEach(function (n) { el.appendChild(h("p", { class: "llmstudy-calc-note", text: "Note: " + n })); });
  }

  function measuredPicker(root, form, recompute) {
    var cases = JSON.parse(runtime.api.measured_cases()).capacity;
    if (!cases.length) return null;
    var sel = h("select", { name: "measured_case", "aria-label": "a measured deployment" },
      h("option", { value: "", text: "load a measured deployment (" + cases.length + ")…" }));
    cases.forEach(function (c, i) { sel.appendChild(h("option", { value: i, text: c.run_id + ": " + c.label + " (" + c.outcome + ")" })); });
    sel.addEventListener("change", function () {
      if (sel.value === "") return;
      var k = cases[Number(sel.value)].key;
      var set = function (n, v) { var e = form.elements[n]; if (!e) return; if (e.type === "checkbox") e.checked = !!v; else e.value = v === null ? "" : v; };
      ["model", "gpu", "num_gpus", "tp", "pp", "weights", "kv_dtype", "vllm_version", "max_model_len", "gpu_memory_utilization", "max_num_seqs", "enforce_eager", "text_only"].forEach(function (n) { set(n, k[n]); });
      form.elements.model.dispatchEvent(new Event("change"));
      sel.value = "";
      recompute();
    });
    return h("div", { class: "llmstudy-calc-picker" }, sel);
  }

  // --- wiring ---------------------------------------------------------------------------------------------
  function setup(root) {
    if (root.dataset.ready) return;
    var kind = root.dataset.calc;
    var form = kind === "memory" ? memoryForm(root) : capacityForm(root);
    var status = h("p", { class: "llmstudy-calc-status", "aria-live": "polite" });
    var start = h("button", { type: "button", class: "llmstudy-calc-start", text: "Start the calculator" });
    var output = h("div", { class: "llmstudy-calc-output", "aria-live": "polite" });
    root.innerHTML = "";
    root.appendChild(form);
    root.appendChild(h("div", { class: "llmstudy-calc-bar-row" }, start, status));
    root.appendChild(output);
    status.textContent = "Runs in this page (Pyodide, downloaded once from this site). Click the button or change any input.";
    var seq = 0;

    function compute() {
      if (!runtime.api) return;
      var v = values(form);
      var params = kind === "memory" ? memoryParams(root, v) : capacityParams(root, v);
      var t0 = performance.now();
      var res = params.error ? { error: params.error } :
        JSON.parse(kind === "memory" ? runtime.api.memory(JSON.stringify(params)) : runtime.api.capacity(JSON.stringify(params)));
      var ms = performance.now() - t0;
      (kind === "memory" ? renderMemory : renderCapacity)(res, output, root);
      seq += 1;
      root.dataset.answers = String(seq);
      root.dataset.lastMs = ms.toFixed(1);
      if (!root.dataset.firstAnswerMs) root.dataset.firstAnswerMs = (performance.now() - window.__llmstudyCalcT0).toFixed(1);
      status.textContent = "Answered in " + ms.toFixed(0) + " ms by llmstudy.calc (the CLI's code) in Pyodide" +
        (runtime.loadMs ? "; the runtime loaded in " + (runtime.loadMs / 1000).toFixed(1) + " s" : "") + ".";
    }

    var started = false;
    function ensure() {
      if (started) { compute(); return; }
      start.disabled = true;
      if (!runtime.api) status.textContent = "Loading Python (Pyodide) from this site…";
      load().then(function () {
        if (!started) {
          started = true;
          root._fillModels(runtime.info);
          if (kind === "capacity") {
            var picker = measuredPicker(root, form, compute);
            if (picker) form.appendChild(picker);
          }
          start.hidden = true;
        }
        compute();
      }).catch(function (e) {
        start.disabled = false;
        status.textContent = "";
        output.innerHTML = "";
        output.appendChild(h("p", { class: "llmstudy-calc-error", role: "alert", text: "The calculator could not start: " + e.message }));
      });
    }
    var warm = function () { load().catch(function () { /* shown by ensure() */ }); };
    root.addEventListener("pointerenter", warm, { once: true }); // the runtime starts loading when the reader reaches for it
    root.addEventListener("focusin", warm, { once: true });
    start.addEventListener("click", ensure);
    form.addEventListener("input", ensure);
    form.addEventListener("change", ensure);
    form.addEventListener("submit", function (ev) { ev.preventDefault(); ensure(); });
    root.dataset.ready = "1";
  }

  window.__llmstudyCalcT0 = window.__llmstudyCalcT0 || performance.now();
  function boot() {
    var roots = document.querySelectorAll(".llmstudy-calc[data-calc]");
    roots.forEach(setup);
    // data-preload="idle" (the plan page): start the runtime once the page has loaded and the browser is idle, so a
    // reader's first answer does not wait for it; other pages load it on the first interaction only.
    if (Array.prototype.some.call(roots, function (r) { return r.dataset.preload === "idle"; })) {
      var idle = window.requestIdleCallback || function (f) { return setTimeout(f, 200); };
      var go = function () { idle(function () { load().catch(function () { /* shown on first use */ }); }); };
      if (document.readyState === "complete") go(); else window.addEventListener("load", go, { once: true });
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot); else boot();
})();
