"""SourceBase (t2i.data.source): split checks, cached records, a vocabulary built once and cached on disk."""

import pytest

from t2i.data.source import SourceBase
from t2i.structures import Record


class ListSource(SourceBase):
    name = "list"
    captions_per_image = 1

    def __init__(self, root, captions):
        super().__init__()
        self.root, self.captions, self.reads = root, captions, 0

    def _read_records(self, split):
        self.reads += 1
        return [Record(key=f"{split}{i}", image_path=self.root / "x.jpg", class_id=1, captions=[c])
                for i, c in enumerate(self.captions[split])]


def test_records_are_read_once_per_split_and_the_vocabulary_is_cached(tmp_path):
    source = ListSource(tmp_path, {"train": ["a green crown", "red wings"], "test": ["a blue belly"]})
    assert [r.key for r in source.records("train")] == ["train0", "train1"]
    source.records("train")
    assert source.reads == 1
    with pytest.raises(ValueError, match="unknown split 'val'"):
        source.records("val")
    vocab = source.vocabulary()
    assert {"green", "crown", "red", "wings", "blue", "belly"} <= set(vocab.itos)
    assert (tmp_path / "vocab.json").is_file()
    again = ListSource(tmp_path, {"train": ["something else"], "test": []})
    assert again.vocabulary().itos == vocab.itos  # same fingerprint (no metadata files changed): from the cache
    assert source.attribute_schema() is None
