"""Text data: tokenised with a real (tiny, trained here) tokenizer, split by folder, file or position."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from autoprune.errors import UserError  # noqa: E402
from autoprune.llm.text_data import TokenData, load_text_data, tokenizer_fingerprint  # noqa: E402
from autoprune.testing.tiny_lm import tiny_tokenizer  # noqa: E402

PROSE = Path(__file__).resolve().parents[1] / "data" / "prose_en.txt"
PARAGRAPHS = [p for p in PROSE.read_text(encoding="utf-8").split("\n\n") if p.strip()]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer(PARAGRAPHS)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def rows(data: TokenData, split: str) -> list[int]:
    return getattr(data, split).reshape(-1).tolist()


def test_one_file_is_split_by_position_into_contiguous_parts(tokenizer) -> None:
    data = load_text_data(f"text:{PROSE}", tokenizer, seq_len=32, val_fraction=0.1, test_fraction=0.2)
    stream = ids(tokenizer, PROSE.read_text(encoding="utf-8"))
    total = len(stream)
    n_test, n_val = int(0.2 * total), int(0.1 * total)
    n_train = total - n_val - n_test
    assert data.split_by == "position" and data.seq_len == 32
    assert rows(data, "train") == stream[: (n_train // 32) * 32]
    assert rows(data, "val") == stream[n_train: n_train + (n_val // 32) * 32]
    assert rows(data, "test") == stream[n_train + n_val: n_train + n_val + (n_test // 32) * 32]
    for split in ("train", "val", "test"):
        tensor = getattr(data, split)
        assert tensor.dtype == torch.long and tensor.shape[1] == 32 and len(tensor) >= 1
    assert torch.equal(data.example_input(2), data.train[:2])
    assert data.vocab_size == len(tokenizer)


def test_a_folder_of_files_is_split_by_whole_files(tmp_path: Path, tokenizer) -> None:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i, paragraph in enumerate(PARAGRAPHS):
        (folder / ("sub" if i % 2 else ".") / f"p{i:02d}.txt").write_text(paragraph, encoding="utf-8")
    (folder / "notes.bin").write_bytes(b"\xff\xfe not text")  # not a text file name: ignored
    data = load_text_data(f"text:{folder}", tokenizer, seq_len=16, val_fraction=0.15, test_fraction=0.15)
    assert data.split_by == "files"
    names = {s: data.files[s] for s in ("train", "val", "test")}
    everything = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.txt"))
    assert sorted(names["train"] + names["val"] + names["test"]) == everything
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])
    assert not set(names["train"]) & set(names["test"])
    for split, files in names.items():  # each split is exactly its own files, joined by </s>
        joined: list[int] = []
        for k, name in enumerate(files):
            joined += ([tokenizer.eos_token_id] if k else []) + ids(tokenizer, (folder / name).read_text())
        assert rows(data, split) == joined[: (len(joined) // 16) * 16]
    total = sum(len(getattr(data, s)) for s in ("train", "val", "test"))
    assert 0.1 < len(data.test) / total < 0.45 and len(data.train) > len(data.val)


def test_a_folder_with_train_val_and_test_folders_is_split_as_given(tmp_path: Path, tokenizer) -> None:
    for split, chosen in (("train", PARAGRAPHS[:6]), ("val", PARAGRAPHS[6:9]), ("test", PARAGRAPHS[9:])):
        (tmp_path / split).mkdir()
        for i, paragraph in enumerate(chosen):
            (tmp_path / split / f"{i}.md").write_text(paragraph, encoding="utf-8")
    data = load_text_data(f"text:{tmp_path}", tokenizer, seq_len=8)
    assert data.split_by == "folders"
    assert data.files["val"] == ["val/0.md", "val/1.md", "val/2.md"]
    first_val = ids(tokenizer, PARAGRAPHS[6])
    assert rows(data, "val")[:8] == first_val[:8]


def test_two_files_are_too_few_to_split_by_file(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "a.txt").write_text(" ".join(PARAGRAPHS[:8]))
    (tmp_path / "b.txt").write_text(" ".join(PARAGRAPHS[8:]))
    data = load_text_data(f"text:{tmp_path}", tokenizer, seq_len=16)
    assert data.split_by == "position" and data.files == {"train": [], "val": [], "test": []}


def test_a_text_too_short_says_how_many_tokens_it_has_and_needs(tmp_path: Path, tokenizer) -> None:
    words = PARAGRAPHS[1].split()  # one token per word: the tokenizer splits on whitespace and punctuation
    words = [w for w in words if w.isalpha()]
    file = tmp_path / "short.txt"
    file.write_text(" ".join(words[:40]))
    with pytest.raises(UserError, match=r"has 40 tokens .* needs at least 100;") as caught:
        load_text_data(f"text:{file}", tokenizer, seq_len=10, val_fraction=0.1, test_fraction=0.1)
    assert "smaller --seq-len" in str(caught.value)
    many = (words * 3)[:100]  # exactly the number it asked for is enough
    file.write_text(" ".join(many))
    data = load_text_data(f"text:{file}", tokenizer, seq_len=10, val_fraction=0.1, test_fraction=0.1)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 1, 1)


def test_bad_requests_are_refused_in_one_sentence(tmp_path: Path, tokenizer) -> None:
    with pytest.raises(UserError, match="beyond the model's context of 64 tokens"):
        load_text_data(f"text:{PROSE}", tokenizer, seq_len=128, max_context=64)
    with pytest.raises(UserError, match="does not exist"):
        load_text_data(f"text:{tmp_path / 'nothing.txt'}", tokenizer)
    with pytest.raises(UserError, match="holds no text files"):
        load_text_data(f"text:{tmp_path}", tokenizer)
    with pytest.raises(UserError, match="text:PATH"):
        load_text_data(str(PROSE), tokenizer)
    with pytest.raises(UserError, match="at least 2 tokens"):
        load_text_data(f"text:{PROSE}", tokenizer, seq_len=1)
    with pytest.raises(UserError, match="leave no text for training"):
        load_text_data(f"text:{PROSE}", tokenizer, val_fraction=0.5, test_fraction=0.5)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt .* is not UTF-8 text"):
        load_text_data(f"text:{tmp_path}", tokenizer)


def test_the_fingerprint_follows_tokens_split_and_tokenizer(tmp_path: Path, tokenizer) -> None:
    base = load_text_data(f"text:{PROSE}", tokenizer, seq_len=32)
    assert base.fingerprint == load_text_data(f"text:{PROSE}", tokenizer, seq_len=32).fingerprint
    assert base.fingerprint != load_text_data(f"text:{PROSE}", tokenizer, seq_len=16).fingerprint
    assert base.fingerprint != load_text_data(f"text:{PROSE}", tokenizer, seq_len=32,
                                              val_fraction=0.2).fingerprint
    other = tiny_tokenizer(PARAGRAPHS[:5])
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    assert base.fingerprint != load_text_data(f"text:{PROSE}", other, seq_len=32).fingerprint
    edited = tmp_path / "edited.txt"
    edited.write_text(PROSE.read_text(encoding="utf-8").replace("keeper", "warden", 1))
    assert base.fingerprint != load_text_data(f"text:{edited}", tokenizer, seq_len=32).fingerprint
    copied = tmp_path / "copy.txt"
    copied.write_text(PROSE.read_text(encoding="utf-8"))
    assert base.fingerprint == load_text_data(f"text:{copied}", tokenizer, seq_len=32).fingerprint  # name left out
    described = base.describe()
    assert described["split_by"] == "position" and described["fingerprint"] == base.fingerprint
