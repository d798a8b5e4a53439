"""The restricted unpickler: plain data in, code never executed."""

import os
import pickle
from collections import OrderedDict, defaultdict

import numpy as np
import pytest

from t2i.data.safe_pickle import safe_load, safe_loads
from t2i.errors import DataError


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    pass


def test_plain_containers_protocol_2(tmp_path):
    obj = [["001.A/A_1", "002.B/B_2"], (1, 2.5, True, None), {0: "<end>", "x": [1, 2]}, b"\x00\xff", {3, 4},
           frozenset({5}), OrderedDict(a=1), defaultdict(float, {"w": 2.0})]
    path = tmp_path / "ok.pickle"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    assert safe_load(path) == obj


def test_python2_str_decoded_as_latin1():
    # PROTO 2, EMPTY_LIST, MARK, SHORT_BINSTRING b'caf\xe9' (a py2 str), APPENDS, STOP
    data = b"\x80\x02](U\x04caf\xe9e."
    assert safe_loads(data) == ["café"]
    assert safe_loads(data, encoding="bytes") == [b"caf\xe9"]


def test_numeric_numpy_arrays_allowed_object_arrays_refused():
    arr = np.arange(5, dtype=np.int64)
    out = safe_loads(pickle.dumps(arr, protocol=2))
    assert isinstance(out, np.ndarray) and out.tolist() == [0, 1, 2, 3, 4]
    assert safe_loads(pickle.dumps(np.int32(7), protocol=2)) == 7
    with pytest.raises(DataError, match="object"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))


def test_malicious_pickle_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "filenames.pickle"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(DataError, match=r"filenames\.pickle.*system"):
        safe_load(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the same file *does* run code with plain pickle ...
    assert marker.exists()           # ... which is why safe_load exists


@pytest.mark.parametrize("payload", [
    b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.",               # builtins.eval('1+1')
    b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.",  # non-latin1 codec
    pickle.dumps(_Plain(), protocol=2),                                  # class instance (copyreg)
    pickle.dumps(_Plain(), protocol=0),
])
def test_other_globals_refused(payload):
    with pytest.raises(DataError, match="refusing"):
        safe_loads(payload, name="x.pickle")


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        safe_load(tmp_path / "none.pickle")
    bad = tmp_path / "trunc.pickle"
    bad.write_bytes(pickle.dumps(list(range(100)), protocol=2)[:20])
    with pytest.raises(DataError, match="trunc.pickle"):
        safe_load(bad)
