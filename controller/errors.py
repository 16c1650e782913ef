"""Why the library cannot do what it was asked: a batch no prompt can give (the client's request is at fault),
or a task that cannot be fitted."""

from __future__ import annotations


class UnplannableInputError(ValueError):
    """One input of a batch cannot be made into a prompt the engine takes; ``index`` says which."""

    index: int


class InputTooLongError(UnplannableInputError):
    """A query does not fit the model's context window even without demonstrations."""

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(
            f"inputs[{index}] needs {tokens} prompt tokens without demonstrations, more than the model's "
            f"context window allows ({limit}); shorten the input"
        )
        self.index, self.tokens, self.limit = index, tokens, limit


class EmptyPromptError(UnplannableInputError):
    """A query's prompt has no tokens: no demonstrations, no instruction, and a template that puts no text
    around an empty input. No engine scores an empty prompt."""

    def __init__(self, index: int) -> None:
        super().__init__(
            f"inputs[{index}] makes an empty prompt: the input is empty, the task's template puts no text around "
            "it and the prompt has no demonstrations; give the input some text, or ask for demonstrations "
            "(demos of 1 or more)"
        )
        self.index = index


class BudgetTooSmallError(ValueError):
    """The batch's cheapest prompts already exceed the token budget."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(
            f"budget.max_prompt_tokens={budget} is too small: the cheapest prompts for these inputs already need "
            f"{needed} tokens; raise the budget or send fewer inputs"
        )
        self.needed, self.budget = needed, budget


class NoHeadError(ValueError):
    """``decision: "head"`` or ``"hidden"`` asked of a task whose fit has no such head."""

    def __init__(self, decision: str = "head") -> None:
        if decision == "hidden":
            super().__init__('decision "hidden" needs the task\'s hidden-state head, which its fit makes on an engine '
                             'that reads hidden states: fit the task (with at least two labels among its labeled '
                             'examples) or leave decision "auto"')
        else:
            super().__init__('decision "head" needs the task\'s embedding head, which its fit makes: fit the task '
                             '(with at least two labels among its labeled examples) or leave decision "auto"')


class FitError(ValueError):
    """A task cannot be fitted as asked: too few labeled examples to hold back and to demonstrate with."""
