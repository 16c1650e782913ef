import pytest

from controller.templates import Demo, PromptTemplate, TemplateError


def test_parse_finds_fields_in_order():
    t = PromptTemplate.parse("Premise: {premise}\nHypothesis: {hypothesis}\nAnswer: {label}")
    assert t.fields == ("premise", "hypothesis")


@pytest.mark.parametrize(
    "template, message",
    [
        ("Input: {text}", "exactly once"),
        ("{label} Input: {text}", "end with"),
        ("Input: {text} {label} {label}", "exactly once"),
        ("Label: {label}", "at least one input field"),
        ("Input: {text:>10} {label}", "format spec"),
        ("Input: {0} {label}", "plain name"),
        ("Input: {text {label}", "not a valid format"),
    ],
)
def test_parse_rejects_bad_templates(template, message):
    with pytest.raises(TemplateError, match=message):
        PromptTemplate.parse(template)


def test_query_is_template_cut_before_label_with_space_moved_to_continuation():
    t = PromptTemplate.parse("Input: {text}\nLabel: {label}")
    assert t.render_query({"text": "good"}) == "Input: good\nLabel:"
    assert t.continuation("positive") == " positive"
    assert t.render_demo(Demo({"text": "bad"}, "negative")) == "Input: bad\nLabel: negative"


def test_build_prompt_joins_instruction_demos_query():
    t = PromptTemplate.parse("Q: {text}\nA: {label}", instruction="Classify.", separator="\n\n")
    prompt = t.build_prompt([Demo({"text": "x"}, "yes"), Demo({"text": "y"}, "no")], {"text": "z"})
    assert prompt == "Classify.\n\nQ: x\nA: yes\n\nQ: y\nA: no\n\nQ: z\nA:"


def test_braces_in_inputs_are_not_reinterpreted():
    t = PromptTemplate.parse("Input: {text}\nLabel: {label}")
    assert t.render_query({"text": "{label} {0}"}) == "Input: {label} {0}\nLabel:"


def test_normalize_input_accepts_string_for_single_field_only():
    single = PromptTemplate.parse("Input: {text}\nLabel: {label}")
    pair = PromptTemplate.parse("P: {premise}\nH: {hypothesis}\nA: {label}")
    assert single.normalize_input("hi") == {"text": "hi"}
    assert single.normalize_input({"text": "hi"}) == {"text": "hi"}
    with pytest.raises(TemplateError, match="plain string"):
        pair.normalize_input("hi")
    with pytest.raises(TemplateError, match="missing"):
        pair.normalize_input({"premise": "p"})
    with pytest.raises(TemplateError, match="does not use"):
        single.normalize_input({"text": "a", "other": "b"})
