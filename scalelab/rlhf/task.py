"""An offline instruction task with a programmatic gold reward.

Nothing can be downloaded, so the RLHF stages train on a synthetic world where the quality of
any response is known exactly. A prompt asks for a digit string; two families of instruction:

- **constraints** (a small grammar, open-ended: many answers are right): ``even 6`` asks for six
  even digits, likewise ``odd``, ``low`` (0–4), ``high`` (5–9) and ``asc`` (non-decreasing).
- **transforms** (one right answer): ``sort 4213`` → ``1234``, ``rev 4213`` → ``3124``,
  ``copy 4213`` → ``4213``, ``add 42+913`` → ``955``.

Text is byte level (vocabulary 256, as ``scalelab.data``'s byte tokenizer, so a trunk
pre-trained on bytes fits) with four reserved bytes that never occur in the task's ASCII text:
``PAD`` 0 (also the corpus document separator), ``USER`` 1, ``ASSISTANT`` 2 and ``END`` 3. A
single-turn prompt is ``USER "even 6" ASSISTANT`` and a response ``"208464" END``. A dialogue
chains turns delimited by role tokens, as in ChatGPT's dialogue format; a follow-up transform
(``rev``, ``sort``, ``copy``, ``add 12``) acts on the previous answer.

The **gold reward** of a response is a graded correctness score in [0, 1], and 0 for a response
that never emits ``END`` (it did not finish its turn):

- constraint ``op n``: (digits that satisfy the rule, at most n, minus digits beyond n) / n, so
  each wrong, missing or extra digit costs 1/n (for ``asc`` a digit satisfies the rule when it
  is not below its predecessor; the first always does);
- transform: 1 − Levenshtein(response, answer) / max(len(response), len(answer)).

The constraints are the default: a tiny reward model learns them in seconds because the rule
is checked digit by digit, while the transforms need alignment or arithmetic that takes small
models far longer. From the same generator:

- SFT demonstrations (single- and multi-turn) with a loss mask over assistant tokens, written
  by imperfect labellers (each digit edited with chance ``demo_noise``), so that the SFT
  policy leaves room for RL, as human demonstrations do;
- K ranked completions per prompt (K from ``k_min`` to ``k_max``, distinct gold rewards):
  corrupted versions of a correct answer ranked by simulated labellers with Bradley–Terry
  noise;
- a classification task for the GPT-1 head (which rule a digit string follows);
- a pre-training stream (dialogues, every token scored) for PPO-ptx.

Every generator takes a seed and is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

PAD, USER, ASSISTANT, END = 0, 1, 2, 3
Operation = Literal["even", "odd", "low", "high", "asc", "sort", "rev", "copy", "add"]
OPERATIONS: tuple[str, ...] = get_args(Operation)
CONSTRAINTS: tuple[str, ...] = ("even", "odd", "low", "high", "asc")
TRANSFORMS: tuple[str, ...] = ("sort", "rev", "copy", "add")
CLASSES = CONSTRAINTS  # labels of the classification task
# Any byte but the role bytes and digits: what a sampled policy can emit besides digits.
_JUNK = bytes(b for b in range(4, 256) if not 48 <= b <= 57).decode("latin-1")
_JUNK_SHARE = 0.5  # share of the damage in ranked completions that is junk, not wrong digits
_DIGITS_OF = {
    "even": "02468",
    "odd": "13579",
    "low": "01234",
    "high": "56789",
}


class TaskConfig(BaseModel):
    """The synthetic task's shape: instructions, answer lengths, dialogue depth."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operations: tuple[Operation, ...] = CONSTRAINTS
    min_digits: int = Field(4, ge=2, le=9, description="digits asked for / of an operand")
    max_digits: int = Field(9, ge=2, le=9)
    max_addend_digits: int = Field(3, ge=1, le=6, description="digits of each addend of add")
    max_turns: int = Field(3, ge=1, le=6, description="turns of a multi-turn dialogue")
    multi_turn_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="share of prompts/demonstrations that are dialogues"
    )
    demo_noise: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="labeller error rate: each demonstrated digit is edited with this chance",
    )

    @model_validator(mode="after")
    def _ranges(self) -> TaskConfig:
        if self.min_digits > self.max_digits:
            raise ValueError(
                f"min_digits ({self.min_digits}) must be <= max_digits ({self.max_digits})"
            )
        if not self.operations:
            raise ValueError("operations must name at least one of " + ", ".join(OPERATIONS))
        return self

    def max_answer_len(self) -> int:
        """The longest correct answer in characters (a follow-up ``add`` may add a digit)."""
        grow = self.max_turns - 1 if "add" in self.operations else 0
        return max(self.max_digits, self.max_addend_digits + 1) + grow


