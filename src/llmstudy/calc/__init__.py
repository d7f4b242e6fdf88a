"""The study's calculators as one standard-library core: parameter counts, the fine-tuning memory model and the vLLM
KV-cache planner, computed from a ``config.json`` alone.

The same code runs in three places: the ``llmstudy`` CLI, the chapters (through :mod:`llmstudy.training.memory` and
:mod:`llmstudy.serving.kv_planner`, thin pandas layers over this package), and the reader's browser, where the book's
"plan your run" page loads it into Pyodide (``calc/browser.py`` is the page's entry point). Nothing here imports
torch, transformers, peft or pandas; ``tests/calc`` proves the parameter tables equal transformers' meta-device
models and the memory and capacity outputs equal the library's.

* :mod:`.tensors` - every parameter tensor of a config, per family
* :mod:`.models` - configs by name or path, validated; LoRA targets and adapter tensors
* :mod:`.memory` - the fine-tuning memory model (what :mod:`llmstudy.training.memory` re-exports)
* :mod:`.kv` - the vLLM KV-cache capacity planner (what :mod:`llmstudy.serving.kv_planner` re-exports)
* :mod:`.browser` - JSON in, JSON out: what the page calls
"""
