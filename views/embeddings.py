"""Embeddings: the map of a run's embedding space, clusters, and "unlike anything in training" scores."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import streamlit as st

from core import embedding_charts as charts
from core import embeddings as E
from core import runs
from core.engines import EngineError
from core.workspace import WorkspaceError, confine
from ui import state

#: Points drawn on the map at most (every mistake and flagged sample is kept; the rest is sampled by label).
MAX_DRAWN = 20000  # at 100k samples a warm Map tab: ~1.0 s in Chromium at 20k points, ~1.1-2.2 s at 30k
#: UMAP fits on at most this many points and places the rest with transform.
UMAP_FIT_MAX = 15000
GALLERY_MAX = 48
THUMB = 96
COLOUR_OPTIONS = ("label", "prediction", "correct", "split", "cluster", "audit flag")
#: The page's tabs (their labels are the values of the ``emb_tab`` URL parameter).
TABS = ("Map", "Clusters", "Unusual images (OOD)")
#: Each tab's value widgets: their values are kept while the tab is hidden.
_TAB_KEYS = (("emb_method", "emb_dims", "emb_colour", "emb_show_unseen"), ("emb_cluster_method", "emb_k"),
             ("emb_ood_method", "emb_ood_fpr", "emb_ood_folder"))


# ---------------------------------------------------------------------------
# cached core calls (keyed by ids + mtimes, never by hashing arrays)
# ---------------------------------------------------------------------------

@st.cache_resource(show_spinner=False, max_entries=4)
def _embeddings(run_dir: str, model_mtime: int, emb_mtime: int, ws_root: str) -> E.Embeddings:
    return E.compute_embeddings(run_dir, workspace=ws_root)


@st.cache_resource(show_spinner=False, max_entries=8)
def _projection(run_id: str, emb_mtime: int, method: str, dims: int, _vectors: np.ndarray) -> E.Projection:
    return E.project(_vectors, method=method, dims=dims, seed=0,
                     **({"fit_size": UMAP_FIT_MAX} if method == "umap" else {}))


@st.cache_data(show_spinner=False, max_entries=16)
def _clusters(run_id: str, emb_mtime: int, method: str, k: int | None, _emb: E.Embeddings) -> E.Clustering:
    return E.cluster(_emb.vectors, method=method, k=k, true_labels=_emb.labels)


@st.cache_resource(show_spinner=False, max_entries=8)
def _unseen(run_dir: str, emb_mtime: int, key: str, ws_root: str, _paths: tuple[str, ...]):
    vectors, ok = E.embed_paths(run_dir, list(_paths), workspace=ws_root)
    return vectors, ok


@st.cache_resource(show_spinner=False, max_entries=2)
def _bb_embeddings(ws_root: str, dataset_id: str, file_mtime: int) -> E.Embeddings:
    from core.workspace import home

    return E.backbone_embeddings(home(ws_root), dataset_id)


@st.cache_data(show_spinner=False, max_entries=8)
def _bb_fresh(ws_root: str, dataset_id: str, updated_at: float, file_mtime: int) -> bool:
    """Whether the cached pretrained embeddings match the dataset (reads its key, no vectors), checked
    again only when the dataset or the file changes: a rerun does not reopen the dataset."""
    from core.workspace import home

    return E.backbone_embeddings_fresh(home(ws_root), dataset_id)


@st.cache_resource(show_spinner=False, max_entries=4)
def _bb_unseen(ws_root: str, key: str, _paths: tuple[str, ...]):
    from core.workspace import home

    return E.backbone_embed_paths(list(_paths), workspace=home(ws_root))


@st.cache_resource(show_spinner=False, max_entries=8)
def _ood_model(run_id: str, emb_mtime: int, method: str, _emb: E.Embeddings) -> E.OODModel:
    return E.fit_ood(_emb, method=method)


@st.cache_data(show_spinner=False, max_entries=16)
def _ood_evaluation(run_id: str, emb_mtime: int, method: str, fpr: float, unseen_key: str, _emb: E.Embeddings,
                    _unseen: np.ndarray, _model: E.OODModel) -> E.OODEvaluation:
    """Test and unseen scores, threshold and AUROC (scoring 20k test vectors on every rerun cost ~0.3 s at 100k)."""
    return E.evaluate_ood(_emb, _unseen, method=method, fpr=fpr, model=_model)


@st.cache_data(show_spinner=False, max_entries=4)
def _audit_flags(ws_root: str, dataset_id: str, stamp: float) -> dict[str, str]:
    """sample_id -> first audit issue, from the Clean page's saved audit (empty when none)."""
    from core import audit
    from core.workspace import home

    result = audit.load_audit(home(ws_root), dataset_id)  # None: no saved audit (or an unreadable one)
    if result is None or result.issues.empty:
        return {}
    first = result.issues.drop_duplicates("sample_id")
    return dict(zip(first["sample_id"].astype(str), first["issue"].astype(str)))


