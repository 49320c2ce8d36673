"""A case's link graph as an inline SVG: which identities share which device, contact,
address, outlet or agent.

The console puts the SVG straight into its page, served with a strict
Content-Security-Policy: so the picture refers to nothing outside itself (no href, font,
image, script, style element or style attribute; colours are presentation attributes),
every text in it is escaped, and the same case draws the same bytes whatever order its
nodes and edges come in. The layout is force-directed (Fruchterman-Reingold, in numpy, from
a circle in id order), turned to lie along the picture, then nudged: nodes off the links
of others, shapes apart, and labels apart as far as the room allows.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

MAX_NODES = 80

# Okabe-Ito colours, told apart with every common colour-vision deficiency; each kind
# has a shape of its own too, so neither colour nor shape alone carries the kind. A link
# takes the colour of the kind its attribute names.
KINDS: Mapping[str, tuple[str, str]] = {
    "identity": ("circle", "#0072B2"),
    "device": ("square", "#E69F00"),
    "contact": ("diamond", "#56B4E9"),
    "address": ("triangle", "#009E73"),
    "outlet": ("rounded", "#CC79A7"),
    "agent": ("hexagon", "#D55E00"),
}
OTHER_KIND = ("circle", "#999999")
POLYGONS = {"diamond": (4, 90.0, 1.3), "triangle": (3, 90.0, 1.35), "hexagon": (6, 0.0, 1.15)}
MIXED_LINK = "#555555"
BASE_SIZE = {"identity": 9.0, "outlet": 9.0, "agent": 10.0}
SMALL_SIZE = 7.5
# The ring around an identity, darker and wider as the highest severity of its alerts
# rises: a ramp of grey reads the same to every eye.
SEVERITY_RING: Mapping[str, tuple[str, float]] = {
    "low": ("#BBBBBB", 2.0),
    "medium": ("#888888", 2.5),
    "high": ("#444444", 3.0),
    "critical": ("#000000", 4.0),
}

ITERATIONS = 200
GRAVITY = 0.3
START_TEMPERATURE = 0.2
SEPARATION_ROUNDS = 40
PARTING_ROUNDS = 30
# How far a shape reaches beyond its size, at most (a rounded rectangle's half width).
SHAPE_REACH = 1.5
LINK_CLEARING_ROUNDS = 6
LINK_CLEARANCE = 12.0
STRETCH = 1.6
LONGEST_EDGE = 250.0
LABEL_CHARS = 26
LABEL_GAP = 3.0
MARGIN = 12.0
LEGEND_FONT = 10.0
LEGEND_ROW = 16.0

# XML 1.0 forbids most control characters, even as references: they become U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class Node:
    """An entity of a case: an identity, or something identities share."""

    id: str
    kind: str
    label: str
    alerts: int = 0
    severity: str = ""


@dataclass(frozen=True, slots=True)
class Edge:
    """A link between two entities, by the attribute they share (`attr`)."""

    source: str
    target: str
    attr: str
    events: int = 1


@dataclass(frozen=True, slots=True)
class _Link:
    """The edges between two drawn nodes, merged: `a` < `b`, attributes sorted."""

    a: str
    b: str
    attrs: tuple[str, ...]
    events: int


@dataclass(frozen=True, slots=True)
class _Graph:
    nodes: tuple[Node, ...]
    links: tuple[_Link, ...]
    left_out: int


@dataclass(frozen=True, slots=True)
class _Placed:
    """A node as drawn: where, how large, its label and where that goes (the middle of its
    baseline), and how many nodes of each kind it links."""

    node: Node
    x: float
    y: float
    size: float
    label: str
    label_x: float
    label_y: float
    linked: Mapping[str, int]

    @property
    def shared(self) -> bool:
        return self.node.kind != "identity" and self.linked.get("identity", 0) >= 2


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where the nodes may go, in pixels; the legend lies below `bottom`."""

    left: float
    top: float
    right: float
    bottom: float
    font: float


