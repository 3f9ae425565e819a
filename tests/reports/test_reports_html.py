"""The HTML report in a real headless Chromium (Debian's ``chromium``; .ci/run installs it): it loads with no console
error and no request beyond the file itself, every figure decodes, the tables are there. The screenshot is kept
as a test artefact in the test's tmp_path (pytest keeps the last three runs' folders)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from headless_chromium import Chromium, find_chromium
from PIL import Image

from patchbench.reports import build_report

RESULTS = Path(__file__).parent / "fixtures" / "results"


@pytest.fixture(scope="module")
def chromium():
    binary = find_chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    with Chromium(binary) as browser:
        yield browser


def test_the_harness_sees_console_errors_broken_images_and_network_requests(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title></head><body>'
                    '<img alt="broken" src="data:image/png;base64,AAAA"><table><tr><td>1</td></tr></table>'
                    '<script>console.error("boom")</script>'
                    '<img alt="remote" src="http://127.0.0.1:9/x.png"></body></html>')
    load = chromium.load(page)
    assert {i["alt"]: (i["width"], i["decoded"]) for i in load.probe["images"]} == \
        {"broken": (0, False), "remote": (0, False)}
    assert any("boom" in e for e in load.console_errors)
    assert "http://127.0.0.1:9/x.png" in load.requests


@pytest.mark.slow
@pytest.mark.parametrize("name", ["comparison", "ablation"])
def test_the_html_report_loads_cleanly_in_headless_chromium(chromium, tmp_path, name):
    report = build_report(RESULTS / name, tmp_path / "report", formats={"html"})
    page = tmp_path / "report" / "report.html"
    pngs = [p for p in report.written if p.suffix == ".png"]
    load = chromium.load(page, screenshot=tmp_path / "report-screenshot.png")
    print(f"screenshot: {load.screenshot}")

    assert load.console_errors == []
    assert [u for u in load.requests if not u.startswith("data:image/png;base64,")] == [page.resolve().as_uri()]
    images = load.probe["images"]
    assert len(images) == len(pngs) > 0
    for image in images:
        assert image["complete"] and image["decoded"] and image["width"] > 0 and image["data_uri"], image
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', page.read_text())
    assert {alt: base64.b64decode(data) for data, alt in embedded} == {p.stem: p.read_bytes() for p in pngs}
    assert load.probe["scripts"] == 0 and load.probe["links"] == 0  # nothing to fetch, nothing to run
    # every report table has its header and one row per method; then the matrix and provenance tables
    assert load.probe["tables"][:len(report.tables)] == [len(t.rows) + 1 for t in report.tables]
    assert load.probe["headings"] == ["Warnings", "Tables", "Figures", "Matrix", "Provenance"]
    width, height = Image.open(load.screenshot).size
    assert width == 1280 and height > 3000
