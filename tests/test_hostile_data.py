"""Fuzzed data files: small valid CoNLL, JSON lines and CSV files with bytes, lines and cells mutated, read as
``hf-compress train`` (and ``train --check``) reads them. Each must load, or be refused with one line naming the file;
a file that loads must also tokenize with its labels. No other exception may escape.

Examples run (derandomized): :data:`EXAMPLES` per format, 100 unless ``HF_COMPRESS_FUZZ_EXAMPLES`` says more.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_compress.cli import main as cli_main
from hf_compress.configs import DataConfig
from hf_compress.tasks import load_task_data

CONLL = b"""-DOCSTART- -X- -X- O

John NNP B-NP B-PER
Smith NNP I-NP I-PER
said VBD B-VP O
in IN B-PP O
Paris NNP B-NP B-LOC
. . O O

The DT B-NP O
European NNP I-NP B-ORG
Commission NNP I-NP I-ORG
met VBD B-VP O
"""
NER_ROWS = [
    {"tokens": ["John", "Smith", "said", "in", "Paris", "."], "ner_tags": ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]},
    {"tokens": ["The", "European", "Commission", "met"], "ner_tags": ["O", "B-ORG", "I-ORG", "O"]},
    {"tokens": ["Germany", "won"], "ner_tags": ["B-LOC", "O"]},
]
CLS_ROWS = [
    {"text": "a good movie", "label": "positive"},
    {"text": "an awful film", "label": "negative"},
    {"text": "great world cup", "label": "positive"},
    {"text": "bad bank", "label": "negative"},
]
NER_JSONL = "".join(json.dumps(row) + "\n" for row in NER_ROWS).encode()
CLS_JSONL = "".join(json.dumps(row) + "\n" for row in CLS_ROWS).encode()
CLS_CSV = ("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in CLS_ROWS)).encode()

#: (task, file extension, valid content, cell separator) per format.
FORMATS = {
    "conll": ("ner", ".txt", CONLL, b" "),
    "ner-jsonl": ("ner", ".jsonl", NER_JSONL, b","),
    "cls-csv": ("text-classification", ".csv", CLS_CSV, b","),
    "cls-jsonl": ("text-classification", ".jsonl", CLS_JSONL, b","),
}
EXAMPLES = int(os.environ.get("HF_COMPRESS_FUZZ_EXAMPLES", "100"))
OUTCOMES: Counter = Counter()

_cells = [
    "",
    " ",
    "O",
    "B-",
    "I-PER",
    "E-LOC",
    "S-PER",
    "B-per",
    "-DOCSTART-",
    "null",
    "NaN",
    "[]",
    "{}",
    "3",
    "-1",
    '"',
    '""',
    "\\",
    "\t",
    ",",
    "\x00",
    "\u00e9",
    "\ufeff",
    '["O"]',
    '{"tokens": 1}',
    "positive",
    "1e400",
]
CELLS = st.sampled_from(_cells) | st.text(max_size=6)
BYTES = st.sampled_from(
    [b"\x00", b"\xff", b"\xc3", b"\r", b"\t", b'"', b",", b"{", b"]", b"\n", b" ", b"\xef\xbb\xbf"]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.sampled_from(_cells),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["tokens", "ner_tags", "x"]), inner),
    max_leaves=6,
)


@st.composite
def mutated(draw, content: bytes, separator: bytes, json_lines: bool) -> bytes:
    """``content`` with one to four mutations of its bytes, lines or cells."""
    data = content
    for _ in range(draw(st.integers(1, 4))):
        lines = data.split(b"\n")
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        operation = draw(
            st.sampled_from(["bytes", "delete", "truncate", "drop", "repeat", "swap", "line", "cell", "cell", "value"])
        )
        if operation == "bytes":
            position = draw(st.integers(0, len(data)))
            data = (
                data[:position] + b"".join(draw(st.lists(BYTES | st.binary(max_size=3), max_size=3))) + data[position:]
            )
        elif operation == "delete" and data:
            start = draw(st.integers(0, len(data) - 1))
            data = data[:start] + data[start + draw(st.integers(1, 8)) :]
        elif operation == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif operation == "drop":
            data = b"\n".join(lines[:at] + lines[at + 1 :])
        elif operation == "repeat":
            data = b"\n".join(lines[: at + 1] + lines[at:])
        elif operation == "swap":
            other = draw(st.integers(0, max(len(lines) - 1, 0)))
            lines[at], lines[other] = lines[other], lines[at]
            data = b"\n".join(lines)
        elif operation == "line":
            lines.insert(at, draw(CELLS).encode("utf-8", "surrogatepass"))
            data = b"\n".join(lines)
        elif operation == "value" and json_lines:
            try:
                row = json.loads(lines[at])
            except ValueError:
                continue
            if isinstance(row, dict) and row:
                key = draw(st.sampled_from(sorted(row)))
                if draw(st.booleans()):
                    row[key] = draw(JSON_VALUES)
                else:
                    row[draw(st.sampled_from(["tokens", "ner_tags", "text", "label", "x"]))] = row.pop(key)
                lines[at] = json.dumps(row).encode()
                data = b"\n".join(lines)
        else:  # a cell replaced, added or removed
            cells = lines[at].split(separator)
            index = draw(st.integers(0, max(len(cells) - 1, 0)))
            action = draw(st.sampled_from(["replace", "add", "remove"]))
            if action == "remove" and len(cells) > 1:
                del cells[index]
            else:
                cell = draw(CELLS).encode("utf-8", "surrogatepass")
                cells[index : index + (action == "replace")] = [cell]
            lines[at] = separator.join(cells)
            data = b"\n".join(lines)
    return data


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hostile-data")


def check_file(kind: str, content: bytes, as_validation: bool, folder: Path, tokenizer) -> None:
    """Read a mutated file as training and ``--check`` read it; refusals are one line naming the file."""
    task_name, extension, clean, _ = FORMATS[kind]
    bad, good = folder / f"{kind}-bad{extension}", folder / f"{kind}-good{extension}"
    bad.write_bytes(content)
    good.write_bytes(clean)
    train, valid = (good, bad) if as_validation else (bad, good)
    data = DataConfig(task=task_name, train_file=str(train), validation_file=str(valid))
    try:
        task, raw, labels = load_task_data(data)
    except (ValueError, OSError) as error:
        message = str(error)
        assert "\n" not in message and 0 < len(message) < 1000, message
        assert str(bad) in message or str(good) in message, message
        OUTCOMES[kind, "refused"] += 1
        return
    assert labels and len(set(labels)) == len(labels)
    tokenized = task.preprocess(raw, tokenizer, {name: i for i, name in enumerate(labels)}, data)
    assert len(tokenized["train"]) == len(raw["train"]) and None not in tokenized["train"]["labels"]
    OUTCOMES[kind, "accepted"] += 1


def _fuzz(kind: str):
    _, _, content, separator = FORMATS[kind]

    @settings(
        max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(mutated(content, separator, kind.endswith("jsonl")), st.booleans())
    def test(folder, tokenizer, mutation, as_validation):
        check_file(kind, mutation, as_validation, folder, tokenizer)

    return test


test_fuzzed_conll_files = _fuzz("conll")
test_fuzzed_ner_json_lines = _fuzz("ner-jsonl")
test_fuzzed_classification_csv = _fuzz("cls-csv")
test_fuzzed_classification_json_lines = _fuzz("cls-jsonl")


def test_fuzz_counts():
    """Every format ran its examples (when the fuzz tests ran in this session), both outcomes among them."""
    for kind in FORMATS:
        total = OUTCOMES[kind, "accepted"] + OUTCOMES[kind, "refused"]
        if total:
            assert total >= EXAMPLES and OUTCOMES[kind, "accepted"] and OUTCOMES[kind, "refused"], (kind, OUTCOMES)
    print({f"{kind} {outcome}": n for (kind, outcome), n in sorted(OUTCOMES.items())})


def test_check_reads_the_data_files(tmp_path, capsys):
    (tmp_path / "train.txt").write_bytes(CONLL)
    (tmp_path / "valid.txt").write_bytes(CONLL.replace(b"I-ORG", b"I-PER"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump({"data": {"task": "ner", "train_file": "train.txt", "validation_file": "valid.txt"}})
    )
    with pytest.raises(SystemExit) as stop:
        cli_main(["train", str(recipe), "--output_dir", str(tmp_path / "out"), "--check"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"hf-compress: {tmp_path / 'valid.txt'}, line 12: 'I-PER' after 'B-ORG'")
