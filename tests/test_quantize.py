"""converters/: int8 quantization, verification, Edge TPU check, C array, atomic bundle writing.

A tiny run folder is trained once per session (tests/tiny_run.py: the 12 classes of tests/data clips, 4
train and 2 test clips each). The CLI is run once as a script path, from another cwd; the other checks reuse
that bundle or call the core in-process.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import tiny_run  # noqa: E402

from converters import c_array, edgetpu  # noqa: E402
from converters import quantize as q  # noqa: E402
from converters import bundle_writer, console, convert, manifest, verify  # noqa: E402
from edge.bundle import load_bundle  # noqa: E402
from edge.errors import AuricleError, run_cli  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "converters" / "quantize.py"
PY = sys.executable
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run.make_tiny_run(tmp_path_factory.mktemp("runs") / "tiny_edge")


@pytest.fixture(scope="session")
def cli_bundle(run_dir, tmp_path_factory):
    """``python converters/quantize.py`` as a script path, run from a folder that is not the repo root."""
    work = tmp_path_factory.mktemp("cli")
    out = work / "firmware_assets" / "tiny_edge"
    proc = subprocess.run([PY, str(SCRIPT), "--run", str(run_dir), "--out", str(out), "--representative", "32"],
                          cwd=work, env=ENV, capture_output=True, text=True, timeout=300)
    return out, proc


@pytest.fixture(scope="session")
def bundle(cli_bundle) -> Path:
    out, proc = cli_bundle
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def manifest_of(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text())


def test_cli_script_writes_the_bundle(cli_bundle, bundle):
    _, proc = cli_bundle
    names = sorted(p.name for p in bundle.iterdir())
    assert names == ["labels.txt", "manifest.json", "model_float32.tflite", "model_int8.tflite",
                     "report.json"]   # the tiny run has no report.md / plots; no C array unless --c-array
    c = manifest_of(bundle)["c_array"]
    assert c["written"] is False and c["regenerate"].startswith("python converters/c_array.py ")
    assert "verification on 24 test clips" in proc.stdout
    assert "Edge TPU ready" in proc.stdout
    assert "calibrating: 32/32" in proc.stderr            # progress during the long steps
    assert "Saved artifact" not in proc.stdout + proc.stderr  # TensorFlow's chatter is held back
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_int8_model_loads_in_litert_and_agrees_with_float(bundle, run_dir):
    from ai_edge_litert.interpreter import Interpreter

    from edge.features import fit_to_clip, log_mel, model_input_shape, to_model_input
    from edge.classifier import Classifier
    from training.data import load_audio

    interp = Interpreter(model_path=str(bundle / "model_int8.tflite"))
    interp.allocate_tensors()
    d_in, d_out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert d_in["dtype"] == np.int8 and d_out["dtype"] == np.int8
    m = manifest_of(bundle)
    assert m["models"]["int8"]["input"]["scale"] == pytest.approx(float(d_in["quantization"][0]))
    assert m["models"]["int8"]["input"]["zero_point"] == int(d_in["quantization"][1])
    assert list(d_in["shape"]) == [1, *model_input_shape(load_bundle(bundle).feature_config)]

    # independently of the converter's own numbers: Keras float vs the runtime's Classifier on the int8 model
    import keras
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    from training.run_folder import read_split

    labels = (run_dir / "labels.txt").read_text().split()
    test = [(tiny_run.DATA_DIR / r.path, r.label) for r in read_split(run_dir / "split.csv") if r.split == "test"]
    assert len(test) == 24
    clf = Classifier(bundle, model="int8")
    cfg = clf.config
    waves = [load_audio(p, cfg.sample_rate) for p, _ in test]
    x = to_model_input(np.stack([log_mel(fit_to_clip(w, cfg), cfg) for w in waves]), cfg)
    float_top = np.argmax(model.predict(x, verbose=0), axis=1)
    int8_top = np.array([int(np.argmax(clf.scores(w, cfg.sample_rate))) for w in waves])
    agreement = float(np.mean(float_top == int8_top))
    assert agreement >= 0.9
    assert m["verification"]["agreement"]["int8_vs_keras_float"] >= 0.9
    assert m["verification"]["agreement"]["int8_vs_keras_float"] == pytest.approx(agreement)
    acc_float = float(np.mean(float_top == np.array([labels.index(lab) for _, lab in test])))
    assert m["verification"]["accuracy"]["keras_float"] == pytest.approx(acc_float, abs=1e-4)


def test_manifest_follows_the_contract_and_hashes_match(bundle, run_dir):
    m = manifest_of(bundle)
    files = {p.name for p in bundle.iterdir() if p.is_file() and p.name != "manifest.json"}
    assert set(m["files"]) == files
    for name, digest in m["files"].items():
        assert sha(bundle / name) == digest
    b = load_bundle(bundle)                          # verify=True re-checks every sha256
    assert m["schema_version"] == 1 and b.default_model == "int8"
    assert b.feature_config.to_dict() == json.loads((run_dir / "feature_config.json").read_text())
    assert list(b.labels) == (run_dir / "labels.txt").read_text().split()
    assert sorted(b.background_labels) == ["_silence_", "_unknown_"]
    assert m["models"]["float32"]["input"]["dtype"] == "float32"
    assert m["regenerable_files"] == {}
    assert m["training"]["run"] == "tiny_edge" and m["network"]["name"] == "tiny"
    assert m["training"]["negatives"] is None and m["training"]["noise_negatives"] is None   # trained without
    v = m["verification"]
    assert set(v["accuracy"]) == {"keras_float", "tflite_float32", "tflite_int8"}
    assert set(v["per_class_recall"]) == set(b.labels)
    assert v["sizes"]["model_int8.tflite"] == (bundle / "model_int8.tflite").stat().st_size
    assert v["passed"] is True and v["max_drop_pp"] == 2.0
    conv = m["conversion"]
    assert conv["config"]["representative"] == 32 and conv["config"]["io"] == "int8"
    assert conv["representative"]["split"] == "train" and conv["representative"]["clips"] == 32
    assert m["edgetpu"]["ready"] is True and "edgetpu_compiler" in m["edgetpu"]["compile_command"]


def _strings(value, where=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


def _machine_specific(manifest: dict) -> list[str]:
    """Strings that name this machine (absolute paths) or an issue number."""
    import re
    bad = []
    for where, text in _strings(manifest):
        words = text.replace("=", " ").split()
        if any(w.startswith(("/", "~")) for w in words) or str(REPO) in text or re.search(r"issue|#\d", text):
            bad.append(f"{where}: {text[:120]}")
    return bad


def test_manifest_records_paths_relative_to_the_repository(bundle, run_dir):
    m = manifest_of(bundle)
    assert _machine_specific(m) == []
    # the tiny run and its bundle live in a temporary folder, outside the repository: relative all the same
    assert (REPO / m["training"]["run_path"]).resolve() == run_dir.resolve()
    assert (REPO / m["conversion"]["resolved"]["out"]).resolve() == bundle.resolve()
    assert (REPO / m["conversion"]["resolved"]["data"]).resolve() == tiny_run.DATA_DIR.resolve()
    assert m["conversion"]["resolved"]["data"] == "tests/data/speech_commands"
    assert m["conversion"]["command"].startswith("python converters/quantize.py --run ../")
    assert manifest.portable_args(["--out=/a/b", "--run", str(REPO / "runs" / "x"), "-q"])[1:] == ["--run", "runs/x", "-q"]


def test_manifest_records_the_negatives_it_learned_to_reject_relative_to_the_repository(run_dir):
    import dataclasses

    from training.run_folder import load_run
    run = load_run(run_dir)
    neg = [str(REPO / "runs" / "negatives"), "runs/esc10_folds123"]
    noise = [str(REPO / "runs" / "negatives" / "noise")]
    trained = dataclasses.replace(run, train_config={**run.train_config, "negatives": neg, "noise_negatives": noise})
    t = manifest.training_entry(trained)
    assert t["negatives"] == ["runs/negatives", "runs/esc10_folds123"]
    assert t["noise_negatives"] == ["runs/negatives/noise"]
    assert _machine_specific(t) == []


@pytest.mark.parametrize("name", sorted(p.parent.name for p in (REPO / "firmware_assets").glob("*/manifest.json")))
def test_shipped_manifests_carry_nothing_of_the_build_machine(name):
    m = manifest_of(REPO / "firmware_assets" / name)
    assert _machine_specific(m) == []
    run_path = m["training"]["run_path"]
    assert run_path.startswith("runs/") and Path(run_path).parts[1].startswith(name)   # relative, this run
    assert m["conversion"]["resolved"]["out"] == f"firmware_assets/{name}"


def test_c_array_compiles_and_holds_the_tflite_bytes(bundle, tmp_path):
    gcc, objcopy = shutil.which("gcc"), shutil.which("objcopy")
    if gcc is None:
        pytest.skip("no system gcc")
    model = (bundle / "model_int8.tflite").read_bytes()
    assert c_array.main([str(bundle / "model_int8.tflite"), "--out", str(tmp_path)]) == 0   # the manifest's command
    src = (tmp_path / "model_data.cc").read_text()
    assert c_array.parse_c_array(src) == model
    assert "alignas(16) const unsigned char g_model_data[]" in src
    assert f"const unsigned int g_model_data_len = {len(model)};" in src
    obj = tmp_path / "model_data.o"
    subprocess.run([gcc, "-c", "-fdata-sections", "-Wall", "-Werror", str(tmp_path / "model_data.cc"), "-o",
                    str(obj)], check=True, capture_output=True, cwd=tmp_path, timeout=120)
    if objcopy is None:
        pytest.skip("no objcopy to read the compiled array back")
    blob = tmp_path / "array.bin"
    subprocess.run([objcopy, "-O", "binary", "--only-section=.rodata.g_model_data", str(obj), str(blob)],
                   check=True, capture_output=True, timeout=60)
    assert blob.read_bytes() == model              # the bytes in the object file are the .tflite


# -- Edge TPU readiness ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("network", ["mobilenet", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_edgetpu_check_passes_for_both_networks(network):
    """Tiny untrained variants (width 0.25) of both networks, converted with uint8 I/O as Coral expects."""
    from training.models import build_model

    model = build_model(network, (97, 40, 1), 8, profile="edge", width=0.25)
    rep = np.random.default_rng(0).normal(size=(8, 97, 40, 1)).astype(np.float32)
    blob = convert.keras_to_tflite(model, ("int8",), representative=rep, io_type="uint8")["int8"]
    report = edgetpu.check_edgetpu(blob)
    assert report.ready, report.problems
    assert all(r.maps for r in report.rows)
    ops = {r.op for r in report.rows}
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "QUANTIZE"} <= ops
    assert ("DEPTHWISE_CONV_2D" in ops) == (network == "mobilenet")
    assert any("int32 constant" in n for n in report.notes)     # biases allowed, and said so
    table = edgetpu.format_report(report)
    assert "Edge TPU ready" in table and "CONV_2D" in table


def test_edgetpu_check_fails_for_a_float_model(bundle):
    report = edgetpu.check_edgetpu(bundle / "model_float32.tflite")
    assert not report.ready
    assert any("CONV_2D" in p and "float32" in p for p in report.problems)
    assert edgetpu.main([str(bundle / "model_float32.tflite")]) == 1
    assert edgetpu.main([str(bundle)]) == 0        # a bundle folder: its int8 model


def _sin_model():
    import keras

    class Sin(keras.layers.Layer):
        def call(self, x):
            return keras.ops.sin(x)

    inp = keras.Input((16, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = Sin(name="sin")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
def test_an_op_without_int8_kernel_fails_loudly_and_is_not_edgetpu_ready():
    import tensorflow as tf

    model = _sin_model()
    rep = np.random.default_rng(0).uniform(size=(6, 16, 8, 1)).astype(np.float32)
    with pytest.raises(AuricleError, match=r"SIN \(op \d+\)"):
        convert.keras_to_tflite(model, ("int8",), representative=rep)

    # what TFLite makes of it when nobody checks: DEQUANTIZE -> SIN (float) -> QUANTIZE
    def gen():
        for i in range(len(rep)):
            yield [rep[i:i + 1]]
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    with console.quiet():
        blob = conv.convert()
    report = edgetpu.check_edgetpu(blob)
    assert not report.ready
    assert any(p.startswith("SIN") for p in report.problems)
    assert any("float32 tensor" in p for p in report.problems)
    with pytest.raises(AuricleError, match="SIN"):
        convert.check_full_integer(blob)


# -- atomic writing -------------------------------------------------------------------------------------------
def test_killed_conversion_leaves_the_old_bundle_then_next_run_cleans_up(bundle, run_dir, tmp_path):
    target = tmp_path / "assets" / "tiny_edge"
    shutil.copytree(bundle, target)
    tuned = {"threshold": 0.7, "smooth": 3, "min_gap": 0.5, "tuned_on": "a validation stream"}
    (target / "manifest.json").write_text(json.dumps({**manifest_of(target), "detector": tuned}))
    before = tree_hashes(target)
    proc = subprocess.Popen([PY, str(SCRIPT), "--run", str(run_dir), "--out", str(target), "--representative", "16"],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temp = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [p for p in target.parent.iterdir() if p.name.startswith(".tiny_edge.tmp-")]
            if temps and any(temps[0].iterdir()):       # mid-way: the temp bundle has content
                temp = temps[0]
                break
            time.sleep(0.02)
        assert temp is not None, "the conversion never got to write its temp folder"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert tree_hashes(target) == before                                  # old bundle untouched
    assert not [p for p in target.iterdir() if p.name.startswith(".")]   # nothing inside the target
    assert temp.exists() and temp.parent == target.parent                # the leftover lives beside it
    load_bundle(target)

    # the next run removes the dead process's temp folder; float32 over the size limit is not written; the
    # uint8 (Coral) re-conversion of the same run keeps the tuned detector block
    m = q.quantize_run(q.QuantizeConfig(run=run_dir, out=target, io="uint8", representative=16, float_max_mb=0,
                                        c_array_max_mb=0, data=str(tiny_run.DATA_DIR), also=("float16",),
                                        c_array=True), progress=False, report=None)
    assert m["detector"] == tuned and manifest_of(target)["detector"] == tuned
    assert not temp.exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    assert not (target / "model_float32.tflite").exists()
    regen = m["regenerable_files"]["model_float32.tflite"]
    assert regen["bytes"] > 0 and len(regen["sha256"]) == 64 and "--float-max-mb" in regen["regenerate"]
    assert "float32" not in m["models"] and "float16" in m["models"]
    assert m["models"]["int8"]["input"]["dtype"] == "uint8" and m["models"]["int8"]["output"]["dtype"] == "uint8"
    assert "tflite_float16" in m["verification"]["accuracy"]
    b = load_bundle(target)                                               # still verifies
    assert "model_float32.tflite" not in b.manifest["files"] and "model_data.cc" not in b.manifest["files"]
    # the recorded command regenerates the C source byte for byte
    regen_c = m["regenerable_files"]["model_data.cc"]
    assert regen_c["regenerate"].startswith("python converters/c_array.py")
    assert c_array.main([str(target / "model_int8.tflite"), "--out", str(tmp_path)]) == 0
    assert sha(tmp_path / "model_data.cc") == regen_c["sha256"]
    assert sha(tmp_path / "model_data.h") == m["files"]["model_data.h"]
    assert edgetpu.check_edgetpu(target / "model_int8.tflite").ready       # uint8 I/O: QUANTIZE ops map


# -- bad input: one line, exit 2 ------------------------------------------------------------------------------
def run_main(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        run_cli(q.main, argv)
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit 2 and exactly one error line (progress lines, ``quantize: ...``, may come before it)."""
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if not ln.startswith("quantize: ")]
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    assert err.splitlines()[-1] == lines[0]
    for n in needles:
        assert n in err, err


