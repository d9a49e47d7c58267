"""Load and validate the medical knowledge base (YAML) into immutable `Condition`s.

Every error names the file and the key path (``conditions[3].symptoms[2].freq``) so a typo in a
hand-written KB is fixed in seconds. Loading is cached on (resolved path, mtime, size): many stages
call `load_kb()` and must all see the same object, while an edited file is re-read.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from cift.kb.schema import DEPARTMENTS, SEXES, Condition, Finding, Test

SHIPPED_DIR = Path(__file__).resolve().parent
_AGE_MAX = 120

# key -> (kind, minimum count) for list fields; kind decides how each item is parsed.
_LIST_FIELDS: dict[str, tuple[str, int]] = {
    "synonyms": ("str", 0),
    "symptoms": ("symptom", 5),
    "history": ("finding", 1),
    "exam": ("finding", 1),
    "tests": ("test", 2),
    "distinguishing": ("str", 1),
    "red_flags": ("str", 1),
    "advice": ("str", 1),
    "confusable_with": ("str", 0),
}
_REQUIRED = ("name", "department", "age", "sex", "urgent", *_LIST_FIELDS)
_ITEM_KEYS = {
    "symptom": ("name", "lay", "freq"),
    "finding": ("name", "freq"),
    "test": ("name", "result"),
}


class KBError(ValueError):
    """An invalid KB; `errors` lists every problem and the message starts with the first."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def _norm_key(text: str) -> str:
    """Case-, punctuation- and article-insensitive lookup key for a diagnosis string."""
    t = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    t = re.sub(r"[\s\-\u2010-\u2015_/]+", " ", t)
    t = t.strip(" .,;:!?\"'`*~[]{}<>")
    if t.startswith("(") and t.endswith(")") and t.count("(") == 1:
        t = t[1:-1].strip(" .,;:!?\"'`*~")
    t = re.sub(r"^(the|a|an)\s+", "", t)
    return re.sub(r"\s+", " ", t).strip()


class KnowledgeBase:
    """The validated conditions plus name lookup; immutable and safe to share between stages."""

    def __init__(self, conditions: Iterable[Condition], source: str = "<memory>") -> None:
        self.conditions: tuple[Condition, ...] = tuple(conditions)
        self.source = source
        self._by_key: dict[str, str] = {}
        for cond in self.conditions:
            for alias in (cond.name, *cond.synonyms):
                self._by_key.setdefault(_norm_key(alias), cond.name)
        self._by_name = {c.name: c for c in self.conditions}
        self._terms = self._build_terms()

    def __len__(self) -> int:
        return len(self.conditions)

    def __repr__(self) -> str:
        return f"KnowledgeBase({len(self)} conditions from {self.source})"

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical names in file order."""
        return tuple(c.name for c in self.conditions)

    @property
    def departments(self) -> tuple[str, ...]:
        """Departments present, sorted."""
        return tuple(sorted({c.department for c in self.conditions}))

    def normalise(self, text: object) -> str | None:
        """Map a diagnosis string (any case, punctuation, article, synonym) to its canonical name.

        Falls back to dropping a parenthetical ("Osteoarthritis (knee)"); None when nothing matches.
        """
        if not isinstance(text, str):
            return None
        key = _norm_key(text)
        if not key:
            return None
        if key in self._by_key:
            return self._by_key[key]
        bare = _norm_key(re.sub(r"\([^()]*\)", " ", key))
        return self._by_key.get(bare) if bare else None

    def by_name(self, name: str) -> Condition:
        """The condition for a name or anything `normalise` resolves; KeyError otherwise."""
        canonical = self.normalise(name)
        if canonical is None:
            raise KeyError(f"unknown condition {name!r} in {self.source}")
        return self._by_name[canonical]

    def subset(self, names: Iterable[str]) -> KnowledgeBase:
        """A KB restricted to `names` (resolved via `normalise`), in file order.

        `confusable_with` entries pointing outside the subset stay on the Condition but are left out
        of `confusable_pairs()`.
        """
        wanted = {self.by_name(n).name for n in names}
        return KnowledgeBase((c for c in self.conditions if c.name in wanted), self.source)

    def confusable_pairs(self) -> list[tuple[str, str]]:
        """Unordered confusable pairs within this KB, each once, in file order of the first name."""
        seen: set[frozenset[str]] = set()
        pairs: list[tuple[str, str]] = []
        for cond in self.conditions:
            for other in cond.confusable_with:
                key = frozenset((cond.name, other))
                if other in self._by_name and other != cond.name and key not in seen:
                    seen.add(key)
                    pairs.append((cond.name, other))
        return pairs

    def alias_in(self, text: str, condition: str) -> str | None:
        """The first name or synonym of `condition` that `text` contains as whole words (any
        case; hyphens, slashes and spaces alike), or None: an input that names its own answer
        can be copied instead of diagnosed."""
        return alias_in(text, self.by_name(condition))

    def finding_terms(self) -> dict[str, str]:
        """Every KB term (lowercase) -> kind: symptom (name, lay words), exam, test or result.

        A term listed under several kinds keeps the first in that order. Returns a fresh copy.
        """
        return dict(self._terms)

    def _build_terms(self) -> dict[str, str]:
        terms: dict[str, str] = {}
        for kind in ("symptom", "exam", "test", "result"):
            for cond in self.conditions:
                if kind == "symptom":
                    words = [w for s in cond.symptoms for w in (s.name, s.lay) if w]
                elif kind == "exam":
                    words = [e.name for e in cond.exam]
                elif kind == "test":
                    words = [t.name for t in cond.tests]
                else:
                    words = [t.result for t in cond.tests]
                for word in words:
                    terms.setdefault(word.strip().lower(), kind)
        return terms


def _mention_key(text: str) -> str:
    return re.sub(r"[\s\-\u2010-\u2015_/]+", " ", unicodedata.normalize("NFKC", text).casefold())


@functools.lru_cache(maxsize=4096)  # conditions are frozen and hashable
def _alias_pattern(cond: Condition) -> re.Pattern[str]:
    aliases = sorted({_mention_key(a).strip() for a in (cond.name, *cond.synonyms)}, key=len)
    alternation = "|".join(re.escape(a) for a in reversed(aliases) if a)
    return re.compile(rf"(?<!\w)(?:{alternation})(?!\w)")


def alias_in(text: str, cond: Condition) -> str | None:
    """The name or synonym of `cond` found in `text` as whole words (normalised), or None."""
    match = _alias_pattern(cond).search(_mention_key(text))
    return match.group(0) if match else None


def resolve_path(path: str | Path | None = None) -> Path:
    """None or a bare name such as "medical" -> the shipped YAML; anything else is a file path."""
    if path is None:
        return SHIPPED_DIR / "medical.yaml"
    p = Path(path)
    if isinstance(path, str) and not p.suffix and os.sep not in path and not p.exists():
        return SHIPPED_DIR / f"{path}.yaml"
    return p.resolve()


def load_kb(path: str | Path | None = None) -> KnowledgeBase:
    """Load and validate a KB (default: the shipped medical KB); raises KBError on any problem."""
    resolved = resolve_path(path)
    try:
        st = resolved.stat()
    except FileNotFoundError:
        raise KBError([f"{_display(resolved)}: file not found"]) from None
    return _load_cached(resolved, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=32)
def _load_cached(resolved: Path, _mtime_ns: int, _size: int) -> KnowledgeBase:
    shown = _display(resolved)
    text = resolved.read_text(encoding="utf-8")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise KBError([f"{shown}: {where}invalid YAML: {exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise KBError([f"{shown}: invalid YAML: {exc}"]) from None
    return KnowledgeBase(_validate(data, shown), shown)


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# The C parser (libyaml) when present is ~10x faster; construction stays in (safe) Python.
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeBase):  # type: ignore[valid-type,misc]
    """Safe loader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)


