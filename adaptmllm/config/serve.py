"""The ``serve:`` section (:class:`ServeConfig`): the playground and human evaluation server.

May import: adaptmllm.config.checks, adaptmllm.config.presets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from adaptmllm.config.checks import check
from adaptmllm.config.presets import mqm_weights


MQM_PRESET_NAMES = ("mqm", "adaptmllm")


@dataclass
class ServeConfig:
    """The translation playground and human evaluation server (``adaptmllm serve``): defaults,
    limits that keep a shared link safe, batching and queueing, and MQM severity weights."""

    host: str = "127.0.0.1"
    """Address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 for the local network too (then use --auth)."""
    port: Optional[int] = None
    """TCP port. Empty: the first free port from 7860."""
    num_beams: int = 4
    """Beam size the playground starts with."""
    max_new_tokens: int = 128
    """Longest translation (tokens) the playground starts with."""
    max_beams: int = 8
    """Largest beam size a user may pick."""
    max_new_tokens_limit: int = 512
    """Largest maximum translation length (tokens) a user may pick."""
    max_input_chars: int = 2000
    """Most characters of text in one translation request, and in one line of an uploaded file."""
    max_file_lines: int = 1000
    """Most lines (segments) in one uploaded file."""
    max_upload_bytes: int = 1_000_000
    """Largest upload in bytes; bigger files are refused before they are read."""
    concurrency_limit: int = 16
    """Translation requests served at once; they share the model, batched together."""
    queue_size: int = 256
    """Requests that may wait in the queue; beyond that, users are told the server is busy."""
    max_batch_segments: int = 32
    """Most segments translated in one model batch (requests of several users are batched together)."""
    max_batch_tokens: int = 4096
    """Token budget of one model batch: segments x longest source in tokens (padded)."""
    split_sentences: bool = True
    """Translate a line holding several sentences sentence by sentence (pysbd) and join them back."""
    length_penalty: float = 1.0
    """Beam search length penalty (above 1 favours longer translations)."""
    no_repeat_ngram_size: int = 0
    """Forbid repeating any n-gram of this size within a translation (0: off)."""
    batch_wait_ms: float = 5.0
    """Milliseconds the batcher waits for more requests to fill a batch."""
    request_timeout_s: float = 600.0
    """A translation request that waits longer than this many seconds fails with a message."""
    mqm_preset: str = "mqm"
    """MQM severity weights: mqm (minor 1, major 5, non-translation 25) or adaptmllm (minor 1, major 10,
    non-translation 25)."""
    mqm_minor: Optional[float] = None
    """Override of the preset's weight of a minor error."""
    mqm_major: Optional[float] = None
    """Override of the preset's weight of a major error."""
    mqm_non_translation: Optional[float] = None
    """Override of the preset's weight of a non-translation."""
    eval_segments: int = 100
    """Test segments offered for human evaluation: a fixed random sample (0: all)."""
    eval_include_reference: bool = False
    """Also ask annotators to rate the human reference translations (a control system)."""
    seed: int = 13
    """Seed of the evaluation sample and of each annotator's shuffled order."""
    file_ttl_s: int = 3600
    """Seconds that uploads, translated files and exports stay on the server before they are deleted
    (all of them are deleted when the server stops, also on SIGTERM)."""
    login_max_failures: int = 5
    """Failed logins a client address may make within serve.login_lockout_s seconds before it is locked out."""
    login_lockout_s: int = 300
    """Seconds a client address stays locked out after too many failed logins."""
    login_global_per_minute: int = 30
    """Failed logins over all client addresses in any minute; beyond, every login waits (a shared link
    reaches the server through one tunnel address: this is what bounds password guessing then)."""

    def __post_init__(self) -> None:
        check(bool(self.host), "serve.host", "give an address such as 127.0.0.1")
        for name in ("file_ttl_s", "login_max_failures", "login_lockout_s", "login_global_per_minute"):
            check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, f"serve.{name}",
                   "must be a whole number >= 1")
        check(self.port is None or 0 < self.port < 65536, "serve.port", "must be in 1..65535 (or empty)")
        for name in ("num_beams", "max_new_tokens", "max_beams", "max_new_tokens_limit", "max_input_chars",
                     "max_file_lines", "max_upload_bytes", "concurrency_limit", "queue_size", "max_batch_segments",
                     "max_batch_tokens"):
            check(getattr(self, name) >= 1, f"serve.{name}", "must be >= 1")
        check(self.length_penalty > 0, "serve.length_penalty", "must be > 0 (1.0: no preference)")
        check(self.no_repeat_ngram_size >= 0, "serve.no_repeat_ngram_size", "must be >= 0 (0: off)")
        check(self.num_beams <= self.max_beams, "serve.num_beams", f"must be <= serve.max_beams ({self.max_beams})")
        check(self.max_new_tokens <= self.max_new_tokens_limit, "serve.max_new_tokens",
               f"must be <= serve.max_new_tokens_limit ({self.max_new_tokens_limit})")
        check(self.batch_wait_ms >= 0, "serve.batch_wait_ms", "must be >= 0")
        check(self.request_timeout_s > 0, "serve.request_timeout_s", "must be > 0")
        check(self.mqm_preset in MQM_PRESET_NAMES, "serve.mqm_preset",
               f"{self.mqm_preset!r} is not one of {MQM_PRESET_NAMES}")
        for name in ("mqm_minor", "mqm_major", "mqm_non_translation"):
            v = getattr(self, name)
            check(v is None or v >= 0, f"serve.{name}", "must be >= 0 (or empty for the preset's weight)")
        check(self.eval_segments >= 0, "serve.eval_segments", "must be >= 0 (0 means all)")

    def mqm_weights(self) -> dict:
        """Severity -> points: the preset's weights with this config's overrides."""

        return mqm_weights(self.mqm_preset, {"minor": self.mqm_minor, "major": self.mqm_major,
                                             "non-translation": self.mqm_non_translation})
