"""Example captions for the demo page, made only of a model's own words."""

from __future__ import annotations

import re

from t2i.data.text import END_TOKEN, UNK_TOKEN, tokenize

COLOUR_WORDS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "grey", "gray", "black",
                "white", "buff", "olive", "rufous", "iridescent")
PART_WORDS = ("crown", "belly", "breast", "tail", "head", "beak", "bill", "back", "throat", "chest", "nape", "wing")
TEMPLATES = ("this bird has a {c0} crown, {c1} wings and a {c2} belly",
             "a small bird with a {c0} {p0} and a {c1} {p1}",  # "a orange" becomes "an orange"
             "this is a {c0} bird with {c1} wings",
             "a bird with a {c0} {p0}",
             "{c0} {p0} bird")


def example_captions(vocab, n: int = 6) -> list[str]:
    """Example captions made only of the model's words: bird templates filled with its colour and part words.

    A vocabulary without them (COCO, a tiny test model) gets captions of its most frequent words.
    """
    words = [w for w in vocab.itos if w not in (END_TOKEN, UNK_TOKEN)]
    known = set(words)
    colours = [c for c in COLOUR_WORDS if c in known]
    parts = [p for p in PART_WORDS if p in known]
    examples: list[str] = []
    if colours and parts:
        for k in range(n * len(TEMPLATES)):
            template = TEMPLATES[k % len(TEMPLATES)]
            fill = {f"c{i}": colours[(k + 3 * i + k // len(TEMPLATES)) % len(colours)] for i in range(3)}
            fill |= {f"p{i}": parts[(k + i) % len(parts)] for i in range(3)}
            text = re.sub(r"\ba ([aeiou])", r"an \1", template.format(**fill))
            if all(t in known for t in tokenize(text)) and text not in examples:
                examples.append(text)
            if len(examples) == n:
                break
    if not examples:
        common = [w for w, _ in vocab.most_common() if w in known] or words
        for k in range(min(n, max(1, len(common) // 3))):
            examples.append(" ".join(common[3 * k: 3 * k + 4] or common[:4]))
    return examples
