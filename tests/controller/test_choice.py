"""The fit's choice rule: the cheapest option not significantly below the best, never worse than the unfitted
default, and the default kept where the evidence is thin."""

import numpy as np

from controller.cascade import HEAD_STAGE, HIDDEN_STAGE, Cascade
from controller.choice import MIN_PER_LABEL, Option, choose, fit_options
from controller.training import TrainingData

N = 200


def _answers(gold: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Answers right on a ``accuracy`` share of the items (chosen at random), wrong on the rest."""
    right = np.random.default_rng(seed).permutation(len(gold)) < round(accuracy * len(gold))
    return np.where(right, gold, 1 - gold)


def _option(k: int, answers: np.ndarray, tokens: float, default: bool = False) -> Option:
    return Option(f"k={k}", Cascade((k,), ()), answers, np.full(len(answers), tokens), default)


GOLD = np.random.default_rng(0).integers(0, 2, N)


def test_an_option_as_good_as_the_default_and_cheaper_replaces_it():
    answers = _answers(GOLD, 0.8, seed=1)
    default = _option(4, answers, 200, default=True)
    cheap = _option(1, answers.copy(), 60)
    choice = choose([default, cheap], GOLD, 2)
    assert choice.option is cheap and not choice.serves_default
    assert "cheaper" in choice.reason and choice.reason.startswith("k=1: 0.")


def test_a_costlier_option_replaces_the_default_only_when_significantly_better():
    default = _option(4, _answers(GOLD, 0.6, seed=1), 200, default=True)
    much_better = _option(16, _answers(GOLD, 0.95, seed=2), 550)
    assert choose([default, much_better], GOLD, 2).option is much_better
    # Two items better out of 200: noise, so the default stays.
    slightly = default.answers.copy()
    wrong = np.flatnonzero(slightly != GOLD)[:2]
    slightly[wrong] = GOLD[wrong]
    choice = choose([default, _option(16, slightly, 550)], GOLD, 2)
    assert choice.serves_default and "not significantly better" in choice.reason


def test_the_cheapest_option_not_significantly_below_the_best_wins_over_a_lucky_expensive_one():
    base = _answers(GOLD, 0.8, seed=1)
    default = _option(4, base, 200, default=True)
    lucky = base.copy()  # three points better by luck: it differs both ways, on nine items
    wrong, right = np.flatnonzero(lucky != GOLD)[:6], np.flatnonzero(lucky == GOLD)[:3]
    lucky[wrong] = GOLD[wrong]
    lucky[right] = 1 - GOLD[right]
    cheap = _option(0, base.copy(), 20)
    choice = choose([default, _option(16, lucky, 550), cheap], GOLD, 2)
    assert choice.option is cheap
    candidates = {c["option"]: c for c in choice.candidates}
    assert not candidates["k=0"]["significantly_below_best"]


def test_a_cheap_option_significantly_below_the_default_is_not_taken():
    default = _option(4, _answers(GOLD, 0.9, seed=1), 200, default=True)
    poor = _option(0, _answers(GOLD, 0.55, seed=3), 20)
    choice = choose([default, poor], GOLD, 2)
    assert choice.serves_default
    assert {c["option"]: c["significantly_below_best"] for c in choice.candidates} == {"k=0": True, "k=4": False}


def test_thin_evidence_keeps_the_default_and_says_so():
    n_labels = 4
    gold = np.arange(MIN_PER_LABEL * n_labels - 1) % n_labels
    default = _option(4, (gold + 1) % n_labels, 200, default=True)  # always wrong
    perfect = _option(1, gold.copy(), 60)
    choice = choose([default, perfect], gold, n_labels)
    assert choice.serves_default and "fewer than 10 per label" in choice.reason


def test_the_held_back_estimate_comes_with_its_interval():
    default = _option(4, _answers(GOLD, 0.8, seed=1), 200, default=True)
    described = choose([default], GOLD, 2).describe()
    low, high = described["macro_f1_interval"]
    assert low < described["macro_f1"] < high and high - low < 0.2
    assert described["serves_default"] and described["stages"] == [4]


def test_a_cheaper_option_must_show_it_loses_little_not_merely_that_it_is_not_significantly_worse():
    base = _answers(GOLD, 0.8, seed=1)
    cheaper = base.copy()  # three points worse, differing both ways on 34 items: neither significantly worse nor
    right, wrong = np.flatnonzero(cheaper == GOLD)[:20], np.flatnonzero(cheaper != GOLD)[:14]  # shown close
    cheaper[right] = 1 - GOLD[right]
    cheaper[wrong] = GOLD[wrong]
    default = _option(4, base, 200, default=True)
    choice = choose([default, _option(1, cheaper, 60)], GOLD, 2)
    assert choice.serves_default
    assert {c["option"]: c["significantly_below_best"] for c in choice.candidates}["k=1"] is False


def test_the_reason_never_prints_a_negative_zero():
    answers = _answers(GOLD, 0.8, seed=1)
    choice = choose([_option(4, answers, 200, default=True), _option(1, answers.copy(), 60)], GOLD, 2)
    assert "at most 0.00 below the default count (k=4" in choice.reason and "-0.00" not in choice.reason


def test_options_judged_on_fewer_examples_are_compared_on_the_examples_both_had():
    default = _option(4, _answers(GOLD, 0.7, seed=1), 200, default=True)
    # Right on every one of the 40 examples it was scored on: better there, but only by what 40 can show.
    dear = _option(16, GOLD[:40].copy(), 600)
    choice = choose([default, dear], GOLD, 2)
    rows = {c["option"]: c["held_back"] for c in choice.candidates}
    assert rows == {"k=4": N, "k=16": 40}
    same = _option(16, default.answers[:40].copy(), 600)  # what the default answered there: no difference
    assert choose([default, same], GOLD, 2).option is default


def test_no_option_reads_the_rows_a_count_was_not_scored_on():
    """What sits past a count's scored rows (placeholders) must not change any option or its thresholds."""
    rng = np.random.default_rng(0)
    n, n_dear = 120, 40
    gold = rng.integers(0, 2, n)

    def distributions(accuracy: float, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        answers = np.where(r.random(n) < accuracy, gold, 1 - gold)
        confidence = 0.55 + 0.4 * r.random(n)
        out = np.zeros((n, 2))
        out[np.arange(n), answers], out[np.arange(n), 1 - answers] = confidence, 1 - confidence
        return out

    tokens = np.array([[20, 100, 400]] * n)
    tokens[n_dear:, 2] = 0

    def options(past: np.ndarray) -> list[tuple[str, tuple, list, list]]:
        probs = np.stack([distributions(0.7, 1), distributions(0.8, 2), distributions(0.98, 3)], axis=1)
        probs[n_dear:, 2] = past
        data = TrainingData(features=np.zeros((n, 3)), correct=np.zeros((n, 3), dtype=int), prompt_tokens=tokens,
                            distributions=probs, gold=gold, prompted={}, engine_tokens={}, scored=(n, n, n_dear))
        return [(o.name, o.cascade.thresholds, o.answers.tolist(), o.tokens.tolist())
                for o in fit_options(data, probs, probs, [0, 4, 16], 4, 2, 0)]

    perfect = np.eye(2)[gold[n_dear:]]  # what a leak would read as a perfect count
    assert options(np.full((n - n_dear, 2), 0.5)) == options(perfect)


def test_an_option_judged_on_too_few_examples_per_label_does_not_overrule_the_default():
    gold = np.arange(N) % 10  # ten labels
    default = Option("k=4", Cascade((4,), ()), np.where(np.arange(N) % 3 == 0, (gold + 1) % 10, gold),
                     np.full(N, 200.0), True)
    few = Option("k=16", Cascade((16,), ()), gold[:60].copy(), np.full(60, 600.0))  # right on all of its 60
    assert choose([default, few], gold, 10).option is default


def test_the_head_s_evidence_on_every_labeled_example_counts_when_it_is_compared():
    gold = np.random.default_rng(0).integers(0, 2, 1000)
    head_answers = _answers(gold, 0.84, seed=5)
    default = _option(4, _answers(gold[:N], 0.80, seed=6), 200, default=True)

    def head(extends: bool) -> Option:
        n = len(gold) if extends else N
        return Option("head", Cascade((HEAD_STAGE,), ()), head_answers[:n], np.zeros(n), extends=extends)

    # On the 200 examples the counts were scored on alone, it is not shown to lose at most 0.02; its 800 more
    # cross-fitted answers show it.
    assert choose([default, head(False)], gold[:N], 2).option is default
    chosen = choose([default, head(True)], gold, 2)
    assert chosen.option.name == "head" and chosen.macro_f1.high - chosen.macro_f1.low < 0.06
    assert {c["option"]: c["held_back"] for c in chosen.candidates} == {"head": 1000, "k=4": N}


def test_the_hidden_state_head_joins_the_family_alone_judged_on_every_example_it_read():
    rng = np.random.default_rng(0)
    n = 60
    gold = rng.integers(0, 2, 200)
    probs = np.stack([np.eye(2)[gold[:n]] * 0.6 + 0.2] * 2, axis=1)
    data = TrainingData(features=np.zeros((n, 2)), correct=np.ones((n, 2), dtype=int),
                        prompt_tokens=np.array([[20, 100]] * n), distributions=probs, gold=gold[:n], prompted={},
                        engine_tokens={})
    hidden = np.eye(2)[gold] * 0.8 + 0.1
    options = {o.name: o for o in fit_options(data, probs, probs, [0, 4], 4, 2, 0, None,
                                              [("hidden k=1", hidden, np.full(200, 50))])}
    option = options["hidden k=1"]
    assert option.cascade == Cascade((HIDDEN_STAGE,), ()) and option.extends and option.mean_tokens == 50
    assert len(option.answers) == 200 and (option.answers == gold).all()


def test_a_cascade_whose_second_stage_answers_nothing_is_its_first_stage_and_is_left_out():
    rng = np.random.default_rng(1)
    n = 200
    gold = rng.integers(0, 2, 1000)
    # The counts: k=4 always right and sure, k=0 a coin.
    probs = np.stack([np.full((n, 2), 0.5), np.eye(2)[gold[:n]] * 0.9 + 0.05], axis=1)
    data = TrainingData(features=np.zeros((n, 2)), correct=np.ones((n, 2), dtype=int),
                        prompt_tokens=np.array([[20, 100]] * n), distributions=probs, gold=gold[:n], prompted={},
                        engine_tokens={})

    def family(head: np.ndarray) -> dict[str, Option]:
        return {o.name: o for o in fit_options(data, probs, probs, [0, 4], 4, 2, 0, head)}

    # A head right and sure on every example: no threshold sends one on, and the cascade is the head again.
    sure = np.eye(2)[gold] * 0.98 + 0.01
    assert "head then k=4" not in family(sure) and "head" in family(sure)
    # A head unsure where it is wrong (a fifth of the examples): the cascade sends those on, and stays.
    wrong = rng.permutation(len(gold)) < 200
    unsure = sure.copy()
    unsure[wrong] = np.eye(2)[1 - gold[wrong]] * 0.1 + 0.45
    cascade = family(unsure)["head then k=4"]
    assert 0 < cascade.mean_tokens < 100 and (cascade.answers == gold[:n]).mean() > 0.95
