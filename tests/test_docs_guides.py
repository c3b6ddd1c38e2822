"""Each guide in docs/ runs as a user would paste it (tests/doc_blocks.py: small-size variants where the real
command is long)."""

import pytest
from doc_blocks import ROOT, run_document


@pytest.mark.parametrize("document", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.stem)
def test_a_guides_commands_run(document, tmp_path):
    done = run_document(document, tmp_path)
    assert any(line.endswith(" ran") for line in done), done
