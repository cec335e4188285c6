"""A fixed English text for perplexity, taken from Python's own docs so no download is needed."""

from __future__ import annotations

TOPICS = ("assignment", "class", "exceptions", "function", "naming", "numbers", "sequence-types", "typesseq")


def reference_text(chars: int = 12000) -> str:
    """Prose from `pydoc_data.topics` (the language reference), the same on every Python 3.11."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[name] for name in TOPICS if name in topics)
    return text[:chars]
