"""Tokenise a corpus with GPT-2's tokenizer into uint16 train.bin / val.bin.

    python -m gpt2.prepare --dataset pydoc            # offline: CPython's own docs
    python -m gpt2.prepare --dataset shakespeare      # downloads tinyshakespeare (1 MB)
    python -m gpt2.prepare --dataset finewebedu --max-docs 100000   # needs the web extra (datasets)
    python -m gpt2.prepare --dataset openwebtext                    # needs the web extra (datasets)
    python -m gpt2.prepare --dataset file --text-file notes.txt

Output: <data-dir>/gpt2/<dataset>/{train.bin, val.bin, meta.json} (for a text
file, <data-dir>/gpt2/file-<name>-<hash of its path>/). The .bin files are flat
arrays of uint16 token ids (tiktoken's "gpt2" encoding, see lib.tokenizer);
meta.json is written last, so a prepare that was interrupted is redone.

One text (tinyshakespeare, a text file) is split at the line break nearest
before (1 - val_fraction) of its characters, and both parts are encoded as
they are, so decoding train.bin then val.bin gives the text back. Documents
end with <|endoftext|>: the 79 pydoc topics are one token stream whose last
val_fraction is val; a streamed web corpus (FineWebEdu, OpenWebText) puts whole
documents in val, deterministically (document i when i * val_fraction crosses
an integer).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lib import tokenizer
from lib.data import DatasetMissing
from lib.results import write_json

DATASETS = ("pydoc", "shakespeare", "finewebedu", "openwebtext", "file")
# Datasets small enough that the trainer prepares them itself when they are missing.
AUTO_PREPARE = ("pydoc", "shakespeare", "file")
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
# Hugging Face hub ids: (path, config name)
HUB = {
    "finewebedu": ("HuggingFaceFW/fineweb-edu", "sample-10BT"),
    "openwebtext": ("Skylion007/openwebtext", None),
}
DEFAULT_VAL_FRACTION = {"finewebedu": 0.0005, "openwebtext": 0.0005}  # others: 0.1
BATCH_DOCS = 1024  # documents per tokenizer call


def default_val_fraction(dataset: str) -> float:
    return DEFAULT_VAL_FRACTION.get(dataset, 0.1)


def dataset_dir(data_dir: str | Path, dataset: str, text_file: str | Path | None = None) -> Path:
    root = Path(data_dir) / "gpt2"
    if dataset != "file":
        return root / dataset
    if not text_file:
        raise ValueError("--dataset file needs --text-file PATH")
    path = Path(text_file).resolve()
    return root / f"file-{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"


def read_meta(out: Path) -> dict | None:
    """meta.json if the directory holds a complete preparation, else None."""
    try:
        meta = json.loads((out / "meta.json").read_text())
        for split in ("train", "val"):
            if (out / f"{split}.bin").stat().st_size != 2 * meta[f"{split}_tokens"]:
                return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def preparing(out: Path):
    """Hold `<out>.lock` (a blocking flock, released when its holder dies): one process prepares `out` at a time.

    Runs of a matrix that start at once (JOBS, Slurm tasks) all find a
    corpus missing; the first prepares it, the others wait here and then
    find it prepared.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out.parent / f".{out.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_prepared(out: Path, text_file: str | Path | None = None) -> bool:
    """Complete, and (for a text file) made from the file's current content."""
    meta = read_meta(out)
    if meta is None:
        return False
    if text_file is not None:
        return Path(text_file).is_file() and meta.get("source_sha256") == file_sha256(Path(text_file))
    return True


# -- sources -------------------------------------------------------------------
def pydoc_documents() -> list[str]:
    """CPython's documentation topics (pydoc_data ships with every CPython)."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def shakespeare_text(out: Path) -> str:
    path = out / "input.txt"
    if not path.is_file():
        try:
            with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as r:
                body = r.read()
        except (urllib.error.URLError, OSError) as e:
            raise DatasetMissing(
                f"tinyshakespeare is not in {path} and cannot be downloaded ({type(e).__name__}): "
                f"put its input.txt there, or pick the offline corpus (--dataset pydoc, CONFIG_GPT2_DATASET_PYDOC)"
            ) from None
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
    return path.read_text(encoding="utf-8")


def hub_documents(dataset: str, max_docs: int | None = None):
    """Stream a Hugging Face dataset's "text" column (needs network and the `datasets` package: the `web` extra).

    The package is looked for before anything is written; the download starts
    when the returned iterator is first read.
    """
    try:
        import datasets
    except ImportError:
        raise DatasetMissing(
            f"--dataset {dataset} is read through the Hugging Face `datasets` package, which is not installed: "
            f"install the harness's web extra, pip install -e '.[web]' (and have network), or put a prepared train.bin/val.bin/meta.json in "
            f"data/gpt2/{dataset}/, or pick the offline corpus (--dataset pydoc)"
        ) from None
    path, name = HUB[dataset]

    def rows():
        try:
            stream = datasets.load_dataset(path, name=name, split="train", streaming=True)
            for i, row in enumerate(stream):
                if max_docs is not None and i >= max_docs:
                    break
                yield row["text"]
        except (ConnectionError, OSError) as e:
            raise DatasetMissing(
                f"{path} cannot be downloaded ({type(e).__name__}: {e}); with no network, pick the offline corpus "
                f"(--dataset pydoc) or put a prepared train.bin/val.bin/meta.json in data/gpt2/{dataset}/"
            ) from None

    return rows()


# -- writing ---------------------------------------------------------------------
def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val): cut at the last line break before (1 - val_fraction) of the characters."""
    target = int(len(text) * (1 - val_fraction))
    cut = text.rfind("\n", 0, target) + 1 or target
    return text[:cut], text[cut:]


