"""`--report nnlint-report.html`: one self-contained page to look at instead of read.

The charts are drawn by pygal into inline SVG (images as embedded PNG data,
encoded here), so the page needs no network, no CDN and no script: it opens
from a CI artifact or an email attachment and prints as it shows. pygal is
imported only here, when a report is asked for.

Sections: the findings grouped by phase, each linking to its rule's docs;
the inputs right before the net (statistics, the first images, the label
histogram); per layer after one real optimizer step (activations, weights,
gradients, the update/weight ratio against 1e-3); gradient flow through the
depth; the overfit-one-batch curve and the loss at init; each check's time.
"""

from __future__ import annotations

import html
import math
import re
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
td.bar { width: 40em; } td.bar span { display: inline-block; height: .8em; background: #8172b2; }
"""


def require_chart_library() -> None:
    """A UsageError before anything runs when the report could not be drawn."""
    import importlib.util

    if importlib.util.find_spec("pygal") is None:
        raise UsageError(
            "--report needs pygal, which is not installed; pip install 'nnlint[report]'"
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


_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860")


def _chart(name: str, caption: str, chart: Any) -> str:
    """One pygal chart as inline SVG inside a captioned figure: no script (pygal's
    tooltips are off), the same data drawing the same bytes (a fixed id, no date)."""
    chart.uuid = f"nnlint-{name}"
    svg = chart.render(is_unicode=True)
    svg = re.sub(r"<!--.*?-->|<script\b.*?</script>", "", svg, flags=re.S)
    return _captioned(name, svg, caption)


def _config(colors: tuple[str, ...] = _COLORS, **options: Any) -> dict[str, Any]:
    """The options every chart shares, with this chart's own."""
    from pygal.style import Style

    style = Style(
        background="white",
        plot_background="white",
        foreground="#333",
        foreground_strong="#222",
        foreground_subtle="#888",
        font_family="system-ui, sans-serif",
        label_font_size=11,
        major_label_font_size=11,
        legend_font_size=12,
        title_font_size=13,
        colors=colors,
        guide_stroke_color="#e4e4e4",
        major_guide_stroke_color="#d0d0d0",
        guide_stroke_dasharray="0",
        major_guide_stroke_dasharray="0",
    )
    shared = {
        "style": style,
        "js": [],
        "disable_xml_declaration": True,
        "width": 900,
        "height": 360,
        "legend_at_bottom": True,
        "truncate_label": -1,
        "truncate_legend": -1,
        "dots_size": 3,
        "value_formatter": _short,
    }
    return {**shared, **options}


def _layer_chart(kind: str, names: list[str], **options: Any) -> Any:
    """A chart over the layers, input side on the left, their names below."""
    import pygal

    chart = getattr(pygal, kind)(
        **_config(x_label_rotation=60, height=300 + 6 * max(map(len, names), default=0), **options)
    )
    chart.x_labels = names
    return chart


_LINE = {"dasharray": "6, 4", "width": 2}


def _short(value: float) -> str:
    return f"{value:.3g}"


def _decades(values: list[float], *marks: float) -> dict[str, Any]:
    """A log axis over whole powers of ten, labelled at each and nowhere else."""
    low = math.floor(math.log10(min([*values, *marks])))
    high = math.ceil(math.log10(max([*values, *marks])))
    high = max(high, low + 1)
    labels = [10.0**k for k in range(low, high + 1)]
    return {
        "logarithmic": True,
        "range": (labels[0], labels[-1]),
        "y_labels": labels,
        "show_minor_y_labels": True,  # pygal counts labels given as minor ones
    }  # a reference line: 1e-3, the target


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
    """The first images, each an embedded PNG in one SVG grid."""
    import base64

    columns, cell, gap = min(8, len(images)), 96, 6
    rows = math.ceil(len(images) / columns)
    width, height = columns * (cell + gap), rows * (cell + gap)
    tiles = []
    for i, image in enumerate(images):
        data = base64.b64encode(_png(image)).decode("ascii")
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


def _png(image: list) -> bytes:
    """An image of values in [0, 1], (H, W) grey or (H, W, 3) colour, as PNG bytes."""
    import struct
    import zlib

    colour = bool(image and image[0] and isinstance(image[0][0], list))
    rows = bytearray()
    for row in image:
        rows.append(0)  # no filter
        values = [v for px in row for v in px] if colour else row
        rows.extend(min(255, max(0, round(float(v) * 255))) for v in values)
    height, width = len(image), len(image[0]) if image else 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2 if colour else 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )


