"""A case's link graph as an SVG: well-formed, self-contained, escaped, the same every time."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.graph import Edge, Node, link_graph_svg

SVG = "{http://www.w3.org/2000/svg}"
SHAPES = {f"{SVG}circle", f"{SVG}rect", f"{SVG}polygon"}
HOSTILE = "<script>&\"'"


def gang() -> tuple[list[Node], list[Edge]]:
    """Six identities on one device and one address, opened at two outlets by one agent."""
    nodes = [
        Node(f"identity:{n:02d}", "identity", f"6201**********{1200 + n}", n % 3, "high")
        for n in range(6)
    ]
    nodes += [
        Node("device:ab12", "device", "device ab12…", alerts=6, severity="high"),
        Node("address:77f0", "address", "address 甘肃兰州城关区…"),
        Node("outlet:GS-LZ-001", "outlet", "outlet GS-LZ-001"),
        Node("outlet:GS-LZ-007", "outlet", "outlet GS-LZ-007"),
        Node("agent:9c3e", "agent", "agent 9c3e"),
    ]
    edges = [Edge("agent:9c3e", f"outlet:GS-LZ-00{n}", "agent") for n in (1, 7)]
    for n in range(6):
        person = f"identity:{n:02d}"
        edges += [
            Edge(person, "device:ab12", "device", events=2),
            Edge(person, "address:77f0", "address"),
            Edge(person, "outlet:GS-LZ-001" if n < 3 else "outlet:GS-LZ-007", "outlet"),
        ]
    return nodes, edges


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return root


def drawn_nodes(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "node"]


def drawn_links(root: ET.Element) -> list[ET.Element]:
    return [line for line in root.iter(f"{SVG}line") if line.get("class") == "link"]


def title(element: ET.Element) -> str:
    found = element.find(f"{SVG}title")
    assert found is not None and found.text is not None
    return found.text


def bounds(shape: ET.Element) -> tuple[float, float, float, float]:
    """left, top, right, bottom of a circle, rect or polygon."""
    if shape.tag == f"{SVG}circle":
        x, y, r = (float(shape.attrib[a]) for a in ("cx", "cy", "r"))
        return x - r, y - r, x + r, y + r
    if shape.tag == f"{SVG}rect":
        x, y, w, h = (float(shape.attrib[a]) for a in ("x", "y", "width", "height"))
        return x, y, x + w, y + h
    points = [tuple(map(float, p.split(","))) for p in shape.attrib["points"].split()]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def assert_self_contained(svg: str) -> None:
    lowered = svg.lower()
    for banned in ("href", "<script", "<style", "style=", "url(", "<image", "<foreignobject"):
        assert banned not in lowered, banned
    # The namespace is the only address in it.
    assert re.findall(r"\w+://[^\"\s]*", svg) == ["http://www.w3.org/2000/svg"]


def assert_inside(svg: str) -> None:
    root = parse(svg)
    _, _, width, height = map(float, root.attrib["viewBox"].split())
    for g in drawn_nodes(root):
        (shape,) = [child for child in g if child.tag in SHAPES]
        left, top, right, bottom = bounds(shape)
        assert 0 <= left <= right <= width and 0 <= top <= bottom <= height, g.get("data-id")


# ---------------------------------------------------------------- the gang


def test_the_gang_is_drawn_with_the_device_and_address_shared_by_all_six() -> None:
    nodes, edges = gang()
    svg = link_graph_svg(nodes, edges)
    root = parse(svg)
    degree: Counter[str] = Counter()
    for line in drawn_links(root):
        degree.update((line.attrib["data-source"], line.attrib["data-target"]))
    assert degree["device:ab12"] == 6
    assert degree["address:77f0"] == 6
    assert degree["agent:9c3e"] == 2
    assert title(root) == "Link graph: 11 entities, 20 links"
    assert root.attrib["aria-label"] == title(root)
    assert root.attrib["role"] == "img"
    assert_self_contained(svg)
    assert_inside(svg)


def test_a_node_tells_on_hover_who_shares_it() -> None:
    root = parse(link_graph_svg(*gang()))
    hover = {g.attrib["data-id"]: title(g) for g in drawn_nodes(root)}
    assert hover["device:ab12"] == "device ab12…: shared by 6 identities; 6 alerts (highest high)"
    assert hover["outlet:GS-LZ-001"] == (
        "outlet GS-LZ-001: shared by 3 identities; linked to 1 agent"
    )
    assert hover["identity:01"] == (
        "identity 6201**********1201: linked to 1 address, 1 device, 1 outlet;"
        " 1 alert (highest high)"
    )


def test_links_to_what_identities_share_are_thicker() -> None:
    nodes, edges = gang()
    nodes.append(Node("contact:c1", "contact", "contact c1"))
    edges.append(Edge("identity:00", "contact:c1", "contact"))
    lines = {
        (line.attrib["data-source"], line.attrib["data-target"]): line
        for line in drawn_links(parse(link_graph_svg(nodes, edges)))
    }
    single = float(lines[("contact:c1", "identity:00")].attrib["stroke-width"])
    shared = float(lines[("address:77f0", "identity:00")].attrib["stroke-width"])
    assert shared > 1.5 * single
    assert title(lines[("device:ab12", "identity:00")]) == (
        "device: device ab12… and identity 6201**********1200, 2 events"
    )


# ---------------------------------------------------------------- the same bytes every time


def test_the_same_case_draws_the_same_bytes_whatever_the_order() -> None:
    nodes, edges = gang()
    first = link_graph_svg(nodes, edges)
    assert link_graph_svg(nodes, edges) == first
    rng = random.Random(7)
    for _ in range(5):
        shuffled_nodes, shuffled_edges = nodes[:], edges[:]
        rng.shuffle(shuffled_nodes)
        rng.shuffle(shuffled_edges)
        assert link_graph_svg(shuffled_nodes, shuffled_edges) == first
    flipped = [Edge(e.target, e.source, e.attr, e.events) for e in edges]
    assert link_graph_svg(nodes, flipped) == first


def test_two_nodes_with_one_id_draw_the_same_whatever_their_order() -> None:
    one, other = Node("x", "device", "device b"), Node("x", "device", "device a")
    edge = Edge("x", "y", "device")
    person = Node("y", "identity", "p")
    assert link_graph_svg([one, other, person], [edge]) == link_graph_svg(
        [other, one, person], [edge]
    )


# ---------------------------------------------------------------- escaping and containment


def test_labels_and_ids_are_escaped() -> None:
    nodes = [
        Node(f"identity:{HOSTILE}", "identity", HOSTILE, alerts=1, severity=HOSTILE),
        Node(f"device:{HOSTILE}", HOSTILE, f"device {HOSTILE}"),
    ]
    edges = [Edge(nodes[0].id, nodes[1].id, HOSTILE, events=3)]
    svg = link_graph_svg(nodes, edges)
    assert_self_contained(svg)
    root = parse(svg)
    assert {g.attrib["data-id"] for g in drawn_nodes(root)} == {n.id for n in nodes}
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {HOSTILE, f"device {HOSTILE}"} <= texts
    (line,) = drawn_links(root)
    assert line.attrib["data-attr"] == HOSTILE


def test_characters_that_xml_cannot_hold_are_replaced() -> None:
    nodes = [Node("a\x00", "identity", "bell\x07"), Node("b", "device", "device\x1b")]
    root = parse(link_graph_svg(nodes, [Edge("a\x00", "b", "device")]))
    assert {g.attrib["data-id"] for g in drawn_nodes(root)} == {"a\ufffd", "b"}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            # Ids XML can hold: those it cannot become U+FFFD, and two of them may look alike.
            st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=8),
            st.sampled_from(["identity", "device", "contact", "address", "outlet", "agent", "?"]),
            st.text(max_size=40),
            st.integers(-1, 20),
            st.sampled_from(["", "low", "medium", "high", "critical"]),
        ),
        max_size=25,
    ),
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(-1, 5)), max_size=60),
)
def test_any_graph_is_well_formed_self_contained_and_inside(
    rows: list[tuple[str, str, str, int, str]], pairs: list[tuple[int, int, int]]
) -> None:
    nodes = [Node(*row) for row in rows]
    ids = [node.id for node in nodes] + ["unknown"]
    edges = [Edge(ids[i % len(ids)], ids[j % len(ids)], "device", events) for i, j, events in pairs]
    svg = link_graph_svg(nodes, edges, max_nodes=20)
    assert_self_contained(svg)
    assert_inside(svg)
    drawn = Counter(g.attrib["data-id"] for g in drawn_nodes(parse(svg)))
    assert set(drawn.values()) <= {1}
    assert len(drawn) == min(len(set(ids) - {"unknown"}), 20)


# ---------------------------------------------------------------- shapes and layout


def test_every_node_is_drawn_once_as_one_shape_inside_the_picture() -> None:
    nodes, edges = gang()
    svg = link_graph_svg(nodes, edges, width=480, height=320)
    root = parse(svg)
    assert root.attrib["viewBox"] == "0 0 480 320"
    drawn = Counter(g.attrib["data-id"] for g in drawn_nodes(root))
    assert drawn == Counter(node.id for node in nodes)
    for g in drawn_nodes(root):
        assert len([child for child in g if child.tag in SHAPES]) == 1
    assert_inside(svg)


def test_kinds_have_shapes_of_their_own_and_a_legend() -> None:
    root = parse(link_graph_svg(*gang()))
    shapes = {
        g.attrib["data-kind"]: next(child.tag for child in g if child.tag in SHAPES)
        for g in drawn_nodes(root)
    }
    assert shapes["identity"] == f"{SVG}circle"
    assert shapes["device"] == f"{SVG}rect"
    assert shapes["outlet"] == f"{SVG}rect"
    assert shapes["address"] == shapes["agent"] == f"{SVG}polygon"
    legend = [g for g in root.iter(f"{SVG}g") if g.get("class") == "legend"]
    assert [title.text for g in legend for title in g.iter(f"{SVG}text")][:5] == [
        "identity",
        "device",
        "address",
        "outlet",
        "agent",
    ]


def test_nodes_do_not_overlap_and_labels_stay_in_the_picture() -> None:
    width = 400
    nodes = [
        Node(f"identity:{n:02d}", "identity", f"a label long enough {n:02d}") for n in range(12)
    ]
    edges = [
        Edge(f"identity:{n:02d}", f"identity:{(n + 1) % 12:02d}", "identity") for n in range(12)
    ]
    root = parse(link_graph_svg(nodes, edges, width=width, height=300))
    circles = [g.find(f"{SVG}circle") for g in drawn_nodes(root)]
    centres = [(float(c.attrib["cx"]), float(c.attrib["cy"])) for c in circles if c is not None]
    assert len(centres) == 12
    for i, (x1, y1) in enumerate(centres):
        for x2, y2 in centres[i + 1 :]:
            assert (x1 - x2) ** 2 + (y1 - y2) ** 2 > 18**2
    labels = [t for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
    assert len(labels) == 12
    for text in labels:
        assert text.text is not None
        font = float(text.attrib["font-size"])
        half = 0.6 * font * len(text.text) / 2
        assert half <= float(text.attrib["x"]) <= width - half
        assert font <= float(text.attrib["y"]) <= 300


# ---------------------------------------------------------------- odd graphs


def test_an_empty_graph_says_no_links() -> None:
    svg = link_graph_svg([], [Edge("a", "b", "device")])
    root = parse(svg)
    assert title(root) == "Link graph: 0 entities, 0 links"
    assert [t.text for t in root.iter(f"{SVG}text")] == ["no links"]
    assert_self_contained(svg)


def test_one_node_is_drawn_in_the_middle() -> None:
    svg = link_graph_svg([Node("identity:1", "identity", "only one")], [])
    root = parse(svg)
    assert title(root) == "Link graph: 1 entity, 0 links"
    (g,) = drawn_nodes(root)
    assert title(g) == "identity only one: no links"
    assert drawn_links(root) == []
    assert_inside(svg)


def test_unknown_ends_and_self_loops_are_left_out_and_duplicates_merged() -> None:
    nodes = [Node("identity:1", "identity", "p1"), Node("device:1", "device", "device 1")]
    edges = [
        Edge("identity:1", "device:1", "device", events=2),
        Edge("device:1", "identity:1", "device", events=3),
        Edge("identity:1", "identity:1", "identity"),
        Edge("identity:1", "device:gone", "device"),
        Edge("nobody", "device:1", "device"),
    ]
    root = parse(link_graph_svg(nodes, edges))
    (line,) = drawn_links(root)
    assert (line.attrib["data-source"], line.attrib["data-target"]) == ("device:1", "identity:1")
    assert title(line) == "device: device 1 and identity p1, 5 events"
    assert title(root) == "Link graph: 2 entities, 1 link"


def test_two_attributes_between_the_same_nodes_are_one_link() -> None:
    nodes = [Node("identity:1", "identity", "p1"), Node("identity:2", "identity", "p2")]
    edges = [
        Edge("identity:1", "identity:2", "contact"),
        Edge("identity:2", "identity:1", "address"),
    ]
    (line,) = drawn_links(parse(link_graph_svg(nodes, edges)))
    assert line.attrib["data-attr"] == "address contact"
    assert title(line) == "address, contact: identity p1 and identity p2, 2 events"


def test_beyond_max_nodes_the_most_linked_are_kept_and_the_title_counts_the_rest() -> None:
    hub = Node("device:hub", "device", "device hub")
    people = [Node(f"identity:{n:02d}", "identity", f"p{n}") for n in range(10)]
    loners = [Node(f"identity:lone{n}", "identity", f"lone {n}", alerts=9) for n in range(5)]
    edges = [Edge(p.id, hub.id, "device") for p in people]
    edges += [Edge("identity:00", "identity:01", "contact")]
    svg = link_graph_svg([*loners, *people, hub], edges, max_nodes=4)
    root = parse(svg)
    drawn = {g.attrib["data-id"] for g in drawn_nodes(root)}
    assert drawn == {"device:hub", "identity:00", "identity:01", "identity:02"}
    assert title(root) == "Link graph: 4 entities, 4 links (12 less linked entities left out)"
    assert len(drawn_links(root)) == 4


def test_max_nodes_defaults_to_80() -> None:
    nodes = [Node(f"identity:{n:03d}", "identity", f"p{n}") for n in range(90)]
    edges = [Edge(f"identity:{n:03d}", f"identity:{n + 1:03d}", "contact") for n in range(60)]
    svg = link_graph_svg(nodes, edges)
    root = parse(svg)
    assert len(drawn_nodes(root)) == 80
    assert title(root).endswith("(10 less linked entities left out)")
    assert_inside(svg)


@pytest.mark.parametrize(("width", "height"), [(200, 120), (200, 600), (1200, 120)])
def test_a_small_or_narrow_picture_still_holds_every_node(width: int, height: int) -> None:
    nodes, edges = gang()
    nodes.append(Node("x:1", "unknown kind", "x"))
    svg = link_graph_svg(nodes, edges, width, height)
    assert len(drawn_nodes(parse(svg))) == len(nodes)
    assert_inside(svg)


@pytest.mark.parametrize(
    ("width", "height", "max_nodes"), [(100, 480, 80), (720, 100, 80), (720, 480, 0)]
)
def test_a_picture_too_small_or_no_nodes_allowed_is_refused(
    width: int, height: int, max_nodes: int
) -> None:
    with pytest.raises(ValueError):
        link_graph_svg([], [], width, height, max_nodes=max_nodes)
