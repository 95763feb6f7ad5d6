"""gpt2.prepare: every source through the real code, on files written in their real formats."""

import json
import sys
import types
import urllib.error

import numpy as np
import pytest

from gpt2 import prepare
from lib import tokenizer
from lib.data import DatasetMissing

TEXT = "First line: naïve café.\nSecond — 東京 😀\n" + "".join(f"Line {i} of the sample text.\n" for i in range(40))


def tokens(path):
    return np.fromfile(path, dtype=np.uint16).tolist()


def test_a_text_file_round_trips_through_the_tokenizer(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text(TEXT, encoding="utf-8")
    out = prepare.prepare("file", tmp_path / "data", text_file=src)
    assert out.parent == tmp_path / "data" / "gpt2" and out.name.startswith("file-notes-")
    enc = tokenizer.gpt2()
    train, val = tokens(out / "train.bin"), tokens(out / "val.bin")
    assert train and val
    assert enc.decode(train) + enc.decode(val) == TEXT  # nothing lost, nothing added
    assert enc.decode(val).startswith("Line ")  # the cut is at a line break
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_tokens"] == len(train) and meta["val_tokens"] == len(val)
    assert meta["tokenizer"] == "gpt2" and meta["dtype"] == "uint16" and meta["vocab_size"] == 50257
    assert prepare.is_prepared(out, src)
    src.write_text(TEXT + "more\n", encoding="utf-8")  # a changed file is prepared again
    assert not prepare.is_prepared(out, src)


def test_pydoc_corpus_ships_with_python(tmp_path):
    out = prepare.prepare("pydoc", tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    train, val = tokens(out / "train.bin"), tokens(out / "val.bin")
    assert meta["documents"] == len(prepare.pydoc_documents()) > 50
    assert len(train) > 100_000 and abs(len(val) / (len(train) + len(val)) - 0.1) < 0.01
    assert (train + val).count(tokenizer.EOT) == meta["documents"]  # one <|endoftext|> per topic
    assert "assert" in tokenizer.gpt2().decode(train[:20000])


def test_shakespeare_uses_input_txt_when_present(tmp_path):
    folder = tmp_path / "gpt2" / "shakespeare"
    folder.mkdir(parents=True)
    (folder / "input.txt").write_text(TEXT, encoding="utf-8")  # the file the download writes
    out = prepare.prepare("shakespeare", tmp_path)
    enc = tokenizer.gpt2()
    assert enc.decode(tokens(out / "train.bin")) + enc.decode(tokens(out / "val.bin")) == TEXT


def test_shakespeare_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(prepare.urllib.request, "urlopen", offline)
    with pytest.raises(DatasetMissing, match=r"put its input.txt there.*--dataset pydoc"):
        prepare.prepare("shakespeare", tmp_path)
    assert not (tmp_path / "gpt2" / "shakespeare" / "input.txt").exists()


def _fake_datasets(docs, calls):
    def load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        return iter({"text": d} for d in docs)

    return types.SimpleNamespace(load_dataset=load_dataset)


@pytest.mark.parametrize("dataset", ["finewebedu", "openwebtext"])
def test_web_corpora_stream_documents_through_datasets(tmp_path, monkeypatch, dataset):
    docs = [f"Document number {i}." for i in range(30)]
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(docs, calls))
    out = prepare.prepare(dataset, tmp_path, val_fraction=0.1, max_docs=20)
    assert calls == [(prepare.HUB[dataset][0], prepare.HUB[dataset][1], "train", True)]
    enc = tokenizer.gpt2()
    split_docs = {"train": [], "val": []}
    for i, d in enumerate(docs[:20]):
        split_docs["val" if prepare.is_val_document(i, 0.1) else "train"].append(d)
    for split in ("train", "val"):
        ids = tokens(out / f"{split}.bin")
        assert ids[-1] == tokenizer.EOT
        assert enc.decode(ids).split("<|endoftext|>")[:-1] == split_docs[split]
    assert len(split_docs["val"]) == 2
    assert json.loads((out / "meta.json").read_text())["documents"] == 20


def test_web_corpus_without_datasets_is_clear_and_keeps_what_exists(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(["a doc"] * 10, []))
    out = prepare.prepare("finewebedu", tmp_path, val_fraction=0.2)
    before = {f: (out / f).read_bytes() for f in ("train.bin", "val.bin", "meta.json")}
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(DatasetMissing, match=r"pip install -e '\.\[web\]'"):
        prepare.prepare("finewebedu", tmp_path, force=True)
    assert {f: (out / f).read_bytes() for f in before} == before
    assert not list(out.glob("*.tmp"))


def test_bad_input_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown GPT-2 dataset 'c4'"):
        prepare.prepare("c4", tmp_path)
    with pytest.raises(ValueError, match="needs --text-file"):
        prepare.prepare("file", tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="holds no text"):
        prepare.prepare("file", tmp_path, text_file=empty)
    assert prepare.main(["--dataset", "file", "--text-file", str(tmp_path / "missing.txt"), "--data-dir", str(tmp_path)]) == 1
    assert "missing.txt does not exist" in capsys.readouterr().err


def test_split_helpers():
    train, val = prepare.split_text("aaaa\nbbbb\ncccc\ndddd\n", 0.25)
    assert (train, val) == ("aaaa\nbbbb\ncccc\n", "dddd\n")
    assert prepare.split_text("no newline at all", 0.5) == ("no newli", "ne at all")
    picks = [i for i in range(1000) if prepare.is_val_document(i, 0.01)]
    assert len(picks) == 10 and picks == sorted(set(picks))
