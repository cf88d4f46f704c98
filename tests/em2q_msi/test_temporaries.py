"""Orphaned temporaries of atomic writes are swept; live writers' ones are kept."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import fsspec

from em2q_msi import temporaries


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
