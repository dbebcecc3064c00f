"""Render JSON lines of benchmarks/fixed_budget.py as a Markdown table, a quick look at new results
(docs/benchmarks.md is generated from benchmarks/results/ by scripts/gen_docs.py):

    python benchmarks/fixed_budget.py > results.jsonl && python benchmarks/to_markdown.py results.jsonl
"""

from __future__ import annotations

import json
import sys


def row(record: dict) -> str:
    samples = next((f"{v:.1f} s ({k.split('_')[1]})" for k, v in record.items()
                    if k.startswith("sample_") and k.endswith("_seconds")), "")
    return (f"| `{record.get('entry', record['model'])}` | {record['levels']} | {record['minutes']:g} min "
            f"| {record['parameters']:,} | {record['train_images_per_s']:.0f} | {record['steps']:,} "
            f"| **{record['test_bits_per_dim']:.3f}** | {samples} |")


def main(paths: list[str]) -> None:
    print("| entry | levels | budget | parameters | train images/s | steps | test bits/dim | sampling |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in paths:
        with open(path) as handle:
            for line in handle:
                if line.strip():
                    print(row(json.loads(line)))


if __name__ == "__main__":
    main(sys.argv[1:])
