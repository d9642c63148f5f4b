"""int8 scoring on the CPU through OpenVINO: ``load_reranker(..., quantize="int8")`` (issue 16).

The loaded float32 model is converted with ``openvino.convert_model`` (traced on one batch of the
family's own inputs), its weights are compressed to int8 by NNCF (per output channel, asymmetric),
and OpenVINO's CPU plugin quantises the activations on the fly (groups of 32 values), so that the
matrix products run in int8 (AVX-512 VNNI, AMX-INT8) without a calibration set. The compiled model
stands in for the transformers model the family calls: tokenization, length-sorted batching and
score assembly stay taskrank's.

The int8 scheme is affine (scale and zero point) quantisation, Jacob et al., "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018.
Measured in ``benchmarks/rerank.md``: on a CPU with VNNI and no native bfloat16 it scores the
all-MiniLM-L6-v2 bi-encoder and cross-encoder 1.5-1.9× as fast as float32 with nDCG@10 within
0.005 on Cranfield. OpenVINO and NNCF are an optional extra (``pip install taskrank[openvino]``).

The compiled model is a snapshot: later in-place updates of the torch model (an α sweep) are not
seen; quantise each merged model anew.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

    from .base import Reranker

logger = logging.getLogger(__name__)

#: The values of ``quantize`` (``scoring.quantize``, ``--quantize``); ``none`` scores as loaded.
QUANTIZE_MODES: tuple[str, ...] = ("none", "int8")
#: The families whose model calls the int8 path replaces.
QUANTIZABLE_KINDS: tuple[str, ...] = ("monot5", "cross-encoder", "bi-encoder")
#: Activations are quantised per group of this many values (OpenVINO's CPU default, fixed here so
#: that scores do not move with OpenVINO's defaults).
ACTIVATION_GROUP = 32
_INSTALL = "pip install 'taskrank[openvino]' (openvino and nncf)"


def check_quantize(mode: str | None, kind: str) -> str:
    """Validate a ``quantize`` request before any model is loaded: the mode (``None`` is
    ``"none"``) and, for int8, a family in :data:`QUANTIZABLE_KINDS`. Returns the mode.

    Example::

        check_quantize("int8", "cross-encoder")  # "int8"
    """
    name = "none" if mode is None else str(mode).strip().lower()
    if name not in QUANTIZE_MODES:
        raise ConfigError(f"unknown quantize mode {mode!r}; valid: {', '.join(QUANTIZE_MODES)}")
    if name != "none" and kind not in QUANTIZABLE_KINDS:
        raise ConfigError(f"quantize {name} supports kinds {', '.join(QUANTIZABLE_KINDS)}, not {kind!r}")
    return name


def _check_model(mode: str, reranker: Reranker) -> None:
    """int8 takes a float32 torch model on the CPU (what it converts)."""
    import torch

    if reranker.device.type != "cpu":
        raise ConfigError(f"quantize {mode} runs on the CPU only, not on {reranker.device}; use device cpu")
    parameters = getattr(reranker.model, "parameters", None)
    if not callable(parameters):
        raise ModelError(f"{reranker.source} is already quantised ({type(reranker.model).__name__})")
    dtype = next(parameters()).dtype
    if dtype != torch.float32:
        raise ConfigError(
            f"quantize {mode} converts float32 weights; {reranker.source} is in "
            f"{str(dtype).removeprefix('torch.')} (use dtype float32)"
        )


class OpenVINOModel:
    """A compiled OpenVINO model called like the transformers model it was converted from:
    ``model(**inputs).logits`` (or ``.last_hidden_state``), one padded batch of torch tensors in,
    a torch tensor out. ``config`` is the original model's; ``convert_seconds`` what conversion,
    compression and compilation took."""

    def __init__(self, compiled: Any, output: str, config: Any, convert_seconds: float) -> None:
        self.request = compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.output = output
        self.config = config
        self.dtype = None
        self.convert_seconds = convert_seconds

    def __call__(self, **inputs: Any) -> Any:
        """Run one batch; unknown keyword arguments (``use_cache``) are the torch model's, ignored."""
        from types import SimpleNamespace

        import torch

        result = self.request.infer({name: inputs[name].numpy() for name in self.input_names})
        # the request reuses its output buffer: copy before the next batch overwrites it
        return SimpleNamespace(**{self.output: torch.from_numpy(result[0].copy())})

    def eval(self) -> OpenVINOModel:
        """No-op, as for a torch model already in inference mode."""
        return self


