"""Paths and tables: walking a dataset folder, reading a labels table, and reading its cells.

:func:`read_table` reads a CSV / TSV / Parquet table as strings exactly as written (the
delimiter sniffed); the private helpers resolve paths the user typed, list the files of a
folder (hidden ones skipped), and parse cells: multi-hot values, numbers, delimited tags.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from core.datasets.types import DatasetError
from core.images import IMAGE_EXTENSIONS

_MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "-1", "-1.0", "?"})
_ONE_TOKENS = frozenset({"1", "1.0", "true", "yes", "y", "t"})
_ZERO_TOKENS = frozenset({"0", "0.0", "false", "no", "n", "f"})
_SKIP_DIRS = frozenset({"__MACOSX", "__pycache__"})
_SKIP_FILES = frozenset({"Thumbs.db", "desktop.ini"})


def _resolve_user_path(value: str, root: Path | None) -> Path:
    """A path the user typed: absolute as is; relative: under ``root`` first, then the current folder."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    if root is not None and (root / p).exists():
        return (root / p).absolute()
    return p.absolute()


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _SKIP_DIRS or name in _SKIP_FILES


def _walk_files(root: Path, *, exclude: Iterable[Path] = (), dirs: list[str] | None = None) -> list[tuple[str, ...]]:
    """Relative path parts of every non-hidden file under ``root``, sorted (symlinked folders followed once).

    ``dirs``, when given, receives every folder walked (to notice later additions / removals).
    """
    excluded = {os.path.realpath(p) for p in exclude}
    out: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in excluded:
            dirnames[:] = []
            continue
        seen.add(real)
        if dirs is not None:
            dirs.append(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        rel = Path(dirpath).relative_to(root).parts
        for f in filenames:
            if not _is_hidden(f):
                out.append(rel + (f,))
    out.sort()
    return out


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _sniff_delimiter(text: str) -> str | None:
    """The delimiter among , TAB ; | that splits the header into >1 columns and the most rows alike.

    Quoted cells are honoured (``"a, b"`` is one cell). Ties go to the earlier delimiter in
    that order. None when no candidate gives more than one column.
    """
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    best, best_key = None, None
    for rank, delim in enumerate((",", "\t", ";", "|")):
        try:
            counts = [len(r) for r in csv.reader(lines, delimiter=delim)]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        consistency = sum(c == counts[0] for c in counts) / len(counts)
        key = (consistency, -rank)
        if best_key is None or key > best_key:
            best, best_key = delim, key
    return best


def _suggest_delimiter(header: str) -> str | None:
    counts = {d: header.count(d) for d in (";", "\t", "|", ",", ":", " ")}
    d, n = max(counts.items(), key=lambda kv: kv[1])
    return d if n > 0 else None


def _delim_name(d: str | None) -> str:
    return {"\t": "TAB", " ": "space", None: "none"}.get(d, repr(d))


def read_table(path: str | os.PathLike, *, delimiter: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a CSV / TSV / Parquet labels table as strings, exactly as written.

    Parameters
    ----------
    path : str or PathLike
        The table. ``.parquet`` / ``.pq`` are Parquet, anything else text.
    delimiter : str, optional
        Text tables: the delimiter; sniffed among ``, TAB ; |`` when omitted.

    Returns
    -------
    table : DataFrame
        Every cell as ``str`` (missing cells are ``""``); column names stripped (and any BOM).
    info : dict
        ``delimiter``, ``encoding``, ``bad_rows`` (list of ``(row, message)``).

    Raises
    ------
    DatasetError
        Missing or unreadable file, or a table with no rows.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: the labels table does not exist (or is not a file).")
    info: dict[str, Any] = {"delimiter": None, "encoding": None, "bad_rows": []}
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            raise DatasetError(f"{p}: cannot read this Parquet file ({exc}).") from None
        df = df.astype(object).where(pd.notna(df), "")
        df = df.map(lambda v: v if isinstance(v, str) else _cell_str(v))
    else:
        raw = p.read_bytes()
        for enc in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = raw.decode(enc)
                info["encoding"] = enc
                break
            except UnicodeDecodeError:
                continue
        text = text.lstrip("\ufeff")
        if not text.strip():
            raise DatasetError(f"{p}: the labels table is empty.")
        delim = delimiter or _sniff_delimiter(text) or ","
        info["delimiter"] = delim
        bad: list[tuple[int, str]] = []

        def on_bad(fields_: list[str]) -> None:
            bad.append((len(bad), f"{len(fields_)} cells: {delim.join(fields_)[:80]}"))
            return None

        kw = dict(sep=delim, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True,
                  quotechar='"', skip_blank_lines=True)
        try:
            df = pd.read_csv(io.StringIO(text), engine="c", on_bad_lines="error", **kw)
        except pd.errors.ParserError:
            df = pd.read_csv(io.StringIO(text), engine="python", on_bad_lines=on_bad, **kw)
            info["bad_rows"] = bad
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{p}: the labels table is empty.") from None
    df.columns = [str(c).replace("\ufeff", "").strip() for c in df.columns]
    df = df.reset_index(drop=True)
    return df, info


def _cell_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    return str(v)


def _find_column(df_cols: Sequence[str], name: str, what: str, table: Path) -> str:
    """The column called ``name`` (exact, else case/space-insensitive), or a DatasetError listing them."""
    if name in df_cols:
        return name
    folded = {c.strip().lower(): c for c in df_cols}
    if name.strip().lower() in folded:
        return folded[name.strip().lower()]
    hint = ""
    if len(df_cols) == 1:
        d = _suggest_delimiter(df_cols[0])
        if d:
            hint = (f" The table has a single column {df_cols[0]!r}: the delimiter looks wrong; its header "
                    f"contains {_delim_name(d)} — pass delimiter={d!r} (CLI: --delimiter).")
    raise DatasetError(
        f"{table}: no {what} column named {name!r}. Available columns: {', '.join(map(repr, df_cols))}.{hint}"
    )


def _multihot_value(token: str) -> float | None:
    """'1'/'0'/missing -> 1.0 / 0.0 / NaN; None when the token is not a multi-hot value."""
    t = token.strip().lower()
    if t in _ONE_TOKENS:
        return 1.0
    if t in _ZERO_TOKENS:
        return 0.0
    if t in _MISSING_TOKENS:
        return math.nan
    return None


def _is_multihot(values: pd.Series) -> bool:
    vals = set(values.str.strip().str.lower().unique())
    if not vals or not vals <= (_ONE_TOKENS | _ZERO_TOKENS | _MISSING_TOKENS):
        return False
    return bool(vals & (_ONE_TOKENS | _ZERO_TOKENS - {"n", "f"}))


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _tag_delimiter(values: pd.Series, *, allow_space: bool) -> str | None:
    """The tag delimiter used in a column of delimited tags, or None."""
    vals = values[values.str.strip() != ""]
    if vals.empty:
        return None
    best, best_frac = None, 0.0
    for d in ("|", ";", ",") + ((" ",) if allow_space else ()):
        frac = float(vals.str.strip().str.contains(re.escape(d), regex=True).mean())
        if frac > best_frac:
            best, best_frac = d, frac
    return best if best_frac >= 0.1 else None


def _split_tags(cell: str, delim: str) -> list[str]:
    return [t.strip() for t in cell.split(delim) if t.strip()]
