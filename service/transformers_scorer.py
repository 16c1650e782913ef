"""Label scoring with a plain transformers forward pass: the reference that vLLM's scores are checked against,
and a backend for benchmarks on a machine that has a GPU but no vLLM. The service always serves with vLLM.

It has no prefix cache: every token of every prompt is computed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controller.scoring import ScoredPrompt, continuation_logprobs, continuation_requests


class TransformersScorer:
    """``LabelScorer`` on a transformers causal LM. Sequences are left-padded and batched by length up to
    ``max_batch_tokens``; only the last position's logits are computed (``logits_to_keep=1``)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str = "float32",
                 max_batch_tokens: int = 16_384) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.model_name = self.model_dir.name
        self.dtype = dtype
        self.device = device
        self._torch = torch
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self._model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        self._model.to(device).eval()
        # What vLLM would take as the window: the model's own maximum.
        self.max_model_len = int(getattr(self._model.config, "max_position_embeddings", 8192))
        self._max_batch_tokens = max_batch_tokens
        self._pad = int(self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0)

    def tokenize(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=True)["input_ids"])

    def continuation_ids(self, continuation: str) -> list[int]:
        return list(self._tokenizer(continuation, add_special_tokens=False)["input_ids"])

    def next_token_logprobs(self, sequences: Sequence[list[int]], wanted: Sequence[list[int]]) -> list[list[float]]:
        """log P(token | sequence) for each sequence's wanted tokens, in float32."""
        torch = self._torch
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out: list[list[float]] = [[] for _ in sequences]
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and len(sequences[order[end]]) * (end + 1 - start) <= self._max_batch_tokens:
                end += 1
            batch = order[start:end]
            width = len(sequences[batch[-1]])
            ids = torch.full((len(batch), width), self._pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = sequences[i]
                ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self._model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                     position_ids=positions.to(self.device), logits_to_keep=1).logits[:, -1]
                logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(batch):
                out[i] = [float(logprobs[row, t]) for t in wanted[i]]
            start = end
        return out

    async def score(self, prompts: Sequence[list[int]], continuations: Sequence[str]) -> list[ScoredPrompt]:
        conts = [self.continuation_ids(c) for c in continuations]
        requests = continuation_requests(conts)
        prefixes = list(requests)
        sequences = [list(p) + list(prefix) for p in prompts for prefix in prefixes]
        wanted = [requests[prefix] for _ in prompts for prefix in prefixes]
        read_all = self.next_token_logprobs(sequences, wanted)
        scored: list[ScoredPrompt] = []
        for i, prompt in enumerate(prompts):
            answers = read_all[i * len(prefixes):(i + 1) * len(prefixes)]
            read = {prefix: dict(zip(requests[prefix], answer, strict=True))
                    for prefix, answer in zip(prefixes, answers, strict=True)}
            sent = sum(len(prompt) + len(prefix) for prefix in prefixes)
            scored.append(ScoredPrompt(label_logprobs=continuation_logprobs(conts, read), prompt_tokens=len(prompt),
                                       computed_tokens=sent, cached_tokens=0))
        return scored
