"""Regenerate the sample data shipped in ``diabetes_spark/data`` from scikit-learn's copy.

Source: the diabetes data of Efron, Hastie, Johnstone and Tibshirani, "Least Angle Regression"
(Annals of Statistics, 2004), 442 patients, as distributed with scikit-learn
(``sklearn.datasets.load_diabetes(scaled=False)``, original units). scikit-learn is a dev-time
dependency only. The source codes sex as 1/2 without labels; we write 1 as ``M`` and 2 as ``F``
(a convention, not a fact of the data).

A few values are blanked (the demo shows imputation) and a few made unparseable or label-less (the
demo shows rejects); the positions are fixed, so the output is the same on every run.

Usage: ``python tests/make_sample_data.py [OUTPUT_DIR]`` (default: ``diabetes_spark/data``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

COLUMNS = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6"]
SEX = {1.0: "M", 2.0: "F"}
#: (row, column) -> replacement text in the training file.
TRAINING_EDITS = {
    (3, "BMI"): "",
    (17, "BP"): "",
    (42, "S3"): "",
    (101, "S6"): "",
    (250, "S1"): "",
    (10, "BMI"): "n/a",
    (77, "S5"): "4.2.1",
    (150, "AGE"): "sixty",
    (300, "BP"): "high",
    (200, "Y"): "",
}
SCORING_ROWS = range(5, 442, 11)  # 40 patients
SCORING_EDITS = {(2, "BMI"): "??", (9, "S2"): "abc", (14, "SEX"): "X", (21, "S4"): ""}


def _fmt(value: float) -> str:
    return f"{value:g}"


def main(out_dir: Path) -> None:
    """Write ``diabetes.csv`` and ``scoring_batch.csv`` into ``out_dir``."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(scaled=False, as_frame=True).frame
    rows = []
    for rec in frame.itertuples(index=False):
        values = dict(zip(COLUMNS, rec[:10]))
        row = {c: (SEX[v] if c == "SEX" else _fmt(v)) for c, v in values.items()}
        row["Y"] = _fmt(rec[10])
        rows.append(row)

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "diabetes.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*COLUMNS, "Y"], lineterminator="\n")
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, **{c: v for (r, c), v in TRAINING_EDITS.items() if r == i}})

    with open(out_dir / "scoring_batch.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["patient_id", *COLUMNS], lineterminator="\n")
        writer.writeheader()
        for n, i in enumerate(SCORING_ROWS):
            row = {c: rows[i][c] for c in COLUMNS}
            row.update({c: v for (r, c), v in SCORING_EDITS.items() if r == n})
            writer.writerow({"patient_id": f"P{i + 1:04d}", **row})


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "diabetes_spark" / "data")