def is_val_document(i: int, val_fraction: float) -> bool:
    """Deterministic: document i is in val when i * val_fraction crosses an integer."""
    return val_fraction > 0 and int((i + 1) * val_fraction) > int(i * val_fraction)


class _Writer:
    """Appends uint16 tokens to <split>.bin.tmp files; `commit()` renames them and writes meta.json."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.files = {s: open(out / f"{s}.bin.tmp", "wb") for s in ("train", "val")}
        self.counts = {"train": 0, "val": 0}

    def write(self, split: str, tokens) -> None:
        arr = np.asarray(tokens, dtype=np.uint16)
        arr.tofile(self.files[split])
        self.counts[split] += arr.size

    def commit(self, meta: dict) -> dict:
        (self.out / "meta.json").unlink(missing_ok=True)  # an older preparation stops counting here
        for split, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self.out / f"{split}.bin.tmp", self.out / f"{split}.bin")
        meta = {**meta, "train_tokens": self.counts["train"], "val_tokens": self.counts["val"]}
        write_json(self.out / "meta.json", meta)
        return meta

    def abort(self) -> None:
        for split, f in self.files.items():
            f.close()
            (self.out / f"{split}.bin.tmp").unlink(missing_ok=True)


def _write_documents(writer: _Writer, docs, val_fraction: float) -> int:
    enc, n, batch = tokenizer.gpt2(), 0, []

    def flush():
        nonlocal n
        for ids in enc.encode_ordinary_batch(batch, num_threads=os.cpu_count() or 1):
            writer.write("val" if is_val_document(n, val_fraction) else "train", ids + [tokenizer.EOT])
            n += 1
        batch.clear()

    for doc in docs:
        batch.append(doc)
        if len(batch) >= BATCH_DOCS:
            flush()
    flush()
    return n


def prepare(
    dataset: str,
    data_dir: str | Path = "data",
    text_file: str | Path | None = None,
    val_fraction: float | None = None,
    max_docs: int | None = None,
    force: bool = False,
) -> Path:
    """Make <data_dir>/gpt2/<dataset>/{train,val}.bin; returns that directory."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown GPT-2 dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    val_fraction = default_val_fraction(dataset) if val_fraction is None else val_fraction
    if not 0 < val_fraction < 1:
        raise ValueError(f"validation fraction must be in (0, 1), got {val_fraction}")
    out = dataset_dir(data_dir, dataset, text_file)
    if not force and is_prepared(out, text_file if dataset == "file" else None):
        return out
    meta = {"dataset": dataset, "tokenizer": "gpt2", "dtype": "uint16", "vocab_size": tokenizer.N_VOCAB,
            "eot_token": tokenizer.EOT, "val_fraction": val_fraction}
    if dataset == "file":
        path = Path(text_file)
        if not path.is_file():
            raise DatasetMissing(f"text file {path} does not exist (CONFIG_GPT2_TEXT_FILE / --text-file)")
        text = path.read_text(encoding="utf-8")
        meta.update(source=str(path.resolve()), source_sha256=file_sha256(path))
    elif dataset == "shakespeare":
        text = shakespeare_text(out)
        meta.update(source=SHAKESPEARE_URL)
    else:
        text = None
        docs = pydoc_documents() if dataset == "pydoc" else hub_documents(dataset, max_docs)
    if text is not None and not text.strip():
        raise ValueError(f"{meta['source']} holds no text to train on")

    enc = tokenizer.gpt2()
    writer = _Writer(out)
    try:
        if text is not None:
            train, val = split_text(text, val_fraction)
            writer.write("train", enc.encode_ordinary(train))
            writer.write("val", enc.encode_ordinary(val))
        elif dataset == "pydoc":
            # 79 topics of very different sizes: hold out the tail of the token stream instead of whole topics.
            ids = [t for doc in enc.encode_ordinary_batch(docs) for t in doc + [tokenizer.EOT]]
            cut = int(len(ids) * (1 - val_fraction))
            writer.write("train", ids[:cut])
            writer.write("val", ids[cut:])
            meta.update(source="pydoc_data.topics (CPython documentation)", documents=len(docs))
        else:
            meta.update(source=f"https://huggingface.co/datasets/{HUB[dataset][0]}")
            meta["documents"] = _write_documents(writer, docs, val_fraction)
    except BaseException:
        writer.abort()
        raise
    meta = writer.commit(meta)
    print(f"{out}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens", flush=True)
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--text-file", help="the text to tokenise, for --dataset file")
    p.add_argument("--val-fraction", type=float, help="share held out for validation (default 0.1; 0.0005 for the web corpora)")
    p.add_argument("--max-docs", type=int, help="stop after this many documents (web corpora)")
    p.add_argument("--force", action="store_true", help="redo it even when the files are complete")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        prepare(args.dataset, args.data_dir, args.text_file, args.val_fraction, args.max_docs, args.force)
    except (DatasetMissing, ValueError, tokenizer.TokenizerUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
