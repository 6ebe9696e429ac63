"""Write the PNG plots of a run directory and print the last values of its main metrics.

    python launch/report.py runs/tiny-cpu-20261125-101500

Reads RUN_DIR/metrics.jsonl only, so it works on a finished, crashed or running run, with or without W&B.
A directory without metrics.jsonl stops with one line and exit status 2.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from selfplay.plots import SUMMARY_KEYS, MetricsNotFoundError, all_keys, last_values, read_metrics, write_plots


def format_table(values: dict[str, tuple[int, float]]) -> str:
    """Aligned 'metric  step  value' lines."""
    width = max([len("metric"), *(len(key) for key in values)])
    lines = [f"{'metric':<{width}}  {'step':>6}  value"]
    lines += [f"{key:<{width}}  {step:>6}  {value:.4g}" for key, (step, value) in values.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Plots and last metric values of a run directory")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds metrics.jsonl)")
    args = parser.parse_args(argv)
    try:
        rows = read_metrics(args.run_dir)
        paths = write_plots(args.run_dir)
    except (MetricsNotFoundError, ValueError) as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    if not paths:
        print(f"no plotted metrics in {args.run_dir}/metrics.jsonl")
    keys = [*SUMMARY_KEYS, *(key for key in all_keys(rows) if "format_failure_rate" in key)]
    values = last_values(rows, keys)
    print(format_table(values) if values else "no main metrics logged yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
