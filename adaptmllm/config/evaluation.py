"""The ``eval:`` section (:class:`EvalConfig`): how the baseline and the fine-tuned model are scored.

May import: adaptmllm.config.checks, adaptmllm.config.data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from adaptmllm.config.checks import check
from adaptmllm.config.data import DIRECTION_KEYS


ENGINES = ("transformers", "ctranslate2")
CT2_QUANTIZATIONS = ("float32", "float16", "bfloat16", "int8", "int8_float16", "int8_bfloat16")


@dataclass
class EvalConfig:
    """How the baseline and the fine-tuned model are scored on the test set."""

    num_beams: int = 4
    """Beam size of generation."""
    max_new_tokens: int = 128
    """Longest translation in tokens."""
    batch_size: int = 64
    """Segments per generation batch."""
    bleu_tokenize: str = "13a"
    """sacrebleu BLEU tokenizer (13a, intl, char, zh, ja-mecab, ...)."""
    score_baseline: bool = True
    """Score the untouched baseline on the same test set before fine-tuning."""
    bootstrap_samples: int = 1000
    """Resamples of the paired bootstrap test fine-tuned vs baseline (sacrebleu's --paired-bs; 1000 is its default)."""
    significance_level: float = 0.05
    """p-value below which a difference counts as significant."""
    general_test: Optional[str] = None
    """General-domain test set for the forgetting check (same forms as data.test, e.g. the prefix of
    FLORES-200 devtest as aligned files), scored for baseline and fine-tuned model; ``demo``: the embedded
    demo's held-out general-domain pairs. Empty: no forgetting check."""
    forgetting_threshold: float = 1.0
    """Flag forgetting (in red) when general-domain chrF++ falls by more than this many points."""
    forgetting_tests: list = field(default_factory=list)
    """Held-out test sets of directions NOT trained, scored for baseline and fine-tuned model (forgetting
    check per direction): mappings {src_lang, tgt_lang, test} (test: a corpus, or ``demo`` for the demo's
    general-domain pairs English -> demo language). A chrF++ drop over forgetting_threshold is flagged."""
    score_checkpoints: bool = False
    """Also score each remaining checkpoint (checkpoints/checkpoint-*) on the dev set and the general test
    set, to pick the trade-off per epoch (slower; raise train.save_total_limit to keep more checkpoints)."""
    error_analysis_n: int = 10
    """Segments listed as most worse and most better in the error analysis."""
    spm_model: Optional[str] = None
    """Local path of the FLORES-200 SentencePiece model: adds spBLEU (never downloaded). Empty: no spBLEU."""
    comet_model: Optional[str] = None
    """Local path of a COMET checkpoint (needs pip install 'adaptmllm[comet]'): adds COMET. Empty: no COMET."""
    length_penalty: float = 1.0
    """Beam search length penalty: score = log-probability / length ** length_penalty (above 1 favours
    longer translations; no effect with num_beams 1)."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size within a translation (0: off; 3 or 4 curbs loops)."""
    max_batch_tokens: int = 4096
    """Token budget of one generation batch: segments x longest source in tokens (padded). Segments are
    sorted by length and batched up to this budget and eval.batch_size; lower it if the GPU runs out of memory."""
    split_sentences: bool = True
    """Translate multi-sentence segments (paragraphs, documents) sentence by sentence (pysbd) and join
    them back, keeping spaces and line breaks: NLLB drops or cuts sentences from long inputs. Sentences
    longer than model.max_source_length tokens are cut between words, never silently truncated."""
    engine: str = "transformers"
    """Generation engine for scoring: transformers (PyTorch), or ctranslate2 (the model is converted with
    CTranslate2 at eval.ct2_quantization first; faster on CPU; needs pip install ctranslate2)."""
    ct2_quantization: str = "int8"
    """Weights of the CTranslate2 conversion when eval.engine is ctranslate2: float32, float16, bfloat16,
    int8, int8_float16 or int8_bfloat16 (int8: about 4x smaller and faster on CPU, within ~1 chrF++)."""

    def __post_init__(self) -> None:
        check(self.num_beams >= 1, "eval.num_beams", "must be >= 1")
        check(self.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1")
        check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        check(self.bleu_tokenize not in ("flores101", "flores200", "spm"), "eval.bleu_tokenize",
               "spBLEU tokenizers download a model; use 13a here and give eval.spm_model for spBLEU")
        check(self.bootstrap_samples >= 100, "eval.bootstrap_samples", "must be >= 100 (1000 is usual)")
        check(0 < self.significance_level < 1, "eval.significance_level", "must be in (0, 1), e.g. 0.05")
        check(self.forgetting_threshold >= 0, "eval.forgetting_threshold", "must be >= 0 (chrF++ points)")
        check(self.error_analysis_n >= 1, "eval.error_analysis_n", "must be >= 1")
        check(self.length_penalty > 0, "eval.length_penalty", "must be > 0 (1.0: no preference)")
        check(self.no_repeat_ngram_size >= 0, "eval.no_repeat_ngram_size", "must be >= 0 (0: off)")
        check(self.max_batch_tokens >= 1, "eval.max_batch_tokens", "must be >= 1, e.g. 4096")
        check(self.engine in ENGINES, "eval.engine", f"{self.engine!r} is not one of {ENGINES}")
        check(self.ct2_quantization in CT2_QUANTIZATIONS, "eval.ct2_quantization",
               f"{self.ct2_quantization!r} is not one of {CT2_QUANTIZATIONS}")
        check(isinstance(self.forgetting_tests, list), "eval.forgetting_tests",
               "must be a list of mappings {src_lang, tgt_lang, test}")
        for i, e in enumerate(self.forgetting_tests):
            name = f"eval.forgetting_tests[{i}]"
            check(isinstance(e, dict), name, "must be a mapping {src_lang, tgt_lang, test}")
            bad = [k for k in e if k not in DIRECTION_KEYS]
            check(not bad, f"{name}.{bad[0] if bad else ''}", f"unknown key; known keys: {', '.join(DIRECTION_KEYS)}")
            check(bool(e.get("test")) and bool(e.get("src_lang")) and bool(e.get("tgt_lang")), name,
                   "needs src_lang, tgt_lang and test")
        for name in ("general_test", "spm_model", "comet_model"):
            if getattr(self, name) is not None and not str(getattr(self, name)).strip():
                setattr(self, name, None)
