"""Chapter length_sweep: one parameter home (spec = notebook = CLI), every glued value from ``statements`` (exact,
without papermill), the fork's honesty for other models (a multimodal one included), the notebook under papermill."""

import json
import re
import sys

import papermill as pm
import pytest
from conftest import ROOT, execute_chapter, thin_code

from llmstudy import cli
from llmstudy.chapters import length_sweep as LS
from llmstudy.core import models as M
from llmstudy.core import params as PR
from llmstudy.core.book import not_measured

NB = ROOT / "notebooks" / "length_sweep.ipynb"

# Every value the page glued before the chapter became a package (2026-12-03, papermill, default parameters;
# records h100-b, h100-c, h100-d, h100-e).
GLUED = {
    "ls16_gain_hi": "13.2", "ls16_gain_lo": "6.1", "ls16_itl_hi": "2.19", "ls16_itl_hi_at": "2,048 input and 128 output tokens", "ls16_itl_lo": "1.17",
    "ls16_runs": "h100-e", "ls16_tput_hi": "2,180", "ls16_tput_lo": "919", "ls16_ttft_max": "461", "ls16_ttft_max_in": "2,048", "ls_bw_tbs": "3.35",
    "ls_cmax": "64", "ls_fit_points": "9", "ls_intercept": "6.00", "ls_itl_range": "6.02–6.47", "ls_kv_bytes": "524,288", "ls_kv_gib": "59.3",
    "ls_kv_tokens": "121,424", "ls_lens": "2,048, 4,096, 8,192, 32,768",
    "ls_refusal": "User-specified max_model_len (32768) is greater than the derived max_model_len (max_position_embeddings=4096.0 or model_max_length=None in model's config.json)",
    "ls_roof_slope": "0.16", "ls_slope": "0.19", "ls_tput_spread": "0.3%", "ls_ttft_128": "16", "ls_ttft_hi": "402", "ls_ttft_lo": "299",
    "ls_ttft_max_in": "2,048", "ls_ttft_p99_max": "46",
    "claim_max_model_len_does_not_change_speed": "max_model_len does not change the speed of requests that fit (throughput within 5%): at concurrency 64 the output throughput varies by 0.3% across max_model_len 2,048, 4,096, 8,192, 32,768.",
}
PREDICTED = {"ls_model", "ls_kv_bytes", "ls_kv_formula"}


@pytest.fixture(scope="module")
def study():
    return LS.statements(LS.load(), "llama-2-7b")


def parsed(monkeypatch, argv):
    got = {}
    monkeypatch.setattr(cli, "_sweep", lambda args: got.update(args=args) or 0)
    assert cli.main(argv) == 0
    return got["args"]


# --- one home per parameter -----------------------------------------------------------------------------------------

def test_notebook_parameters_cell_is_the_spec():
    assert PR.notebook_mismatches(NB, LS.PARAMS) == []


@pytest.mark.parametrize("kind", ["length", "max-model-len", "io"])
def test_cli_flags_and_defaults_are_the_spec(monkeypatch, kind):
    args = parsed(monkeypatch, ["sweep", kind])
    for name, p in LS.PARAMS.items():
        if name in cli.SWEEP_NOT_CLI or (name == "sweeps" and kind != "length"):
            assert not hasattr(args, name)
        else:
            assert getattr(args, name) == p.default, name


def test_cli_kinds_run_their_part_of_the_plan(capsys):
    for kind, sweeps in (("max-model-len", {"max_model_len"}), ("io", {"io"}), ("length", {"max_model_len", "io"})):
        assert cli.main(["sweep", kind, "--plan"]) == 0
        ids = capsys.readouterr().out.split("\n")
        assert {line.split("-seqs")[0] for line in ids if line} == sweeps
    assert cli.main(["sweep", "io", "--plan", "--io-input-lens", "128", "--io-output-lens", "8", "--io-concurrency", "1"]) == 0
    assert capsys.readouterr().out.split() == ["io-seqs256-len16384-in128-out8-c1", "4", "prompts"]


def test_bad_parameters_are_named():
    with pytest.raises(PR.ParameterError, match="unknown model 'llama-3'"):
        PR.validate(LS.PARAMS, {"model": "llama-3"})
    with pytest.raises(PR.ParameterError, match=r"sweeps=\['context'\]"):
        PR.validate(LS.PARAMS, {"sweeps": ["context"]})
    with pytest.raises(PR.ParameterError, match=r"io_input_lens=\[128, 128\]: values must be distinct"):
        PR.validate(LS.PARAMS, {"io_input_lens": [128, 128]})
    assert PR.validate(LS.PARAMS, {})["io_max_model_len"] == 16384


