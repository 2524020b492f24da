"""Held-out evaluation suites: seeded problems, each checked by code.

- ``python``: complete ``assert EXPR == `` with the literal EXPR evaluates to; a completion that
  is a literal (copying EXPR does not count) is run, completing the line, in the sandbox
  (``scalelab.evals.sandbox``) and passes when the assertion holds.
- ``brackets``: close every bracket a nested Python expression left open, and end the line.
- ``indent``: after a block opener, start the next line at the block's indentation.
- ``copy``: repeat a random string seen earlier in the prompt (induction).

(these three have one right continuation each, scored from the model's probabilities)
- ``digits``: the synthetic RLHF task's prompts (``scalelab.rlhf.task``), passed when the gold
  reward of the response is 1.

Problems are generated from fixed seeds, so every run sees the same ones; their text is random
identifiers, numbers and strings, which the training split does not contain (a test searches it
for every problem).
"""

from __future__ import annotations

import ast
import hashlib
import string
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

N_PROBLEMS = 200
_SEED = 20260  # the problem sets' seed: changing it changes every suite's problems
_LOWER = string.ascii_lowercase
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Problem:
    """A prompt (the suite's shared ``header`` then this problem's ``body``) and the reference
    ``answer`` a correct completion gives. ``id`` hashes body and answer."""

    suite: str
    body: str
    answer: str
    header: str = ""

    @property
    def prompt(self) -> str:
        return self.header + self.body

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.suite}\0{self.body}\0{self.answer}".encode()).hexdigest()[:12]


class Suite(ABC):
    """A named set of ``N_PROBLEMS`` problems, deterministic: the same in every process."""

    name: str
    header: str = ""

    @abstractmethod
    def _generate(self, rng: np.random.Generator) -> tuple[str, str]:
        """One problem's (body, answer)."""

    def problems(self) -> list[Problem]:
        """The suite's problems: distinct, in a fixed order."""
        return list(_problems(self.name))


class TargetSuite(Suite):
    """Problems with one right continuation, ``target``; after it the model must not write a
    character of ``forbid_after``. Scored without generating (``decode.score_targets``)."""

    forbid_after: str = ""

    def target(self, problem: Problem) -> str:
        return problem.answer


class CheckedSuite(Suite):
    """Problems whose completions are generated, cut at ``stop``, and checked by ``check``."""

    stop: str = "\n"
    max_new_tokens: int = 24

    @abstractmethod
    def check(self, problems: Sequence[Problem], texts: Sequence[str]) -> list[bool]:
        """Whether each generated text (all of it: ``cut`` ends it at ``stop``) solves its
        problem."""

    def cut(self, text: str) -> str:
        """A generated text up to (not including) the first ``stop``."""
        return text.split(self.stop, 1)[0]


@cache
def _problems(name: str) -> tuple[Problem, ...]:
    suite = SUITES[name]
    rng = np.random.default_rng([_SEED, sorted(SUITES).index(name)])
    seen: dict[str, Problem] = {}
    while len(seen) < N_PROBLEMS:
        body, answer = suite._generate(rng)
        seen.setdefault(body, Problem(name, body, answer, suite.header))  # one per prompt
    return tuple(seen.values())


def _word(rng: np.random.Generator, lo: int = 3, hi: int = 7, chars: str = _LOWER) -> str:
    return "".join(rng.choice(list(chars), size=int(rng.integers(lo, hi + 1))))


def _ints(rng: np.random.Generator, n: int, lo: int = -9, hi: int = 30) -> list[int]:
    return [int(x) for x in rng.integers(lo, hi, size=n)]


