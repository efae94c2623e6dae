"""``<output_dir>/loss.svg``: the training and validation loss of a run, readable in any browser.

Written by hand (no plotting package: matplotlib is not a training dependency) from the run's
``metrics.jsonl`` (one record per optimizer step) and ``validation.jsonl`` (one per validation),
each time the trainer validates or saves, and at the end. A step logged twice (a run killed
after a checkpoint and resumed repeats the steps since) is drawn with its last value.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional
from xml.sax.saxutils import escape

from recycle_distill.util.atomic import atomic_write

__all__ = ["write_loss_plot", "read_curve", "PLOT_FILE", "VALIDATION_FILE"]

PLOT_FILE = "loss.svg"
VALIDATION_FILE = "validation.jsonl"
WIDTH, HEIGHT = 720, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 50  # margins around the plotting area
MAX_POINTS = 2000  # a longer training curve is averaged over runs of steps
TRAIN_COLOUR, VALID_COLOUR = "#1f77b4", "#d62728"


def read_curve(path: str) -> list[tuple[int, float]]:
    """(step, loss) of a JSON-lines file, sorted by step, the last record of a step kept;
    lines that are not complete records (a run killed mid-write) are skipped."""
    by_step: dict[int, float] = {}
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
                step, loss = int(record["step"]), float(record["loss"])
            except (ValueError, KeyError, TypeError):
                continue
            if math.isfinite(loss):
                by_step[step] = loss
    return sorted(by_step.items())


def write_loss_plot(output_dir: str, title: str = "") -> Optional[str]:
    """Draw ``output_dir``'s curves into ``output_dir/loss.svg`` (atomically); None when no step is logged yet."""
    train = read_curve(os.path.join(output_dir, "metrics.jsonl"))
    valid = read_curve(os.path.join(output_dir, VALIDATION_FILE))
    if not train and not valid:
        return None
    path = os.path.join(output_dir, PLOT_FILE)
    text = render_svg(_thin(train), valid, title)

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(path, write, prefix=".tmp-", suffix=PLOT_FILE)
    return path


def _thin(curve: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """At most MAX_POINTS points: each the mean step and loss of a run of consecutive records."""
    if len(curve) <= MAX_POINTS:
        return curve
    size = math.ceil(len(curve) / MAX_POINTS)
    chunks = [curve[start:start + size] for start in range(0, len(curve), size)]
    return [(round(sum(s for s, _ in chunk) / len(chunk)), sum(v for _, v in chunk) / len(chunk)) for chunk in chunks]


def render_svg(train: list[tuple[int, float]], valid: list[tuple[int, float]], title: str) -> str:
    """The SVG text: axes with min/max ticks, the training polyline, validation points joined."""
    points = train + valid
    low_step, high_step = min(s for s, _ in points), max(s for s, _ in points)
    low, high = min(v for _, v in points), max(v for _, v in points)
    if high_step == low_step:
        high_step = low_step + 1
    if high == low:
        low, high = low - 0.5, high + 0.5
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def coords(step: int, loss: float) -> tuple[float, float]:
        return (LEFT + (step - low_step) / (high_step - low_step) * inner_w,
                TOP + (high - loss) / (high - low) * inner_h)  # SVG's y grows downwards

    def xy(step: int, loss: float) -> str:
        return "{:.2f},{:.2f}".format(*coords(step, loss))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">'
             f'{escape(title or "distillation loss")}</text>',
             f'<rect x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}" fill="none" stroke="#444"/>',
             f'<text x="{LEFT}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{low_step}</text>',
             f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{high_step}</text>',
             f'<text x="{WIDTH / 2}" y="{HEIGHT - 12}" text-anchor="middle">optimizer step</text>',
             f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{high:.4g}</text>',
             f'<text x="{LEFT - 6}" y="{HEIGHT - BOTTOM + 4}" text-anchor="end">{low:.4g}</text>',
             f'<text x="16" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 16 {HEIGHT / 2})">loss</text>']
    if train:
        parts.append(f'<polyline id="train" fill="none" stroke="{TRAIN_COLOUR}" stroke-width="1.5" '
                     f'points="{" ".join(xy(s, v) for s, v in train)}"/>')
    if valid:
        parts.append(f'<polyline id="valid" fill="none" stroke="{VALID_COLOUR}" stroke-width="1.5" '
                     f'points="{" ".join(xy(s, v) for s, v in valid)}"/>')
        parts += ['<circle class="valid" cx="{:.2f}" cy="{:.2f}" r="3" fill="{}"/>'.format(*coords(s, v), VALID_COLOUR)
                  for s, v in valid]
    legend = [("training", TRAIN_COLOUR, bool(train)), ("validation", VALID_COLOUR, bool(valid))]
    for row, (name, colour, _) in enumerate(entry for entry in legend if entry[2]):
        y = TOP + 16 + 16 * row
        parts.append(f'<line x1="{WIDTH - RIGHT - 110}" y1="{y - 4}" x2="{WIDTH - RIGHT - 90}" y2="{y - 4}" '
                     f'stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{WIDTH - RIGHT - 84}" y="{y}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
