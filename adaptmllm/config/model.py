"""The ``model:`` section (:class:`ModelConfig`): which model is fine-tuned, the ``tiny`` model's sizes
(:class:`TinyModelConfig`), LoRA / QLoRA (:class:`LoraConfig`) and frozen parts (:class:`FreezeConfig`).

May import: adaptmllm.config.checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adaptmllm.config.checks import build_section, check


@dataclass
class TinyModelConfig:
    """Sizes of the embedded ``tiny`` model: an NLLB-architecture (M2M100) model built from scratch
    with a SentencePiece vocabulary trained on the corpus. Runs offline on a CPU."""

    vocab_size: int = 1000
    """SentencePiece vocabulary size (pieces, before the language codes are added)."""
    d_model: int = 128
    """Hidden size."""
    encoder_layers: int = 2
    """Encoder layers."""
    decoder_layers: int = 2
    """Decoder layers."""
    attention_heads: int = 4
    """Attention heads (encoder and decoder)."""
    ffn_dim: int = 512
    """Feed-forward inner size."""
    dropout: float = 0.1
    """Dropout probability."""
    max_position_embeddings: int = 256
    """Longest sequence in tokens."""
    pretrain: bool = True
    """Demo only: first pretrain a small multilingual base on general-domain artificial data of
    several pairs (cached), so that the baseline translates a little, as NLLB does."""
    pretrain_epochs: int = 6
    """Epochs of that general-domain pretraining."""
    pretrain_pairs: int = 3000
    """General-domain pairs per direction for that pretraining."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "attention_heads",
                     "ffn_dim", "max_position_embeddings", "pretrain_epochs", "pretrain_pairs"):
            check(getattr(self, name) > 0, f"model.tiny.{name}", "must be > 0")
        check(self.vocab_size >= 100, "model.tiny.vocab_size", "must be >= 100")
        check(self.d_model % self.attention_heads == 0, "model.tiny.attention_heads",
               f"d_model {self.d_model} must be divisible by attention_heads {self.attention_heads}")
        check(0.0 <= self.dropout < 1.0, "model.tiny.dropout", "must be in [0, 1)")


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class LoraConfig:
    """Parameter-efficient fine-tuning with LoRA (PEFT): the base model stays frozen and small
    low-rank adapters are trained; the kept model is merged back into a plain checkpoint."""

    enabled: bool = False
    """Train LoRA adapters instead of all weights (fits NLLB-200-3.3B on a 16 GB GPU with gradient checkpointing)."""
    r: int = 16
    """Rank of the LoRA update matrices."""
    alpha: float = 32.0
    """LoRA scaling numerator: updates are scaled by alpha / r."""
    dropout: float = 0.05
    """Dropout on the LoRA branch's input."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Linear layers that get adapters (module names): attention q_proj k_proj v_proj out_proj, feed-forward fc1 fc2."""
    load_in_4bit: bool = False
    """QLoRA: load the frozen base model in 4-bit NF4 (bitsandbytes, CUDA GPUs only)."""

    def __post_init__(self) -> None:
        check(self.r >= 1, "model.lora.r", "must be >= 1, e.g. 16")
        check(self.alpha > 0, "model.lora.alpha", "must be > 0, e.g. 32")
        check(0.0 <= self.dropout < 1.0, "model.lora.dropout", "must be in [0, 1)")
        if isinstance(self.target_modules, str):
            self.target_modules = self.target_modules.replace(",", " ").split()
        check(bool(self.target_modules), "model.lora.target_modules",
               f"give at least one module name, e.g. {' '.join(LORA_TARGETS)}")
        check(not self.load_in_4bit or self.enabled, "model.lora.load_in_4bit",
               "QLoRA trains LoRA adapters on a 4-bit base: set model.lora.enabled=true too")


@dataclass
class FreezeConfig:
    """Freeze parts of the model during full fine-tuning (less memory for optimizer states, less forgetting)."""

    embeddings: bool = False
    """Freeze the shared token embeddings (tied with the output projection, so that is frozen too)."""
    encoder: bool = False
    """Freeze the encoder's layers and final layer norm (the shared embeddings follow ``embeddings``)."""
    train_top_layers: int = 0
    """Train only the top N encoder and top N decoder layers, freezing the layers below (0: train all layers)."""

    def __post_init__(self) -> None:
        check(self.train_top_layers >= 0, "model.freeze.train_top_layers", "must be >= 0 (0 trains all layers)")

    @property
    def active(self) -> bool:
        """Whether anything is frozen."""
        return self.embeddings or self.encoder or self.train_top_layers > 0


@dataclass
class ModelConfig:
    """Which model is fine-tuned."""

    name_or_path: str = "tiny"
    """``tiny`` (built locally, offline), a hub name such as ``facebook/nllb-200-distilled-600M``,
    or a local folder holding a saved model and tokenizer."""
    max_source_length: int = 128
    """Source segments are truncated to this many tokens."""
    max_target_length: int = 128
    """Target segments are truncated to this many tokens."""
    local_files_only: bool = False
    """Never try the network for hub names (set automatically when ``HF_HUB_OFFLINE=1``)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Sizes of the ``tiny`` model."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA / QLoRA adapters instead of full fine-tuning."""
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    """Parts of the model frozen during full fine-tuning."""

    def __post_init__(self) -> None:
        check(bool(self.name_or_path), "model.name_or_path", "give 'tiny', a hub name or a local folder")
        check(self.max_source_length > 0, "model.max_source_length", "must be > 0")
        check(self.max_target_length > 0, "model.max_target_length", "must be > 0")
        if isinstance(self.tiny, dict):
            self.tiny = build_section(TinyModelConfig, self.tiny, "model.tiny")
        if isinstance(self.lora, dict):
            self.lora = build_section(LoraConfig, self.lora, "model.lora")
        if isinstance(self.freeze, dict):
            self.freeze = build_section(FreezeConfig, self.freeze, "model.freeze")
        check(not (self.lora.enabled and self.freeze.active), "model.freeze",
               "has no effect with model.lora.enabled (LoRA already freezes the whole base model); leave it off")
