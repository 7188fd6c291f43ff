"""`import A from ./file.ncd` and `import A from lib` (docs/language.md, "Imports").

References: the imported block written out in torch here, and torch.nn.LSTM for the library's
LSTMCell (gate order i, f, g, o as torch documents it).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import ncd
from ncd import NcdError

CELLS = """# cells
axis D = 4
const k = 2
block Helper(x: [D]) -> [D] {
    return tanh(x) * k
}
block Cell(x: [D]) -> [D] {
    param W: [D, D'] init normal(0, 0.5)
    return Helper((x @[D] W)[D' as D])
}
block Other(x: [D]) -> [D] {
    return x
}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_block_from_another_file_with_what_it_uses(tmp_path):
    write(tmp_path, "lib/cells.ncd", CELLS)
    main = write(tmp_path, "main.ncd", """import Cell from ./lib/cells.ncd
axis T
block Net(x: [T, D]) -> [T, D] {
    use a = Cell, b = Cell
    return b(a(x))
}
""")
    m = ncd.load(str(main), T=3)
    assert sorted(m._ncd_spec.blocks) == ["Cell", "Helper", "Net"]  # Other is not brought
    assert list(m.state_dict()) == ["a.W", "b.W"]
    x = torch.randn(2, 3, 4)
    ref = torch.tanh(torch.tanh(x @ m.a.W) * 2 @ m.b.W) * 2
    torch.testing.assert_close(m(x), ref)


def test_the_importers_axis_sizes_win(tmp_path):
    write(tmp_path, "cells.ncd", CELLS)
    main = write(tmp_path, "main.ncd", "import Cell from ./cells.ncd\naxis T, D = 6\n"
                 "block Net(x: [T, D]) -> [T, D] {\n    use c = Cell\n    return c(x)\n}\n")
    assert ncd.load(str(main), T=2).c.W.shape == (6, 6)


def test_the_library_lstm_cell_matches_torch_lstm():
    here = Path(__file__).resolve().parent
    source = """import LSTMCell from lstm
axis T, E = 3
block Mine(x: [T, E]) -> [T, D] {
    param W_ih: [E, G, D] init normal(0, 0.5)
    param W_hh: [D', G, D] init normal(0, 0.5)
    param b: [G, D] init normal(0, 0.5)
    u = x @[E] W_ih + b
    return scan t over T carry (h: [D] = 0, c: [D] = 0) {
        h, c = LSTMCell(u[t] + h[D as D'] @[D'] W_hh, c)
        emit h
    }
}
"""
    m = ncd.load(source, T=5, D=4).double()
    lstm = torch.nn.LSTM(3, 4, batch_first=True).double()
    with torch.no_grad():  # torch's weight_ih is [G·D, E] with gates i, f, g, o
        lstm.weight_ih_l0.copy_(m.W_ih.permute(1, 2, 0).reshape(16, 3))
        lstm.weight_hh_l0.copy_(m.W_hh.permute(1, 2, 0).reshape(16, 4))
        lstm.bias_ih_l0.copy_(m.b.reshape(16))
        lstm.bias_hh_l0.zero_()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(m(x), lstm(x)[0])
    assert here.exists()


def test_imports_chain_and_diamonds_read_each_file_once(tmp_path):
    write(tmp_path, "base.ncd", CELLS)
    write(tmp_path, "left.ncd", "import Cell from ./base.ncd\nblock Left(x: [D]) -> [D] {\n    use c = Cell\n"
          "    return c(x)\n}\n")
    write(tmp_path, "right.ncd", "import Helper from ./base.ncd\nblock Right(x: [D]) -> [D] {\n"
          "    return Helper(x)\n}\n")
    main = write(tmp_path, "main.ncd", "import Left from ./left.ncd\nimport Right from ./right.ncd\n"
                 "block Net(x: [D]) -> [D] {\n    use l = Left\n    return Right(l(x))\n}\n")
    m = ncd.load(str(main))
    x = torch.randn(4)
    torch.testing.assert_close(m(x), torch.tanh(torch.tanh(x @ m.l.c.W) * 2) * 2)


def test_spec_text_imports_relative_to_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path, "cells.ncd", CELLS)
    monkeypatch.chdir(tmp_path)
    ir = ncd.check("import Cell from ./cells.ncd\nblock Net(x: [D]) -> [D] {\n    use c = Cell\n    return c(x)\n}\n")
    assert ir.entry == "Net"


def error(path: Path) -> NcdError:
    with pytest.raises(NcdError) as info:
        ncd.check(str(path))
    return info.value


NET = "block Net(x: [D]) -> [D] {\n    return x\n}\n"


@pytest.mark.parametrize("line, message, hint", [
    ("import Cell from ./missing.ncd", "no such spec file to import: ./missing.ncd", "looked for"),
    ("import Cell from ../outside.ncd", "is outside the directory imports may read", "below it"),
    ("import Cell from ./notes.txt", "only .ncd files can be imported", "./cells.ncd"),
    ("import Cel from ./cells.ncd", "cells.ncd has no block Cel", "did you mean Cell?"),
    ("import LSTMCel from lstm", "lstm.ncd has no block LSTMCel", "did you mean LSTMCell?"),
    ("import LSTMCell from lstmm", "no library spec lstmm", "did you mean lstm?"),
    ("import Cell from ./self.ncd", "import cycle: self.ncd → self.ncd", "both import"),
    ("import Net from ./cells.ncd", "clashes with block Net", "rename one"),
    ("import os", "unexpected 'import' without `from`", "not Python"),
])
def test_misuse_is_located_at_the_import(tmp_path, line, message, hint):
    write(tmp_path, "cells.ncd", CELLS + "block Net(x: [D]) -> [D] {\n    return x\n}\n")
    write(tmp_path.parent, "outside.ncd", CELLS)
    write(tmp_path, "notes.txt", "block")
    path = write(tmp_path, "self.ncd", f"axis D = 4\n{line}\n{NET}")
    exc = error(path)
    assert message in exc.message, str(exc)
    assert hint in (exc.hint or ""), str(exc)
    assert exc.line == 2 and exc.filename == str(path), str(exc)


def test_a_cycle_through_two_files_is_reported_at_the_import_that_closes_it(tmp_path):
    write(tmp_path, "a.ncd", "import B from ./b.ncd\naxis D = 2\nblock A(x: [D]) -> [D] {\n    return B(x)\n}\n")
    write(tmp_path, "b.ncd", "import A from ./a.ncd\naxis D = 2\nblock B(x: [D]) -> [D] {\n    return x\n}\n")
    exc = error(tmp_path / "a.ncd")
    assert "import cycle: a.ncd → b.ncd → a.ncd" in exc.message
    assert exc.filename.endswith("b.ncd") and exc.line == 1


def test_a_clash_with_a_block_an_import_brings_along(tmp_path):
    write(tmp_path, "cells.ncd", CELLS)
    path = write(tmp_path, "main.ncd", "axis D = 4\nimport Cell from ./cells.ncd\n"
                 "block Helper(x: [D]) -> [D] {\n    return x\n}\n")
    exc = error(path)
    assert "block Helper (used by an imported block of cells.ncd, imported with it) clashes" in exc.message
    assert exc.line == 2


def test_a_mistake_inside_an_imported_file_quotes_that_file(tmp_path):
    write(tmp_path, "bad.ncd", "axis D = 4\nblock Bad(x: [D]) -> [D] {\n    return x @[E] x\n}\n")
    path = write(tmp_path, "main.ncd", f"import Bad from ./bad.ncd\n{NET}")
    path.write_text("import Bad from ./bad.ncd\nblock Net(x: [D]) -> [D] {\n    return Bad(x)\n}\n")
    exc = error(path)
    assert exc.filename.endswith("bad.ncd") and exc.line == 3, str(exc)
    write(tmp_path, "syntax.ncd", "block S(x: [D]) -> [D] {\n    return x +\n}\n")
    path.write_text("import S from ./syntax.ncd\n" + NET)
    exc = error(path)
    assert exc.filename.endswith("syntax.ncd"), str(exc)


def test_a_link_out_of_the_root_is_refused(tmp_path):
    outside = write(tmp_path.parent, "secret.ncd", CELLS)
    inside = tmp_path / "cells.ncd"
    try:
        os.symlink(outside, inside)
    except OSError:
        pytest.skip("no symlinks here")
    exc = error(write(tmp_path, "main.ncd", "import Cell from ./cells.ncd\n" + NET))
    assert "outside the directory imports may read" in exc.message
