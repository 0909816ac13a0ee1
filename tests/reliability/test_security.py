"""Security: XSRF and upload limits stay on, Keras safe_mode, escaping, folder confinement, no pickle."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import datasets, models
from core.workspace import WorkspaceError, allowed_roots, confine, home

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
RAW_TAGS = re.compile(r"<\s*(script|img|iframe|svg|a)\b", re.I)


# ---------------------------------------------------------------------------
# Server configuration
# ---------------------------------------------------------------------------

def test_xsrf_on_uploads_capped_and_no_tracebacks_sent_to_browsers():
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["enableXsrfProtection"] is True
    assert cfg["server"].get("enableCORS", True) is True          # CORS protection not switched off
    assert 1 <= cfg["server"]["maxUploadSize"] <= 1024            # MB; Streamlit refuses bigger uploads
    assert cfg["client"]["showErrorDetails"] in ("none", False)   # a bug shows a message, not a traceback


# ---------------------------------------------------------------------------
# Keras safe_mode
# ---------------------------------------------------------------------------

def test_model_with_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path):
    import keras

    marker = tmp_path / "code-ran"

    def payload(t):
        marker.write_text("the Lambda's code was executed")
        return t * 2.0

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: payload(t))(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "model.keras"
    keras.Model(inp, out).save(path)
    marker.unlink(missing_ok=True)  # building the model traced the lambda; loading must not run it
    with pytest.raises(ValueError, match="Lambda") as err:
        models.load_model(path)
    assert "arbitrary code" in str(err.value)
    assert not marker.exists()
    # the Predict page's loader (run folder or uploaded bundle) says which file and why
    from core import predict, runs

    runs.write_labels(tmp_path, {"task": "multiclass", "classes": ["a", "b"]})
    (tmp_path / "preprocessing.json").write_text('{"image_size": 8, "input_range": [0, 255]}')
    with pytest.raises(predict.PredictError) as perr:
        predict.Predictor.load(tmp_path)
    assert str(path) in str(perr.value) and "safe_mode" in str(perr.value) and "Lambda" in str(perr.value)
    assert not marker.exists()


# ---------------------------------------------------------------------------
# Escaping of user strings in the UI
# ---------------------------------------------------------------------------

MARKDOWN_ELEMENTS = ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader",
                     "exception", "toast")


def _markdown_bodies(at: AppTest) -> list[str]:
    out = []
    for kind in MARKDOWN_ELEMENTS:
        for el in at.get(kind):
            value = getattr(el, "value", None)
            if isinstance(value, str):
                out.append(value)
    return out


@pytest.fixture(scope="module")
def hostile_workspace(tmp_path_factory):
    """A workspace whose only dataset has HTML in its name, labels and a file name."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    rows = []
    for i in range(12):
        name = f"{IMG} {i}.png" if i == 0 else f"ok_{i}.png"
        Image.fromarray(np.full((16, 16, 3), (40 * (i % 2), 90, 200), np.uint8)).save(data / "images" / name)
        rows.append(f'"images/{name}",{SCRIPT if i % 2 else "🐶 dog & <b>co</b>"}')
    (data / "labels.csv").write_text("image,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    ws = home(root / "ws").ensure()
    ds = datasets.load_dataset(datasets.DatasetSpec(path=str(data), labels=str(data / "labels.csv"),
                                                    name=f"{IMG} & friends"), workspace=ws)
    assert set(ds.samples["label"]) == {SCRIPT, "🐶 dog & <b>co</b>"}
    _hostile_run(ws, ds)
    return ws, ds


def _hostile_run(ws, ds) -> Path:
    """A finished-looking run of that dataset (untrained tiny model, random predictions, hostile class names)."""
    import json

    from core import runs

    rd = runs.RunDir(ws.runs_dir / "hostile-run")
    rd.path.mkdir(parents=True)
    classes = sorted(set(ds.samples["label"]))
    labels = {"task": "multiclass", "classes": classes}
    runs.write_config(rd, {"task": "multiclass", "model": "cnn", "dataset_id": ds.dataset_id, "image_size": 16,
                           "label_columns": ["label"], "monitor": "val_macro_f1", "run_id": "hostile-run"})
    models.save_model(models.build_model(2, backbone="cnn", image_size=16, embedding_dim=8, filters=4), rd.model)
    runs.write_labels(rd, labels)
    rd.preprocessing.write_text(json.dumps({"image_size": 16, "input_range": [0, 255]}))
    for e in (1, 2):
        runs.append_metrics(rd, {"kind": "epoch", "epoch": e, "loss": 1.0 / e, "val_loss": 1.2 / e,
                                 "accuracy": 0.5, "val_accuracy": 0.5, "val_macro_f1": 0.4 + e / 10})
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1], size=len(ds.samples))
    frame = runs.predictions_frame(labels, sample_ids=ds.samples["sample_id"], paths=ds.samples["path"],
                                   splits=ds.samples["split"], y_true=ds.samples["label"].tolist(), probs=probs)
    runs.write_predictions(rd, frame)
    runs.write_status(rd, "done", epoch=2, message="finished", best_epoch=2, best_value=0.6,
                      monitor="val_macro_f1")
    return rd.path


