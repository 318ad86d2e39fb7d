"""The stylesheet parses: a brace left open by a merge made every later rule apply only to narrow screens."""

from pathlib import Path

CSS = Path(__file__).resolve().parent.parent / "static" / "portal" / "portal.css"


def test_every_block_of_the_stylesheet_is_closed():
    depth = 0
    for number, line in enumerate(CSS.read_text().splitlines(), 1):
        depth += line.count("{") - line.count("}")
        assert depth >= 0, f"portal.css line {number} closes a block that was never opened"
        if line.startswith("@media"):
            assert depth == 1 or line.rstrip().endswith("}"), f"portal.css line {number}: @media inside a block"
    assert depth == 0, "portal.css leaves a block open: every rule after it would be scoped to it"