def _gallery(images: np.ndarray, captions: list[str], *, per_row: int = 8) -> None:
    for start in range(0, len(images), per_row):
        cols = st.columns(per_row)
        for col, img, cap in zip(cols, images[start:start + per_row], captions[start:start + per_row]):
            col.image(img, caption=cap, width="stretch")


# ---------------------------------------------------------------------------
# page
# ---------------------------------------------------------------------------

st.title("Embeddings")
st.caption("The embedding of every sample: a map to find clusters and mistakes, clusters vs labels, and a score for "
           "images unlike anything in training.")
ws = state.workspace()
ds_current = state.current_dataset(ws)
run_dir = state.pick_run(ws, key=state.RUN_KEY)
sources = (["run"] if run_dir else []) + (["backbone"] if ds_current is not None else [])
if not sources:
    st.info("No dataset and no finished run yet: add a dataset on the **Data** page, then train a model on the "
            "**Train** page; its embedding map appears here.")
    st.stop()
if run_dir is None:
    st.info("No finished run yet. Train a model on the **Train** page for the map of its embedding layer; "
            "meanwhile you can map the selected dataset with a pretrained ImageNet backbone (MobileNetV2).")
source = st.radio("Embeddings from", sources, horizontal=True, key="emb_source",
                  format_func={"run": "the run's embedding layer",
                               "backbone": "a pretrained backbone (no training needed)"}.get) \
    if len(sources) > 1 else sources[0]

progress_slot = st.empty()


def _progress(done: int, total: int) -> None:
    progress_slot.progress(min(1.0, done / max(total, 1)), text=f"Embedding every sample: "
                                                                 f"{done // 2 if done < total else total // 2:,}")


if source == "run":
    rd = runs.RunDir(Path(run_dir))
    if not rd.model.exists():
        st.info(f"Run {state.esc(rd.run_id)} has no checkpoint (model.keras) yet.")
        st.stop()
    try:
        if not E.embeddings_fresh(rd.path, workspace=ws):  # first visit: compute (with progress), cache on disk
            E.compute_embeddings(rd.path, workspace=ws, progress=_progress, engine=state.engine(ws))
        emb = _embeddings(str(rd.path), state.mtime(rd.model), state.mtime(E.embeddings_path(rd)), str(ws.root))
    except (ValueError, OSError, EngineError) as exc:
        progress_slot.empty()
        st.error(f"Cannot embed run {state.esc(rd.run_id)}: {state.esc(exc)}")
        st.stop()
    ident = rd.run_id
    emb_mtime = state.mtime(E.embeddings_path(rd))
    dataset_id = runs.read_config(rd).get("dataset_id")
    try:
        unseen_paths: tuple[str, ...] = tuple(runs.run_dataset(rd, workspace=ws).unseen_paths)
    except Exception:  # noqa: BLE001 - the dataset is gone: the map still works from the cached file
        unseen_paths = ()

    def thumbs(ids):
        return E.sample_thumbnails(rd.path, list(ids), size=THUMB, workspace=ws)

    def embed_unseen(paths: tuple[str, ...]):
        return _unseen(str(rd.path), emb_mtime, hashlib.sha1("\n".join(paths).encode()).hexdigest(), str(ws.root),
                       paths)
