"""Datasets of every label shape -> one :class:`Dataset` (samples table + label schema + split).

Vocabulary: a dataset has N samples; a *sample* is one image file, or one region (box)
cut out of a larger image. The *samples table* is a :class:`pandas.DataFrame` with one
row per valid sample and these columns, in this order:

``sample_id``  str, stable and unique: the image path relative to the dataset root
               (POSIX separators), plus ``#<row>`` for region crops.
``path``       str, absolute path of the image file.
``rel_path``   str, the path exactly as the dataset gives it (CSV cell or folder path).
``x1 y1 x2 y2`` float pixel box of a region crop, NaN for whole images.
``split``      str, one of ``train``, ``val``, ``test`` (stored, seeded, made once).
``width height`` int, size of the original image (before cropping); ``mode`` str (PIL mode).
then the label columns named in :class:`LabelSchema`:

* ``multiclass`` / ``binary``: one column of str class names.
* ``multilabel``: K columns, one per label, float 1.0 / 0.0 / NaN (NaN = missing, never 0).
* ``hierarchical``: one str column per level, ordered coarse -> fine.
* ``attribute_columns`` (any task): extra multi-hot columns, float 1.0 / 0.0 / NaN.

Shapes that load (auto-detected by :func:`detect`, every choice overridable in
:class:`DatasetSpec`):

1. **Class folders** ``root/<class>/*.jpg``. Nested folders are hierarchy levels
   (``root/Apparel/Topwear/Tshirts/x.jpg`` -> levels ``level_1..level_3``, or the names in
   ``label_columns``). Top folders named ``train/ val/ test/`` (also ``valid``,
   ``validation``, ``dev``, ``training``, ``testing``) are a given split.
2. **A table** (CSV / TSV / Parquet; delimiter sniffed, BOM and quoted cells handled)
   with an image-path column (relative to the images folder, or absolute) and one label
   column -> ``multiclass``; two classes -> ``binary`` with a positive class (the given
   one, else one named like ``1/true/yes/positive/valid``, else the minority class).
3. **Multi-label**: K multi-hot columns (``1``/``0``; an empty cell, ``NaN`` or ``-1`` is
   *missing*, stored as NaN, never 0), or one column of delimited tags (``|`` ``;`` ``,``
   or space; an empty tag cell is missing).
4. **Hierarchical**: ``label_columns`` are ordered levels (coarse -> fine), plus optional
   multi-hot ``attribute_columns``.
5. **Region crops**: box columns ``x,y,w,h`` or ``x1,y1,x2,y2`` (also ``xmin..ymax``,
   ``left,top,right,bottom``, ``left,top,width,height``); each row is one sample with
   ``sample_id = <image path>#<row>``.
6. **Unseen**: a folder of unlabelled images (searched recursively) kept beside the
   dataset for out-of-distribution checks (:attr:`Dataset.unseen_paths`).

Rows are numbered from 0 (the first row after the header), as pandas does; messages
also give the line of a CSV file (``row + 2``).

The split is made once: a split column or split folders win; otherwise each sample
gets ``train/val/test`` (default 70/15/15) by a seeded, stratified assignment (on the
class; the finest level for hierarchies; the rarest positive label for multi-label).
Re-loading keeps the stored split of every sample already present and assigns only
new samples. Classes too rare to stratify are kept and reported, never dropped.

Nothing here modifies the user's files: everything is written under the workspace
(``datasets/<dataset_id>/``: ``samples.parquet``, ``schema.json``, ``report.json``,
``spec.json``, ``dataset.json``) through atomic writes.

Where things live (each submodule imports only the ones above it):

``types``      the constants (:data:`TASKS`, :data:`SPLITS`, :data:`BASE_COLUMNS`, ...),
               :class:`DatasetSpec`, :class:`LabelSchema`, :class:`LoadReport` and its problems,
               :class:`Dataset`, :class:`DatasetError`.
``tables``     :func:`read_table` (delimiter sniffing), folder walking, path and cell helpers.
``detection``  :func:`detect` and :class:`Detection`: layout and column-kind guessing.
``collect``    the candidate rows of class folders or of a table, labels parsed per label shape.
``splits``     :func:`assign_splits` (seeded, stratified, stable) and the strata.
``store``      :func:`dataset_id_for`, the stored files, :func:`open_dataset`, :func:`list_datasets`,
               :func:`dataset_summary`.
``load``       :func:`load_dataset`: collect, decode once, schema, split, warnings, store.
``zips``       :func:`import_zip` (the Data page's upload).
"""

from core.datasets.detection import Detection, detect
from core.datasets.load import load_dataset
from core.datasets.splits import assign_splits
from core.datasets.store import dataset_id_for, dataset_summary, list_datasets, open_dataset
from core.datasets.tables import read_table
from core.datasets.types import (BASE_COLUMNS, BOX_FORMATS, DEFAULT_FRACTIONS, MAX_EXAMPLES, PREVIEW_SIZE,
                                 RARE_CLASS_MIN, SPLIT_ALIASES, SPLITS, TABLE_EXTENSIONS, TASKS, WHAT_TO_DO, Dataset,
                                 DatasetError, DatasetSpec, LabelSchema, LoadReport, Problem, ProblemGroup)
from core.datasets.zips import import_zip

__all__ = [
    "BASE_COLUMNS", "BOX_FORMATS", "DEFAULT_FRACTIONS", "MAX_EXAMPLES", "PREVIEW_SIZE", "RARE_CLASS_MIN",
    "SPLIT_ALIASES", "SPLITS", "TABLE_EXTENSIONS", "TASKS", "WHAT_TO_DO",
    "Dataset", "DatasetError", "DatasetSpec", "Detection", "LabelSchema", "LoadReport", "Problem", "ProblemGroup",
    "assign_splits", "dataset_id_for", "dataset_summary", "detect", "import_zip", "list_datasets", "load_dataset",
    "open_dataset", "read_table",
]