class _Errors:
    """Collects "<file>: <key path>: <message>" lines so one run reports every problem."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.lines: list[str] = []

    def __call__(self, where: str, msg: str) -> None:
        self.lines.append(f"{self.shown}: {where}: {msg}")

    def __len__(self) -> int:
        return len(self.lines)


def _validate(data: Any, shown: str) -> list[Condition]:
    err = _Errors(shown)
    if not isinstance(data, dict) or "conditions" not in data:
        raise KBError([f"{shown}: top level: must be a mapping with key 'conditions'"])
    for extra in sorted(set(data) - {"conditions"}, key=str):
        err(str(extra), "unknown key")
    items = data["conditions"]
    if not isinstance(items, list) or not items:
        raise KBError([f"{shown}: conditions: must be a non-empty list"])

    conditions: list[Condition] = []
    for i, raw in enumerate(items):
        cond = _parse_condition(raw, f"conditions[{i}]", err)
        if cond is not None:
            conditions.append(cond)
    if not err:
        _check_cross_refs(conditions, err)
        _check_self_naming(conditions, err)
    if err:
        raise KBError(err.lines)
    return conditions


def _parse_condition(raw: Any, at: str, err: _Errors) -> Condition | None:
    if not isinstance(raw, dict):
        err(at, "must be a mapping")
        return None
    n_before = len(err)
    for key in _REQUIRED:
        if key not in raw:
            err(f"{at}.{key}", "missing required key")
    for key in sorted(set(raw) - set(_REQUIRED), key=str):
        err(f"{at}.{key}", "unknown key")
    name = _string(raw.get("name"), f"{at}.name", err) if "name" in raw else None
    department = raw.get("department")
    if "department" in raw and (not isinstance(department, str) or department not in DEPARTMENTS):
        err(f"{at}.department", f"must be one of {sorted(DEPARTMENTS)}, got {department!r}")
    sex = raw.get("sex")
    if "sex" in raw and (not isinstance(sex, str) or sex not in SEXES):
        err(f"{at}.sex", f"must be one of {sorted(SEXES)}, got {sex!r}")
    age = raw.get("age")
    if "age" in raw and not (
        isinstance(age, list)
        and len(age) == 2
        and all(isinstance(a, int) and not isinstance(a, bool) for a in age)
        and 0 <= age[0] <= age[1] <= _AGE_MAX
    ):
        err(f"{at}.age", f"must be [min, max] integers with 0 <= min <= max <= {_AGE_MAX}")
    if "urgent" in raw and not isinstance(raw["urgent"], bool):
        err(f"{at}.urgent", "must be true or false")
    lists = {
        key: _parse_list(raw[key], f"{at}.{key}", kind, minimum, err)
        for key, (kind, minimum) in _LIST_FIELDS.items()
        if key in raw
    }
    n_after = len(err)
    if n_after != n_before:
        return None
    return Condition(
        name=name or "",
        department=department,
        age=(age[0], age[1]),
        sex=sex,
        urgent=raw["urgent"],
        **lists,
    )


def _string(value: Any, at: str, err: _Errors) -> str | None:
    if not isinstance(value, str) or not value.strip():
        err(at, f"must be a non-empty string, got {value!r}")
        return None
    return value.strip()


def _parse_list(value: Any, at: str, kind: str, minimum: int, err: _Errors) -> tuple[Any, ...]:
    if value is None and minimum == 0:
        return ()
    if not isinstance(value, list):
        err(at, f"must be a list, got {type(value).__name__}")
        return ()
    if len(value) < minimum:
        err(at, f"must have at least {minimum} items, got {len(value)}")
    out: list[Any] = []
    for j, item in enumerate(value):
        where = f"{at}[{j}]"
        if kind == "str":
            s = _string(item, where, err)
            if s is not None:
                out.append(s)
            continue
        if not isinstance(item, dict):
            err(where, "must be a mapping")
            continue
        allowed = _ITEM_KEYS[kind]
        for key in allowed:
            if key not in item:
                err(f"{where}.{key}", "missing required key")
        for key in sorted(set(item) - set(allowed), key=str):
            err(f"{where}.{key}", "unknown key")
        fields = {
            k: _string(item[k], f"{where}.{k}", err) for k in allowed if k != "freq" and k in item
        }
        if kind == "test":
            out.append(Test(name=fields.get("name") or "", result=fields.get("result") or ""))
            continue
        freq = item.get("freq")
        if "freq" in item and (
            isinstance(freq, bool) or not isinstance(freq, (int, float)) or not 0 < freq <= 1
        ):
            err(f"{where}.freq", f"must be in (0, 1], got {freq!r}")
        out.append(Finding(name=fields.get("name") or "", lay=fields.get("lay"), freq=freq))
    return tuple(out)


def _check_cross_refs(conditions: list[Condition], err: _Errors) -> None:
    """Names and synonyms unique (after normalisation); confusable_with names must exist."""
    owner: dict[str, str] = {}
    for i, cond in enumerate(conditions):
        aliases = [("name", cond.name)] + [
            (f"synonyms[{j}]", s) for j, s in enumerate(cond.synonyms)
        ]
        for where, alias in aliases:
            key = _norm_key(alias)
            if key in owner:
                err(f"conditions[{i}].{where}", f"{alias!r} already used by {owner[key]!r}")
            else:
                owner[key] = cond.name
    names = {c.name for c in conditions}
    for i, cond in enumerate(conditions):
        for j, other in enumerate(cond.confusable_with):
            if other not in names:
                err(f"conditions[{i}].confusable_with[{j}]", f"unknown condition {other!r}")
            elif other == cond.name:
                err(
                    f"conditions[{i}].confusable_with[{j}]",
                    "a condition cannot be confusable with itself",
                )


def _check_self_naming(conditions: list[Condition], err: _Errors) -> None:
    """No finding, test or result a record of a condition shows names that condition.

    A record's rendered input carries its symptoms (by name, or by a lay phrase: the renderer
    takes the first one the KB gives that symptom name, from whichever condition, so every lay
    phrase of the name counts), history, exam, test names and results. One that contains the
    condition's name or a synonym gives the answer away.
    """
    lays: dict[str, list[tuple[str, str]]] = {}
    for i, cond in enumerate(conditions):
        for j, s in enumerate(cond.symptoms):
            if s.lay:
                lays.setdefault(s.name.lower(), []).append(
                    (f"conditions[{i}].symptoms[{j}].lay", s.lay)
                )
    for i, cond in enumerate(conditions):
        at = f"conditions[{i}]"
        texts = [(f"{at}.symptoms[{j}].name", s.name) for j, s in enumerate(cond.symptoms)]
        for s in cond.symptoms:
            texts += [(where, lay) for where, lay in lays.get(s.name.lower(), [])]
        texts += [(f"{at}.history[{j}].name", h.name) for j, h in enumerate(cond.history)]
        texts += [(f"{at}.exam[{j}].name", e.name) for j, e in enumerate(cond.exam)]
        for j, t in enumerate(cond.tests):
            texts += [(f"{at}.tests[{j}].name", t.name), (f"{at}.tests[{j}].result", t.result)]
        for where, text in dict.fromkeys(texts):
            alias = alias_in(text, cond)
            if alias is not None:
                err(
                    where,
                    f"{text!r} names {cond.name!r} ({alias!r}), so a record of it gives the answer"
                    " away; describe the finding as a clinician would report it, without the label",
                )
