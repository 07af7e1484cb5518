"""Make ``run_ner.py`` here: transformers' token-classification example with ``run_ner.diff`` applied.

The project does not ship transformers' script; this downloads it at a pinned commit (or reads a copy you have,
``--original``), checks it is the file the diff was written against, and applies the diff (``Trainer`` swapped for
``hf_compress.CompressionTrainer``, a ``--recipe`` argument)::

    python make_run_ner.py                        # downloads from GitHub
    python make_run_ner.py --original ~/transformers/examples/pytorch/token-classification/run_ner.py
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMIT = "049d2bf1220747b6d39e2a978b9f5fe0defa1dca"  # transformers main, the run_ner.py of transformers 5.8
URL = f"https://raw.githubusercontent.com/huggingface/transformers/{COMMIT}/examples/pytorch/token-classification/run_ner.py"
SHA256 = "ccbd1fed0c5c612690dbe356e24d7c977a70820c1262e24e07ac9e664a88774b"
HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


class PatchError(ValueError):
    """The diff does not apply to the given file."""


def apply_unified_diff(original: str, diff: str) -> str:
    """Apply a one-file unified diff: each hunk's context and removed lines must appear exactly (at the stated line
    or, if the file moved, at the nearest place they do)."""
    lines = original.splitlines(keepends=True)
    hunks: list[tuple[int, list[str], list[str]]] = []
    for line in diff.splitlines():
        if match := HUNK.match(line):
            hunks.append((int(match.group(1)) - 1, [], []))
        elif hunks and line[:1] in (" ", "-", "+", ""):
            _, old, new = hunks[-1]
            text = line[1:] + "\n"
            if line[:1] != "+":
                old.append(text)
            if line[:1] != "-":
                new.append(text)
    if not hunks:
        raise PatchError("the diff has no hunks")
    shift = 0
    for start, old, new in hunks:
        places = [i for i in range(len(lines) - len(old) + 1) if lines[i : i + len(old)] == old]
        if not places:
            raise PatchError(f"hunk at line {start + 1} does not match: {''.join(old).strip()[:80]!r}")
        at = min(places, key=lambda i: abs(i - (start + shift)))
        lines[at : at + len(old)] = new
        shift += len(new) - len(old)
    return "".join(lines)


def read_original(path: str | None) -> str:
    if path:
        return Path(path).read_text(encoding="utf-8")
    with urllib.request.urlopen(URL, timeout=30) as response:  # noqa: S310 (a fixed https URL)
        return response.read().decode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--original", help="transformers' run_ner.py on disk (default: download it)")
    parser.add_argument("--output", default=str(HERE / "run_ner.py"), help="where to write the patched script")
    args = parser.parse_args(argv)
    try:
        original = read_original(args.original)
    except (OSError, UnicodeDecodeError) as error:  # urllib's URLError is an OSError
        print(f"error: cannot read transformers' run_ner.py ({args.original or URL}): {error}", file=sys.stderr)
        print("download it where you have a network and pass it with --original", file=sys.stderr)
        return 1
    if hashlib.sha256(original.encode("utf-8")).hexdigest() != SHA256:
        print(
            f"note: this run_ner.py is not the one of commit {COMMIT[:10]}; applying the diff anyway", file=sys.stderr
        )
    try:
        patched = apply_unified_diff(original, (HERE / "run_ner.diff").read_text(encoding="utf-8"))
    except PatchError as error:
        print(f"error: run_ner.diff does not apply: {error}", file=sys.stderr)
        return 1
    Path(args.output).write_text(patched, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
