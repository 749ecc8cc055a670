"""The real embedded default model (SmolLM2-135M-Instruct Q4_1 from PyPI)."""

import pytest

from edge_repair.generation import ask

pytestmark = pytest.mark.slow

FACTS = {
    "What is the capital of Germany?": "Berlin",
    "What is the capital of France?": "Paris",
    "What is the capital of Japan?": "Tokyo",
    "What is the chemical symbol for gold?": "Au",
}


def test_default_model_answers_facts(default_patient):
    for question, expected in FACTS.items():
        assert expected in ask(default_patient, question, max_tokens=24), question


def test_runtime_matches_plain_mlx_lm(default_model_dir, default_patient):
    """Our f32 fast path gives the same greedy answers as a stock mlx-lm load of the 4-bit weights."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(default_model_dir))
    for question in FACTS:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
        stock = mlx_lm.generate(model, tokenizer, prompt, max_tokens=16)
        ours = ask(default_patient, question, max_tokens=16)
        assert ours == stock.strip(), question
