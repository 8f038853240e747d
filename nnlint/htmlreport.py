"""`--report nnlint-report.html`: one self-contained page to look at instead of read.

The charts are drawn by matplotlib into inline SVG (images as embedded PNG
data), so the page needs no network, no CDN and no script: it opens from a
CI artifact or an email attachment and prints as it shows. matplotlib is
imported only here, when a report is asked for.

Sections: the findings grouped by phase, each linking to its rule's docs;
the inputs right before the net (statistics, the first images, the label
histogram); per layer after one real optimizer step (activations, weights,
gradients, the update/weight ratio against 1e-3); gradient flow through the
depth; the overfit-one-batch curve and the loss at init; each check's time.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Callable
from typing import Any

from nnlint import __version__
from nnlint.core.errors import UsageError
from nnlint.core.finding import Phase
from nnlint.core.registry import Registry
from nnlint.engine import Result

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: left; font-size: 13px; }
th { background: #f4f4f4; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.error { color: #b00020; font-weight: 600; } .warning { color: #a15c00; } .info { color: #1a5e9a; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 13px; }
.missing { color: #777; font-style: italic; } code { background: #f4f4f4; padding: 0 .2em; }
"""


def require_matplotlib() -> None:
    """A UsageError before anything runs when the report could not be drawn."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--report needs matplotlib, which is not installed; pip install 'nnlint[report]'"
        )


def render_report(result: Result, registry: Registry, stats: dict[str, Any] | None) -> str:
    """The whole page as one string."""
    stats = stats or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>nnlint report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>nnlint report</h1><p>nnlint {html.escape(__version__)}; "
        f"{len(result.findings)} finding(s) in {len(result.files)} file(s).</p>",
        _findings(result, registry),
    ]
    missing = stats.get("missing", {})
    if not stats:
        parts.append(
            '<p class="missing">No model was checked (pass <code>--model</code>): '
            "the inputs, layers and training charts need one.</p>"
        )
    else:
        parts += [
            _inputs(stats.get("inputs") or [], stats.get("labels"), missing),
            _layers(stats.get("layers"), missing.get("layers")),
            _training(stats.get("overfit"), missing.get("overfit")),
        ]
    parts += [_timings(result.timings), "</body></html>"]
    return "\n".join(parts) + "\n"


def _findings(result: Result, registry: Registry) -> str:
    out = ["<h2>Findings</h2>"]
    if not result.findings:
        return out[0] + "<p>All checks passed!</p>"
    for phase in Phase:
        found = [f for f in result.findings if f.phase is phase]
        if not found:
            continue
        out.append(f"<h3>{phase.value.capitalize()} ({len(found)})</h3><table>")
        out.append("<tr><th>where</th><th>rule</th><th>severity</th><th>message</th></tr>")
        for f in found:
            rule = registry.by_code.get(f.code)
            code = html.escape(f.code)
            link = f'<a href="{html.escape(rule.url())}">{code}</a>' if rule else code
            note = f"<br><small>{html.escape(f.note)}</small>" if f.note else ""
            out.append(
                f"<tr><td><code>{html.escape(f.location())}</code></td>"
                f"<td>{link} {html.escape(f.name)}</td><td class='{f.severity}'>{f.severity}</td>"
                f"<td>{html.escape(f.message)}{note}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def _figure(name: str, caption: str, draw: Callable[[Any], None], size=(8, 3.2)) -> str:
    """One matplotlib chart as inline SVG inside a captioned figure.

    The figure is made without pyplot and laid out with fixed margins: the
    automatic layout (`tight_layout`) measures every label twice and cost
    as much as the drawing itself."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    rcParams["svg.fonttype"] = "none"  # text stays text: searchable, small
    rcParams["svg.hashsalt"] = "nnlint"  # the same data draws the same file
    fig = Figure(figsize=size)
    draw(fig)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]
    return _captioned(name, svg, caption)


def _margins(fig: Any, below: list[str] = (), beside: list[str] = (), twin: bool = False) -> None:
    """Fixed margins wide enough for the tick labels: rotated layer names below
    (7 pt, 60 degrees), bar names beside (7 pt), room for a right axis."""
    width, height = fig.get_size_inches()
    bottom = 0.45 + 0.032 * max((len(t) for t in below), default=0)
    left = 0.9 + 0.05 * max((len(t) for t in beside), default=0)
    fig.subplots_adjust(
        left=min(0.6, left / width),
        right=1 - (0.75 if twin else 0.2) / width,
        bottom=min(0.6, bottom / height),
        top=1 - 0.15 / height,
    )