@pytest.fixture()
def run_copy(run_dir, tmp_path) -> Path:
    return tiny_run.copy_run(run_dir, tmp_path / "run")


def test_run_without_model(run_copy, tmp_path, capsys):
    (run_copy / "model.keras").unlink()
    code, err = run_main(["--run", str(run_copy), "--out", str(tmp_path / "b")], capsys)
    assert_one_line_error(code, err, "has no model.keras")
    assert not (tmp_path / "b").exists()


def test_model_input_not_matching_the_feature_config(run_copy, tmp_path, capsys):
    cfg = json.loads((run_copy / "feature_config.json").read_text())
    cfg["n_mels"] = 32
    (run_copy / "feature_config.json").write_text(json.dumps(cfg))
    code, err = run_main(["--run", str(run_copy), "--out", str(tmp_path / "b")], capsys)
    assert_one_line_error(code, err, "takes input (97, 40, 1)", "(97, 32, 1)")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp-*"))


def test_empty_representative_set(run_copy, tmp_path, capsys):
    code, err = run_main(["--run", str(run_copy), "--out", str(tmp_path / "b"), "--representative", "0"], capsys)
    assert_one_line_error(code, err, "representative set is empty")
    text = (run_copy / "split.csv").read_text().replace(",train", ",val")
    (run_copy / "split.csv").write_text(text)
    code, err = run_main(["--run", str(run_copy), "--out", str(tmp_path / "b")], capsys)
    assert_one_line_error(code, err, "no 'train' clips", "would be empty")


