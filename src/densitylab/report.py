"""One self-contained HTML page from experiment and run directories (``densitylab report DIR... -o F``).

Each directory holding a ``results.json`` (the directory itself or its sub-directories) is either
an experiment's or a training run's (``densitylab train``). An experiment becomes a section: the
claim, the verdict, the tables, the figures embedded as ``data:`` URIs (so the page is one file
that can be mailed or archived), then budget, data, seed, elapsed time and the command that
reproduces it. Training runs become one table: model, data, bits/dim, steps, training time and
their samples. Every number on the page is read from ``results.json``; nothing is typed in.
"""

from __future__ import annotations

import base64
import html
import json
import math
import mimetypes
from pathlib import Path
from typing import Any

from densitylab.errors import DensitylabError
from densitylab.experiments import experiment_names
from densitylab.train.files import atomic_write_text
from densitylab.train.rundir import RESULTS_FILE

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
.claim { font-style: italic; }
.verdict { padding: .6em .9em; border-radius: 6px; background: #f3f3f3; }
.rule { font-size: .92em; color: #333; border-left: 3px solid #bbb; padding-left: .7em; }
.yes { background: #e5f4e8; } .no { background: #fbe9e7; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
.meta { font-size: .85em; color: #555; } code { background: #f5f5f5; padding: .1em .3em; }
"""


OUTCOME_CLASS = {"reproduced": "yes", "not reproduced": "no"}  # the others: grey


def outcome_of(record: dict[str, Any]) -> str:
    """The record's outcome (records written before outcomes existed: from ``reproduced``)."""
    if isinstance(record.get("outcome"), str):
        return record["outcome"]
    return {True: "reproduced", False: "not reproduced"}.get(record.get("reproduced"), "measurement")


def find_results(paths: list[Path]) -> list[Path]:
    """The ``results.json`` files of ``paths`` (each a run or an experiment, or a directory of them)."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise DensitylabError(f"{path} is not a directory of experiment results or training runs")
        if (path / RESULTS_FILE).is_file():
            found.append(path / RESULTS_FILE)
        else:
            found.extend(sorted(path.glob(f"*/{RESULTS_FILE}")))
    if not found:
        raise DensitylabError("no results.json found; run `densitylab experiment NAME --out DIR` "
                              "or `densitylab train MODEL ... --out DIR` first")
    return found


def load_record(path: Path) -> dict[str, Any]:
    """An experiment's or a training run's results, told apart by ``experiment`` / ``model``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DensitylabError(f"{path} is not a readable results.json ({exc}); rerun it") from exc
    if not isinstance(record, dict) or not ("experiment" in record or is_run(record)):
        raise DensitylabError(f"{path} is neither an experiment's nor a training run's results.json")
    return record


def is_run(record: dict[str, Any]) -> bool:
    """A training run's results (``densitylab train``), not an experiment's."""
    return "experiment" not in record and "model" in record and "unit" in record


def render_runs(runs: list[tuple[dict[str, Any], Path]]) -> str:
    """One table of training runs with their samples embedded."""
    head = "".join(f"<th>{c}</th>" for c in
                   ("run", "model", "data", "test score", "bound", "steps", "training time", "samples"))
    rows = []
    for record, directory in runs:
        key = "test_nats_per_dim" if record["unit"] == "nats/dim" else "test_bits_per_dim"
        score, _ = format_value(record.get(key))
        samples = directory / str(record.get("samples", ""))
        image = (f'<img src="{embed(samples)}" alt="samples of {html.escape(record["model"])}" '
                 'style="max-height: 9em">' if record.get("samples") and samples.is_file() else "-")
        cells = [html.escape(str(directory)), html.escape(str(record["model"])),
                 html.escape(str(record.get("data"))),
                 f'{score} {html.escape(record["unit"])}', html.escape(str(record.get("bound", "")))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells)
                    + f'<td class="num">{format_value(record.get("steps"))[0]}</td>'
                    + f'<td class="num">{float(record.get("train_seconds", 0.0)):.1f} s</td>'
                    + f"<td>{image}</td></tr>")
    return (f'<section id="runs"><h2>Training runs</h2><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def format_value(value: Any) -> tuple[str, bool]:
    """``(text, is_number)`` for one table cell."""
    if isinstance(value, bool) or value is None:
        return ("yes" if value else "no") if value is not None else "-", False
    if isinstance(value, int):
        return f"{value:,}", True
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5) or not math.isfinite(value):
            return f"{value:.3g}", True
        return (f"{value:.3f}" if abs(value) < 100 else f"{value:,.1f}"), True
    return str(value), False


def render_table(spec: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in spec["columns"])
    rows = []
    for row in spec["rows"]:
        cells = []
        for value in row:
            text, numeric = format_value(value)
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table><caption>{html.escape(spec['title'])}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def embed(path: Path) -> str:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def render_section(record: dict[str, Any], directory: Path) -> str:
    name = html.escape(record["experiment"])
    outcome = outcome_of(record)
    parts = [f'<section id="{name}"><h2>{name}</h2>',
             f'<p class="claim">Claim: {html.escape(record["claim"])}</p>']
    if record.get("rule"):  # the rule comes before the result
        parts.append(f'<p class="rule"><b>Verdict rule.</b> {html.escape(record["rule"])}</p>')
    parts.append(f'<p class="verdict {OUTCOME_CLASS.get(outcome, "")}"><b>'
                 f'{html.escape(outcome.capitalize())}.</b> {html.escape(record["verdict"])}</p>')
    parts += [render_table(t) for t in record.get("tables", [])]
    for fig in record.get("figures", []):
        path = directory / fig["file"]
        if not path.is_file():
            raise DensitylabError(f"{path} is missing (named in {directory / RESULTS_FILE}); "
                                  "rerun the experiment")
        parts.append(f'<figure><img src="{embed(path)}" alt="{html.escape(fig["caption"])}">'
                     f'<figcaption>{html.escape(fig["caption"])}</figcaption></figure>')
    parts.append(
        f'<p class="meta">Budget <b>{html.escape(str(record.get("budget")))}</b>, seeds '
        f'{html.escape(str(record.get("seeds", record.get("seed"))))}, '
        f'data: {html.escape(str(record.get("data")))}; '
        f'took {record.get("elapsed_s", 0):.0f} s. Reproduce: '
        f'<code>{html.escape(str(record.get("command")))}</code></p></section>')
    return "\n".join(parts)


def sorted_records(paths: list[Path]) -> list[tuple[dict[str, Any], Path]]:
    """Every record under ``paths`` with its directory: experiments in the course's order, then
    training runs."""
    records = [(load_record(p), p.parent) for p in find_results(paths)]
    order = {name: k for k, name in enumerate(experiment_names())}  # the course's order
    records.sort(key=lambda item: order.get(item[0].get("experiment", ""), len(order)))
    return records


def whole_run_sentence(paths: list[Path]) -> str | None:
    """What ``experiment all`` recorded in ``experiment_all.json`` under ``paths``, in one line."""
    for path in paths:
        file = path / "experiment_all.json"
        if file.is_file():
            whole = json.loads(file.read_text())
            return (f"`densitylab experiment all --budget {whole['budget']}` ran these "
                    f"{len(whole['experiments'])} experiments in {whole['wall_s'] / 60:.1f} minutes "
                    f"of wall time on {whole['cores']} cores ({whole['jobs']} at a time; "
                    f"{', '.join(whole['timed_alone']) or 'none'} alone first, since they time).")
    return None


def render_markdown(records: list[tuple[dict[str, Any], Path]], whole: str | None = None) -> str:
    """A Markdown summary (for README and docs): one row per experiment with its outcome, seeds,
    steps per arm and minutes, then each experiment's rule and verdict; every number read from the
    ``results.json`` files (and ``whole``, the line of the run of them all, first)."""
    lines = [whole, ""] if whole else []
    lines += ["| experiment | outcome | budget | seeds | steps per arm | minutes |",
              "| --- | --- | --- | ---: | --- | ---: |"]
    for r, _ in records:
        steps = sorted(set(r.get("steps", {}).values()))
        lines.append("| " + " | ".join([
            f"`{r['experiment']}`", outcome_of(r), str(r.get("budget")),
            str(len(r.get("seeds", [r.get("seed")]))),
            ", ".join(f"{s:,}" for s in steps) or "-", f"{r.get('elapsed_s', 0.0) / 60:.1f}"]) + " |")
    for r, _ in records:
        lines += ["", f"### `{r['experiment']}`", "", f"Claim: {r['claim']}", ""]
        if r.get("rule"):
            lines += [f"Rule: {r['rule']}", ""]
        lines.append(f"**{outcome_of(r).capitalize()}.** {r['verdict']}")
    return "\n".join(lines) + "\n"


def render_report(paths: list[Path], output: Path) -> int:
    """Write the report of every experiment and training run found under ``paths`` to ``output``
    (HTML, or for experiments a Markdown summary without figures when ``output`` ends in
    ``.md``); returns how many records it holds."""
    records = sorted_records(paths)
    runs = [(r, d) for r, d in records if is_run(r)]
    experiments = [(r, d) for r, d in records if not is_run(r)]
    if output.suffix == ".md":
        atomic_write_text(output, render_markdown(experiments, whole_run_sentence(paths)))
        return len(experiments)
    parts = []
    if experiments:
        parts.append(render_table({
            "title": "Summary",
            "columns": ["experiment", "claim", "outcome", "budget", "seeds", "seconds"],
            "rows": [[r["experiment"], r["claim"], outcome_of(r), r.get("budget"),
                      len(r.get("seeds", [r.get("seed")])), float(r.get("elapsed_s", 0.0))]
                     for r, _ in experiments],
        }))
    if runs:
        parts.append(render_runs(runs))
    parts += [render_section(r, d) for r, d in experiments]
    title = "the course's claims, measured" if experiments else "training runs"
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>densitylab report</title><style>{STYLE}</style></head><body>"
            f"<h1>densitylab: {title}</h1>{chr(10).join(parts)}</body></html>\n")
    atomic_write_text(output, page)
    return len(records)
