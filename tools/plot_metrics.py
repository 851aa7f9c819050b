#!/usr/bin/env python
"""Plot a training run's metrics.json (JSON lines, one object per logged iteration) as a grid
of subplots: one per loss component or metric against the iteration. Aux copies of a loss
(``loss_ce_0`` .. ``loss_ce_8``, ``_aux_i``, ``_fs``, ``_o2m``) share the subplot of their
main key, drawn faded; per-class metrics (``segm/AP-<class>``) share one subplot per task.

    python tools/plot_metrics.py output/metrics.json [--output metrics.png] [--keys REGEX]
"""
import argparse
import json
import logging
import math
import os
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("plot_metrics")

# Suffixes of deep-supervision / extra-stage copies of a loss (LOSSES.md), stripped repeatedly.
_AUX_SUFFIX = re.compile(r"(_aux_\d+|_\d+|_fs|_o2m)$")
_PER_CLASS = re.compile(r"^(.*/)?(AP|IoU|ACC)-.+$")
_X_KEYS = ("iteration", "iter", "step")


def _error(msg: str):
    from segtrain.utils.errors import SegtrainError

    return SegtrainError(msg)


def read_metrics(path: str) -> Tuple[List[Dict[str, float]], str]:
    """Records of a JSON-lines file (or a JSON list of objects), numeric values only; returns
    (records, name of the x key or '' for the line index). A truncated last line (a run killed
    mid-write) is skipped with a warning; any other malformed line is an error naming it."""
    if not os.path.isfile(path):
        raise _error(f"metrics file not found: {path!r}")
    with open(path) as f:
        text = f.read()
    if not text.strip():
        raise _error(f"{path}: metrics file is empty")
    raw: List[dict] = []
    if text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise _error(f"{path}: not valid JSON ({e})") from None
    else:
        lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
        for pos, (lineno, line) in enumerate(lines):
            try:
                raw.append(json.loads(line))
            except json.JSONDecodeError as e:
                if pos == len(lines) - 1 and pos > 0:
                    logger.warning(f"{path}:{lineno}: skipping a truncated last line")
                    continue
                raise _error(f"{path}:{lineno}: not a JSON object ({e.msg})") from None
    records = []
    for i, r in enumerate(raw):
        if not isinstance(r, dict):
            raise _error(f"{path}: entry {i + 1} is a {type(r).__name__}, expected a JSON object")
        records.append({k: float(v) for k, v in r.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)})
    x_key = next((k for k in _X_KEYS if any(k in r for r in records)), "")
    if not any(k != x_key for r in records for k in r):
        raise _error(f"{path}: no numeric metrics to plot")
    return records, x_key


def _strip_aux(key: str) -> str:
    base = key
    while True:
        s = _AUX_SUFFIX.sub("", base)
        if s == base or not s:
            return base
        base = s


def group_keys(keys: List[str]) -> "OrderedDict[str, List[str]]":
    """Subplot title -> keys drawn in it: losses first (total first), then other metrics."""
    groups: Dict[str, List[str]] = {}
    stripped = {k: _strip_aux(k) for k in keys}
    for k in keys:
        m = _PER_CLASS.match(k)
        if m:
            base = f"{m.group(1) or ''}{m.group(2)}-<class>"
        else:
            base = stripped[k]
            # a lone "foo_2" with no "foo" and no siblings is a name of its own, not an aux copy
            if base != k and base not in keys and sum(1 for v in stripped.values() if v == base) < 2:
                base = k
        groups.setdefault(base, []).append(k)

    def rank(title: str):
        leaf = title.rsplit("/", 1)[-1]
        if leaf in ("core_loss", "total_loss"):
            return (0, title)
        if leaf.startswith("loss"):
            return (1, title)
        return (2, title)

    return OrderedDict((t, sorted(groups[t])) for t in sorted(groups, key=rank))


def plot_metrics(records: List[Dict[str, float]], x_key: str, output: str, key_regex: str = "",
                 smooth: int = 1) -> int:
    """Draw the grid into ``output`` (PNG); returns the number of subplots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k for r in records for k in r if k != x_key})
    if key_regex:
        keys = [k for k in keys if re.search(key_regex, k)]
        if not keys:
            raise _error(f"--keys {key_regex!r} matches no metric")
    groups = group_keys(keys)
    n = len(groups)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (title, members) in zip(axes.flat, groups.items()):
        for k in members:
            xs = [r.get(x_key, i) if x_key else i for i, r in enumerate(records) if k in r]
            ys = [r[k] for r in records if k in r]
            if smooth > 1 and len(ys) > smooth:
                ys = [sum(ys[max(0, i - smooth + 1):i + 1]) / len(ys[max(0, i - smooth + 1):i + 1])
                      for i in range(len(ys))]
            main = k == title or len(members) == 1
            style = dict(marker="o", markersize=3) if len(ys) < 30 else {}
            if main:
                ax.plot(xs, ys, color="C0", linewidth=1.6, label=k, zorder=3, **style)
            elif title.endswith("-<class>"):
                ax.plot(xs, ys, linewidth=1.0, label=k.rsplit("-", 1)[-1], **style)
            else:
                ax.plot(xs, ys, color="C1", alpha=0.3, linewidth=0.8, **style)
        n_aux = sum(1 for k in members if k != title)
        ax.set_title(title + (f" (+{n_aux} aux, faded)" if n_aux and title in members else ""), fontsize=9)
        ax.set_xlabel(x_key or "record", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if title.endswith("-<class>") and len(members) <= 12:
            ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=90)
    plt.close(fig)
    return n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", help="metrics.json written by the JSON writer")
    parser.add_argument("--output", default="", help="PNG to write (default: metrics.png next to the input)")
    parser.add_argument("--keys", default="", help="only plot keys matching this regular expression")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window (records)")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from segtrain.utils.cli import one_line_errors

    def run() -> int:
        records, x_key = read_metrics(args.metrics)
        output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.metrics)), "metrics.png")
        n = plot_metrics(records, x_key, output, args.keys, args.smooth)
        logger.info(f"wrote {n} subplots from {len(records)} records to {output}")
        return 0

    return one_line_errors(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
