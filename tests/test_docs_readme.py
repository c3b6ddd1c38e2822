"""The README's commands run (the quickstart at its own small size), and every document's blocks are either run
by a test or say why not (tests/doc_blocks.py)."""

import re

import pytest
from doc_blocks import ROOT, blocks, run_document

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_is_a_front_door_of_at_most_300_lines_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for document in DOCUMENTS + [ROOT / "benchmarks" / "RESULTS.md", ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
            if not target.startswith("http"):
                assert (document.parent / target).exists(), f"{document.name}: broken link {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_command_block_is_run_or_says_why_not(document):
    found = blocks(document)
    for block in found:
        assert block.not_run is None or block.not_run.strip(), f"{document.name}:{block.line}"
        if block.not_run is None:
            block.runnable_code()  # every replace directive matches
    assert found, f"{document.name} shows no command"


def test_the_readme_commands_run(tmp_path):
    """The quickstart picks with the bundled shrec-ucaps: its picks score as a trained model's."""
    done = run_document(ROOT / "README.md", tmp_path)
    assert sum(line.endswith(" ran") for line in done) >= 3, done
    assert (tmp_path / "example" / "report.png").is_file() and (tmp_path / "picks.star").is_file()
    from keras_ucaps.classes import ClassRegistry
    from keras_ucaps.evaluation.matching import evaluate_tables
    from keras_ucaps.io import read_particles

    truth, picks = (read_particles(tmp_path / "example" / name) for name in ("tomo_particles.csv", "picks.csv"))
    scores = evaluate_tables(truth, picks, ClassRegistry.load(tmp_path / "example" / "classes.json"), 10.0)
    assert scores["micro"]["f1"] > 0.3  # a trained model, not chance
