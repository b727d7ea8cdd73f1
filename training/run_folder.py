"""The run folder: what ``python -m training.train`` writes and ``converters/quantize.py`` reads -- one contract,
one module that reads and writes it.

::

    RUN/
      model.keras          the best model (safe-mode loadable), saved atomically
      checkpoint.keras     the last epoch's model, with checkpoint.json (epoch, best val accuracy): --resume
      labels.txt           one label per line, in output order
      feature_config.json  the frontend settings, with the training split's normalisation statistics
      split.csv            path,label,group,split -- paths relative to the data root
      history.csv          one row per epoch (Keras CSVLogger)
      train_config.json    the TrainConfig and the data, features and negatives it ran on
      train_summary.json   epochs run, seconds, stop reason, backend, device
      report.json, report.md, curves.png, confusion.png   (training.report)

Split files of older runs have three columns (``path,label,split``); :func:`read_split` reads them too, with
an empty group. No Keras or TensorFlow here: :func:`load_run` reads a run without either.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from edge.bundle import LABELS, repo_root
from edge.errors import AuricleError
from edge.features import FeatureConfig
from edge.fileio import atomic_writer, write_text_atomic
from edge.splits import SPLITS

__all__ = [
    "MODEL", "CHECKPOINT", "CHECKPOINT_STATE", "LABELS", "FEATURE_CONFIG", "SPLIT", "HISTORY", "TRAIN_CONFIG",
    "TRAIN_SUMMARY", "REPORT_FILES", "SPLITS", "SPLIT_COLUMNS", "SplitRow", "write_split", "read_split",
    "read_history", "save_model_atomic", "write_labels", "read_labels", "write_feature_config",
    "read_feature_config", "read_json", "resolve_data_root", "RunFolder", "load_run",
]

MODEL = "model.keras"
CHECKPOINT = "checkpoint.keras"
CHECKPOINT_STATE = "checkpoint.json"
FEATURE_CONFIG = "feature_config.json"
SPLIT = "split.csv"
HISTORY = "history.csv"
TRAIN_CONFIG = "train_config.json"
TRAIN_SUMMARY = "train_summary.json"
#: the training report; the converter copies these into the bundle when present
REPORT_FILES = ("report.json", "report.md", "curves.png", "confusion.png")
SPLIT_COLUMNS = ("path", "label", "group", "split")
_OLD_SPLIT_COLUMNS = ("path", "label", "split")


# -- split.csv -------------------------------------------------------------------------------------------
class SplitRow(NamedTuple):
    """One clip of a split file. ``path`` is relative to the data root (posix); ``group`` is empty when read
    from a three-column file of an older run."""

    path: str
    label: str
    group: str
    split: str


def write_split(path: str | os.PathLike[str], rows: Iterable[SplitRow]) -> Path:
    """Write ``path,label,group,split`` rows, atomically."""
    out = Path(path)
    with atomic_writer(out) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(SPLIT_COLUMNS)
        w.writerows(rows)
    return out


def read_split(path: str | os.PathLike[str], *, labels: Sequence[str] | None = None) -> list[SplitRow]:
    """The rows of a split file (four columns, or the three of older runs), checked: every split is one of
    :data:`SPLITS` and, when ``labels`` is given, every label is one of them."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuricleError(f"cannot read split file {str(path)!r}: {exc.strerror or exc}; python -m "
                           "training.train writes it into every run folder") from None
    reader = csv.reader(io.StringIO(text))
    header = tuple(next(reader, None) or ())
    if header not in (SPLIT_COLUMNS, _OLD_SPLIT_COLUMNS):
        raise AuricleError(f"{path}: header {list(header)} is not {','.join(SPLIT_COLUMNS)}; write it with "
                           "training.run_folder.write_split (python -m training.train does)")
    known = None if labels is None else set(labels)
    rows: list[SplitRow] = []
    for line_no, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise AuricleError(f"{path}:{line_no}: expected {len(header)} columns, got {len(cells)}")
        row = SplitRow(*cells) if header == SPLIT_COLUMNS else SplitRow(cells[0], cells[1], "", cells[2])
        if row.split not in SPLITS:
            raise AuricleError(f"{path}:{line_no}: split {row.split!r} is not one of {SPLITS}")
        if known is not None and row.label not in known:
            raise AuricleError(f"{path}:{line_no}: label {row.label!r} is not in {LABELS}; the run folder is "
                               "inconsistent -- retrain it")
        rows.append(row)
    return rows


