"""A module of plain functions to deploy as named functions (see README)."""


def word_count(text: str) -> dict[str, int]:
    """Count the words of ``text``, most frequent first."""
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))
