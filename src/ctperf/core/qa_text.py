"""Plain-language text about QA flags and missing values, shared by the terminal and the figures.

The meaning of each QA flag lives here (not in :mod:`ctperf.apps`) so that the figures and the PDF
(:mod:`ctperf.viz`) can print it without importing an application layer.  The helpers shorten that text, and the
reasons of null metrics, to what fits on a page: always at a word boundary, never mid-word; the full text stays in
``metrics.json``.  Pure Python, no dependencies.
"""

from __future__ import annotations

import re

#: One-line meaning of the QA flags ctperf raises (shown next to the flag's name).
QA_FLAG_TEXT: dict[str, str] = {
    "aif_poor": "arterial input peaks below 100 HU above baseline",
    "aif_truncated": "arterial input has not returned to baseline at the end of the acquisition",
    "too_few_baseline_frames": "fewer than 3 pre-contrast frames",
    "acquisition_truncated": "venous outflow still high at the end of the acquisition",
    "motion_excessive": "head motion (qa_values.motion_max_mm) above preprocess.motion_flag_mm",
    "vof_unreliable": "no clean venous output function found",
    "aif_noisy": "noisy arterial input: deconvolved with stronger regularisation; Tmax/CBF less certain",
    "tmax_dispersion_ambiguous": "the study's vascular dispersion is not pinned down: Tmax uncertain by "
                                 "qa_values.tmax_dispersion_sd_s, or by ~1 s where the tissue was followed too "
                                 "briefly past its peak (qa_values.tmax_dispersion_observation_reason) or the AIF is "
                                 "noisy (qa_values.dispersion_aif_noise_reason)",
    "cbf_dispersion_ambiguous": "the study's vascular dispersion is not pinned down: CBF uncertain by "
                                "qa_values.cbf_dispersion_sd_pct, or more where the AIF is noisy "
                                "(qa_values.dispersion_aif_noise_reason)",
    "midline_fallback": "midline fit failed; hemispheres split at the centre of mass",
    "roi_registration_poor": "the screenshot ROI registered poorly onto the maps",
    "colour_decoding_poor": "many map pixels did not match the colour bar",
    "aif_curve_flat": "the AIF curve shows no clear bolus",
    "vof_curve_flat": "the VOF curve shows no clear bolus",
    "vof_peaks_before_aif": "the VOF peaks before the AIF (check the curves)",
    "bilateral_hypoperfusion": "hypoperfusion in both hemispheres; rCBF reference from normal-Tmax tissue anywhere",
    "posterior_circulation": "posterior-circulation hypoperfusion; no hemisphere comparison",
    "rcbf_reference_too_small": "too little normal tissue for the rCBF reference; core and mismatch undefined",
    "core_noise_limited": "contrast-to-noise ratio (qa_values.contrast_to_noise) too low to measure the core; "
                          "core, penumbra, mismatch and trial labels undefined",
    "core_truncated": "acquisition ends too soon after the lesion peaks (qa_values.lesion_observed_after_peak_s) to "
                      "measure the core; core, penumbra, mismatch and trial labels undefined",
    "hir_truncated": "acquisition ends too soon after the lesion peaks to measure long Tmax; Tmax >= 8 / 10 s "
                     "volumes and HIR undefined",
    "global_tmax_delay": "normal tissue reads Tmax near the threshold (qa_values.normal_tissue_tmax_s): a global "
                         "bolus delay; Tmax volumes, mismatch, HIR and trial labels undefined",
    "cbv_truncated": "acquisition ends too soon after the lesion peaks for its curves to return "
                     "(qa_values.lesion_observed_after_peak_s); CBV indices undefined",
    "lesion_beyond_coverage": "the lesion reaches the first or last slice: volumes are those inside the slab "
                              "(qa_values.coverage_mm), lower bounds",
    "lesion_unmeasured": "no lesion index measurable (qa_values.lesion_unmeasured_reason: too little bolus contrast "
                         "against the image noise, an arterial input still high at the end of the acquisition, or "
                         "lesion curves cut too soon after their peak); every lesion index undefined",
}

#: Flags that withhold or qualify reported numbers, most consequential first: where room is short they are listed
#: before the others (which only make a number less certain or describe the input).
PRIORITY_FLAGS = ("lesion_unmeasured", "core_noise_limited", "core_truncated", "global_tmax_delay", "hir_truncated",
                  "cbv_truncated", "rcbf_reference_too_small", "lesion_beyond_coverage", "bilateral_hypoperfusion",
                  "posterior_circulation")

#: Default length (characters) of a shortened reason: what fits after "n/a (" on one line of a number card.
SHORT_REASON_CHARS = 40
ELLIPSIS = "\u2026"

#: Words a shortened text should not end on (it would read as cut off mid-phrase).
_DANGLING = frozenset("a an the of to and or with by for in at on from after before than its is are as but "
                      "so that which when while into".split())
#: Long phrases of the analysis reasons and their short equivalents (applied before shortening).
_PHRASES = (
    ("the hypoperfused tissue's median time to peak", "lesion peak"),
)
_PAREN = re.compile(r"\s*\([^()]*\)")


