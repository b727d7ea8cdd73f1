"""Everything one training run is given, as one frozen object: :class:`TrainSpec`.

:func:`training.train.train` takes it, ``python -m training.train --config spec.json`` loads it (flags given on
the command line override the file) and every run folder records it as ``train_spec.json``, so a run can be
repeated from its own record. No Keras here.

The file is :meth:`TrainSpec.to_dict`'s JSON: the run's settings at the top (``data``, ``out``, ``negatives``...),
the fitting settings under ``config`` (:class:`training.config.TrainConfig`), the frontend under ``frontend``
and the file naming under ``naming``; any key may be left out (its default), an unknown one is an error.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge.errors import AuricleError
from training.config import Frontend, TrainConfig
from training.data import Naming

__all__ = ["TrainSpec", "TRAIN_SPEC", "LAYOUTS", "EXPORT_DTYPES", "read_spec", "spec_defaults"]

#: the spec a run folder records
TRAIN_SPEC = "train_spec.json"
LAYOUTS = ("auto", "folders", "filenames")
EXPORT_DTYPES = ("float32", "float16")
PathLike = str | Path


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """One training run: the fitting settings (``config``) and where the data comes from and goes to."""

    config: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    out: PathLike | None = None                  # the run folder to write
    data: PathLike | None = None                 # dataset folder (or ``features``)
    features: PathLike | None = None             # a feature .npz of --save-features
    save_features: PathLike | None = None
    layout: str = "auto"
    strict: bool = False
    cache_dir: PathLike | None = None
    resume: bool = False
    distribute: bool = False
    export_weights: PathLike | None = None
    export_dtype: str = "float32"
    verbose: int = 1                             # Keras progress bars (0: none)
    negatives: Sequence[PathLike] | None = None
    noise_negatives: Sequence[PathLike] = ()
    frontend: Frontend | None = None             # None: the profile's
    clip_seconds: float | str | None = None      # a number, "auto", or None (the frontend's)
    naming: Naming | None = None

    def __post_init__(self) -> None:   # lists (JSON, argparse) and tuples compare equal as specs
        for key in ("negatives", "noise_negatives"):
            value = getattr(self, key)
            if isinstance(value, (str, Path)):
                value = (value,)
            if value is not None:
                object.__setattr__(self, key, tuple(value))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, sequences as lists, the nested settings as objects."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, (list, tuple)):
                value = [str(v) for v in value]
            d[f.name] = value
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the spec") -> "TrainSpec":
        """The spec of :meth:`to_dict`'s form; an unknown key or a bad choice is a one-line error."""
        _check_keys(data, cls, source, "")
        values = dict(data)
        nested = {"config": TrainConfig, "frontend": Frontend, "naming": Naming}
        for key, kind in nested.items():
            if values.get(key) is not None:
                if not isinstance(values[key], Mapping):
                    raise AuricleError(f"{source}: {key!r} must be an object of settings")
                _check_keys(values[key], kind, source, f"{key}.")
                values[key] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values[key].items()})
        if values.get("config") is None:
            values.pop("config", None)
        spec = cls(**values)
        _check_choice(source, "layout", spec.layout, LAYOUTS)
        _check_choice(source, "export_dtype", spec.export_dtype, EXPORT_DTYPES)
        return spec


def _check_keys(data: Mapping[str, Any], kind: type, source: str, prefix: str) -> None:
    known = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise AuricleError(f"{source}: unknown key {prefix}{unknown[0]!r}; the keys there are "
                           f"{', '.join(known)}")


def _check_choice(source: str, key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise AuricleError(f"{source}: {key} must be one of {', '.join(choices)}, not {value!r}")


def _read_json(path: PathLike) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuricleError(f"--config {path}: no such file; pass a spec JSON (a run folder's {TRAIN_SPEC})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuricleError(f"--config {path}: not a readable JSON file ({exc}); fix it or pass another") from None
    if not isinstance(data, dict):
        raise AuricleError(f"--config {path}: the file must hold one JSON object of settings")
    return data


def read_spec(path: PathLike) -> TrainSpec:
    """A spec file (``--config``): :meth:`TrainSpec.from_dict` of its JSON; a missing or broken file, an
    unknown key or a bad choice is a one-line error."""
    return TrainSpec.from_dict(_read_json(path), source=f"--config {path}")


#: command-line destinations whose name differs from the spec's
_NAMING_DESTS = {"label_regex": "label_regex", "group_regex": "group_by", "split_file": "split_file"}
_NESTED = ("config", "frontend", "naming", "verbose")


def spec_defaults(path: PathLike) -> dict[str, Any]:
    """The command-line defaults a spec file sets, one per parser destination, for ``parser.set_defaults``:
    only the keys the file holds, so flags given on the command line still win and the rest keep theirs."""
    raw, spec = _read_json(path), read_spec(path)
    out: dict[str, Any] = {k: _plain(getattr(spec, k)) for k in raw if k not in _NESTED}
    if "verbose" in raw:
        out["quiet"] = spec.verbose == 0
    for key, dests in (("config", None), ("frontend", None), ("naming", _NAMING_DESTS)):
        for name in raw.get(key) or {}:
            value = _plain(getattr(getattr(spec, key), name))
            if key == "frontend" and name == "clip_seconds":
                if value is not None and spec.clip_seconds is None:
                    out["clip_seconds"] = value
                continue
            out[dests[name] if dests else name] = value
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
