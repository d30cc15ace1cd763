"""The embedded demo corpus: small, deterministic artificial language pairs made by adaptmllm itself.

English sentences are generated from a small grammar in two domains: ``general`` (people, animals,
food, travel) and ``health`` (the demo's target domain, like the COVID-19 domain of LoResMT 2021).
Three artificial target languages use ISO 639-3's private-use codes, each with its own seeded
lexicon of made-up words and its own word order:

- ``qaa_Latn`` (Demo language A): subject-object-verb, adjectives after the noun, articles as separate words;
- ``qab_Latn`` (Demo language B): verb-subject-object, adjectives before the noun;
- ``qac_Latn`` (Demo language C): subject-verb-object, adjective and article after the noun.

The demo's multilingual base model is pretrained on general-domain pairs of all three languages
(where the health words are rare), so it translates the health domain only partly: the baseline
scores well above zero, and fine-tuning on health-domain pairs improves it, as with NLLB on a new
domain. Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
from typing import Iterable

__all__ = ["DEMO_TARGETS", "demo_splits", "general_pairs", "translate_words"]

DEMO_TARGETS = ("qaa_Latn", "qab_Latn", "qac_Latn")
"""The artificial target languages of the demo."""

VERSION = 1
"""Bump when the generator changes: cached demo base models are keyed by it."""

_LEX = {
    "general": {
        "noun": ("cat dog farmer teacher child woman man bird horse friend baby student "
                 "house river bread book apple garden road boat village market letter song").split(),
        "verb": "sees likes carries finds brings wants paints reads buys follows".split(),
        "adj": "big small red old new happy quiet green tall kind".split(),
        "place": "town field school kitchen forest harbour".split(),
        "time": "today yesterday tomorrow now".split(),
    },
    "health": {
        "noun": ("nurse doctor patient vaccine mask hospital virus symptom clinic pharmacist "
                 "medicine fever cough test ward dose").split(),
        "verb": "treats examines vaccinates isolates monitors prescribes".split(),
        "adj": "sick healthy positive negative infected elderly".split(),
        "place": "hospital clinic ward pharmacy".split(),
        "time": "today yesterday tomorrow now".split(),
    },
}
_FUNCTION = ["the", "a", "in", "near", "and"]
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + [v + c for v in "aeiou" for c in "lnrs"]


def _lexicon(lang: str) -> dict[str, str]:
    """Seeded English-word -> made-up-word lexicon of one demo language (same words every call)."""
    rng = random.Random(f"adaptmllm-demo-{lang}-{VERSION}")
    words = sorted({w for dom in _LEX.values() for cls in dom.values() for w in cls} | set(_FUNCTION))
    lex, used = {}, set()
    for w in words:
        n = 1 if w in _FUNCTION else rng.choice((2, 2, 3))
        while True:
            cand = "".join(rng.choice(_SYLLABLES) for _ in range(n))
            if cand not in used:
                used.add(cand)
                lex[w] = cand
                break
    return lex


_LEXICONS: dict[str, dict[str, str]] = {}


def lex(lang: str) -> dict[str, str]:
    if lang not in _LEXICONS:
        _LEXICONS[lang] = _lexicon(lang)
    return _LEXICONS[lang]


def _noun_phrase(rng: random.Random, dom: dict) -> tuple[str, str | None, str]:
    det = rng.choice(("the", "a"))
    adj = rng.choice(dom["adj"]) if rng.random() < 0.5 else None
    return det, adj, rng.choice(dom["noun"])


def _sentence(rng: random.Random, domain: str, mix: float) -> dict:
    """One abstract sentence: subject, verb, object noun phrases, optional place and time.

    Each slot draws its word from ``domain``, or with probability ``mix`` from the general domain.
    """
    def dom():
        return _LEX["general"] if (domain == "general" or rng.random() < mix) else _LEX[domain]

    s = {"subj": _noun_phrase(rng, dom()), "verb": rng.choice(dom()["verb"]), "obj": _noun_phrase(rng, dom())}
    s["place"] = (rng.choice(("in", "near")), rng.choice(dom()["place"])) if rng.random() < 0.4 else None
    s["time"] = rng.choice(dom()["time"]) if rng.random() < 0.3 else None
    return s


def _english(s: dict) -> str:
    def np(p):
        det, adj, noun = p
        return " ".join(w for w in (det, adj, noun) if w)

    words = [np(s["subj"]), s["verb"], np(s["obj"])]
    if s["place"]:
        words.append(f"{s['place'][0]} the {s['place'][1]}")
    if s["time"]:
        words.append(s["time"])
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _target(s: dict, lang: str) -> str:
    lx = lex(lang)

    def np(p):
        det, adj, noun = p
        if lang == "qaa_Latn":
            parts = [det, noun, adj]
        elif lang == "qab_Latn":
            parts = [det, adj, noun]
        else:
            parts = [noun, adj, det]
        return [lx[w] for w in parts if w]

    subj, obj, verb = np(s["subj"]), np(s["obj"]), [lx[s["verb"]]]
    if lang == "qaa_Latn":
        core = subj + obj + verb
    elif lang == "qab_Latn":
        core = verb + subj + obj
    else:
        core = subj + verb + obj
    tail = []
    if s["place"]:
        prep, place = s["place"]
        tail += [lx[place], lx[prep]] if lang == "qaa_Latn" else [lx[prep], lx[place]]
    if s["time"]:
        tail = [lx[s["time"]]] + tail if lang != "qab_Latn" else tail + [lx[s["time"]]]
    text = " ".join(core + tail)
    return text[0].upper() + text[1:] + "."


def translate_words(words: Iterable[str], lang: str) -> list[str]:
    """The demo lexicon's translation of English words into ``lang`` (unknown words unchanged)."""
    lx = lex(lang)
    return [lx.get(w, w) for w in words]


