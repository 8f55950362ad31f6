"""Class analytics (summary.json and the class page) over a synthetic class: no grading run."""

from __future__ import annotations

import json
from pathlib import Path

from synthetic_class import TITLE, synthetic_class, write_outputs

from sdverify.notebooks import analytics
from sdverify.notebooks.reports import PLOT, SUMMARY


def test_summary_counts_scores_pass_rates_mistakes_and_the_slowest():
    grades = synthetic_class()
    summary = analytics.summary(grades, TITLE)
    assert summary["students"] == 5 and summary["title"] == TITLE and summary["shard"] is None
    assert summary["isolation"] == {"bwrap": 5}
    assert summary["errors"] == [{"student": "eve", "error": "grading failed: the notebook is not valid JSON"}]
    # Totals as the result objects give them (partial credit included): 0+1+0, 2+1+0, 2+1+3, 2+1+1.5, 0+1+0.
    score = summary["score"]
    assert (score["min"], score["median"], score["max"], score["max_points"]) == (1, 3, 6, [6])
    assert score["mean"] == round((1 + 3 + 6 + 4.5 + 1) / 5, 4) and score["full_marks"] == 1
    assert score["histogram"]["counts"] == [0, 2, 0, 0, 0, 1, 0, 1, 0, 1]  # 16.7%, 16.7%, 50%, 75%, 100%
    exercises = {e["id"]: e for e in summary["exercises"]}
    assert (exercises["ex1"]["full_marks"], exercises["ex1"]["graded"], exercises["ex1"]["pass_rate"]) == (3, 5, 0.6)
    assert exercises["ex2"]["mean"] == round((1 + 1 + 4 + 2.5 + 1) / 5, 4) and exercises["ex2"]["pass_rate"] == 0.2
    checks = {(c["exercise"], c["check"]): c for c in summary["checks"]}
    assert checks[("ex2", "shape")]["pass_rate"] == 1.0 and checks[("ex2", "values")]["passed"] == 1
    mistakes = {m["id"]: m for m in summary["mistakes"]}
    assert [m["id"] for m in summary["mistakes"]] == ["cfg_swapped", "ids_not_padded"]  # most students first
    assert mistakes["cfg_swapped"]["students"] == ["alice", "bob"] and mistakes["cfg_swapped"]["count"] == 2
    assert mistakes["cfg_swapped"]["checks"] == ["ex2/values"]
    assert mistakes["ids_not_padded"]["example"] == "tokens is wrong: ids not padded"
    assert [s["student"] for s in summary["slowest"]] == ["alice", "bob", "carol", "dave", "eve"]


def test_class_files_do_not_depend_on_the_order_of_the_grades(tmp_path: Path):
    grades = synthetic_class()
    write_outputs(grades, tmp_path / "a")
    write_outputs(list(reversed(synthetic_class())), tmp_path / "b")
    for name in ("grades.csv", "junit.xml", "index.html", SUMMARY, PLOT):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    rows = (tmp_path / "a" / "grades.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["alice", "bob", "carol", "dave", "eve"]


def test_class_page_shows_the_analytics_with_links_to_the_students(tmp_path: Path):
    write_outputs(synthetic_class(), tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert f"<img src='{PLOT}'" in page and (tmp_path / PLOT).read_bytes().startswith(b"\x89PNG")
    mistakes = page[page.index("<h2>Named mistakes</h2>") : page.index("<section id='slowest'>")]
    assert "<code>cfg_swapped</code></td><td>2</td>" in mistakes
    assert "submissions/alice/report.html" in mistakes and "submissions/bob/report.html" in mistakes
    assert "isolation: bwrap" in page and "class=sortable" in page and "<script>" in page
    assert "https://" not in page and "http://" not in page  # nothing from a CDN
    assert json.loads((tmp_path / SUMMARY).read_text())["students"] == 5


def test_student_page_shows_feedback_mistake_image_and_stage_timings(tmp_path: Path):
    write_outputs(synthetic_class(), tmp_path)
    page = (tmp_path / "submissions" / "alice" / "report.html").read_text()
    assert "values is wrong: cfg swapped" in page and "<td class='mistake'>cfg_swapped</td>" in page
    assert "src='image.png'" in page and "denoise_time" in page and "ZeroDivisionError" in page
    assert "href='../../index.html'" in page