class PythonSuite(CheckedSuite):
    name = "python"
    header = 'assert len("ab") == 2\nassert sorted([2, 1]) == [1, 2]\n'

    def _generate(self, rng: np.random.Generator) -> tuple[str, str]:
        w = _word(rng)
        xs = _ints(rng, int(rng.integers(2, 5)))
        a, b = (int(v) for v in rng.integers(2, 60, size=2))
        k = b % 9 + 1
        cases = [
            (f"len({w!r})", len(w)),
            (f"{w!r}.upper()", w.upper()),
            (f"{w!r}[::-1]", w[::-1]),
            (f"{w!r}[1:3]", w[1:3]),
            (f"sorted({xs})", sorted(xs)),
            (f"max({xs})", max(xs)),
            (f"min({xs})", min(xs)),
            (f"sum({xs})", sum(xs)),
            (f"{a} + {b}", a + b),
            (f"{a} * {b}", a * b),
            (f"{a} // {k}", a // k),
            (f"{a} % {k}", a % k),
            (f"{w[:2]!r} * {k % 3 + 2}", w[:2] * (k % 3 + 2)),
            (f"list(range({a % 6 + 1}))", list(range(a % 6 + 1))),
            (f"{xs}[-1]", xs[-1]),
            (f"abs({-a})", a),
        ]
        expr, value = cases[int(rng.integers(len(cases)))]
        return f"assert {expr} == ", repr(value)

    def check(self, problems: Sequence[Problem], texts: Sequence[str]) -> list[bool]:
        from scalelab.evals.sandbox import run_programs

        programs = [
            _literal_assert(p.body, self.cut(t)) for p, t in zip(problems, texts, strict=True)
        ]
        return [o.ok for o in run_programs(programs, seconds=1.0)]


def _literal_assert(body: str, completion: str) -> str:
    """The program run for one completion: the completed assertion when the completion is a
    literal (so that copying the expression is no answer), else one that fails."""
    return f"{body}{completion}\n" if _is_literal(completion) else "assert False, 'not a literal'\n"


_LITERAL_NODES = (ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Load)


def _is_literal(text: str) -> bool:
    """Whether ``text`` is a Python literal (numbers, strings, lists...; a leading minus sign
    allowed). Parsed, never run: a completion is short, so parsing is cheap and safe."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    return all(
        isinstance(node, _LITERAL_NODES)
        or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd))
        or isinstance(node, ast.USub | ast.UAdd)
        for node in ast.walk(tree)
    )


class BracketsSuite(TargetSuite):
    name = "brackets"
    header = "x = f(a, [b, c])\n"
    _PAIRS = {"(": ")", "[": "]", "{": "}"}

    def _generate(self, rng: np.random.Generator) -> tuple[str, str]:
        depth = int(rng.integers(2, 6))
        parts, closers = [f"{_word(rng, 1, 4)} = "], []
        for level in range(depth):
            opener = "([{"[int(rng.integers(3))]
            if opener == "(" or level == 0:
                opener = "("
                parts.append(_word(rng, 1, 4))
            parts.append(opener)
            closers.append(self._PAIRS[opener])
            parts.append(", ".join(_word(rng, 1, 3) for _ in range(int(rng.integers(1, 3)))))
            if level < depth - 1:
                parts.append(", ")
        return "".join(parts), "".join(reversed(closers))

    def target(self, problem: Problem) -> str:
        return problem.answer + "\n"  # the closers, and the line ends


class IndentSuite(TargetSuite):
    name = "indent"
    forbid_after = " \t\n"  # the indentation, then a statement: not more space, no empty line

    def _generate(self, rng: np.random.Generator) -> tuple[str, str]:
        lines = [f"def {_word(rng, 4, 8)}({_word(rng, 1, 3)}):"]
        depth = 1
        for _ in range(int(rng.integers(1, 4))):
            pad = "    " * depth
            if depth < 3 and rng.random() < 0.5:
                lines.append(f"{pad}{self._opener(rng)}")
                depth += 1
            else:
                lines.append(f"{pad}{_word(rng, 1, 4)} = {int(rng.integers(100))}")
                depth = max(1, depth - int(rng.integers(0, 2)))
        lines.append("    " * depth + self._opener(rng))
        return "\n".join(lines) + "\n", "    " * (depth + 1)

    @staticmethod
    def _opener(rng: np.random.Generator) -> str:
        name = _word(rng, 1, 4)
        forms = [f"if {name}:", f"for {name} in {_word(rng, 2, 5)}:", f"while {name}:"]
        return forms[int(rng.integers(len(forms)))]


class CopySuite(TargetSuite):
    name = "copy"

    def _generate(self, rng: np.random.Generator) -> tuple[str, str]:
        key = _word(rng, 8, 12, _ALNUM)
        name = _word(rng, 3, 6)
        return f'{name} = "{key}"\nassert {name} == "{key[:2]}', f'{key[2:]}"'


class DigitsSuite(CheckedSuite):
    """The RLHF task's single-turn prompts (role bytes included), scored by its gold checker."""

    name = "digits"

    def __init__(self) -> None:
        from scalelab.rlhf.task import END, OPERATIONS, TaskConfig

        self.cfg = TaskConfig(operations=OPERATIONS)
        self.stop = chr(END)
        self.max_new_tokens = self.cfg.max_answer_len() + 1

    def _generate(self, rng: np.random.Generator) -> tuple[str, str]:
        from scalelab.rlhf.task import SyntheticTask

        prompt = SyntheticTask(self.cfg).prompts(1, int(rng.integers(2**31)))[0]
        return prompt.text, prompt.answer + self.stop

    def check(self, problems: Sequence[Problem], texts: Sequence[str]) -> list[bool]:
        from scalelab.rlhf.task import score_text

        passed = []
        for p, t in zip(problems, texts, strict=True):
            operation, arg = p.body[1:-1].split(" ")  # USER "op arg" ASSISTANT
            # The gold reward: 0 without END, else the score of the text before it.
            passed.append(self.stop in t and score_text(operation, arg, self.cut(t)) == 1.0)
        return passed


SUITES: dict[str, TargetSuite | CheckedSuite] = {
    s.name: s for s in (PythonSuite(), BracketsSuite(), IndentSuite(), CopySuite(), DigitsSuite())
}
