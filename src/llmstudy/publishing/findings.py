"""The landing page's headline findings and its summary figure, computed from the run records when the book is built.

Each :class:`Finding` is a sentence template whose every number, version and model name is a slot filled from a
chapter's own ``statements`` (the same text the chapter glues) or from the claims registry: the template itself
holds no digit (``tests/publishing/test_findings.py`` checks that), so a rerun that changes a record changes the
landing page. Each finding links to its chapter and names the run records it rests on; a published number is
labelled as such. The ``{findings}`` and ``{summary-figure}`` directives of :mod:`llmstudy.publishing.sphinxext`
render them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

SLOT = re.compile(r"\{(\w+)\}")
TIE_PCT = 2  # two engines within this many percent of each other are called a tie (the engine chapter's rule)


@dataclass(frozen=True)
class Finding:
    id: str
    chapter: str  # notebooks/<chapter>
    heading: str  # the reader's question, short
    template: str  # the sentence; every {slot} is a computed value
    values: dict[str, str]
    runs: tuple[str, ...] = ()  # "experiment/run_id"
    published: str = ""  # the publication a published number in the sentence comes from
    claim: str | None = None  # the claim (llmstudy.publishing.claims) the finding restates, if any
    status: str = ""  # that claim's verdict

    def parts(self) -> list[tuple[str, bool]]:
        """The sentence as ``(text, is_value)`` pieces, in order."""
        out, pos = [], 0
        for m in SLOT.finditer(self.template):
            out.append((self.template[pos:m.start()], False))
            out.append((self.values[m.group(1)], True))
            pos = m.end()
        out.append((self.template[pos:], False))
        return [p for p in out if p[0]]

    def text(self) -> str:
        return "".join(t for t, _ in self.parts())


@dataclass
class Summary:
    findings: list[Finding]
    memory: list[dict] = field(default_factory=list)  # label, GiB, run
    serving: list[dict] = field(default_factory=list)  # label, tok/s, run or published source
    memory_runs: tuple[str, ...] = ()
    serving_runs: tuple[str, ...] = ()


def _num(text: str) -> float:
    return float(re.sub(r"[^0-9.\-]", "", text.split(" ")[0]))


def _delta(text: str) -> str:
    """``"+97.7% (noise ±3.3%)"`` -> ``"+97.7%, noise ±3.3%"`` (the chapter's delta, inside a finding's parentheses)."""
    out = re.sub(r"\s*\(noise ([^)]*)\)$", r", noise \1", text)
    return "−" + out[1:] if out.startswith("-") else out


def serving_vllm() -> str:
    """The vLLM version of the serving environment (``envs/vllm-serving.txt``) the serving records used."""
    from llmstudy.core.paths import repo_root

    m = re.search(r"^vllm==(\S+)", (repo_root() / "envs" / "vllm-serving.txt").read_text(), re.M)
    return m.group(1) if m else "—"


def _runs(experiment: str, ids) -> tuple[str, ...]:
    return tuple(f"{experiment}/{r}" for r in sorted({str(i) for i in ids if str(i) not in ("", "nan", "None")}))


# --- one function per chapter: its statements, the values the finding quotes, the records ------------------------
def _memory() -> tuple[Finding, list[dict], tuple[str, ...]]:
    from llmstudy.chapters import memory_accounting as ch
    from llmstudy.core import records as R

    model = ch.PARAMS["model"].default
    runs = R.results(ch.EXPERIMENT, model=model)
    _, ok = ch.measured(runs)
    s = ch.measured_statements(runs, model)
    ratio = _num(s["qlora_peak"]) / _num(s["lora_peak"])
    f = Finding(
        "memory", "memory_accounting", "How much GPU memory does fine-tuning need?",
        "Fine-tuning {model} with gradient checkpointing peaks at {lora_peak} GiB with LoRA and {qlora_peak} GiB with QLoRA "
        "({ratio} LoRA's); the book's memory model predicts each of the {n} measured peaks to within {max_err}%.",
        {"model": model, "lora_peak": s["lora_peak"], "qlora_peak": s["qlora_peak"], "ratio": f"{ratio:.2f}×",
         "n": s["n_measured"], "max_err": s["max_abs_err"]},
        runs=_runs(ch.EXPERIMENT, ok.run_id), claim="memory_model_within_10pct")
    # the summary figure's bars: each setup once, at 100 tokens, its first record
    bars, used = [], []
    first = ok[ok.seq_len == ok.seq_len.min()].sort_values("run_id").drop_duplicates("setup")
    for r in first.sort_values("peak_allocated_GiB").itertuples():
        label = {"lora": "LoRA", "qlora": "QLoRA", "full": "full"}[r.method] if r.method != "full" else \
            f"full, {'8-bit paged Adam' if 'paged' in r.setup else 'Adam'}, {'fp32' if '/fp32/' in r.setup else 'bf16'} weights"
        bars.append({"label": label, "value": float(r.peak_allocated_GiB), "run": f"{ch.EXPERIMENT}/{r.run_id}", "gpu": r.gpu})
        used.append(r.run_id)
    return f, bars, _runs(ch.EXPERIMENT, used)


def _lora_vs_qlora() -> Finding:
    from llmstudy.chapters import lora_vs_qlora as L
    from llmstudy.chapters.lora_vs_qlora.config import ARTICLE, RECIPES
    from llmstudy.chapters.lora_vs_qlora.params import PARAMS

    speed_model = PARAMS["speed_model"].default
    t = L.load_tables()
    v = L.views(t, PARAMS["model"].default, speed_model)
    from llmstudy.chapters.lora_vs_qlora.statements import fast_statements

    s = fast_statements(v["fast"], speed_model)
    fast = v["fast"]
    row = fast[(fast.model == speed_model) & (fast.method == "lora")]
    ids = [r for runs in row.runs for r in str(runs).split(" / ")] if len(row) and "runs" in row else []
    slower = 100 * (ARTICLE["qlora"]["real_s"] / ARTICLE["lora"]["real_s"] - 1)
    return Finding(
        "lora_vs_qlora", "lora_vs_qlora", "LoRA or QLoRA, and how fast?",
        "The article's recipe feeds one padded sample at a time; packing the same {samples} samples per step without padding "
        "trains an epoch of {model} LoRA {speedup} faster at the same loss. QLoRA saves memory, not time: the article "
        "measured it {slower}% slower than LoRA.",
        {"samples": str(RECIPES["fast"]["micro_batch"]), "model": speed_model, "speedup": s["speedup_7b_lora"], "slower": f"{slower:.0f}"},
        runs=_runs("lora_vs_qlora", ids), published="the article (Fixstars 2026, §3.5)", claim="fast_recipe_is_faster")


def _batch() -> Finding:
    from llmstudy.chapters import batch_size_sweep as BS
    from llmstudy.publishing import claims as C

    s = BS.statements(BS.load())
    v = C.get("cap_16_beats_cap_4").evaluate()
    return Finding(
        "batch_size", "batch_size_sweep", "Which max_num_seqs (the article's max_batch_size)?",
        "max_num_seqs caps the batch: at {c} concurrent requests a cap of {c} serves {t16} output tokens/s against {t4} with a cap "
        "of {lo}, and past its cap a server's throughput stops growing (a cap of {hi} levels off at {p256}).",
        {"c": "16", "t16": s["bs_tput_16_16"], "t4": s["bs_tput_4_16"], "lo": "4", "hi": "256", "p256": s["bs_plateau_256"]},
        runs=v.runs, claim="cap_16_beats_cap_4", status=v.status)


def _lengths() -> Finding:
    from llmstudy.chapters import length_sweep as LS
    from llmstudy.publishing import claims as C

    s = LS.statements(LS.load())
    v = C.get("max_model_len_does_not_change_speed").evaluate()
    return Finding(
        "lengths", "length_sweep", "Does max_model_len cost speed?",
        "No: at {c} concurrent requests the output throughput varies by {spread} across max_model_len {lens}; what costs time is "
        "the prompt, whose first token takes {ttft_lo}–{ttft_hi} ms.",
        {"c": s["ls_cmax"], "spread": s["ls_tput_spread"], "lens": s["ls_lens"], "ttft_lo": s["ls_ttft_lo"], "ttft_hi": s["ls_ttft_hi"]},
        runs=v.runs, claim="max_model_len_does_not_change_speed", status=v.status)


def _context() -> Finding:
    from llmstudy.chapters import context_limits as cap
    from llmstudy.publishing import claims as C

    ch = cap.chapter()
    s = cap.statements(ch)
    v = C.get("planner_within_1pct_of_vllm").evaluate()
    return Finding(
        "context", "context_limits", "How long a context can Llama 4 take?",
        "The book's KV-capacity planner predicts the KV cache vLLM logs to within {err}% over {n} measured configurations, "
        "and {repro} of the published context settings measured here reproduce on vLLM {version} (the length starts, or the OOM stays an OOM). "
        "On vLLM {v083}, the article's version, it is within {err083}% of {n083} one-GPU servers whose every memory term was measured.",
        {"err": s["meas_max_err"], "n": s["meas_n"], "repro": s["pvm_reproduced"], "version": serving_vllm(),
         "v083": "0.8.3", "err083": s["v083_err"], "n083": s["v083_n"]},
        runs=v.runs + _runs("context_limits", ch.v083.get("run_id", [])), claim="planner_within_1pct_of_vllm", status=v.status)


def _features() -> Finding:
    from llmstudy.chapters.vllm_features import page as VP

    p = VP.load_page()
    s = p.statements
    ids = sorted(p.points.run_id.unique()) if len(p.points) else []
    return Finding(
        "features", "vllm_features", "Which vLLM features matter?",
        "At one request in flight CUDA graphs matter: turning them off cuts throughput to {eager} tokens/s ({eager_d}). "
        "Prefix caching changes nothing on distinct prompts ({pc_plain}) but nearly doubles throughput on prompts sharing a prefix ({pc_shared}).",
        {"eager": s["vf_eager_c1_throughput"], "eager_d": _delta(s["vf_eager_c1_throughput_delta"]),
         "pc_plain": _delta(s["vf_prefix_caching_c16_throughput_delta"]), "pc_shared": _delta(s["vf_prefix_caching_shared_prefix_c16_throughput_delta"])},
        runs=_runs("vllm_features", ids))


def _engines() -> tuple[Finding, list[dict], tuple[str, ...], dict[str, str]]:
    from llmstudy.chapters.engine_comparison import page as EP

    p = EP.load_page()
    s = p.statements
    margin = _num(s["ec_c16_margin"])
    verdict = f"a tie (within {TIE_PCT}%)" if margin <= 1 + TIE_PCT / 100 else f"a win for the faster by {s['ec_c16_margin']}"
    run = f"engine_comparison/{s['ec_run']}"
    f = Finding(
        "engines", "engine_comparison", "vLLM or SGLang?",
        "At {c} concurrent requests SGLang {sgl_v} serves {sgl} output tokens/s and vLLM {vllm_v} serves {vllm}, on the same GPU: {verdict}. "
        "Both serve {ratio} the article's vLLM figure ({pub} tokens/s, published, on an {art_gpu}).",
        {"c": "16", "sgl_v": s["ec_sgl_version"], "sgl": s["ec_c16_sgl"], "vllm_v": s["ec_vllm_version"], "vllm": s["ec_c16_vllm"],
         "verdict": verdict, "ratio": s["ec_ours_vs_article_vllm"], "pub": s["ec_pub_vllm"], "art_gpu": s["ec_article_gpu"].removeprefix("NVIDIA ")},
        runs=(run,), published="the article (Fixstars 2026, §6.6)")
    bars = [
        {"label": f"SGLang {s['ec_sgl_version']} (measured)", "value": _num(s["ec_c16_sgl"]), "run": run, "published": False},
        {"label": f"vLLM {s['ec_vllm_version']} (measured)", "value": _num(s["ec_c16_vllm"]), "run": run, "published": False},
        {"label": "Triton + TensorRT-LLM (published)", "value": _num(s["ec_pub_triton"]), "run": "", "published": True},
        {"label": "vLLM, GPTQ (published)", "value": _num(s["ec_pub_vllm"]), "run": "", "published": True},
    ]
    return f, bars, (run,), s


def _triton() -> Finding:
    from llmstudy.chapters.triton_serving import analysis as TA
    from llmstudy.chapters.triton_serving import statements as TS

    s = TS.statements(model="llama-2-7b")
    ids = sorted(set(TA.bench_points(model="llama-2-7b").run_id) | {s["lora_run"]})
    return Finding(
        "triton", "triton_serving", "Triton or vLLM's own server?",
        "The article's Triton ensemble, run with vLLM's engine in the engine step, serves {tt} output tokens/s at {c} "
        "requests in flight against {vt} for vLLM's OpenAI server ({r}×, same engine, both measured by genai-perf); "
        "served LoRA adapters answer like peft for {ae} of {at} greedy answers in half precision, and {dt} of the {dn} places where "
        "they part are near-ties of peft's own logits (the base model parts as often).",
        {"tt": s["triton_tput_cmax"], "c": s["cmax"], "vt": s["vllm_tput_cmax"], "r": s["ratio_cmax"],
         "ae": s["adapter_equal"], "at": s["adapter_total"], "dt": s["div_ties"], "dn": s["div_n"]},
        runs=_runs("triton_serving", ids))


def _trtllm(s: dict[str, str]) -> Finding:
    return Finding(
        "trtllm", "trtllm_serve", "And TensorRT-LLM?",
        "Not measured here: TensorRT-LLM installs only from NVIDIA's package index, which the machines this study used could not reach. Its two chapters show the article's "
        "workflow and its published numbers ({trt} tokens/s for gpt-oss at one request, TTFT excluded) and check a configuration "
        "against the article's pitfalls before anything runs.",
        {"trt": s["ec_pub_trtllm_c1"]}, published="the article (Fixstars 2026, §8.1)")


@functools.lru_cache(maxsize=2)
def summary(root_key: str = "") -> Summary:
    """Every finding and the summary figure's data, from ``data/runs`` (cached per build)."""
    from llmstudy.publishing import claims as C

    mem, mem_bars, mem_runs = _memory()
    eng, eng_bars, eng_runs, ec = _engines()
    found = [mem, _lora_vs_qlora(), _batch(), _lengths(), _context(), _features(), eng, _triton(), _trtllm(ec)]
    out = []
    for f in found:
        if f.claim and not f.status:
            f = Finding(**{**f.__dict__, "status": C.get(f.claim).evaluate().status})
        out.append(f)
    return Summary(out, mem_bars, eng_bars, mem_runs, eng_runs)


