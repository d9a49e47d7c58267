"""The shipped medical KB is complete and consistent; a broken KB fails with a key path."""

from __future__ import annotations

import copy
import dataclasses
import functools
from pathlib import Path

import pytest
import yaml

from cift.kb import Condition, KBError, KnowledgeBase, load_kb
from cift.kb.loader import SHIPPED_DIR

SHIPPED = SHIPPED_DIR / "medical.yaml"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# The conditions the project promises (spelled as in the brief; resolved by name or synonym).
REQUIRED = {
    "respiratory": [
        "Common cold",
        "Influenza",
        "COVID-19",
        "Pneumonia",
        "Bronchial asthma",
        "Acute bronchitis",
        "COPD",
        "Tuberculosis",
        "Sinusitis",
    ],
    "cardiovascular": [
        "Hypertension",
        "Angina",
        "Myocardial infarction",
        "Heart failure",
        "Varicose veins",
    ],
    "digestive": [
        "Gastroesophageal reflux disease",
        "Peptic ulcer disease",
        "Gastroenteritis",
        "Appendicitis",
        "Hemorrhoids",
        "Hepatitis (jaundice)",
        "Irritable bowel syndrome",
        "Cholecystitis",
    ],
    "infectious": ["Dengue", "Malaria", "Typhoid", "Chickenpox", "Measles"],
    "skin": [
        "Acne",
        "Psoriasis",
        "Impetigo",
        "Fungal skin infection",
        "Eczema",
        "Urticaria",
        "Drug reaction",
    ],
    "neuro_musculoskeletal": [
        "Migraine",
        "Tension headache",
        "Cervical spondylosis",
        "Arthritis (osteoarthritis)",
        "Gout",
        "Low back pain",
    ],
    "endocrine_renal": [
        "Diabetes mellitus type 2",
        "Hypothyroidism",
        "Urinary tract infection",
        "Kidney stones",
    ],
    "other": [
        "Otitis media",
        "Conjunctivitis",
        "Tonsillitis",
        "Strep throat",
        "Iron deficiency anaemia",
        "Anxiety disorder",
        "Depression",
        "Allergic rhinitis",
        "Stroke",
        "Pulmonary embolism",
        "Deep vein thrombosis",
        "Cellulitis",
        "Scabies",
        "Hyperthyroidism",
        "Vertigo",
        "BPPV",
        "Carpal tunnel syndrome",
        "Plantar fasciitis",
        "Sciatica",
        "Pancreatitis",
    ],
}
# Pairs the brief names explicitly; each must be listed in confusable_with (either direction).
KEY_PAIRS = [
    ("Common cold", "Influenza"),
    ("Common cold", "COVID-19"),
    ("Influenza", "COVID-19"),
    ("Gastroesophageal reflux disease", "Angina"),
    ("Migraine", "Tension headache"),
    ("Gastroenteritis", "Appendicitis"),
    ("Eczema", "Psoriasis"),
    ("Eczema", "Fungal skin infection"),
    ("Psoriasis", "Fungal skin infection"),
    ("Dengue", "Malaria"),
    ("Dengue", "Typhoid"),
    ("Malaria", "Typhoid"),
    ("Kidney stones", "Urinary tract infection"),
    ("Angina", "Myocardial infarction"),
]
URGENT = ["Myocardial infarction", "Stroke", "Appendicitis", "Pulmonary embolism", "Meningitis"]


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return load_kb()


def test_shipped_kb_loads_and_is_cached(kb: KnowledgeBase) -> None:
    assert load_kb() is kb
    assert load_kb("medical") is kb
    assert load_kb(SHIPPED) is kb
    assert len(kb.conditions) >= 60
    assert len(set(kb.names)) == len(kb.names)


def test_departments_covered(kb: KnowledgeBase) -> None:
    departments = {c.department for c in kb.conditions}
    assert len(departments) >= 7
    for dept in REQUIRED:
        if dept != "other":
            assert dept in departments


