"""Language codes: the 202 FLORES-200 codes NLLB-200 knows, the demo's artificial languages, and
ISO 639-1 aliases (used as default file suffixes: ``eng_Latn`` -> ``en``).

:func:`check_code` validates a code and raises :class:`LanguageError` with the closest valid codes.
This module imports nothing heavy.
"""

from __future__ import annotations

import difflib
from typing import Optional

__all__ = [
    "FLORES200",
    "DEMO_LANGUAGES",
    "LANGUAGES",
    "ISO639_1",
    "LanguageError",
    "check_code",
    "iso639_1",
    "language_name",
    "choices",
    "find_code",
]

FLORES200: dict[str, str] = {
    # Same codes and order as NLLB-200's tokenizer (FAIRSEQ_LANGUAGE_CODES); names from FLORES-200.
    "ace_Arab": "Acehnese (Arabic script)",
    "ace_Latn": "Acehnese (Latin script)",
    "acm_Arab": "Mesopotamian Arabic",
    "acq_Arab": "Ta'izzi-Adeni Arabic",
    "aeb_Arab": "Tunisian Arabic",
    "afr_Latn": "Afrikaans",
    "ajp_Arab": "South Levantine Arabic",
    "aka_Latn": "Akan",
    "amh_Ethi": "Amharic",
    "apc_Arab": "North Levantine Arabic",
    "arb_Arab": "Modern Standard Arabic",
    "ars_Arab": "Najdi Arabic",
    "ary_Arab": "Moroccan Arabic",
    "arz_Arab": "Egyptian Arabic",
    "asm_Beng": "Assamese",
    "ast_Latn": "Asturian",
    "awa_Deva": "Awadhi",
    "ayr_Latn": "Central Aymara",
    "azb_Arab": "South Azerbaijani",
    "azj_Latn": "North Azerbaijani",
    "bak_Cyrl": "Bashkir",
    "bam_Latn": "Bambara",
    "ban_Latn": "Balinese",
    "bel_Cyrl": "Belarusian",
    "bem_Latn": "Bemba",
    "ben_Beng": "Bengali",
    "bho_Deva": "Bhojpuri",
    "bjn_Arab": "Banjar (Arabic script)",
    "bjn_Latn": "Banjar (Latin script)",
    "bod_Tibt": "Standard Tibetan",
    "bos_Latn": "Bosnian",
    "bug_Latn": "Buginese",
    "bul_Cyrl": "Bulgarian",
    "cat_Latn": "Catalan",
    "ceb_Latn": "Cebuano",
    "ces_Latn": "Czech",
    "cjk_Latn": "Chokwe",
    "ckb_Arab": "Central Kurdish",
    "crh_Latn": "Crimean Tatar",
    "cym_Latn": "Welsh",
    "dan_Latn": "Danish",
    "deu_Latn": "German",
    "dik_Latn": "Southwestern Dinka",
    "dyu_Latn": "Dyula",
    "dzo_Tibt": "Dzongkha",
    "ell_Grek": "Greek",
    "eng_Latn": "English",
    "epo_Latn": "Esperanto",
    "est_Latn": "Estonian",
    "eus_Latn": "Basque",
    "ewe_Latn": "Ewe",
    "fao_Latn": "Faroese",
    "pes_Arab": "Western Persian",
    "fij_Latn": "Fijian",
    "fin_Latn": "Finnish",
    "fon_Latn": "Fon",
    "fra_Latn": "French",
    "fur_Latn": "Friulian",
    "fuv_Latn": "Nigerian Fulfulde",
    "gla_Latn": "Scottish Gaelic",
    "gle_Latn": "Irish",
    "glg_Latn": "Galician",
    "grn_Latn": "Guarani",
    "guj_Gujr": "Gujarati",
    "hat_Latn": "Haitian Creole",
    "hau_Latn": "Hausa",
    "heb_Hebr": "Hebrew",
    "hin_Deva": "Hindi",
    "hne_Deva": "Chhattisgarhi",
    "hrv_Latn": "Croatian",
    "hun_Latn": "Hungarian",
    "hye_Armn": "Armenian",
    "ibo_Latn": "Igbo",
    "ilo_Latn": "Ilocano",
    "ind_Latn": "Indonesian",
    "isl_Latn": "Icelandic",
    "ita_Latn": "Italian",
    "jav_Latn": "Javanese",
    "jpn_Jpan": "Japanese",
    "kab_Latn": "Kabyle",
    "kac_Latn": "Jingpho",
    "kam_Latn": "Kamba",
    "kan_Knda": "Kannada",
    "kas_Arab": "Kashmiri (Arabic script)",
    "kas_Deva": "Kashmiri (Devanagari script)",
    "kat_Geor": "Georgian",
    "knc_Arab": "Central Kanuri (Arabic script)",
    "knc_Latn": "Central Kanuri (Latin script)",
    "kaz_Cyrl": "Kazakh",
    "kbp_Latn": "Kabiyè",
    "kea_Latn": "Kabuverdianu",
    "khm_Khmr": "Khmer",
    "kik_Latn": "Kikuyu",
    "kin_Latn": "Kinyarwanda",
    "kir_Cyrl": "Kyrgyz",
    "kmb_Latn": "Kimbundu",
    "kon_Latn": "Kikongo",
    "kor_Hang": "Korean",
    "kmr_Latn": "Northern Kurdish",
    "lao_Laoo": "Lao",
    "lvs_Latn": "Standard Latvian",
    "lij_Latn": "Ligurian",
    "lim_Latn": "Limburgish",
    "lin_Latn": "Lingala",
    "lit_Latn": "Lithuanian",
    "lmo_Latn": "Lombard",
    "ltg_Latn": "Latgalian",
    "ltz_Latn": "Luxembourgish",
    "lua_Latn": "Luba-Kasai",
    "lug_Latn": "Ganda",
    "luo_Latn": "Luo",
    "lus_Latn": "Mizo",
    "mag_Deva": "Magahi",
    "mai_Deva": "Maithili",
    "mal_Mlym": "Malayalam",
    "mar_Deva": "Marathi",
    "min_Latn": "Minangkabau",
    "mkd_Cyrl": "Macedonian",
    "plt_Latn": "Plateau Malagasy",
    "mlt_Latn": "Maltese",
    "mni_Beng": "Meitei (Bengali script)",
    "khk_Cyrl": "Halh Mongolian",
    "mos_Latn": "Mossi",
    "mri_Latn": "Maori",
    "zsm_Latn": "Standard Malay",
    "mya_Mymr": "Burmese",
    "nld_Latn": "Dutch",
    "nno_Latn": "Norwegian Nynorsk",
    "nob_Latn": "Norwegian Bokmål",
    "npi_Deva": "Nepali",
    "nso_Latn": "Northern Sotho",
    "nus_Latn": "Nuer",
    "nya_Latn": "Nyanja",
    "oci_Latn": "Occitan",
    "gaz_Latn": "West Central Oromo",
    "ory_Orya": "Odia",
    "pag_Latn": "Pangasinan",
    "pan_Guru": "Eastern Panjabi",
    "pap_Latn": "Papiamento",
    "pol_Latn": "Polish",
    "por_Latn": "Portuguese",
    "prs_Arab": "Dari",
    "pbt_Arab": "Southern Pashto",
    "quy_Latn": "Ayacucho Quechua",
    "ron_Latn": "Romanian",
    "run_Latn": "Rundi",
    "rus_Cyrl": "Russian",
    "sag_Latn": "Sango",
    "san_Deva": "Sanskrit",
    "sat_Beng": "Santali",
    "scn_Latn": "Sicilian",
    "shn_Mymr": "Shan",
    "sin_Sinh": "Sinhala",
    "slk_Latn": "Slovak",
    "slv_Latn": "Slovenian",
    "smo_Latn": "Samoan",
    "sna_Latn": "Shona",
    "snd_Arab": "Sindhi",
    "som_Latn": "Somali",
    "sot_Latn": "Southern Sotho",
    "spa_Latn": "Spanish",
    "als_Latn": "Tosk Albanian",
    "srd_Latn": "Sardinian",
    "srp_Cyrl": "Serbian",
    "ssw_Latn": "Swati",
    "sun_Latn": "Sundanese",
    "swe_Latn": "Swedish",
    "swh_Latn": "Swahili",
    "szl_Latn": "Silesian",
    "tam_Taml": "Tamil",
    "tat_Cyrl": "Tatar",
    "tel_Telu": "Telugu",
    "tgk_Cyrl": "Tajik",
    "tgl_Latn": "Tagalog",
    "tha_Thai": "Thai",
    "tir_Ethi": "Tigrinya",
    "taq_Latn": "Tamasheq (Latin script)",
    "taq_Tfng": "Tamasheq (Tifinagh script)",
    "tpi_Latn": "Tok Pisin",
    "tsn_Latn": "Tswana",
    "tso_Latn": "Tsonga",
    "tuk_Latn": "Turkmen",
    "tum_Latn": "Tumbuka",
    "tur_Latn": "Turkish",
    "twi_Latn": "Twi",
    "tzm_Tfng": "Central Atlas Tamazight",
    "uig_Arab": "Uyghur",
    "ukr_Cyrl": "Ukrainian",
    "umb_Latn": "Umbundu",
    "urd_Arab": "Urdu",
    "uzn_Latn": "Northern Uzbek",
    "vec_Latn": "Venetian",
    "vie_Latn": "Vietnamese",
    "war_Latn": "Waray",
    "wol_Latn": "Wolof",
    "xho_Latn": "Xhosa",
    "ydd_Hebr": "Eastern Yiddish",
    "yor_Latn": "Yoruba",
    "yue_Hant": "Yue Chinese",
    "zho_Hans": "Chinese (Simplified)",
    "zho_Hant": "Chinese (Traditional)",
    "zul_Latn": "Zulu",
}
"""The 202 FLORES-200 codes of NLLB-200 -> English name."""

