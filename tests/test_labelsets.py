"""Label sets and class metadata come from the vendored reference data, exactly."""

import json

import numpy as np
import pytest

from janus.data import labelsets
from janus.data.reference import load_json


def test_named_sets_match_reference():
    ref = load_json("janus_label_sets.json")
    assert labelsets.resolve_label_set("in1000").tolist() == list(range(1000))
    assert labelsets.resolve_label_set("in100").tolist() == sorted(ref["in100"])
    assert labelsets.resolve_label_set("in100_dogs").tolist() == list(range(151, 251))
    for i in range(1, 10):
        s = labelsets.resolve_label_set(f"in100_rand_{i:02d}")
        assert s.tolist() == sorted(ref[f"in100_rand_{i:02d}"]) and len(s) == 100
    assert labelsets.resolve_label_set("mini10").tolist() == [2, 6, 8, 13, 18, 19, 22, 23, 76, 84]
    assert set(labelsets.LABEL_SET_NAMES) >= {"in1000", "in100", "in100_dogs", "mini10"}


def test_result_is_a_copy():
    a = labelsets.resolve_label_set("in100")
    a[0] = 999
    assert labelsets.resolve_label_set("in100")[0] == 2


def test_label_set_files(tmp_path):
    j = tmp_path / "set.json"
    j.write_text(json.dumps([5, 3, 900]))
    assert labelsets.resolve_label_set(j).tolist() == [3, 5, 900]
    t = tmp_path / "set.txt"
    t.write_text("7\n# comment\n1\n\n")
    assert labelsets.resolve_label_set(str(t)).tolist() == [1, 7]
    bad = tmp_path / "bad.txt"
    bad.write_text("1\n1000\n")
    with pytest.raises(ValueError, match="outside"):
        labelsets.resolve_label_set(bad)
    dup = tmp_path / "dup.txt"
    dup.write_text("4\n4\n")
    with pytest.raises(ValueError, match="duplicate"):
        labelsets.resolve_label_set(dup)


def test_unknown_label_set_lists_names():
    with pytest.raises(ValueError, match="in100_dogs") as e:
        labelsets.resolve_label_set("in101")
    assert "in101" in str(e.value)


def test_label_set_given_as_indices_or_mask():
    assert labelsets.resolve_label_set([7, 3]).tolist() == [3, 7]
    mask = labelsets.class_mask([3, 7])
    assert labelsets.resolve_label_set(mask).tolist() == [3, 7]
    with pytest.raises(ValueError, match="outside"):
        labelsets.resolve_label_set([3, 1000])
    with pytest.raises(ValueError, match="shape"):
        labelsets.resolve_label_set(mask[:10])


def test_class_mask():
    m = labelsets.class_mask([0, 5, 999])
    assert m.dtype == bool and m.shape == (1000,) and m.sum() == 3 and m[5] and not m[4]
    with pytest.raises(ValueError):
        labelsets.class_mask([1000])


def test_class_metadata():
    names = labelsets.class_names("clip")
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish"
    assert len(labelsets.class_names("wordnet")) == 1000
    syn = labelsets.synonyms()
    assert len(syn) == 1000 and "Tinca tinca" in syn[0]
    wnids = labelsets.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[0] == "n01440764" and wnids == sorted(wnids)
    assert labelsets.wnid_to_index()["n01440764"] == 0


def test_class_names_file(tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("\n".join(f"c{i}" for i in range(1000)))
    assert labelsets.class_names(str(f))[999] == "c999"
    f.write_text("a\nb\n")
    with pytest.raises(ValueError, match="expected 1000"):
        labelsets.class_names(str(f))


def test_shift_sets_and_in100_intersections():
    r, a, on = (labelsets.shift_set_classes(k) for k in ("r", "a", "objectnet"))
    assert (len(r), len(a), len(on)) == (200, 200, 125)
    in100 = labelsets.resolve_label_set("in100")
    # the reference README's counts for the JANuS IN100 label set
    assert len(np.intersect1d(in100, r)) == 36
    assert len(np.intersect1d(in100, a)) == 37
    assert len(np.intersect1d(in100, on)) == 14
    assert len(labelsets.objectnet_folder_map()) == 113
    with pytest.raises(ValueError):
        labelsets.shift_set_classes("v2")


def test_openimages_map_and_templates():
    m = labelsets.openimages_map()
    assert m["/m/01wb7"] == 497 and all(0 <= v < 1000 for v in m.values())
    assert len(labelsets.zeroshot_templates("openai80")) == 80
    assert len(labelsets.zeroshot_templates("openai7")) == 7
    assert labelsets.zeroshot_templates("single") == ["a photo of a {}."]
    with pytest.raises(ValueError):
        labelsets.zeroshot_templates("nope")


def test_random_label_sets_are_nested_in_k_and_deterministic():
    sizes = (1, 100, 200, 500, 1000)
    for seed in (0, 7):
        sets = [set(labelsets.resolve_label_set(f"random:{k}:{seed}").tolist()) for k in sizes]
        assert [len(s) for s in sets] == list(sizes)
        assert all(small <= big for small, big in zip(sets, sets[1:]))
    assert sets[-1] == set(range(1000))
    assert not np.array_equal(
        labelsets.resolve_label_set("random:100:0"), labelsets.resolve_label_set("random:100:1")
    )
    # the ranking is a hash of (seed, wnid): the same in every process and numpy version
    again = labelsets._random_set("random:100:0")
    assert again == labelsets.resolve_label_set("random:100:0").tolist()


def test_random_label_sets_within_a_base_set():
    mini = set(labelsets.resolve_label_set("mini25").tolist())
    nested = [
        set(labelsets.resolve_label_set(f"random:{k}:0:mini25").tolist()) for k in (5, 10, 25)
    ]
    assert [len(s) for s in nested] == [5, 10, 25]
    assert nested[0] <= nested[1] <= nested[2] == mini


@pytest.mark.parametrize(
    "spec, match",
    [
        ("random:0:0", r"K=0 must be in \[1, 1000\]"),
        ("random:26:0:mini25", r"K=26 must be in \[1, 25\] \(mini25\)"),
        ("random:ten:0", "integers K and SEED"),
        ("random:10", "expected random:K:SEED"),
        ("random:10:0:nope", "BASE 'nope' is not one of"),
    ],
)
def test_random_label_set_errors_name_the_value(spec, match):
    with pytest.raises(ValueError, match=match):
        labelsets.resolve_label_set(spec)


def test_describe_reports_shift_set_intersections(capsys):
    # the named set's row matches the reference counts (test above); random sets get the same row
    assert labelsets.describe("in100") == {
        "label_set": "in100",
        "classes": 100,
        "r": 36,
        "a": 37,
        "objectnet": 14,
    }
    row = labelsets.describe("random:200:0")
    cls = labelsets.resolve_label_set("random:200:0")
    assert row["classes"] == 200
    for name in ("r", "a", "objectnet"):
        assert row[name] == len(np.intersect1d(cls, labelsets.shift_set_classes(name)))
    assert labelsets.describe("random:1000:3") | {"label_set": "in1000"} == labelsets.describe(
        "in1000"
    )
    assert labelsets.main(["random:200:0"]) == 0
    assert json.loads(capsys.readouterr().out) == row
    assert labelsets.main(["random:2000:0"]) == 2
    assert "K=2000" in capsys.readouterr().err
