"""The model bundle contract: a folder the runtime can use with no other input.

Layout (see docs/DESIGN.md)::

    BUNDLE/
      model_int8.tflite        full-integer model (default)
      model_float32.tflite     float reference
      model_edgetpu.tflite     optional, from edgetpu_compiler
      labels.txt               one label per line, output order
      manifest.json            everything else (schema below)
      model_data.h/.cc         int8 model as a C array (TFLite Micro), written on request only

manifest.json (schema_version 1)::

    {
      "schema_version": 1,
      "name": "kws_mobilenet_edge",
      "feature_config": {...FeatureConfig.to_dict()...},
      "labels": ["_silence_", "_unknown_", "down", ...],
      "background_labels": ["_silence_", "_unknown_"],
      "default_model": "int8",
      "models": {
        "int8": {"file": "model_int8.tflite",
                 "input":  {"shape": [1, 97, 40, 1], "dtype": "int8", "scale": 0.04, "zero_point": -3},
                 "output": {"shape": [1, 12], "dtype": "int8", "scale": 0.0039, "zero_point": -128}},
        "float32": {...same keys, scale 0.0, zero_point 0...}
      },
      "files": {"model_int8.tflite": "<sha256>", "labels.txt": "<sha256>", ...},
      "network": {"name": "mobilenet", "params": 123, "macs": 456},
      "training": {...run summary and metrics...},
      "verification": {...float vs int8 results...},
      "detector": {"threshold": 0.8, "smooth": 5, "min_gap": 1.0, ...}   optional, tools/tune_detector.py
    }

Only :func:`load_bundle` reads a manifest; everything else takes a :class:`Bundle`.

A bundle may come from someone else, so it stays in its folder: every file the manifest names (model files,
the sha256 list) must be a plain file name -- no folders, no ``..``, no absolute path -- and ``manifest.json``,
``labels.txt`` and every named file must not be a symlink that leads out of the folder (:func:`bundle_file`).
A manifest breaking that rule is refused, with one line, before any file it names is opened.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from edge.errors import BundleError
from edge.features import FeatureConfig
from edge.fileio import sha256_file
from edge.shipped import find_bundle, installed_dir, repo_root  # noqa: F401 (repo_root: re-exported)


SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LABELS = "labels.txt"
DEFAULT_BUNDLE_NAME = "kws_mobilenet_edge"
#: the one place that names a bundle's model files, by model kind
MODEL_FILES = {"int8": "model_int8.tflite", "float32": "model_float32.tflite", "float16": "model_float16.tflite",
               "dynamic": "model_dynamic.tflite", "edgetpu": "model_edgetpu.tflite"}


def default_bundle_path() -> Path:
    """The shipped default bundle (``$AURICLE_BUNDLE`` overrides it): the checkout's
    ``firmware_assets/kws_mobilenet_edge`` first, else the copy an installed wheel carries."""
    env = os.environ.get("AURICLE_BUNDLE")
    if env:
        return Path(env)
    return find_bundle(DEFAULT_BUNDLE_NAME) or repo_root() / "firmware_assets" / DEFAULT_BUNDLE_NAME


def resolve_bundle_path(path: str | os.PathLike[str] | None) -> Path:
    """``path`` as given when it exists; a bare shipped name (``esc10_mobilenet_edge``) that is not a folder
    here is looked up where the shipped bundles are (the checkout, then the installed package)."""
    if path is None:
        return default_bundle_path()
    given = Path(path)
    if not given.exists() and len(given.parts) == 1:
        return find_bundle(given.name) or given
    return given


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(shape=tuple(int(s) for s in d["shape"]), dtype=str(d["dtype"]),
                   scale=float(d.get("scale", 0.0)), zero_point=int(d.get("zero_point", 0)))

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "scale": self.scale, "zero_point": self.zero_point}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    kind: str
    file: str
    input: TensorSpec
    output: TensorSpec


@dataclasses.dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    manifest: Mapping[str, Any]
    feature_config: FeatureConfig
    labels: tuple[str, ...]
    background_labels: frozenset[str]
    models: Mapping[str, ModelEntry]
    default_model: str
    #: the manifest's ``detector`` block (tools/tune_detector): tuned settings, read by edge.settings
    tuned_detector: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def model_path(self, kind: str | None = None) -> Path:
        kind = kind or self.default_model
        if kind not in self.models:
            have = ", ".join(sorted(self.models)) or "none"
            regen = (self.manifest.get("regenerable_files") or {}).get(MODEL_FILES.get(kind, f"model_{kind}.tflite")) or {}
            if kind == "edgetpu":
                fix = "compile it with edgetpu_compiler (see README, 'Coral')"
            elif regen.get("source"):
                fix = f"{regen.get('why', 'it was left out')}; {regen['source']}"
            elif regen.get("regenerate"):
                fix = f"it was left out for size; regenerate it with: {regen['regenerate']}"
            else:
                fix = "re-run converters/quantize.py with --also " + kind
            raise BundleError(f"bundle {self.path} has no {kind!r} model (it has: {have}); {fix}")
        return bundle_file(self.path, self.models[kind].file, f"models.{kind}.file")

    def entry(self, kind: str | None = None) -> ModelEntry:
        self.model_path(kind)
        return self.models[kind or self.default_model]


_CONFINED_FIX = ("a bundle may only use files in its own folder -- rebuild it, and use only bundles from a "
                  "source you trust")


def bundle_file(root: Path, name: Any, what: str) -> Path:
    """``root / name`` for a file the bundle uses, checked before anything reads it.

    ``name`` must be a plain file name (a string with no path separator, not ``.``/``..``, not absolute); the
    path, with symlinks followed, must stay directly in the bundle folder and, where it exists, be a regular
    file. Anything else raises :class:`BundleError` naming ``what`` (where the manifest names it).
    """
    plain = (isinstance(name, str) and name not in ("", ".", "..") and "\x00" not in name
             and not any(sep in name for sep in ("/", "\\", os.sep, os.altsep or "/"))
             and not os.path.isabs(name))
    if not plain:
        raise BundleError(f"{root / MANIFEST}: {what} {name!r} is not a plain file name inside the bundle (no "
                          f"folders, no '..', no absolute paths); {_CONFINED_FIX}")
    path = root / name
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(root):
        raise BundleError(f"bundle file {path} is a symlink to {real}, which is not in the bundle folder; "
                          f"{_CONFINED_FIX}")
    if os.path.exists(real) and not os.path.isfile(real):
        raise BundleError(f"bundle file {path} is not a regular file; rebuild or re-copy the bundle")
    return path


def _check_names(root: Path, manifest: Mapping[str, Any]) -> None:
    """Every file the manifest names, checked with :func:`bundle_file` before any of them is read."""
    files = manifest.get("files") or {}
    if not isinstance(files, Mapping):
        raise BundleError(f"{root / MANIFEST}: 'files' must map file names to sha256; rebuild the bundle")
    for name in files:
        bundle_file(root, name, "'files' entry")
    models = manifest.get("models") or {}
    if isinstance(models, Mapping):
        for kind, entry in models.items():
            if isinstance(entry, Mapping) and "file" in entry:
                bundle_file(root, entry["file"], f"models.{kind}.file")
    bundle_file(root, LABELS, "labels file")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} is missing; a bundle needs manifest.json -- rebuild it with "
                          "converters/quantize.py") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); rebuild the bundle") from None
    except RecursionError:
        raise BundleError(f"{path} is nested too deeply to be a manifest; rebuild the bundle") from None


def load_bundle(path: str | os.PathLike[str] | None = None, *, verify: bool = True) -> Bundle:
    """Read and check a bundle folder. ``verify`` checks every file's sha256 against the manifest."""
    root = resolve_bundle_path(path)
    if not root.exists():
        raise BundleError(f"model bundle {root} does not exist; pass --bundle BUNDLE_DIR (or the name of a shipped "
                          "one, e.g. kws_mobilenet_edge) or build one with `make firmware`")
    if not root.is_dir():
        raise BundleError(f"model bundle {root} is not a folder; pass the bundle folder, not a file")
    manifest = _read_manifest(root)
    _check_names(root, manifest)
    config = _feature_config(root, manifest["feature_config"])
    if verify:
        _verify_files(root, manifest.get("files") or {})
    labels = _read_labels(root, manifest)
    models, default = _read_models(root, manifest, labels)
    background = _string_list(root, manifest, "background_labels")
    if background is None:
        background = [lab for lab in labels if lab.startswith("_")]
    return Bundle(path=root, name=str(manifest.get("name") or root.name), manifest=manifest, feature_config=config,
                  labels=labels, background_labels=frozenset(background), models=models, default_model=default,
                  tuned_detector=_tuned_detector(root, manifest))


