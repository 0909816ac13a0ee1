"""Dirty-sample detectors: what is wrong with a dataset, one row per flag.

Vocabulary: a dataset has N samples (see :mod:`core.datasets`); an *issue* is one flag
raised by one detector on one sample. :func:`audit_dataset` runs the enabled detectors
and returns an :class:`AuditResult` whose ``issues`` table has one row per flag:

``sample_id``        the sample (as in the samples table; for ``corrupt`` files, which never
                     became samples, the path relative to the dataset folder).
``path``             the image path as the dataset gives it (``rel_path``).
``issue``            one of :data:`DETECTORS`.
``score``            float, **higher = more suspect**; within an issue the rows are sorted
                     most suspect first. Scores compare within one issue only.
``suggested_action`` one of :data:`ACTIONS`: ``exclude`` (drop from training), ``relabel``
                     (to ``suggested_label``), ``keep`` (shown, nothing to fix), ``review``
                     (a person must look).
``suggested_label``  str, the likely right label ('' when there is none).
``label``            the current label (str; hierarchical: the leaf level; multilabel:
                     the positive labels joined by ``|``).
``label_column``     the label column ``suggested_label`` applies to ('' when none).
``detail``           one human-readable sentence: what was measured and why it is suspect.
``group``            related samples: a duplicate cluster id shared by its members
                     (``dup:...`` / ``near:...``), the class for ``rare_class``, else ''.

Every detector reads the resized images of the workspace's image cache
(:class:`core.images.ImageCache`, the same 96 px arrays the loader decoded), streamed in
chunks from a memory map, so memory stays flat as the dataset grows; exact duplicates
also hash the file bytes (streamed). ``label_issue`` uses confident learning
(:func:`cleanlab.filter.find_label_issues`) on out-of-sample predicted probabilities only:
cross-validated (``cross_val_predict``) logistic regression on cheap image features (plus
a pretrained ImageNet backbone's features when its weights are at hand, see
:data:`LABEL_FEATURES`), or a trained run's validation / test predictions when ``run_dir``
is given.

The latest audit of each dataset is saved under ``<workspace>/cache/audit/<dataset_id>/``
(:func:`save_audit`, :func:`load_audit`), together with the config that produced it.

Where things live (each submodule imports only the ones above it):

``config``       :data:`DETECTORS`, :data:`ISSUE_COLUMNS` and the other names of the contract,
                 :class:`AuditConfig` (thresholds), :class:`AuditResult`, the row helpers.
``image_stats``  the streamed pass of per-image statistics over the cached images; corrupt files.
``duplicates``   exact and near duplicates (pixels with crop alignment; ImageNet features + keypoints).
``labels``       ``label_issue`` (confident learning), hierarchy conflicts, missing labels, rare classes.
``store``        :func:`save_audit`, :func:`load_audit`, :func:`audit_stamp`.
``pipeline``     :func:`audit_dataset` (runs the detectors in order), :func:`issues_by_class`.
"""

from core.audit.config import (ACTIONS, AUDIT_SIZE, CONFIG_FIELDS, DETECTORS, ISSUE_COLUMNS, LABEL_FEATURES,
                               LABEL_FILTERS, NEAR_FEATURES, NEAR_MATCHES, NEAR_SIMILARITY, AuditConfig, AuditResult)
from core.audit.pipeline import audit_dataset, issues_by_class
from core.audit.store import audit_stamp, load_audit, save_audit

__all__ = [
    "ACTIONS", "AUDIT_SIZE", "CONFIG_FIELDS", "DETECTORS", "ISSUE_COLUMNS", "LABEL_FEATURES", "LABEL_FILTERS",
    "NEAR_FEATURES",
    "NEAR_MATCHES", "NEAR_SIMILARITY", "AuditConfig", "AuditResult", "audit_dataset", "issues_by_class",
    "audit_stamp", "load_audit", "save_audit",
]
