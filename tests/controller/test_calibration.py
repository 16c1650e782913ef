import numpy as np

from controller.calibration import DomainWords, apply_bias, content_free_queries, estimate_bias


def test_apply_bias_removes_a_constant_bias():
    bias = np.array([0.8, 0.2])
    # A model that says "label 0" four times too often: calibrating restores the balanced prior.
    assert np.allclose(apply_bias(bias, estimate_bias(np.stack([bias, bias]))), [0.5, 0.5])
    probs = apply_bias(np.array([[0.8, 0.2], [0.6, 0.4]]), bias)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert probs[1].argmax() == 1  # 0.6/0.8 < 0.4/0.2


def test_content_free_queries_fill_every_field():
    assert content_free_queries(["premise", "hypothesis"])[0] == {"premise": "N/A", "hypothesis": "N/A"}
    assert len(content_free_queries(["text"])) == 3


def test_domain_words_follow_average_length_and_seed():
    inputs = [{"text": "a b c d"}, {"text": "e f"}]
    words = DomainWords.from_inputs(inputs, ["text"])
    assert words.mean_lengths == {"text": 3}
    samples = words.sample(20, seed=3)
    assert len(samples) == 20
    assert all(len(s["text"].split()) == 3 for s in samples)
    assert all(set(s["text"].split()) <= set("abcdef") for s in samples)
    assert samples == words.sample(20, seed=3)
    assert samples != words.sample(20, seed=4)


def test_domain_words_per_field_for_pairs():
    inputs = [{"premise": "one two three four", "hypothesis": "x"}]
    words = DomainWords.from_inputs(inputs, ["premise", "hypothesis"])
    sample = words.sample(1, seed=0)[0]
    assert len(sample["premise"].split()) == 4 and sample["hypothesis"] == "x"