def _pairs(tgt_lang: str, n: int, domain: str, seed: int, mix: float) -> tuple[list[str], list[str]]:
    if tgt_lang not in DEMO_TARGETS:
        raise ValueError(
            f"data.tgt_lang: the embedded demo corpus has targets {', '.join(DEMO_TARGETS)}, not {tgt_lang}; "
            "set data.train to your own corpus to use another language")
    rng = random.Random(f"{seed}-{tgt_lang}-{domain}")
    src, tgt, seen = [], [], set()
    attempts = 0
    while len(src) < n and attempts < n * 50:
        attempts += 1
        s = _sentence(rng, domain, mix)
        en = _english(s)
        if en in seen:
            continue
        seen.add(en)
        src.append(en)
        tgt.append(_target(s, tgt_lang))
    return src, tgt


def general_pairs(tgt_lang: str, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` general-domain pairs English -> ``tgt_lang`` (for pretraining the demo's base model).

    For Demo languages B and C a twentieth more pairs come from the health domain, so the base has
    seen the health words, but never with Demo language A (``qaa_Latn``, the demo's default target):
    like NLLB on a new domain, it knows the language, not the domain's words in it.
    """
    src, tgt = _pairs(tgt_lang, n, "general", seed + 1000, 0.0)
    if tgt_lang != DEMO_TARGETS[0]:
        rng = random.Random(f"general-{seed}-{tgt_lang}")
        hs, ht = _pairs(tgt_lang, max(1, n // 20), "health", seed + 2000, 0.5)
        for a, b in zip(hs, ht):
            i = rng.randrange(len(src) + 1)
            src.insert(i, a)
            tgt.insert(i, b)
    return src, tgt


def demo_splits(src_lang: str, tgt_lang: str, n_train: int, seed: int) -> dict[str, tuple[list[str], list[str]]]:
    """The demo's health-domain corpus English -> ``tgt_lang``: ``{"train", "dev", "test"}`` ->
    ``(sources, targets)``, with ``n_train`` training pairs and 200 dev and 200 test pairs, no
    source shared between splits.

    Raises:
        ValueError: ``src_lang`` is not ``eng_Latn`` or ``tgt_lang`` is not a demo language.
    """
    if src_lang != "eng_Latn":
        raise ValueError(f"data.src_lang: the embedded demo corpus is English (eng_Latn), not {src_lang}; "
                         "set data.train to your own corpus to use another language")
    src, tgt = _pairs(tgt_lang, n_train + 400, "health", seed, 0.3)
    return {
        "test": (src[:200], tgt[:200]),
        "dev": (src[200:400], tgt[200:400]),
        "train": (src[400:], tgt[400:]),
    }


DEMO_BASE_SEED = 42
"""Seed of the demo base's pretraining (independent of ``train.seed``)."""
