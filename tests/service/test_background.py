"""Background work behind interactive predicts: the token window batch jobs share, and their scorer."""

from __future__ import annotations

import asyncio

from service.background import BATCH_PRIORITY, BackgroundScorer, TokenWindow
from tests.fakes import FakeScorer


def test_the_token_window_bounds_what_batches_have_in_the_engine():
    window, peak = TokenWindow(100), []

    async def prompt(tokens: int) -> None:
        async with window.hold(tokens):
            peak.append(window.used)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(*(prompt(40) for _ in range(10)), prompt(250))

    asyncio.run(main())
    assert len(peak) == 11 and 250 in peak  # the prompt larger than the window went in alone
    assert all(used <= 100 for used in peak if used != 250) and 80 in peak and window.used == 0


class _Quiet:
    """The app state as the background scorer reads it: no predict in flight."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def interactive_quiet(self, max_wait_s: float) -> None:
        self.waits.append(max_wait_s)


def test_background_prompts_go_in_one_by_one_at_the_lower_priority():
    scorer, state = FakeScorer(), _Quiet()
    background = BackgroundScorer(scorer, TokenWindow(1_000), state, max_yield_s=0.5)
    prompts = [background.tokenize("Label: great fun"), background.tokenize("Label: boring")]
    scored = asyncio.run(background.score(prompts, ["great", "boring"]))
    direct = asyncio.run(scorer.score(prompts, ["great", "boring"]))
    assert [s.label_logprobs for s in scored] == [s.label_logprobs for s in direct]
    assert scorer.priorities[:2] == [BATCH_PRIORITY] * 2 and state.waits == [0.5, 0.5]
    assert background.model_name == scorer.model_name  # everything else is the engine's own


def test_background_hidden_state_reads_wait_for_predicts_too_and_are_the_engine_s_own():
    import inspect

    from controller.hidden_fit import HiddenStateReader
    from service.fake_engine import FakeHiddenScorer

    scorer, state = FakeHiddenScorer(), _Quiet()
    background = BackgroundScorer(scorer, TokenWindow(1_000), state, max_yield_s=0.5)
    prompts = [background.tokenize("Label: great fun"), background.tokenize("Label: boring")]
    read = asyncio.run(background.hidden_states(prompts))
    assert (read == asyncio.run(scorer.hidden_states(prompts))).all() and state.waits == [0.5, 0.5]
    # A method of its own, not one found through __getattr__ (which runtime protocol checks skip from 3.12).
    assert inspect.getattr_static(background, "hidden_states") and isinstance(background, HiddenStateReader)