def link_graph_svg(
    nodes: Sequence[Node],
    edges: Sequence[Edge],
    width: int = 720,
    height: int = 480,
    *,
    max_nodes: int = MAX_NODES,
) -> str:
    """The SVG of `nodes` linked by `edges`, the `max_nodes` most linked if there are more.

    Edges to unknown nodes and self-loops are ignored; the edges between two nodes, either
    way round, are drawn as one link, their events summed. Characters that XML cannot hold
    (control characters) are drawn as U+FFFD.
    """
    if width < 200 or height < 120:
        raise ValueError(f"a link graph needs at least 200x120 pixels, not {width}x{height}")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be at least 1, not {max_nodes}")
    graph = _prepare(nodes, edges, max_nodes)
    summary = _summary(graph)
    body = _draw_graph(graph, width, height) if graph.nodes else [_no_links(width, height)]
    return "\n".join([_open_svg(width, height, summary), *body, "</svg>"])


# ---------------------------------------------------------------- the graph drawn


def _prepare(nodes: Iterable[Node], edges: Iterable[Edge], max_nodes: int) -> _Graph:
    by_id: dict[str, Node] = {}
    for node in sorted(nodes, key=_node_order):
        by_id.setdefault(node.id, node)
    links = _merge(edges, by_id)
    degree: Counter[str] = Counter()
    for link in links:
        degree.update((link.a, link.b))
    ranked = sorted(by_id, key=lambda i: (-degree[i], -by_id[i].alerts, i))
    kept = set(ranked[:max_nodes])
    return _Graph(
        nodes=tuple(by_id[i] for i in sorted(kept)),
        links=tuple(link for link in links if link.a in kept and link.b in kept),
        left_out=len(by_id) - len(kept),
    )


def _node_order(node: Node) -> tuple[str, str, str, int, str]:
    # Of two nodes with one id the first in this order is drawn, whatever order they came in.
    return (node.id, node.kind, node.label, node.alerts, node.severity)


def _merge(edges: Iterable[Edge], known: Mapping[str, Node]) -> list[_Link]:
    events: dict[tuple[str, str], Counter[str]] = {}
    for edge in edges:
        if edge.source == edge.target or edge.source not in known or edge.target not in known:
            continue
        a, b = sorted((edge.source, edge.target))
        events.setdefault((a, b), Counter())[edge.attr] += max(edge.events, 0)
    return [
        _Link(a, b, tuple(sorted(counts)), sum(counts.values()))
        for (a, b), counts in sorted(events.items())
    ]


def _summary(graph: _Graph) -> str:
    text = f"Link graph: {_count(len(graph.nodes), 'entity')}, {_count(len(graph.links), 'link')}"
    if graph.left_out:
        text += f" ({_count(graph.left_out, 'less linked entity')} left out)"
    return text


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    if noun.endswith("y"):
        return f"{n} {noun[:-1]}ies"
    return f"{n} {noun}{'es' if noun.endswith('ss') else 's'}"


def _open_svg(width: int, height: int, summary: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_text(summary)}" '
        f'font-family="sans-serif">\n<title>{_text(summary)}</title>\n'
        f'<rect width="{width}" height="{height}" fill="#FFFFFF"/>'
    )


def _no_links(width: int, height: int) -> str:
    return (
        f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" '
        f'font-size="14" fill="#666666">no links</text>'
    )


def _draw_graph(graph: _Graph, width: int, height: int) -> list[str]:
    legend, legend_height = _legend(graph.nodes, width, height)
    if legend_height > height / 3:  # a narrow picture keeps its room for the graph
        legend, legend_height = [], 0.0
    font = 11.0 if len(graph.nodes) <= 30 else 10.0 if len(graph.nodes) <= 60 else 9.0
    frame = _Frame(MARGIN, MARGIN, width - MARGIN, height - legend_height - MARGIN / 2, font)
    placed = _place(graph, frame)
    at = {p.node.id: p for p in placed}
    # Links to shared nodes last, drawn over the others.
    links = sorted(graph.links, key=lambda link: at[link.a].shared or at[link.b].shared)
    return [
        *(_draw_link(link, at[link.a], at[link.b]) for link in links),
        *(_draw_node(p) for p in placed),
        *(_draw_label(p, font) for p in placed),
        *legend,
    ]