@pytest.mark.parametrize("name", [n for names in REQUIRED.values() for n in names])
def test_required_condition_present(kb: KnowledgeBase, name: str) -> None:
    assert kb.normalise(name) is not None, name


def test_required_departments_match(kb: KnowledgeBase) -> None:
    for dept, names in REQUIRED.items():
        if dept == "other":
            continue
        for name in names:
            assert kb.by_name(name).department == dept, name


@pytest.mark.parametrize("name", URGENT)
def test_emergencies_are_urgent(kb: KnowledgeBase, name: str) -> None:
    assert kb.by_name(name).urgent


def test_minimum_counts_and_ranges(kb: KnowledgeBase) -> None:
    for c in kb.conditions:
        assert len(c.symptoms) >= 5, c.name
        assert len(c.history) >= 1 and len(c.exam) >= 1, c.name
        assert len(c.tests) >= 2, c.name
        assert c.distinguishing and c.red_flags and c.advice, c.name
        assert 0 <= c.age[0] <= c.age[1] <= 120, c.name
        assert c.sex in {"any", "female", "male"}, c.name
        for f in (*c.symptoms, *c.history, *c.exam):
            assert 0 < f.freq <= 1, (c.name, f.name)
        for s in c.symptoms:
            assert s.lay and s.lay != s.name, (c.name, s.name)
        for t in c.tests:
            assert t.name and t.result, (c.name, t)


def test_symptom_names_are_short_lowercase_phrases(kb: KnowledgeBase) -> None:
    for c in kb.conditions:
        for s in c.symptoms:
            assert s.name == s.name.lower().strip(), s.name
            assert not set("()[],;:") & set(s.name), s.name
            assert len(s.name.split()) <= 4, s.name
        assert len(set(c.symptom_names)) == len(c.symptoms), c.name


def test_synonyms_unique_and_never_another_canonical_name(kb: KnowledgeBase) -> None:
    owner: dict[str, str] = {}
    for c in kb.conditions:
        for alias in (c.name, *c.synonyms):
            key = alias.lower()
            assert owner.setdefault(key, c.name) == c.name, alias
            assert kb.normalise(alias) == c.name, alias


def test_no_prescription_doses_in_advice(kb: KnowledgeBase) -> None:
    for c in kb.conditions:
        for line in c.advice:
            assert " mg" not in line.lower() and "mcg" not in line.lower(), (c.name, line)


def test_key_confusable_pairs_listed(kb: KnowledgeBase) -> None:
    pairs = {frozenset(p) for p in kb.confusable_pairs()}
    for a, b in KEY_PAIRS:
        assert frozenset((kb.normalise(a), kb.normalise(b))) in pairs, (a, b)


def test_every_confusable_pair_shares_symptoms_and_differs(kb: KnowledgeBase) -> None:
    pairs = kb.confusable_pairs()
    assert len(pairs) >= 40
    for a, b in pairs:
        ca, cb = kb.by_name(a), kb.by_name(b)
        shared = set(ca.symptom_names) & set(cb.symptom_names)
        assert len(shared) >= 2, (a, b, shared)
        assert set(ca.distinguishing) ^ set(cb.distinguishing), (a, b)


def test_normalise(kb: KnowledgeBase) -> None:
    assert kb.normalise("influenza") == "Influenza"
    assert kb.normalise("  The Flu. ") == "Influenza"
    assert kb.normalise("**Heart attack**") == "Myocardial infarction"
    assert kb.normalise('"GERD"') == "Gastroesophageal reflux disease"
    assert kb.normalise("covid 19") == "COVID-19"
    assert kb.normalise("Type-2 diabetes!") == "Diabetes mellitus type 2"
    assert kb.normalise("piles") == "Hemorrhoids"
    assert kb.normalise("Tonsillitis/strep throat") == "Tonsillitis"
    assert kb.normalise("Osteoarthritis (knee)") == "Osteoarthritis"
    assert kb.normalise("a migraine") == "Migraine"
    for missing in ("", "   ", "broken leg", None, 3):
        assert kb.normalise(missing) is None


