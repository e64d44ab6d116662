"""The hardware classification rule language: safe, small, explained errors. No ``eval``.

Operators define traits with rules over a host's normalised hardware, like MAAS automatic tags::

    gpu-a100   accelerator(type == "nvidia-a100")
    nvme       disk(type == "NVME")
    highmem    ram_gib >= 512
    avx512     flag("avx512f")
    big-gpu    accelerator(type ~ "nvidia") >= 4 and nic_speed_gbps >= 100
    dense-hdd  disk(type == "HDD" and size_gb >= 8000) >= 8

Grammar (``or`` binds loosest)::

    expr    := term ("or" term)*
    term    := factor ("and" factor)*
    factor  := "not" factor | "(" expr ")" | test
    test    := NAME [op literal]                       scalar fact compared (bare boolean facts allowed)
             | COLLECTION "(" [expr] ")" [op NUMBER]    how many items match (bare: at least one)
             | "flag" "(" STRING ")"                     a CPU flag is present
    op      := == | != | >= | <= | > | <  | ~  (case-insensitive "contains", strings only)

1. :func:`compile_rule` tokenises and parses the text into a tree, checking every name, type and
   operator against :data:`SCALARS` and :data:`COLLECTIONS`; a mistake raises :class:`RuleError`
   naming the position, with a "did you mean" where a name is close to a known one.
2. The tree is turned into nested Python closures once, so reclassifying thousands of hosts after
   a rule change costs one function call per host and rule.
3. :func:`facts_from_hardware` builds the facts a rule sees from normalised hardware.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Scalar facts a rule may compare: name → (type, meaning).
SCALARS: dict[str, tuple[type, str]] = {
    "cores": (int, "CPU threads (BMH cpu.count)"),
    "cpu_mhz": (float, "CPU clock in MHz"),
    "cpu_model": (str, "CPU model string"),
    "arch": (str, "architecture, e.g. x86_64 or aarch64"),
    "ram_gib": (float, "RAM in GiB"),
    "disk_total_tb": (float, "total disk capacity in TB"),
    "disk_count": (int, "number of disks"),
    "nic_speed_gbps": (float, "fastest NIC, Gbit/s"),
    "vendor": (str, "system manufacturer"),
    "product": (str, "system product name"),
    "gpu_count": (int, "accelerators of any type, summed"),
    "key_erase": (bool, "disks are encrypted with a per-tenant key (hand-off by key erase)"),
}
# Collections a rule may count: name → {field: type}; for accelerators the count field sums.
COLLECTIONS: dict[str, dict[str, type]] = {
    "disk": {"type": str, "size_gb": float, "rotational": bool, "name": str, "model": str},
    "nic": {"speed_gbps": float, "name": str},
    "accelerator": {"type": str, "count": int},
}
OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "~")
_ORDERING = {">=", "<=", ">", "<"}
MAX_RULE_LENGTH = 2000


class RuleError(ValueError):
    """A rule that cannot be used; ``position`` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int, text: str):
        self.message, self.position, self.text = message, position, text
        super().__init__(f"{message} (at character {position + 1})")

    def pointer(self) -> str:
        """The rule with a caret under the problem, for pages and the CLI."""
        return f"{self.text}\n{' ' * self.position}^"


# --------------------------------------------------------------------------- tokens

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d+)?)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|>=|<=|>|<|~)
      | (?P<paren>[()])
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, op, paren, name, end
    value: Any
    position: int


def tokenize(text: str) -> list[Token]:
    tokens, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            tokens.append(Token("end", None, position))
            return tokens
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise RuleError(f"unexpected character {text[position]!r}", position, text)
        kind = match.lastgroup
        raw = match.group(kind)
        start = match.start(kind)
        if kind == "number":
            value: Any = float(raw) if "." in raw else int(raw)
        elif kind == "string":
            value = re.sub(r"\\(.)", r"\1", raw[1:-1])
        else:
            value = raw
        tokens.append(Token(kind, value, start))
        position = match.end()


# --------------------------------------------------------------------------- parser → closures

