"""Generate the project's NER sample: synthetic news-style sentences in CoNLL-2003 format.

The sample exists so that the quickstart and the tests run offline with data the project owns. It is not
CoNLL-2003 text: sentences come from templates filled with invented or very common names, so the file can be
shipped under the project's own license. What makes it a useful (if small) NER task:

* four entity types (PER, ORG, LOC, MISC) with IOB2 tags, multi-token entities, several per sentence;
* ambiguous surface forms whose type depends on context ("Jordan" the person or the country, "Ford" the
  person or the company, "Washington" the person or the place);
* about 30% of the validation entities never occur in the training file, so a model must generalise from
  context and word shape rather than memorise names.

Columns are ``word POS chunk NER`` like the CoNLL-2003 files; POS and chunk tags are coarse but consistent.

    python examples/data/make_conll_sample.py --output_dir examples/data/conll-sample

The output is deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

FIRST = [
    "Anna",
    "Marek",
    "Sofia",
    "Daniel",
    "Yuki",
    "Omar",
    "Lena",
    "Pedro",
    "Ingrid",
    "Kwame",
    "Elena",
    "Tomas",
    "Priya",
    "Hugo",
    "Mei",
    "Felix",
    "Amara",
    "Jonas",
    "Carla",
    "Ivan",
    "Nadia",
    "Rui",
    "Greta",
    "Samir",
    "Lucia",
    "Anders",
    "Fatima",
    "Milo",
    "Chen",
    "Olga",
    "Rafael",
    "Hana",
    "Emil",
    "Zara",
    "Pablo",
    "Irene",
]
LAST = [
    "Kowalski",
    "Brandt",
    "Moreau",
    "Okafor",
    "Tanaka",
    "Haddad",
    "Lindqvist",
    "Santos",
    "Novak",
    "Mensah",
    "Petrov",
    "Silva",
    "Ferreira",
    "Nakamura",
    "Jensen",
    "Rossi",
    "Dubois",
    "Keller",
    "Varga",
    "Costa",
    "Horvat",
    "Larsen",
    "Mendes",
    "Schulz",
    "Adeyemi",
    "Popescu",
    "Marin",
    "Berg",
    "Quinn",
    "Albers",
    "Duarte",
    "Falk",
    "Ibsen",
    "Kaur",
    "Lund",
    "Ortega",
]
ORG = [
    "Norbank",
    "Valtec Industries",
    "Orion Motors",
    "Helix Pharma",
    "the Baltic Shipping Company",
    "Kestrel Air",
    "Union Steel",
    "Meridian Group",
    "Polar Energy",
    "Atlas Insurance",
    "Greenfield Foods",
    "Cobalt Mining",
    "the Central Bank",
    "Redwood Capital",
    "Vega Telecom",
    "Summit Rail",
    "Northwind Media",
    "Ardent Chemicals",
    "FC Riverton",
    "Lakeside United",
    "Port Vale Rovers",
    "Castlebury City",
    "the Finance Ministry",
    "the National Olympic Committee",
    "Sterling Brewers",
    "Quantum Software",
    "Ironbridge Holdings",
    "Blue Harbour Airlines",
    "the Trade Council",
    "Solano Textiles",
]
LOC = [
    "Veldoria",
    "Port Amsel",
    "Karsten",
    "Lake Imra",
    "New Halden",
    "the Oren Valley",
    "Brisca",
    "Talmont",
    "Estavia",
    "North Caledon",
    "Rivermouth",
    "Mount Sarel",
    "Dunmore",
    "Castrela",
    "West Ardel",
    "Ostrava",
    "Marseille",
    "Nairobi",
    "Osaka",
    "Lisbon",
    "Toronto",
    "Krakow",
    "Valencia",
    "Helsinki",
    "Porto",
    "Accra",
    "Geneva",
    "Seville",
    "Bergen",
    "Tunis",
]
MISC = [
    "Veldorian",
    "Estavian",
    "Brazilian",
    "Japanese",
    "Norwegian",
    "Kenyan",
    "Portuguese",
    "Polish",
    "Canadian",
    "Finnish",
    "Olympic",
    "Euro",
    "Caledonian",
    "Talmontese",
    "World Cup",
    "Open Championship",
    "Spanish",
    "Ghanaian",
    "Swiss",
    "Tunisian",
]
# (surface form, type, contexts it appears in): the same words tagged by context.
AMBIGUOUS = {
    "PER": ["Jordan", "Ford", "Washington", "Paris Hilton", "Chelsea Park"],
    "LOC": ["Jordan", "Washington", "Paris", "Chelsea"],
    "ORG": ["Ford", "Chelsea", "Paris Saint Germain"],
}

POS = {
    "said": "VBD",
    "on": "IN",
    "in": "IN",
    "the": "DT",
    "a": "DT",
    "of": "IN",
    "to": "TO",
    "and": "CC",
    "with": "IN",
    "after": "IN",
    "for": "IN",
    "at": "IN",
    "by": "IN",
    "from": "IN",
    ".": ".",
    ",": ",",
    "'s": "POS",
    "its": "PRP$",
    "his": "PRP$",
    "her": "PRP$",
    "would": "MD",
    "will": "MD",
    "has": "VBZ",
    "had": "VBD",
    "was": "VBD",
    "is": "VBZ",
    "that": "IN",
    "than": "IN",
    "more": "JJR",
    "percent": "NN",
}

# Templates: {PER} {ORG} {LOC} {MISC} slots; other tokens are plain words.
TEMPLATES = [
    "{PER} said on Tuesday that {ORG} would cut 300 jobs in {LOC} .",
    "{ORG} shares rose 4 percent in {LOC} after the company reported higher profits .",
    "{PER} , a spokesman for {ORG} , declined to comment .",
    "The {MISC} government will hold talks with {ORG} in {LOC} next week .",
    "{PER} beat {PER} 6-3 6-4 in the final of the {MISC} Open in {LOC} .",
    "{ORG} signed a supply deal with {ORG} worth 40 million dollars .",
    "Police in {LOC} arrested two men after a raid on Sunday , {PER} told reporters .",
    "{PER} scored twice as {ORG} beat {ORG} 3-1 in {LOC} .",
    "Talks between {LOC} and {LOC} ended without agreement on Friday .",
    "{MISC} exports fell 8 percent in March , the statistics office in {LOC} said .",
    "{PER} , who joined {ORG} in 1994 , will become chief executive .",
    "The {MISC} team arrived in {LOC} on Monday for the qualifier .",
    "{ORG} said its chairman {PER} had resigned .",
    "Floods in the north of {LOC} forced thousands from their homes .",
    "{PER} met {PER} in {LOC} to discuss the {MISC} election .",
    "Analysts at {ORG} expect the {MISC} economy to grow 2 percent .",
    "{PER} of {LOC} won the men 's 100 metres at the {MISC} Games .",
    "A court in {LOC} fined {ORG} for breaking competition rules .",
    "{ORG} will open a new plant near {LOC} , {PER} said .",
    "Prices in {LOC} rose more than expected , according to {ORG} .",
]
AMBIGUOUS_TEMPLATES = [
    ("{X} said the team would fight on after the defeat .", "PER"),
    ("Troops crossed into {X} on Thursday , officials said .", "LOC"),
    ("{X} shares fell after the carmaker cut its forecast .", "ORG"),
    ("Coach {X} praised the young players .", "PER"),
    ("The talks in {X} lasted three days .", "LOC"),
    ("{X} signed the midfielder on a two-year contract .", "ORG"),
]


def _person(rng: random.Random, first: list[str], last: list[str]) -> list[str]:
    return [rng.choice(first), rng.choice(last)] if rng.random() < 0.8 else [rng.choice(last)]


def _tagged(words: list[str], label: str) -> list[tuple[str, str, str, str]]:
    """Words of one entity with IOB2 tags; a leading lowercase 'the' is outside the entity as in CoNLL."""
    rows = []
    inside = False
    for word in words:
        if word == "the" and not inside:
            rows.append((word, "DT", "B-NP", "O"))
            continue
        pos = "NNPS" if word.endswith("s") and word[0].isupper() and len(word) > 3 else "NNP"
        if label == "MISC" and word.endswith(("an", "ese", "ish", "ic")):
            pos = "JJ"
        rows.append((word, pos, "I-NP" if inside else "B-NP", ("I-" if inside else "B-") + label))
        inside = True
    return rows


def _plain(word: str) -> tuple[str, str, str, str]:
    if word in POS:
        pos = POS[word]
    elif word[0].isdigit():
        pos = "CD"
    elif word[0].isupper():
        pos = (
            "NNP"
            if word not in {"The", "A", "Police", "Talks", "Floods", "Prices", "Analysts", "Troops", "Coach"}
            else "DT"
            if word in {"The", "A"}
            else "NNS"
        )
    elif word.endswith("ed"):
        pos = "VBD"
    elif word.endswith("s"):
        pos = "NNS"
    else:
        pos = "NN"
    if pos in {".", ","}:
        chunk = "O"
    elif pos in {"IN", "TO"}:
        chunk = "B-PP"
    else:
        chunk = "B-VP" if pos.startswith("VB") or pos == "MD" else "B-NP"
    return (word, pos, chunk, "O")


class _Pools:
    """Entity pools; validation may draw from names held out of training."""

    def __init__(self, rng: random.Random, holdout: float):
        def split(names: list[str]) -> tuple[list[str], list[str]]:
            names = sorted(names)
            rng.shuffle(names)
            k = max(1, round(len(names) * holdout))
            return names[k:], names[:k]

        self.first, self.first_new = split(FIRST)
        self.last, self.last_new = split(LAST)
        self.org, self.org_new = split(ORG)
        self.loc, self.loc_new = split(LOC)
        self.misc, self.misc_new = split(MISC)

    def entity(self, rng: random.Random, label: str, unseen: bool) -> list[str]:
        if label == "PER":
            return _person(rng, self.first_new if unseen else self.first, self.last_new if unseen else self.last)
        pool = {"ORG": (self.org, self.org_new), "LOC": (self.loc, self.loc_new), "MISC": (self.misc, self.misc_new)}[
            label
        ][1 if unseen else 0]
        return rng.choice(pool).split()


def sentence(rng: random.Random, pools: _Pools, unseen_rate: float) -> list[tuple[str, str, str, str]]:
    if rng.random() < 0.15:
        template, label = rng.choice(AMBIGUOUS_TEMPLATES)
        words = rng.choice(AMBIGUOUS[label]).split()
        rows: list[tuple[str, str, str, str]] = []
        for token in template.split():
            rows.extend(_tagged(words, label) if token == "{X}" else [_plain(token)])
        return rows
    rows = []
    for token in rng.choice(TEMPLATES).split():
        if token.startswith("{") and token.endswith("}"):
            label = token[1:-1]
            rows.extend(_tagged(pools.entity(rng, label, rng.random() < unseen_rate), label))
        else:
            rows.append(_plain(token))
    return rows


def write_conll(path: Path, sentences: list[list[tuple[str, str, str, str]]]) -> None:
    lines = ["-DOCSTART- -X- -X- O", ""]
    for rows in sentences:
        lines.extend(" ".join(row) for row in rows)
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", type=Path, default=Path(__file__).parent / "conll-sample")
    parser.add_argument("--train_sentences", type=int, default=1200)
    parser.add_argument("--validation_sentences", type=int, default=300)
    parser.add_argument(
        "--unseen_rate",
        type=float,
        default=0.3,
        help="fraction of validation entities drawn from names absent from training",
    )
    parser.add_argument("--seed", type=int, default=2003)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pools = _Pools(rng, holdout=0.3)
    train = [sentence(rng, pools, 0.0) for _ in range(args.train_sentences)]
    valid = [sentence(rng, pools, args.unseen_rate) for _ in range(args.validation_sentences)]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_conll(args.output_dir / "train.txt", train)
    write_conll(args.output_dir / "valid.txt", valid)
    print(f"wrote {len(train)} training and {len(valid)} validation sentences to {args.output_dir}")


if __name__ == "__main__":
    main()
