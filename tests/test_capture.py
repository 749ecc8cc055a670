import mlx.core as mx
import numpy as np

from edge_repair.engine.capture import capture, prefix_cache, repeat_cache, reused_prefixes, shared_prefix
from edge_repair.engine.verify import first_tokens, greedy_replies, greedy_tokens, reply_tokens, unchanged
from edge_repair.loading import load_patient
from tests.tiny import HIDDEN_UNITS


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


def test_capture_keeps_only_the_kinds_asked_for(tiny_model_dir):
    model = load_patient(str(tiny_model_dir), compute="f32").model
    prompts = [[1, 5, 6, 7, 8], [1, 5, 9]]
    full = capture(model, prompts, [1, 2])
    only = capture(model, prompts, [1, 2], kinds=("mlp_in",))
    assert only.resid == {} and only.mlp_out == {}
    assert mx.allclose(only.mlp_in[2], full.mlp_in[2])
    last = capture(model, prompts, [1, 2], positions=[-1, 0])
    assert last.lengths == [2, 2] and last.rows(1, [-1]) == [3]
    picked = mx.array(full.rows(0, [-1, 0]) + full.rows(1, [-1, 0]))
    assert mx.allclose(last.resid[1], full.resid[1][picked])


def test_capture_leaves_model_unchanged(tiny_model_dir):
    model = load_patient(str(tiny_model_dir), compute="f32").model
    tokens = mx.array([[1, 5, 6, 7]])
    before = model(tokens)
    capture(model, [[1, 5, 6, 7], [1, 5, 9]], [0, 3])
    assert type(model.layers[0]).__name__ == "TransformerBlock"
    assert mx.allclose(model(tokens), before)


def test_shared_prefix_is_run_once_without_changing_activations(tiny_model_dir):
    model = load_patient(str(tiny_model_dir), compute="f32").model
    head = list(range(3, 15))
    prompts = [head + [20, 21], head + [22], head + [23, 24, 25]]
    assert shared_prefix(prompts) == len(head)
    shared = capture(model, prompts, [1, 3], batch_size=2)
    separate = capture(model, prompts, [1, 3], batch_size=2, min_prefix=10**6)
    for layer in (1, 3):
        assert mx.allclose(shared.mlp_in[layer], separate.mlp_in[layer], atol=1e-4)
        assert mx.allclose(shared.resid[layer], separate.resid[layer], atol=1e-3)
    # positions may fall inside the shared prefix (0) or after it (-1)
    ends = capture(model, prompts, [1], batch_size=2, positions=[0, -1])
    picked = mx.array([r for i in range(len(prompts)) for r in separate.rows(i, [0, -1])])
    assert mx.allclose(ends.mlp_in[1], separate.mlp_in[1][picked], atol=1e-4)
    # only positions after the prefix: its KV cache is all that runs (memoised within an edit)
    with reused_prefixes():
        for _ in range(2):
            last = capture(model, prompts, [1, 3], batch_size=2, positions=[-1])
            picked = mx.array([separate.rows(i, [-1])[0] for i in range(len(prompts))])
            assert mx.allclose(last.resid[3], separate.resid[3][picked], atol=1e-3)