@dataclass(frozen=True)
class Prompt:
    """A prompt (token ids ending with ``ASSISTANT``), the instruction of its last user turn
    (``operation`` and ``arg``: the length asked for, or the transform's operand) and one
    correct ``answer``."""

    ids: np.ndarray
    operation: str
    arg: str
    answer: str
    turns: int = 1

    @property
    def text(self) -> str:
        return decode(self.ids)

    def score(self, response: str) -> float:
        """Gold reward of a finished response's text (without ``END``)."""
        return score_text(self.operation, self.arg, response)


@dataclass(frozen=True)
class Example:
    """Token ids and a boolean loss mask (True where a token is a training target)."""

    ids: np.ndarray
    loss_mask: np.ndarray


@dataclass(frozen=True)
class Comparison:
    """One prompt with K completions (text, no ``END``), ordered best first by the labeller.

    ``gold`` holds each completion's gold reward in the same order (all different); the
    labeller's order can disagree with it (Bradley–Terry noise).
    """

    prompt: Prompt
    completions: tuple[str, ...]
    gold: tuple[float, ...]


def encode(text: str) -> np.ndarray:
    """Byte ids of ``text`` (int64)."""
    return np.frombuffer(text.encode("latin-1"), dtype=np.uint8).astype(np.int64)


def decode(ids: Sequence[int] | np.ndarray) -> str:
    """Text of byte ids (role bytes stay as control characters)."""
    return bytes(int(i) for i in ids).decode("latin-1")


def apply(operation: str, operand: str) -> str:
    """The answer of transform ``operation`` on ``operand`` (``"a+b"`` for ``add``)."""
    if operation == "sort":
        return "".join(sorted(operand))
    if operation == "rev":
        return operand[::-1]
    if operation == "copy":
        return operand
    if operation == "add":
        a, b = operand.split("+")
        return str(int(a) + int(b))
    raise ValueError(f"unknown transform {operation!r}; expected one of {TRANSFORMS}")


def satisfies(operation: str, text: str) -> list[bool]:
    """Per character: does it follow constraint ``operation``?"""
    if operation == "asc":
        return [c.isdigit() and (i == 0 or c >= text[i - 1]) for i, c in enumerate(text)]
    if operation in _DIGITS_OF:
        return [c in _DIGITS_OF[operation] for c in text]
    raise ValueError(f"unknown constraint {operation!r}; expected one of {CONSTRAINTS}")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between ``a`` and ``b``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def similarity(response: str, answer: str) -> float:
    """1 − Levenshtein(response, answer) / max(len): 1 for the answer, 0 for nothing alike."""
    longest = max(len(response), len(answer))
    return 1.0 if longest == 0 else 1.0 - levenshtein(response, answer) / longest


def score_text(operation: str, arg: str, response: str) -> float:
    """The gold reward of a finished response ``response`` to instruction ``operation arg``."""
    if operation in CONSTRAINTS:
        n = int(arg)
        good = sum(satisfies(operation, response))
        return max(0.0, min(good, n) - max(0, len(response) - n)) / n
    return similarity(response, apply(operation, arg))


