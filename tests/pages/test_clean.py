"""AppTest of the Clean page: run the audit, decide, "restart" (a fresh AppTest) and find the decisions."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import audit, review
from core.workspace import Workspace
from tests.pages.apptest import page_alone

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240


@pytest.fixture
def ws(demo_workspace, tmp_path, monkeypatch) -> Workspace:
    """A private copy of the session's demo workspace (its dataset, image cache and SQLite), as LOUPE_HOME."""
    dst = tmp_path / "loupe_home"
    shutil.copytree(demo_workspace.root, dst, ignore=shutil.ignore_patterns("runs", "audit", "label_overrides", "demo"))
    monkeypatch.setenv("LOUPE_HOME", str(dst))
    w = Workspace(dst).ensure()
    assert review.decision_version(w, w.list_datasets()[0]["dataset_id"]) == 0
    return w


def _page(ws: Workspace, **session) -> AppTest:
    return page_alone("clean", ws, timeout=TIMEOUT, **session)


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _keys(at: AppTest, prefix: str) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith(prefix)]


def _save_fake_audit(ws: Workspace) -> tuple[str, pd.DataFrame]:
    """A saved audit with a few hand-made flags (fast; the real detectors are tested in tests/core/test_audit.py)."""
    dsid = ws.list_datasets()[0]["dataset_id"]
    from core.datasets import open_dataset

    s = open_dataset(ws, dsid).samples
    radios = s[s["element"] == "radio"].head(3)
    dup = s[s["element"] == "button"].head(2)
    rows = [dict(sample_id=r.sample_id, path=r.rel_path, issue="label_issue", score=0.9 - 0.1 * i,
                 suggested_action="relabel", suggested_label="checkbox", label="radio", label_column="element",
                 detail="cleanlab: given radio, predicted checkbox", group="") for i, r in enumerate(radios.itertuples())]
    rows += [dict(sample_id=r.sample_id, path=r.rel_path, issue="duplicate", score=1.0, suggested_action="exclude",
                  suggested_label="", label="button", label_column="", detail="identical bytes", group="dup:1")
             for r in dup.itertuples()]
    issues = pd.DataFrame(rows, columns=list(audit.ISSUE_COLUMNS))
    counts = {k: int((issues["issue"] == k).sum()) for k in audit.DETECTORS}
    audit.save_audit(ws, audit.AuditResult(issues=issues, dataset_id=dsid, config=audit.AuditConfig(), counts=counts,
                                           seconds=0.1, n_samples=len(s), created_at=time.time()))
    return dsid, issues


def test_the_app_lists_the_clean_page(ws):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/clean.py").run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Clean"]
    assert any("No audit yet" in i.value for i in at.info)


def test_run_audit_exclude_then_restart_finds_the_decision(ws):
    at = _page(ws)
    assert any("No audit yet" in i.value for i in at.info)
    # the slow detectors are switched off here (tests/core/test_audit.py measures them)
    at.checkbox(key="audit_on_near_duplicate").uncheck()
    at.checkbox(key="audit_on_label_issue").uncheck()
    at.number_input(key="audit_rare_min").set_value(15)
    at.button(key="audit_run").click().run(timeout=TIMEOUT)
    assert not at.exception, at.exception
    result = audit.load_audit(ws, ws.list_datasets()[0]["dataset_id"])
    assert result is not None and "label_issue" not in result.config.enabled and result.config.rare_min == 15
    m = _metrics(at)
    assert int(m["Flags"].replace(",", "")) == len(result.issues) > 0
    assert m["Reviewed"] == "0" and m["Decision version"] == "0"
    assert len(at.get("plotly_chart")) == 2  # flags per detector, flags per class
    # review the uniform flags: most suspect first, one click excludes
    at.selectbox(key="q_detector").set_value("uniform").run()
    uniform = result.issues[result.issues["issue"] == "uniform"]
    excl = _keys(at, "exclude_")
    assert len(excl) == min(len(uniform), 12)
    at.button(key=excl[0]).click().run()
    assert not at.exception, at.exception
    dsid = result.dataset_id
    log = review.decisions(Workspace(ws.root), dsid)  # straight from SQLite
    assert list(log["action"]) == ["exclude"] and log["detector"].iloc[0] == "uniform"
    sid = log["sample_id"].iloc[0]
    assert sid == uniform["sample_id"].iloc[0]
    assert len(_keys(at, "exclude_")) == len(excl) - 1 or len(uniform) > 12  # left the pending queue

    # "restart": a fresh session on the same workspace
    again = _page(ws)
    m = _metrics(again)
    assert m["Excluded"] == "1" and m["Reviewed"] == "1" and m["Decision version"] == "1"
    frames = [d.value for d in again.dataframe]
    log_df = next(f for f in frames if "decision_id" in f.columns)
    assert list(log_df["sample_id"]) == [sid] and bool(log_df["active"].iloc[0])
    prec = next(f for f in frames if "precision" in f.columns).set_index("detector")
    assert prec.loc["uniform", "confirmed"] == 1 and prec.loc["uniform", "rejected"] == 0
    # undo last, from the fresh session
    again.button(key="undo_last").click().run()
    assert not again.exception, again.exception
    assert _metrics(again)["Excluded"] == "0"
    assert review.decisions(ws, dsid, active_only=True).empty


