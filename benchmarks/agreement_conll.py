"""Benchmark: how often a student tags a word as its teacher does, on training sentences vs dev sentences.

If the student agrees with the teacher on the sentences it was distilled on much more than on unseen ones, the
gap to the teacher is a data gap (the student learnt the teacher where it saw it), which more transfer text can
close; if it agrees as little on both, the gap is capacity. Word-level agreement (the first sub-token of each word,
the positions the metric reads), argmax on both sides, and each model's F1 against the gold tags:

    python benchmarks/agreement_conll.py --teacher ../shared/models/minilm-l6-conll2003-teacher \\
        --student out/ner-small-fast --train_file ../shared/data/conll2003/train.txt \\
        --validation_file ../shared/data/conll2003/valid.txt --sentences 3000
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import AutoModelForTokenClassification, AutoTokenizer

from hf_compress.configs import DataConfig
from hf_compress.tasks import get_task, ner_metrics


def predictions(path: str, raw, data: DataConfig) -> tuple[list[np.ndarray], np.ndarray]:
    """Per sentence, the predicted label id of each word; and the gold ids."""
    task = get_task("ner")
    model = AutoModelForTokenClassification.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    split = task.preprocess(DatasetDict({"train": raw}), tokenizer, model.config.label2id, data)["train"]
    out, gold = [], []
    with torch.no_grad():
        for batch in DataLoader(split, batch_size=64, collate_fn=task.data_collator(tokenizer)):
            labels = batch.pop("labels")
            logits = model(**batch).logits
            for row_logits, row_labels in zip(logits, labels, strict=True):
                keep = row_labels != -100
                out.append(row_logits[keep].argmax(-1).numpy())
                gold.append(row_labels[keep].numpy())
    return out, gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--train_file", required=True)
    parser.add_argument("--validation_file", required=True)
    parser.add_argument("--sentences", type=int, default=3000, help="the first N sentences of each split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/agreement_conll.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = DataConfig(task="ner", train_file=args.train_file, validation_file=args.validation_file)
    raw = get_task("ner").load_raw(data)
    report = {"teacher": args.teacher, "student": args.student, "sentences": args.sentences, "splits": {}}
    for split in ("train", "validation"):
        rows = raw[split].select(range(min(args.sentences, len(raw[split]))))
        teacher, teacher_gold = predictions(args.teacher, rows, data)
        student, student_gold = predictions(args.student, rows, data)
        id2label = AutoModelForTokenClassification.from_pretrained(args.teacher).config.id2label
        agree = np.concatenate([t[: len(s)] == s[: len(t)] for t, s in zip(teacher, student, strict=True)])
        f1 = {}
        for name, preds, gold in (("teacher", teacher, teacher_gold), ("student", student, student_gold)):
            width = max(len(p) for p in preds)
            logits = np.zeros((len(preds), width, len(id2label)))
            labels = np.full((len(preds), width), -100)
            for i, (p, g) in enumerate(zip(preds, gold, strict=True)):
                logits[i, np.arange(len(p)), p] = 1.0
                labels[i, : len(g)] = g
            f1[name] = float(ner_metrics(id2label)((logits, labels))["f1"])
        report["splits"][split] = {"words": int(agree.size), "agreement": float(agree.mean()), "f1": f1}
        print(f"{split}: student = teacher on {100 * agree.mean():.2f}% of {agree.size} words; F1 {f1}")
    with open(args.output, "w", encoding="utf-8") as out:
        json.dump(report, out, indent=2)


if __name__ == "__main__":
    main()