def _captioned(name: str, svg: str, caption: str) -> str:
    return (
        f'<figure data-chart="{name}">{svg}<figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _inputs(inputs: list, labels: dict | None, missing: dict) -> str:
    out = ["<h2>Inputs right before the net</h2>"]
    if not inputs:
        out.append('<p class="missing">No tensor inputs were found.</p>')
    heads = ("input", "shape", "dtype", "min", "max", "mean", "std", "NaN", "Inf")
    out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
    for entry in inputs:
        cells = [entry.get("name"), "×".join(map(str, entry.get("shape", []))), entry.get("dtype")]
        cells += [entry.get(k) for k in ("min", "max", "mean", "std", "nan", "inf")]
        out.append("<tr>" + "".join(f"<td class='num'>{_fmt(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    for entry in inputs:
        channels = entry.get("channels")
        if channels:
            listed = ", ".join(
                f"{i}: {_fmt(c['mean'])} ± {_fmt(c['std'])}" for i, c in enumerate(channels)
            )
            out.append(f"<p>{html.escape(entry['name'])} per channel (mean ± std): {listed}</p>")
        if entry.get("images"):
            out.append(_image_grid(entry["name"], entry["images"]))
    if labels:
        out.append(_label_histogram(labels))
    elif "labels" in missing:
        out.append(f'<p class="missing">Labels not measured: {html.escape(missing["labels"])}</p>')
    return "\n".join(out)


def _image_grid(name: str, images: list) -> str:
    """The first images, each an embedded PNG in one SVG grid: matplotlib's `imsave`
    writes a PNG in a millisecond, where a subplot per image cost a tenth of a second."""
    import base64

    import numpy as np
    from matplotlib.image import imsave

    columns, cell, gap = min(8, len(images)), 96, 6
    rows = math.ceil(len(images) / columns)
    width, height = columns * (cell + gap), rows * (cell + gap)
    tiles = []
    for i, image in enumerate(images):
        pixels = np.asarray(image, dtype=float)
        buffer = io.BytesIO()
        imsave(buffer, pixels, cmap="gray", vmin=0.0, vmax=1.0, format="png")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        x, y = (i % columns) * (cell + gap), (i // columns) * (cell + gap)
        tiles.append(
            f'<image x="{x}" y="{y}" width="{cell}" height="{cell}" '
            f'style="image-rendering: pixelated" href="data:image/png;base64,{data}"/>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(tiles)}</svg>'
    )
    caption = f"The first {len(images)} images of {name}, each scaled to its own range."
    return _captioned("images", svg, caption)


def _label_histogram(labels: dict) -> str:
    counts, outputs = labels["counts"], labels.get("outputs")

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.bar(range(len(counts)), counts, color="#4c72b0")
        if outputs:
            ax.axvline(outputs - 0.5, color="#c44e52", linestyle="--", label=f"{outputs} outputs")
            ax.legend()
        ax.set_xlabel("class")
        ax.set_ylabel("samples")
        _margins(fig, ["cl"])

    made = " (synthesized by nnlint)" if labels.get("synthesized") else ""
    caption = f"Labels of the batch{made} against the model's number of outputs."
    return _figure("labels", caption, draw)


def _layers(layers: list | None, why: str | None) -> str:
    out = ["<h2>Layers after one optimizer step</h2>"]
    if not layers:
        reason = why or "the model has no leaf module with a floating-point output"
        return out[0] + f'<p class="missing">Not measured: {html.escape(reason)}</p>'
    weighted = [row for row in layers if row.get("update_ratio") is not None]
    if weighted:
        out.append(_update_ratios(weighted))
    else:
        out.append(_not_drawn("update/weight ratio", "no weight got a finite, nonzero update"))
    graded = [row for row in layers if row.get("grad_mean") is not None]
    if graded:
        out.append(_gradient_flow(graded))
    else:
        out.append(_not_drawn("gradient flow", "no weight got a finite gradient"))
    out.append(_activations(layers))
    heads = ("layer", "type", "act mean", "act std", "dead", "saturated", "|W|", "|grad|", "upd/W")
    keys = ("act_mean", "act_std", "dead", "saturated", "weight_norm", "grad_norm", "update_ratio")
    out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
    for row in layers:
        cells = [row["name"], row["type"], *(row.get(k) for k in keys)]
        out.append("<tr>" + "".join(f"<td class='num'>{_fmt(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _log_axis(ax: Any) -> None:
    """A log y axis labelled 1e-03, not in TeX: mathtext's parser costs more to
    build than the rest of the chart to draw; no minor ticks."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0e}"))
    ax.yaxis.set_minor_locator(NullLocator())  # ticks are the costliest artists to draw


def _not_drawn(chart: str, why: str) -> str:
    return f'<p class="missing">The {html.escape(chart)} is not drawn: {html.escape(why)}.</p>'


def _update_ratios(rows: list) -> str:
    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ratios = [max(r["update_ratio"], 1e-12) for r in rows]
        ax.plot(range(len(rows)), ratios, marker="o", color="#4c72b0")
        ax.axhline(1e-3, color="#c44e52", linestyle="--", label="1e-3")
        _log_axis(ax)
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=60, fontsize=7)
        ax.set_ylabel("|update| / |weight|")
        ax.legend()
        _margins(fig, [r["name"] for r in rows])

    caption = "Update/weight ratio per layer after one step: about 1e-3 is healthy."
    return _figure("update-ratio", caption, draw, size=(8, 3.6))


def _gradient_flow(rows: list) -> str:
    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        x = range(len(rows))
        ax.plot(x, [max(r["grad_max"], 1e-20) for r in rows], marker="^", label="max |grad|")
        ax.plot(x, [max(r["grad_mean"], 1e-20) for r in rows], marker="o", label="mean |grad|")
        _log_axis(ax)
        ax.set_xticks(list(x), [r["name"] for r in rows], rotation=60, fontsize=7)
        ax.set_ylabel("|grad| of the weight")
        ax.legend()
        _margins(fig, [r["name"] for r in rows])

    caption = "Gradient flow through the depth of the network, input side on the left."
    return _figure("gradient-flow", caption, draw, size=(8, 3.6))


def _activations(rows: list) -> str:
    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        x = range(len(rows))
        ax.errorbar(
            x,
            [r.get("act_mean") or 0.0 for r in rows],
            yerr=[r.get("act_std") or 0.0 for r in rows],
            fmt="o",
            label="mean ± std",
        )
        twin = ax.twinx()
        twin.bar(x, [r.get("dead") or 0.0 for r in rows], alpha=0.25, color="#c44e52")
        twin.set_ylim(0, 1)
        twin.set_ylabel("fraction exactly 0")
        ax.set_xticks(list(x), [r["name"] for r in rows], rotation=60, fontsize=7)
        ax.set_ylabel("activation")
        ax.legend(loc="upper left")
        _margins(fig, [r["name"] for r in rows], twin=True)

    return _figure("activations", "Activations per layer, and the fraction that is 0.", draw)


def _training(overfit: dict | None, why: str | None) -> str:
    out = ["<h2>Training on one batch</h2>"]
    if not overfit or not overfit.get("losses"):
        reason = why or "no loss could be computed"
        return out[0] + f'<p class="missing">Not measured: {html.escape(reason)}</p>'
    losses = [v if v is not None else float("nan") for v in overfit["losses"]]
    target = overfit.get("target")

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.plot(range(len(losses)), losses, color="#4c72b0", label="loss")
        if target is not None:
            ax.axhline(target, color="#55a868", linestyle="--", label="target")
        ax.set_xlabel(f"step ({overfit.get('optimizer', 'optimizer')})")
        ax.set_ylabel("loss")
        ax.legend()
        _margins(fig, ["step"])

    samples = overfit.get("samples")
    what = f"{samples} samples of the batch" if samples else "the one batch"
    caption = f"Overfitting {what}: the loss should fall fast, to the target line."
    out.append(_figure("overfit", caption, draw))
    init = overfit.get("init")
    if init:

        def bars(fig: Any) -> None:
            ax = fig.add_subplot()
            ax.barh([0, 1], [init["expected"], init["measured"]], color=["#55a868", "#4c72b0"])
            ax.set_yticks([0, 1], [f"expected ln({init['classes']})", "measured"])
            ax.set_xlabel("loss at init")
            _margins(fig, ["loss"], [f"expected ln({init['classes']})"])

        out.append(_figure("init-loss", "The loss at init against its expected value.", bars))
    return "\n".join(out)


def _timings(timings: dict[str, float]) -> str:
    if not timings:
        return ""
    items = sorted(timings.items(), key=lambda kv: -kv[1])

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.barh(range(len(items)), [v for _, v in items], color="#8172b2")
        ax.set_yticks(range(len(items)), [k for k, _ in items], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("seconds")
        _margins(fig, ["seconds"], [k for k, _ in items])

    height = max(2.0, 0.22 * len(items) + 0.8)
    return "<h2>Time</h2>" + _figure("timings", "Each phase's and check's time.", draw, (8, height))
