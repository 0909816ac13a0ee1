"""Model builders: the small CNN, transfer-learning backbones, the embedding layer and the heads.

Every model :func:`build_model` returns has the same shape, so the rest of Loupe never
needs to know which backbone a run used::

    image (S, S, 3) float32, raw RGB pixels 0..255
      -> augmentation  (Sequential of Keras preprocessing layers; active only in training)
      -> preprocess    (Rescaling inside the model: prediction feeds raw pixels)
      -> features      (conv blocks, or a keras.applications backbone, pooled to a vector)
      -> embedding     (Dense bottleneck, ``embedding_dim`` wide, ReLU) -- look it up by name
      -> predictions   (Dense head: softmax over K classes, or K independent sigmoids)

Models contain no ``Lambda`` layers and only registered objects, so they save to
``.keras`` and load with ``keras.saving.load_model(path, safe_mode=True)``. Checkpoints
are saved *uncompiled* (see :func:`inference_copy`) so that loading one does not need
this module's custom loss.

TensorFlow/Keras are imported inside the functions: ``import core.models`` is cheap.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from core.targets import leaf_ancestors

BACKBONES = ("cnn", "mobilenet_v2", "resnet50v2", "efficientnet_b0")
ACTIVATIONS = ("softmax", "sigmoid")
POOLINGS = ("flatten", "avg", "max")
MOBILENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
#: Sizes Keras ships MobileNetV2 weight files for (other sizes load the 224 file, with a warning).
MOBILENET_SIZES = (96, 128, 160, 192, 224)
#: The smallest input each backbone accepts.
MIN_IMAGE_SIZE = {"cnn": 8, "mobilenet_v2": 32, "resnet50v2": 32, "efficientnet_b0": 32}

EMBEDDING_LAYER = "embedding"
HEAD_LAYER = "predictions"
AUGMENTATION_LAYER = "augmentation"
PREPROCESS_LAYER = "preprocess"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights could not be loaded (offline, no cached file, unreadable file).

    ``backbone`` and ``reason`` say which and why; ``str(exc)`` is a complete
    explanation for a user, including where Keras looked for the file.
    """

    def __init__(self, backbone: str, reason: str, *, cache_dir: str) -> None:
        self.backbone = backbone
        self.reason = reason
        self.cache_dir = cache_dir
        super().__init__(
            f"ImageNet weights for {backbone} are unavailable: {reason}. Keras looks for them in "
            f"{cache_dir} (set KERAS_HOME to a folder whose models/ subfolder holds the .h5 files) "
            "and downloads them there when online. Train from random init with weights=None "
            "(CLI: --weights none), or copy the weight files into that folder."
        )


def keras_cache_dir() -> str:
    """The folder Keras reads and downloads application weights to (``$KERAS_HOME/models``).

    Keras reads ``KERAS_HOME`` when it is first imported; set it before that.
    """
    import os
    import sys

    base = None
    config = sys.modules.get("keras.src.backend.config")
    if config is not None:  # Keras read KERAS_HOME at its import: ask it what it settled on
        try:
            base = config.keras_home()
        except Exception:  # pragma: no cover - private accessor moved
            base = None
    if base is None:  # Keras not imported yet: it will read the environment the same way
        base = os.environ.get("KERAS_HOME")
        if not base:
            home_dir = os.path.expanduser("~")
            base = os.path.join(home_dir if os.access(home_dir, os.W_OK) else "/tmp", ".keras")
    return os.path.join(os.path.expanduser(base), "models")


def weights_file(backbone: str, *, alpha: float = 0.35, image_size: int = 224) -> str:
    """The file name Keras caches a backbone's no-top ImageNet weights under (in :func:`keras_cache_dir`)."""
    _check_choice("backbone", backbone, tuple(b for b in BACKBONES if b != "cnn"))
    if backbone == "mobilenet_v2":
        rows = image_size if image_size in MOBILENET_SIZES else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    if backbone == "resnet50v2":
        return "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return "efficientnetb0_notop.h5"


