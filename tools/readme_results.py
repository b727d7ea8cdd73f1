"""Render the README's results block from the shipped bundles' manifests and reports (never typed by hand).

    python -m tools.readme_results            # print the block
    python -m tools.readme_results --write    # replace the block between the RESULTS markers in README.md
    python -m tools.readme_results --check    # exit 1 if README.md's block differs (the test suite runs this)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.false_accepts import load_figures
from edge.fileio import write_text_atomic
from edge.shipped import SHIPPED_BUNDLES

ROOT = Path(__file__).resolve().parent.parent

BEGIN, END = "<!-- RESULTS:BEGIN (tools/readme_results.py) -->", "<!-- RESULTS:END -->"
ORDER = SHIPPED_BUNDLES
_DATASETS = {"esc10": "ESC-10 fold 5 test"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _mb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} MB"


def _fa_legend(figures) -> str:
    if not figures:
        return ""
    f = figures[0]
    return (f" **FA/h @ FRR**: false accepts per hour on {f.combined()[1]:.2f} h of audio without keywords "
            "that no bundle was trained or tuned on (the held-out and other negatives of \"False accepts\" "
            "below), at the bundle's shipped operating point, and the share of the "
            f"{f.held_out['positives']['truth_words']} test-speaker keywords it misses there (`python -m "
            "benchmarks.false_accepts`; - = not measured).")


def bundles(root: Path = ROOT / "firmware_assets") -> list[Path]:
    """The bundles the repository ships, in the README's order (a bundle rebuilt or added locally, e.g. by
    `make firmware`, does not change the README)."""
    return [root / n for n in ORDER if (root / n / "manifest.json").is_file()]


def render() -> str:
    rows, lines = [], []
    figures = load_figures(ROOT / "benchmarks" / "false_accepts.json")
    fa = {f.bundle: f.headline() for f in figures}
    for b in bundles():
        m = json.loads((b / "manifest.json").read_text())
        v = m.get("verification", {})
        acc = v.get("accuracy", {})
        sizes = v.get("sizes", {}) or {}
        net = m.get("network", {})
        tr = m.get("training", {})
        summ = tr.get("summary", {})
        f32 = sizes.get("model_float32.tflite")
        i8 = sizes.get("model_int8.tflite")
        ratio = f"{v['int8_to_float32_size']:.3f}" if v.get("int8_to_float32_size") else (
            f"{i8 / f32:.3f}" if (i8 and f32) else "n/a")
        data = Path(str(tr.get("data") or "")).name
        other = f" ({_DATASETS.get(data, data)}, clip-level)" if data and "speech_commands" not in data else ""
        rows.append(f"| `{b.name}`{other} | {net.get('name')} / {net.get('profile')} | {net.get('params', 0):,} | "
                    f"{net.get('macs', 0) / 1e6:.1f} M | {_pct(acc.get('keras_float'))} | "
                    f"{_pct(acc.get('tflite_int8'))} | {_pct(v.get('agreement', {}).get('int8_vs_keras_float'))} | "
                    f"{fa.get(b.name, '-')} | "
                    f"{_mb(i8)} | {ratio} | {summ.get('epochs_run', '?')} ep, {summ.get('train_seconds', 0):.0f} s, "
                    f"{summ.get('backend', '?')} |")
    if not rows:
        return "No bundles in firmware_assets/ yet: run `make firmware`."
    lines += ["## Results", "",
              "Speech Commands v0.02 test set (4,890 clips, 12 classes) with the speaker-disjoint split "
              "(3,965 train / 352 val / 573 test clips). Accuracy is on the **test** split; the int8 model runs "
              "in ai-edge-litert through the same code as the device. The training column names the Keras "
              "backend: the jax and torch runs ran on one NVIDIA H200, the tensorflow runs on a 2-core AMD EPYC "
              "CPU; conversion and evaluation always on that CPU. "
              "A bundle marked with another data set was trained and tested on that one instead (its "
              "`report.md` gives the split and the per-window accuracy beside the clip-level one)."
              + _fa_legend(figures),
              "",
              "| bundle | network / profile | params | MACs | float test | int8 test | int8 = float | FA/h @ FRR "
              "| int8 size | int8/f32 size | training |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"] + rows
    lines += ["", "The seed-profile bundles (the original study's 224x224x3 input, `kws_mobilenet_seed` and "
                  "`kws_resnet18_seed`) are not shipped: their last runs were undertrained (43-50 % test "
                  "accuracy, docs/HISTORY.md); `make firmware` rebuilds them into `firmware_assets/`."]
    default = ROOT / "firmware_assets" / ORDER[0] / "report.md"
    if default.is_file():
        lines += ["", f"Per-class precision and recall, confusion matrices and curves: each bundle's `report.md` "
                      f"(e.g. [{ORDER[0]}](firmware_assets/{ORDER[0]}/report.md))."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    block = f"{BEGIN}\n{render()}\n{END}"
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md lacks the {BEGIN} ... {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    current = BEGIN + rest.split(END, 1)[0] + END
    if a.check:
        if current != block:
            print("README.md results differ from the bundles: run python -m tools.readme_results --write",
                  file=sys.stderr)
            return 1
        return 0
    if a.write:
        write_text_atomic(readme, head + block + rest.split(END, 1)[1])
        return 0
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
