"""RunTable loading: sources, derived columns, filters, and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws.table import flops_per_nd, load_table, table_from_arrays


def _write(tmp_path, text, name="runs.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "params,tokens,loss,model\n1e6,2e7,4.0,a\n2e6,4e7,3.5,b\n4e6,8e7,3.1,c\n"


def test_csv_derives_c_from_6nd(tmp_path):
    t = load_table(_write(tmp_path, GOOD), n="params", d="tokens", group="model")
    assert len(t) == 3
    np.testing.assert_allclose(t.C, 6 * t.N * t.D)
    assert t.columns["N"] == "params" and t.columns["C"] == "6*N*D"
    assert list(t.group) == ["a", "b", "c"]
    assert list(t.rows) == [1, 2, 3]
    with pytest.raises(ValueError):  # frozen arrays
        t.N[0] = 5.0


def test_derive_d_and_n_and_other_conventions():
    cols = {"N": [1e6, 2e6], "C": [1.2e14, 4.8e14], "loss": [3.0, 2.9]}
    t = load_table(cols, n="N", c="C")
    np.testing.assert_allclose(t.D, [2e7, 4e7])
    t2 = load_table(
        {"D": [2e7], "C": [1.6e14], "loss": [3.0]}, d="D", c="C", flops_convention="8nd"
    )
    np.testing.assert_allclose(t2.N, [1e6])
    assert flops_per_nd("none") is None and flops_per_nd("6ND") == 6.0
    with pytest.raises(UserError, match="not understood"):
        flops_per_nd("six")


def test_list_of_rows_and_dataframe_like():
    rows = [{"n": 1e6, "d": 2e7, "loss": 3.0}, {"n": 2e6, "d": 4e7, "loss": 2.8}]
    t = load_table(rows, n="n", d="d")
    np.testing.assert_allclose(t.loss, [3.0, 2.8])

    class FakeFrame:  # anything with to_dict("list"), as pandas has
        def to_dict(self, orient):
            assert orient == "list"
            return {"Params": [1e6, 2e6], "Loss": [3.0, 2.9]}

    t = load_table(FakeFrame(), n="params", loss="loss")  # case-insensitive match
    assert t.columns == {"N": "Params", "loss": "Loss"}
    assert t.D is None and t.C is None


def test_where_filter_keeps_source_row_numbers(tmp_path):
    t = load_table(_write(tmp_path, GOOD), n="params", d="tokens", where=["model=b"])
    assert len(t) == 1 and list(t.rows) == [2]
    with pytest.raises(UserError, match="no rows match"):
        load_table(_write(tmp_path, GOOD), n="params", d="tokens", where={"model": "zz"})


def test_subset_drop_highest_and_without_rows():
    t = table_from_arrays(N=[1e6, 2e6, 4e6, 8e6], D=[1e8] * 4, loss=[4.0, 9.0, 3.0, 2.0])
    kept, dropped = t.drop_highest(1)
    assert dropped == (2,) and len(kept) == 3 and 9.0 not in kept.loss
    assert list(t.without_rows([1, 4]).rows) == [2, 3]
    with pytest.raises(UserError, match="cannot drop"):
        t.drop_highest(4)


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        (GOOD, {"n": "parms", "d": "tokens"}, r"no column 'parms' for N; did you mean 'params'\?"),
        (GOOD, {"n": "params", "d": "tokens", "loss": "xent"}, "no column 'xent'.*columns are"),
        ("params,tokens,loss\n1e6,2e7,4.0\n-2e6,4e7,3.5\n", {"n": "params", "d": "tokens"}, r"row 2, column 'params': -2000000.0 is not positive"),
        ("params,tokens,loss\n1e6,2e7,nan\n", {"n": "params", "d": "tokens"}, r"row 1, column 'loss': nan is not finite"),
        ("params,tokens,loss\n1e6,2e7,inf\n", {"n": "params", "d": "tokens"}, "row 1, column 'loss': inf is not finite"),
        ("params,tokens,loss\n1e6,,4.0\n", {"n": "params", "d": "tokens"}, "row 1, column 'tokens': the value is empty"),
        ("params,tokens,loss\n1e6,lots,4.0\n", {"n": "params", "d": "tokens"}, "row 1, column 'tokens': 'lots' is not a number"),
        ("params,tokens,loss\n1e6,2e7\n", {"n": "params", "d": "tokens"}, "row 1: has 2 fields but the header has 3"),
        ("params,params,loss\n1,2,3\n", {"n": "params"}, "appears twice"),
        ("", {"n": "params"}, "empty"),
        ("params,tokens,loss\n", {"n": "params", "d": "tokens"}, "no rows"),
    ],
)  # fmt: skip
def test_bad_input_one_line_errors(tmp_path, text, kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        load_table(_write(tmp_path, text), **kwargs)
    assert "\n" not in str(err.value)
    assert "runs.csv" in str(err.value) or "file is empty" in str(err.value)


def test_inconsistent_units_caught_and_skippable():
    # tokens given in billions: C is 1e9 times 6 N D
    cols = {"N": [1e8, 2e8], "D": [2.0, 4.0], "C": [1.2e18, 4.8e18], "loss": [3.0, 2.9]}
    with pytest.raises(UserError, match=r"row 1: inconsistent units.*--flops-convention none"):
        load_table(cols, n="N", d="D", c="C")
    t = load_table(cols, n="N", d="D", c="C", check_units=False)
    assert t.C[0] == 1.2e18
    t = load_table(cols, n="N", d="D", c="C", flops_convention="none")
    assert t.flops_per_nd is None


def test_missing_file_and_weights(tmp_path):
    with pytest.raises(UserError, match="table file not found"):
        load_table(tmp_path / "nope.csv", n="N")
    text = "N,D,loss,w\n1e6,2e7,4,1\n2e6,4e7,3.5,-1\n"
    with pytest.raises(UserError, match="row 2, column 'w'.*non-negative"):
        load_table(_write(tmp_path, text), n="N", d="D", weight="w")


def test_require_and_require_points():
    t = table_from_arrays(N=[1e6, 2e6], loss=[3.0, 2.0], flops_convention="none")
    with pytest.raises(UserError, match="needs D"):
        t.require("N", "D", what="the chinchilla law")
    with pytest.raises(UserError, match="has 5 parameters but the table has only 2 points"):
        t.require_points(5, "the chinchilla law")