def _tuned_detector(root: Path, manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """The manifest's optional ``detector`` block (an object), or ``{}``."""
    block = manifest.get("detector") or {}
    if not isinstance(block, Mapping):
        raise BundleError(f"{root / MANIFEST}: 'detector' must be an object; re-run tools/tune_detector or "
                          "remove it")
    return block


def as_bundle(bundle: Bundle | str | os.PathLike[str] | None) -> Bundle:
    """A :class:`Bundle` as is; a folder (or ``None``: the default bundle) through :func:`load_bundle`."""
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


def _read_manifest(root: Path) -> dict[str, Any]:
    manifest = _read_json(bundle_file(root, MANIFEST, "manifest"))
    if not isinstance(manifest, dict):
        raise BundleError(f"{root / MANIFEST} must hold a JSON object; rebuild the bundle")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{root / MANIFEST} has schema_version {version!r}; this auricle reads "
                          f"{SCHEMA_VERSION} -- rebuild the bundle or upgrade auricle")
    if "feature_config" not in manifest:
        raise BundleError(f"{root / MANIFEST} lacks feature settings ('feature_config'); the runtime "
                          "cannot compute features without them -- rebuild the bundle")
    return manifest


def _feature_config(root: Path, data: Any) -> FeatureConfig:
    if not isinstance(data, dict):
        raise BundleError(f"{root / MANIFEST}: 'feature_config' must be an object; rebuild the bundle")
    try:
        return FeatureConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise BundleError(f"{root / MANIFEST}: 'feature_config' is malformed ({exc}); rebuild the bundle") from None


