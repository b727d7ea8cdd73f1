"""Datasets: discover labelled clips, split them by group, decode any audio, cache the decoded clips.

One job per module: :mod:`~training.data.naming` (labels and groups from names), :mod:`~training.data.discover`
(:func:`scan`), :mod:`~training.data.split` (split files, assignments, never-empty dealing),
:mod:`~training.data.decode` (:func:`load_audio`), :mod:`~training.data.cache` (the waveform cache),
:mod:`~training.data.dataset` (:func:`load_dataset`, :class:`Dataset`, the automatic clip length) and
:mod:`~training.data.inspect` (``python -m training.data``). This package re-exports what other modules use.

Layouts (``layout="auto"`` picks ``folders`` when any sub-folder of the root holds audio):

* ``folders`` -- one folder per class, ``root/dog/x.wav``; files may sit in nested folders below the class
  folder. Audio directly in the root is reported as skipped.
* ``filenames`` -- flat files in the root, labelled by name. The rule is inferred from all the names
  (:func:`~training.data.naming.infer_rule`): ``<word>_<speaker>_nohash_<n>`` (Speech Commands) -> word;
  ``<label>_<speaker>_<n>`` when the middle fields repeat across labels (spoken digits: ``3_jackson_12``)
  -> ``3``; otherwise :func:`label_from_name` (the study's ``Laughter_284.m4a`` -> ``Laughter``).
  ``--label-regex`` overrides it (first group of the regex, searched in the stem).

Audio files are those ending in one of :data:`AUDIO_EXTENSIONS` (any case; ``x.wav.wav`` too). Hidden files
and folders (``.``), every other file (README, LICENSE, CSV ...) and the folders in
:data:`~training.data.discover.IGNORED_DIRS` are ignored.

Groups keep one speaker or source inside one split: ``--group-by REGEX`` (first group, searched in the stem;
a name it does not match is its own group, with a warning); else the speaker of ``<speaker>_nohash_<n>`` and
``<label>_<speaker>_<n>`` names; else each file is its own group, named by its stem.
:func:`edge.splits.split_of` (the one rule) maps a group to ``train`` / ``val`` / ``test`` by
``sha1(group) % 100`` (< 80, 80-89, >= 90); ``--split-file CSV`` (``path,split``) gives the user's own split
instead. The inspector counts groups with clips in more than one split (0 under a group rule) and warns when
the labels or groups look wrong (:func:`~training.data.naming.naming_warnings`).

Decoding (:func:`load_audio`): WAV/FLAC/OGG through soundfile; m4a, mp3, aac, wma, opus and webm through
pydub with the ffmpeg binary of ``imageio-ffmpeg`` (no system ffmpeg or ffprobe needed). Audio is mixed to
mono and resampled with soxr. Empty, truncated, undecodable and non-finite files raise :class:`AudioError`;
:func:`load_dataset` lists them in ``skipped`` (or raises with ``strict=True``).

:func:`load_dataset` keeps fixed-length waveforms (:func:`edge.features.fit_to_clip`), or whole clips up to
``keep_seconds`` (``Dataset.lengths``), and caches them on disk, keyed by the frontend settings (whole clips:
the rate and the kept length) and each file's sha1, in ``.npz`` packs (read with ``allow_pickle=False``).
Features are not kept: training computes them once from the waveforms, with the context frames its
time-shift augmentation needs (:mod:`training.featureset`). Cache folder: ``cache_dir``, else
``$AURICLE_CACHE``, else ``~/.cache/auricle/features``; delete it at any time to reclaim the space.

Split files (``path,label,group,split``) are the run folder's format, read and written by
:mod:`training.run_folder`; :func:`write_split_csv` and :func:`read_split_csv` take and give :class:`Clip`.

``python -m training.data DIR`` inspects a dataset and exits 2 with one line when it cannot be trained on.

This package never imports TensorFlow or Keras (nor pydub until a file needs ffmpeg).
"""
from __future__ import annotations

from training.data.cache import default_cache_dir
from training.data.dataset import (AUTO_CLIP_MAX_SECONDS, AUTO_CLIP_MIN_SECONDS, Dataset, auto_clip_seconds,
                                   load_dataset, trainability_problem)
from training.data.decode import AudioInfo, decode_audio, load_audio, one_blas_thread, probe_seconds
from training.data.discover import Discovery, discover, scan
from training.data.naming import (AUDIO_EXTENSIONS, Clip, Naming, add_naming_options, audio_stem, group_of,
                                  label_from_name, naming_from)
from training.data.split import groups_across_splits, read_split_assignments, read_split_csv, write_split_csv

__all__ = [
    "AUDIO_EXTENSIONS",
    "AUTO_CLIP_MAX_SECONDS",
    "AUTO_CLIP_MIN_SECONDS",
    "AudioInfo",
    "Clip",
    "Dataset",
    "Discovery",
    "Naming",
    "add_naming_options",
    "audio_stem",
    "auto_clip_seconds",
    "decode_audio",
    "default_cache_dir",
    "discover",
    "group_of",
    "groups_across_splits",
    "label_from_name",
    "load_audio",
    "load_dataset",
    "naming_from",
    "one_blas_thread",
    "probe_seconds",
    "read_split_assignments",
    "read_split_csv",
    "scan",
    "trainability_problem",
    "write_split_csv",
]
