"""The HTML report, rendered by a real headless browser (Debian's chromium, installed by .ci/run)."""

import json
import os
import re
import shutil
import subprocess

import pytest

from densitylab.cli import main
from densitylab.errors import DensitylabError
from densitylab.report import render_report

CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  for (const img of document.images) img.setAttribute('data-width', img.naturalWidth);
  for (const t of document.querySelectorAll('table'))
    t.setAttribute('data-numbers', [...t.querySelectorAll('td')].filter(
      td => /\\d/.test(td.textContent)).length);
  document.body.setAttribute('data-checked', 'yes');
});
</script></body>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    assert main(["experiment", "receptive-field", "--budget", "tiny", "--out", str(root / "rf")]) == 0
    assert main(["report", str(root / "rf"), "-o", str(root / "report.html")]) == 0
    return root


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("no chromium here (CI installs it)")
    return path


def test_every_image_loads_and_every_table_has_numbers_in_a_browser(report):
    page = (report / "report.html").read_text()
    (report / "checked.html").write_text(page.replace("</body>", CHECK_SCRIPT))
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", (report / "checked.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    assert 'data-checked="yes"' in dom
    widths = [int(w) for w in re.findall(r'data-width="(\d+)"', dom)]
    assert widths and all(w > 0 for w in widths), f"an image did not load: widths {widths}"
    counts = [int(n) for n in re.findall(r'data-numbers="(\d+)"', dom)]
    assert len(counts) == 1 + 3 and all(n > 0 for n in counts)  # the summary + the experiment's three


def test_report_is_self_contained_and_states_how_to_reproduce(report):
    page = (report / "report.html").read_text()
    record = json.loads((report / "rf" / "results.json").read_text())
    assert 'src="data:image/png;base64,' in page and "src=\"http" not in page
    assert record["command"] in page and record["verdict"] in page


def test_report_errors_are_one_line(tmp_path):
    with pytest.raises(DensitylabError, match="no results.json"):
        render_report([tmp_path], tmp_path / "r.html")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(DensitylabError, match="not a readable results.json"):
        render_report([tmp_path / "bad"], tmp_path / "r.html")


def test_report_states_the_rule_before_the_result(report):
    import html

    page = (report / "report.html").read_text()
    record = json.loads((report / "rf" / "results.json").read_text())
    rule, verdict = page.find(html.escape(record["rule"])), page.find(html.escape(record["verdict"]))
    assert 0 <= rule < verdict
    assert "Inconclusive (budget too small)." in page  # the tiny budget never reads as reproduced


def test_markdown_summary_reads_every_number_from_the_results(report):
    out = report / "summary.md"
    assert main(["report", str(report / "rf"), "-o", str(out)]) == 0
    text = out.read_text()
    record = json.loads((report / "rf" / "results.json").read_text())
    assert "| `receptive-field` | inconclusive (budget too small) | tiny | 2 | 4 |" in text
    assert f"Rule: {record['rule']}" in text and record["verdict"] in text
