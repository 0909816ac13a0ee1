"""Clean: audit the dataset, review what it flags (keep / exclude / relabel), export the cleaned labels.

Every click is written to the workspace SQLite store at once (core.review); training uses the
effective labels (raw labels + decisions) by default.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import audit, charts, review
from core.engines import EngineError
from core.workspace import home
from ui import state
from ui.state import esc

GRID_COLUMNS = 4
PAGE_SIZES = (12, 24, 48, 96)
ALL = "(all)"
STATUSES = ("pending", "decided", "all")
ACTION_ICONS = {"keep": "✔ kept", "exclude": "✖ excluded", "relabel": "✎ relabelled"}
#: The quick classifier's feature choices (core.audit.LABEL_FEATURES) as the "Label issues from" options.
QUICK_SOURCES = {
    "auto": "(quick classifier: image + ImageNet features when cached)",
    "image+imagenet": "(quick classifier: image + ImageNet features, download if needed)",
    "image": "(quick classifier: image features only, fastest)",
}
#: AuditResult.source -> words for the summary caption (a run id otherwise).
SOURCE_WORDS = {"features": "the quick classifier on image features",
                "features+imagenet": "the quick classifier on image + pretrained ImageNet features"}

ws = state.workspace()
st.title("Clean")
ds = state.current_dataset(ws)
if ds is None:
    st.info("No dataset selected: add one on the Data page, or pick one in the sidebar.")
    st.stop()


# ---------------------------------------------------------------------------
# Cached reads (keyed by ids, never by big objects)
# ---------------------------------------------------------------------------

def _image(pos: int | None) -> np.ndarray | None:
    if pos is None:
        return None
    return np.asarray(state.previews(ws, ds.dataset_id)[pos])


@st.cache_resource(show_spinner=False, max_entries=4)
def _positions(root: str, dataset_id: str, updated_at: float, _ids: pd.Series) -> pd.Series:
    """sample id -> row of the samples table (built once per dataset version: 100k string keys)."""
    return pd.Series(np.arange(len(_ids)), index=pd.Index(_ids.astype(str).to_numpy(dtype=object)))


@st.cache_resource(show_spinner=False, max_entries=4)
def _saved_audit(root: str, dataset_id: str, stamp: int) -> tuple:
    """The latest audit, its flags per class and each flagged sample's flags (joined with commas), read and
    derived once per saved audit (at 100k images: 99k flags). Shared by sessions: the page never mutates them."""
    result = audit.load_audit(home(root), dataset_id)
    if result is None:
        return None, None, None
    flags = result.issues.drop_duplicates(["sample_id", "issue"])
    # only samples with several flags are joined (a groupby over every sample took 0.23 s for 24k flags)
    several = flags["sample_id"].duplicated(keep=False).to_numpy()
    per_sample = pd.concat([flags.loc[~several].set_index("sample_id")["issue"],
                            flags.loc[several].groupby("sample_id", sort=False)["issue"].agg(",".join)])
    return result, audit.issues_by_class(result), per_sample


POS = _positions(str(ws.root), ds.dataset_id, state.updated_at(ws, ds.dataset_id), ds.samples["sample_id"])


def _pos(sample_id: str) -> int | None:
    p = POS.get(str(sample_id))
    return None if p is None else int(p)


# ---------------------------------------------------------------------------
# Decisions (callbacks: the write happens before the page re-renders)
# ---------------------------------------------------------------------------

def _decide(rows: list[dict], message: str) -> None:
    try:
        review.record_decisions(ws, ds, rows)
    except ValueError as exc:
        st.session_state["clean_error"] = str(exc)
        return
    st.session_state["clean_msg"] = message


def _decide_one(sample_id: str, action: str, detector: str | None, new_label: str | None = None,
                label_column: str | None = None) -> None:
    _decide([dict(sample_id=sample_id, action=action, detector=detector, new_label=new_label,
                  label_column=label_column)],
            f"{action} · {sample_id}" + (f" → {new_label}" if new_label is not None else ""))


def _decide_picked(sample_id: str, key: str, detector: str | None, label_column: str | None) -> None:
    value = st.session_state.get(key)
    if ds.task == "multilabel":
        value = review.MULTILABEL_SEP.join(value or [])
    elif not value:
        st.session_state["clean_error"] = "Pick a label first."
        return
    _decide_one(sample_id, "relabel", detector, value, label_column)


def _bulk_relabel(targets: list[tuple[str, str | None]]) -> None:
    label = st.session_state.get("bulk_label")
    if not label:
        st.session_state["clean_error"] = "Pick a label first."
        return
    _decide([dict(sample_id=sid, action="relabel", new_label=label, detector=det) for sid, det in targets],
            f"relabelled {len(targets)} sample(s) → {label}")


def _undo_last() -> None:
    ids = review.undo_last(ws, ds.dataset_id)
    st.session_state["clean_msg"] = f"Undid {len(ids)} decision(s)." if ids else "Nothing to undo."


# ---------------------------------------------------------------------------
# Audit
# ---------------------------------------------------------------------------

def _runs_of_dataset() -> dict[str, str]:
    from core import jobs

    df = jobs.list_runs(ws)
    if df.empty:
        return {}
    df = df[(df["dataset_id"] == ds.dataset_id) & df["has_predictions"].astype(bool)]
    return dict(zip(df["run_id"], df["path"]))


def audit_panel(result) -> None:
    cur = result.config if result is not None else audit.AuditConfig()
    title = "Run the audit" if result is None else "Run the audit again (adjust thresholds)"
    with st.expander(title, expanded=result is None):
        with st.form("audit_form"):
            st.markdown("**Detectors**")
            cols = st.columns(3)
            enabled = []
            for i, (name, desc) in enumerate(audit.DETECTORS.items()):
                with cols[i % 3]:
                    if st.checkbox(name, value=name in cur.enabled, key=f"audit_on_{name}", help=desc):
                        enabled.append(name)
                    st.caption(desc)
            st.markdown("**Thresholds**")
            values = {}
            tcols = st.columns(3)
            for i, (name, (label, lo, hi, step, help_)) in enumerate(audit.CONFIG_FIELDS.items()):
                v = getattr(cur, name)
                with tcols[i % 3]:
                    if isinstance(v, int):
                        values[name] = int(st.number_input(label, min_value=int(min(lo, v)), max_value=int(max(hi, v)),
                                                           value=int(v), step=int(step), help=help_,
                                                           key=f"audit_{name}"))
                    else:
                        values[name] = float(st.number_input(label, min_value=float(min(lo, v)),
                                                             max_value=float(max(hi, v)), value=float(v),
                                                             step=float(step), help=help_, key=f"audit_{name}",
                                                             format="%.4g"))
            runs_ = _runs_of_dataset()
            quick = {QUICK_SOURCES[k]: k for k in audit.LABEL_FEATURES}
            first = QUICK_SOURCES.get(cur.label_issue_features, next(iter(quick)))
            source = st.selectbox(
                "Label issues from", [first, *(q for q in quick if q != first), *runs_], key="audit_source",
                help="A trained run's validation/test predictions (out-of-sample) sharpen the label-issue "
                     "detector. Without one, a cross-validated classifier on cheap image features runs, "
                     "plus a pretrained ImageNet backbone's features (MobileNetV2, the Embeddings page's) when "
                     "its weights are at hand: on photos they flag far fewer correct labels.")
            near = st.selectbox(
                "Near duplicates from", list(audit.NEAR_FEATURES), format_func=audit.NEAR_FEATURES.get,
                index=list(audit.NEAR_FEATURES).index(cur.near_duplicate_features), key="audit_near_features",
                help="Pixels find exact and lightly edited copies. On photos, pretrained ImageNet features checked "
                     "by keypoints also find copies that were cropped, rotated, re-lit or recompressed; on "
                     "synthetic renderings (one UI layout in several themes) they pair look-alikes too.")
            submitted = st.form_submit_button("Run audit", type="primary", key="audit_run")
    if submitted:
        try:
            cfg = audit.AuditConfig.from_dict({**cur.to_dict(), **values, "enabled": enabled,
                                               "label_issue_features": quick.get(source, cur.label_issue_features),
                                               "near_duplicate_features": near})
        except ValueError as exc:
            st.error(f"Invalid thresholds: {exc}")
            return
        bar = st.progress(0.0, text="Auditing…")

        def progress(stage: str, fraction: float) -> None:
            bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"Auditing… {stage}")

        try:
            res = audit.audit_dataset(ds, workspace=ws, config=cfg, run_dir=runs_.get(source), progress=progress,
                                      engine=state.engine(ws))
        except (ValueError, OSError, EngineError) as exc:
            bar.empty()
            st.error(f"The audit failed: {exc}")
            return
        bar.empty()
        st.session_state["clean_msg"] = (f"Audit done in {res.seconds:.1f} s: {len(res.issues):,} flags on "
                                         f"{res.n_samples:,} samples.")
        st.rerun()


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------

def summary(result, issues: pd.DataFrame, active: pd.DataFrame) -> None:
    flagged = set(issues["sample_id"].astype(str))
    decided = dict(zip(active["sample_id"].astype(str), active["action"]))
    reviewed = sum(1 for s in flagged if s in decided)
    c = st.columns(6)
    c[0].metric("Flags", f"{len(issues):,}")
    c[1].metric("Samples flagged", f"{len(flagged):,}")
    c[2].metric("Reviewed", f"{reviewed:,}")
    c[3].metric("Excluded", f"{sum(a == 'exclude' for a in decided.values()):,}")
    c[4].metric("Relabelled", f"{sum(a == 'relabel' for a in decided.values()):,}")
    c[5].metric("Decision version", f"{review.decision_version(ws, ds.dataset_id):,}")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(result.created_at)) if result.created_at else "?"
    source = (f"; label issues from {SOURCE_WORDS.get(result.source, f'run {result.source}')}"
              if "label_issue" in result.config.enabled else "")
    st.caption(f"Audit of {result.n_samples:,} samples in {result.seconds:.1f} s ({when}){esc(source)}. Training and evaluation use the effective labels (raw labels + decisions) "
               "by default; `python -m core train --raw-labels` opts out.")
    for note in result.notes:
        st.caption(esc(note))
    counts = pd.Series({k: int(result.counts.get(k, 0)) for k in audit.DETECTORS if k in result.config.enabled})
    a, b = st.columns(2)
    fig = charts.label_distribution(counts, title="Flags per detector").update_xaxes(title="flags")
    a.plotly_chart(fig, key="chart_issues_detector")
    table = AUDIT_BY_CLASS
    if len(table):
        b.plotly_chart(charts.stacked_counts(table, x_title="flags", title="Flags per class"),
                       key="chart_issues_class")
    else:
        b.info("No flag names a class.")


# ---------------------------------------------------------------------------
# Review queue
# ---------------------------------------------------------------------------

def _label_options(column: str | None) -> list[str]:
    if ds.task == "multilabel":
        return list(ds.label_columns)
    column = column or ds.label_columns[-1]
    return list(ds.schema.classes.get(column, ()))


def _queue(issues: pd.DataFrame, active: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Filters -> one row per sample (its most suspect matching flag), in display order; plus the filter values."""
    f1, f2, f3, f4 = st.columns([2, 2, 3, 2])
    counts = issues["issue"].value_counts()
    present = [d for d in audit.DETECTORS if d in counts.index]
    detector = f1.selectbox("Detector", [ALL, *present], key="q_detector",
                            format_func=lambda d: d if d == ALL else f"{d} ({int(counts[d]):,})")
    rows = issues if detector == ALL else issues[issues["issue"] == detector]
    classes = sorted(c for c in rows["label"].astype(str).unique() if c)
    klass = f2.selectbox("Class", [ALL, *classes], key="q_class")
    if klass != ALL:
        rows = rows[rows["label"].astype(str) == klass]
    status = f4.segmented_control("Status", STATUSES, default="pending", key="q_status") or "all"
    decided = set(active["sample_id"].astype(str))
    if status == "pending":
        rows = rows[~rows["sample_id"].astype(str).isin(decided)]
    elif status == "decided":
        rows = rows[rows["sample_id"].astype(str).isin(decided)]
    scores = rows["score"].astype(float)
    if detector != ALL and len(rows) and scores.max() > scores.min():
        lo, hi = float(scores.min()), float(scores.max())
        cut = f3.slider("Minimum score (higher = more suspect)", min_value=lo, max_value=hi, value=lo,
                        key=f"q_score_{detector}")
        rows = rows[scores >= cut]
    elif detector == ALL:
        f3.caption("Pick a detector to filter by score (scores compare within one detector).")
    if detector != ALL:
        rows = rows.sort_values("score", ascending=False, kind="stable")
    first = rows.drop_duplicates("sample_id", keep="first")
    first = first.assign(issues=first["sample_id"].map(AUDIT_FLAGS_PER_SAMPLE))  # every flag of each sample
    return first.reset_index(drop=True), {"detector": None if detector == ALL else detector}


