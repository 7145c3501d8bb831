#!/usr/bin/env python3
"""Picks bench/search.sh's queries from the word frequencies of a bulk export.

    bench/search_queries.py EXPORT_DIR QUERY_FILE EXPECTED_JSON [--per-class 20]

QUERY_FILE gets a twin, QUERY_FILE with `-pg` before its suffix, with the same queries as
PostgreSQL must spell them (only `rarest`'s differ, below).

EXPORT_DIR holds the export's NDJSON files (one record a line, as `GET /v1/records/{id}`
shows it). A record's words are those medledger's search indexes from its metadata:
maximal runs of `str.isalnum()` characters, lowercased, from the metadata's string values
(recursively; object keys are not words). A word's frequency is the number of records
holding it. The classes, written to QUERY_FILE as `<class>\t<words>` lines:

- rarest: PER_CLASS encounter numbers (the 7 digits of an `e-0007-1234567` value, in
  one record or a few): PostgreSQL's parser reads that value as `e`, `-0007` and
  `-1234567`, so its query is the number with its `-`;
- rare: PER_CLASS words each in 5 to 50 records (spread over that band); when the export
  has fewer, the band is widened upwards to the least frequent words above it, and
  EXPECTED_JSON says so (`widened`);
- common: the PER_CLASS most frequent words;
- two_terms: PER_CLASS pairs, a common word AND a word of medium frequency (in 0.1% to
  5% of the records, else the next most frequent after the common ones) that are both in
  at least one record.

Only words PostgreSQL's 'simple' text search parser reads the same way are picked: ASCII
letters only (its parser keeps digits with signs, dots and slashes: `1988-5` is `1988`
and `-5` there, `E11.9` one word) and never seen joined to another word by `.`, `/`, `@`
or `:` (host names, paths, e-mail addresses are one word there). EXPECTED_JSON holds each
query's number of matching records in the export (what a complete answer holds before
the page limit), so both systems' hits can be checked. Deterministic for one export.
"""
import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

WORD = re.compile(r"[^\W_]+")  # runs of str.isalnum() characters
ENCOUNTER = re.compile(r"^e-[0-9]{4}-([0-9]{7})$")
JOINERS = "./@:"


