"""Every number the engine_comparison chapter's text quotes, as text: :func:`statements`.

The published numbers (the article's §6.6 and §8.1) are always there, labelled as the article's by the page's prose;
the measured ones come from the newest GPU record of the second-engine comparison *for the chapter's model*
(``model_7b``), "—" without one, and for a model that is not the study's own, the sentence saying it is not
measured yet and the command that measures it.
"""

from __future__ import annotations

import pandas as pd

from llmstudy.chapters.engine_comparison import analysis as A
from llmstudy.chapters.engine_comparison.params import GPTOSS_MODEL, MODEL_7B
from llmstudy.chapters.engine_comparison.plan import EXPERIMENT, measure_command
from llmstudy.serving import sweep as SB

NA = "—"  # a value the records lack (never "n/a" on a page)
KEYS_7B = ("ec_run", "ec_gpu", "ec_cap", "ec_conc", "ec_c16_prompts", "ec_sgl_version", "ec_vllm_version", "ec_prefill_s",
           "ec_sgl_start_s", "ec_vllm_start_s", "ec_sgl_weights", "ec_vllm_weights", "ec_sgl_quant", "ec_vllm_quant", "ec_sgl_kernel",
           "ec_vllm_kernel", "ec_sgl_kv", "ec_vllm_kv", "ec_sgl_kv_gib", "ec_vllm_kv_gib", "ec_kv_mib", "ec_sgl_kv_check", "ec_seq_tokens", "ec_kv_need", "ec_kv_headroom",
           "ec_c1_sgl_user", "ec_c1_vllm_user", "ec_c1_margin", "ec_c16_sgl", "ec_c16_vllm", "ec_c16_margin", "ec_c16_verdict", "ec_c16_sgl_rps", "ec_c16_vllm_rps", "ec_hi_margin_max",
           "ec_ttft_sgl_at", "ec_ttft_vllm_at", "ec_c16_ttft_sgl", "ec_c16_ttft_vllm", "ec_ours_vs_article_vllm", "ec_vllm_vs_article_triton", "ec_bw_ours", "ec_bw_article",
           "ec_bw_ratio")


def fmt(v, spec: str = "{:,.0f}") -> str:
    """A value as text, "—" when missing."""
    return NA if v is None or pd.isna(v) else spec.format(v)


def pick(df: pd.DataFrame, col: str, spec: str = "{:,.0f}", **where) -> str:
    """One formatted value of ``df`` where every column equals its value ("—" if there is none)."""
    m = pd.Series(True, index=df.index)
    for k, v in where.items():
        m &= df[k] == v
    return fmt(df.loc[m, col].iloc[0], spec) if m.any() and col in df else NA


def published_numbers() -> dict[str, float]:
    """The article's numbers the text quotes: §6.6 Triton and vLLM 0.11.0 at c=16, their ratio, §8.1 trtllm-serve at c=1."""
    pub = A.published()
    p66 = pub[pub["section"].astype(str) == "6.6"].set_index("server")["value"].astype(float)
    p81 = pub[pub["section"].astype(str) == "8.1"].set_index("metric")["value"].astype(float)
    return {"triton": float(p66.filter(like="Triton").iloc[0]), "vllm": float(p66.filter(like="vLLM").iloc[0]), "ratio": float(A.published_7b_wins()["margin"].iloc[0]),
            "trtllm_c1": float(p81.filter(like="TTFT excluded").iloc[0]), "trtllm_c1_incl": float(p81.filter(like="TTFT included").iloc[0])}


def gpu_sets(points: pd.DataFrame, part: str, model: str | None = None) -> dict[tuple, pd.DataFrame]:
    """The comparison sets of ``part`` measured on a GPU (CPU rehearsals are never results), of ``model`` if given."""
    return {k: g for k, g in A.comparison_sets(points).items()
            if (g["part"] == part).all() and (model is None or k[1] == model) and len(g) and (g["gpu"] != "CPU").all()}


def _title(model: str) -> str:
    from llmstudy.core import models as M

    try:
        return M.title(model)
    except Exception:  # a title is a label: a model without one is named as given
        return str(model)