def _detector_of(row: pd.Series, detector: str | None) -> str:
    """The flag(s) a decision answers: the filtered detector, else every detector that flagged the sample."""
    return detector or str(row["issues"])


def _card(row: pd.Series, detector: str | None, decision: tuple | None, i: int) -> None:
    sid = str(row["sample_id"])
    pos = _pos(sid)
    img = _image(pos)
    if img is not None:
        st.image(img, width="stretch")
    else:
        st.markdown("🚫 *not loaded*")
    label = str(row["label"]) or "—"
    st.caption(f"**{esc(label)}** · {esc(row['issues'])} · score {float(row['score']):.3g}")
    st.caption(esc(Path(str(row["path"])).name), help=str(row["detail"]))
    if decision is not None:
        action, new = decision
        st.markdown(f":blue-badge[{ACTION_ICONS.get(action, action)}{' → ' + esc(new) if new else ''}]")
    if pos is None:
        st.caption("Never became a sample (not used in training): fix or delete the file.")
        return
    det = _detector_of(row, detector)
    b1, b2 = st.columns(2)
    b1.button("Keep", key=f"keep_{pos}", on_click=_decide_one, args=(sid, "keep", det), width="stretch")
    b2.button("Exclude", key=f"exclude_{pos}", on_click=_decide_one, args=(sid, "exclude", det), width="stretch")
    column = str(row.get("label_column") or "") or None
    sug = str(row.get("suggested_label") or "")
    if sug and sug != str(row["label"]):
        st.button(f"→ {sug}", key=f"relabel_{pos}", on_click=_decide_one,
                  args=(sid, "relabel", det, sug, column), width="stretch", help=f"Relabel as {sug}")
    with st.popover("Relabel…", width="stretch"):
        _label_picker(sid, pos, det, column, key_prefix="pick")
    st.button("Details", key=f"focus_{pos}", on_click=st.session_state.__setitem__, args=("clean_focus", sid),
              type="tertiary")


