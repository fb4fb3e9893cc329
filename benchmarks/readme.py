"""The README's benchmark figures, written from the committed results (never typed by hand).

The paragraph between ``<!-- figures:start -->`` and ``<!-- figures:end -->`` in README.md is
generated from ``benchmarks/results/bounds.json`` and ``suite.json``; a test checks that the
README holds exactly what this module generates, so a regenerated result that changes a figure
fails the tests until the README is rewritten:

    python -m benchmarks.readme           # rewrite the paragraph in README.md
    python -m benchmarks.readme --check   # exit 1 if README.md is out of date
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def _row(results, model, batch):
    for r in results:
        if (r.get("model") == model and r.get("batch") == batch and "error" not in r
                and r.get("norm", "inf") == "inf"):
            return r
    raise KeyError(f"bounds.json has no result for {model} at batch {batch}")


def figures(results_dir: Path = RESULTS) -> str:
    """The generated paragraph (Markdown, without the markers)."""
    bounds = json.loads((results_dir / "bounds.json").read_text())
    res, st = bounds["results"], bounds["machine"]
    b1, b8, b32 = _row(res, "cnn7", 1), _row(res, "cnn7", 8), _row(res, "cnn7", 32)
    suite = json.loads((results_dir / "suite.json").read_text())
    gb = lambda mb: f"{mb / 1024:.1f} GB"  # noqa: E731
    return (
        f"Measured on a quiet 2-core machine ({st['cpu']}; MNIST-size CNN7 with BatchNorm, "
        f"random weights, eps {bounds['eps']}; commit {st['commit']}, "
        f"[bounds.md](benchmarks/results/bounds.md)): full CROWN takes "
        f"{b1['crown']['time_s']:.1f} s and {gb(b1['crown']['peak_rss_mb'])} of peak memory "
        f"for one image and {b8['crown']['time_s']:.0f} s and "
        f"{gb(b8['crown']['peak_rss_mb'])} at batch 8; at batch 32 IBP costs "
        f"{b32['ibp']['ratio_to_forward']:.1f}x the forward pass and CROWN-IBP (both bound "
        f"sides) {b32['crown-ibp']['ratio_to_forward']:.0f}x. The whole suite ran in "
        f"{suite['seconds']:.0f} s ([suite.md](benchmarks/results/suite.md), commit "
        f"{suite['machine']['commit']}).")


def readme_block(text: str) -> str | None:
    """The paragraph between the markers in ``text`` (None without markers)."""
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    args = p.parse_args(argv)
    text = README.read_text()
    want = figures()
    have = readme_block(text)
    if have is None:
        print(f"README.md has no {START} ... {END} block", file=sys.stderr)
        return 1
    if args.check:
        if have != want:
            print("README.md's benchmark figures differ from the committed results; run "
                  "python -m benchmarks.readme", file=sys.stderr)
            return 1
        return 0
    head, rest = text.split(START, 1)
    README.write_text(head + START + "\n" + want + "\n" + END + rest.split(END, 1)[1])
    print(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