def test_greedy_and_teacher_forced_checks_agree_with_a_shared_prefix(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["hello there", "what is up", "tell me more"]
    together = greedy_replies(patient, prompts, 6)
    alone = [greedy_replies(patient, [p], 6)[0] for p in prompts]
    assert together == alone
    replies = [reply_tokens(patient.tokenizer, r) for r in together]
    assert all(unchanged(patient, prompts, replies))
    assert not any(unchanged(patient, prompts, [[(t[0] + 1) % 50] + t[1:] if t else [7] for t in replies]))


def test_teacher_forced_losses_are_each_reply_tokens_cross_entropy(tiny_model_dir):
    from edge_repair.engine.verify import chat_tokens, forced_losses

    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["hello there", "what is up", "tell me more"]
    replies = [[5, 9, 2, 7], [11], [3, 3, 8]]
    for batch_size in (1, 3):  # padded rows and the shared prefix's cache change nothing
        for prompt, reply, got in zip(prompts, replies, forced_losses(patient, prompts, replies, batch_size)):
            ids = chat_tokens(patient.tokenizer, prompt) + reply
            logits = patient.model(mx.array([ids]))[0, len(ids) - len(reply) - 1:-1].astype(mx.float32)
            expected = np.array(mx.logsumexp(logits, axis=-1) - logits[mx.arange(len(reply)), mx.array(reply)])
            assert got.shape == (len(reply),) and np.allclose(got, expected, atol=1e-3)


def test_greedy_tokens_stop_at_each_prompts_own_limit(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["Hello there.", "What is two plus two?", "Name a colour."]
    tokens = greedy_tokens(patient, prompts, [2, 6, 1])
    assert [len(t) <= n for t, n in zip(tokens, [2, 6, 1])] == [True, True, True] and len(tokens[1]) > 2
    full = greedy_tokens(patient, prompts, 6)
    assert all(t == f[:len(t)] for t, f in zip(tokens, full))  # the same greedy path, cut shorter
    assert greedy_replies(patient, prompts, 6) == [patient.tokenizer.decode(f).strip() for f in full]


def test_a_draft_changes_only_how_fast_greedy_replies_come_not_what_they_are(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["Hello there.", "What is two plus two?", "Name a colour.", "Say something.", "Count to three."]
    plain = greedy_tokens(patient, prompts, 6)
    stop = patient.tokenizer.eos_token_id
    wrong = lambda t: (t + 1) % 50
    drafts = [plain[0],                                  # right all the way
              plain[1][:2] + [wrong(plain[1][2])],       # right, then wrong
              [wrong(plain[2][0])] + plain[2][1:],       # wrong at once
              [],                                        # no guess
              plain[4][:3] + [stop]]                     # stops where the model goes on
    assert greedy_tokens(patient, prompts, 6, drafts=drafts) == plain
    assert greedy_tokens(patient, prompts, [6, 2, 6, 6, 1], drafts=drafts) == [plain[0], plain[1][:2], plain[2], plain[3],
                                                                                plain[4][:1]]


def test_first_tokens_are_the_first_greedy_tokens(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["Hello there.", "What is two plus two?", "Name a colour, any colour at all."]
    assert first_tokens(patient, prompts) == [t[0] for t in greedy_tokens(patient, prompts, 1)]


def test_prefix_caches_merge_into_a_batch_cache_that_grows_in_small_steps(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    head = list(range(3, 15))
    n, cache = prefix_cache(patient.model, [head + [20], head + [21]])
    rows = [repeat_cache(cache, 1, step=4)[0] for _ in range(2)]
    merged = rows[0].merge(rows)
    new = mx.zeros((2, merged.keys.shape[1], 3, merged.keys.shape[3]))
    merged.update_and_fetch(new, new)
    assert merged.keys.shape[2] == n + 4  # one small step, not mlx-lm's 256 positions per row
    # generating past several steps gives the same tokens as one prompt alone (no shared prefix)
    prompts = ["hello there", "what is up"]
    assert greedy_tokens(patient, prompts, 40) == [greedy_tokens(patient, [p], 40)[0] for p in prompts]


def test_replaying_the_upper_blocks_after_a_shared_prefix_matches_running_them_all(tiny_model_dir):
    """Stored residuals below an edit plus the edited model's own prefix cache give the same logits."""
    import numpy as np

    from edge_repair.engine.capture import replayed_logits, residuals
    from edge_repair.engine.lowrank import set_factors
    from edge_repair.engine.verify import chat_tokens, forced_predictions

    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["What is the capital of France?", "What is the capital of Peru?", "What is the capital of Chad?"]
    lists = [chat_tokens(patient.tokenizer, p) for p in prompts]
    replies = greedy_tokens(patient, prompts, 4)
    hidden = residuals(patient.model, lists, 2)
    checked = residuals(patient.model, [t + r for t, r in zip(lists, replies)], 2)
    _, stale = prefix_cache(patient.model, lists)  # the unedited model's
    rng = np.random.default_rng(0)  # an edit above the replay layer that also moves the shared prefix
    set_factors(patient.model, {"model.layers.2.mlp.down_proj": (mx.array(rng.normal(size=(HIDDEN_UNITS, 2)), mx.float32),
                                                                 mx.array(rng.normal(size=(2, 64)), mx.float32))})
    n, cache = prefix_cache(patient.model, lists)
    assert n >= 8
    full = patient.model(mx.array([lists[0]]))[0, n:]
    replayed = replayed_logits(patient.model, 2, [hidden[0][n:]], repeat_cache(cache, 1))[0]
    assert mx.allclose(full, replayed, atol=1e-4)
    assert not mx.allclose(full, replayed_logits(patient.model, 2, [hidden[0][n:]], repeat_cache(stale, 1))[0], atol=1e-3)
    assert first_tokens(patient, prompts, replay=(2, hidden)) == first_tokens(patient, prompts)
    assert all(np.array_equal(a, b) for a, b in zip(forced_predictions(patient, prompts, replies, replay=(2, checked)),
                                                     forced_predictions(patient, prompts, replies)))
    set_factors(patient.model, {})


def test_last_tokens_inputs_and_replay_rows_match_full_runs(tiny_model_dir):
    import numpy as np

    from edge_repair.engine.capture import last_tokens, residuals
    from edge_repair.engine.lowrank import set_factors
    from edge_repair.engine.verify import chat_tokens

    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["What is the capital of Peru?", "What is the capital of Chad, then?", "What is the capital of Mali?"]
    lists = [chat_tokens(patient.tokenizer, p) for p in prompts]
    full = capture(patient.model, lists, [2, 3], kinds=("mlp_in",), positions=[-1]).mlp_in
    ran = last_tokens(patient.model, lists, [2, 3], replay_from=2, batch_size=2)
    for layer in (2, 3):
        assert ran.inputs[layer].shape == full[layer].shape
        assert mx.allclose(ran.inputs[layer], full[layer], atol=1e-4)
    assert ran.predicted == first_tokens(patient, prompts)
    assert ran.skipped >= 8 and not last_tokens(patient.model, lists, [3]).hidden
    for mine, every in zip(ran.hidden, residuals(patient.model, lists, 2)):  # the rows after the shared prefix
        assert mx.allclose(mine, every[ran.skipped:], atol=1e-5)
    rng = np.random.default_rng(1)  # an edit above the replay layer: replaying from the kept rows is exact
    set_factors(patient.model, {"model.layers.2.mlp.down_proj": (mx.array(rng.normal(size=(HIDDEN_UNITS, 2)), mx.float32),
                                                                 mx.array(rng.normal(size=(2, 64)), mx.float32))})
    assert first_tokens(patient, prompts, replay=(2, ran.hidden, ran.skipped)) == first_tokens(patient, prompts)
    set_factors(patient.model, {})
    assert type(patient.model.layers[3]).__name__ == "TransformerBlock" and not hasattr(patient.model.layers[3].mlp, "_record")


def test_reused_prefixes_run_a_prefix_once_per_model_state(tiny_model_dir):
    import numpy as np

    from edge_repair.engine.capture import reused_prefixes
    from edge_repair.engine.lowrank import set_factors

    patient = load_patient(str(tiny_model_dir), compute="f32")
    lists = [list(range(3, 15)) + [20], list(range(3, 15)) + [21]]
    _, outside = prefix_cache(patient.model, lists)
    rng = np.random.default_rng(0)
    edit = {"model.layers.2.mlp.down_proj": (mx.array(rng.normal(size=(HIDDEN_UNITS, 2)), mx.float32),
                                             mx.array(rng.normal(size=(2, 64)), mx.float32))}
    shorter = [list(range(3, 12)) + [1, 2], list(range(3, 12)) + [2, 2]]
    longer = [list(range(3, 18)) + [1], list(range(3, 18)) + [2]]
    run_afresh = [prefix_cache(patient.model, other)[1] for other in (shorter, longer)]  # no memo outside
    with reused_prefixes():
        _, first = prefix_cache(patient.model, lists)
        assert prefix_cache(patient.model, lists)[1] is first
        assert prefix_cache(patient.model, [t + [1] for t in lists])[1] is first  # the same 12 shared tokens
        # a shorter prefix is cut from that run, a longer one extends it: both as if run afresh
        for other, fresh in zip((shorter, longer), run_afresh):
            reused = prefix_cache(patient.model, other)[1]
            assert all(mx.allclose(a.keys_and_values()[1], b.keys_and_values()[1], atol=1e-5) for a, b in zip(reused, fresh))
            assert reused[0].offset == fresh[0].offset
        assert all(c.offset == 12 for c in first)  # the run it was cut from or extended is untouched
        set_factors(patient.model, edit)  # another state: run again, and the edit shows in the prefix's keys
        _, edited = prefix_cache(patient.model, lists)
        assert edited is not first and not mx.allclose(edited[3].keys_and_values()[0], first[3].keys_and_values()[0])
        set_factors(patient.model, {})
        _, back = prefix_cache(patient.model, lists)
        assert all(mx.array_equal(a.keys_and_values()[0], b.keys_and_values()[0]) for a, b in zip(back, outside))
    assert prefix_cache(patient.model, lists)[1] is not prefix_cache(patient.model, lists)[1]  # no memo outside



def test_a_seeded_memo_reuses_its_prefixes_in_every_context_and_is_never_added_to(tiny_model_dir):
    from edge_repair.engine.capture import prefix_memo
    from edge_repair.engine.lowrank import set_factors

    patient = load_patient(str(tiny_model_dir), compute="f32")
    head = list(range(3, 15))
    seed = prefix_memo(patient.model, [head])
    lists = [head + [20], head + [21]]
    for _ in range(2):  # two edits' contexts
        with reused_prefixes(seed):
            assert prefix_cache(patient.model, lists)[1] is next(iter(seed.values()))[1][tuple(head)]
            prefix_cache(patient.model, [head[:8] + [1, 2], head[:8] + [2, 2]])  # a new prefix: this context only
            set_factors(patient.model, {"model.layers.2.mlp.down_proj": (mx.ones((HIDDEN_UNITS, 1)), mx.ones((1, 64)))})
            assert prefix_cache(patient.model, lists)[1] is not next(iter(seed.values()))[1][tuple(head)]  # edited state
            set_factors(patient.model, {})
    assert [list(known) for _, known in seed.values()] == [[tuple(head)]]


def test_teacher_forced_batches_hold_a_bounded_number_of_positions(tiny_model_dir, monkeypatch):
    """Long drafts go in smaller batches (their logits are rows × positions × vocabulary), with the same predictions."""
    import numpy as np

    from edge_repair.engine import verify

    assert verify._spans([24] * 12, 8, 96) == [(0, 4), (4, 8), (8, 12)]
    assert verify._spans([8] * 12, 8, 96) == [(0, 8), (8, 12)]
    assert verify._spans([3, 200, 3, 3], 8, 96) == [(0, 1), (1, 2), (2, 4)]  # a row over budget still runs
    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = ["What is the capital of France?", "Who wrote Hamlet?", "Name a colour.", "Count to three."]
    replies = greedy_tokens(patient, prompts, 6)
    whole = verify.forced_predictions(patient, prompts, replies)  # one batch
    monkeypatch.setattr(verify, "POSITION_BUDGET", 6)  # a row per batch
    bounded = verify.forced_predictions(patient, prompts, replies)
    assert all(np.array_equal(a, b) for a, b in zip(bounded, whole))