def test_by_name_subset_and_terms(kb: KnowledgeBase) -> None:
    assert kb.by_name("flu").name == "Influenza"
    with pytest.raises(KeyError):
        kb.by_name("broken leg")
    sub = kb.subset(["Influenza", "common cold", "Migraine"])
    assert sub.names == ("Common cold", "Influenza", "Migraine")
    assert {frozenset(p) for p in sub.confusable_pairs()} == {
        frozenset(("Common cold", "Influenza"))
    }
    assert sub.normalise("COVID-19") is None
    terms = kb.finding_terms()
    assert terms["fever"] == "symptom"
    assert terms["high temperature"] == "symptom"
    assert terms["ecg"] == "test"
    assert terms["right iliac fossa tenderness"] == "exam"
    assert terms["acid-fast bacilli seen"] == "result"
    assert all(t == t.lower() for t in terms)
    terms.clear()
    assert kb.finding_terms()


def test_conditions_are_immutable(kb: KnowledgeBase) -> None:
    cond = kb.conditions[0]
    assert isinstance(cond, Condition)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cond.name = "x"  # type: ignore[misc]


# ---------------------------------------------------------------- malformed KBs


def _write(tmp_path: Path, data: dict | str, name: str = "kb.yaml") -> Path:
    path = tmp_path / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


@functools.cache
def _shipped_raw() -> dict:
    return yaml.load(SHIPPED.read_text(encoding="utf-8"), Loader=_LOADER)


def _valid() -> dict:
    """The first three shipped conditions, raw, with confusable_with limited to them."""
    raw = copy.deepcopy(_shipped_raw()["conditions"][:3])
    names = {c["name"] for c in raw}
    for c in raw:
        c["confusable_with"] = [n for n in c["confusable_with"] if n in names]
    return {"conditions": raw}


def test_valid_fixture_loads(tmp_path: Path) -> None:
    kb = load_kb(_write(tmp_path, _valid()))
    assert kb.names == ("Common cold", "Influenza", "COVID-19")


@pytest.mark.parametrize(
    ("mutate", "key_path", "message"),
    [
        (lambda d: d["conditions"][1].update(symptoms="fever"), "conditions[1].symptoms", "list"),
        (lambda d: d["conditions"][0].pop("exam"), "conditions[0].exam", "missing"),
        (
            lambda d: d["conditions"][2]["symptoms"][1].update(freq=1.5),
            "conditions[2].symptoms[1].freq",
            "must be in (0, 1]",
        ),
        (
            lambda d: d["conditions"][0]["history"][0].update(freq=0),
            "conditions[0].history[0].freq",
            "must be in (0, 1]",
        ),
        (
            lambda d: d["conditions"][1].update(confusable_with=["Measels"]),
            "conditions[1].confusable_with[0]",
            "unknown condition",
        ),
        (lambda d: d["conditions"][0].update(age=[60, 20]), "conditions[0].age", "min"),
        (lambda d: d["conditions"][0].update(sex="unknown"), "conditions[0].sex", "must be one"),
        (
            lambda d: d["conditions"][0].update(department="cardiology"),
            "conditions[0].department",
            "must be one",
        ),
        (lambda d: d["conditions"][0].update(urgent="yes"), "conditions[0].urgent", "true or"),
        (
            lambda d: d["conditions"][0].update(tests=d["conditions"][0]["tests"][:1]),
            "conditions[0].tests",
            "at least 2",
        ),
        (
            lambda d: d["conditions"][2]["synonyms"].append("flu"),
            "conditions[2].synonyms",
            "already used by 'Influenza'",
        ),
        (
            lambda d: d["conditions"][2]["synonyms"].append("common cold"),
            "conditions[2].synonyms",
            "already used by 'Common cold'",
        ),
        (lambda d: d["conditions"][1].update(synonym=["x"]), "conditions[1].synonym", "unknown"),
        (  # a test result that names its own condition gives the answer away
            lambda d: d["conditions"][1]["tests"][1].update(result="influenza A detected"),
            "conditions[1].tests[1].result",
            "names 'Influenza' ('influenza a')",
        ),
        (
            lambda d: d["conditions"][2]["history"][0].update(name="contact with a covid case"),
            "conditions[2].history[0].name",
            "names 'COVID-19' ('covid')",
        ),
        (  # the renderer may show another condition's lay phrase for the same symptom name
            lambda d: d["conditions"][1]["symptoms"][0].update(lay="a common cold fever"),
            "conditions[1].symptoms[0].lay",
            "names 'Common cold'",
        ),
        (lambda d: d["conditions"][0].update(name=7), "conditions[0].name", "string"),
    ],
)
def test_malformed_kb_names_file_and_key_path(
    tmp_path: Path, mutate, key_path: str, message: str
) -> None:
    data = _valid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(KBError) as info:
        load_kb(path)
    first = str(info.value).splitlines()[0]
    assert path.name in first
    assert key_path in first
    assert message in first


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "conditions:\n  - name: Flu\n    synonyms: [flu, grippe\n    sex: any\n"
    )
    with pytest.raises(KBError) as info:
        load_kb(path)
    message = str(info.value)
    assert path.name in message and "line " in message and "invalid YAML" in message


