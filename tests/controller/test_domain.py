"""The queries prompt-based calibration estimates a bias from: content-free inputs, random in-domain words, and
the settings that say how many."""

import pytest

from controller.domain import DEFAULT_DOMAIN, REFERENCE_DOMAIN, DomainSettings, DomainWords, content_free_queries


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


def test_settings_reject_nonsense():
    with pytest.raises(ValueError):
        DomainSettings(samples=0)
    with pytest.raises(ValueError):
        DomainSettings(pooling=1.5)
    with pytest.raises(ValueError):
        DomainSettings(max_sets=0)


def test_a_shared_set_takes_its_own_count_of_strings():
    settings = DomainSettings(samples=2, shared_set_samples=5)
    assert settings.samples_for(shared_set=True) == 5 and settings.samples_for(shared_set=False) == 2
    assert DomainSettings(samples=3).samples_for(shared_set=True) == 3  # none given: the same as any set
    assert DEFAULT_DOMAIN.samples_for(shared_set=False) < REFERENCE_DOMAIN.samples_for(shared_set=False) == 20
    with pytest.raises(ValueError):
        DomainSettings(shared_set_samples=0)


def test_extended_words_are_the_words_of_all_the_inputs():
    first = [{"text": "a b c d"}, {"text": "e"}]
    later = [{"text": "f g h i j k"}, {"text": ""}]
    extended = DomainWords.from_inputs(first, ["text"]).extended(later, len(first))
    assert extended == DomainWords.from_inputs(first + later, ["text"])
    assert extended.mean_lengths == {"text": 3}  # 11 words over 4 inputs


def test_more_strings_of_a_seed_begin_with_the_fewer():
    words = DomainWords.from_inputs([{"text": "one two three four five six"}], ["text"])
    assert words.sample(5, seed=[7, 1, 2])[:2] == words.sample(2, seed=[7, 1, 2])
    assert DomainWords.from_inputs([], ["text"]).empty and not words.empty
