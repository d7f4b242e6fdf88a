"""Triton Inference Server for real, without a container (issue 22).

* :mod:`.install`: the PyTriton wheel's ``tritonserver`` 2.51.0 unpacked, the Python-backend stub for the running
  Python, numpy 1 for the stub (``make triton`` -> ``.venv-triton/``);
* :mod:`.params`: the deployment's parameters (:class:`~.params.TritonParams`: max_batch_size, instance counts);
* :mod:`.repository`: the model repository generator, ensemble(preprocessing -> engine -> postprocessing) with the
  TensorRT-LLM ensemble's interface; engine ``hf`` (transformers, CPU) or ``vllm`` (AsyncLLM, GPU);
* :mod:`.server`: :class:`~.server.WheelTritonServer`, the study's managed lifecycle around that binary;
* :mod:`.client`: an HTTP client (``/generate``, ``/generate_stream``) timed with genai-perf's definitions, and
  genai-perf 0.0.16 + perf_analyzer (tritonclient 2.50.0) over gRPC;
* :mod:`.textcodec`: prompt encoding and chunk decoding shared by the models and the tests;
* ``models/``: the Python-backend ``model.py`` files the generator copies.

Nothing heavy is imported here: the Python-backend stub imports :mod:`.textcodec` with numpy 1 first on its path.
"""