else:
    rd = None
    dataset_id = ds_current.dataset_id
    bb_path = E.backbone_embeddings_path(ws, dataset_id)
    if not bb_path.exists() and not st.session_state.get(f"emb_bb_go_{dataset_id}"):
        st.markdown(f"Map **{state.esc(ds_current.name)}** ({len(ds_current.samples):,} samples) with the pooled "
                    f"features of an ImageNet MobileNetV2-{E.BACKBONE['alpha']} at {E.BACKBONE['image_size']} px.")
        st.button("Compute pretrained embeddings", type="primary", key="emb_bb_button",
                  on_click=lambda: st.session_state.update({f"emb_bb_go_{dataset_id}": True}))
        st.stop()
    try:
        if not _bb_fresh(str(ws.root), dataset_id, state.updated_at(ws, dataset_id), state.mtime(bb_path)):
            E.backbone_embeddings(ws, dataset_id, progress=_progress, engine=state.engine(ws))
        emb = _bb_embeddings(str(ws.root), dataset_id, state.mtime(bb_path))
    except Exception as exc:  # noqa: BLE001 - WeightsUnavailable (offline) or an unreadable dataset: say why
        progress_slot.empty()
        st.error(f"Cannot compute pretrained embeddings: {state.esc(exc)}")
        st.stop()
    ident = f"bb:{dataset_id}"
    emb_mtime = state.mtime(bb_path)
    unseen_paths = tuple(ds_current.unseen_paths)

    def thumbs(ids):
        return E.dataset_thumbnails(ds_current, list(ids), workspace=ws, size=THUMB)

    def embed_unseen(paths: tuple[str, ...]):
        return _bb_unseen(str(ws.root), hashlib.sha1("\n".join(paths).encode()).hexdigest(), paths)
progress_slot.empty()
if len(emb) < 4:
    st.info(f"Only {len(emb)} embeddable samples: too few for a map.")
    st.stop()

known = emb.labels != ""
c = st.columns(5)
c[0].metric("samples", f"{len(emb):,}")
c[1].metric("embedding dims", emb.dim)
c[2].metric("classes", len(emb.classes) if emb.classes else len(set(emb.labels[known])))
c[3].metric("accuracy (all splits)", f"{emb.correct[known].mean():.1%}" if known.any() and emb.classes else "—")
c[4].metric("not decodable", emb.n_failed)