def test_a_shipped_bundle_is_replaced_only_with_force(run_dir, capsys):
    shipped = REPO / "firmware_assets" / "kws_mobilenet_edge"
    before = tree_hashes(shipped)
    code, err = run_main(["--run", str(run_dir), "--out", str(shipped)], capsys)
    assert code == 2 and "firmware_assets/kws_mobilenet_edge is a file the repository ships" in err
    assert "--force" in err and len(err.strip().splitlines()) == 1
    assert tree_hashes(shipped) == before


def test_a_detector_tuned_for_another_run_or_labels_is_not_carried_over(run_dir, bundle, tmp_path):
    from training.run_folder import load_run

    run = load_run(run_dir)
    cfg = q.QuantizeConfig(run=str(run_dir), out=str(tmp_path / "b"))
    target = tmp_path / "b"
    shutil.copytree(bundle, target)
    m = {**manifest_of(bundle), "detector": {"threshold": 0.7}}
    (target / "manifest.json").write_text(json.dumps(m))
    assert bundle_writer.previous_detector(target, cfg, run) == {"threshold": 0.7}
    (target / "manifest.json").write_text(json.dumps({**m, "labels": [*m["labels"], "extra"]}))
    assert bundle_writer.previous_detector(target, cfg, run) is None
    other = {**m, "conversion": {**m["conversion"], "resolved": {**m["conversion"]["resolved"], "run": "runs/x"}}}
    (target / "manifest.json").write_text(json.dumps(other))
    assert bundle_writer.previous_detector(target, cfg, run) is None


