"""The model card (a plain-words summary of the facts the other sections gathered) and the
comparison with a second run.
"""

from __future__ import annotations

import json
from typing import Any, Mapping


from core import runs
from core.report.context import Section, _Context
from core.report.markup import _fmt, _note, _render, _signed, _when
from core.report.sections import _evaluation


# ---------------------------------------------------------------------------
# model card
# ---------------------------------------------------------------------------

_HYPER = ("model", "weights_used", "image_size", "hierarchy_mode", "epochs", "batch_size", "lr", "dropout",
          "embedding_dim", "conv_blocks", "filters", "pooling", "augmentation", "class_weights", "monitor", "patience",
          "warmup_epochs", "fine_tune_layers", "fine_tune_lr_factor", "imputation", "seed")

_MODEL_NAMES = {"cnn": "a small convolutional network trained from scratch",
                "mobilenet_v2": "MobileNetV2 (transfer learning)", "resnet50v2": "ResNet50V2 (transfer learning)",
                "efficientnet_b0": "EfficientNet-B0 (transfer learning)"}


def _section_model_card(ctx: _Context) -> Section:
    cfg, labels = ctx.config, ctx.labels or {}
    ev = ctx.facts.get("evaluation") or (_evaluation(ctx) if ctx.predictions is not None else {})
    task = labels.get("task") or cfg.get("task_resolved") or cfg.get("task")
    names = runs.output_names(labels) if labels else []
    model = str(cfg.get("model") or "?")
    pre = ctx.preprocessing
    metric_rows = []
    if ev:
        if task == "multilabel":
            metric_rows += [("accuracy over known (image, label) entries", ev.get("accuracy")),
                            ("micro F1", ev.get("micro_f1")), ("macro F1", ev.get("macro_f1"))]
        else:
            metric_rows += [("accuracy", ev.get("accuracy")), ("macro F1", ev.get("macro_f1")),
                            ("weighted F1", ev.get("weighted_f1"))]
        metric_rows += [("mean average precision", ev.get("mean_average_precision")),
                        ("expected calibration error", ev.get("ece")), ("test samples", ev.get("n_samples"))]
        if task == "hierarchical":
            for lv in ev.get("level_order", []):
                metric_rows.append((f"accuracy at level {lv}", ev["levels"][lv].get("accuracy")))
    hyper = [(k, cfg[k]) for k in _HYPER if k in cfg and cfg[k] not in (None, "", [])]
    hyper = [(k, json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in hyper]

    # limitations: generated from the facts, nothing more (the template words the ones that apply)
    acc = ev.get("accuracy") if ev else None
    n_test = ev.get("n_samples") if ev else None
    per = (ev.get("per_class") or {}) if ev else {}
    ece = ctx.facts.get("ece", ev.get("ece") if ev else None)
    dec = ctx.facts.get("decisions")
    n_changed = int(dec["action"].isin(["exclude", "relabel"]).sum()) if dec is not None and len(dec) else 0
    trained_raw = cfg.get("label_patch_version") in (None, "", 0, "0", "raw")
    state = runs.effective_state(ctx.status)
    limits = dict(
        accuracy=acc,
        one_wrong_in=max(2, round(1 / max(1e-9, 1 - acc))) if acc is not None and acc < 0.99 else None,
        small_test=n_test if n_test is not None and n_test < 300 else None,
        weak=sorted(((c, r.get("f1")) for c, r in per.items() if r.get("f1") is not None and r["f1"] < 0.5),
                    key=lambda x: x[1]),
        rare=sorted(c for c, r in per.items() if r.get("support") is not None and 0 < r["support"] < 10),
        uncalibrated_ece=ece if ece is not None and ece >= 0.05 else None,
        no_ood_threshold=ctx.facts.get("ood_threshold") is None,
        n_loader_warnings=len((ctx.facts.get("dataset") or {}).get("warnings") or []),
        unapplied_decisions=n_changed if trained_raw else 0,
        no_review=trained_raw and not n_changed and dec is not None,
        from_scratch=str(cfg.get("weights_used") or "").startswith("random") and acc is not None and acc < 0.9,
        unfinished_state=state if state != "done" else None)
    body = _render(
        "sections/model_card.html.j2", task=task, names=names, positive_class=labels.get("positive_class"),
        levels=[(lv, len(labels["level_classes"][lv])) for lv in labels.get("levels", [])] if task == "hierarchical"
        else [],
        dataset_name=ctx.dataset.name if ctx.dataset is not None else (cfg.get("dataset_id") or "an unnamed dataset"),
        counts=cfg.get("counts") or {}, architecture=_MODEL_NAMES.get(model, model),
        weights=cfg.get("weights_used") or cfg.get("weights"), image_size=cfg.get("image_size"),
        preprocess=pre.get("model_preprocess"), flip_average=runs.flips_averaged(pre),
        trained=_when(cfg.get("created_at")),
        keras_version=cfg.get("keras_version"), metrics=metric_rows,
        thresholds_saved=bool(ctx.facts.get("thresholds_saved")), hyper=hyper, **limits)
    return Section("model_card", "Model card", body)


def _comparison_title(ctx: _Context) -> str:
    return f"Comparison with {ctx.compare_with.run_id}"


def _section_comparison(ctx: _Context) -> Section:
    """This run (A) against ``ctx.compare_with`` (B) on the same rows: :func:`core.compare.compare_runs`."""
    from core import compare

    title = _comparison_title(ctx)
    try:
        c = compare.compare_runs(ctx.rd.path, ctx.compare_with.path, split=ctx.split)
    except ValueError as exc:  # other rows or labels, another label shape, not a finished run
        return Section("comparison", title, _note(f"The runs cannot be compared: {exc}"), "error", str(exc))

    def rows(ms: Mapping[str, Any]) -> list[tuple[str, ...]]:
        return [(compare.METRIC_LABELS.get(k, k), _fmt(m.a, 4), _fmt(m.b, 4), _signed(m.delta),
                 f"{_signed(m.ci_low)} to {_signed(m.ci_high)}", _fmt(m.significant)) for k, m in ms.items()]

    # one table per hierarchy level when both runs are hierarchical, else one
    blocks = [(lv, rows(ms), mc) for lv, (ms, mc) in c.levels.items()] or [(None, rows(c.metrics), c.mcnemar)]
    body = _render("sections/comparison.html.j2", comparison=c, confidence=f"{c.confidence:.0%}", blocks=blocks)
    return Section("comparison", title, body)