def test_a_config_that_cannot_be_described_exactly_is_refused_by_field(tmp_path):
    cfg = M.raw_config("qwen3-8b")
    del cfg["num_hidden_layers"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(PR.ParameterError, match=r"model=.*num_hidden_layers"):
        PR.validate(LS.PARAMS, {"model": str(path)})


def test_run_mode_needs_vllm_and_says_so():
    from llmstudy.chapters import serve_sweeps as SP

    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is importable here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match="run mode needs vLLM"):
        SP.require_vllm(sys.executable)


# --- statements: exact, without papermill ---------------------------------------------------------------------------

def test_statements_keep_every_value_the_page_glued(study):
    assert {k: study[k] for k in GLUED} == GLUED
    assert set(study) == set(GLUED) | {"ls_model", "ls_kv_formula"}
    assert study["ls_kv_formula"] == "2 × 32 layers × 32 heads × 128 dims × 2 bytes"


@pytest.mark.parametrize("model, kv, formula", [
    ("mistral-7b-v0.3", "131,072", "2 × 32 layers × 8 heads × 128 dims × 2 bytes"),
    # multimodal: the language model's text_config (48 layers, 8 KV heads of 256), 40 of them sliding (1,024 tokens)
    ("gemma-3-12b-it", "393,216", "2 × 48 layers × 8 heads × 256 dims × 2 bytes; 40 of the layers keep only a 1,024-token window"),
    # MLA: one latent of 512 + 64 rope dims per layer, as vLLM stores it
    ("deepseek-v2-lite", "31,104", "27 layers × (512 latent + 64 rope dims) × 2 bytes, MLA's compressed cache"),
])
def test_a_forked_model_shows_its_own_kv_and_says_what_is_not_measured(model, kv, formula):
    s = LS.statements(LS.load({"model": model}), model)
    assert (s["ls_kv_bytes"], s["ls_kv_formula"], s["ls_model"]) == (kv, formula, M.title(model))
    sentence = not_measured(M.title(model), f"llmstudy sweep length --model {model}")
    assert {s[k] for k in set(GLUED) - PREDICTED if not k.startswith("claim_")} == {sentence}


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
    return execute_chapter("length_sweep", tmp_path, **params)


@pytest.mark.slow
def test_notebook_renders_refusals_and_failures(tmp_path, study):
    text, glue, nb = _run(tmp_path)
    assert '"ename"' not in text and text.count('"image/svg+xml"') == 5  # key figure, max_model_len, two input/output, concurrency 16 (SVG)
    assert glue == study
    assert "index out of bounds" in text and "length_sweep/h100-c" in text and "length_sweep/h100-d" in text
    assert "length_sweep/h100-e" in text  # the concurrency-16 half, kept apart from concurrency 1
    shown = _outputs(nb)
    assert "stale .git" not in shown and not re.search(r"\b(NaN|None|n/a)\b", shown)  # no internal notes, no placeholders
    assert "1,398.62" not in shown and ">8192.0<" not in shown and ">16.0<" not in shown  # counts print as integers
    assert thin_code(nb, 60)


@pytest.mark.slow
def test_notebook_without_any_record_says_not_measured(tmp_path, runs_root):
    text, glue, _ = _run(tmp_path)
    assert '"ename"' not in text and "No run record of llama-2-7b" in text
    sentence = not_measured(M.title("llama-2-7b"), "llmstudy sweep length --model llama-2-7b")
    assert {glue[k] for k in set(GLUED) - PREDICTED if not k.startswith("claim_")} == {sentence}
    assert glue["ls_kv_bytes"] == "524,288"  # from the config: not a record
    assert "— not yet measured (no run record in data/runs/" in glue["claim_max_model_len_does_not_change_speed"]


@pytest.mark.slow
def test_notebook_run_mode_without_vllm_fails_before_any_server(tmp_path, runs_root, monkeypatch):
    monkeypatch.setenv("LLMSTUDY_VLLM_PYTHON", sys.executable)
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is importable here")
    except ImportError:
        pass
    with pytest.raises(pm.PapermillExecutionError, match="run mode needs vLLM"):
        _run(tmp_path, mode="run", run_id="nb-cpu")
    assert not list(runs_root.rglob("*"))  # nothing started, nothing written
