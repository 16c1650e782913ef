import numpy as np

from controller.scoring import continuation_logprobs, continuation_requests, normalise_label_logprobs


def test_single_token_labels_need_one_request():
    assert continuation_requests([[5], [7], [9]]) == {(): [5, 7, 9]}


def test_multi_token_labels_share_prefixes():
    requests = continuation_requests([[5, 6], [5, 8, 1], [9]])
    assert requests == {(): [5, 9], (5,): [6, 8], (5, 8): [1]}


def test_whole_verbalizer_logprob_is_the_sum_over_its_tokens():
    read = {(): {5: -1.0, 9: -2.0}, (5,): {6: -0.5, 8: -3.0}, (5, 8): {1: -0.25}}
    assert continuation_logprobs([[5, 6], [5, 8, 1], [9]], read) == [-1.5, -4.25, -2.0]


def test_normalise_is_a_stable_softmax():
    probs = normalise_label_logprobs([-1000.0, -1001.0])
    assert np.isclose(probs.sum(), 1.0) and np.isclose(probs[0] / probs[1], np.e)
