#!/usr/bin/env python
"""Plot a training run's metrics.json as a PNG grid of every loss component and metric against
the iteration (see :mod:`segtrain.utils.plot_metrics`).

    python tools/plot_metrics.py output/metrics.json [--output metrics.png] [--keys REGEX]
    python tools/plot_metrics.py output/metrics.json --trends   # did every loss go down?

``--trends`` prints each loss key's mean over the last fifth of the run against the first
fifth (:mod:`segtrain.utils.loss_trends`) instead of plotting; it exits 1 when some key did
not go down, so scripts can check a run.
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segtrain.utils.plot_metrics import group_keys, match_keys, plot_metrics, read_metrics  # noqa: E402,F401

logger = logging.getLogger("plot_metrics")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="metrics.json written by the JSON writer")
    parser.add_argument("--output", default="", help="PNG to write (default: metrics.png next to the input)")
    parser.add_argument("--keys", default="", help="only plot keys matching this regular expression")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window (records)")
    parser.add_argument(
        "--trends",
        action="store_true",
        help="print the last-fifth / first-fifth ratio of every loss key instead of plotting; "
        "exit 1 if one did not go down",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from segtrain.utils.cli import one_line_errors

    def run() -> int:
        records, x_key = read_metrics(args.metrics)
        if args.trends:
            import segtrain.modeling  # noqa: F401  (the criteria register their moving-target metrics)
            from segtrain.utils.loss_trends import describe_rising, format_loss_trends, loss_trends

            trends = loss_trends(records)
            if args.keys:
                trends = {k: trends[k] for k in match_keys(list(trends), args.keys, "loss key with a trend")}
            print(format_loss_trends(trends))
            rising = describe_rising(trends, records)
            if rising:
                print(f"did not go down: {', '.join(rising)}")
            return 1 if rising else 0
        output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "metrics.png")
        n = plot_metrics(records, x_key, output, args.keys, args.smooth)
        logger.info(f"wrote {n} subplots from {len(records)} records to {output}")
        return 0

    return one_line_errors(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