DEMO_LANGUAGES: dict[str, str] = {
    # ISO 639-3 reserves qaa..qtz for local use: no real language will ever get these codes.
    "qaa_Latn": "Demo language A (artificial)",
    "qab_Latn": "Demo language B (artificial)",
    "qac_Latn": "Demo language C (artificial)",
}
"""The embedded demo's artificial languages -> name."""

LANGUAGES: dict[str, str] = {**FLORES200, **DEMO_LANGUAGES}
"""Every code adaptmllm accepts -> English name."""

ISO639_1: dict[str, str] = {
    "af": "afr_Latn", "ak": "aka_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "as": "asm_Beng",
    "ay": "ayr_Latn", "az": "azj_Latn", "ba": "bak_Cyrl", "be": "bel_Cyrl", "bg": "bul_Cyrl",
    "bm": "bam_Latn", "bn": "ben_Beng", "bo": "bod_Tibt", "bs": "bos_Latn", "ca": "cat_Latn",
    "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn", "dz": "dzo_Tibt",
    "ee": "ewe_Latn", "el": "ell_Grek", "en": "eng_Latn", "eo": "epo_Latn", "es": "spa_Latn",
    "et": "est_Latn", "eu": "eus_Latn", "fa": "pes_Arab", "ff": "fuv_Latn", "fi": "fin_Latn",
    "fj": "fij_Latn", "fo": "fao_Latn", "fr": "fra_Latn", "ga": "gle_Latn", "gd": "gla_Latn",
    "gl": "glg_Latn", "gn": "grn_Latn", "gu": "guj_Gujr", "ha": "hau_Latn", "he": "heb_Hebr",
    "hi": "hin_Deva", "hr": "hrv_Latn", "ht": "hat_Latn", "hu": "hun_Latn", "hy": "hye_Armn",
    "id": "ind_Latn", "ig": "ibo_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "jv": "jav_Latn", "ka": "kat_Geor", "kg": "kon_Latn", "ki": "kik_Latn", "kk": "kaz_Cyrl",
    "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "kr": "knc_Latn", "ks": "kas_Arab",
    "ku": "kmr_Latn", "ky": "kir_Cyrl", "lb": "ltz_Latn", "lg": "lug_Latn", "li": "lim_Latn",
    "ln": "lin_Latn", "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn", "mg": "plt_Latn",
    "mi": "mri_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva",
    "ms": "zsm_Latn", "mt": "mlt_Latn", "my": "mya_Mymr", "nb": "nob_Latn", "ne": "npi_Deva",
    "nl": "nld_Latn", "nn": "nno_Latn", "no": "nob_Latn", "ny": "nya_Latn", "oc": "oci_Latn",
    "om": "gaz_Latn", "or": "ory_Orya", "pa": "pan_Guru", "pl": "pol_Latn", "ps": "pbt_Arab",
    "pt": "por_Latn", "qu": "quy_Latn", "rn": "run_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "rw": "kin_Latn", "sa": "san_Deva", "sc": "srd_Latn", "sd": "snd_Arab", "sg": "sag_Latn",
    "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "sm": "smo_Latn", "sn": "sna_Latn",
    "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "ss": "ssw_Latn", "st": "sot_Latn",
    "su": "sun_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu",
    "tg": "tgk_Cyrl", "th": "tha_Thai", "ti": "tir_Ethi", "tk": "tuk_Latn", "tl": "tgl_Latn",
    "tn": "tsn_Latn", "tr": "tur_Latn", "ts": "tso_Latn", "tt": "tat_Cyrl", "tw": "twi_Latn",
    "ug": "uig_Arab", "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn",
    "wo": "wol_Latn", "xh": "xho_Latn", "yi": "ydd_Hebr", "yo": "yor_Latn", "zh": "zho_Hans",
    "zu": "zul_Latn",
}
"""ISO 639-1 two-letter code -> FLORES-200 code, for the languages that have one."""

