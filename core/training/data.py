"""The tf.data pipeline: rows of the resized uint8 image cache -> float batches, in RAM when small,
streamed from the memory map otherwise.
"""

from __future__ import annotations


import numpy as np


#: Arrays up to this many bytes are copied to RAM for the pipeline; larger ones stream from the memmap.
IN_MEMORY_LIMIT_BYTES = 512 * 1024**2

def make_dataset(images: np.ndarray, indices: np.ndarray, y: np.ndarray | None = None, *, batch_size: int,
                 shuffle: bool = False, seed: int = 0, in_memory_limit: int = IN_MEMORY_LIMIT_BYTES,
                 mirror: bool = False):
    """A ``tf.data.Dataset`` of ``(float32 images (B, S, S, 3) in 0..255, targets)`` batches.

    Parameters
    ----------
    images : ndarray of shape (N, S, S, 3), uint8
        Usually the image cache's memmap.
    indices : ndarray of shape (M,), int
        Rows of ``images`` (and ``y``) to serve.
    y : ndarray of shape (N,) or (N, K), optional
        Targets aligned with ``images``; ``None`` gives image-only batches (prediction).
    batch_size : int
    shuffle : bool
        Reshuffle every epoch (seeded).
    in_memory_limit : int
        When the selected rows take at most this many bytes they are copied to RAM once
        and gathered in-graph; otherwise each batch is read from the memmap in a
        parallel ``numpy_function`` (sorted reads), so RAM stays flat.
    mirror : bool
        Serve every image mirrored left-right (test-time flip averaging, see :func:`predict_images`).

    Returns
    -------
    tf.data.Dataset
    """
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    size = images.shape[1:]
    per = int(np.prod(size))
    pos = tf.data.Dataset.from_tensor_slices(np.arange(len(indices), dtype=np.int64))
    if shuffle:
        pos = pos.shuffle(max(1, len(indices)), seed=seed, reshuffle_each_iteration=True)
    pos = pos.batch(batch_size)
    if len(indices) * per <= in_memory_limit:
        table = tf.constant(np.ascontiguousarray(images[np.sort(indices)])[np.argsort(np.argsort(indices))]
                            if len(indices) else np.zeros((0, *size), np.uint8))

        def load(p):
            return tf.cast(tf.gather(table, p), tf.float32)
    else:
        rows = indices

        def gather(p):
            idx = rows[p]
            order = np.argsort(idx, kind="stable")
            out = np.empty((len(idx), *size), dtype=np.uint8)
            out[order] = images[idx[order]]
            return out

        def load(p):
            x = tf.numpy_function(gather, [p], tf.uint8, stateful=False)
            x.set_shape((None, *size))
            return tf.cast(x, tf.float32)

    if mirror:
        plain = load

        def load(p):
            return tf.reverse(plain(p), axis=[2])  # (B, H, W, C): the width axis

    if y is None:
        ds = pos.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        y_sel = np.asarray(y)[indices]
        y_t = tf.constant(y_sel.astype(np.float32) if y_sel.dtype.kind == "f" else y_sel.astype(np.int64))
        ds = pos.map(lambda p: (load(p), tf.gather(y_t, p)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def predict_images(model, images: np.ndarray, indices: np.ndarray, *, batch_size: int, flip_average: bool = False):
    """``model.predict`` on rows ``indices`` of ``images``; with ``flip_average`` the mean of the
    predictions for each image and its left-right mirror (what a run trained on mirrored images
    ships: :attr:`core.training.config.TrainConfig.flip_average`)."""
    probs = model.predict(make_dataset(images, indices, None, batch_size=batch_size), verbose=0)
    if flip_average:
        mirrored = model.predict(make_dataset(images, indices, None, batch_size=batch_size, mirror=True), verbose=0)
        probs = (np.asarray(probs, dtype=np.float64) + np.asarray(mirrored, dtype=np.float64)) / 2
    return probs