def test_html_report_escapes_user_strings(hostile_workspace):
    from core import report

    ws, ds = hostile_workspace
    html = report.build_report(ws.runs_dir / "hostile-run", workspace=ws, embeddings=False, max_thumbnails=4)
    for raw in (SCRIPT, "<script>alert", IMG, "<img src=x", "<b>co</b>"):
        assert raw not in html, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "\\u003cscript\\u003e" in html


@pytest.mark.parametrize("page", ["data", "clean", "train", "evaluate", "embeddings", "predict", "report"])
def test_user_strings_are_escaped_on_every_page(hostile_workspace, monkeypatch, page):
    ws, ds = hostile_workspace
    if not (REPO / "views" / f"{page}.py").exists():
        pytest.skip(f"views/{page}.py does not exist yet")
    monkeypatch.setenv("LOUPE_HOME", str(ws.root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["dataset_id"] = ds.dataset_id
    at.run()
    if page != "data":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    bodies = _markdown_bodies(at)
    if page == "embeddings":  # only the open tab runs: visit the others too
        for tab in ("Clusters", "Unusual images (OOD)"):
            at.session_state["emb_tab"] = tab
            at.run()
            assert not at.exception, (tab, [e.value for e in at.exception])
            bodies += _markdown_bodies(at)
    leaked = [b for b in bodies if RAW_TAGS.search(b)]
    assert not leaked, f"unescaped user HTML in {page}: {leaked[:3]}"
    if page in ("data", "clean", "train", "evaluate", "embeddings"):  # the strings are shown, escaped
        assert any("&lt;img src=x onerror=alert(2)&gt;" in b or "&lt;script&gt;alert(1)&lt;/script&gt;" in b
                   for b in bodies), bodies[:20]


# ---------------------------------------------------------------------------
# Folder confinement
# ---------------------------------------------------------------------------

def test_server_folders_are_confined_to_allowed_roots(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    (allowed / "data").mkdir(parents=True)
    ws = home(tmp_path / "ws")
    monkeypatch.setenv("LOUPE_ALLOWED_ROOTS", str(allowed))
    assert allowed_roots(ws) == [ws.root, allowed.resolve()]
    assert confine(allowed / "data", workspace=ws) == (allowed / "data").resolve()
    assert confine(ws.root / "uploads" / "x", workspace=ws).is_relative_to(ws.root)  # uploads always allowed
    (allowed / "etc-link").symlink_to("/etc")
    for bad in ("/etc", "/etc/passwd", str(allowed / ".." / ".." / "etc"), str(allowed / "etc-link"), "/"):
        with pytest.raises(WorkspaceError) as err:
            confine(bad, workspace=ws)
        msg = str(err.value)
        assert bad in msg and str(allowed.resolve()) in msg and "LOUPE_ALLOWED_ROOTS" in msg, msg
    with pytest.raises(WorkspaceError, match="No folder given"):
        confine("  ", workspace=ws)
    # default (variable unset): the workspace, the home folder and the working folder
    monkeypatch.delenv("LOUPE_ALLOWED_ROOTS")
    monkeypatch.chdir(allowed)
    assert allowed_roots(ws) == [ws.root, Path.home().resolve(), allowed.resolve()]
    monkeypatch.chdir("/")  # a server started from / does not open the whole disk
    assert Path("/") not in allowed_roots(ws)
    with pytest.raises(WorkspaceError):
        confine("/etc", workspace=ws)


def test_data_page_refuses_etc_with_a_message(loupe_home, tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_ALLOWED_ROOTS", str(tmp_path / "nothing-here"))
    ws = home(loupe_home).ensure()
    data = tmp_path / "d"
    (data / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "a" / "x.png")
    datasets.load_dataset(datasets.DatasetSpec(path=str(data)), workspace=ws)  # so no demo is generated
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    at.text_input(key="add_path").set_value("/etc").run()
    at.button(key="add_detect").click().run()
    assert not at.exception
    assert at.session_state["data_detection"] is None
    assert any("/etc is outside the folders this app may read" in e.value for e in at.error)


def test_embeddings_page_refuses_an_unseen_folder_outside_the_allowed_roots(hostile_workspace, monkeypatch):
    ws, ds = hostile_workspace
    monkeypatch.setenv("LOUPE_HOME", str(ws.root))
    monkeypatch.setenv("LOUPE_ALLOWED_ROOTS", str(ws.root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["dataset_id"] = ds.dataset_id
    at.run()
    at.switch_page("views/embeddings.py").run()
    at.session_state["emb_tab"] = "Unusual images (OOD)"
    at.run()
    at.text_input(key="emb_ood_folder").set_value("/etc").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("/etc is outside the folders this app may read" in w.value for w in at.warning)


# ---------------------------------------------------------------------------
# No pickle of user data
# ---------------------------------------------------------------------------

UNSAFE = [
    (r"\bimport\s+(c?pickle|dill|cloudpickle|shelve|marshal)\b|\bfrom\s+(c?pickle|dill|cloudpickle)\b", "pickle"),
    (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\bread_pickle\s*\(|\bjoblib\.load\s*\(|\btorch\.load\s*\(", "pickle-based loader"),
    (r"\byaml\.load\s*\((?![^)]*SafeLoader)", "yaml.load without SafeLoader"),
    (r"safe_mode\s*=\s*False|enable_unsafe_deserialization", "Keras unsafe deserialization"),
    (r"\b(keras\.(saving|models)\.)?load_model\s*\(", "load_model outside core.models"),
]


def test_no_pickle_or_unsafe_deserialization_in_the_product():
    files = sorted([*(REPO / "core").rglob("*.py"), *(REPO / "views").glob("*.py"), *(REPO / "ui").glob("*.py"),
                    REPO / "app.py"])
    problems = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        for pattern, what in UNSAFE:
            for m in re.finditer(pattern, text):
                line = text[: m.start()].count("\n") + 1
                src = text.splitlines()[line - 1].strip()
                if what == "load_model outside core.models" and (
                        f.name == "models.py" or "models.load_model(" in src or src.startswith(("def ", "#"))
                        or re.match(r"^\s*(from core\.models import|model = load_model\(rd\.model\))", src)):
                    continue
                if src.startswith(("#", '"', "'")) or "``" in src:
                    continue  # docstrings and comments that mention the word
                problems.append(f"{f.relative_to(REPO)}:{line}: {what}: {src}")
    assert not problems, "\n".join(problems)
