"""Chapter batch_size_sweep: one parameter home (spec = notebook = CLI), every glued value from ``statements`` (exact,
without papermill), the fork's honesty for another model, and the notebook under papermill (slow)."""

import re
import sys

import papermill as pm
import pytest
from conftest import ROOT, execute_chapter, thin_code

from llmstudy import cli
from llmstudy.chapters import batch_size_sweep as BS
from llmstudy.core import models as M
from llmstudy.core import params as PR
from llmstudy.core.book import not_measured

NB = ROOT / "notebooks" / "batch_size_sweep.ipynb"

# Every value the page glued before the chapter became a package (2026-12-03, papermill, default parameters): the
# H100 records h100-b (the sweep), the max_num_seqs-16 comparison records and engine_comparison/h100-engines3.
GLUED = {
    "bs_art_gptq": "813.81", "bs_busiest": "256", "bs_c1_itl": "6.02–6.06", "bs_copy_tbs": "3.0", "bs_drop_16": "3%",
    "bs_drop_256": "10%", "bs_drop_4": "1%", "bs_drop_64": "7%", "bs_gain_64_256": "16%", "bs_itl_256_128": "22.9", "bs_itl_256_256": "36.4",
    "bs_kv_batch": "190", "bs_kv_tokens": "121,424", "bs_lat_4_256": "54,602", "bs_lat_4_4": "1,678", "bs_lat_4_8": "2,963", "bs_max_kv": "98.9%",
    "bs_max_running": "214", "bs_max_waiting": "55", "bs_mean_ctx": "640", "bs_plateau_16": "1,886", "bs_plateau_256": "4,786", "bs_plateau_4": "607",
    "bs_plateau_64": "4,132", "bs_plateau_err": "8%", "bs_q_awq_c16": "2,353", "bs_q_awq_itl": "4.06", "bs_q_awq_kernel": "MacheteLinearKernel",
    "bs_q_awq_kv": "139,632", "bs_q_awq_run": "h100-awq", "bs_q_awq_w": "3.74", "bs_q_base_run": "h100-bf16-seqs16", "bs_q_bf16_c16": "1,798",
    "bs_q_bf16_itl": "6.14", "bs_q_bf16_kv": "121,424", "bs_q_bf16_w": "12.55", "bs_q_gptq2_c16": "2,390", "bs_q_gptq2_itl": "4.32",
    "bs_q_gptq2_kernel": "MacheteLinearKernel", "bs_q_gptq2_kv": "139,664", "bs_q_gptq2_run": "h100-engines3 (engine_comparison)", "bs_q_gptq2_w": "3.68",
    "bs_q_gptq_runs": "h100-gptq-kernel, h100-gptq", "bs_q_gptq_w": "12.55, 12.55", "bs_q_itl_gain": "34%", "bs_q_nopref_ttft": "214",
    "bs_q_pref_c16": "1,869", "bs_q_pref_gain": "4.0%", "bs_q_pref_run": "h100-b", "bs_q_pref_ttft": "134", "bs_q_tput_gain": "31%",
    "bs_roof_c1_copy_pct": "75%", "bs_roof_c1_floor": "4.04", "bs_roof_c1_pct": "67%", "bs_roof_max": "0.73", "bs_roof_min": "0.63", "bs_servers": "4",
    "bs_start_s": "100", "bs_tps_ns_4_256": "11", "bs_tps_s_4_256": "155", "bs_tput_16_16": "1,869", "bs_tput_256_128": "5,291",
    "bs_tput_256_256": "4,786", "bs_tput_4_16": "607", "bs_ttft_4_4": "49", "bs_ttft_4_8": "1,319", "bs_wall_min": "20",
}
PREDICTED = {"bs_model", "bs_mean_ctx", "bs_roof_pred", "bs_art_gptq"}  # from the config, the parameters or the article: not records


@pytest.fixture(scope="module")
def study():
    return BS.statements(BS.load(), "llama-2-7b")