def test_relabel_suggested_picker_bulk_and_details(ws):
    dsid, issues = _save_fake_audit(ws)
    at = _page(ws)
    assert _metrics(at)["Flags"] == "5"
    at.selectbox(key="q_detector").set_value("label_issue").run()
    relabel = _keys(at, "relabel_")
    assert len(relabel) == 3
    at.button(key=relabel[0]).click().run()  # one click: the suggested label
    assert not at.exception, at.exception
    act = review.decisions(ws, dsid, active_only=True)
    assert list(act["new_label"]) == ["checkbox"] and act["detector"].iloc[0] == "label_issue"
    # any label through the picker (the element level; the group follows the hierarchy)
    pos = _keys(at, "pick_apply_")[0].removeprefix("pick_apply_")
    at.selectbox(key=f"pick_{pos}").set_value("button")
    at.button(key=f"pick_apply_{pos}").click().run()
    assert not at.exception, at.exception
    eff = review.effective_labels(ws, ws.list_datasets()[0]["dataset_id"]).set_index("sample_id")
    picked = review.decisions(ws, dsid).iloc[0]["sample_id"]
    assert tuple(eff.loc[picked, ["group", "element"]]) == ("action", "button")
    # bulk on the filtered page: exclude both duplicates in one click, undo them in one click
    at.selectbox(key="q_detector").set_value("duplicate").run()
    at.button(key="bulk_exclude").click().run()
    assert _metrics(at)["Excluded"] == "2"
    at.button(key="undo_last").click().run()
    assert _metrics(at)["Excluded"] == "0"
    # relabel the whole filtered page at once (e.g. merging a class), one batch
    at.selectbox(key="bulk_label").set_value("link")
    at.button(key="bulk_relabel").click().run()
    assert not at.exception, at.exception
    assert _metrics(at)["Relabelled"] == "4"  # 2 radios above + the 2 buttons
    at.button(key="undo_last").click().run()
    assert _metrics(at)["Relabelled"] == "2"
    # the details view shows the duplicate group side by side
    at.button(key=_keys(at, "focus_")[0]).click().run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Sample ") for s in at.subheader)
    assert any("Same group" in md.value for md in at.markdown)
    assert at.session_state["clean_focus"] in set(issues["sample_id"])


def test_label_issue_source_choice_is_saved_with_the_audit(ws):
    """"Label issues from" offers the quick classifier's feature sets (and finished runs); the choice is the
    saved audit's ``label_issue_features`` and the summary says which features the flags came from."""
    at = _page(ws)
    for name in audit.DETECTORS:
        if name != "label_issue":
            at.checkbox(key=f"audit_on_{name}").uncheck()
    box = at.selectbox(key="audit_source")
    assert box.value == "(quick classifier: image + ImageNet features when cached)"  # the default: auto
    assert "(quick classifier: image features only, fastest)" in box.options
    box.set_value("(quick classifier: image features only, fastest)")
    at.button(key="audit_run").click().run(timeout=TIMEOUT)
    assert not at.exception, at.exception
    result = audit.load_audit(ws, ws.list_datasets()[0]["dataset_id"])
    assert result.config.label_issue_features == "image" and result.source == "features"
    assert result.counts["label_issue"] > 0
    assert any("label issues from the quick classifier on image features" in c.value for c in at.caption)
    # the next form starts from the saved choice
    assert at.selectbox(key="audit_source").value == "(quick classifier: image features only, fastest)"


def test_near_duplicate_features_are_chosen_in_the_form_and_saved_with_the_audit(ws):
    """Pixels by default; the choice reaches the audit's config and the next form starts from it."""
    at = _page(ws)
    for name in audit.DETECTORS:
        if name not in ("duplicate", "near_duplicate"):
            at.checkbox(key=f"audit_on_{name}").uncheck()
    box = at.selectbox(key="audit_near_features")
    assert box.value == "pixels"
    assert [audit.NEAR_FEATURES[k] for k in audit.NEAR_FEATURES] == box.options
    box.set_value("auto")
    at.button(key="audit_run").click().run(timeout=TIMEOUT)
    assert not at.exception, at.exception
    result = audit.load_audit(ws, ws.list_datasets()[0]["dataset_id"])
    assert result.config.near_duplicate_features == "auto"
    assert at.selectbox(key="audit_near_features").value == "auto"
