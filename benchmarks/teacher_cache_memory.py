"""Benchmark: the teacher cache at transfer-set scale: its size, and resident memory over an epoch of reads.

The examples are a transfer text's sentences, tokenized by the teacher's tokenizer (their real lengths, truncated
at ``--max_length``); the stored values are those of the layout given (by default the shipped small-fast
recipe's: 9 labels, the hidden states of three mapped 384-wide layers), random, through
:meth:`TeacherCache.store` itself (the keys, the files and the index are the real ones). Then one epoch of
:meth:`TeacherCache.lookup` over the batches in a shuffled order, resident memory (``VmRSS``) read after every
batch; and, for comparison, the same records read through a memory map of the shard (how the cache read them
before) for the first ``--memmap_examples`` examples.

    python benchmarks/teacher_cache_memory.py --transfer_file large.txt \\
        --teacher ../shared/models/minilm-l6-conll2003-teacher --cache_dir /tmp/teacher-cache-bench
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from common import command_line
from latency import markdown_table, write_results
from transformers import AutoTokenizer

from hf_compress.distillation.cache import TeacherCache
from hf_compress.distillation.transfer import read_transfer_file


def memory() -> dict[str, int]:
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of this process, in bytes."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfer_file", required=True, help="one sentence per line (transfer_text.py)")
    parser.add_argument("--teacher", required=True, help="the teacher (for its tokenizer)")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--max_examples", type=int, help="the first N sentences only")
    parser.add_argument("--labels", type=int, default=9)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--layers", type=int, default=3, help="stored hidden layers")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--memmap_examples", type=int, default=25000, help="examples read through a memory map")
    parser.add_argument("--cache_dir", required=True, help="where the cache is written (removed at the end)")
    parser.add_argument("--output_dir", default="benchmarks/results")
    return parser.parse_args()


def lengths(args: argparse.Namespace) -> list[int]:
    sentences = read_transfer_file(args.transfer_file, "text")[: args.max_examples]
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    out = []
    for start in range(0, len(sentences), 4096):
        encoded = tokenizer(
            sentences[start : start + 4096], is_split_into_words=True, truncation=True, max_length=args.max_length
        )
        out += [len(ids) for ids in encoded["input_ids"]]
    return out


def build(args: argparse.Namespace, sizes: list[int]) -> tuple[TeacherCache, list[dict], float]:
    """The cache of every example, written through ``store``; the batches (inputs) to read it back."""
    cache = TeacherCache(args.cache_dir, torch.nn.Linear(2, 2), list(range(args.layers)), [], args.layers)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.batch_size, args.max_length, args.width, generator=generator)
    logits = torch.randn(args.batch_size, args.max_length, args.labels, generator=generator)
    batches, started = [], time.perf_counter()
    for start in range(0, len(sizes), args.batch_size):
        rows = sizes[start : start + args.batch_size]
        length = max(rows)
        index = torch.arange(start, start + len(rows))
        ids = torch.randint(1000, 30000, (len(rows), length), generator=generator)
        ids[:, 1], ids[:, 2] = index % 30000, index // 30000  # every example its own key
        mask = (torch.arange(length)[None, :] < torch.tensor(rows)[:, None]).long()
        inputs = {"input_ids": ids, "attention_mask": mask}
        states = (hidden[: len(rows), :length],) * (args.layers + 1)
        cache.store(inputs, SimpleNamespace(logits=logits[: len(rows), :length], hidden_states=states))
        batches.append(inputs)
    cache.refresh()
    return cache, batches, time.perf_counter() - started


def epoch(cache: TeacherCache, batches: list[dict], shapes: dict) -> dict:
    """Every batch read once, in a shuffled order; resident memory after each."""
    order = list(range(len(batches)))
    random.Random(0).shuffle(order)
    cache.lookup(batches[order[0]], shapes)  # the batch tensors' first allocation
    gc.collect()
    before, peak, started = memory(), 0, time.perf_counter()
    for i in order:
        if cache.lookup(batches[i], shapes) is None:
            raise RuntimeError("a stored example was not found")
        peak = max(peak, memory()["VmRSS"])
    return {"seconds": time.perf_counter() - started, "before": before, "peak_rss": peak, "after": memory()}


def memmap_epoch(cache: TeacherCache, record_bytes: dict[str, int], examples: int) -> dict:
    """The first ``examples`` records read through a memory map of the shard, in a shuffled order."""
    data = np.memmap(cache.folder / "shard-0.bin", dtype=np.uint8, mode="r")
    keys = list(cache._index)[:examples]
    random.Random(0).shuffle(keys)
    gc.collect()
    before, peak, read, started = memory(), 0, 0, time.perf_counter()
    for number, key in enumerate(keys):
        _, offset, _ = cache._index[key]
        size = record_bytes[key]
        torch.from_numpy(np.frombuffer(data[offset : offset + size], dtype=np.float16).copy())
        read += size
        if number % 32 == 0:
            peak = max(peak, memory()["VmRSS"])
    after = memory()
    del data
    return {
        "seconds": time.perf_counter() - started,
        "bytes_read": read,
        "before": before,
        "peak_rss": max(peak, after["VmRSS"]),
        "after": after,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    sizes = lengths(args)
    tokens = sum(sizes)
    started = memory()
    cache, batches, build_seconds = build(args, sizes)
    size = cache.size()
    per_token = cache.bytes_per_token(args.labels, args.width)
    assert size["bytes"] == tokens * per_token, (size, tokens, per_token)
    opened = memory()
    shapes = {"labels": args.labels, "token_level": True, "hidden": args.width, "heads": 12}
    reads = epoch(cache, batches, shapes)
    record_bytes = {key: n * per_token for key, (_, _, n) in cache._index.items()}
    mapped = memmap_epoch(cache, record_bytes, args.memmap_examples)
    cache.close()
    index_bytes = (cache.folder / "shard-0.index.json").stat().st_size
    shutil.rmtree(args.cache_dir)
    mib = 2**20
    rows = {
        "positioned reads (the cache), every example": {
            "examples": len(sizes),
            "read_mib": size["bytes"] / mib,
            "rss_before_mib": reads["before"]["VmRSS"] / mib,
            "rss_peak_mib": reads["peak_rss"] / mib,
            "growth_mib": (reads["peak_rss"] - reads["before"]["VmRSS"]) / mib,
            "rss_file_after_mib": reads["after"]["RssFile"] / mib,
            "seconds": reads["seconds"],
        },
        f"memory map (before), first {min(args.memmap_examples, len(sizes))} examples": {
            "examples": min(args.memmap_examples, len(sizes)),
            "read_mib": mapped["bytes_read"] / mib,
            "rss_before_mib": mapped["before"]["VmRSS"] / mib,
            "rss_peak_mib": mapped["peak_rss"] / mib,
            "growth_mib": (mapped["peak_rss"] - mapped["before"]["VmRSS"]) / mib,
            "rss_file_after_mib": mapped["after"]["RssFile"] / mib,
            "seconds": mapped["seconds"],
        },
    }
    table = markdown_table(
        [
            ("reader", lambda name, r: name),
            ("examples", lambda name, r: str(r["examples"])),
            ("MiB read", lambda name, r: f"{r['read_mib']:.0f}"),
            ("VmRSS before MiB", lambda name, r: f"{r['rss_before_mib']:.0f}"),
            ("VmRSS peak MiB", lambda name, r: f"{r['rss_peak_mib']:.0f}"),
            ("growth MiB", lambda name, r: f"{r['growth_mib']:.1f}"),
            ("RssFile after MiB", lambda name, r: f"{r['rss_file_after_mib']:.0f}"),
            ("seconds", lambda name, r: f"{r['seconds']:.0f}"),
        ],
        rows,
    )
    report = {
        "command": command_line("teacher_cache_memory.py", args),
        "examples": len(sizes),
        "tokens": tokens,
        "mean_tokens_per_example": tokens / len(sizes),
        "bytes_per_token": per_token,
        "cache_bytes": size["bytes"],
        "cache_gib": size["bytes"] / 2**30,
        "index_bytes": index_bytes,
        "build_seconds": build_seconds,
        "rss_opened_mib": opened["VmRSS"] / mib,
        "rss_index_mib": (opened["VmRSS"] - started["VmRSS"]) / mib,
        "readers": rows,
        "batches": math.ceil(len(sizes) / args.batch_size),
    }
    summary = (
        f"{len(sizes)} examples, {tokens} tokens ({tokens / len(sizes):.1f} per example), {per_token} bytes per "
        f"token: {size['bytes'] / 2**30:.2f} GiB of records and a {index_bytes / mib:.1f} MiB index; "
        f"written in {build_seconds:.0f} s.\n\n"
    )
    write_results(args.output_dir, "teacher_cache_memory", report, summary + table)


if __name__ == "__main__":
    main()
