"""Write the generated pages of docs/: the command-line reference and the benchmark tables.

    python scripts/gen_docs.py            # rewrite docs/cli.md and docs/benchmarks.md
    python scripts/gen_docs.py --check    # exit 1 if either is out of date (the tests run this)

``docs/cli.md`` comes from the argparse parser of :mod:`densitylab.cli` and the model catalog
(every model's options); ``docs/benchmarks.md`` from the results files ``benchmarks/results/*.jsonl``.
A results file holds one ``{"kind": "table", ...}`` line (id, title, about, columns as
``[key, header, format]``) and then one ``{"kind": "row", ...}`` line per measurement, each with
its ``command``, ``date``, ``machine``, ``commit`` and ``status`` (``current``, or why the number
no longer describes the code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
WIDTH = "100"  # argparse wraps help text to $COLUMNS: fixed, so the page does not depend on the terminal
TABLE_ORDER = ["frontier-8bit", "autoregressive-8bit", "autoregressive-binarized", "flows-8bit",
               "logit-margin", "peers", "glow-profile", "sampling", "maf-iaf", "flops",
               "fixed-budget-first"]


# ----- docs/cli.md --------------------------------------------------------------------------------
def cli_markdown() -> str:
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        return _cli_markdown()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _cli_markdown() -> str:
    if str(ROOT / "src") not in sys.path:
        sys.path.insert(0, str(ROOT / "src"))
    from densitylab import catalog
    from densitylab.cli import build_parser

    parser = build_parser()
    parser.prog = "densitylab"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["# Command-line reference", "",
             "Generated from the parser by `python scripts/gen_docs.py`; `densitylab COMMAND --help` "
             "prints the same text.", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, command in sub.choices.items():
        parts += [f"## densitylab {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    parts += ["## Model options", "",
              "Set with `densitylab train MODEL --model-opt KEY=VALUE`; `densitylab list MODEL` prints "
              "one model's.", ""]
    for name, entry in catalog.models().items():
        parts += [f"### {name}", "", f"{entry.description} ({entry.family}; default learning rate "
                  f"{entry.default_lr:g}).", "", "| option | type | default | meaning |",
                  "| --- | --- | --- | --- |"]
        for option in entry.options:
            default = json.dumps(option.default) if isinstance(option.default, list) else option.default
            parts.append(f"| `{option.name}` | `{option.type}` | `{default}` | "
                         f"{_cell(option.help)} |")
        parts.append("")
    return "\n".join(parts)


# ----- docs/benchmarks.md -------------------------------------------------------------------------
def read_results(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tables = [r for r in records if r.get("kind") == "table"]
    if len(tables) != 1 or records[0] is not tables[0]:
        raise ValueError(f"{path}: the first line, and only it, must be the table")
    rows = [r for r in records if r.get("kind") == "row"]
    for row in rows:
        missing = {"id", "command", "date", "machine", "commit", "status"} - set(row)
        if missing:
            raise ValueError(f"{path}: row {row.get('id')} lacks {', '.join(sorted(missing))}")
    return tables[0], rows


def _cell(value: Any, spec: str = "text") -> str:
    if value is None:
        return "-"
    if spec != "text":
        try:
            return spec.format(value)
        except (ValueError, TypeError):
            return str(value)
    return str(value).replace("|", "\\|")


def table_markdown(table: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    columns = [tuple(c) for c in table["columns"]]
    machines = {row["machine"] for row in rows}
    extra = [("note", "note")] if any(row.get("note") for row in rows) else []
    extra += [("status", "status")] if any(row["status"] != "current" for row in rows) else []
    extra += [("date", "date"), ("commit", "commit"), ("command", "command")]
    extra += [("machine", "machine")] if len(machines) > 1 else []
    header = [c[1] for c in columns] + [e[1] for e in extra]
    lines = [f'<a id="{table["id"]}"></a>', f"## {table['title']}", "", table["about"], ""]
    if len(machines) == 1:
        lines += [f"Machine (every row): {machines.pop()}.", ""]
    lines += ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in rows:
        cells = [_cell(row.get(key), spec) for key, _, spec in columns]
        cells[0] = f'<a id="{row["id"]}"></a>{cells[0]}'
        for key, _ in extra:
            value = row.get(key)
            if key == "status":
                value = "" if value == "current" else f"**{value}**"
            elif key == "commit":
                value = f"`{str(value)[:10]}`"
            elif key == "command":
                value = f"`{value}`"
            if value is None:
                cells.append("")
            else:
                cells.append(_cell(value) if key not in ("commit", "command") else value.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def benchmarks_markdown() -> str:
    files = {p.stem: p for p in sorted(RESULTS.glob("*.jsonl"))}
    order = [n for n in TABLE_ORDER if n in files] + sorted(set(files) - set(TABLE_ORDER))
    parts = ["# Benchmarks", "",
             "Every number on this page is read from a results file in `benchmarks/results/` by "
             "`python scripts/gen_docs.py`; each row names the command that measured it, the date, "
             "the machine and the commit that recorded it. Rows marked **stale** no longer describe "
             "the code's defaults and are kept for the record. Timings come from a shared 2-core "
             "virtual machine and drift by about 10% during a day: compare rows measured together.",
             "", "Tables:", ""]
    tables = [read_results(files[name]) for name in order]
    parts += [f"- [{table['title']}](#{table['id']})" for table, _ in tables] + [""]
    parts += [table_markdown(table, rows) for table, rows in tables]
    return "\n".join(parts)


# ----- driver -------------------------------------------------------------------------------------
PAGES = {"cli.md": cli_markdown, "benchmarks.md": benchmarks_markdown}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report pages that are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, render in PAGES.items():
        path, text = DOCS / name, render()
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            DOCS.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python scripts/gen_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