def statements(points: pd.DataFrame, model_7b: str = MODEL_7B, gptoss_model: str = GPTOSS_MODEL, paths: dict | None = None) -> dict[str, str]:
    """Every glued value of the chapter, from the engine_comparison points (:func:`~.analysis.load_points`):

    ``ec_pub_*`` and ``ec_article_gpu``: the article's numbers and GPU; ``ec_*`` of :data:`KEYS_7B`: the newest GPU
    record of the second-engine comparison of ``model_7b`` (run, GPU, settings, versions, what each server loaded,
    throughput, TTFT and margins, the ratio to the article's numbers), "—" where it lacks a value, and for a model
    other than the study's with no record, ``ec_run`` says it is not measured yet with the command that measures it;
    ``gptoss_vocab``: the vocabulary size of ``gptoss_model``'s config (named when it is not gpt-oss-20b).
    ``paths``: run_id -> record folder (default: the records under data/runs).
    """
    from llmstudy.core import models as M
    from llmstudy.core import records as R
    from llmstudy.core.book import not_measured

    pub = published_numbers()
    out = {"ec_pub_triton": f"{pub['triton']:,.2f}", "ec_pub_vllm": f"{pub['vllm']:,.2f}", "ec_pub_ratio": f"{pub['ratio']:.2f}×",
           "ec_pub_trtllm_c1": f"{pub['trtllm_c1']:,.0f}", "ec_pub_trtllm_c1_incl": f"{pub['trtllm_c1_incl']:,.0f}", "ec_article_gpu": A.ARTICLE_GPU,
           "ec_tie_pct": f"{100 * (A.TIE_MARGIN - 1):.0f} %"}
    g7 = dict.fromkeys(KEYS_7B, NA)
    s7 = gpu_sets(points, "second-engine", model_7b) if len(points) else {}
    if not s7 and model_7b != MODEL_7B:
        g7["ec_run"] = not_measured(_title(model_7b), measure_command("second-engine", model_7b))
    if s7:
        g7.update(_measured_7b(s7, pub, paths if paths is not None else {r.run_id: r.path for r in R.load_runs(EXPERIMENT)}))
    out |= {k: str(v) for k, v in g7.items()}
    vocab = f"{M.text_config(M.load_config(gptoss_model)).vocab_size:,}"
    out["gptoss_vocab"] = vocab if gptoss_model == GPTOSS_MODEL else f"{vocab} ({_title(gptoss_model)}'s config; gpt-oss-20b's differs)"
    return out


def _verdict_at(wins: pd.DataFrame, concurrency: int) -> str:
    """The win table's verdict at one concurrency as words (:func:`~.analysis.verdict_phrase`), "—" if not judged."""
    row = wins[wins.concurrency == concurrency]
    return A.verdict_phrase(row.winner.iloc[0], row.margin.iloc[0]) if len(row) else NA