def _label_histogram(labels: dict) -> str:
    import pygal

    counts, outputs = labels["counts"], labels.get("outputs")
    classes = max(len(counts), outputs or 0)
    counts = [*counts, *[0] * (classes - len(counts))]
    many = classes > 40
    chart = pygal.Bar(
        **_config(
            x_title="class",
            y_title="samples",
            show_minor_x_labels=not many,
            x_labels_major_every=max(1, classes // 20) if many else None,
        )
    )
    chart.x_labels = [str(c) for c in range(classes)]
    limit = outputs if outputs else classes
    chart.add(
        f"within the {outputs} outputs" if outputs else "samples",
        [n if c < limit else None for c, n in enumerate(counts)],
    )
    if outputs and classes > outputs:
        chart.add("beyond the outputs", [n if c >= limit else None for c, n in enumerate(counts)])
    made = " (synthesized by nnlint)" if labels.get("synthesized") else ""
    caption = f"Labels of the batch{made} against the model's number of outputs."
    return _chart("labels", caption, chart)


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


def _not_drawn(chart: str, why: str) -> str:
    return f'<p class="missing">The {html.escape(chart)} is not drawn: {html.escape(why)}.</p>'


def _update_ratios(rows: list) -> str:
    names = [r["name"] for r in rows]
    ratios = [max(r["update_ratio"], 1e-12) for r in rows]
    chart = _layer_chart("Line", names, y_title="|update| / |weight|", **_decades(ratios, 1e-3))
    chart.add("update/weight", ratios)
    chart.add("1e-3", [1e-3] * len(rows), show_dots=False, stroke_style=_LINE)
    caption = "Update/weight ratio per layer after one step: about 1e-3 is healthy."
    return _chart("update-ratio", caption, chart)


def _gradient_flow(rows: list) -> str:
    names = [r["name"] for r in rows]
    highest = [max(r["grad_max"], 1e-20) for r in rows]
    means = [max(r["grad_mean"], 1e-20) for r in rows]
    chart = _layer_chart("Line", names, y_title="|grad| of the weight", **_decades(highest + means))
    chart.add("max |grad|", highest)
    chart.add("mean |grad|", means)
    caption = "Gradient flow through the depth of the network, input side on the left."
    return _chart("gradient-flow", caption, chart)


def _activations(rows: list) -> str:
    names = [r["name"] for r in rows]
    means = [r.get("act_mean") or 0.0 for r in rows]
    upper = [m + (r.get("act_std") or 0.0) for m, r in zip(means, rows, strict=True)]
    lower = [m - (r.get("act_std") or 0.0) for m, r in zip(means, rows, strict=True)]
    low, high = min(lower), max(upper)
    pad = 0.05 * (high - low or 1.0)
    chart = _layer_chart(
        "Line",
        names,
        colors=("#4c72b0", "#8fa6cf", "#8fa6cf", "#c44e52"),
        y_title="activation",
        range=(low - pad, high + pad),
        secondary_range=(0, 1),
    )
    chart.add("mean", means)
    chart.add("mean ± std", upper, stroke_style=_LINE)
    chart.add(None, lower, stroke_style=_LINE)
    chart.add(
        "fraction exactly 0 (right axis)", [r.get("dead") or 0.0 for r in rows], secondary=True
    )
    return _chart("activations", "Activations per layer, and the fraction that is 0.", chart)


def _training(overfit: dict | None, why: str | None) -> str:
    out = ["<h2>Training on one batch</h2>"]
    if not overfit or not overfit.get("losses"):
        reason = why or "no loss could be computed"
        return out[0] + f'<p class="missing">Not measured: {html.escape(reason)}</p>'
    losses = [v if v is not None else float("nan") for v in overfit["losses"]]
    target = overfit.get("target")

    import pygal

    chart = pygal.XY(
        **_config(x_title=f"step ({overfit.get('optimizer', 'optimizer')})", y_title="loss")
    )
    chart.add("loss", [(i, v) for i, v in enumerate(losses) if math.isfinite(v)], show_dots=False)
    if target is not None:
        ends = [(0, target), (max(1, len(losses) - 1), target)]
        chart.add("target", ends, show_dots=False, stroke_style=_LINE)
    samples = overfit.get("samples")
    what = f"{samples} samples of the batch" if samples else "the one batch"
    caption = f"Overfitting {what}: the loss should fall fast, to the target line."
    out.append(_chart("overfit", caption, chart))
    init = overfit.get("init")
    if init:
        bars = pygal.HorizontalBar(**_config(height=200, x_title="loss at init"))
        bars.add(f"expected ln({init['classes']})", [init["expected"]])
        bars.add("measured", [init["measured"]])
        out.append(_chart("init-loss", "The loss at init against its expected value.", bars))
    return "\n".join(out)


def _timings(timings: dict[str, float]) -> str:
    """Each phase's and check's time, slowest first, as a table with a bar beside each:
    a chart of twenty names cost a tenth of a second to draw and shows nothing more."""
    if not timings:
        return ""
    items = sorted(timings.items(), key=lambda kv: -kv[1])
    longest = max(items[0][1], 1e-9)
    out = [
        "<h2>Time</h2>",
        '<table class="timings"><tr><th>phase or check</th><th>s</th><th></th></tr>',
    ]
    for name, seconds in items:
        width = max(0.5, 100 * seconds / longest)
        out.append(
            f"<tr><td>{html.escape(name)}</td><td class='num'>{seconds:.3f}</td>"
            f"<td class='bar'><span style='width: {width:.1f}%'></span></td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)
