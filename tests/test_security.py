"""Security (promise 9): no secret in context files or journals, private permissions, secret
config keys redacted, and journal lines that cannot reach files outside the journal."""

from __future__ import annotations

import json
import os
import stat
import warnings
from pathlib import Path

import pytest

import instrument
from instrument._backends.base import RunSpec
from instrument._backends.call_journal import CallJournal
from instrument._backends.recording import RecordingBackend
from instrument._redact import REDACTED, is_secret_key, redact
from instrument._replay import ReplayError, replay
from instrument.testing import recording

SECRETS = {"api_key": "k1", "wandb": {"apiKey": "k2"}, "db.password": "k3", "hf-token": "k4",
           "client/secret": "k5", "passwd": "k6"}
KEPT = {"max_tokens": 512, "tokenizer": "bpe", "keyword": "x", "lr": 0.1, "api": "v1", "secretary": "bob"}


def mode(path: Path) -> int:
    """Return the permission bits of *path*."""
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("name", ["api_key", "API-KEY", "apikey", "apiKey", "openai_api_key", "token", "hf_token",
                                  "auth.token", "password", "db_password", "passwd", "secret", "client-secret",
                                  "aws/secret/access"])
def test_secret_key_names(name: str) -> None:
    """A name with a segment api_key/apikey/token/password/passwd/secret (split on ``_ - . /``) is secret."""
    assert is_secret_key(name)


@pytest.mark.parametrize("name", ["max_tokens", "tokenizer", "keyword", "api", "key", "secretary", "passwords",
                                  "monkey", 3])
def test_names_that_are_not_secret(name: object) -> None:
    """Plural or longer words (``max_tokens``, ``tokenizer``, ``secretary``) and non-strings are kept."""
    assert not is_secret_key(name)


def test_redact_replaces_whole_values_at_any_depth_and_lists_the_keys() -> None:
    """A secret key's value is replaced whole (a nested mapping too), inside lists as well."""
    found: list[str] = []
    out = redact({"a": [{"token": "t"}], "secret": {"x": 1}, "lr": 0.1}, found)
    assert ({"a": [{"token": REDACTED}], "secret": REDACTED, "lr": 0.1}, ["a[0]/token", "secret"]) == (out, found)


def test_pipeline_config_and_run_config_are_redacted_with_one_warning_per_key() -> None:
    """Secrets in ``pipeline(config=...)`` and in ``@run_config`` never reach the backend; each
    redacted key is named once; ``max_tokens`` and friends are kept."""
    @instrument.run_config
    def config() -> dict[str, object]:
        return {"extra": {"token": "k7"}, "max_tokens": 256}

    with warnings.catch_warnings(record=True) as caught, recording() as recorded:
        warnings.simplefilter("always")
        with instrument.pipeline(project="p", config={**SECRETS, **KEPT}):
            config()
            config()
    run = recorded.run()
    for secret in ["k1", "k2", "k3", "k4", "k5", "k6", "k7"]:
        assert secret not in json.dumps(run.config)
    assert {**KEPT, "max_tokens": 256} == {key: run.config[key] for key in KEPT}
    named = sorted(str(w.message).split("'")[1] for w in caught if "looks like a secret" in str(w.message))
    assert sorted(["api_key", "wandb/apiKey", "db.password", "hf-token", "client/secret", "passwd", "extra/token"]) == named


def test_redaction_can_be_turned_off() -> None:
    """``pipeline(redact_secrets=False)`` and ``configure(redact_secrets=False)`` keep the values."""
    @instrument.run_config
    def config() -> dict[str, str]:
        return {"api_key": "k8"}

    with recording() as recorded, instrument.pipeline(project="p", config={"token": "k9"}, redact_secrets=False):
        config()
    assert {"token": "k9", "api_key": "k8"} == recorded.run().config
    with recording() as recorded:
        instrument.configure(redact_secrets=False)
        config()
    assert {"api_key": "k8"} == recorded.run().config


def test_context_file_and_child_journal_hold_no_secret_and_are_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """The context file (0600, folder 0700) and a child's journal (0600) hold neither the API key
    nor a secret config value the child logged; the owner still gets the redacted config."""
    monkeypatch.setenv("WANDB_API_KEY", "sk-live-abcdef")
    monkeypatch.setenv("WANDB_MODE", "offline")

    @instrument.run_config
    def config() -> dict[str, str]:
        return {"password": "hunter2", "name": "child"}

    with recording() as recorded, instrument.pipeline(project="p") as owner:
        context = Path(os.environ["WANDB_CONTEXT_FILE"])
        with recorded.subprocess(), pytest.warns(instrument.InstrumentationWarning, match="'password' looks like a secret"):
            config()
        journals = list((owner.folder / "journal").glob("journal-*.jsonl"))
        assert 1 == len(journals)
        assert (0o700, 0o600, 0o600) == (mode(owner.folder), mode(context), mode(journals[0]))
        for text in (context.read_text(), journals[0].read_text()):
            assert "sk-live-abcdef" not in text and "hunter2" not in text
    assert {"password": REDACTED, "name": "child"} == recorded.runs[0].config
    assert not owner.folder.exists()


def test_journal_lines_cannot_reach_files_outside_the_journal(tmp_path: Path) -> None:
    """Journal lines naming an absolute path, a ``..`` path, a symlink out, a folder holding a
    link out, or an image file outside are skipped with a warning; later lines still land."""
    outside = tmp_path / "private.txt"
    outside.write_text("do not upload")
    with warnings.catch_warnings(record=True) as caught, recording() as recorded:
        warnings.simplefilter("always")
        with instrument.pipeline(project="p") as owner:
            journal = owner.folder / "journal"
            files = journal / "files-1"
            files.mkdir()
            (files / "link.txt").symlink_to(outside)
            (files / "folder").mkdir()
            (files / "folder" / "link.txt").symlink_to(outside)
            lines = [
                {"record": "SaveFile", "path": str(outside), "base_path": None, "policy": "now"},
                {"record": "SaveFile", "path": str(files / ".." / ".." / ".." / "private.txt"), "base_path": None,
                 "policy": "now"},
                {"record": "SaveFile", "path": str(files / "link.txt"), "base_path": None, "policy": "now"},
                {"record": "LogArtifact", "path": str(files / "folder"), "type": "model", "name": "m",
                 "aliases": []},
                {"record": "SummaryUpdate", "values": {"img": {"__media__": "image", "file": "../../x.npy",
                                                               "caption": None}}, "owned": True},
                {"record": "SummaryUpdate", "values": {"eval/ok": 1.0}, "owned": True},
            ]
            (journal / "journal-1-1.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = recorded.run()
    assert ([], [], 1.0) == (run.files, run.artifacts, run.summary["eval/ok"])
    assert "img" not in run.summary
    refused = [str(w.message) for w in caught if "outside the journal folder" in str(w.message)]
    assert 5 == len(refused), [str(w.message) for w in caught]


def test_a_call_journal_cannot_make_replay_read_outside_it(tmp_path: Path) -> None:
    """A call journal whose ``save`` names a file outside its folder is refused by the replay."""
    folder = tmp_path / "journal"
    folder.mkdir()
    journal = CallJournal(folder, RunSpec(id="abc"), reason="test")
    journal.finish(0)
    with (folder / "spill.jsonl").open("a") as handle:
        handle.write(json.dumps({"type": "call", "method": "save",
                                 "args": {"path": "../outside.txt", "base_path": None, "policy": "now"}}) + "\n")
    with pytest.raises(ReplayError, match="outside the journal folder"):
        replay(folder, backend=RecordingBackend())
    assert folder.exists()
