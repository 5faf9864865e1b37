import json

import pytest

from freqscan.concepts import Concept, ConceptSet, ConceptSetError, concept_id, load_concepts


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