def _string_list(root: Path, manifest: Mapping[str, Any], key: str) -> list[str] | None:
    """``manifest[key]`` as a list of strings (``None`` when absent); anything else is a BundleError."""
    value = manifest.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"{root / MANIFEST}: {key!r} must be a list of label names; rebuild the bundle")
    return value


def _verify_files(root: Path, files: Mapping[str, str]) -> None:
    if not files:
        raise BundleError(f"{root / MANIFEST} lists no sha256 'files'; rebuild the bundle")
    for name, digest in files.items():
        fp = bundle_file(root, name, "'files' entry")
        if not fp.is_file():
            raise BundleError(f"bundle file {fp} is missing; {_repair(root)}")
        actual = sha256_file(fp)
        if actual != digest:
            raise BundleError(f"sha256 of {fp} is {actual[:12]}..., manifest says {str(digest)[:12]}...; "
                              f"the file was changed or corrupted -- {_repair(root)}")


def _repair(root: Path) -> str:
    """How to mend a damaged bundle: reinstall for the copy a wheel carries, else rebuild or re-copy it."""
    if os.path.realpath(root.parent) == os.path.realpath(installed_dir("bundles")):
        return "reinstall auricle (pip install --force-reinstall auricle)"
    return "rebuild or re-copy the bundle"


def _read_labels(root: Path, manifest: Mapping[str, Any]) -> tuple[str, ...]:
    labels_file = bundle_file(root, LABELS, "labels file")
    listed = _string_list(root, manifest, "labels")
    if labels_file.is_file():
        try:
            text = labels_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BundleError(f"{labels_file} is not UTF-8 text; rebuild the bundle") from None
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    else:
        labels = tuple(listed or ())
    if not labels:
        raise BundleError(f"bundle {root} has no labels (labels.txt); rebuild the bundle")
    if listed and tuple(listed) != labels:
        raise BundleError(f"{labels_file} disagrees with manifest labels; rebuild the bundle")
    return labels


def _read_models(root: Path, manifest: Mapping[str, Any],
                 labels: tuple[str, ...]) -> tuple[dict[str, ModelEntry], str]:
    """The manifest's model entries and the default kind, checked against the labels."""
    models: dict[str, ModelEntry] = {}
    entries = manifest.get("models") or {}
    if not isinstance(entries, dict):
        raise BundleError(f"{root / MANIFEST}: 'models' must be an object of model entries; rebuild the bundle")
    for kind, entry in entries.items():
        try:
            models[kind] = ModelEntry(kind=kind, file=str(entry["file"]), input=TensorSpec.from_dict(entry["input"]),
                                      output=TensorSpec.from_dict(entry["output"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{root / MANIFEST}: model {kind!r} entry is malformed ({exc}); rebuild") from None
    if not models:
        raise BundleError(f"{root / MANIFEST} lists no models; rebuild the bundle")
    default = str(manifest.get("default_model") or ("int8" if "int8" in models else sorted(models)[0]))
    if default not in models:
        raise BundleError(f"{root / MANIFEST}: default_model {default!r} is not among {sorted(models)}")
    for kind, m in models.items():
        if m.output.shape and m.output.shape[-1] != len(labels):
            raise BundleError(f"model {kind!r} has {m.output.shape[-1]} outputs but there are {len(labels)} "
                              "labels; rebuild the bundle")
    return models, default