def _measured_7b(s7: dict, pub: dict, paths: dict) -> dict[str, str]:
    """The 7B section's numbers from the newest of the comparison sets ``s7``."""
    g: dict[str, str] = {}
    key = max(s7)
    g7 = s7[key]
    ok7 = g7[g7.outcome == "ok"]
    path7 = paths[key[0]]
    facts7, fails7 = A.server_facts(path7), A.failed_attempts(path7)
    srv7 = g7.drop_duplicates("engine").set_index("engine", drop=False)
    cap, seq = int(g7.max_num_seqs.max()), int(key[2] + key[3])
    kv_b = SB.kv_bytes_per_token(key[1])
    g.update(ec_run=key[0], ec_gpu=ok7.gpu.iloc[0], ec_cap=f"{cap}", ec_conc=f"{int(g7.concurrency.min())} to {int(g7.concurrency.max())}",
             ec_c16_prompts=pick(g7, "num_prompts", concurrency=16, engine="vllm"), ec_seq_tokens=f"{seq:,}", ec_kv_need=f"{cap * seq:,}", ec_kv_mib=f"{kv_b / 2**20:g}")
    for e, short in (("sglang", "sgl"), ("vllm", "vllm")):
        if e in srv7.index:
            g[f"ec_{short}_version"] = A.engine_label(srv7.loc[e]).split(" ", 1)[-1]
            g[f"ec_{short}_start_s"] = fmt(srv7.loc[e, "start_s"], "{:,.0f}")
        g.update({f"ec_{short}_weights": pick(facts7, "weights_gib", "{:.2f}", engine=e), f"ec_{short}_quant": pick(facts7, "quantization", "{}", engine=e),
                  f"ec_{short}_kernel": pick(facts7, "gemm_kernel", "{}", engine=e), f"ec_{short}_kv": pick(facts7, "kv_cache_tokens", engine=e),
                  f"ec_{short}_kv_gib": pick(facts7, "kv_cache_gib", "{:.1f}", engine=e)})
    kv_min = facts7.kv_cache_tokens.min() if len(facts7) else None
    g["ec_kv_headroom"] = fmt(kv_min / (cap * seq) if kv_min else None, "{:.0f}×")
    kv_sgl = facts7.loc[facts7.engine == "sglang", "kv_cache_tokens"] if len(facts7) else pd.Series(dtype=float)
    g["ec_sgl_kv_check"] = fmt(kv_sgl.iloc[0] * kv_b / 2**30 if len(kv_sgl) else None, "{:.1f}")
    if len(fails7):
        g.update(ec_prefill_s=fmt(fails7.prefill_graph_capture_s.max(), "{:,.0f}"))
    if ok7.engine.nunique() > 1:
        w7 = A.win_table(ok7)
        tot, user, ttft = (w7[w7.metric.str.startswith(p)] for p in ("total", "per-user", "TTFT"))
        g.update(ec_c1_sgl_user=pick(ok7, "output_token_throughput_per_user_avg", "{:,.1f}", engine="sglang", concurrency=1),
                 ec_c1_vllm_user=pick(ok7, "output_token_throughput_per_user_avg", "{:,.1f}", engine="vllm", concurrency=1),
                 ec_c1_margin=pick(user, "margin", "{:.2f}×", concurrency=1), ec_c16_margin=pick(tot, "margin", "{:.2f}×", concurrency=16),
                 ec_c16_verdict=_verdict_at(tot, 16),
                 ec_c16_sgl=pick(ok7, "output_token_throughput", engine="sglang", concurrency=16), ec_c16_vllm=pick(ok7, "output_token_throughput", engine="vllm", concurrency=16),
                 ec_c16_sgl_rps=pick(ok7, "request_throughput", "{:.2f}", engine="sglang", concurrency=16), ec_c16_vllm_rps=pick(ok7, "request_throughput", "{:.2f}", engine="vllm", concurrency=16),
                 ec_hi_margin_max=fmt(tot[tot.concurrency >= cap].margin.max(), "{:.2f}×"),
                 ec_ttft_sgl_at=", ".join(str(int(c)) for c in ttft[ttft.winner == "sglang"].concurrency) or "none",
                 ec_ttft_vllm_at=", ".join(str(int(c)) for c in ttft[ttft.winner == "vllm"].concurrency) or "none",
                 ec_c16_ttft_sgl=pick(ok7, "time_to_first_token_avg", engine="sglang", concurrency=16), ec_c16_ttft_vllm=pick(ok7, "time_to_first_token_avg", engine="vllm", concurrency=16))
    va7 = A.versus_article(g7)
    if len(va7):
        ours = va7[va7.source.str.startswith("measured")]
        g.update(ec_ours_vs_article_vllm=pick(va7, "x article's vLLM", "{:.2f}×", engine=f"vllm {g.get('ec_vllm_version', NA)}"),
                 ec_vllm_vs_article_triton=fmt(ours[ours.engine.str.startswith("vllm")]["output tokens/s"].max() / pub["triton"], "{:.2f}×"),
                 ec_bw_ours=fmt(ours["HBM TB/s"].max(), "{:.2f}"), ec_bw_article=pick(va7, "HBM TB/s", "{:.2f}", gpu=A.ARTICLE_GPU),
                 ec_bw_ratio=fmt(ours["HBM TB/s"].max() / SB.hbm_bandwidth(A.ARTICLE_GPU) * 1e12, "{:.2f}×"))
    return g
