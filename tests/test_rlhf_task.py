"""The synthetic instruction task: formats, gold reward, labellers, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from scalelab.rlhf.task import (
    ASSISTANT,
    CLASSES,
    END,
    OPERATIONS,
    USER,
    SyntheticTask,
    TaskConfig,
    decode,
    encode,
    gold_reward,
    satisfies,
    score_text,
)


def test_gold_reward_grades_constraints_and_transforms() -> None:
    assert score_text("even", "4", "2468") == 1.0
    assert score_text("even", "4", "2463") == 0.75  # one wrong digit
    assert score_text("even", "4", "246") == 0.75  # one missing
    assert score_text("even", "4", "24680") == 0.75  # one extra
    assert score_text("asc", "4", "1324") == 0.75  # the 2 falls below its predecessor
    assert score_text("high", "5", "") == 0.0
    assert score_text("sort", "4213", "1234") == 1.0
    assert score_text("rev", "4213", "3124") == 1.0
    assert score_text("rev", "4213", "3125") == 0.75
    assert score_text("add", "42+913", "955") == 1.0
    task = SyntheticTask()
    prompt = task.prompts(1, seed=0)[0]
    finished = np.concatenate([encode(prompt.answer), [END]])
    assert gold_reward(prompt, finished) == 1.0
    assert gold_reward(prompt, encode(prompt.answer)) == 0.0  # never ended its turn


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_operation_has_correct_reference_answers(operation: str) -> None:
    task = SyntheticTask(TaskConfig(operations=(operation,), multi_turn_fraction=0.5))
    for prompt in task.prompts(50, seed=3):
        assert prompt.operation == operation
        assert prompt.score(prompt.answer) == 1.0
        assert prompt.ids[0] == USER and prompt.ids[-1] == ASSISTANT


def test_generators_are_seeded_and_reproducible() -> None:
    task = SyntheticTask(TaskConfig(multi_turn_fraction=0.3))
    a, b = task.demonstrations(20, seed=5), task.demonstrations(20, seed=5)
    assert all(np.array_equal(x.ids, y.ids) for x, y in zip(a, b, strict=True))
    c = task.demonstrations(20, seed=6)
    assert not all(np.array_equal(x.ids, y.ids) for x, y in zip(a, c, strict=True))
    first, again = task.comparisons(5, seed=1), task.comparisons(5, seed=1)
    assert [(c.prompt.text, c.completions, c.gold) for c in first] == [
        (c.prompt.text, c.completions, c.gold) for c in again
    ]


def test_multi_turn_demonstrations_mask_exactly_the_assistant_turns() -> None:
    task = SyntheticTask(TaskConfig(multi_turn_fraction=1.0, operations=OPERATIONS))
    for example in task.demonstrations(30, seed=0):
        ids, mask = example.ids.tolist(), example.loss_mask.tolist()
        assert ids.count(USER) >= 2  # every one is a dialogue
        inside = False  # between ASSISTANT and its END
        for token, target in zip(ids, mask, strict=True):
            if token == USER:
                assert not target
            elif token == ASSISTANT:
                assert not target
                inside = True
            else:
                assert target == inside, decode(ids)
                if token == END:
                    inside = False


def test_demonstrations_carry_labeller_noise() -> None:
    noisy = SyntheticTask(TaskConfig(demo_noise=0.3)).demonstrations(300, seed=0)
    clean = SyntheticTask(TaskConfig(demo_noise=0.0)).demonstrations(300, seed=0)

    def mean_gold(examples: list) -> float:
        scores = []
        for ex in examples:
            user = decode(ex.ids[1 : list(ex.ids).index(ASSISTANT)])
            answer = decode(ex.ids[ex.loss_mask][:-1])
            op, arg = user.split(" ")
            scores.append(score_text(op, arg, answer))
        return float(np.mean(scores))

    assert mean_gold(clean) == 1.0
    assert 0.5 < mean_gold(noisy) < 0.9


def test_comparisons_have_k_in_range_distinct_gold_and_bradley_terry_labels() -> None:
    task = SyntheticTask()
    exact = task.comparisons(200, seed=0, k_min=4, k_max=9, label_noise=0.0)
    sizes = [len(c.completions) for c in exact]
    assert min(sizes) >= 4 and max(sizes) <= 9 and max(sizes) >= 8
    for c in exact:
        assert len(set(c.gold)) == len(c.gold)
        assert list(c.gold) == sorted(c.gold, reverse=True)  # noiseless labellers rank by gold
        scores = [c.prompt.score(t) for t in c.completions]
        assert scores == pytest.approx(list(c.gold))

    # With noise tau, pair (i, j) is flipped with probability sigmoid(-(g_i - g_j) / tau).
    tau = 0.1
    noisy = task.comparisons(1500, seed=1, label_noise=tau)
    flipped, expected = [], []
    for c in noisy:
        g = np.array(c.gold)
        i, j = np.triu_indices(len(g), k=1)
        flipped += (g[i] < g[j]).tolist()
        expected += expit(-np.abs(g[i] - g[j]) / tau).tolist()
    assert np.mean(flipped) == pytest.approx(np.mean(expected), abs=0.01)
    assert np.mean(flipped) > 0.02


def test_classification_labels_are_determined_by_the_text() -> None:
    texts, labels = SyntheticTask().classification(300, seed=0)
    assert sorted(set(labels.tolist())) == list(range(len(CLASSES)))
    for ids, label in zip(texts, labels, strict=True):
        digits = decode(ids[1:-1])
        holds = [all(satisfies(rule, digits)) for rule in CLASSES]
        assert holds.count(True) == 1 and holds[label]


def test_pretraining_stream_and_config_validation() -> None:
    tokens = SyntheticTask().pretraining_tokens(5000, seed=0)
    assert tokens.shape == (5000,) and tokens.dtype == np.int64
    assert set(np.unique(tokens)) <= set(range(128))
    with pytest.raises(ValueError, match="min_digits"):
        TaskConfig(min_digits=6, max_digits=5)
    with pytest.raises(ValueError, match="k_min"):
        SyntheticTask().comparisons(1, seed=0, k_min=5, k_max=4)
