"""The standard-library tensor table equals transformers' meta-device model, tensor by tensor, for every shipped config;
the calculator core imports nothing outside the standard library."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llmstudy.calc import bundle
from llmstudy.calc import models as C
from llmstudy.calc import tensors as T
from llmstudy.core import arch as A
from llmstudy.core import models as M

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent.name for p in (ROOT / "data" / "models").glob("*/config.json"))


def _valid(p: Path) -> bool:
    try:
        raw = json.loads(p.read_text())
        A.validate(raw)
        return isinstance(raw, dict) and "architectures" in raw
    except (A.ConfigError, json.JSONDecodeError):
        return False


VALID_FIXTURES = sorted(str(p) for p in (ROOT / "tests" / "fixtures").glob("**/*.json") if _valid(p))


def _meta_rows(model) -> list[dict]:
    table = M.parameter_table(M.load_config(model))
    rows = table.to_dict("records")
    return [{k: (bool(v) if k in ("linear", "experts", "vision") else int(v) if k in ("numel", "in_features", "out_features", "num_experts") else v)
             for k, v in r.items()} for r in rows]


def test_every_shipped_family_is_listed():
    assert len(SHIPPED) >= 20
    assert [m for m in SHIPPED if not C.supported(m)] == []


@pytest.mark.parametrize("model", SHIPPED + VALID_FIXTURES)
def test_the_stdlib_table_equals_the_meta_device_model(model):
    mine = list(C.tensors(model))
    meta = _meta_rows(model)
    assert [r["name"] for r in mine] == [r["name"] for r in meta]  # same tensors, same order as named_parameters
    assert mine == meta  # numel, component, nn.Linear or not, shapes, experts, leaf, vision: every field
    assert T.total(mine) == int(sum(r["numel"] for r in meta))


def test_exact_counts_of_two_known_models():
    assert C.component_counts("llama-2-7b")["total"] == 6_738_415_616
    counts = C.component_counts("mixtral-8x7b")
    assert counts["total"] == 46_702_792_704
    assert counts["experts"] == 32 * (939_524_096 + 469_762_048)


def test_the_library_uses_the_stdlib_table_and_falls_back_to_the_meta_model(tmp_path):
    assert M.parameters("qwen3-8b").to_dict("records") == list(C.tensors("qwen3-8b"))
    # a family the stdlib table does not list (phi3): the library builds the meta model, the stdlib core refuses
    cfg = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 100,
           "pad_token_id": 0, "max_position_embeddings": 256}
    path = tmp_path / "phi3.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(T.NotModelledFamily, match="'phi3'"):
        C.tensors(str(path))
    assert int(M.parameters(str(path)).numel.sum()) == int(M.parameter_table(M.load_config(str(path))).numel.sum())


def test_peft_conversion_table_equals_peft():
    from peft.utils import transformers_weight_conversion as P

    expected = {}
    for mt, base in P._MODEL_TO_CONVERSION_PATTERN.items():
        mapping = {k: v for k, v in P._MOE_TARGET_MODULE_MAPPING.get(base, {}).items() if "." not in v}
        if mapping:
            expected[mt] = (mapping, dict(P._MOE_FUSED_TARGETS.get(base, {})))
    assert {mt: C.peft_conversion(mt) for mt in expected} == expected
    assert all(C.peft_conversion(mt) == ({}, {}) for mt in C.PEFT_MOE_CONVERSION.keys() - expected.keys())


def test_vision_defaults_equal_the_transformers_config_classes():
    from transformers import Llama4VisionConfig, SiglipVisionConfig

    for cls, defaults in ((SiglipVisionConfig, T.SIGLIP_DEFAULTS), (Llama4VisionConfig, T.LLAMA4_VISION_DEFAULTS)):
        cfg = cls()
        # SigLIP's modeling code: use_head = True if not hasattr(config, "vision_use_head") else config.vision_use_head
        assert {k: getattr(cfg, k, True) for k in defaults} == defaults


def test_an_unlisted_family_is_refused_with_its_name():
    raw = json.loads((ROOT / "data" / "models" / "llama-2-7b" / "config.json").read_text())
    raw["model_type"] = "olmo2"
    with pytest.raises(T.NotModelledFamily, match="'olmo2'.*listed families: llama"):
        T.tensor_table(raw)


def test_the_shipped_modules_import_in_a_bare_interpreter(tmp_path):
    """The zip the page loads: unpacked and used by ``python -I -S`` (no site-packages: no pandas, torch...)."""
    with zipfile.ZipFile(__import__("io").BytesIO(bundle.package_zip())) as z:
        z.extractall(tmp_path)
        names = z.namelist()
    assert {f"src/{p}" for p in bundle.SHIPPED} <= set(names)
    assert {f"root/data/models/{m}/config.json" for m in SHIPPED} <= set(names)
    code = ("import sys, json; sys.path.insert(0, sys.argv[1] + '/src')\n"
            "from llmstudy.calc import browser as B\n"
            "info = json.loads(B.init(sys.argv[1] + '/root'))\n"
            "r = json.loads(B.memory(json.dumps(dict(model='llama-2-7b', method='lora', seq_len=100, micro_batch=1, lora_r=4))))\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'numpy', 'torch', 'transformers', 'peft'))\n"
            "print(json.dumps([len(info['models']), r['params'], heavy]))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    n, params, heavy = json.loads(out.stdout)
    assert (n, params, heavy) == (len(SHIPPED), 6_738_415_616, [])


def test_the_zip_is_reproducible():
    assert bundle.package_zip() == bundle.package_zip()
