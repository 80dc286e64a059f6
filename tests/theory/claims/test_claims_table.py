"""The README claims table is generated from the claims registry (every claim, with its kind)."""
from pathlib import Path

import pytest

from infra.errors import BadInput
from theory.claims import registry as claims
from theory.claims.table import BEGIN, END, markdown_table, replace_between_markers

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_claims_table_equals_the_generated_one():
    """Regenerate with `python -m theory claims --write-readme README.md` when this fails."""
    text = README.read_text(encoding="utf-8")
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == markdown_table().strip()


def test_generated_table_lists_every_registered_claim_with_a_known_kind():
    table = markdown_table()
    registry = claims.load_all()
    for item in registry.values():
        assert f"| `{item.id}` | {item.kind} |" in table
        assert item.kind in claims.KINDS


def test_rank_r_formulas_are_labelled_conjectures():
    registry = claims.load_all()
    for claim_id in ("rank-r-dense-dim", "rank-r-fills-iff", "conv-rank-r-dim", "rank-r-conjecture-random-search"):
        assert registry[claim_id].kind == "conjecture"
        assert "CONJECTURE" in registry[claim_id].statement


def test_missing_markers_are_a_clear_error():
    with pytest.raises(BadInput, match="markers"):
        replace_between_markers("no markers here", "table")


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind='guess'"):
        claims.claim("x-unknown-kind", "s", "m", kind="guess")