def findings() -> list[Finding]:
    return summary().findings


# --- the summary figure -------------------------------------------------------------------------------------------
def summary_svg(s: Summary | None = None) -> str:
    """Two panels: fine-tuning peak memory per method (measured, with the 80 GB H100 line) and serving throughput at
    16 concurrent requests (measured against the article's published numbers). Returns the SVG text."""
    import io

    import matplotlib

    matplotlib.use("svg", force=False)
    import matplotlib.pyplot as plt

    from llmstudy.publishing import figstyle

    figstyle.setup()
    s = s or summary()
    fig, (a, b) = plt.subplots(1, 2, figsize=(figstyle.WIDTH_IN, 3.8), gridspec_kw={"width_ratios": [1.15, 1]})
    mem = s.memory
    y = range(len(mem))
    a.barh(list(y), [m["value"] for m in mem], color=[figstyle.color(0) if "LoRA" in m["label"] else figstyle.color(1) for m in mem])
    a.set_yticks(list(y), [m["label"] for m in mem])
    for i, m in enumerate(mem):
        a.annotate(f"{m['value']:.1f}", (m["value"], i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=9)
    h100 = 80e9 / 2**30
    a.axvline(h100, color="#555555", ls="--", lw=1.2, zorder=1)
    a.annotate("one H100: 80 GB", (h100, 0), xytext=(4, 0), textcoords="offset points", va="center", ha="left", fontsize=9, color="#555555")
    a.set_xlim(0, max(max(m["value"] for m in mem), h100) * 1.18)
    a.set_xlabel("peak allocated memory (GiB)")
    a.set_title("Fine-tuning llama-2-7b:\npeak memory per method")
    a.grid(axis="y", visible=False)
    srv = s.serving
    y2 = range(len(srv))
    b.barh(list(y2), [x["value"] for x in srv], color=[("#bbbbbb" if x["published"] else figstyle.color(2)) for x in srv],
           hatch=None)
    b.set_yticks(list(y2), [x["label"] for x in srv])
    for i, x in enumerate(srv):
        b.annotate(f"{x['value']:,.0f}", (x["value"], i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=9)
    b.set_xlim(0, max(x["value"] for x in srv) * 1.22)
    b.set_xlabel("output tokens/s")
    b.set_title("Serving llama-2-7b,\n16 requests at once")
    b.grid(axis="y", visible=False)
    b.invert_yaxis()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()