def test_duplicate_yaml_key_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "conditions:\n  - name: Flu\n    name: Cold\n")
    with pytest.raises(KBError, match=r"line 3.*duplicate key 'name'"):
        load_kb(path)


def test_missing_file_and_bad_top_level(tmp_path: Path) -> None:
    with pytest.raises(KBError, match="file not found"):
        load_kb(tmp_path / "nope.yaml")
    with pytest.raises(KBError, match="top level"):
        load_kb(_write(tmp_path, "- just a list\n"))


def test_all_errors_collected(tmp_path: Path) -> None:
    data = _valid()
    data["conditions"][0]["symptoms"][0]["freq"] = 2
    data["conditions"][1].pop("advice")
    with pytest.raises(KBError) as info:
        load_kb(_write(tmp_path, data))
    assert len(info.value.errors) == 2
    assert "conditions[0].symptoms[0].freq" in info.value.errors[0]
    assert "conditions[1].advice" in info.value.errors[1]


def test_edited_file_is_reloaded(tmp_path: Path) -> None:
    data = _valid()
    path = _write(tmp_path, data)
    first = load_kb(path)
    data["conditions"].pop()
    for cond in data["conditions"]:
        cond["confusable_with"] = []
    _write(tmp_path, data)
    assert load_kb(path) is not first
    assert len(load_kb(path)) == 2


def test_no_shipped_finding_names_its_own_condition(kb: KnowledgeBase) -> None:
    """Every text a record of a condition can show (symptom names and every lay phrase of them,
    history, exam, tests and results) is free of the condition's name and synonyms."""
    lays: dict[str, set[str]] = {}
    for c in kb.conditions:
        for s in c.symptoms:
            lays.setdefault(s.name, set()).update([s.lay] if s.lay else [])
    named = []
    for c in kb.conditions:
        texts = [s.name for s in c.symptoms] + [lay for s in c.symptoms for lay in lays[s.name]]
        texts += [h.name for h in c.history] + [e.name for e in c.exam]
        texts += [t.name for t in c.tests] + [t.result for t in c.tests]
        named += [(c.name, t) for t in texts if kb.alias_in(t, c.name)]
    assert named == []


def test_alias_in_matches_whole_words_any_case(kb: KnowledgeBase) -> None:
    assert kb.alias_in("PCR: Influenza-A detected", "Influenza") == "influenza a"
    assert kb.alias_in("flushed face; influenzal", "Influenza") is None  # not inside a word
    assert kb.alias_in("contact with a COVID 19 case", "COVID-19") is not None
    assert kb.alias_in("breaking out in a cold sweat", "Common cold") == "cold"
    assert kb.alias_in("colder hands", "Common cold") is None
