"""Orphaned temporaries of atomic writes are swept; live writers' ones are kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec

from em2q_msi import temporaries
from em2q_msi.imzml import ImzML
from em2q_msi.synthetic import write_imzml


def test_a_dead_writers_temporaries_go_and_live_ones_stay(tmp_path):
    fs = fsspec.filesystem("file")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, encoding="utf-8", check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    host = temporaries._HOST
    orphan = tmp_path / f".intensity.npy.tmp-{host}-{dead_pid}-abc123"
    mine = tmp_path / f".intensity.npy.tmp-{host}-{os.getpid()}-abc124"
    other_young = tmp_path / f".mz.npy.tmp-otherpod-{dead_pid}-abc125"
    other_old = tmp_path / f".meta.json.tmp-otherpod-{dead_pid}-abc126"
    result = tmp_path / "intensity.npy"
    for path in (orphan, mine, other_young, other_old, result):
        path.write_bytes(b"x")
    old = time.time() - temporaries.ORPHAN_AGE_S - 60
    os.utime(other_old, (old, old))

    removed = temporaries.sweep_orphans(fs, str(tmp_path))

    assert sorted(os.path.basename(p) for p in removed) == sorted([orphan.name, other_old.name])
    assert mine.exists() and other_young.exists() and result.exists()
    assert temporaries.sweep_orphans(fs, str(tmp_path / "missing")) == []


def test_temporary_names_are_recognised_as_this_process(tmp_path):
    name = temporaries.temporary_name("qc.json")
    assert name.startswith(".qc.json.tmp-") and not temporaries.is_orphan(name)


#: run ``body`` in a child process whose every local move kills it (SIGKILL) first: the writer
#: dies after writing its temporary and before moving it into place
KILLED_AT_MOVE = """
import os, signal, sys
from fsspec.implementations.local import LocalFileSystem

def die(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

LocalFileSystem.mv = die
"""


def killed_at_move(body: str) -> None:
    done = subprocess.run([sys.executable, "-c", KILLED_AT_MOVE + body], capture_output=True,
                          text=True, encoding="utf-8", timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if temporaries.MARK in p.name)


def test_write_atomic_leaves_the_file_and_no_temporary(tmp_path):
    fs = fsspec.filesystem("file")
    target = f"{tmp_path}/deep/er/qc.json"
    assert temporaries.write_atomic(fs, target, b'{"ok": true}') == target
    assert Path(target).read_bytes() == b'{"ok": true}'
    assert leftovers(tmp_path / "deep" / "er") == []


def test_a_killed_step_writers_temporary_is_swept_by_the_next_step(tmp_path):
    from em2q_msi import steps

    imzml = write_imzml(tmp_path / "m", mode="processed", n_x=3, n_y=2, n_values=40)
    cache, out = tmp_path / "cache", tmp_path / "out"
    ImzML.open(imzml, cache_dir=str(cache))  # the index is cached: the first move is qc.json's
    killed_at_move(
        f"from em2q_msi import steps; steps.main(['qc', {imzml!r}, '--out', {str(out)!r}, "
        f"'--cache-dir', {str(cache)!r}])"
    )
    assert [name.split(".tmp-")[0] for name in leftovers(out)] == [".qc.json"]

    assert steps.main(["qc", imzml, "--out", str(out), "--cache-dir", str(cache)]) == 0

    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir()) == [
        "mean_spectrum.npz", "qc.json", "tic_image.npy", "tic_image.png",
    ]  # fmt: skip


def test_a_killed_index_cache_writers_temporary_is_swept_by_the_next_open(tmp_path):
    imzml = write_imzml(tmp_path / "m", mode="continuous", n_x=3, n_y=2, n_values=40)
    cache = tmp_path / "cache"
    killed_at_move(f"from em2q_msi.imzml import ImzML; ImzML.open({imzml!r}, cache_dir={str(cache)!r})")  # fmt: skip
    (leftover,) = leftovers(cache)  # the index's temporary, never moved into place
    assert leftover.split(".tmp-")[0].endswith(".em2q-index.npz")

    reader = ImzML.open(imzml, cache_dir=str(cache))

    assert reader.n_spectra == 6
    assert leftovers(cache) == []
    assert [p.name.endswith(".em2q-index.npz") for p in cache.iterdir()] == [True]
    assert ImzML.open(imzml, cache_dir=str(cache)).index_source == str(next(cache.iterdir()))