# Reverse map; the first alias wins (nob_Latn -> "nb", not "no").
_TO_ISO639_1: dict[str, str] = {}
for _alias, _code in ISO639_1.items():
    _TO_ISO639_1.setdefault(_code, _alias)

_BY_LOWER_CODE = {c.lower(): c for c in LANGUAGES}
_BY_LOWER_NAME = {n.lower(): c for c, n in LANGUAGES.items()}


class LanguageError(ValueError):
    """A language code is unknown. The message starts with the field name and suggests valid codes."""


def iso639_1(code: str) -> Optional[str]:
    """The ISO 639-1 two-letter code of a FLORES-200 code (``eng_Latn`` -> ``"en"``), or None if it has none."""
    return _TO_ISO639_1.get(code)


def _suggest(text: str, n: int = 3) -> list[str]:
    """Up to ``n`` valid codes close to ``text`` (a mistyped code, a bare ISO 639-3 code or a name)."""
    low = text.strip().lower()
    exact = [t[low] for t in (_BY_LOWER_CODE, ISO639_1, _BY_LOWER_NAME) if low in t]
    exact += [c for c in LANGUAGES if c.lower().startswith(low + "_")]  # 'gle' -> gle_Latn
    if exact:
        return list(dict.fromkeys(exact))[:n]
    found = [c for c, name in LANGUAGES.items() if len(low) >= 3 and low in name.lower()]  # 'chinese'
    found += [_BY_LOWER_CODE[m] for m in difflib.get_close_matches(low, list(_BY_LOWER_CODE), n=n, cutoff=0.6)]
    found += [_BY_LOWER_NAME[m] for m in difflib.get_close_matches(low, list(_BY_LOWER_NAME), n=n, cutoff=0.75)]
    return list(dict.fromkeys(found))[:n]


