"""Reading setup files: the example reads; hostile YAML is refused with the problem named."""

from __future__ import annotations

import pytest

from em2q.setup_file import MAX_SETUP_BYTES, SetupFileError, read_setup
from em2q_resources.settings import PROJECT_ROOT

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(7)
)


def test_the_example_setup_reads_as_a_document():
    setup = read_setup(PROJECT_ROOT / "examples" / "setup.yaml")
    assert setup["title"] and setup["settings"]["polarity"]


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    with pytest.raises(SetupFileError, match=r"line 2: aliases \(\*a\) are not allowed"):
        read_setup(path)


def test_a_setup_nested_20000_deep_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("title: " + "[" * 20_000 + "]" * 20_000 + "\n", encoding="utf-8")
    with pytest.raises(SetupFileError, match="nested deeper than 32 levels"):
        read_setup(path)


def test_bytes_that_are_not_utf8_are_refused_naming_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("title: Gewebe Maus\noperator: J\xfcrgen\n".encode("latin-1"))
    with pytest.raises(SetupFileError, match=r"not UTF-8 text \(byte 30: 0xfc\)"):
        read_setup(path)


def test_a_repeated_key_is_refused_naming_it(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("title: one\nsettings:\n  polarity: POSITIVE\n  polarity: NEGATIVE\n")
    with pytest.raises(SetupFileError, match="line 4: the key 'polarity' is given twice"):
        read_setup(path)


def test_a_file_larger_than_a_setup_is_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("title: x\ndescription: " + "y" * MAX_SETUP_BYTES + "\n")
    with pytest.raises(SetupFileError, match="larger than 1024 KiB"):
        read_setup(path)