def _place(graph: _Graph, frame: _Frame) -> list[_Placed]:
    kinds = {node.id: node.kind for node in graph.nodes}
    linked: dict[str, Counter[str]] = {node.id: Counter() for node in graph.nodes}
    for link in graph.links:
        linked[link.a][kinds[link.b]] += 1
        linked[link.b][kinds[link.a]] += 1
    sizes = np.array([_size(node, linked[node.id]) for node in graph.nodes])
    labels = [_short(node.label) for node in graph.nodes]
    widths = np.array([_text_width(label, frame.font) for label in labels])
    index = {node.id: i for i, node in enumerate(graph.nodes)}
    pairs = [(index[link.a], index[link.b]) for link in graph.links]
    aspect = (frame.right - frame.left) / (frame.bottom - frame.top)
    pos = _fit(_level(_spring_layout(len(graph.nodes), pairs, aspect)), sizes, frame)
    pos = _separate(_clear_links(pos, pairs, sizes), sizes, widths, frame)
    pos = _part_shapes(pos, sizes, frame)
    spots = _label_spots(pos, sizes, widths, frame)
    return [
        _Placed(node, x, y, size, label, label_x, label_y, linked[node.id])
        for node, (x, y), size, label, (label_x, label_y) in zip(
            graph.nodes, pos.tolist(), sizes.tolist(), labels, spots.tolist(), strict=True
        )
    ]


def _size(node: Node, linked: Mapping[str, int]) -> float:
    """Half the size of a node's shape: by kind, and larger with more alerts or, for what
    identities share, with more identities sharing it."""
    weight = node.alerts if node.kind == "identity" else max(node.alerts, linked.get("identity", 0))
    return BASE_SIZE.get(node.kind, SMALL_SIZE) + math.sqrt(min(max(weight, 0), 9))


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def _text_width(text: str, font: float) -> float:
    # Without the font's metrics: an average sans-serif advance, and a full em for CJK.
    return font * sum(1.0 if unicodedata.east_asian_width(c) in "WF" else 0.6 for c in text)


# ---------------------------------------------------------------- layout


def _spring_layout(count: int, pairs: Sequence[tuple[int, int]], aspect: float) -> Array:
    """Fruchterman-Reingold in a frame of `aspect`:1 from a circle, in units of the ideal
    link length, with a pull to the centre that keeps the parts of the graph together."""
    if count == 1:
        return np.zeros((1, 2))
    angle = 2 * math.pi * np.arange(count) / count
    x, y = aspect * np.cos(angle), np.sin(angle)
    a, b = np.array(pairs, dtype=np.intp).reshape(-1, 2).T
    k = 0.8 * math.sqrt(4 * aspect / count)
    for step in range(ITERATIONS):
        # Forces per unit of distance: repulsion k²/d between all, attraction d²/k along links.
        dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
        repulsion = k * k / np.maximum(dx * dx + dy * dy, 1e-6)
        link_x, link_y = x[a] - x[b], y[a] - y[b]
        attraction = np.hypot(link_x, link_y) / k
        pull_x = np.bincount(a, attraction * link_x, count) - np.bincount(
            b, attraction * link_x, count
        )
        pull_y = np.bincount(a, attraction * link_y, count) - np.bincount(
            b, attraction * link_y, count
        )
        move_x = (repulsion * dx).sum(axis=1) - pull_x - GRAVITY * x / k
        move_y = (repulsion * dy).sum(axis=1) - pull_y - GRAVITY * y / k
        length = np.maximum(np.hypot(move_x, move_y), 1e-9)
        temperature = START_TEMPERATURE * aspect * (1 - step / ITERATIONS) + 0.002
        step_size = np.minimum(length, temperature) / length
        x, y = x + move_x * step_size, y + move_y * step_size
    return np.column_stack([x, y]) / k


def _level(pos: Array) -> Array:
    """The layout turned so that its longer axis lies along the (wider) frame."""
    centred = pos - pos.mean(axis=0)
    if len(pos) < 3:
        return centred
    _, axes = np.linalg.eigh(np.cov(centred.T))
    turned = centred @ axes[:, ::-1]
    # An eigenvector's sign is arbitrary: fix it by the first node, whatever the library.
    return turned * np.where(turned[0] < 0, -1.0, 1.0)