def _map_tab() -> None:
    ctl = st.columns([1.2, 1, 1.4, 1.6])
    method = ctl[0].radio("Projection", ["pca", "umap"], format_func=str.upper, horizontal=True, key="emb_method")
    dims = ctl[1].radio("Dimensions", [2, 3], format_func=lambda d: f"{d}-D", horizontal=True, key="emb_dims")
    has_model = bool(emb.classes)  # False for pretrained-backbone embeddings: no predictions
    colour_by = ctl[2].selectbox("Colour by", [o for o in COLOUR_OPTIONS
                                               if has_model or o not in ("prediction", "correct")], key="emb_colour")
    show_unseen = ctl[3].checkbox(f"Show the unseen images ({len(unseen_paths)})", value=bool(unseen_paths),
                                  disabled=not unseen_paths, key="emb_show_unseen",
                                  help="Placed on the same map with the projection's transform (no refit).")
    if method == "umap":
        from ui import warmup

        ws_state = warmup.umap_status()
        msg = ("UMAP is still warming up in the background (numba compiling) — this first map may take longer."
               if ws_state["state"] == "running" else "Fitting UMAP…")
    else:
        msg = "Projecting…"
    t0 = time.perf_counter()
    with st.spinner(msg):
        proj = _projection(ident, emb_mtime, method, int(dims), emb.vectors)

    # colour values
    if colour_by == "label":
        colour = emb.labels
    elif colour_by == "prediction":
        colour = emb.preds
    elif colour_by == "correct":
        colour = np.where(emb.labels == "", "unknown", np.where(emb.correct, "correct", "wrong"))
    elif colour_by == "split":
        colour = emb.splits
    elif colour_by == "cluster":
        cl = _clusters(ident, emb_mtime, st.session_state.get("emb_cluster_method", "gmm"),
                       st.session_state.get("emb_k") or None, emb)
        colour = np.array([f"cluster {c}" for c in cl.labels], dtype=object)
    else:
        flags = _audit_flags(str(ws.root), dataset_id or "", state.mtime(ws.root / "datasets" / str(dataset_id)))
        if not flags:
            st.caption("No saved audit for this dataset yet: run the audit on the **Clean** page to colour by flag.")
        colour = np.array([flags.get(s, "no flag") for s in emb.sample_ids], dtype=object)

    keep = (emb.labels != "") & ~emb.correct if has_model else np.zeros(len(emb), bool)
    if colour_by == "audit flag":
        keep = keep | (colour != "no flag")
    shown = E.sample_for_display(len(emb), MAX_DRAWN, keep=keep, strata=emb.labels, seed=0)
    overlay = None
    if show_unseen and unseen_paths:
        u_vec, u_ok = embed_unseen(unseen_paths)
        if len(u_vec):
            overlay = {"points": proj.model.transform(u_vec), "name": "unseen",
                       "names": np.array([Path(p).name for p, o in zip(unseen_paths, u_ok) if o], dtype=object)}
    fig = charts.embedding_map(
        proj.points[shown], colour[shown], sample_ids=emb.sample_ids[shown], rows=shown,
        hover={"label": emb.labels[shown], "prediction": emb.preds[shown], "split": emb.splits[shown]},
        colour_name=colour_by, overlay=overlay)
    note = f"{method.upper()} {dims}-D of {len(emb):,} samples"
    if len(shown) < len(emb):
        note += f" — drawing {len(shown):,} (every mistake kept, the rest sampled per label)"
    if method == "pca":
        evr = proj.params.get("explained_variance_ratio", [])
        note += f"; variance explained {sum(evr):.0%}"
    if proj.params.get("fit_size"):
        note += (f"; UMAP fitted on a random {proj.params['fit_size']:,} of them, the rest placed on that map "
                 "with transform")
    note += f"; {proj.params.get('seconds', time.perf_counter() - t0):.1f} s to fit"
    st.caption(note)

    @st.fragment
    def _map_and_selection() -> None:
        event = st.plotly_chart(fig, key="emb_map", on_select="rerun", selection_mode=("points", "box", "lasso"),
                                width="stretch", config={"displaylogo": False})
        rows = charts.selected_rows(event)
        n_drawn = len(rows)
        if dims == 2 and len(shown) < len(emb):  # a region selects every sample in it, drawn or not
            region = charts.rows_in_region(event, proj.points)
            if region is not None and len(region):
                rows = region.tolist()
        if dims == 3:
            st.caption("Box/lasso selection works on the 2-D map; in 3-D, drag to rotate and hover for details.")
        if not rows:
            st.caption("Select points with the box or lasso tool to see their images.")
            return
        sel = np.asarray(rows)
        frame = emb.frame().iloc[sel]
        n_wrong = int(((frame["label"] != "") & ~frame["correct"]).sum()) if has_model else 0
        drawn = f"{n_drawn:,} of them drawn on the map; " if len(sel) != n_drawn else ""
        st.markdown(f"**{len(sel):,} selected** — {drawn}" + (f"{n_wrong} misclassified; " if has_model else "")
                    + "labels: "
                    + ", ".join(f"{state.esc(k)} ({v})" for k, v in frame["label"].value_counts().head(6).items()))
        # mistakes first, then least confident
        order = np.lexsort((frame["confidence"].to_numpy(), frame["correct"].to_numpy()))
        pick = sel[order][:GALLERY_MAX]
        try:
            imgs, ok = thumbs(emb.sample_ids[pick].tolist())
        except (ValueError, OSError) as exc:
            st.warning(f"Thumbnails unavailable: {exc}")
            return
        caps = [f"{'✓' if emb.correct[i] else '✗'} {emb.labels[i] or '?'} → {emb.preds[i]}" if has_model
                else (emb.labels[i] or "?") for i in pick]
        _gallery(imgs, caps)
        if len(sel) > GALLERY_MAX:
            st.caption(f"Showing {GALLERY_MAX} of {len(sel):,}: mistakes first, then the least confident.")
        with st.expander("Selected samples as a table"):
            st.dataframe(frame[["sample_id", "split", "label", "prediction", "correct", "confidence"]],
                         hide_index=True, width="stretch")

    _map_and_selection()


