"""Did every loss component go down? The mean of each loss key over the last fifth of a run's
logged records against its mean over the first fifth.

A loss that is flat or rising over a whole run (a class loss stuck at its prior, an aux copy
whose layer does not learn, an IoU loss whose targets move) is easy to miss among 30 curves;
the end-of-run report (``segtrain.engine.hooks.TrainingReport``) logs this table (over the latest
history in metrics.json, see ``plot_metrics.read_metrics``), names the keys whose ratio is >= 1 in a
warning and stores the figures in ``metrics_final.json`` under ``"loss_trends"``. A named
key whose targets move as the model learns gets a note with the metric that shows it
(``train/loss_iou x1.68 (targets moved: train/iou_target_mean x2.04)``).

    python tools/plot_metrics.py output/metrics.json --trends
"""

import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from segtrain.utils.plot_metrics import group_keys, is_loss_name, split_of

__all__ = [
    "is_loss_key",
    "loss_trends",
    "format_loss_trends",
    "rising_keys",
    "target_metric",
    "moving_target_notes",
    "describe_rising",
    "register_moving_target",
]

# Fewer records than this per key give fifths of fewer than 2 records: no trend is reported.
MIN_RECORDS = 10
# A trend: {"first": mean over the first fifth, "last": mean over the last fifth,
# "ratio": last / first (inf when first is 0 and last is not), "records": records with the key}
Trend = Dict[str, float]

# Losses whose targets move as the model learns, and the metric logged beside each that shows
# the move (loss-name pattern -> metric name, ``{suffix}`` filled from the pattern's group).
# Such a loss can rise while every prediction it scores gets better. The criteria that log
# such a pair register it (``register_moving_target``).
_MOVING_TARGETS: List[Tuple["re.Pattern[str]", str]] = []


def register_moving_target(loss_pattern: str, metric: str) -> None:
    """Name ``metric`` (with ``{suffix}`` taken from the pattern's ``suffix`` group) beside a
    rising loss whose name matches ``loss_pattern``, as the metric that shows its targets move."""
    compiled = re.compile(loss_pattern)
    if all(p.pattern != compiled.pattern or m != metric for p, m in _MOVING_TARGETS):
        _MOVING_TARGETS.append((compiled, metric))


def is_loss_key(key: str) -> bool:
    """Loss components and totals: keys with a ``loss`` word (``loss_ce``, ``presence_loss_aux_0``,
    ``core_loss_final``, ``total_loss``, with or without a ``train/`` / ``val/`` prefix); not
    metrics such as ``presence_dec_acc``, ``ce_f1`` or ``lr``."""
    return is_loss_name(split_of(key)[1])


def _mean(values: List[float]) -> float:
    return math.fsum(values) / len(values)


def _fifth_means(values: List[float]) -> Tuple[float, float]:
    """Means of the first and the last fifth of ``values`` (at least one value each)."""
    n = max(1, len(values) // 5)
    return _mean(values[:n]), _mean(values[-n:])


def loss_trends(records: List[Dict[str, float]], min_records: int = MIN_RECORDS) -> "OrderedDict[str, Trend]":
    """Trend of every loss key that appears in at least ``min_records`` records, in the order of
    :func:`segtrain.utils.plot_metrics.group_keys` (totals first, aux copies after their main key).

    records: metrics.json lines in logging order (see ``read_metrics``). The fifths are taken
    over the records that carry the key, so validation keys logged every few hundred
    iterations are compared among themselves. A key that is 0 in every record is a term that
    is switched off (``presence_loss_o2m`` of SAM 3, which scores presence on the one-to-one
    outputs only) and is left out."""
    series: Dict[str, List[float]] = {}
    for r in records:
        for k, v in r.items():
            if is_loss_key(k) and math.isfinite(v):
                series.setdefault(k, []).append(float(v))
    out: "OrderedDict[str, Trend]" = OrderedDict()
    kept = [k for k, v in series.items() if len(v) >= min_records and any(x != 0 for x in v)]
    for keys in group_keys(kept).values():
        for k in keys:
            v = series[k]
            first, last = _fifth_means(v)
            ratio = last / first if first > 0 else (1.0 if last == first else math.inf)
            out[k] = {"first": first, "last": last, "ratio": ratio, "records": len(v)}
    return out


def _went_down(trend: Trend) -> bool:
    return trend["ratio"] < 1.0


def rising_keys(trends: Dict[str, Trend]) -> List[str]:
    """Keys whose last-fifth mean is not below their first-fifth mean."""
    return [k for k, t in trends.items() if not _went_down(t)]


def target_metric(key: str) -> Optional[str]:
    """The metric key that shows how the targets of a loss move (``train/loss_iou`` ->
    ``train/iou_target_mean``, ``loss_bbox_aux_0_o2m`` -> ``o2m_matches_per_box_aux_0``), or None."""
    split, name = split_of(key)
    for pattern, metric in _MOVING_TARGETS:
        m = pattern.match(name)
        if m:
            return split + metric.format(**m.groupdict())
    return None


def moving_target_notes(
    trends: Dict[str, Trend], records: List[Dict[str, float]], min_records: int = MIN_RECORDS
) -> Dict[str, str]:
    """For each key of ``rising_keys(trends)`` whose target metric (:func:`target_metric`) was
    logged and rose over the run too: ``"targets moved: <metric> x<ratio>"``. A rise of
    such a loss is then the targets getting harder, not necessarily the model getting worse."""
    notes = {}
    for key in rising_keys(trends):
        metric = target_metric(key)
        if metric is None:
            continue
        values = [float(r[metric]) for r in records if metric in r and math.isfinite(r[metric])]
        if len(values) < min_records:
            continue
        first, last = _fifth_means(values)
        if first > 0 and last > first:
            notes[key] = f"targets moved: {metric} x{last / first:.2f}"
    return notes


def describe_rising(trends: Dict[str, Trend], records: List[Dict[str, float]]) -> List[str]:
    """One entry per key that did not go down: ``"loss_ce_1 x1.12"``, with the
    :func:`moving_target_notes` note in parentheses where there is one."""
    notes = moving_target_notes(trends, records)
    return [f"{k} x{trends[k]['ratio']:.2f}" + (f" ({notes[k]})" if k in notes else "") for k in rising_keys(trends)]


def format_loss_trends(trends: Dict[str, Trend], title: Optional[str] = None) -> str:
    """A fixed-width table: key, first-fifth mean, last-fifth mean, ratio, and "UP" where the
    ratio is >= 1."""
    lines = [title] if title else []
    if not trends:
        lines.append(f"(no loss key with at least {MIN_RECORDS} records)")
        return "\n".join(lines)
    w = max(len(k) for k in trends)
    lines.append(f"{'key':<{w}}  {'first 1/5':>10}  {'last 1/5':>10}  {'last/first':>10}")
    for k, t in trends.items():
        flag = "" if _went_down(t) else "  UP"
        lines.append(f"{k:<{w}}  {t['first']:>10.4g}  {t['last']:>10.4g}  {t['ratio']:>10.3f}{flag}")
    return "\n".join(lines)