def _first_step(model: torch.nn.Module) -> torch.nn.Module:
    """monoT5's forward with a fixed signature (the traced graph's inputs): the logits of the
    first decoder step."""
    import torch

    class FirstStep(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor
        ) -> torch.Tensor:
            return self.inner(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            ).logits

    return FirstStep()


def _example(reranker: Reranker) -> dict[str, torch.Tensor]:
    """One padded batch of two pairs, exactly as the family will pass it (same keys)."""
    import torch

    from .batching import Packed

    # two lengths, so that the traced graph takes the padded branch of the attention mask
    if reranker.kind == "bi-encoder":
        enc = reranker.tokenizer(
            ["an example query", "a longer example document with a few more words in it"],
            return_attention_mask=False,
        )
        packed = Packed({name: enc[name] for name in ("input_ids", "token_type_ids") if name in enc})
    else:
        queries = ["an example query"] * 2
        documents = ["an example document", "a longer example document with a few more words in it"]
        packed = reranker.encode(queries, documents)  # type: ignore[attr-defined]
    _, inputs = next(reranker.iter_batches(packed, progress=False, description="quantize"))
    if reranker.kind == "monot5":
        start = int(reranker.decoder_start)  # type: ignore[attr-defined]
        inputs["decoder_input_ids"] = torch.full((2, 1), start, dtype=torch.long)
    return inputs


@contextmanager
def _quiet_nncf() -> Iterator[None]:
    """NNCF logs a table at INFO and draws a rich progress bar on standard output on every
    compression, whatever the caller's ``--quiet``: its logger at WARNING and the bar discarded
    while it runs (taskrank logs one line instead)."""
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(max(level, logging.WARNING))
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        nncf_logger.setLevel(level)


def quantize_reranker(reranker: Reranker, mode: str, threads: int | None = None) -> Reranker:
    """Make ``reranker`` score through an int8 OpenVINO model (in place; returned for chaining).

    Args:
        reranker: a float32 re-ranker on the CPU of a family in :data:`QUANTIZABLE_KINDS`.
        mode: ``"int8"`` (``"none"`` returns it unchanged).
        threads: OpenVINO inference threads; default torch's current number (what
            :func:`taskrank.threads.torch_threads` set).

    Raises :class:`ModelError` naming the install command when OpenVINO or NNCF is missing.

    Example::

        rr = quantize_reranker(load_reranker(path, "cross-encoder", device="cpu"), "int8")
    """
    import torch

    mode = check_quantize(mode, reranker.kind)
    if mode == "none":
        return reranker
    _check_model(mode, reranker)
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise ModelError(f"quantize {mode} needs OpenVINO and NNCF ({exc}); {_INSTALL}") from exc
    start = time.perf_counter()
    model = reranker.model
    if reranker.kind == "monot5":
        module, output = _first_step(model), "logits"
    elif reranker.kind == "bi-encoder":
        module, output = getattr(model, "base_model", model), "last_hidden_state"
    else:
        module, output = model, "logits"
    with torch.no_grad(), warnings.catch_warnings():
        # transformers' branches on the mask are traced with the padded example on purpose
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        converted = ov.convert_model(module, example_input=_example(reranker))
    with _quiet_nncf():
        converted = nncf.compress_weights(converted, mode=nncf.CompressWeightsMode.INT8_ASYM)
    properties = {
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
        "INFERENCE_PRECISION_HINT": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": ACTIVATION_GROUP,
    }
    compiled = ov.Core().compile_model(converted, "CPU", properties)
    wrapper = OpenVINOModel(compiled, output, model.config, time.perf_counter() - start)
    reranker.model = wrapper  # type: ignore[assignment]
    if reranker.kind == "bi-encoder":
        reranker.encoder = wrapper  # type: ignore[attr-defined]
    logger.info("%s quantised to int8 (OpenVINO) in %.1f s", reranker.source, wrapper.convert_seconds)
    return reranker


__all__ = [
    "ACTIVATION_GROUP",
    "QUANTIZABLE_KINDS",
    "QUANTIZE_MODES",
    "OpenVINOModel",
    "check_quantize",
    "quantize_reranker",
]