def weights_cached(backbone: str, *, alpha: float = 0.35, image_size: int = 224) -> bool:
    """Whether the ImageNet weights are already in Keras' cache, so no download is needed.

    Cheap (imports nothing); the Train page uses it to offer random init up front when offline.
    """
    import os

    if backbone == "cnn":
        return True
    return os.path.exists(os.path.join(keras_cache_dir(), weights_file(backbone, alpha=alpha, image_size=image_size)))


# ---------------------------------------------------------------------------
# Backbones: name -> (constructor, preprocessing layer). Plain dispatch, no registry magic.
# ---------------------------------------------------------------------------

def _mobilenet_v2(image_size: int, *, alpha: float, weights: str | None):
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(image_size, image_size, 3), alpha=alpha, include_top=False,
        weights=weights, pooling="avg",
    )


def _resnet50v2(image_size: int, *, alpha: float, weights: str | None):
    import keras

    return keras.applications.ResNet50V2(
        input_shape=(image_size, image_size, 3), include_top=False, weights=weights, pooling="avg",
    )


def _efficientnet_b0(image_size: int, *, alpha: float, weights: str | None):
    import keras

    return keras.applications.EfficientNetB0(
        input_shape=(image_size, image_size, 3), include_top=False, weights=weights, pooling="avg",
    )


def _tf_mode_preprocess():
    """``preprocess_input(mode="tf")`` as a layer: 0..255 -> -1..1 (MobileNetV2, ResNetV2)."""
    import keras

    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREPROCESS_LAYER)


def _identity_preprocess():
    """EfficientNet normalises inside the application model: it takes 0..255 as is."""
    import keras

    return keras.layers.Identity(name=PREPROCESS_LAYER)


_TRANSFER = {
    "mobilenet_v2": (_mobilenet_v2, _tf_mode_preprocess),
    "resnet50v2": (_resnet50v2, _tf_mode_preprocess),
    "efficientnet_b0": (_efficientnet_b0, _identity_preprocess),
}


def _load_backbone(backbone: str, image_size: int, *, alpha: float, weights: str | None):
    """Build the application model; turn a weights failure into :class:`WeightsUnavailable`."""
    ctor, _ = _TRANSFER[backbone]
    if weights is None:
        return ctor(image_size, alpha=alpha, weights=None)
    import warnings

    try:
        with warnings.catch_warnings():
            # Off the shipped sizes Keras loads the 224 file and says so; the weights are size-agnostic.
            warnings.filterwarnings("ignore", message=".*input_shape.*")
            return ctor(image_size, alpha=alpha, weights=weights)
    except Exception as exc:  # Keras raises a plain Exception ("URL fetch failure ...") offline
        # Tell an argument problem apart from a weights problem: the same call without weights.
        ctor(image_size, alpha=alpha, weights=None)
        reason = " ".join(str(exc).split())
        if len(reason) > 300:
            reason = reason[:300] + "..."
        raise WeightsUnavailable(backbone, reason or type(exc).__name__, cache_dir=keras_cache_dir()) from exc


def _augmentation(seed: int | None):
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.08, fill_mode="reflect", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed),
            keras.layers.RandomContrast(0.15, value_range=(0, 255), seed=seed),
        ],
        name=AUGMENTATION_LAYER,
    )


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise ValueError(f"`{name}` must be an int {bound}; received {name}={value!r}")
    return value


def _check_choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}; received {name}={value!r}")
    return value