# --- one home per parameter -----------------------------------------------------------------------------------------

def test_notebook_parameters_cell_is_the_spec():
    assert PR.notebook_mismatches(NB, BS.PARAMS) == []


def parsed(monkeypatch, argv):
    """The namespace ``llmstudy ARGV`` hands to the sweep command (the command itself is replaced)."""
    got = {}
    monkeypatch.setattr(cli, "_sweep", lambda args: got.update(args=args) or 0)
    assert cli.main(argv) == 0
    return got["args"]


def test_cli_flags_and_defaults_are_the_spec(monkeypatch):
    args = parsed(monkeypatch, ["sweep", "batch-size"])
    for name, p in BS.PARAMS.items():
        if name in cli.SWEEP_NOT_CLI:
            assert not hasattr(args, name)
        else:
            assert getattr(args, name) == p.default, name
    assert PR.validate(BS.PARAMS, PR.from_args(BS.PARAMS, args)) == PR.validate(BS.PARAMS, {})
    args = parsed(monkeypatch, ["sweep", "batch-size", "--max-num-seqs", "8", "--no-enforce-eager", "--budget-s", "60"])
    assert (args.max_num_seqs, args.enforce_eager, args.budget_s) == ([8], False, 60.0)


def test_bad_parameters_are_named():
    with pytest.raises(PR.ParameterError, match=r"max_num_seqs=\[4, 0\]: every value must be a positive integer"):
        PR.validate(BS.PARAMS, {"max_num_seqs": [4, 0]})
    with pytest.raises(PR.ParameterError, match=r"mode='train': must be one of"):
        PR.validate(BS.PARAMS, {"mode": "train"})
    with pytest.raises(PR.ParameterError, match=r"unknown parameter\(s\) \['max_batch_size'\]"):
        PR.validate(BS.PARAMS, {"max_batch_size": [4]}, strict=True)
    with pytest.raises(PR.ParameterError, match="budget_s=-5: must be > 0"):
        PR.validate(BS.PARAMS, {"budget_s": -5})
    with pytest.raises(PR.ParameterError, match=r"gpu_memory_utilization=1.5: must be in \(0, 1\]"):
        PR.validate(BS.PARAMS, {"gpu_memory_utilization": 1.5})
    assert PR.validate(BS.PARAMS, {"budget_s": 400})["budget_s"] == 400