def gold_reward(prompt: Prompt, response_ids: Sequence[int] | np.ndarray) -> float:
    """The gold reward of a generated response (the token ids after the prompt): 0 without
    ``END``, else the score of the text before it."""
    ids = [int(i) for i in response_ids]
    if END not in ids:
        return 0.0
    return prompt.score(decode(ids[: ids.index(END)]))


class SyntheticTask:
    """Seeded generators of prompts, demonstrations, comparisons and classification examples."""

    def __init__(self, cfg: TaskConfig | None = None) -> None:
        self.cfg = cfg or TaskConfig()

    # --- instructions ----------------------------------------------------------------------
    def _digits(
        self, rng: np.random.Generator, lo: int | None = None, hi: int | None = None
    ) -> str:
        n = int(rng.integers(lo or self.cfg.min_digits, (hi or self.cfg.max_digits) + 1))
        return "".join(str(d) for d in rng.integers(0, 10, size=n))

    def _number(self, rng: np.random.Generator) -> str:
        return str(int(self._digits(rng, 1, self.cfg.max_addend_digits)))  # no leading zeros

    def _valid(self, rng: np.random.Generator, operation: str, n: int) -> str:
        """A uniformly drawn answer to constraint ``operation n``."""
        if operation == "asc":
            return "".join(sorted(str(d) for d in rng.integers(0, 10, size=n)))
        pool = _DIGITS_OF[operation]
        return "".join(pool[i] for i in rng.integers(0, len(pool), size=n))

    def _turn(self, rng: np.random.Generator, previous: str | None) -> tuple[str, str, str, str]:
        """(user text, operation, arg, answer): a new request, or a transform of ``previous``."""
        op = str(rng.choice(self.cfg.operations))
        if op in CONSTRAINTS:
            n = int(rng.integers(self.cfg.min_digits, self.cfg.max_digits + 1))
            return f"{op} {n}", op, str(n), self._valid(rng, op, n)
        if previous is None:
            arg = f"{self._number(rng)}+{self._number(rng)}" if op == "add" else self._digits(rng)
            return f"{op} {arg}", op, arg, apply(op, arg)
        if op == "add":
            addend = self._number(rng)
            arg = f"{int(previous)}+{addend}"
            return f"add {addend}", op, arg, apply(op, arg)
        return op, op, previous, apply(op, previous)

    def _dialogue(
        self, rng: np.random.Generator, noisy: bool = False
    ) -> list[tuple[str, str, str, str]]:
        """Turns (user text, operation, arg, answer); ``noisy`` answers carry the labeller's
        errors (``demo_noise``), and a follow-up transform acts on the answer as written."""
        n_turns = 1
        if self.cfg.max_turns > 1 and rng.random() < self.cfg.multi_turn_fraction:
            n_turns = int(rng.integers(2, self.cfg.max_turns + 1))
        turns: list[tuple[str, str, str, str]] = []
        for _ in range(n_turns):
            user, op, arg, answer = self._turn(rng, turns[-1][3] if turns else None)
            if noisy and self.cfg.demo_noise > 0:
                edits = int(rng.binomial(len(answer), self.cfg.demo_noise))
                answer = self.corrupt(rng, answer, edits) if edits else answer
            turns.append((user, op, arg, answer))
        return turns

    @staticmethod
    def _render(turns: Sequence[tuple[str, str, str, str]]) -> tuple[list[int], list[bool]]:
        ids: list[int] = []
        mask: list[bool] = []
        for user, _, _, answer in turns:
            prompt = [USER, *encode(user).tolist(), ASSISTANT]
            response = [*encode(answer).tolist(), END]
            ids += prompt + response
            mask += [False] * len(prompt) + [True] * len(response)
        return ids, mask

    # --- datasets ------------------------------------------------------------------------
    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` prompts: a share ``multi_turn_fraction`` are dialogues whose earlier turns
        carry correct answers and whose last user turn awaits a response."""
        rng = np.random.default_rng([seed, 1])
        out = []
        for _ in range(n):
            turns = self._dialogue(rng)
            ids, _ = self._render(turns[:-1])
            user, op, arg, answer = turns[-1]
            ids += [USER, *encode(user).tolist(), ASSISTANT]
            out.append(Prompt(np.array(ids, dtype=np.int64), op, arg, answer, len(turns)))
        return out

    def demonstrations(self, n: int, seed: int) -> list[Example]:
        """``n`` SFT demonstrations written by labellers who err at rate ``demo_noise``; the
        loss mask covers every assistant turn and its ``END``."""
        rng = np.random.default_rng([seed, 2])
        out = []
        for _ in range(n):
            ids, mask = self._render(self._dialogue(rng, noisy=True))
            out.append(Example(np.array(ids, dtype=np.int64), np.array(mask, dtype=bool)))
        return out

    def corrupt(self, rng: np.random.Generator, answer: str, edits: int, junk: float = 0.0) -> str:
        """``answer`` after ``edits`` random substitutions, deletions or insertions; a new
        character is a random digit, or with chance ``junk`` any other byte (``_JUNK``)."""
        chars = list(answer)
        for _ in range(edits):
            kind = int(rng.integers(3))
            new = _JUNK[int(rng.integers(len(_JUNK)))] if rng.random() < junk else None
            new = new or str(int(rng.integers(10)))
            if kind == 0 and chars:
                chars[int(rng.integers(len(chars)))] = new
            elif kind == 1 and len(chars) > 1:
                del chars[int(rng.integers(len(chars)))]
            else:
                chars.insert(int(rng.integers(len(chars) + 1)), new)
        return "".join(chars)

    def _damaged(self, rng: np.random.Generator, operation: str, answer: str, j: int) -> str:
        """A valid ``answer`` to a digit-set rule with gold reward exactly (n − j)/n: either
        m of the j damages are deletions or insertions of rule-breaking characters and the
        other j − m replace kept digits by rule-breaking ones, or all j are extra valid
        digits (extra digits cost as much as wrong ones, and the cap on good digits would
        make them overlap with replacements). A rule-breaking character is a digit outside
        the rule or, half the time, any other byte (``_JUNK``)."""
        bad_digits = "".join(c for c in "0123456789" if c not in _DIGITS_OF[operation])

        def bad() -> str:
            pool = _JUNK if rng.random() < _JUNK_SHARE else bad_digits
            return pool[int(rng.integers(len(pool)))]

        chars = list(answer)
        kind = int(rng.integers(3))
        m = j if kind == 2 else int(rng.integers(0, j + 1))
        kept = list(range(len(chars)))
        if kind == 0:  # deletions
            for i in sorted(rng.choice(len(chars), size=m, replace=False), reverse=True):
                del chars[i]
            kept = list(range(len(chars)))
        else:  # insertions: rule-breaking characters (kind 1) or valid digits (kind 2)
            inserted = [False] * len(chars)
            for _ in range(m):
                at = int(rng.integers(len(chars) + 1))
                chars.insert(at, bad() if kind == 1 else self._valid(rng, operation, 1))
                inserted.insert(at, True)
            kept = [i for i, flag in enumerate(inserted) if not flag]
        for i in rng.choice(kept, size=j - m, replace=False):
            chars[int(i)] = bad()
        return "".join(chars)

    def comparisons(
        self,
        n: int,
        seed: int,
        *,
        k_min: int = 4,
        k_max: int = 9,
        label_noise: float = 0.05,
    ) -> list[Comparison]:
        """``n`` prompts, each with K completions of different gold reward, ranked by a labeller.

        K is drawn from [k_min, k_max] and lowered, never below k_min, to the number of gold
        levels a prompt allows when that is smaller (a constraint of n digits has n + 1: K = 9
        needs n ≥ 8). Completions are damaged correct answers. For the digit-set constraints
        (even, odd, low, high) K distinct damages j are drawn from 0..n and each completion
        scores exactly (n − j)/n: j − m digits replaced by digits that break the rule, and m
        digits deleted or rule-breaking characters inserted. For ``asc`` and the transforms,
        completions are the answer after random edits, kept while their gold rewards differ.
        Half the characters a damage brings in are junk bytes rather than digits: a sampled
        policy can emit any byte, and a reward model that never saw one would misjudge it.

        The labeller ranks the K by Plackett–Luce sampling with utilities gold /
        ``label_noise`` (Gumbel-perturbed utilities, sorted), so every pair's order follows
        Bradley–Terry, P(y_i ≻ y_j) = σ((g_i − g_j) / label_noise): the pairwise marginals of
        Plackett–Luce are Bradley–Terry (Luce 1959). ``label_noise=0`` ranks by gold.
        """
        if not 2 <= k_min <= k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
        if label_noise < 0:
            raise ValueError(f"label_noise must be >= 0, got {label_noise}")
        rng = np.random.default_rng([seed, 3])
        out = []
        for prompt in self.prompts(n, seed):
            k = int(rng.integers(k_min, k_max + 1))
            by_gold: dict[float, str] = {}
            if prompt.operation in _DIGITS_OF:
                length = int(prompt.arg)
                damages = rng.choice(length + 1, size=min(k, length + 1), replace=False)
                for j in damages:
                    text = self._damaged(rng, prompt.operation, prompt.answer, int(j))
                    by_gold[round(prompt.score(text), 9)] = text
            for attempt in range(400):
                if len(by_gold) >= k or (attempt >= 30 and len(by_gold) >= k_min):
                    break
                edits = int(rng.integers(0, len(prompt.answer) + 2))
                text = self.corrupt(rng, prompt.answer, edits, junk=_JUNK_SHARE)
                by_gold.setdefault(round(prompt.score(text), 9), text)
            if len(by_gold) < k_min:
                raise ValueError(
                    f"prompt {prompt.text!r} allows only {len(by_gold)} distinct gold rewards; "
                    f"lower k_min (now {k_min}) or raise min_digits"
                )
            gold = np.array(list(by_gold))
            texts = list(by_gold.values())
            utility = gold / label_noise if label_noise > 0 else gold * 1e9
            order = np.argsort(-(utility + rng.gumbel(size=len(gold))), kind="stable")
            out.append(
                Comparison(
                    prompt,
                    tuple(texts[i] for i in order),
                    tuple(float(gold[i]) for i in order),
                )
            )
        return out

    def classification(self, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
        """``n`` digit strings ``USER digits END`` and labels: the one rule of ``CLASSES``
        (even, odd, low, high, asc) that every digit follows. Strings that follow two rules
        are redrawn, so every label is determined by the text."""
        rng = np.random.default_rng([seed, 4])
        texts, labels = [], []
        while len(texts) < n:
            label = int(rng.integers(len(CLASSES)))
            digits = self._valid(
                rng, CLASSES[label], int(rng.integers(self.cfg.min_digits, self.cfg.max_digits + 1))
            )
            if sum(all(satisfies(rule, digits)) for rule in CLASSES) != 1:
                continue
            texts.append(np.array([USER, *encode(digits), END], dtype=np.int64))
            labels.append(label)
        return texts, np.array(labels, dtype=np.int64)

    def pretraining_tokens(self, n_tokens: int, seed: int) -> np.ndarray:
        """A stream of ``n_tokens`` task tokens: dialogues as the labellers write them,
        separated by ``PAD``, every token a target (the "pre-training distribution" of PPO-ptx
        in this world)."""
        rng = np.random.default_rng([seed, 5])
        chunks, total = [], 0
        while total < n_tokens:
            ids, _ = self._render(self._dialogue(rng, noisy=True))
            chunks.append(np.array([*ids, PAD], dtype=np.int64))
            total += len(ids) + 1
        return np.concatenate(chunks)[:n_tokens]
