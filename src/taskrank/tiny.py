"""Tiny models and offline tokenizers of the real architectures.

Used by the offline demo and by the test suite: everything is built locally (no hub access)
with the ``tokenizers`` library and ``save_pretrained``, in seconds, on a CPU.

Supported architectures: ``T5ForConditionalGeneration``, ``BertModel``, ``BertForMaskedLM``,
``BertForSequenceClassification`` and ``LlamaForCausalLM``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PretrainedConfig, PreTrainedTokenizerBase, PreTrainedTokenizerFast

#: Words every tiny tokenizer knows, beside the caller's own (prompt words, ranking labels).
BASE_WORDS: tuple[str, ...] = (
    "query", "document", "relevant", "true", "false", "yes", "no", "the", "a", "of", "and", "in", "to",
    "is", "for", "on", "with", "what", "how", "does", "which", "are",
)  # fmt: skip

N_SENTINELS = 8
ARCHITECTURES = (
    "T5ForConditionalGeneration",
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "LlamaForCausalLM",
)
_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;?!-'()"


def _vocab_words(words: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for word in (*BASE_WORDS, *words):
        w = word.strip().lower()
        if w:
            seen.setdefault(w, None)
    return list(seen)


def wordpiece_tokenizer(words: Iterable[str] = (), model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer (``[CLS] a [SEP] b [SEP]``) over ``words`` plus characters."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab_list = special + _vocab_words(words) + list(_CHARS) + [f"##{c}" for c in _CHARS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def _metaspace_pieces(words: Iterable[str]) -> list[str]:
    # Case-sensitive like the real T5/Llama vocabularies: each word lower-case and capitalised.
    pieces: dict[str, None] = {}
    for w in _vocab_words(words):
        pieces.setdefault("▁" + w, None)
        pieces.setdefault("▁" + w.capitalize(), None)
    return list(pieces)


def _unigram(pieces: Sequence[str], head: Sequence[str], tail: Sequence[str] = ()) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = [(p, 0.0) for p in head]
    vocab += [(p, -1.0) for p in pieces]
    vocab += [(c, -6.0) for c in _CHARS] + [("▁", -3.0)]
    vocab += [(p, 0.0) for p in tail]
    unk_id = list(head).index("<unk>")
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def t5_tokenizer(
    words: Iterable[str] = (), model_max_length: int = 512, n_sentinels: int = N_SENTINELS
) -> PreTrainedTokenizerFast:
    """A T5-style Unigram tokenizer: ``<pad>``=0, ``</s>``=1, ``<unk>``=2, ``▁word`` pieces, and
    sentinels ``<extra_id_0>`` … at the end of the vocabulary (``<extra_id_0>`` has the last id)."""
    from tokenizers import processors
    from transformers import T5TokenizerFast

    pieces = _metaspace_pieces(words)
    sentinels = [f"<extra_id_{i}>" for i in reversed(range(n_sentinels))]
    tok = _unigram(pieces, head=["<pad>", "</s>", "<unk>"], tail=sentinels)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        additional_special_tokens=list(reversed(sentinels)),
        model_max_length=model_max_length,
    )


def llama_tokenizer(words: Iterable[str] = (), model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A Llama-style tokenizer: ``<unk>``=0, ``<s>``=1, ``</s>``=2, ``<s>`` prepended to each text."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    pieces = _metaspace_pieces(words)
    tok = _unigram(pieces, head=["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        model_max_length=model_max_length,
    )


def tokenizer_for(
    architecture: str, words: Iterable[str] = (), model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """The tiny tokenizer that suits ``architecture``."""
    if architecture.startswith("T5"):
        return t5_tokenizer(words, model_max_length)
    if architecture.startswith("Bert"):
        return wordpiece_tokenizer(words, model_max_length)
    if architecture.startswith("Llama"):
        return llama_tokenizer(words, model_max_length)
    raise ConfigError(
        f"no tiny tokenizer for architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}"
    )


def tiny_config(
    architecture: str, vocab_size: int, *, hidden: int = 32, layers: int = 2, **overrides: object
) -> PretrainedConfig:
    """A small config of the given architecture (``layers`` transformer layers, ``hidden`` width)."""
    from transformers import BertConfig, LlamaConfig, T5Config

    if architecture == "T5ForConditionalGeneration":
        cfg: PretrainedConfig = T5Config(
            vocab_size=vocab_size, d_model=hidden, d_kv=hidden // 4, d_ff=hidden * 2, num_layers=layers,
            num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
            relative_attention_num_buckets=8, dropout_rate=0.0,
        )  # fmt: skip
    elif architecture.startswith("Bert"):
        cfg = BertConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
            intermediate_size=hidden * 2, max_position_embeddings=512, pad_token_id=0,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
    elif architecture == "LlamaForCausalLM":
        cfg = LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
        )  # fmt: skip
    else:
        raise ConfigError(f"unknown tiny architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg.architectures = [architecture]
    return cfg


def build_tiny(
    architecture: str,
    out_dir: str | os.PathLike[str],
    *,
    words: Iterable[str] = (),
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dtype: str | None = None,
    **config_overrides: object,
) -> Path:
    """Build a randomly initialised tiny model with its tokenizer and save both to ``out_dir``.

    The initialisation is seeded locally (``torch.random.fork_rng``): the global RNG is untouched.

    Example::

        build_tiny("T5ForConditionalGeneration", "models/t5-tiny", words=["cell", "protein"])
    """
    import torch
    import transformers

    tok = tokenizer if tokenizer is not None else tokenizer_for(architecture, words)
    cfg = tiny_config(architecture, len(tok), hidden=hidden, layers=layers, **config_overrides)
    model_cls = getattr(transformers, architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(cfg)
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
        model.config.dtype = dtype
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def derive_checkpoint(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    architecture: str | None = None,
    noise: float = 0.02,
    seed: int = 1,
    num_labels: int | None = None,
) -> Path:
    """Save a "fine-tune" of ``source``: the same weights plus seeded Gaussian noise of scale ``noise``.

    With ``architecture`` the weights are loaded into another head of the same base (for
    instance ``BertModel`` → ``BertForSequenceClassification``), whose new head is initialised
    from ``seed``. Used to make model trios (pretrained, ranker, domain) for tests.
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(source)
    arch = architecture or (cfg.architectures or [""])[0]
    model_cls = getattr(transformers, arch, None)
    if model_cls is None:
        raise ConfigError(f"unknown architecture {arch!r}")
    kwargs: dict[str, int] = {}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls.from_pretrained(source, **kwargs)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * noise)
    model.config.architectures = [arch]
    out = Path(out_dir)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out