Predicate = Callable[[Mapping[str, Any]], bool]


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None:
        return False  # an unknown fact (no hardware data yet) never matches
    if op == "==":
        return left.lower() == right.lower() if isinstance(left, str) else left == right
    if op == "!=":
        return left.lower() != right.lower() if isinstance(left, str) else left != right
    if op == "~":
        return right.lower() in str(left).lower()
    if op == ">=":
        return left >= right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left < right


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    # -- helpers
    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, message: str, token: Token | None = None) -> RuleError:
        return RuleError(message, (token or self.peek()).position, self.text)

    def expect(self, kind: str, value: str | None = None) -> Token:
        token = self.peek()
        if token.kind != kind or (value is not None and token.value != value):
            wanted = repr(value) if value else kind
            found = "the end of the rule" if token.kind == "end" else repr(token.value)
            raise self.error(f"expected {wanted}, found {found}")
        return self.take()

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token.kind == "name" and token.value.lower() == word:
            self.take()
            return True
        return False

    # -- grammar
    def parse(self, fields: dict[str, type] | None = None) -> Predicate:
        predicate = self.expr(fields)
        if self.peek().kind != "end":
            raise self.error(f"unexpected {self.peek().value!r}: join conditions with 'and' / 'or'")
        return predicate

    def expr(self, fields) -> Predicate:
        parts = [self.term(fields)]
        while self.keyword("or"):
            parts.append(self.term(fields))
        return parts[0] if len(parts) == 1 else (lambda facts, ps=tuple(parts): any(p(facts) for p in ps))

    def term(self, fields) -> Predicate:
        parts = [self.factor(fields)]
        while self.keyword("and"):
            parts.append(self.factor(fields))
        return parts[0] if len(parts) == 1 else (lambda facts, ps=tuple(parts): all(p(facts) for p in ps))

    def factor(self, fields) -> Predicate:
        if self.keyword("not"):
            inner = self.factor(fields)
            return lambda facts: not inner(facts)
        if self.peek().kind == "paren" and self.peek().value == "(":
            self.take()
            inner = self.expr(fields)
            self.expect("paren", ")")
            return inner
        return self.test(fields)

    def _literal(self, expected: type, op_token: Token) -> Any:
        token = self.peek()
        if token.kind == "end":
            raise self.error("a value is missing after the operator")
        if token.kind == "name" and token.value.lower() in ("true", "false"):
            value: Any = token.value.lower() == "true"
        elif token.kind in ("number", "string"):
            value = token.value
        else:
            raise self.error(f"expected a value, found {token.value!r}")
        # The operator first: "arch >= …" is wrong whatever follows.
        if op_token.value in _ORDERING and expected in (str, bool):
            raise self.error(f"{op_token.value} needs a number; use == or ~ for text", op_token)
        if op_token.value == "~" and expected is not str:
            raise self.error("~ (contains) works on text only", op_token)
        if expected is bool and not isinstance(value, bool):
            raise self.error("this fact is true or false: compare it with true/false, or use it bare")
        if expected in (int, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise self.error("this fact is a number: compare it with a number")
        if expected is str and not isinstance(value, str):
            raise self.error('this fact is text: put the value in quotes, e.g. "x86_64"')
        self.take()
        return value

    def _operator(self) -> Token | None:
        return self.take() if self.peek().kind == "op" else None

    def test(self, fields) -> Predicate:
        token = self.peek()
        if token.kind != "name":
            found = "the end of the rule" if token.kind == "end" else repr(token.value)
            raise self.error(f"expected a condition, found {found}")
        name = self.take().value
        known = fields if fields is not None else SCALARS
        if fields is None and name == "flag":
            self.expect("paren", "(")
            flag = self.expect("string").value.lower()
            self.expect("paren", ")")
            return lambda facts: flag in facts.get("flags", ())
        if fields is None and name in COLLECTIONS:
            return self.collection(name)
        if name not in known:
            extra = [*known, *(("flag", *COLLECTIONS) if fields is None else ())]
            raise self.error(
                f"unknown {'field' if fields is not None else 'fact'} {name!r}{_suggest(name, extra)}", token
            )
        expected = known[name] if fields is not None else known[name][0]
        op = self._operator()
        if op is None:
            if expected is not bool:
                raise self.error(f"{name!r} needs a comparison, e.g. {name} >= …", token)
            return lambda facts: bool(facts.get(name))
        value = self._literal(expected, op)
        return lambda facts: _compare(op.value, facts.get(name), value)

    def collection(self, name: str) -> Predicate:
        fields = COLLECTIONS[name]
        self.expect("paren", "(")
        if self.peek().kind == "paren" and self.peek().value == ")":
            inner: Predicate = lambda item: True  # noqa: E731
        else:
            inner = self.expr(fields)
        self.expect("paren", ")")
        items_key = f"{name}s"
        # For accelerators the count is the number of devices, not of entries.
        weight = (lambda item: int(item.get("count", 1))) if name == "accelerator" else (lambda item: 1)

        def count(facts) -> int:
            return sum(weight(item) for item in facts.get(items_key, ()) if inner(item))

        op = self._operator()
        if op is None:
            return lambda facts: count(facts) >= 1
        if op.value == "~":
            raise self.error("compare a count with ==, !=, >=, <=, > or <", op)
        value = self._literal(int, op)
        return lambda facts: _compare(op.value, count(facts), value)


@dataclass(frozen=True)
class Rule:
    text: str
    predicate: Predicate

    def matches(self, facts: Mapping[str, Any]) -> bool:
        return self.predicate(facts)


def compile_rule(text: str) -> Rule:
    """Parse and check ``text``; raises :class:`RuleError` with a position and a clear message."""
    text = (text or "").strip()
    if not text:
        raise RuleError("the rule is empty", 0, text)
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"the rule is longer than {MAX_RULE_LENGTH} characters", MAX_RULE_LENGTH, text)
    return Rule(text, _Parser(text).parse())


