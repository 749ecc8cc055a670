import pytest

from edge_repair.errors import StateError
from edge_repair.paths import home_dir
from edge_repair.retain.buffer import RETAIN_FILE, RetainBuffer

SHIPPED = ["What is the boiling point of water?", "Name a prime number.", "Who wrote Hamlet?",
           "Tell me about Maya Taylor's hobbies.", "How many legs does a spider have?"]


def turns(n, extra=()):
    return [{"role": "user", "content": f"private question number {i} about my garden"} for i in range(n)] + \
        [{"role": "assistant", "content": "assistant text is never kept"}] + list(extra)


def test_nothing_is_kept_without_consent():
    buffer = RetainBuffer.open(shipped=SHIPPED)
    assert buffer.add_turns(turns(5), consent=False) == 0
    assert not (home_dir() / RETAIN_FILE).exists()
    assert buffer.prompts() == SHIPPED


def test_about_a_tenth_of_the_owners_prompts_are_kept_encrypted():
    buffer = RetainBuffer.open(shipped=SHIPPED)
    assert buffer.add_turns(turns(30), consent=True) == 3
    blob = (home_dir() / RETAIN_FILE).read_bytes()
    assert b"garden" not in blob and b"private question" not in blob
    again = RetainBuffer.open(shipped=SHIPPED)
    assert len(again.turns) == 3 and all("garden" in t for t in again.turns)
    assert not any("assistant" in p for p in again.prompts())


def test_prompts_sample_is_reproducible_and_bounded():
    buffer = RetainBuffer.open(shipped=SHIPPED)
    assert buffer.prompts(2, seed=1) == buffer.prompts(2, seed=1)
    assert len(buffer.prompts(2)) == 2 and set(buffer.prompts(2)) <= set(SHIPPED)


def test_scrub_drops_every_sample_mentioning_a_term_and_persists():
    buffer = RetainBuffer.open(shipped=SHIPPED)
    buffer.add_turns(["Where does maya TAYLOR live?", "What's a good bread recipe?"], consent=True, ratio=1.0)
    removed = buffer.scrub(["Maya Taylor", "Where does Maya Taylor live?", "She lives in Leeds."])
    assert removed == 2  # the owner's turn and the shipped prompt
    reopened = RetainBuffer.open(shipped=SHIPPED)
    assert not any("maya" in p.lower() for p in reopened.prompts())
    assert "What's a good bread recipe?" in reopened.prompts()
    assert "Who wrote Hamlet?" in reopened.prompts()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_buffer_is_reported_not_half_read(damage):
    RetainBuffer.open(shipped=SHIPPED).add_turns(["my secret plan"], consent=True)
    path = home_dir() / RETAIN_FILE
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x40
    else:
        blob = blob[: len(blob) - 5]
    path.write_bytes(bytes(blob))
    with pytest.raises(StateError) as err:
        RetainBuffer.open(shipped=SHIPPED)
    assert "retain.bin" in str(err.value) and "\n" not in str(err.value)