def _clear_links(pos: Array, pairs: Sequence[tuple[int, int]], sizes: Array) -> Array:
    """Moves each node off the links of others that pass across its shape, so that a link
    is not read as two links through it."""
    if not pairs:
        return pos
    ends = np.array(pairs)
    others = np.ones((len(pos), len(pairs)), dtype=bool)
    others[ends[:, 0], np.arange(len(pairs))] = False
    others[ends[:, 1], np.arange(len(pairs))] = False
    clearance = (sizes + LINK_CLEARANCE)[:, None]
    for _ in range(LINK_CLEARING_ROUNDS):
        start, end = pos[ends[:, 0]], pos[ends[:, 1]]
        along = end - start
        lengths = np.maximum((along**2).sum(axis=1), 1e-9)
        offset = pos[:, None, :] - start[None, :, :]
        t = np.clip((offset * along[None, :, :]).sum(axis=2) / lengths, 0, 1)
        away = offset - t[..., None] * along[None, :, :]
        distance = np.maximum(np.hypot(away[..., 0], away[..., 1]), 1e-6)
        close = others & (distance < clearance) & (t > 0) & (t < 1)
        if not close.any():
            break
        push = np.where(close, (clearance - distance) / distance, 0.0)
        pos = pos + (push[..., None] * away).sum(axis=1)
    return pos


def _fit(pos: Array, sizes: Array, frame: _Frame) -> Array:
    """The layout scaled into the frame with room for the shapes and labels: stretched
    somewhat to fill it, but with links no longer than `LONGEST_EDGE` pixels."""
    room = float(sizes.max())
    low = np.array([frame.left + room + 2 * frame.font, frame.top + room])
    high = np.array(
        [frame.right - room - 2 * frame.font, frame.bottom - room - LABEL_GAP - frame.font]
    )
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    fill = (high - low) / np.maximum(hi - lo, 1e-9)
    scale = np.minimum(fill, min(float(fill.min()) * STRETCH, LONGEST_EDGE))
    return (low + high) / 2 + (pos - (lo + hi) / 2) * scale


def _separate(pos: Array, sizes: Array, label_widths: Array, frame: _Frame) -> Array:
    """Pushes apart the boxes (a shape and its label below) that overlap, along the axis
    where they overlap least, for a few rounds; every shape stays in the frame."""
    below = (LABEL_GAP + frame.font) / 2
    half_x = np.maximum(sizes, label_widths / 2) + 3
    half_y = sizes + below + 2
    reach_x, reach_y = half_x[:, None] + half_x[None, :], half_y[:, None] + half_y[None, :]
    # Boxes on one spot part by their order, so that nothing else decides.
    tie = np.sign(np.arange(len(pos))[:, None] - np.arange(len(pos))[None, :])
    x, y = _clamp(pos[:, 0], pos[:, 1], sizes, frame)
    for _ in range(SEPARATION_ROUNDS):
        dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
        over_x, over_y = reach_x - np.abs(dx), reach_y - np.abs(dy)
        hit = (over_x > 0) & (over_y > 0)
        np.fill_diagonal(hit, False)
        if not hit.any():
            break
        share = 0.5 / np.maximum(hit.sum(axis=1), 1)
        along_x = hit & (over_x < over_y)
        push_x = np.where(along_x, over_x, 0) * np.where(dx != 0, np.sign(dx), tie)
        push_y = np.where(hit & ~along_x, over_y, 0) * np.where(dy != 0, np.sign(dy), tie)
        x, y = _clamp(x + share * push_x.sum(axis=1), y + share * push_y.sum(axis=1), sizes, frame)
    return np.column_stack([x, y])


def _part_shapes(pos: Array, sizes: Array, frame: _Frame) -> Array:
    """Pushes apart the shapes that still overlap: where there is not room for every label,
    there is room for every shape, and a shape hidden under another is a node lost."""
    reach = SHAPE_REACH * sizes + 2
    apart = reach[:, None] + reach[None, :]
    tie = np.sign(np.arange(len(pos))[:, None] - np.arange(len(pos))[None, :])
    x, y = pos[:, 0], pos[:, 1]
    for _ in range(PARTING_ROUNDS):
        dx, dy = x[:, None] - x[None, :], y[:, None] - y[None, :]
        distance = np.hypot(dx, dy)
        short = np.where(distance < apart, apart - distance, 0.0)
        np.fill_diagonal(short, 0.0)
        if not short.any():
            break
        unit_x = np.where(distance > 0, dx / np.maximum(distance, 1e-9), tie)
        unit_y = np.where(distance > 0, dy / np.maximum(distance, 1e-9), 0.0)
        x, y = _clamp(
            x + 0.5 * (short * unit_x).sum(axis=1),
            y + 0.5 * (short * unit_y).sum(axis=1),
            sizes,
            frame,
        )
    return np.column_stack([x, y])


