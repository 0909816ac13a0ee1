"""The built-in demo dataset: generated UI-element crops with a ground truth of injected problems.

Vocabulary: the demo has N labelled images (``images/*.png``, listed in ``labels.csv``)
and a separate folder of unlabelled out-of-distribution images (``unseen/*.png``).
Each labelled image is a crop of one UI element, drawn with PIL + numpy from a seed,
so the same seed gives the same bytes on the same library versions.

Label hierarchy (two levels, ``group > element``)::

    action      button, link, icon
    choice      checkbox, radio, toggle, dropdown, slider
    text_entry  text_input, textarea            (textarea is the RARE class: 12 images)

Multi-label attributes ``disabled`` and ``dark_theme``: ``1`` / ``0``, and about 7 %
of the cells left empty (missing -- never read them as 0).

Injected problems, one row each in ``ground_truth.csv``
(columns ``image, problem, detail, true_element, given_element``; an image may have
several rows):

``uniform``             a blank crop (solid or near-solid colour, pixel std < 1.5) with an
                        arbitrary label; ``true_element`` is empty (no element visible).
``duplicate``           an exact byte copy of another image (``detail``: ``copy_of=...``);
                        half of them carry a conflicting element label, and those also
                        get a ``flipped_label`` row.
``near_duplicate``      a resized / recompressed / slightly cropped copy
                        (``detail``: ``of=...;transform=...``), same labels as the source.
``corrupt``             a file named ``.png`` that does not decode: a truncated PNG,
                        zero bytes, or a text file (``detail`` says which).
``flipped_label``       ~4 % of the clean images: the element replaced by another class's
                        element, **with the group changed to match** (the hierarchy stays
                        valid). The rare class is never flipped in or out.
``hierarchy_conflict``  a couple of rows whose element is right but whose group is wrong
                        (``detail``: ``given_group=...;true_group=...``), for validators.

Load it as a hierarchical table (see :data:`DATASET_OPTIONS`)::

    python -m core dataset inspect DEMO --labels labels.csv --image-column image \\
        --task hierarchical --label-columns group,element \\
        --attribute-columns disabled,dark_theme --unseen DEMO/unseen

Where things live (each submodule imports only the ones above it):

``contents``  the public constants (classes, problems, columns, loader options) and :class:`DemoInfo`.
``draw``      drawing the UI-element crops: styles, fonts, texts, one renderer per element.
``variants``  degradations, near copies and blank crops, and the unseen (out-of-distribution) images.
``build``     building the folder: inject the problems, write images, labels, ground truth, manifest.
``folder``    :func:`generate_demo` (atomic), :func:`read_demo`, :func:`ensure_demo`,
              :func:`ensure_demo_dataset` and the checks :func:`is_demo`, :func:`is_complete_demo`.
"""

from core.demo.contents import (DATASET_OPTIONS, DEFAULT_COUNTS, ELEMENTS, GROUND_TRUTH_COLUMNS, GROUP_OF, HIERARCHY,
                                LABEL_COLUMNS, MANIFEST, PROBLEMS, RARE_CLASS, RARE_COUNT, DemoInfo)
from core.demo.folder import (ensure_demo, ensure_demo_dataset, generate_demo, is_complete_demo, is_demo,
                              read_demo)

__all__ = [
    "DATASET_OPTIONS", "DEFAULT_COUNTS", "ELEMENTS", "GROUND_TRUTH_COLUMNS", "GROUP_OF", "HIERARCHY",
    "LABEL_COLUMNS", "MANIFEST", "PROBLEMS", "RARE_CLASS", "RARE_COUNT", "DemoInfo", "ensure_demo",
    "ensure_demo_dataset", "generate_demo", "is_complete_demo", "is_demo", "read_demo",
]
