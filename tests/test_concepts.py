import json

import pytest
from shardkit import write_caption_parquet
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.concepts import Concept, ConceptSet, ConceptSetError, concept_id, load_concepts
from freqscan.query import run_query


def test_paper_set_has_the_papers_4070_concepts_with_descriptions():
    concepts = load_concepts()
    assert len(concepts) == 4070
    assert concepts.source == "paper"
    first = concepts.concepts[0]
    assert first.name == "1991 Volkswagen Golf Hatchback"
    assert first.datasets == ("stanfordcars",)
    assert first.descriptions[0] == "a photo of a 1991 Volkswagen Golf Hatchback."
    assert sum(1 for c in concepts if c.descriptions) == 2449
    assert len({c.id for c in concepts}) == 4070


def test_ids_are_stable_and_independent_of_the_set():
    assert concept_id("dog") == concept_id("dog")
    assert concept_id("dog") != concept_id("Dog")
    small = ConceptSet((Concept("dog"), Concept("cat")), "a")
    large = ConceptSet((Concept("zebra"), Concept("cat"), Concept("dog")), "b")
    assert {c.name: c.id for c in small} == {c.name: c.id for c in large if c.name != "zebra"}
    assert 0 <= concept_id("dog") < 2**63


def test_content_hash_ignores_order_and_sees_descriptions():
    a = ConceptSet((Concept("dog"), Concept("cat")), "a")
    b = ConceptSet((Concept("cat"), Concept("dog")), "b")
    c = ConceptSet((Concept("cat"), Concept("dog", descriptions=("a dog",))), "c")
    assert a.content_hash == b.content_hash
    assert a.content_hash != c.content_hash
    assert load_concepts().content_hash == load_concepts().content_hash


def test_txt_csv_json_files(tmp_path):
    (tmp_path / "c.txt").write_text("# benchmark\ndog\n\n  golden retriever \n")
    assert [c.name for c in load_concepts(str(tmp_path / "c.txt"))] == ["dog", "golden retriever"]
    # The paper's Let-it-Wag list quotes each name; a lone or inner quote is part of it.
    (tmp_path / "q.txt").write_text(
        '"English_Setter"\n\'A310\'\n"dog\n\'s-Hertogenbosch\nthe "best" cat\n""\n'
    )
    assert [c.name for c in load_concepts(str(tmp_path / "q.txt"))] == [
        "English_Setter",
        "A310",
        '"dog',
        "'s-Hertogenbosch",
        'the "best" cat',
    ]

    (tmp_path / "c.csv").write_text("concept,datasets\nT-shirt,fashion;t2i\nApple,\n")
    got = load_concepts(str(tmp_path / "c.csv"))
    assert [(c.name, c.datasets) for c in got] == [("T-shirt", ("fashion", "t2i")), ("Apple", ())]

    (tmp_path / "list.json").write_text(
        json.dumps(["cat", {"concept": "dog", "descriptions": ["a dog."]}])
    )
    got = load_concepts(str(tmp_path / "list.json"))
    assert [(c.name, c.descriptions) for c in got] == [("cat", ()), ("dog", ("a dog.",))]

    # The paper's gpt_descriptions layout: {name: {name: [descriptions]}}.
    (tmp_path / "gpt.json").write_text(
        json.dumps({"apple_pie": {"apple_pie": ["a photo of a apple_pie."]}})
    )
    got = load_concepts(str(tmp_path / "gpt.json"))
    assert got.concepts == (Concept("apple_pie", (), ("a photo of a apple_pie.",)),)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("c.txt", "dog\n# a comment\ngolden retriever\n"),
        ("c.csv", "concept,datasets\ndog,pets\ngolden retriever,\n"),
        ("c.json", json.dumps([{"concept": "dog", "datasets": ["pets"]}, "golden retriever"])),
        ("d.json", json.dumps({"dog": ["a dog."], "golden retriever": []})),
    ],
)
def test_a_byte_order_mark_is_not_part_of_the_first_concept(tmp_path, name, content):
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    plain.mkdir()
    marked.mkdir()
    (plain / name).write_text(content, encoding="utf-8")
    (marked / name).write_text(content, encoding="utf-8-sig")  # as Windows editors save
    assert (marked / name).read_bytes()[:3] == b"\xef\xbb\xbf"
    without, with_mark = load_concepts(str(plain / name)), load_concepts(str(marked / name))
    assert [c.name for c in with_mark] == ["dog", "golden retriever"]
    assert with_mark.concepts == without.concepts
    assert with_mark.content_hash == without.content_hash
    assert with_mark.by_name("dog").id == concept_id("dog")


def test_a_count_with_byte_order_marks_counts_and_shows_the_first_concept(tmp_path, ray_local):
    # The first caption, too, comes from a Windows editor: spaCy would read "\ufeffdog" as a number.
    captions = ["\ufeffdog on a sofa".encode(), b"a dog in the park", b"two dogs", b"a cat"]
    write_caption_parquet(tmp_path / "in.parquet", captions)
    words = "dog\ncat\nsofa\n"
    (tmp_path / "plain.txt").write_text(words, encoding="utf-8")
    (tmp_path / "bom.txt").write_text(words, encoding="utf-8-sig")
    outs = {}
    for name in ("plain", "bom"):
        outs[name] = str(tmp_path / f"out-{name}")
        count = ["count", "--input", str(tmp_path / "in.parquet"), "--format", "parquet"]
        count += ["--out", outs[name], "--concepts", str(tmp_path / f"{name}.txt")]
        result = CliRunner().invoke(app, [*count, "--method", "paper", "--workers", "1"])
        assert result.exit_code == 0, result.output

    def counted(out: str) -> dict:
        sql = "SELECT concept, concept_id, text_count FROM frequencies ORDER BY concept"
        return {
            "rows": run_query(out, sql).to_pylist(),
            "hash": run_query(out, "SELECT concept_set_hash FROM runs").column(0).to_pylist(),
        }

    assert counted(outs["bom"]) == counted(outs["plain"])
    assert counted(outs["bom"]) == {
        "rows": [
            {"concept": "cat", "concept_id": concept_id("cat"), "text_count": 1},
            {"concept": "dog", "concept_id": concept_id("dog"), "text_count": 3},
            {"concept": "sofa", "concept_id": concept_id("sofa"), "text_count": 1},
        ],
        "hash": [load_concepts(str(tmp_path / "plain.txt")).content_hash],
    }
    shown = CliRunner().invoke(app, ["show", outs["bom"], "dog", "--examples", "3"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())  # rich wraps lines at the terminal's width
    assert "text_count 3 of 4 samples" in text
    assert "in.parquet/0 dog on a sofa" in text and "\ufeff" not in text


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("dupes.txt", "dog\ncat\ndog\n", "duplicate concept names: 'dog'"),
        ("empty.txt", "# nothing\n", "the concept set is empty"),
        ("nocol.csv", "name2,x\na,b\n", "csv needs a 'concept' column"),
        ("bad.json", "{", "invalid JSON"),
        ("num.json", "[1]", "expected a name or an object"),
        ("c.yaml", "dog", "unknown concept file type '.yaml'"),
    ],
)
def test_bad_concept_files_are_refused_clearly(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConceptSetError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_concepts(str(tmp_path / name))


def test_missing_concept_file(tmp_path):
    with pytest.raises(ConceptSetError, match="concept file not found"):
        load_concepts(str(tmp_path / "nope.txt"))
