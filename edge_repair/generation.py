"""Chat turns on a loaded patient: prompt building, length checks and streamed replies."""

from collections.abc import Iterator

from edge_repair.errors import InputError
from edge_repair.loading import Patient

MAX_MESSAGE_CHARS = 32_000


def check_message(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise InputError("the prompt is empty")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InputError(f"the prompt has {len(text):,} characters; the limit is {MAX_MESSAGE_CHARS:,}")
    return text


def prompt_tokens(patient: Patient, messages: list[dict], max_tokens: int = 0) -> list[int]:
    """Token ids of the chat template applied to `messages`, ready for the assistant's turn."""
    tokens = patient.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if len(tokens) + max_tokens > patient.context_length:
        raise InputError(
            f"the conversation needs {len(tokens)} + {max_tokens} tokens; the model's context is {patient.context_length}"
        )
    return list(tokens)


def stream_reply(patient: Patient, messages: list[dict], max_tokens: int = 256, temp: float = 0.0) -> Iterator[str]:
    """Yield the assistant's reply to `messages` piece by piece (greedy when temp is 0)."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    if max_tokens < 1:
        raise InputError("--max-tokens must be at least 1")
    if temp < 0:
        raise InputError("--temp must be 0 or more")
    tokens = prompt_tokens(patient, messages, max_tokens)
    for chunk in stream_generate(patient.model, patient.tokenizer, tokens, max_tokens=max_tokens,
                                 sampler=make_sampler(temp=temp)):
        yield chunk.text


def reply(patient: Patient, messages: list[dict], max_tokens: int = 256, temp: float = 0.0) -> str:
    return "".join(stream_reply(patient, messages, max_tokens, temp)).strip()


def ask(patient: Patient, prompt: str, max_tokens: int = 256, temp: float = 0.0) -> str:
    return reply(patient, [{"role": "user", "content": check_message(prompt)}], max_tokens, temp)