def _label_spots(pos: Array, sizes: Array, widths: Array, frame: _Frame) -> Array:
    """Where each label goes: under its shape, or over it where that covers fewer shapes
    and labels (placed in id order) and fits in the picture; moved in from the sides."""
    low = frame.left - MARGIN / 2 + widths / 2
    x = np.minimum(np.maximum(pos[:, 0], low), frame.right + MARGIN / 2 - widths / 2)
    under = pos[:, 1] + sizes + LABEL_GAP + 0.8 * frame.font
    over = pos[:, 1] - sizes - LABEL_GAP - 0.2 * frame.font
    reach = SHAPE_REACH * sizes
    shapes = np.column_stack([pos - reach[:, None], pos + reach[:, None]])
    placed = np.full((len(pos), 4), np.nan)  # a label not yet placed covers nothing
    y = under.copy()
    for i in range(len(pos)):
        others = np.vstack([np.delete(shapes, i, axis=0), placed])
        under_box = _label_box(x[i], under[i], widths[i], frame.font)
        over_box = _label_box(x[i], over[i], widths[i], frame.font)
        above = over_box[1] >= 0 and _covered(over_box, others) < _covered(under_box, others)
        y[i], placed[i] = (over[i], over_box) if above else (under[i], under_box)
    return np.column_stack([x, y])


def _label_box(x: float, baseline: float, width: float, font: float) -> Array:
    return np.array([x - width / 2, baseline - 0.8 * font, x + width / 2, baseline + 0.2 * font])


def _covered(box: Array, boxes: Array) -> int:
    """How many of `boxes` (left, top, right, bottom) `box` overlaps."""
    return int(
        (
            (boxes[:, 0] < box[2])
            & (box[0] < boxes[:, 2])
            & (boxes[:, 1] < box[3])
            & (box[1] < boxes[:, 3])
        ).sum()
    )


def _clamp(x: Array, y: Array, sizes: Array, frame: _Frame) -> tuple[Array, Array]:
    return (
        np.clip(x, frame.left + sizes, frame.right - sizes),
        np.clip(y, frame.top + sizes, frame.bottom - sizes - LABEL_GAP - frame.font),
    )


# ---------------------------------------------------------------- drawing


def _draw_link(link: _Link, a: _Placed, b: _Placed) -> str:
    shared = a.shared or b.shared
    width = (2.5 if shared else 1.2) + 0.5 * min(math.log2(max(link.events, 1)), 4)
    colour = KINDS.get(link.attrs[0], OTHER_KIND)[1] if len(link.attrs) == 1 else MIXED_LINK
    title = f"{', '.join(link.attrs)}: {_name(a.node)} and {_name(b.node)}, "
    title += _count(link.events, "event")
    return (
        f'<line class="link" data-source="{_text(link.a)}" data-target="{_text(link.b)}" '
        f'data-attr="{_text(" ".join(link.attrs))}" x1="{a.x:.1f}" y1="{a.y:.1f}" '
        f'x2="{b.x:.1f}" y2="{b.y:.1f}" stroke="{colour}" stroke-width="{width:.1f}" '
        f'stroke-opacity="{0.9 if shared else 0.6}" stroke-linecap="round">'
        f"<title>{_text(title)}</title></line>"
    )


def _draw_node(p: _Placed) -> str:
    shape = _shape(p.node.kind, p.x, p.y, p.size, _paint(p.node))
    return (
        f'<g class="node" data-id="{_text(p.node.id)}" data-kind="{_text(p.node.kind)}">'
        f"{shape}<title>{_text(_describe(p))}</title></g>"
    )


def _paint(node: Node) -> str:
    fill = KINDS.get(node.kind, OTHER_KIND)[1]
    if node.kind != "identity":
        return f'fill="{fill}" stroke="#333333" stroke-width="1"'
    ring, ring_width = SEVERITY_RING.get(node.severity, ("#FFFFFF", 1.5))
    return f'fill="{fill}" stroke="{ring}" stroke-width="{ring_width:g}"'


