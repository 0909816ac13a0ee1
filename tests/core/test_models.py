"""core.models: builders, layer names, save/load in safe mode, fine-tuning, masked multi-label loss."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from core import models  # noqa: E402


def _pixels(n=4, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype("float32")


def test_default_cnn_is_two_conv_two_pool_dense_with_named_layers():
    model = models.build_model(3, image_size=16, filters=4)
    names = [layer.name for layer in model.layers]
    assert names[0] == "image" and "preprocess" in names
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == 2
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 2
    assert model.get_layer("embedding").units == 64
    assert model.get_layer("predictions").units == 3
    assert "augmentation" not in names  # off by default for the CNN
    probs = model.predict(_pixels(), verbose=0)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_preprocessing_is_inside_the_model_raw_pixels_in():
    model = models.build_model(2, image_size=16, filters=4)
    cfg = model.get_layer("preprocess").get_config()
    assert cfg["scale"] == pytest.approx(1 / 255)
    # A transfer backbone carries its own preprocess (MobileNetV2: 0..255 -> -1..1), no Lambda anywhere.
    tl = models.build_model(2, backbone="mobilenet_v2", image_size=32, weights=None)
    pre = tl.get_layer("preprocess").get_config()
    assert pre["scale"] == pytest.approx(1 / 127.5) and pre["offset"] == pytest.approx(-1.0)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in tl.layers)
    assert "augmentation" in [layer.name for layer in tl.layers]  # on by default for transfer


def test_saved_model_loads_in_safe_mode_and_predicts_the_same(tmp_path):
    model = models.build_model(3, image_size=16, filters=4, augmentation=True, batch_norm=True,
                               conv_blocks=3, pooling="avg", activation="sigmoid")
    model.compile("adam", loss=models.masked_binary_crossentropy())  # compiled with the custom loss
    path = tmp_path / "m.keras"
    models.save_model(model, path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # plain Keras, no custom objects needed
    x = _pixels()
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temp files left behind


def test_augmentation_is_active_only_in_training():
    model = models.build_model(2, image_size=16, filters=4, augmentation=True, dropout=0.0, seed=1)
    x = _pixels(8)
    a = np.asarray(model(x, training=False))
    b = np.asarray(model(x, training=False))
    np.testing.assert_array_equal(a, b)
    c = np.asarray(model(x, training=True))
    assert np.abs(a - c).max() > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"backbone": "vgg"}, "backbone"),
        ({"image_size": 4}, "image_size"),
        ({"activation": "relu"}, "activation"),
        ({"pooling": "mean"}, "pooling"),
        ({"dropout": 1.0}, "dropout"),
        ({"weights": "coco"}, "weights"),
        ({"backbone": "mobilenet_v2", "alpha": 0.3, "weights": None}, "alpha"),
        ({"backbone": "mobilenet_v2", "image_size": 16, "weights": None}, "image_size"),
        ({"conv_blocks": 0}, "conv_blocks"),
        ({"filters": 2.5}, "filters"),
    ],
)
def test_bad_options_raise_value_error_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`.*received {name}="):
        models.build_model(3, **kwargs)


def test_num_outputs_validated():
    with pytest.raises(ValueError, match="num_outputs=0"):
        models.build_model(0)


def test_unfreeze_top_keeps_batchnorm_frozen_and_rejects_bad_n():
    model = models.build_model(3, backbone="mobilenet_v2", image_size=32, weights=None)
    base = models.backbone_of(model)
    assert base is not None and not base.trainable
    n_before = len(model.trainable_weights)
    assert n_before == 6  # feature norm gamma/beta, embedding and head kernels and biases only
    n = models.unfreeze_top(model, 12)
    assert n > 0 and len(model.trainable_weights) > n_before
    top = base.layers[-12:]
    assert all(not l.trainable for l in top if isinstance(l, keras.layers.BatchNormalization))
    assert any(l.trainable for l in top if isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)))
    assert all(not l.trainable for l in base.layers[:-12])
    for bad in (0, len(base.layers) + 1, "3"):
        with pytest.raises(ValueError, match="n_layers"):
            models.unfreeze_top(model, bad)
    with pytest.raises(ValueError, match="no backbone"):
        models.unfreeze_top(models.build_model(2, image_size=16, filters=4), 1)


def test_split_at_backbone_shares_weights_and_composes_to_the_model():
    model = models.build_model(3, backbone="mobilenet_v2", image_size=32, weights=None, seed=0)
    features, head = models.split_at_backbone(model)
    x = _pixels(4, size=32)
    f = features.predict(x, verbose=0)
    assert f.shape == (4, models.backbone_of(model).output.shape[-1])
    np.testing.assert_allclose(head.predict(f, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    # training the head trains the model: same weight objects
    head_ids = {id(w) for w in head.weights}
    assert {id(w) for w in model.get_layer(models.HEAD_LAYER).weights} <= head_ids
    assert not any(layer.name == models.AUGMENTATION_LAYER for layer in features.layers)
    with pytest.raises(ValueError, match="no backbone"):
        models.split_at_backbone(models.build_model(2, image_size=16, filters=4))


@pytest.mark.parametrize("k, feature_norm", [(3, True), (2, True), (3, False)])
def test_set_linear_head_makes_the_model_predict_what_the_logistic_regression_predicts(k, feature_norm):
    """A scikit-learn linear probe on standardized pooled features, written into the head, exactly
    (multi-class and binary; standardization in features_norm, or folded into the embedding)."""
    from sklearn.linear_model import LogisticRegression

    model = models.build_model(k, backbone="mobilenet_v2", image_size=32, weights=None, seed=0, dropout=0.0,
                               embedding_dim=8, feature_norm=feature_norm)
    features, _head = models.split_at_backbone(model)
    x = _pixels(30, size=32, seed=1)
    f = features.predict(x, verbose=0).astype(np.float64)
    mean, scale = f.mean(axis=0), np.sqrt(f.var(axis=0) + 1e-3)
    y = np.arange(30) % k
    clf = LogisticRegression(C=1.0, max_iter=2000).fit((f - mean) / scale, y)
    coef, intercept = clf.coef_, clf.intercept_
    if k == 2:  # sklearn's binary model: one logit z for class 1; the softmax head takes (0, z)
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
    models.set_linear_head(model, coef, intercept, mean, scale)
    np.testing.assert_allclose(model.predict(x, verbose=0), clf.predict_proba((f - mean) / scale), atol=2e-4)


def test_set_linear_head_rejects_what_it_cannot_carry():
    narrow = models.build_model(5, backbone="mobilenet_v2", image_size=32, weights=None, embedding_dim=8)
    d = int(models.backbone_of(narrow).output.shape[-1])
    with pytest.raises(ValueError, match="twice as wide"):
        models.set_linear_head(narrow, np.zeros((5, d)), np.zeros(5), np.zeros(d), np.ones(d))
    # a multi-label (sigmoid) head carries K independent logits exactly
    sigmoid = models.build_model(3, backbone="mobilenet_v2", image_size=32, weights=None, activation="sigmoid")
    rng = np.random.default_rng(0)
    coef, intercept = rng.normal(size=(3, d)), rng.normal(size=3)
    mean, scale = rng.normal(size=d), rng.uniform(0.5, 2.0, d)
    models.set_linear_head(sigmoid, coef, intercept, mean, scale)
    features, head = models.split_at_backbone(sigmoid)
    f = rng.normal(size=(4, d)).astype(np.float32)
    want = 1 / (1 + np.exp(-(((f - mean) / scale) @ coef.T + intercept)))
    np.testing.assert_allclose(head.predict(f, verbose=0), want, atol=2e-4)
    ok = models.build_model(3, backbone="mobilenet_v2", image_size=32, weights=None)
    with pytest.raises(ValueError, match="pooled features"):
        models.set_linear_head(ok, np.zeros((3, d + 1)), np.zeros(3), np.zeros(d + 1), np.ones(d + 1))


def test_embedding_model_outputs_the_bottleneck():
    model = models.build_model(3, image_size=16, filters=4, embedding_dim=7)
    _probs, emb = models.twin_model(model).predict(_pixels(5), verbose=0)
    assert emb.shape == (5, 7)


def test_unavailable_weights_raise_a_clear_error(monkeypatch):
    # Simulate "offline" at Keras' download function (the real offline path is tested in test_training).
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/x.h5: None -- [Errno -2] Name or service "
                        "not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    for backbone in ("mobilenet_v2", "resnet50v2", "efficientnet_b0"):
        with pytest.raises(models.WeightsUnavailable, match="URL fetch failure") as info:
            models.build_model(3, backbone=backbone, image_size=32)
        msg = str(info.value)
        assert backbone in msg and models.keras_cache_dir() in msg and "--weights none" in msg


# ---------------------------------------------------------------------------
# Masked multi-label loss
# ---------------------------------------------------------------------------

def _naive_masked_bce(y, p, eps=1e-7):
    out = []
    for yi, pi in zip(y, p):
        terms = [-(t * np.log(np.clip(q, eps, 1 - eps)) + (1 - t) * np.log(1 - np.clip(q, eps, 1 - eps)))
                 for t, q in zip(yi, pi) if not (np.isnan(t) or t < 0)]
        out.append(np.mean(terms) if terms else 0.0)
    return float(np.mean(out))


def test_masked_loss_matches_naive_reference_and_ignores_missing():
    y = np.array([[1, 0, np.nan], [np.nan, np.nan, np.nan], [0, -1, 1], [1, 1, 0]], dtype="float32")
    p = np.array([[0.9, 0.2, 0.5], [0.3, 0.3, 0.3], [0.1, 0.99, 0.7], [0.6, 0.8, 0.4]], dtype="float32")
    loss = models.masked_binary_crossentropy()
    got = float(loss(y, p))
    assert got == pytest.approx(_naive_masked_bce(y, p), rel=1e-5)
    # Changing a prediction where the label is missing changes nothing.
    p2 = p.copy()
    p2[0, 2] = 0.01
    p2[2, 1] = 0.01
    assert float(loss(y, p2)) == pytest.approx(got, rel=1e-6)
    # Plain BCE would be NaN with NaN labels; the masked one stays finite.
    assert np.isfinite(got)


def test_masked_loss_gives_no_gradient_to_an_all_missing_label():
    import tensorflow as tf

    model = models.build_model(3, image_size=16, filters=4, activation="sigmoid", dropout=0.0)
    x = _pixels(6)
    y = np.array([[1, 0, np.nan]] * 3 + [[0, 1, np.nan]] * 3, dtype="float32")  # label 2 never observed
    loss = models.masked_binary_crossentropy()
    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    head = model.get_layer("predictions")
    gk, gb = tape.gradient(value, [head.kernel, head.bias])
    gk, gb = np.asarray(gk), np.asarray(gb)
    assert np.all(np.isfinite(gk)) and np.all(np.isfinite(gb))
    assert np.all(gk[:, 2] == 0) and gb[2] == 0
    assert np.abs(gk[:, :2]).sum() > 0


def test_masked_accuracy_counts_observed_labels_only():
    y = np.array([[1, 0, np.nan], [np.nan, np.nan, np.nan]], dtype="float32")
    p = np.array([[0.9, 0.7, 0.9], [0.1, 0.1, 0.1]], dtype="float32")
    acc = np.asarray(models.masked_binary_accuracy()(y, p))
    np.testing.assert_allclose(acc, [0.5, 1.0])


def test_model_with_masked_loss_saves_and_loads_compiled(tmp_path):
    model = models.build_model(2, image_size=16, filters=4, activation="sigmoid")
    model.compile("adam", loss=models.masked_binary_crossentropy(), metrics=[models.masked_binary_accuracy()])
    y = np.array([[1, np.nan], [0, 1], [np.nan, 0], [1, 1]], dtype="float32")
    model.fit(_pixels(), y, epochs=1, verbose=0)  # builds the optimizer state that gets saved
    path = tmp_path / "compiled.keras"
    model.save(path)  # the full training model, custom loss included
    loaded = models.load_model(path, compile=True)
    assert loaded.loss.get_config()["name"] == "masked_binary_crossentropy"


def test_weights_file_names_match_what_keras_caches(tmp_path, monkeypatch):
    assert models.weights_file("mobilenet_v2", alpha=0.35, image_size=128) == \
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_128_no_top.h5"
    assert models.weights_file("mobilenet_v2", alpha=1.0, image_size=100).endswith("_1.0_224_no_top.h5")
    assert models.weights_cached("cnn")
    with pytest.raises(ValueError, match="backbone"):
        models.weights_file("cnn")
    from tests.conftest import WEIGHTS

    shared = WEIGHTS / "models"
    if shared.exists():
        for size in models.MOBILENET_SIZES:
            assert (shared / models.weights_file("mobilenet_v2", alpha=0.35, image_size=size)).exists()
