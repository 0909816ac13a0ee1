"""Embeddings of a run: feature extraction, PCA/UMAP maps, clusters and out-of-distribution scores.

Vocabulary: a run's dataset has N samples; the run's model has a layer named
``"embedding"`` (see :mod:`core.models`) whose output is a D-dimensional vector per image.

* :func:`compute_embeddings` runs the model once over **every** sample of the run's dataset
  (all splits) and caches the result in the run directory (``embeddings.npz``, written
  atomically; recomputed when the checkpoint or the sample list changes). It returns an
  :class:`Embeddings` with the vectors (N, D), the model's probabilities (N, K) and the
  true / predicted label of every sample as strings.
* :func:`embed_images` / :func:`embed_paths` embed new images (uploads, an unseen folder)
  with the same model.
* :func:`project` maps vectors to 2-D or 3-D with PCA or UMAP (:data:`PROJECTIONS`); the
  returned :class:`Projection` keeps the fitted model so new points are placed on the same
  map with ``projection.model.transform(vectors)`` -- no refit.
* :func:`cluster` groups vectors with a Gaussian mixture (k chosen by BIC) or
  agglomerative (Ward) clustering and measures agreement with the labels (adjusted Rand
  index, purity).
* :func:`fit_ood` fits an out-of-distribution scorer on the **train** embeddings
  (:data:`OOD_METHODS`: Mahalanobis distance to the nearest class mean, Gaussian-mixture
  negative log-likelihood, k-nearest-neighbour cosine distance). Every ``score`` is
  *higher = more unusual* (less like anything in training). :func:`evaluate_ood` scores
  the test split against a set of unseen images (AUROC, threshold at a false-alarm rate);
  :func:`save_ood_threshold` writes the chosen threshold to ``thresholds.json`` for
  Predict, and :func:`ood_scores` scores vectors with the saved method.

Where each part lives (this file only re-exports them; the arrows run down this list):

* :mod:`core.embeddings.forward` -- the model cache and the one forward pass over a dataset's images
  (:func:`~core.embeddings.forward.forward_samples`), in this process or on Ray.
* :mod:`core.embeddings.compute` -- :class:`Embeddings`, the run look-ups,
  :func:`embed_images` / :func:`embed_paths` / :func:`find_images`, :func:`compute_embeddings`
  and its ``embeddings.npz`` cache (:func:`load_embeddings`, :func:`embeddings_fresh`).
* :mod:`core.embeddings.projection` -- :func:`project` (PCA / UMAP), :func:`warm_up_umap`,
  :func:`sample_for_display`.
* :mod:`core.embeddings.clustering` -- :func:`cluster` and :class:`Clustering`.
* :mod:`core.embeddings.ood` -- the out-of-distribution scorers, :func:`fit_ood`,
  :func:`evaluate_ood`, :func:`ood_model` / :func:`ood_scores`, :func:`save_ood_threshold`.
* :mod:`core.embeddings.thumbnails` -- thumbnails and uploads for the page's galleries.
* :mod:`core.embeddings.backbone` -- embeddings before any training, from a pretrained
  ImageNet backbone (:func:`backbone_embeddings`; the audit uses them too).

TensorFlow, scikit-learn and umap-learn are imported inside the functions that use them.
"""

from core.embeddings.compute import (
    EMBEDDINGS_FILE,
    Embeddings,
    ProgressFn,
    compute_embeddings,
    embed_images,
    embed_images_with_probs,
    embed_paths,
    embeddings_fresh,
    embeddings_path,
    find_images,
    image_size,
    load_embeddings,
)
from core.embeddings.forward import BATCH_SIZE
from core.embeddings.projection import (
    PROJECTION_METHODS,
    PROJECTIONS,
    Projection,
    project,
    sample_for_display,
    warm_up_umap,
)
from core.embeddings.clustering import CLUSTER_FIT_MAX, CLUSTER_METHODS, Clustering, cluster
from core.embeddings.ood import (
    DEFAULT_FPR,
    OOD_METHODS,
    GMMOOD,
    KNNOOD,
    MahalanobisOOD,
    OODEvaluation,
    OODModel,
    auroc,
    evaluate_ood,
    fit_ood,
    ood_model,
    ood_scores,
    save_ood_threshold,
    threshold_at_fpr,
)
from core.embeddings.thumbnails import dataset_thumbnails, path_thumbnails, sample_thumbnails, store_upload
from core.embeddings.backbone import (
    BACKBONE,
    backbone_embed_paths,
    backbone_embeddings,
    backbone_embeddings_fresh,
    backbone_embeddings_path,
)

__all__ = [
    # compute
    "BATCH_SIZE", "EMBEDDINGS_FILE", "Embeddings", "ProgressFn", "compute_embeddings", "embed_images",
    "embed_images_with_probs", "embed_paths", "embeddings_fresh", "embeddings_path", "find_images", "image_size",
    "load_embeddings",
    # projection
    "PROJECTION_METHODS", "PROJECTIONS", "Projection", "project", "sample_for_display", "warm_up_umap",
    # clustering
    "CLUSTER_FIT_MAX", "CLUSTER_METHODS", "Clustering", "cluster",
    # ood
    "DEFAULT_FPR", "OOD_METHODS", "GMMOOD", "KNNOOD", "MahalanobisOOD", "OODEvaluation", "OODModel", "auroc",
    "evaluate_ood", "fit_ood", "ood_model", "ood_scores", "save_ood_threshold", "threshold_at_fpr",
    # thumbnails
    "dataset_thumbnails", "path_thumbnails", "sample_thumbnails", "store_upload",
    # backbone
    "BACKBONE", "backbone_embed_paths", "backbone_embeddings", "backbone_embeddings_fresh", "backbone_embeddings_path",
]
