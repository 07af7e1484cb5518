#!/usr/bin/env python
"""Convert CoNLL files to the JSON lines ``run_ner.py`` reads: one ``{"tokens": [...], "ner_tags": [...]}`` per
sentence, tags as names.

    python conll_to_json.py ../data/conll-sample/train.txt train.json
"""

import json
import sys

from hf_compress.tasks import read_conll


def convert(conll_file: str, json_file: str) -> int:
    """Write ``json_file`` from ``conll_file``; return the number of sentences."""
    sentences = read_conll(conll_file)
    with open(json_file, "w", encoding="utf-8") as out:
        for row in sentences:
            out.write(json.dumps({"tokens": row["tokens"], "ner_tags": row["ner_tags"]}) + "\n")
    return len(sentences)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} CONLL_FILE JSON_FILE")
    print(f"{convert(sys.argv[1], sys.argv[2])} sentences written to {sys.argv[2]}")
