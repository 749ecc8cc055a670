import os
import stat
import threading

import keyring
import pytest
from keyring.backends.chainer import ChainerBackend

from edge_repair.errors import StateError
from edge_repair.storage import keys
from edge_repair.storage.atomic import write_bytes
from edge_repair.storage.lock import home_lock
from edge_repair.storage.sealed import read_sealed, seal, unseal, write_sealed

KEY = bytes(range(32))


def test_atomic_write_replaces_privately_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.json"
    write_bytes(target, b"old")
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_sealed_roundtrip_and_no_plaintext(tmp_path):
    write_sealed(tmp_path / "s", KEY, {"secret": "Maya Taylor"}, "test")
    assert b"Maya" not in (tmp_path / "s").read_bytes()
    assert read_sealed(tmp_path / "s", KEY, "test") == {"secret": "Maya Taylor"}


@pytest.mark.parametrize("where", [0, 9, 25, -20, -1])
def test_any_flipped_byte_is_reported(where):
    blob = bytearray(seal(KEY, b"some private words", "test"))
    blob[where] ^= 0x01
    with pytest.raises(StateError):
        unseal(KEY, bytes(blob), "test")


def test_truncated_wrong_key_and_wrong_label_are_reported():
    blob = seal(KEY, b"some private words", "test")
    for bad, key, label in [(blob[:-1], KEY, "test"), (blob[:10], KEY, "test"), (blob, bytes(32), "test"),
                            (blob, KEY, "other")]:
        with pytest.raises(StateError) as err:
            unseal(key, bad, label)
        assert "\n" not in str(err.value)


def test_env_key_must_be_64_hex(tmp_path, monkeypatch):
    monkeypatch.setenv(keys.ENV, "abc")
    with pytest.raises(StateError):
        keys.load_key(tmp_path)
    monkeypatch.setenv(keys.ENV, "11" * 32)
    assert keys.load_key(tmp_path) == b"\x11" * 32


def _backend(module: str, store: dict | None = None):
    class Fake:
        def get_password(self, service, account):
            return store.get((service, account))

        def set_password(self, service, account, value):
            store[(service, account)] = value

    Fake.__module__ = module
    return Fake()


def test_insecure_keyrings_are_refused_and_a_0600_file_used(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.ENV)
    for module in ["keyring.backends.fail", "keyring.backends.null", "keyrings.alt.file"]:
        monkeypatch.setattr(keyring, "get_keyring", lambda m=module: _backend(m, {}))
        assert keys.secure_keyring() is None
    empty_chain = ChainerBackend.__new__(ChainerBackend)
    monkeypatch.setattr(ChainerBackend, "backends", [_backend("keyrings.alt.file", {})])
    monkeypatch.setattr(keyring, "get_keyring", lambda: empty_chain)
    assert keys.secure_keyring() is None
    key = keys.load_key(tmp_path)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    assert keys.load_key(tmp_path) == key and len(key) == 32


def test_a_real_keychain_is_used_and_then_required(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.ENV)
    store = {}
    monkeypatch.setattr(keyring, "get_keyring", lambda: _backend("keyring.backends.SecretService", store))
    key = keys.load_key(tmp_path)
    assert store and not (tmp_path / "key").exists()
    assert keys.load_key(tmp_path) == key
    monkeypatch.setattr(keyring, "get_keyring", lambda: _backend("keyring.backends.fail", {}))
    with pytest.raises(StateError, match="keychain"):
        keys.load_key(tmp_path)  # never silently switch to a new key file


def test_key_file_readable_by_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.ENV)
    (tmp_path / "key").write_text("22" * 32)
    os.chmod(tmp_path / "key", 0o644)
    with pytest.raises(StateError, match="chmod 600"):
        keys.load_key(tmp_path)


def test_racing_processes_create_one_key(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.ENV)
    monkeypatch.setattr(keyring, "get_keyring", lambda: _backend("keyring.backends.fail", {}))
    barrier, found = threading.Barrier(8), []

    def create():
        barrier.wait()
        found.append(keys.load_key(tmp_path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 1 and len(found) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_lock_excludes_a_second_writer_but_not_readers(tmp_path):
    with home_lock(tmp_path):
        with pytest.raises(StateError, match="another edge-repair process"):
            with home_lock(tmp_path, timeout=0.2):
                pass
    with home_lock(tmp_path, shared=True):
        with home_lock(tmp_path, shared=True, timeout=0.2):
            pass