def _label_picker(sid: str, pos: int, det: str | None, column: str | None, *, key_prefix: str) -> None:
    options = _label_options(column)
    key = f"{key_prefix}_{pos}"
    if ds.task == "multilabel":
        st.multiselect("Labels (the full set)", options, key=key)
    else:
        st.selectbox(f"New {column or ds.label_columns[-1]}", options, index=None, key=key,
                     placeholder="Choose a label")
    st.button("Apply", key=f"{key_prefix}_apply_{pos}", on_click=_decide_picked, args=(sid, key, det, column))


def review_queue(issues: pd.DataFrame, active: pd.DataFrame) -> None:
    st.subheader("Review queue")
    queue, filt = _queue(issues, active)
    detector = filt["detector"]
    unloaded = queue[POS.reindex(queue["sample_id"].astype(str)).isna().to_numpy()]
    if len(unloaded):
        with st.expander(f"{len(unloaded):,} flagged file(s) never became samples (not used in training)"):
            st.dataframe(unloaded[["path", "issue", "detail"]], hide_index=True, width="stretch",
                         key="unloaded_table")
            st.caption("Fix or delete these files; there is nothing to decide for them.")
        queue = queue.drop(index=unloaded.index).reset_index(drop=True)
    decisions_ = {str(s): (a, n if isinstance(n, str) else None)  # keep / exclude have no label (NaN)
                  for s, a, n in zip(active["sample_id"], active["action"], active["new_label"])}
    c1, c2, c3 = st.columns([2, 2, 6])
    size = c1.selectbox("Per page", PAGE_SIZES, index=0, key="q_page_size")
    n_pages = max(1, -(-len(queue) // size))
    page = int(c2.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="q_page"))
    chunk = queue.iloc[(page - 1) * size: page * size]
    c3.caption(f"{len(queue):,} sample(s) match; sorted by score"
               + ("" if detector else " within each detector") + ".")
    decidable = chunk[chunk["sample_id"].map(lambda s: _pos(s) is not None)] if len(chunk) else chunk

    def bulk(action: str) -> list[dict]:
        out = []
        for _, r in decidable.iterrows():
            det = _detector_of(r, detector)
            if action == "suggested":
                a = str(r["suggested_action"])
                sug = str(r.get("suggested_label") or "")
                if a == "relabel" and sug:
                    out.append(dict(sample_id=r["sample_id"], action="relabel", new_label=sug, detector=det,
                                    label_column=str(r.get("label_column") or "") or None))
                elif a in ("keep", "exclude"):
                    out.append(dict(sample_id=r["sample_id"], action=a, detector=det))
            else:
                out.append(dict(sample_id=r["sample_id"], action=action, detector=det))
        return out

    b = st.columns([2, 2, 3, 2, 3])
    b[0].button(f"Keep all {len(decidable)}", key="bulk_keep", on_click=_decide,
                args=(bulk("keep"), f"kept {len(decidable)} sample(s)"), disabled=decidable.empty)
    b[1].button(f"Exclude all {len(decidable)}", key="bulk_exclude", on_click=_decide,
                args=(bulk("exclude"), f"excluded {len(decidable)} sample(s)"), disabled=decidable.empty)
    sug_rows = bulk("suggested")
    b[2].button(f"Apply suggestions ({len(sug_rows)})", key="bulk_suggested", on_click=_decide,
                args=(sug_rows, f"applied {len(sug_rows)} suggestion(s)"), disabled=not sug_rows,
                help="Each sample's suggested action: exclude, or relabel to the suggested label "
                     "('review' suggestions are left for you).")
    if ds.task != "multilabel":
        with b[4].popover(f"Relabel all {len(decidable)}…", disabled=decidable.empty):
            st.selectbox(f"New {ds.label_columns[-1]} for every sample on this page (e.g. merge a rare class)",
                         _label_options(None), index=None, key="bulk_label", placeholder="Choose a label")
            st.button("Apply to the page", key="bulk_relabel", on_click=_bulk_relabel,
                      args=([(str(r["sample_id"]), _detector_of(r, detector)) for _, r in decidable.iterrows()],))
    b[3].button("Undo last", key="undo_last", on_click=_undo_last, icon=":material/undo:",
                help="Undo the latest click (a bulk action is undone as a whole).")
    if chunk.empty:
        st.info("Nothing to review with these filters." if len(issues) else "The audit found nothing.")
        return
    rows = list(chunk.iterrows())
    for start in range(0, len(rows), GRID_COLUMNS):
        cols = st.columns(GRID_COLUMNS)
        for j, (_, r) in enumerate(rows[start:start + GRID_COLUMNS]):
            with cols[j]:
                with st.container(border=True):
                    _card(r, detector, decisions_.get(str(r["sample_id"])), start + j)


# ---------------------------------------------------------------------------
# Detail view: one sample, larger, with its duplicates / group side by side
# ---------------------------------------------------------------------------

def _original(sample_id: str) -> np.ndarray | None:
    from core.images import ImageError, load_image

    pos = _pos(sample_id)
    if pos is None:
        return None
    r = ds.samples.iloc[pos]
    box = None if pd.isna(r["x1"]) else (r["x1"], r["y1"], r["x2"], r["y2"])
    try:
        return load_image(r["path"], box=box)
    except (ImageError, OSError):
        return _image(pos)


def _label_of(sample_id: str, eff: pd.DataFrame) -> str:
    pos = _pos(sample_id)
    if pos is None:
        return "—"
    r = eff.iloc[pos]
    if ds.task == "multilabel":
        return ", ".join(c for c in ds.label_columns if r[c] == 1.0) or "(none)"
    return " › ".join(str(r[c]) for c in ds.label_columns)


def detail_view(issues: pd.DataFrame, active: pd.DataFrame, eff: pd.DataFrame) -> None:
    sid = st.session_state.get("clean_focus")
    if not sid or sid not in set(issues["sample_id"].astype(str)):
        return
    mine = issues[issues["sample_id"].astype(str) == sid]
    st.subheader(f"Sample {sid}")
    st.button("Close", key="focus_close", on_click=st.session_state.__setitem__, args=("clean_focus", None),
              type="tertiary")
    left, right = st.columns([2, 3])
    with left:
        img = _original(sid)
        if img is not None:
            st.image(img, width="stretch", caption=f"{_label_of(sid, eff)} (effective)")
        else:
            st.info("This file never loaded (corrupt): nothing to show.")
    with right:
        st.dataframe(mine[["issue", "score", "suggested_action", "suggested_label", "detail"]], hide_index=True,
                     width="stretch")
        pos = _pos(sid)
        if pos is not None:
            det = ",".join(dict.fromkeys(mine["issue"].astype(str)))
            c = st.columns(2)
            c[0].button("Keep", key=f"d_keep_{pos}", on_click=_decide_one, args=(sid, "keep", det))
            c[1].button("Exclude", key=f"d_exclude_{pos}", on_click=_decide_one, args=(sid, "exclude", det))
            column = next((str(x) for x in mine.get("label_column", pd.Series(dtype=str)) if str(x)), None)
            _label_picker(sid, pos, det, column, key_prefix="dpick")
    groups = [g for g in mine["group"].astype(str).unique() if g and g != str(mine["label"].iloc[0])]
    others = issues[issues["group"].astype(str).isin(groups) & (issues["sample_id"].astype(str) != sid)]
    others_ids = list(dict.fromkeys(others["sample_id"].astype(str)))[:GRID_COLUMNS]
    title = "Same group (duplicates)"
    if not others_ids:
        sug = next((str(x) for x in mine["suggested_label"].astype(str) if x), "")
        col = ds.label_columns[-1] if ds.task != "multilabel" else None
        if sug and col:
            same = ds.samples[(ds.samples[col].astype(str) == sug) & (ds.samples["sample_id"] != sid)]
            others_ids = same["sample_id"].astype(str).head(GRID_COLUMNS).tolist()
            title = f"Examples of the suggested label {sug}"
    if others_ids:
        st.markdown(f"**{esc(title)}**")
        cols = st.columns(GRID_COLUMNS)
        for j, o in enumerate(others_ids):
            with cols[j]:
                im = _image(_pos(o))
                if im is not None:
                    st.image(im, width="stretch")
                st.caption(esc(f"{_label_of(o, eff)} · {Path(o).name}"))
    st.divider()


# ---------------------------------------------------------------------------
# Log, precision, exports
# ---------------------------------------------------------------------------

def log_and_exports(issues: pd.DataFrame | None) -> None:
    log = review.decisions(ws, ds.dataset_id)
    tab_log, tab_prec, tab_export = st.tabs(["Decision log", "Flagger precision", "Export"])
    with tab_log:
        if log.empty:
            st.info("No decision yet: every click in the review queue is saved here at once.")
        else:
            shown = log.assign(
                time=pd.to_datetime(log["created_at"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S"),
                undone=log["undone_at"].notna())
            st.dataframe(shown[["decision_id", "time", "sample_id", "action", "label_column", "old_label",
                                "new_label", "detector", "active", "undone"]], hide_index=True, width="stretch",
                         key="decision_log")
    with tab_prec:
        prec = review.detector_precision(ws, ds.dataset_id, issues=issues)
        if prec.empty:
            st.info("Run the audit, then review flags: each detector's precision appears here.")
        else:
            st.dataframe(prec, hide_index=True, width="stretch", key="precision_table", column_config={
                "precision": st.column_config.ProgressColumn("precision", min_value=0.0, max_value=1.0,
                                                             format="percent"),
            })
            st.caption("Confirmed = excluded or relabelled; rejected = kept. Precision = confirmed / reviewed.")
    with tab_export:
        st.caption("The patch lists every decision in effect (old and new labels); the cleaned table is the "
                   "whole dataset with the effective labels, excluded samples left out. Paths are as given "
                   "in the dataset.")
        c1, c2 = st.columns(2)
        c1.download_button("Label patch (CSV)", data=lambda: review.export_patch_csv(ws, ds),
                           file_name=f"{ds.dataset_id}-label-patch.csv", mime="text/csv", key="dl_patch",
                           on_click="ignore")
        c2.download_button("Cleaned labels (CSV)", data=lambda: review.export_cleaned_csv(ws, ds),
                           file_name=f"{ds.dataset_id}-cleaned-labels.csv", mime="text/csv", key="dl_cleaned",
                           on_click="ignore")


# ---------------------------------------------------------------------------

if msg := st.session_state.pop("clean_msg", None):
    st.success(msg)
if err := st.session_state.pop("clean_error", None):
    st.error(err)
st.caption(f"{esc(ds.name)} · {len(ds.samples):,} samples · {esc(ds.task)}")
result, AUDIT_BY_CLASS, AUDIT_FLAGS_PER_SAMPLE = _saved_audit(str(ws.root), ds.dataset_id,
                                                              audit.audit_stamp(ws, ds.dataset_id))
audit_panel(result)
if result is None:
    st.info("No audit yet for this dataset: press **Run audit** above (the demo takes a few seconds).")
    log_and_exports(None)
    st.stop()
issues = result.issues
active = review.decisions(ws, ds.dataset_id, active_only=True)
eff = review.effective_labels(ws, ds)
summary(result, issues, active)
detail_view(issues, active, eff)
review_queue(issues, active)
log_and_exports(issues)