def facts_from_hardware(
    *,
    cpu_count: int | None,
    cpu_mhz: float | None = None,
    cpu_model: str = "",
    cpu_flags: tuple[str, ...] | list[str] = (),
    arch: str = "",
    ram_mib: int | None = None,
    disks: list[dict] | tuple = (),
    nics: list[dict] | tuple = (),
    accelerators: list[dict] | tuple = (),
    vendor: str = "",
    product: str = "",
    key_erase: bool = False,
) -> dict[str, Any]:
    """The facts a rule sees. Unknown numbers stay None, so a host not yet inspected matches nothing."""
    disk_items = [
        {
            "type": str(d.get("type", "")).upper(),
            "size_gb": round(int(d.get("size_bytes", d.get("sizeBytes", 0)) or 0) / 1e9, 1),
            "rotational": bool(d.get("rotational", False)),
            "name": d.get("name", ""),
            "model": d.get("model", ""),
        }
        for d in disks
    ]
    nic_items = [
        {"speed_gbps": float(n.get("speed_gbps", n.get("speedGbps", 0)) or 0), "name": n.get("name", "")} for n in nics
    ]
    accelerator_items = [{"type": str(a.get("type", "")), "count": int(a.get("count", 1))} for a in accelerators]
    return {
        "cores": cpu_count,
        "cpu_mhz": cpu_mhz,
        "cpu_model": cpu_model,
        "arch": arch,
        "ram_gib": None if ram_mib is None else ram_mib / 1024,
        "disk_total_tb": round(sum(d["size_gb"] for d in disk_items) / 1000, 3) if disk_items else 0.0,
        "disk_count": len(disk_items),
        "nic_speed_gbps": max((n["speed_gbps"] for n in nic_items), default=0.0),
        "vendor": vendor,
        "product": product,
        "gpu_count": sum(a["count"] for a in accelerator_items),
        "key_erase": key_erase,
        "flags": frozenset(f.lower() for f in cpu_flags),
        "disks": disk_items,
        "nics": nic_items,
        "accelerators": accelerator_items,
    }