# -- history.csv, model.keras, labels.txt, feature_config.json ---------------------------------------------
def read_history(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """``history.csv`` as numeric columns (``{}`` when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                pass
    return cols


def save_model_atomic(model: Any, path: str | os.PathLike[str]) -> None:
    """``model.save`` to a temporary ``.keras`` name beside ``path``, then one rename: a reader never sees half
    a model (Keras needs the ``.keras`` suffix, so :mod:`edge.fileio`'s writers cannot be used)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_labels(folder: str | os.PathLike[str], labels: Sequence[str]) -> None:
    write_text_atomic(Path(folder) / LABELS, "\n".join(labels) + "\n")


def read_labels(folder: str | os.PathLike[str]) -> tuple[str, ...]:
    path = Path(folder) / LABELS
    try:
        labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except FileNotFoundError:
        raise AuricleError(f"{path} is missing; restore it from the training run") from None
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise AuricleError(f"{path} must list at least two distinct labels, one per line")
    return labels


def write_feature_config(folder: str | os.PathLike[str], config: FeatureConfig) -> None:
    write_text_atomic(Path(folder) / FEATURE_CONFIG, config.to_json() + "\n")


def read_feature_config(folder: str | os.PathLike[str]) -> FeatureConfig:
    path = Path(folder) / FEATURE_CONFIG
    try:
        return FeatureConfig.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuricleError(f"{path} is missing; the bundle needs the feature settings the model was trained "
                           "with -- retrain or restore the file") from None
    except AuricleError as exc:
        raise AuricleError(f"{path}: {exc}") from None


def read_json(path: Path, what: str) -> Any:
    """A JSON file; a missing or broken one is one :class:`AuricleError` line ending in ``what`` (the fix)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuricleError(f"{path} is missing; {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuricleError(f"{path} is not valid JSON ({exc}); {what}") from None
    except OSError as exc:
        raise AuricleError(f"cannot read {path}: {exc.strerror or exc}") from None


# -- a run, read for the converter ----------------------------------------------------------------------------
def resolve_data_root(run: Path, train_config: dict[str, Any], data: str | os.PathLike[str] | None) -> Path:
    """The dataset root the split's paths are relative to: ``data`` when given, else the run's recorded
    ``data`` (relative to the folder training ran in: usually the repository root, the run's grandparent)."""
    if data is not None:
        root = Path(data).expanduser()
        if not root.is_dir():
            raise AuricleError(f"--data {data}: no such folder; pass the dataset root that split.csv paths are "
                               "relative to")
        return root.resolve()
    recorded = train_config.get("data")
    if not recorded:
        raise AuricleError(f"{run / TRAIN_CONFIG} records no dataset folder ('data'); pass --data DIR")
    rec = Path(str(recorded)).expanduser()
    if rec.is_absolute():
        candidates = [rec]
    else:
        candidates = [Path.cwd() / rec, run.resolve().parent.parent / rec, repo_root() / rec, run / rec]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise AuricleError(f"the run's dataset folder {recorded!r} (from {TRAIN_CONFIG}) was not found; the data "
                       "has moved -- pass --data DIR")


@dataclasses.dataclass(frozen=True)
class RunFolder:
    path: Path
    model_path: Path
    config: FeatureConfig
    labels: tuple[str, ...]
    rows: tuple[SplitRow, ...]
    data_root: Path
    train_config: dict[str, Any]
    report: dict[str, Any]

    def split(self, name: str) -> list[tuple[str, str]]:
        """``(relative path, label)`` of every clip in split ``name``."""
        return [(r.path, r.label) for r in self.rows if r.split == name]


def _optional_json(path: Path, what: str) -> dict[str, Any]:
    value = read_json(path, what) if path.is_file() else {}
    if not isinstance(value, dict):
        raise AuricleError(f"{path} must hold a JSON object; {what}")
    return value


def load_run(run: str | os.PathLike[str], *, data: str | os.PathLike[str] | None = None) -> RunFolder:
    """Read and check a run folder (no TensorFlow needed)."""
    path = Path(run)
    if not path.is_dir():
        raise AuricleError(f"run folder {path} does not exist; pass --run runs/NAME (a folder written by "
                           "python -m training.train)")
    model_path = path / MODEL
    if not model_path.is_file():
        raise AuricleError(f"run folder {path} has no {MODEL}; train it first (python -m training.train "
                           f"--out {path}) or pass the right --run")
    config = read_feature_config(path)
    labels = read_labels(path)
    if not (path / SPLIT).is_file():
        raise AuricleError(f"{path / SPLIT} is missing; the run folder must hold the split it was trained on "
                           "(python -m training.train writes it)")
    rows = tuple(read_split(path / SPLIT, labels=labels))
    train_config = _optional_json(path / TRAIN_CONFIG, "restore it or pass --data")
    report = _optional_json(path / "report.json", "restore it")
    root = resolve_data_root(path, train_config, data)
    return RunFolder(path=path, model_path=model_path, config=config, labels=labels, rows=rows, data_root=root,
                     train_config=train_config, report=report)