def _unknown(code: object, field: str) -> LanguageError:
    if not isinstance(code, str) or not code:
        return LanguageError(f"{field}: {code!r} is not a language code; give a FLORES-200 code such as 'eng_Latn'")
    if code.lower() in ISO639_1:
        return LanguageError(f"{field}: {code!r} is an ISO 639-1 code; use the FLORES-200 code "
                             f"{ISO639_1[code.lower()]!r}")
    close = _suggest(code)
    hint = ("did you mean " + ", ".join(f"{c} ({LANGUAGES[c]})" for c in close) + "?") if close else \
        "see adaptmllm.languages.FLORES200 for the 202 codes, e.g. 'eng_Latn', 'gle_Latn'"
    return LanguageError(f"{field}: {code!r} is not a FLORES-200 language code; {hint}")


def check_code(code: str, field: str = "language") -> str:
    """Return ``code`` if it is a known FLORES-200 or demo code (case-sensitive, ``eng_Latn``).

    Raises:
        LanguageError: naming ``field``; for an ISO 639-1 alias (``en``) it gives the FLORES-200 code,
            otherwise it suggests the closest valid codes (``eng_latn`` -> ``eng_Latn``, ``Irish`` -> ``gle_Latn``).
    """
    if isinstance(code, str) and code in LANGUAGES:
        return code
    raise _unknown(code, field)


def language_name(code: str) -> str:
    """English name of a code (``gle_Latn`` -> ``"Irish"``). Raises :class:`LanguageError` if unknown."""
    return LANGUAGES[check_code(code)]


def choices() -> list[tuple[str, str]]:
    """``(name, code)`` pairs of every accepted language, sorted by name, for dropdowns."""
    return sorted(((name, code) for code, name in LANGUAGES.items()), key=lambda t: (t[0].lower(), t[1]))


def find_code(name_or_code: str) -> str:
    """The code for a FLORES-200 code, an ISO 639-1 alias or an English name, each case-insensitive
    (``"Irish"``, ``"ga"``, ``"gle_latn"`` -> ``"gle_Latn"``).

    Raises:
        LanguageError: nothing matches exactly; the message suggests the closest codes.
    """
    if isinstance(name_or_code, str):
        low = name_or_code.strip().lower()
        for table in (_BY_LOWER_CODE, ISO639_1, _BY_LOWER_NAME):
            if low in table:
                return table[low]
    raise _unknown(name_or_code.strip() if isinstance(name_or_code, str) else name_or_code, "language")
