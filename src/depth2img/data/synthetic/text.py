"""Caption helpers: turn object lists into short English phrases."""

from __future__ import annotations

NUMBER_WORDS = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def count_phrase(n: int, noun: str, plural: str | None = None) -> str:
    """``count_phrase(2, "tree") == "two trees"``; numbers above nine stay digits."""
    word = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
    if n == 1:
        return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
    if plural is None:
        plural = noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")
    return f"{word} {plural}"


def join_phrases(parts: list[str]) -> str:
    """``["a", "b", "c"] -> "a, b and c"``."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_counts(items: list[tuple[str, str]]) -> str:
    """Group ``(adjective, noun)`` pairs in first-seen order: "a red box and two blue spheres"."""
    counts: dict[tuple[str, str], int] = {}
    for key in items:
        counts[key] = counts.get(key, 0) + 1
    parts = []
    for (adj, noun), n in counts.items():
        parts.append(count_phrase(n, f"{adj} {noun}" if adj else noun, None))
    return join_phrases(parts)