def build_model(
    num_outputs: int,
    *,
    backbone: str = "cnn",
    image_size: int = 64,
    activation: str = "softmax",
    embedding_dim: int = 64,
    augmentation: bool | None = None,
    dropout: float = 0.2,
    alpha: float = 0.35,
    weights: str | None = "imagenet",
    train_backbone: bool = False,
    conv_blocks: int = 2,
    filters: int = 32,
    kernel_size: int = 3,
    batch_norm: bool = False,
    pooling: str = "flatten",
    feature_norm: bool | None = None,
    seed: int | None = None,
    name: str | None = None,
):
    """Build an image classifier that takes raw RGB pixels.

    Parameters
    ----------
    num_outputs : int
        Width of the head: K classes (softmax) or K labels (sigmoid). A binary task uses
        ``num_outputs=2`` with softmax.
    backbone : {"cnn", "mobilenet_v2", "resnet50v2", "efficientnet_b0"}
        ``"cnn"``: ``conv_blocks`` blocks of Conv2D(``filters * 2**i``, ``kernel_size``)
        -> [BatchNorm] -> ReLU -> MaxPool(2), then ``pooling`` (the seeds' 2 conv + 2
        max-pool + dense is the default). Others: the ``keras.applications`` model without
        its top, globally average-pooled, frozen unless ``train_backbone``.
    image_size : int
        Input side S in pixels; the model's input is ``(S, S, 3)`` float32 in 0..255.
    activation : {"softmax", "sigmoid"}
        Head activation: softmax for one label per image, sigmoid for multi-label.
    embedding_dim : int
        Width of the Dense bottleneck layer named ``"embedding"`` before the head.
    augmentation : bool or None
        Random flip / rotation / zoom / contrast layers (training only). ``None`` means on
        for transfer backbones, off for the CNN.
    dropout : float in [0, 1)
        Dropout on the pooled features and on the embedding.
    alpha : float
        MobileNetV2 width multiplier (one of 0.35, 0.5, 0.75, 1.0, 1.3, 1.4); ignored otherwise.
    weights : {"imagenet", None}
        Pretrained weights for transfer backbones, read by Keras from ``$KERAS_HOME/models``
        (downloaded there when online); ignored for the CNN.
    train_backbone : bool
        Leave the backbone trainable (default: frozen; see :func:`unfreeze_top`).
    conv_blocks, filters, kernel_size, batch_norm, pooling
        CNN options; ``pooling`` is ``"flatten"`` (the seeds' choice), ``"avg"`` or ``"max"``.
    feature_norm : bool or None
        BatchNormalization of the pooled features before the embedding (``None``: on for
        transfer backbones, off for the CNN).
    seed : int or None
        Seed of the augmentation layers.
    name : str or None
        Model name (default ``"loupe_<backbone>"``).

    Returns
    -------
    keras.Model
        Functional, uncompiled, output ``(batch, num_outputs)`` probabilities.

    Raises
    ------
    ValueError
        An option is out of range (the message names it and the value received).
    WeightsUnavailable
        ``weights="imagenet"`` but Keras could not load them (e.g. offline, not cached).
    """
    import keras

    _check_int("num_outputs", num_outputs, 1)
    _check_choice("backbone", backbone, BACKBONES)
    _check_int("image_size", image_size, MIN_IMAGE_SIZE[backbone], 1024)
    _check_choice("activation", activation, ACTIVATIONS)
    _check_int("embedding_dim", embedding_dim, 1)
    if not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"`dropout` must be a float in [0, 1); received dropout={dropout!r}")
    if weights not in ("imagenet", None):
        raise ValueError(f"`weights` must be 'imagenet' or None; received weights={weights!r}")
    if backbone == "mobilenet_v2" and alpha not in MOBILENET_ALPHAS:
        raise ValueError(f"`alpha` must be one of {list(MOBILENET_ALPHAS)} for mobilenet_v2; received alpha={alpha!r}")
    if backbone == "cnn":
        _check_int("conv_blocks", conv_blocks, 1, 8)
        _check_int("filters", filters, 1, 4096)
        _check_int("kernel_size", kernel_size, 1, 31)
        _check_choice("pooling", pooling, POOLINGS)
        if image_size < 2**conv_blocks:
            raise ValueError(
                f"`image_size`={image_size} is too small for conv_blocks={conv_blocks} "
                f"(each block halves the side; need at least {2**conv_blocks})"
            )
    if augmentation is None:
        augmentation = backbone != "cnn"

    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="image")
    x = inputs
    if augmentation:
        x = _augmentation(seed)(x)
    if backbone == "cnn":
        x = keras.layers.Rescaling(1.0 / 255.0, name=PREPROCESS_LAYER)(x)
        for i in range(conv_blocks):
            x = keras.layers.Conv2D(filters * 2**i, kernel_size, padding="same", use_bias=not batch_norm,
                                    name=f"block{i + 1}_conv")(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"block{i + 1}_bn")(x)
            x = keras.layers.Activation("relu", name=f"block{i + 1}_relu")(x)
            x = keras.layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
        pool = {"flatten": keras.layers.Flatten, "avg": keras.layers.GlobalAveragePooling2D,
                "max": keras.layers.GlobalMaxPooling2D}[pooling]
        x = pool(name="features")(x)
    else:
        base = _load_backbone(backbone, image_size, alpha=alpha, weights=weights)
        base.trainable = bool(train_backbone)
        x = _TRANSFER[backbone][1]()(x)
        if weights is not None:
            # training=False keeps the pretrained BatchNorm statistics (inference mode), also when fine-tuning
            x = base(x, training=False)
        else:
            x = base(x)  # random init: BatchNorm must learn its statistics
    if feature_norm is None:
        feature_norm = backbone != "cnn"
    if feature_norm:
        # standardise the pooled features (what a linear probe's StandardScaler does): faster, steadier head
        x = keras.layers.BatchNormalization(name="features_norm")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="features_dropout")(x)
    x = keras.layers.Dense(embedding_dim, activation="relu", name=EMBEDDING_LAYER)(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    outputs = keras.layers.Dense(num_outputs, activation=activation, name=HEAD_LAYER)(x)
    return keras.Model(inputs, outputs, name=name or f"loupe_{backbone}")


def backbone_of(model):
    """The nested ``keras.applications`` model inside a Loupe model, or ``None`` for the CNN."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name != AUGMENTATION_LAYER]
    return nested[0] if nested else None


def split_at_backbone(model):
    """A transfer model as ``(features, head)`` sharing its layers and weights.

    ``features``: raw pixels -> the backbone's pooled features (preprocessing and the
    frozen backbone in inference mode; no augmentation). ``head``: those features -> the
    model's output, through the same ``features_norm`` / dropout / embedding / head layers,
    so training ``head`` trains ``model``. Used to fit a frozen backbone's head on
    features computed once instead of a forward pass through the backbone every epoch.

    Raises
    ------
    ValueError
        ``model`` has no backbone (the CNN).
    """
    import keras

    base = backbone_of(model)
    if base is None:
        raise ValueError(f"split_at_backbone needs a transfer-learning model; model {model.name!r} has no backbone")
    layers = model.layers
    k = layers.index(base)
    inputs = keras.Input(shape=tuple(model.inputs[0].shape[1:]), dtype="float32", name="image")
    x = inputs
    for layer in layers[1:k]:
        if layer.name == PREPROCESS_LAYER:  # augmentation is left out: features of the images as they are
            x = layer(x)
    x = base(x, training=False)
    features = keras.Model(inputs, x, name=f"{model.name}_features")
    f_in = keras.Input(shape=tuple(x.shape[1:]), dtype="float32", name="features")
    h = f_in
    for layer in layers[k + 1:]:
        h = layer(h)
    head = keras.Model(f_in, h, name=f"{model.name}_head")
    return features, head


def set_linear_head(model, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> None:
    """Write a linear classifier on standardized pooled features into ``model``'s head, exactly.

    The classifier's logits are ``coef @ ((f - mean) / scale) + intercept`` for pooled
    backbone features ``f`` (e.g. a scikit-learn logistic regression fitted on
    standardized features: a linear probe). ``features_norm`` (when present) takes the
    standardization (its moving mean / variance, so ``scale`` should be
    ``sqrt(var + epsilon)``; without it the standardization is folded into the
    embedding), the ReLU ``embedding`` carries the K logits as K units ``z`` and K units
    ``-z``, and the head adds them back (``relu(z) - relu(-z) = z``); other units start at
    zero. The model then predicts exactly what the classifier predicts, and fine-tuning
    starts from there (linear probe, then fine-tuning).

    Parameters
    ----------
    model : keras.Model
        A softmax or sigmoid (multi-label: K independent logits) model from :func:`build_model`
        with ``embedding_dim >= 2 * K``.
    coef : ndarray of shape (K, D)
    intercept : ndarray of shape (K,)
    mean, scale : ndarray of shape (D,)

    Raises
    ------
    ValueError
        Shapes do not match the model, the head is neither softmax nor sigmoid, or the embedding is
        narrower than twice the classes.
    """
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    emb, head = model.get_layer(EMBEDDING_LAYER), model.get_layer(HEAD_LAYER)
    k_classes, dim = coef.shape if coef.ndim == 2 else (0, 0)
    width = int(emb.units)
    if head.units != k_classes or intercept.shape != (k_classes,):
        raise ValueError(f"coef must have shape ({head.units}, D) and intercept ({head.units},) for this model's "
                         f"{head.units} outputs; received coef {coef.shape}, intercept {intercept.shape}")
    if getattr(head.activation, "__name__", "") not in ("softmax", "sigmoid"):
        raise ValueError("set_linear_head needs a softmax (one label per image) or sigmoid (multi-label) head; "
                         f"this model's head is {getattr(head.activation, '__name__', head.activation)!r}")
    if width < 2 * k_classes:
        raise ValueError(f"the embedding ({width} units) must be at least twice as wide as the {k_classes} classes "
                         "to carry a linear classifier")
    kernel_in = int(emb.kernel.shape[0])
    if dim != kernel_in or mean.shape != (dim,) or scale.shape != (dim,):
        raise ValueError(f"coef, mean and scale must span the model's {kernel_in} pooled features; received "
                         f"coef {coef.shape}, mean {mean.shape}, scale {scale.shape}")
    if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept)) and np.all(scale > 0)):
        raise ValueError("coef and intercept must be finite and scale > 0")
    try:
        norm = model.get_layer("features_norm")
    except ValueError:
        norm = None
    w, b = coef.T, intercept  # (D, K): logits = x_std @ w + b
    if norm is not None:
        eps = float(norm.epsilon)
        norm.set_weights([np.ones(dim, np.float32), np.zeros(dim, np.float32), mean.astype(np.float32),
                          np.maximum(scale ** 2 - eps, 0.0).astype(np.float32)])
    else:  # fold the standardization into the embedding: (f - mean) / scale @ w = f @ (w / scale) - mean / scale @ w
        w, b = w / scale[:, None], b - (mean / scale) @ w
    kernel = np.zeros((dim, width), np.float32)
    bias = np.zeros(width, np.float32)
    kernel[:, :k_classes], kernel[:, k_classes:2 * k_classes] = w, -w
    bias[:k_classes], bias[k_classes:2 * k_classes] = b, -b
    out = np.zeros((width, k_classes), np.float32)
    out[:k_classes], out[k_classes:2 * k_classes] = np.eye(k_classes), -np.eye(k_classes)
    emb.set_weights([kernel, bias])
    head.set_weights([out, np.zeros(k_classes, np.float32)])


def unfreeze_top(model, n_layers: int) -> int:
    """Make the top ``n_layers`` layers of the backbone trainable, for fine-tuning after warm-up.

    BatchNormalization layers stay frozen (and run in inference mode, see
    :func:`build_model`), so a small fine-tuning batch does not wreck their statistics.
    The model must be compiled again afterwards (with a lower learning rate).

    Parameters
    ----------
    model : keras.Model
        A transfer-learning model from :func:`build_model`.
    n_layers : int
        How many of the backbone's last layers to unfreeze, ``1 <= n_layers <= len(backbone.layers)``.

    Returns
    -------
    int
        Number of layers now trainable that hold weights.
    """
    base = backbone_of(model)
    if base is None:
        raise ValueError(f"unfreeze_top needs a transfer-learning model; model {model.name!r} has no backbone "
                         "(the CNN trains all its layers already)")
    _check_int("n_layers", n_layers, 1, len(base.layers))
    import keras

    base.trainable = True
    cut = len(base.layers) - n_layers
    n_trainable = 0
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        if layer.trainable and layer.weights:
            n_trainable += 1
    return n_trainable


def twin_model(model):
    """A model sharing ``model``'s layers with outputs ``[predictions, embedding]``: one forward pass for both.

    Raises ``ValueError`` when ``model`` has no ``"embedding"`` layer (not built by :func:`build_model`).
    """
    import keras

    try:
        layer = model.get_layer(EMBEDDING_LAYER)
    except ValueError as exc:
        raise ValueError(f"model {model.name!r} has no layer named {EMBEDDING_LAYER!r}; "
                         "was it built by core.models.build_model?") from exc
    return keras.Model(model.inputs, [model.outputs[0], layer.output], name=f"{model.name}_with_embedding")


def inference_copy(model):
    """An uncompiled model sharing ``model``'s layers and weights (what checkpoints save).

    Saving it instead of the compiled training model keeps the optimizer state and the
    custom loss out of the file: anyone loads it with plain ``keras.saving.load_model``.
    """
    import keras

    return keras.Model(model.inputs, model.outputs, name=model.name)


def save_model(model, path) -> None:
    """Save an uncompiled copy of ``model`` to ``path`` (``.keras``) atomically."""
    import os
    import tempfile
    from pathlib import Path

    from core.workspace import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".save-") as tmp:
        tmp_file = os.path.join(tmp, "model.keras")
        inference_copy(model).save(tmp_file)
        atomic_write_bytes(path, Path(tmp_file).read_bytes())


def load_model(path, *, compile: bool = False):
    """Load a ``.keras`` model with ``safe_mode=True`` (Loupe's custom objects registered)."""
    import keras

    _register_custom_objects()
    return keras.saving.load_model(str(path), safe_mode=True, compile=compile)


# ---------------------------------------------------------------------------
# Multi-label: a loss and an accuracy that ignore missing labels (NaN, or any negative value).
# ---------------------------------------------------------------------------

_CUSTOM: dict[str, Any] = {}


def _register_custom_objects() -> dict[str, Any]:
    """Define and register the masked loss/metric once (Keras imported lazily)."""
    if _CUSTOM:
        return _CUSTOM
    import keras
    from keras import ops

    def _mask_and_clean(y_true):
        y_true = ops.cast(y_true, "float32")
        observed = ops.logical_and(ops.logical_not(ops.isnan(y_true)), y_true >= 0.0)
        return ops.cast(observed, "float32"), ops.where(observed, y_true, ops.zeros_like(y_true))

    @keras.saving.register_keras_serializable(package="loupe")
    class MaskedBinaryCrossentropy(keras.losses.Loss):
        """Binary cross-entropy over observed labels only; missing = NaN or negative in ``y_true``.

        Per sample: the mean over its observed labels (0 when none is observed), so a
        missing entry contributes neither loss nor gradient.
        """

        def __init__(self, epsilon: float = 1e-7, name: str = "masked_binary_crossentropy", **kwargs):
            super().__init__(name=name, **kwargs)
            self.epsilon = float(epsilon)

        def call(self, y_true, y_pred):
            mask, y = _mask_and_clean(y_true)
            p = ops.clip(ops.cast(y_pred, "float32"), self.epsilon, 1.0 - self.epsilon)
            bce = -(y * ops.log(p) + (1.0 - y) * ops.log(1.0 - p))
            return ops.sum(bce * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 1.0)

        def get_config(self):
            return {**super().get_config(), "epsilon": self.epsilon}

    @keras.saving.register_keras_serializable(package="loupe")
    def masked_binary_accuracy(y_true, y_pred):
        """Per sample: the fraction of observed labels predicted right at 0.5 (1 when none observed)."""
        mask, y = _mask_and_clean(y_true)
        hit = ops.cast(ops.equal(ops.cast(y_pred >= 0.5, "float32"), ops.cast(y >= 0.5, "float32")), "float32")
        n = ops.sum(mask, axis=-1)
        return ops.where(n > 0, ops.sum(hit * mask, axis=-1) / ops.maximum(n, 1.0), ops.ones_like(n))

    _CUSTOM.update(MaskedBinaryCrossentropy=MaskedBinaryCrossentropy, masked_binary_accuracy=masked_binary_accuracy)
    return _CUSTOM


def masked_binary_crossentropy(**kwargs):
    """A :class:`MaskedBinaryCrossentropy` loss instance (registered as ``loupe>MaskedBinaryCrossentropy``)."""
    return _register_custom_objects()["MaskedBinaryCrossentropy"](**kwargs)


def masked_binary_accuracy():
    """The registered masked accuracy function (``loupe>masked_binary_accuracy``), for ``compile(metrics=...)``."""
    return _register_custom_objects()["masked_binary_accuracy"]


def combine_hierarchy(primary, subs: Mapping[str, Any], labels: Mapping[str, Any]):
    """One model from a "separate" hierarchy: ``P(leaf) = P(category) * P(leaf | category)``.

    Parameters
    ----------
    primary : keras.Model
        Softmax over the first level's classes (``labels["level_classes"][levels[0]]`` order).
    subs : dict
        ``{category: keras.Model}`` softmax over that category's leaves (in leaf-class
        order); a category with a single leaf needs no model.
    labels : dict
        The hierarchical labels.json.

    Returns
    -------
    keras.Model
        Input raw pixels, output ``"predictions"`` (N, K_leaf) in leaf-class order, and a
        top-level ``"embedding"`` layer (the primary model's embedding). Only standard
        layers (fixed Dense maps, Multiply, Concatenate): loads with ``safe_mode=True``.
    """
    import keras

    levels = labels["levels"]
    top_names = labels["level_classes"][levels[0]]
    leaf_names = labels["level_classes"][levels[-1]]
    anc = leaf_ancestors(labels)[levels[0]]
    inputs = keras.Input(shape=primary.input_shape[1:], dtype="float32", name="image")
    twin = keras.Model(primary.inputs, [primary.output, primary.get_layer("embedding").output], name="primary")
    p_top, emb = twin(inputs)
    emb = keras.layers.Identity(name="embedding")(emb)
    parts, order = [], []
    for i, c in enumerate(top_names):
        leaves = np.flatnonzero(anc == i)
        if len(leaves) == 0:
            continue
        if c in subs:
            sub = subs[c]
            sub_named = keras.Model(sub.inputs, sub.output, name=f"sub_{i:02d}")
            parts.append(sub_named(inputs))
        else:
            if len(leaves) > 1:
                raise ValueError(f"category {c!r} has {len(leaves)} leaves but no sub-model")
            ones = keras.layers.Dense(1, use_bias=True, kernel_initializer="zeros", bias_initializer="ones",
                                      trainable=False, name=f"one_{i:02d}")
            parts.append(ones(p_top))
        order.extend(leaves.tolist())
    q = keras.layers.Concatenate(name="conditional")(parts) if len(parts) > 1 else parts[0]
    n_leaf = len(leaf_names)
    expand = np.zeros((len(top_names), n_leaf), dtype="float32")
    for j, leaf_i in enumerate(order):
        expand[anc[leaf_i], j] = 1.0
    p_exp = keras.layers.Dense(n_leaf, use_bias=False, trainable=False, name="category_prob")
    joint = keras.layers.Multiply(name="joint")([p_exp(p_top), q])
    perm = np.zeros((n_leaf, n_leaf), dtype="float32")
    for j, leaf_i in enumerate(order):
        perm[j, leaf_i] = 1.0
    reorder = keras.layers.Dense(n_leaf, use_bias=False, trainable=False, name="leaf_probs")
    # The embedding must lie on a path to the output to be part of the saved graph (and
    # reachable by name): a fixed all-zero map from it is added to the probabilities.
    tap = keras.layers.Dense(n_leaf, use_bias=False, kernel_initializer="zeros", trainable=False,
                             name="embedding_tap")(emb)
    out = keras.layers.Add(name="predictions")([reorder(joint), tap])
    model = keras.Model(inputs, out, name="loupe_hierarchy_separate")
    p_exp.set_weights([expand])
    reorder.set_weights([perm])
    return model