def strip_parentheses(text: str) -> str:
    """``text`` without its parenthesised asides (setting names such as "(thresholds.x)"), nested ones included."""
    previous = None
    while previous != text:
        previous, text = text, _PAREN.sub("", text)
    return " ".join(text.split())


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word boundary to at most ``limit`` characters, "…" marking a cut; never mid-word.

    A cut does not end on a dangling word ("the", "of", "after", ...) nor on punctuation.  When not even the first
    word fits, the result is "" (the caller then shows only what it has room for, e.g. "n/a").
    """
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    words = text.split(" ")
    kept: list[str] = []
    for word in words:
        if len(" ".join(kept + [word])) + len(ELLIPSIS) > limit:
            break
        kept.append(word)
    while kept and (kept[-1].lower().strip(",;:") in _DANGLING or not kept[-1].strip(",;:.-")):
        kept.pop()
    if not kept:
        return ""
    return _end_at_clause(" ".join(kept)).rstrip(",;:.-") + ELLIPSIS


def _end_at_clause(cut: str, min_tail: int = 18) -> str:
    """Drop a short clause fragment left at the end of a cut ("...reference; core" -> "...reference")."""
    ends = [m.start() for m in re.finditer(r"[;:] ", cut)]
    if ends and len(cut) - ends[-1] < min_tail:
        return cut[:ends[-1]]
    return cut


def _first_clause(text: str) -> str:
    return re.split(r"[;,]\s|\s-\s", text, maxsplit=1)[0].strip()


def short_reason(reason: str | None, limit: int = SHORT_REASON_CHARS) -> str:
    """A reason of a null metric shortened to fit ``limit`` characters, for a page that has no room for all of it.

    The reason's leading label (the text before its first ':', e.g. "global bolus delay") when it fits; otherwise
    the first clause, cut at a word boundary.  Parenthesised asides (setting names) are dropped first.
    """
    if not reason:
        return ""
    text = " ".join(str(reason).split())
    for long, short in _PHRASES:
        text = text.replace(long, short)
    text = strip_parentheses(text)
    label = text.split(":", 1)[0].strip() if ":" in text else ""
    if label and len(label) <= limit:
        return label
    return shorten(_first_clause(label or text), limit)


def flag_meaning(flag: str, limit: int | None = None) -> str:
    """The one-line meaning of QA flag ``flag`` (without setting names), shortened to ``limit`` characters; a flag
    without a meaning here reads "see metrics.json"."""
    text = strip_parentheses(QA_FLAG_TEXT[flag]) if flag in QA_FLAG_TEXT else "see metrics.json"
    return text if limit is None else shorten(text, limit)


def reason_notes(reasons: list[str]) -> tuple[list[str], list[str]]:
    """The marks and notes of the distinct reasons of missing values that a table or legend writes once under itself
    (in the order given): one reason marks its values "n/a" and notes "n/a: <reason>"; several mark them "n/a (1)",
    "n/a (2)" ... and note "(1) <reason>", ...  Returns (the mark to append to "n/a" for each reason, the notes)."""
    if len(reasons) == 1:
        return [""], [f"n/a: {reasons[0]}"]
    return [f" ({i})" for i in range(1, len(reasons) + 1)], [f"({i}) {why}" for i, why in enumerate(reasons, 1)]


#: A QA value named in a text: "(qa_values.name)" (group 1) or a bare "qa_values.name" (group 2).
_QA_FIELD = re.compile(r"\(qa_values\.(\w+)\)|qa_values\.(\w+)")
#: Units of the QA values, by the end of their name (the naming rule of ``qa_values``); others have none.
_QA_UNITS = (("_hu", "HU"), ("_mm", "mm"), ("_ml", "mL"), ("_pct", "%"), ("_s", "s"))


def qa_value_text(name: str, value) -> str | None:
    """The number ``value`` of ``qa_values.<name>`` as a reader would write it, with its unit when the name gives
    one ("0.72 s", "40 mm", "12.9"); None when it is not a finite number (missing, a reason text, a flag)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        return None
    size = abs(value)
    number = f"{value:.0f}" if size >= 100 else f"{value:.3g}" if size >= 1 else f"{value:.2g}"
    unit = next((u for end, u in _QA_UNITS if name.endswith(end)), "")
    return f"{number} {unit}" if unit else number


def with_values(text: str, qa_values: dict | None) -> str:
    """``text`` with the number beside each ``qa_values.<name>`` it names, for a reader who has the study's values
    at hand (the terminal): "uncertain by qa_values.tmax_dispersion_sd_s" reads "uncertain by 0.72 s
    (qa_values.tmax_dispersion_sd_s)", "the slab (qa_values.coverage_mm)" reads "the slab (40 mm,
    qa_values.coverage_mm)".  The name stays, so the value can be found in metrics.json; names without a numeric
    value (reasons, missing values) are left as they are.  :data:`QA_FLAG_TEXT` itself keeps only the names: the
    figures and the PDF print it without a study's values."""
    if not qa_values:
        return text

    def shown(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        value = qa_value_text(name, qa_values.get(name))
        if value is None:
            return match.group(0)
        return f"({value}, qa_values.{name})" if match.group(1) else f"{value} (qa_values.{name})"

    return _QA_FIELD.sub(shown, text)


def flag_text(flag: str, qa_values: dict | None = None) -> str:
    """The full meaning of QA flag ``flag`` with the study's values beside the QA values it names
    (:func:`with_values`); "raised" for a flag without a meaning here."""
    return with_values(QA_FLAG_TEXT[flag], qa_values) if flag in QA_FLAG_TEXT else "raised"


def by_priority(flags: list[str]) -> list[str]:
    """``flags`` with the :data:`PRIORITY_FLAGS` first (in that order), the others after them in their own order."""
    rank = {name: i for i, name in enumerate(PRIORITY_FLAGS)}
    return sorted(flags, key=lambda k: rank.get(k, len(rank)))