def _shape(kind: str, x: float, y: float, size: float, paint: str) -> str:
    shape = KINDS.get(kind, OTHER_KIND)[0]
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{size:.1f}" {paint}/>'
    if shape in {"square", "rounded"}:
        half_width = size * (1.5 if shape == "rounded" else 1.0)
        corner = ' rx="3"' if shape == "rounded" else ""
        return (
            f'<rect x="{x - half_width:.1f}" y="{y - size:.1f}" width="{2 * half_width:.1f}" '
            f'height="{2 * size:.1f}"{corner} {paint}/>'
        )
    # Corners a little beyond `size`, so that a polygon looks as large as a square.
    sides, start, reach = POLYGONS[shape]
    corners = (
        (x + reach * size * math.cos(angle), y - reach * size * math.sin(angle))
        for angle in (math.radians(start + 360 * n / sides) for n in range(sides))
    )
    points = " ".join(f"{cx:.1f},{cy:.1f}" for cx, cy in corners)
    return f'<polygon points="{points}" {paint}/>'


def _draw_label(p: _Placed, font: float) -> str:
    return (
        f'<text x="{p.label_x:.1f}" y="{p.label_y:.1f}" text-anchor="middle" font-size="{font:g}" '
        f'fill="#1A1A1A" stroke="#FFFFFF" stroke-width="3" stroke-linejoin="round" '
        f'paint-order="stroke">{_text(p.label)}</text>'
    )


def _describe(p: _Placed) -> str:
    """A node's hover text: what it is, who shares it, what else it links, its alerts."""
    linked = Counter(p.linked)
    parts = []
    if p.node.kind != "identity" and linked["identity"]:
        verb = "shared by" if linked["identity"] >= 2 else "used by"
        parts.append(f"{verb} {_count(linked.pop('identity'), 'identity')}")
    others = [_count(n, kind) for kind, n in sorted(linked.items()) if n]
    if others:
        parts.append("linked to " + ", ".join(others))
    if p.node.alerts:
        highest = f" (highest {p.node.severity})" if p.node.severity else ""
        parts.append(f"{_count(p.node.alerts, 'alert')}{highest}")
    return f"{_name(p.node)}: {'; '.join(parts) or 'no links'}"


def _name(node: Node) -> str:
    return node.label if node.label.startswith(node.kind) else f"{node.kind} {node.label}"


def _legend(nodes: Sequence[Node], width: int, height: int) -> tuple[list[str], float]:
    """The kinds drawn and the two weights of link, in rows along the bottom, and their
    height."""
    drawn = {node.kind for node in nodes}
    marks = [kind for kind in KINDS if kind in drawn] + (["other"] if drawn - set(KINDS) else [])
    entries = [(mark, mark) for mark in marks]
    entries += [("shared by 2+ identities", "shared"), ("one identity", "single")]
    placed: list[tuple[float, int, str, str]] = []
    x, row = MARGIN, 0
    for text, mark in entries:
        advance = 34 + _text_width(text, LEGEND_FONT)
        if x + advance > width - MARGIN and x > MARGIN:
            x, row = MARGIN, row + 1
        placed.append((x, row, text, mark))
        x += advance
    top = height - (row + 1) * LEGEND_ROW - 4
    entries_drawn = [_legend_entry(x, top + r * LEGEND_ROW + 8, t, m) for x, r, t, m in placed]
    return entries_drawn, (row + 1) * LEGEND_ROW + 4


def _legend_entry(x: float, y: float, text: str, mark: str) -> str:
    if mark in {"shared", "single"}:
        stroke, opacity = (3.0, 0.9) if mark == "shared" else (1.2, 0.6)
        symbol = (
            f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{x + 14:.1f}" y2="{y:.1f}" '
            f'stroke="{MIXED_LINK}" stroke-width="{stroke:g}" stroke-opacity="{opacity:g}"/>'
        )
    else:
        symbol = _shape(mark, x + 7, y, 5.0, _paint(Node(id="", kind=mark, label="")))
    return (
        f'<g class="legend">{symbol}<text x="{x + 20:.1f}" y="{y + 3.5:.1f}" '
        f'font-size="{LEGEND_FONT:g}" fill="#333333">{_text(text)}</text></g>'
    )


def _text(value: str) -> str:
    return html.escape(_NOT_XML.sub("\ufffd", value), quote=True)