def strings(value):
    """The string values of a JSON value, recursively (object keys excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)


def joined(text, start, end):
    """Whether the word text[start:end] is joined to another by one of JOINERS."""
    before = start >= 2 and text[start - 1] in JOINERS and text[start - 2].isalnum()
    after = end + 1 < len(text) and text[end] in JOINERS and text[end + 1].isalnum()
    return before or after


def records(export_dir):
    """(words, unsafe words, encounter numbers) of every exported record with metadata,
    file by file."""
    files = sorted(Path(export_dir).glob("*.ndjson"))
    if not files:
        sys.exit(f"search_queries.py: no *.ndjson files in {export_dir}")
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                metadata = json.loads(line).get("metadata")
                if metadata is None:
                    yield None, None, None
                    continue
                words, unsafe, encounters = set(), set(), set()
                for text in strings(metadata):
                    m = ENCOUNTER.match(text)
                    if m:
                        encounters.add(m.group(1))
                    for m in WORD.finditer(text):
                        w = m.group().lower()
                        words.add(w)
                        if joined(text, m.start(), m.end()):
                            unsafe.add(w)
                yield words, unsafe, encounters


def spread(items, n):
    """n items evenly spread over a sorted list (all of them when it is short)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir")
    ap.add_argument("query_file")
    ap.add_argument("expected_json")
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--rare-min", type=int, default=5)
    ap.add_argument("--rare-max", type=int, default=50)
    a = ap.parse_args()
    n = a.per_class

    # Pass 1: each word's frequency, and the words PostgreSQL would read otherwise.
    df, unsafe, total, with_metadata = Counter(), set(), 0, 0
    encounter_df = Counter()
    for words, bad, encounters in records(a.export_dir):
        total += 1
        if words is None:
            continue
        with_metadata += 1
        df.update(words)
        unsafe |= bad
        encounter_df.update(encounters)
    eligible = {w for w in df if w.isascii() and w.isalpha() and w not in unsafe}
    by_freq = sorted(eligible, key=lambda w: (-df[w], w))
    if len(by_freq) < n + 2:
        sys.exit(f"search_queries.py: only {len(by_freq)} eligible words in {with_metadata} records")

    common = by_freq[:n]
    ascending = sorted((w for w in eligible if w not in common), key=lambda w: (df[w], w))
    band = [w for w in ascending if a.rare_min <= df[w] <= a.rare_max]
    rare = spread(band, n)
    widened = len(rare) < n
    if widened:
        above = [w for w in ascending if df[w] > a.rare_max]
        rare += above[: n - len(rare)]
        print(f"search_queries.py: only {len(band)} words in {a.rare_min}..{a.rare_max} records; "
              f"'rare' widened to {df[rare[0]]}..{df[rare[-1]]} records", file=sys.stderr)

    lo, hi = max(with_metadata // 1000, a.rare_max + 1), max(with_metadata // 20, 1)
    medium = [w for w in by_freq[n:] if lo <= df[w] <= hi and w not in rare]
    if len(medium) < n // 2:
        medium = [w for w in by_freq[n:] if w not in rare][: 5 * n]
    medium = spread(sorted(medium, key=lambda w: (df[w], w)), 10 * n)

    # Pass 2: how many records hold each (common, medium) pair.
    common_set, medium_set, both = set(common), set(medium), Counter()
    for words, _, _ in records(a.export_dir):
        if words is None:
            continue
        cs, ms = words & common_set, words & medium_set
        for c in cs:
            for m in ms:
                both[(c, m)] += 1
    # Each common word in turn takes a medium word it shares a record with; a common word
    # that shares none is passed over, so the rounds go on (3 at most) until n pairs.
    rng = random.Random(1)
    pairs = []
    for i in range(3 * n):
        if len(pairs) == n:
            break
        c = common[i % len(common)]
        choices = sorted(m for m in medium if both[(c, m)] > 0 and (c, m) not in pairs)
        if choices:
            pairs.append((c, rng.choice(choices)))
    if len(pairs) < n:
        print(f"search_queries.py: only {len(pairs)} two-word queries found", file=sys.stderr)

    # A number that is an encounter's wherever it appears (so both systems count the same
    # records).
    rarest = spread(sorted((w for w, n in encounter_df.items() if df[w] == n), key=lambda w: (df[w], w)), n)
    classes = {
        "rarest": [([w], df[w]) for w in rarest],
        "rare": [([w], df[w]) for w in rare],
        "common": [([w], df[w]) for w in common],
        "two_terms": [([c, m], both[(c, m)]) for c, m in pairs],
    }
    pg_spelling = lambda name, words: [f"-{w}" for w in words] if name == "rarest" else words
    query_file = Path(a.query_file)
    pg_file = query_file.with_name(f"{query_file.stem}-pg{query_file.suffix}")
    with open(query_file, "w", encoding="utf-8") as out, open(pg_file, "w", encoding="utf-8") as pg:
        for name, queries in classes.items():
            for words, _ in queries:
                out.write(f"{name}\t{' '.join(words)}\n")
                pg.write(f"{name}\t{' '.join(pg_spelling(name, words))}\n")
    expected = {
        "records": total,
        "records_with_metadata": with_metadata,
        "distinct_words": len(df),
        "eligible_words": len(eligible),
        "classes": {
            name: {
                "queries": [" ".join(w) for w, _ in queries],
                "pg_queries": [" ".join(pg_spelling(name, w)) for w, _ in queries],
                "matches": [m for _, m in queries],
                "matches_min": min((m for _, m in queries), default=0),
                "matches_max": max((m for _, m in queries), default=0),
                "widened": widened if name == "rare" else False,
            }
            for name, queries in classes.items()
        },
    }
    Path(a.expected_json).write_text(json.dumps(expected, indent=1) + "\n")
    for name, c in expected["classes"].items():
        print(f"search_queries.py: {name}: {len(c['queries'])} queries, each matching "
              f"{c['matches_min']:,} to {c['matches_max']:,} records", file=sys.stderr)


if __name__ == "__main__":
    main()
