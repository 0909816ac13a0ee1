"""What the demo contains: its classes and hierarchy, the injected problems, the file columns, its loader options.

The public constants (:data:`HIERARCHY`, :data:`ELEMENTS`, :data:`PROBLEMS`,
:data:`DATASET_OPTIONS`, ...), the manifest's name and generator tag, and :class:`DemoInfo`
(what a generated demo folder holds, as read back from its manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------
# Public constants
# ---------------------------------------------------------------------------

#: group -> elements, coarse -> fine (the two label levels of the demo).
HIERARCHY: dict[str, tuple[str, ...]] = {
    "action": ("button", "link", "icon"),
    "choice": ("checkbox", "radio", "toggle", "dropdown", "slider"),
    "text_entry": ("text_input", "textarea"),
}
#: element -> group.
GROUP_OF: dict[str, str] = {e: g for g, els in HIERARCHY.items() for e in els}
#: All element classes, sorted.
ELEMENTS: tuple[str, ...] = tuple(sorted(GROUP_OF))
#: The rare class and its (exact) number of labelled images.
RARE_CLASS = "textarea"
RARE_COUNT = 12

#: Clean images drawn per element before problems are injected (~1,050 labelled in all).
DEFAULT_COUNTS: dict[str, int] = {
    "button": 150, "link": 110, "icon": 90,
    "checkbox": 120, "radio": 100, "toggle": 90, "dropdown": 100, "slider": 80,
    "text_input": 140, "textarea": RARE_COUNT,
}
PROBLEMS = ("uniform", "duplicate", "near_duplicate", "corrupt", "flipped_label", "hierarchy_conflict")
LABEL_COLUMNS = ("image", "group", "element", "disabled", "dark_theme")
GROUND_TRUTH_COLUMNS = ("image", "problem", "detail", "true_element", "given_element")

#: How the demo loads as a Loupe dataset (paths relative to the demo folder).
DATASET_OPTIONS: dict[str, Any] = {
    "labels": "labels.csv",
    "image_column": "image",
    "task": "hierarchical",
    "label_columns": ["group", "element"],
    "attribute_columns": ["disabled", "dark_theme"],
    "unseen": "unseen",
}

MANIFEST = "demo.json"
_GENERATOR = "loupe.core.demo"
_FORMAT = 1



@dataclass(frozen=True)
class DemoInfo:
    """What :func:`core.demo.generate_demo` wrote.

    ``classes`` are the element names (sorted); ``hierarchy`` maps group -> elements;
    ``problems`` maps each name in :data:`PROBLEMS` to its number of ground-truth rows.
    """

    out_dir: Path
    labels_csv: Path
    ground_truth: Path
    unseen_dir: Path
    readme: Path
    seed: int
    n_images: int
    n_unseen: int
    classes: tuple[str, ...]
    hierarchy: dict[str, tuple[str, ...]] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)

    def dataset_options(self) -> dict[str, Any]:
        """The loader options for this demo, with absolute paths (see :data:`DATASET_OPTIONS`)."""
        opts = dict(DATASET_OPTIONS)
        opts["path"] = str(self.out_dir)
        opts["labels"] = str(self.labels_csv)
        opts["unseen"] = str(self.unseen_dir)
        return opts

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "labels_csv": str(self.labels_csv),
            "ground_truth": str(self.ground_truth), "unseen_dir": str(self.unseen_dir),
            "readme": str(self.readme), "seed": self.seed, "n_images": self.n_images,
            "n_unseen": self.n_unseen, "classes": list(self.classes),
            "hierarchy": {g: list(e) for g, e in self.hierarchy.items()},
            "class_counts": dict(self.class_counts), "problems": dict(self.problems),
        }
