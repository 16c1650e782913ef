"""Near-twins: which demonstrations a held-back example may not draw, and the groups of copies a pool holds."""

import numpy as np

from controller.near_twins import NEAR_TWIN_COSINE, cosine_for, twin_groups, without_near_twins


def test_a_held_back_example_s_near_twins_are_not_its_demonstrations():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 8))
    vectors[3] = vectors[0] + 0.01 * rng.normal(size=8)  # row 3: a near-copy of held-back row 0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    kept, with_twins = without_near_twins(vectors, held=[0, 1], pool=[2, 3, 4, 5], keep=2)
    assert kept == [2, 4, 5] and with_twins == 1
    # A pool of copies keeps the largest count's demonstrations, the least similar ones.
    copies = np.repeat(vectors[:1], 4, axis=0)
    kept, with_twins = without_near_twins(copies, held=[0], pool=[1, 2, 3], keep=2)
    assert len(kept) == 2 and with_twins == 1


def test_copies_that_differ_in_punctuation_or_case_are_twins_and_empty_texts_are_not():
    vectors = np.eye(5, dtype=np.float32)  # no two alike by embedding
    inputs = [{"text": "Here she is"}, {"text": ""}, {"text": "HERE she  is......"}, {"text": "..."},
              {"text": "there she is"}]
    kept, with_twins = without_near_twins(vectors, held=[0, 1], pool=[2, 3, 4], keep=1, inputs=inputs)
    assert kept == [3, 4] and with_twins == 1


def test_a_pool_s_twin_groups_join_copies_by_text_and_near_copies_by_embedding():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(7, 16))
    vectors[1] = vectors[0] + 0.01 * rng.normal(size=16)  # 0 ~ 1 by embedding
    vectors[2] = vectors[1] + 0.01 * rng.normal(size=16)  # and 1 ~ 2: one group of three
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    inputs = [{"text": f"text {i}"} for i in range(7)]
    inputs[5] = {"text": "Text 3!"}  # 3 and 5: copies by text
    inputs[4], inputs[6] = {"text": ""}, {"text": "..."}  # empty texts are no evidence of a copy
    groups = twin_groups(vectors, inputs, NEAR_TWIN_COSINE)
    assert (groups.groups, groups.examples, groups.by_cosine) == (2, 5, True)
    by_text = twin_groups(vectors, inputs, NEAR_TWIN_COSINE, max_cosine_rows=3)
    assert (by_text.groups, by_text.examples, by_text.by_cosine) == (1, 2, False)
    assert twin_groups(np.zeros((0, 16)), [], NEAR_TWIN_COSINE).groups == 0


def test_inputs_of_several_fields_count_only_copies():
    assert cosine_for(["text"]) == NEAR_TWIN_COSINE < cosine_for(["premise", "hypothesis"])