def _clusters_tab() -> None:
    cc = st.columns([1.2, 1, 2.5])
    cmethod = cc[0].radio("Method", ["gmm", "agglomerative"], horizontal=True, key="emb_cluster_method",
                          format_func=lambda m: "GMM (k by BIC)" if m == "gmm" else "Agglomerative (Ward)")
    k_in = cc[1].number_input("k (0 = automatic)", min_value=0, max_value=min(60, len(emb) - 1), value=0, step=1,
                              key="emb_k", help="GMM: 0 picks k by BIC. Agglomerative: 0 uses the number of labels.")
    with st.spinner("Clustering…"):
        clus = _clusters(ident, emb_mtime, cmethod, int(k_in) or None, emb)
    m = st.columns(3)
    m[0].metric("clusters k", clus.k)
    m[1].metric("adjusted Rand index", "—" if np.isnan(clus.ari) else f"{clus.ari:.3f}",
                help="Agreement of clusters with the labels: 1 = identical partitions, 0 = chance.")
    m[2].metric("purity", "—" if np.isnan(clus.purity) else f"{clus.purity:.1%}",
                help="Share of samples whose label is their cluster's majority label.")
    left, right = st.columns([1.2, 1.2])
    with left:
        if len(clus.bic) > 1:
            st.plotly_chart(charts.bic_curve(clus.bic, chosen=clus.k), width="stretch", key="emb_bic")
        st.dataframe(clus.table.rename(columns={"top_label": "majority label", "n_labels": "labels"}),
                     hide_index=True, width="stretch",
                     column_config={"top_share": st.column_config.ProgressColumn("majority share", min_value=0,
                                                                                 max_value=1, format="%.2f")})
    with right:
        if known.any():
            st.plotly_chart(charts.cluster_label_heatmap(clus.labels, emb.labels, title="Labels per cluster"),
                            width="stretch", key="emb_cluster_heat")
    st.subheader("Typical images per cluster")
    st.caption("The samples nearest each cluster's centre.")
    for cid in list(clus.typical)[:12]:
        idx = clus.typical[cid]
        row = clus.table[clus.table["cluster"] == cid].iloc[0]
        top = f" — mostly {state.esc(row['top_label'])} ({row['top_share']:.0%})" if "top_label" in row and \
            isinstance(row.get("top_label"), str) else ""
        st.markdown(f"**cluster {cid}** · {int(row['size']):,} samples{top}")
        try:
            imgs, _ = thumbs(emb.sample_ids[idx].tolist())
            _gallery(imgs, [f"{emb.labels[i] or '?'}" for i in idx], per_row=max(6, len(idx)))
        except (ValueError, OSError) as exc:
            st.caption(f"thumbnails unavailable: {exc}")
    if clus.k > 12:
        st.caption(f"{clus.k - 12} smaller clusters not shown.")


