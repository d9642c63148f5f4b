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
seen; quantise each merged model anew (:func:`quantized_copy` keeps the torch model for that). The
compressed model can be kept on disk as OpenVINO IR (:class:`IRCache`), so that the same weights
are read and compiled next time instead of converted again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from ..errors import ConfigError, ModelError
from ..vocabulary import Quantize

if TYPE_CHECKING:
    import torch

    from ..devices import DtypeChoice
    from .base import Reranker

logger = logging.getLogger(__name__)

#: The values of ``quantize`` (``scoring.quantize``, ``--quantize``); ``none`` scores as loaded.
QUANTIZE_MODES: tuple[str, ...] = get_args(Quantize)
#: The families whose model calls the int8 path replaces.
QUANTIZABLE_KINDS: tuple[str, ...] = ("monot5", "cross-encoder", "bi-encoder")
#: Activations are quantised per group of this many values (OpenVINO's CPU default, fixed here so
#: that scores do not move with OpenVINO's defaults).
ACTIVATION_GROUP = 32
#: How NNCF compresses the weights (per output channel, asymmetric): part of every int8 key.
WEIGHTS = "int8_asym"
_INSTALL = "pip install 'taskrank[openvino]' (openvino and nncf)"
#: The layout of a cached IR folder (:class:`IRCache`); part of its key, bumped when it changes.
IR_FORMAT = 1
_IR_FILES = ("model.xml", "model.bin")


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
        self.from_cache = False  # whether the compressed model was read from an IRCache

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
    if reranker.kind == "bi-encoder":  # its texts, tokenized as encode_texts tokenizes them
        texts = ["an example query", "a longer example document with a few more words in it"]
        packed: Packed = reranker.tokenize(texts)  # type: ignore[attr-defined]
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


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class IRCache:
    """Where the compressed OpenVINO model (IR) of one set of weights is kept: a folder holding
    ``model.xml``, ``model.bin`` and ``manifest.json`` (the ``inputs`` it was made for and each
    file's sha256). It is written whole (a temporary folder renamed into place) and read only when
    its manifest names these inputs and every file matches its sha256; otherwise a warning names
    the folder and the reason, and the model is converted again and the folder replaced."""

    folder: Path
    inputs: Mapping[str, object]

    def problem(self) -> str | None:
        """Why the folder cannot be used; ``None`` when it can."""
        try:
            manifest = json.loads((self.folder / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return "it has no manifest.json"
        except (OSError, ValueError, RecursionError) as exc:
            return f"its manifest.json cannot be read ({exc})"
        if not isinstance(manifest, dict) or manifest.get("format") != IR_FORMAT:
            return f"its manifest.json is not of format {IR_FORMAT}"
        if manifest.get("inputs") != json.loads(json.dumps(dict(self.inputs))):
            return "it was made for other weights or settings (copied or renamed from another folder)"
        files = manifest.get("files")
        for name in _IR_FILES:
            file = self.folder / name
            if not file.is_file():
                return f"it lacks {name}"
            if not isinstance(files, dict) or files.get(name) != _sha256(file):
                return f"{name} does not match its sha256 in manifest.json (edited or damaged)"
        return None

    def read(self, ov: Any) -> Any | None:
        """The cached model (not compiled), or ``None`` when absent or not to be trusted."""
        if not self.folder.exists():
            return None
        problem = self.problem()
        if problem is None:
            try:
                return ov.Core().read_model(str(self.folder / "model.xml"))
            except RuntimeError as exc:  # OpenVINO's parser: a file that matches a bad manifest
                problem = f"OpenVINO cannot read it ({' '.join(str(exc).split())[:200]})"
        logger.warning("cached OpenVINO model %s is not used: %s; converting again", self.folder, problem)
        return None

    def write(self, ov: Any, model: Any) -> None:
        """Save ``model`` into the folder (replacing an unusable one), atomically."""
        from ..atomic import atomic_dir, write_json

        with atomic_dir(self.folder, overwrite=True) as tmp:
            # float32 kept as is: the cached model scores exactly as the one just converted
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            files = {name: _sha256(tmp / name) for name in _IR_FILES}
            manifest = {"format": IR_FORMAT, "inputs": dict(self.inputs), "files": files}
            write_json(tmp / "manifest.json", manifest, durable=False)


def _backend(mode: str) -> tuple[Any, Any]:
    """``(openvino, nncf)``; a :class:`ModelError` naming the install command when either is missing."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise ModelError(f"quantize {mode} needs OpenVINO and NNCF ({exc}); {_INSTALL}") from exc
    return ov, nncf


def backend_versions(mode: str = "int8") -> dict[str, str]:
    """The versions of OpenVINO and NNCF (``{"openvino": "2026.4.1", "nncf": "3.4.0"}``), which
    the int8 scores and the cached IR depend on; a :class:`ModelError` when they are missing."""
    ov, nncf = _backend(mode)
    return {"openvino": str(ov.__version__).split("-", 1)[0], "nncf": str(nncf.__version__)}


def describe_quantize(mode: str, versions: Mapping[str, str] | None = None) -> str:
    """How a run scores, after its dtype: ``"int8 (OpenVINO 2026.4.1, NNCF 3.4.0)"``; ``""`` for none.
    ``versions`` are those recorded when the run was set up (:func:`backend_versions`' by default)."""
    if mode == "none":
        return ""
    found = dict(versions) if versions is not None else backend_versions(mode)
    return f"{mode} (OpenVINO {found.get('openvino')}, NNCF {found.get('nncf')})"


def choose_scoring_dtype(dtype: str | torch.dtype | None, mode: str, device: Any = None) -> DtypeChoice:
    """The dtype a re-ranker is loaded in with ``quantize=mode``: :func:`taskrank.devices.choose_dtype`'s
    without quantisation; with int8, float32 (what it converts): ``auto`` resolves to it, and
    bfloat16 or float16 are refused (a :class:`ConfigError`).

    Example::

        choose_scoring_dtype("auto", "int8").describe()
        # "float32 (auto: quantize int8 scores from float32 weights)"
    """
    from ..devices import DtypeChoice, choose_dtype

    if mode == "none":
        return choose_dtype(dtype, device)
    if dtype is not None and str(dtype).strip().lower() == "auto":
        return DtypeChoice("float32", f"auto: quantize {mode} scores from float32 weights")
    choice = choose_dtype(dtype, device)
    if choice.name != "float32":
        raise ConfigError(
            f"dtype {choice.name} cannot be used with quantize {mode}, which converts float32 weights; "
            "use dtype float32 or auto"
        )
    return choice


def _output_name(kind: str) -> str:
    return "last_hidden_state" if kind == "bi-encoder" else "logits"


def _convert(reranker: Reranker, ov: Any, nncf: Any) -> Any:
    """The OpenVINO model of ``reranker``'s torch model, its weights compressed to int8."""
    import torch

    model = reranker.model
    if reranker.kind == "monot5":
        module = _first_step(model)
    elif reranker.kind == "bi-encoder":
        module = getattr(model, "base_model", model)
    else:
        module = model
    with torch.no_grad(), warnings.catch_warnings():
        # transformers' branches on the mask are traced with the padded example on purpose
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        converted = ov.convert_model(module, example_input=_example(reranker))
    with _quiet_nncf():
        return nncf.compress_weights(converted, mode=nncf.CompressWeightsMode(WEIGHTS))


def quantize_reranker(
    reranker: Reranker, mode: str, threads: int | None = None, cache: IRCache | None = None
) -> Reranker:
    """Make ``reranker`` score through an int8 OpenVINO model (in place; returned for chaining).

    Args:
        reranker: a float32 re-ranker on the CPU of a family in :data:`QUANTIZABLE_KINDS`.
        mode: ``"int8"`` (``"none"`` returns it unchanged).
        threads: OpenVINO inference threads; default torch's current number (what
            :func:`taskrank.threads.torch_threads` set).
        cache: where the compressed model (OpenVINO IR) of these weights is kept: read from there
            when it is, saved there after a conversion otherwise (:class:`IRCache`).

    Raises :class:`ModelError` naming the install command when OpenVINO or NNCF is missing.
    The model's ``convert_seconds`` says what conversion (or reading the cache) and compilation
    took, ``from_cache`` whether the IR came from ``cache``.

    Example::

        rr = quantize_reranker(load_reranker(path, "cross-encoder", device="cpu"), "int8")
    """
    import torch

    mode = check_quantize(mode, reranker.kind)
    if mode == "none":
        return reranker
    _check_model(mode, reranker)
    ov, nncf = _backend(mode)
    start = time.perf_counter()
    converted = cache.read(ov) if cache is not None else None
    from_cache = converted is not None
    if converted is None:
        converted = _convert(reranker, ov, nncf)
        if cache is not None:
            cache.write(ov, converted)
    properties = {
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
        "INFERENCE_PRECISION_HINT": "f32",
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": ACTIVATION_GROUP,
    }
    compiled = ov.Core().compile_model(converted, "CPU", properties)
    config = reranker.model.config
    wrapper = OpenVINOModel(compiled, _output_name(reranker.kind), config, time.perf_counter() - start)
    wrapper.from_cache = from_cache
    reranker.model = wrapper  # type: ignore[assignment]
    if reranker.kind == "bi-encoder":
        reranker.encoder = wrapper  # type: ignore[attr-defined]
    how = f"read from {cache.folder}" if from_cache and cache is not None else "quantised to int8 (OpenVINO)"
    logger.info("%s %s in %.1f s", reranker.source, how, wrapper.convert_seconds)
    return reranker


def quantized_copy(
    reranker: Reranker, mode: str, threads: int | None = None, cache: IRCache | None = None
) -> Reranker:
    """A copy of ``reranker`` that scores through the int8 model of its current weights, while
    ``reranker`` keeps its torch model (which an α sweep goes on moving in place). The copy
    shares the tokenizer and settings; see :func:`quantize_reranker` for the arguments."""
    import copy

    return quantize_reranker(copy.copy(reranker), mode, threads, cache)


__all__ = [
    "ACTIVATION_GROUP",
    "IR_FORMAT",
    "QUANTIZABLE_KINDS",
    "QUANTIZE_MODES",
    "WEIGHTS",
    "IRCache",
    "OpenVINOModel",
    "backend_versions",
    "check_quantize",
    "choose_scoring_dtype",
    "describe_quantize",
    "quantize_reranker",
    "quantized_copy",
]
