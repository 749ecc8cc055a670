import mlx.core as mx

from edge_repair.engine.capture import capture
from edge_repair.loading import load_patient


def test_batched_capture_matches_each_prompt_alone(tiny_model_dir):
    model = load_patient(str(tiny_model_dir), compute="f32").model
    prompts = [[1, 5, 6, 7, 8, 9], [1, 5, 6, 7, 20], [1, 5, 6, 30, 31, 32, 33]]
    batched = capture(model, prompts, [1, 2], batch_size=2)
    for i, prompt in enumerate(prompts):
        alone = capture(model, [prompt], [1, 2])
        for layer in (1, 2):
            assert mx.allclose(batched.resid[layer][mx.array(batched.rows(i))], alone.resid[layer], atol=1e-5)
            assert mx.allclose(batched.mlp_in[layer][mx.array(batched.rows(i))], alone.mlp_in[layer], atol=1e-5)
    assert batched.rows(2, [-1]) == [len(prompts[0]) + len(prompts[1]) + len(prompts[2]) - 1]


def test_capture_leaves_model_unchanged(tiny_model_dir):
    model = load_patient(str(tiny_model_dir), compute="f32").model
    tokens = mx.array([[1, 5, 6, 7]])
    before = model(tokens)
    capture(model, [[1, 5, 6, 7], [1, 5, 9]], [0, 3])
    assert type(model.layers[0]).__name__ == "TransformerBlock"
    assert mx.allclose(model(tokens), before)