def test_unwritable_output(run_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = run_main(["--run", str(run_dir), "--out", str(blocker / "bundle")], capsys)
    assert_one_line_error(code, err, "cannot write the bundle", "writable --out")
    code, err = run_main(["--run", str(run_dir), "--out", str(blocker)], capsys)
    assert_one_line_error(code, err, "is not a folder")


def test_corrupt_keras_file_leaves_the_existing_bundle(run_copy, bundle, tmp_path, capsys):
    (run_copy / "model.keras").write_bytes(b"PK\x03\x04 this is not a keras zip" * 10)
    target = shutil.copytree(bundle, tmp_path / "existing")
    before = tree_hashes(target)
    code, err = run_main(["--run", str(run_copy), "--out", str(target)], capsys)
    assert_one_line_error(code, err, "cannot load", "model.keras")
    assert tree_hashes(target) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_moved_data_and_non_bundle_output(run_copy, tmp_path, capsys):
    tc = json.loads((run_copy / "train_config.json").read_text())
    tc["data"] = "../nowhere/speech_commands"
    (run_copy / "train_config.json").write_text(json.dumps(tc))
    code, err = run_main(["--run", str(run_copy), "--out", str(tmp_path / "b")], capsys)
    assert_one_line_error(code, err, "--data")
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    code, err = run_main(["--run", str(run_copy), "--out", str(other), "--data", str(tiny_run.DATA_DIR)], capsys)
    assert_one_line_error(code, err, "refusing to replace")
    assert (other / "todo.txt").read_text() == "keep me"


# -- small pieces ----------------------------------------------------------------------------------------------
def test_representative_selection_is_stratified_seeded_and_train_only():
    rows = [(f"a/{i}.wav", "a") for i in range(50)] + [(f"b/{i}.wav", "b") for i in range(3)] + \
           [(f"c/{i}.wav", "c") for i in range(20)]
    sel = verify.select_representative(rows, 12, seed=1)
    counts = {lab: sum(1 for _, l2 in sel if l2 == lab) for lab in "abc"}
    assert counts == {"a": 5, "b": 3, "c": 4} or counts == {"a": 4, "b": 3, "c": 5}
    assert sel == verify.select_representative(rows, 12, seed=1)
    assert sel != verify.select_representative(rows, 12, seed=2)
    assert len(verify.select_representative(rows, 1000)) == len(rows)
    assert len(set(verify.select_representative(rows, 1000))) == len(rows)


def test_accuracy_gate_exits_1_and_reports(monkeypatch, capsys):
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    eye = np.eye(3)

    def result(pred):
        from training.report import per_class_metrics
        pred = np.asarray(pred)
        return {"pred": pred, "scores": eye[pred], "metrics": per_class_metrics(y, pred, ["a", "b", "c"]),
                "seconds": 0.0}

    cfg = q.QuantizeConfig(run="r", out="o")
    results = {"keras_float": result(y), "tflite_float32": result(y),
               "tflite_int8": result([0, 1, 2, 0, 1, 2, 0, 1, 2, 1])}
    v = verify.verification_summary(results, y, ["a", "b", "c"], {"int8": b"x" * 10, "float32": b"x" * 40}, cfg, "litert", 1)
    assert v["drop_pp"] == pytest.approx(10.0) and v["passed"] is False
    assert v["agreement"]["int8_vs_keras_float"] == pytest.approx(0.9)
    assert v["per_class_recall"]["a"]["diff"] == pytest.approx(-0.25)
    assert v["int8_to_float32_size"] == pytest.approx(0.25)
    assert any("FAILED" in line for line in verify.verification_lines(v, ["a", "b", "c"]))

    def failing(*args, **kwargs):
        raise q.VerificationFailed("int8 test accuracy 0.5 is 10.00 percentage points below float")
    monkeypatch.setattr(q, "quantize_run", failing)
    with pytest.raises(SystemExit) as exc:
        run_cli(q.main, ["--run", "r", "--out", "o"])
    assert exc.value.code == 1
    assert "percentage points below float" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(AuricleError, match="--also"):
        q.QuantizeConfig(run="r", out="o", also=("float64",))
    with pytest.raises(AuricleError, match="--max-drop"):
        q.QuantizeConfig(run="r", out="o", max_drop=-1.0)
    with pytest.raises(AuricleError, match="--io"):
        q.QuantizeConfig(run="r", out="o", io="int16")