def _ood_tab() -> None:
    st.markdown("Scores say how unlike the **train** images an image is in the run's embedding space "
                "(higher = more unusual). The threshold is set on the **test** split at the false-alarm rate you "
                "choose and saved for the Predict page.")
    oc = st.columns([1.3, 1, 2])
    ood_method = oc[0].selectbox("Score", list(E.OOD_METHODS), key="emb_ood_method", format_func={
        "mahalanobis": "Mahalanobis (nearest class mean)",
        "gmm": "Gaussian mixture (−log-likelihood)",
        "knn": "k nearest neighbours (cosine, k=10)"}.get,
        help="Mahalanobis: distance to the nearest class mean under a shared covariance. Gaussian mixture: how "
             "unlikely the image is under a mixture fitted on train. kNN: mean cosine distance to the 10 most "
             "similar train images. All are fitted on the train split.")
    fpr = oc[1].slider("False-alarm rate on test", 0.0, 0.5, 0.05, 0.01, key="emb_ood_fpr",
                       help="Share of in-distribution test images the threshold flags.")
    dataset_unseen = str(Path(unseen_paths[0]).parent) if unseen_paths else ""
    folder = oc[2].text_input("Unseen images folder", value=dataset_unseen,
                              key="emb_ood_folder",
                              help="Images the model never saw (searched recursively); default: the dataset's "
                                   "unseen folder.")
    paths: tuple[str, ...] = ()
    if folder.strip():
        try:
            if folder.strip() != dataset_unseen:  # the dataset's own unseen folder was registered with it
                confine(folder.strip(), workspace=ws)  # a typed folder must lie under the allowed roots
            paths = tuple(E.find_images(folder.strip()))
        except (ValueError, WorkspaceError) as exc:
            st.warning(state.esc(str(exc)))
        if folder.strip() and not paths and Path(folder.strip()).is_dir():
            st.warning(f"No image files under {state.esc(folder.strip())}.")
    uploads = st.file_uploader("…or drop images here", accept_multiple_files=True, key="emb_ood_upload",
                               type=["png", "jpg", "jpeg", "bmp", "gif", "webp", "tif", "tiff"])
    upload_paths = tuple(str(E.store_upload(ws, u.name, u.getvalue())) for u in (uploads or []))
    model = _ood_model(ident, emb_mtime, ood_method, emb)
    u_vec = np.zeros((0, emb.dim), np.float32)
    u_names: list[str] = []
    if paths:
        with st.spinner(f"Embedding {len(paths)} unseen images…"):
            u_vec, u_ok = embed_unseen(paths)
        u_names = [p for p, o in zip(paths, u_ok) if o]
        if (~u_ok).any():
            st.caption(f"{int((~u_ok).sum())} file(s) in the folder could not be decoded and are left out.")
    unseen_key = hashlib.sha1("\n".join(u_names).encode()).hexdigest()
    ev = _ood_evaluation(ident, emb_mtime, ood_method, float(fpr), unseen_key, emb, u_vec, model)
    mm = st.columns(4)
    mm[0].metric("AUROC test vs unseen", "—" if np.isnan(ev.auroc) else f"{ev.auroc:.3f}",
                 help="1.0: every unseen image scores above every test image; 0.5: no better than chance.")
    mm[1].metric("threshold", f"{ev.threshold:.4g}")
    mm[2].metric("test flagged", f"{ev.test_fpr:.1%}")
    mm[3].metric("unseen flagged", f"{ev.n_flagged}/{ev.n_unseen}" if ev.n_unseen else "—")
    st.plotly_chart(charts.ood_histogram(ev.test_scores, ev.unseen_scores, threshold=ev.threshold,
                                         method=ood_method), width="stretch", key="emb_ood_hist")
    if rd is None:
        st.caption("These are pretrained-backbone scores: a threshold is saved per run, so train a model and "
                   "choose its threshold from the run's own embeddings.")
    else:
        saved = runs.read_thresholds(rd).get("ood") or {}
        sc = st.columns([1, 3])
        if sc[0].button("Save threshold for Predict", type="primary", key="emb_ood_save"):
            E.save_ood_threshold(rd.path, method=ood_method, threshold=ev.threshold, fpr=float(fpr),
                                 auroc=None if np.isnan(ev.auroc) else ev.auroc, n_unseen=ev.n_unseen,
                                 unseen=folder.strip() or None)
            saved = runs.read_thresholds(rd).get("ood") or {}
            st.toast("Out-of-distribution threshold saved to thresholds.json")
        if saved:
            sc[1].success(f"Saved: {state.esc(saved.get('method'))} score > {float(saved.get('threshold')):.4g} "
                          f"(false-alarm rate {float(saved.get('fpr', 0)):.0%} on test) — Predict flags such images "
                          "as unlike anything in training.")
        else:
            sc[1].caption("No threshold saved yet for this run.")
    if len(u_names):
        scores = ev.unseen_scores
        top = np.argsort(-scores)[:16]
        st.markdown("**Most unusual unseen images**")
        imgs, _ = E.path_thumbnails([u_names[i] for i in top], workspace=ws, size=THUMB)
        _gallery(imgs, [f"{scores[i]:.3g}{' ⚑' if scores[i] > ev.threshold else ''}" for i in top])
    if upload_paths:
        up_vec, up_ok = embed_unseen(upload_paths)
        names = [u.name for u in uploads]
        st.markdown("**Uploads**")
        if (~up_ok).any():
            st.warning("Not readable as images: " + ", ".join(state.esc(n) for n, o in zip(names, up_ok) if not o))
        if len(up_vec):
            up_scores = model.score(up_vec)
            ok_paths = [p for p, o in zip(upload_paths, up_ok) if o]
            ok_names = [n for n, o in zip(names, up_ok) if o]
            imgs, _ = E.path_thumbnails(ok_paths, workspace=ws, size=THUMB)
            _gallery(imgs, [f"{n[:18]}: {s:.3g} {'⚑ unusual' if s > ev.threshold else 'ok'}"
                            for n, s in zip(ok_names, up_scores)])


# Only the open tab runs (``on_change="rerun"``): at 100k samples the three together took 3 s a visit.
# The open tab is in the URL (?emb_tab=Clusters), so a link opens it.
tabs = st.tabs(list(TABS), key="emb_tab", on_change="rerun", bind="query-params")
for tab, render, keys in zip(tabs, (_map_tab, _clusters_tab, _ood_tab), _TAB_KEYS):
    if tab.open is False:
        state.keep_widget_state(keys)
    else:
        with tab:
            render()