def test_cli_refuses_a_bad_value_in_one_line(capsys):
    import subprocess

    p = subprocess.run([sys.executable, "-m", "llmstudy.cli", "sweep", "batch-size", "--max-num-seqs", "4", "0", "--plan"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1] == "llmstudy: error: invalid notebook parameter(s): max_num_seqs=[4, 0]: every value must be a positive integer, got [0]"


def test_plan_from_the_spec_is_the_article_sweep():
    pts = BS.plan(PR.validate(BS.PARAMS, {}))
    assert len(pts) == 36 and {p.server.max_num_seqs for p in pts} == {4, 16, 64, 256}
    assert {p.server.max_model_len for p in pts} == {4096} and {(p.workload.input_len, p.workload.output_len) for p in pts} == {(512, 256)}


# --- statements: exact, without papermill ---------------------------------------------------------------------------

def test_statements_keep_every_value_the_page_glued(study):
    assert {k: study[k] for k in GLUED} == GLUED


def test_statements_add_the_models_prediction_and_the_claims(study):
    assert set(study) == set(GLUED) | {"bs_model", "bs_roof_pred"} | {k for k in study if k.startswith("claim_")}
    # the single-sequence floor at 640 tokens of context: (6,607,343,616 x 2 + 640 x 524,288) bytes / 3.35 TB/s
    assert study["bs_roof_pred"] == "4.04 ms per decode step at batch 1 and 640 tokens of context (13.21 GB of weights + 0.336 GB of KV at 3.35 TB/s)"
    assert {"claim_cap_16_beats_cap_4", "claim_plateau_is_batch_over_itl", "claim_throughput_stops_growing_past_max_num_seqs"} <= set(study)
    assert study["claim_cap_16_beats_cap_4"].startswith("At 16 concurrent requests max_num_seqs 16 gives more throughput than 4")


def test_a_forked_model_shows_its_prediction_and_says_what_is_not_measured():
    model = "mistral-7b-v0.3"
    s = BS.statements(BS.load({"model": model}), model)
    sentence = not_measured(M.title(model), f"llmstudy sweep batch-size --model {model}")
    measured = set(GLUED) - PREDICTED
    assert {s[k] for k in measured} == {sentence}  # no Llama-2-7B record leaks into the page
    # the prediction is Mistral's own: (7,113,805,824 x 2 + 640 x 2 x 32 x 8 x 128 x 2) bytes / 3.35 TB/s = 4.27 ms
    assert s["bs_roof_pred"] == "4.27 ms per decode step at batch 1 and 640 tokens of context (14.23 GB of weights + 0.084 GB of KV at 3.35 TB/s)"
    assert s["bs_art_gptq"] == "813.81" and s["bs_mean_ctx"] == "640"


def test_an_architecture_the_roofline_does_not_model_is_refused_by_name():
    s = BS.statements(BS.load({"model": "llama-4-scout-17b-16e-instruct"}), "llama-4-scout-17b-16e-instruct")
    assert s["bs_roof_pred"] == "no decode roofline: llama-4-scout-17b-16e-instruct: layer types ['chunked_attention'] are not modelled by the decode roofline (only full and sliding attention, and MLA)"


# --- the notebook under papermill --------------------------------------------------------------------------------

def _outputs(nb) -> str:
    """Everything the executed notebook shows a reader: its outputs' HTML, text and streams (not its code)."""
    out = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            data = o.get("data", {})
            t = o.get("text", "")
            out.append(t if isinstance(t, str) else "".join(t))
            for mime in ("text/html", "text/plain", "text/markdown"):
                v = data.get(mime, "")
                out.append(v if isinstance(v, str) else "".join(v))
    return "\n".join(out)


def _run(tmp_path, **params):
    return execute_chapter("batch_size_sweep", tmp_path, **params)


@pytest.mark.slow
def test_notebook_renders_the_records(tmp_path, study):
    text, glue, nb = _run(tmp_path)
    assert '"ename"' not in text and text.count('"image/svg+xml"') == 3  # the key figure, the four panels, the TPS panels (SVG)
    assert glue == study  # every glued value is a statement, glued as it is
    assert "batch_size_sweep/h100-b" in text and "Probe: Llama-2-7B, H100 (vLLM 0.25 defaults)" in text and "1,157" in text
    shown = _outputs(nb)
    assert "stale .git" not in shown and not re.search(r"\b(NaN|nan|None|n/a)\b", shown)  # no internal notes, no placeholders
    assert "1,157" in shown and ">640.00<" not in shown and ">1.0<" not in shown  # counts print as integers
    assert thin_code(nb, 60)


@pytest.mark.slow
def test_notebook_without_any_record_says_not_measured(tmp_path, runs_root):
    text, glue, _ = _run(tmp_path)
    assert '"ename"' not in text and "No run record of llama-2-7b" in text
    sentence = not_measured(M.title("llama-2-7b"), "llmstudy sweep batch-size --model llama-2-7b")
    assert {glue[k] for k in set(GLUED) - PREDICTED} == {sentence}
    claims = {k: v for k, v in glue.items() if k.startswith("claim_")}
    assert claims and all("— not yet measured (no run record in data/runs/" in v for v in claims.values())  # the claims registry's wording


@pytest.mark.slow
def test_notebook_stops_on_a_bad_parameter_before_any_work(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as e:
        _run(tmp_path, max_num_seqs=[4, -16])
    assert e.value.ename == "ParameterError" and "max_num_seqs=[4, -16]" in e.value.evalue
