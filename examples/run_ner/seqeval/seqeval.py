"""An offline stand-in for the hub's ``evaluate-metric/seqeval`` metric module.

``evaluate.load("seqeval")`` looks for ``seqeval/seqeval.py`` under the working directory before it asks the hub,
so ``run_ner.py`` run from ``examples/run_ner/`` computes its metric here, without a network. The inputs and the
result are the hub module's: overall precision, recall, F1 and accuracy, and per entity type precision, recall,
F1 and count, computed by the ``seqeval`` package.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report


class Seqeval(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description="Entity-level precision, recall and F1 of tag sequences (seqeval).",
            citation="",
            features=datasets.Features({"predictions": tags, "references": tags}),
        )

    def _compute(self, predictions, references):
        report = classification_report(y_true=references, y_pred=predictions, output_dict=True)
        report.pop("macro avg")
        report.pop("weighted avg")
        overall = report.pop("micro avg")
        scores = {
            name: {"precision": s["precision"], "recall": s["recall"], "f1": s["f1-score"], "number": s["support"]}
            for name, s in report.items()
        }
        scores["overall_precision"] = overall["precision"]
        scores["overall_recall"] = overall["recall"]
        scores["overall_f1"] = overall["f1-score"]
        scores["overall_accuracy"] = accuracy_score(y_true=references, y_pred=predictions)
        return scores
