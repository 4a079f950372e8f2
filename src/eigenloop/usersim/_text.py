"""Small, deterministic text helpers shared by the validity checker and the procedural user.

Nothing here is clever: sentence splitting that keeps decimals and ids whole, a lower-cased tokenizer with a
crude stemmer, prefix-tolerant token matching, and a second-to-first person rewrite of scenario sentences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9#$])")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "Mr.", "Mrs.", "Ms.", "Dr.", "No.", "St.", "Apt.")
_TOKEN = re.compile(r"[a-z0-9]+")

STOPWORDS = frozenset(
    """
    a an the and or but if then than so to of in on off at by for from with without into onto over under up down
    out about as is are was were be been being am it its it's this that these those there here your you my me i we
    our us they them their he she his her him what which who whom whose when where why how whether while do does
    did done doing have has had having can could would should shall will may might must not no yes please
    just also now again once more very some any all each every other same own too only really still yet
    tell let know thanks thank okay ok hi hello sure
    """.split()  # noqa: SIM905 - a word list reads better as text
)

# Words that mean the same thing for matching purposes (left side is rewritten to the right side).
_SYNONYMS = {
    "phone": "device",
    "handset": "device",
    "restart": "reboot",
    "wifi": "wifi",
    "mms": "mms",
    "picture": "picture",
}


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`; decimals ("4.2 GB"), ids and common abbreviations stay inside one sentence."""
    protected = text
    for i, abbr in enumerate(_ABBREVIATIONS):
        protected = protected.replace(abbr, f"\x00{i}\x00")
    out: list[str] = []
    for line in protected.splitlines():
        for part in _SENTENCE_END.split(line):
            part = part.strip()
            if not part:
                continue
            for i, abbr in enumerate(_ABBREVIATIONS):
                part = part.replace(f"\x00{i}\x00", abbr)
            out.append(part)
    return out


def normalize(text: str) -> str:
    lowered = text.lower().replace("wi-fi", "wifi").replace("e-mail", "email")
    return lowered.replace("’", "'")  # noqa: RUF001 - typographic apostrophes from LLM text


def stem(token: str) -> str:
    """A crude suffix stripper: good enough to match "settings"/"setting", "sending"/"send", "apps"/"app"."""
    token = _SYNONYMS.get(token, token)
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 5 and token.endswith("ing"):
        return token[:-3]
    if len(token) > 4 and token.endswith("ed") and not token.endswith("eed"):
        return token[:-2]
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words, unstemmed."""
    return _TOKEN.findall(normalize(text))


def content_tokens(text: str) -> list[str]:
    """Stemmed words of `text` without stopwords, in order."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def tokens_match(a: str, b: str) -> bool:
    """Equal, or one a prefix (of at least 4 letters) of the other: "prefer"/"preference", "enabl"/"enable"."""
    if a == b:
        return True
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return len(short) >= 4 and long_.startswith(short)


def matches_any(token: str, candidates: Iterable[str]) -> bool:
    return any(tokens_match(token, c) for c in candidates)


def overlap(query: Sequence[str], target: Sequence[str]) -> int:
    """How many distinct tokens of `target` some token of `query` matches."""
    return sum(1 for t in set(target) if matches_any(t, query))


# Second person (scenario text, written to the simulated user) to first person (what the user says).
_PERSON_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\byou are\b", re.I), "I am"),
    (re.compile(r"\byou're\b", re.I), "I'm"),
    (re.compile(r"\byou were\b", re.I), "I was"),
    (re.compile(r"\byou've\b", re.I), "I've"),
    (re.compile(r"\byou'd\b", re.I), "I'd"),
    (re.compile(r"\byou'll\b", re.I), "I'll"),
    (re.compile(r"\byourself\b", re.I), "myself"),
    (re.compile(r"\byours\b", re.I), "mine"),
    (re.compile(r"\byour\b", re.I), "my"),
    # "you" as an object: after a preposition or a verb that takes one.
    (
        re.compile(
            r"\b(to|for|with|at|from|about|tell|give|ask|call|help|let|send|sent|contact|email|show|told|gave)\s+you\b",
            re.I,
        ),
        r"\1 me",
    ),
    (re.compile(r"\byou\b", re.I), "I"),
]


def to_first_person(text: str) -> str:
    """'You want to cancel your order' -> 'I want to cancel my order' (a scenario sentence, said by the user)."""
    out = text
    for pattern, replacement in _PERSON_RULES:

        def substitute(match: re.Match[str], replacement: str = replacement) -> str:
            return _keep_case(match, replacement)

        out = pattern.sub(substitute, out)
    return out[:1].upper() + out[1:] if out else out


def _keep_case(match: re.Match[str], replacement: str) -> str:
    expanded = match.expand(replacement)
    # "I" is always capitalised; otherwise follow the case of the first letter replaced.
    if expanded.startswith(("I ", "I'")) or expanded == "I":
        return expanded
    if match.group(0)[:1].isupper():
        return expanded[:1].upper() + expanded[1:]
    return expanded


def ensure_period(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else text + "."


def flatten(text: str, limit: int = 600) -> str:
    """One line: newlines become '; ', long text is cut with an ellipsis."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    one_line = " ".join(
        line if line[-1] in ".!?;:" or i == len(lines) - 1 else line + ";" for i, line in enumerate(lines)
    )
    return one_line if len(one_line) <= limit else one_line[: limit - 1].rstrip() + "…"
