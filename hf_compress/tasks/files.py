"""Local data files as ``datasets``: CSV/TSV, JSON (lines, an array of objects or an object of columns), Parquet, and
folders written by ``save_to_disk``.

Files are read in memory (no ``datasets`` cache entry per file version), and a dataset read from a file is
fingerprinted by the file's bytes. Every problem is one ``ValueError`` (or ``OSError``) line naming the file, and the
line or row when there is one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterator

from datasets import Dataset, DatasetDict

__all__ = ["TABLE_FORMATS", "check_text_file", "file_dataset", "load_saved_dataset", "read_table", "table_format"]

#: File extensions read as tables, and their format.
TABLE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def read_bytes(path: str | os.PathLike, file: str = "data file", missing: str = "data file") -> bytes:
    """The file's bytes. A folder (``give the <file> itself``) or a missing file (``<missing> not found``) raises an
    error naming it."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a folder; give the {file} itself")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{missing} not found: {path}")
    with open(path, "rb") as handle:
        return handle.read()


def utf8_lines(content: bytes, path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """The lines of a text file's ``content``, numbered from 1, decoded as UTF-8; a line that is not UTF-8 raises an
    error naming the file (``path``) and the line."""
    for number, raw in enumerate(io.BytesIO(content), start=1):  # lines end at b"\n", as in a file
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path}, line {number}: not UTF-8 text (byte {raw[error.start]:#04x} at column "
                f"{error.start + 1}); convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`"
            ) from None


def one_line(error: BaseException) -> str:
    """An exception's message on one line (what third-party readers say can span several)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def table_format(path: str) -> str | None:
    """``csv``, ``json`` or ``parquet`` from the file extension; None for any other."""
    return TABLE_FORMATS.get(os.path.splitext(path)[1].lower())


def check_text_file(path: str) -> str:
    """The file's text; fails with the file's name when it is missing, a folder, empty or not UTF-8."""
    raw = read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}, line {line}: not UTF-8 text (byte {raw[error.start]:#04x}); convert it to UTF-8"
        ) from None
    if not text.strip():
        raise ValueError(f"{path}: the file is empty")
    return text


def file_dataset(table, content: bytes) -> Dataset:
    """A ``Dataset`` of a ``pyarrow.Table`` or a dict of columns read from a file of bytes ``content``,
    fingerprinted by those bytes (``Dataset.from_dict`` would hash the built table; the data is in memory, so the
    fingerprint names no cache file)."""
    import pyarrow as pa
    from datasets.table import InMemoryTable

    if isinstance(table, dict):
        table = pa.Table.from_pydict(table)
    return Dataset(InMemoryTable(table), fingerprint=hashlib.sha256(content).hexdigest()[:32])


def _json_records(path: str, text: str) -> tuple[list, Callable[[int], str]]:
    """The records of a JSON file, and where record ``i`` is: JSON lines first (as ``datasets`` reads them), else
    one document holding an array of objects or an object of columns."""
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            return _json_document(path, text, f"line {number}: not valid JSON ({error.msg}, column {error.colno})")
        except RecursionError:
            raise ValueError(f"{path}, line {number}: nested too deeply to be a row") from None
        lines.append(number)
    return rows, lambda i: f"line {lines[i]}"


def _json_document(path: str, text: str, as_lines: str) -> tuple[list, Callable[[int], str]]:
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        document = None
    if isinstance(document, list):
        return document, lambda i: f"record {i + 1}"
    columns = list(document.values()) if isinstance(document, dict) else []
    if columns and all(isinstance(c, list) and len(c) == len(columns[0]) for c in columns):
        return [dict(zip(document, values, strict=True)) for values in zip(*columns, strict=True)], (
            lambda i: f"row {i + 1}"
        )
    raise ValueError(
        f"{path}, {as_lines}; expected JSON lines (one object per line), an array of objects or an object of columns"
    )


def _arrow_table(path: str, records: list[dict], where: Callable[[int], str]):
    """The records as a ``pyarrow.Table`` (the first record's columns, as ``datasets`` takes them); a column whose
    values have no common type is named, with the first row that differs."""
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        pass
    for column in records[0]:
        values = [record.get(column) for record in records]
        try:
            pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as error:
            first = next((i for i, v in enumerate(values) if v is not None), 0)
            kind = type(values[first]).__name__
            row = next((i for i, v in enumerate(values) if v is not None and type(v).__name__ != kind), None)
            at = f" ({where(row)} holds {type(values[row]).__name__})" if row is not None else ""
            raise ValueError(
                f"{path}: column {column!r} holds values of no common type: {kind} in {where(first)}{at} "
                f"({one_line(error)})"
            ) from None
    raise ValueError(f"{path}: the rows cannot form one table")


def read_table(path: str) -> tuple[Dataset, Callable[[int], str]]:
    """A CSV/TSV, JSON (lines) or Parquet file as a ``Dataset``, and where row ``i`` is in the file."""
    kind = table_format(path)
    if kind is None:
        extension = os.path.splitext(path)[1].lower()
        raise ValueError(f"{path}: unsupported file type {extension!r}; use {', '.join(TABLE_FORMATS)}")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            content = read_bytes(path)  # missing file or a folder: said plainly
            return file_dataset(pq.read_table(path), content), lambda i: f"row {i + 1}"
        text = check_text_file(path)
        if kind == "json":
            records, where = _json_records(path, text)
            for index, record in enumerate(records):
                if not isinstance(record, dict):
                    raise ValueError(
                        f"{path}, {where(index)}: expected an object of columns, got {type(record).__name__}"
                    )
            if not records:
                raise ValueError(f"{path}: no rows")
            return file_dataset(_arrow_table(path, records, where), text.encode()), where
        import pandas as pd

        sep = "\t" if path.lower().endswith(".tsv") else ","
        import pyarrow as pa

        frame = pd.read_csv(path, sep=sep)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        return file_dataset(table, text.encode()), lambda i: f"line {i + 2}"
    except (ValueError, OSError) as error:  # ours name the file; another library's gets the name in front
        message = one_line(error)
        plain = type(error) if type(error) in (ValueError, FileNotFoundError, IsADirectoryError) else None
        kind_of = plain or (OSError if isinstance(error, OSError) else ValueError)
        raise kind_of(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except Exception as error:  # pyarrow and pandas raise their own types for unreadable files or mixed columns
        raise ValueError(f"{path}: cannot be read as {kind}: {one_line(error)}") from None


def load_saved_dataset(path: str) -> DatasetDict:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``, as a ``DatasetDict``."""
    from datasets import load_from_disk

    try:
        loaded = load_from_disk(path)
    except Exception as error:
        raise ValueError(f"{path}: not a dataset saved with save_to_disk: {one_line(error)}") from None
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})


def missing_value(value) -> bool:
    """None, or a float NaN (what pandas reads for an empty CSV cell)."""
    return value is None or (isinstance(value, float) and math.isnan(value))
