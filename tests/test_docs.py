"""The documentation: generated pages up to date, links that stay inside the repository, every
benchmark row with its provenance, every experiment described."""

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from densitylab import catalog

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_up_to_date():
    gen = _gen_docs()
    for name, render in gen.PAGES.items():
        assert (ROOT / "docs" / name).read_text() == render(), (
            f"docs/{name} is out of date: run python scripts/gen_docs.py")


def _anchors(path: Path) -> set[str]:
    text = path.read_text()
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        ids.add(re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-"))
    return ids


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_stay_inside_the_repository(page):
    for target in LINK.findall(page.read_text()):
        assert "://" not in target and not target.startswith("/"), f"{page.name} links out: {target}"
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists() and ROOT in resolved.parents, f"{page.name}: {target} is missing"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no anchor #{anchor} in {path or page.name}"


def test_every_benchmark_row_names_its_command_date_machine_and_commit():
    gen = _gen_docs()
    git = shutil.which("git") if (ROOT / ".git").exists() else None
    files = sorted((ROOT / "benchmarks" / "results").glob("*.jsonl"))
    assert files
    ids = set()
    for path in files:
        table, rows = gen.read_results(path)
        assert rows and table["columns"]
        for row in rows:
            assert row["id"] not in ids, f"row id {row['id']} used twice"
            ids.add(row["id"])
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["date"]) and row["machine"] and row["command"]
            assert re.fullmatch(r"[0-9a-f]{40}", row["commit"])
            assert row["status"] == "current" or row["status"].startswith(("stale", "disturbed"))
            if git:
                known = subprocess.run([git, "cat-file", "-e", f"{row['commit']}^{{commit}}"], cwd=ROOT,
                                       capture_output=True)
                assert known.returncode == 0, f"{path.name}: commit of {row['id']} is not in the history"


def test_results_files_are_json_lines():
    for path in (ROOT / "benchmarks" / "results").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            assert isinstance(json.loads(line), dict)


def test_every_experiment_is_described():
    text = (ROOT / "docs" / "experiments.md").read_text()
    for name in catalog.experiments():
        assert f"| `{name}` |" in text, f"docs/experiments.md does not describe {name}"


def test_no_page_speaks_to_the_team():
    words = re.compile("|".join([r"(?-i:DESIGN\.md)", r"\bissue #?\d+", r"\bthe " + "brief\\b",
                                 r"\bclosing " + "note\\b", r"\.\./shared"]), re.I)
    for page in PAGES:
        found = words.search(page.read_text())
        assert found is None, f"{page.name} says {found.group(0)!r}"


def test_readme_is_short_and_keeps_its_places():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 15_000
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    assert "<!-- python-api -->" in section.splitlines() or "```python" in section
    assert "<!-- guarantees -->" in text.splitlines() or "\n## Guarantees\n" in text


def test_readme_numbers_are_those_of_their_benchmark_rows():
    gen = _gen_docs()
    rows = {}
    for path in (ROOT / "benchmarks" / "results").glob("*.jsonl"):
        table, found = gen.read_results(path)
        for row in found:
            rows[row["id"]] = {gen._cell(row.get(key), spec) for key, _, spec in table["columns"]}
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\[([0-9][0-9.,]*)\]\(docs/benchmarks\.md#([\w.-]+)\)", readme)
    assert len(links) >= 10
    for number, row_id in links:
        assert number in rows[row_id], f"README's {number} is not in row {row_id}: {rows[row_id]}"
