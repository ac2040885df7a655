"""ContentCache: atomic publish, concurrent builders, crashes, umask, verification."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from harness.content_cache import ContentCache, DamagedEntry, content_key
from harness.files import owner_tag

# A child process that builds one entry; its write waits (up to 60 s) until every builder
# named in argv[3] has started, so the builds truly overlap, then writes in two halves.
BUILDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from harness.content_cache import ContentCache

    root, folder, rendezvous, crash = Path(sys.argv[1]), sys.argv[2] == "folder", Path(sys.argv[3]), sys.argv[4]
    cache = ContentCache(root, folder=folder, suffix="" if folder else ".txt")

    def write(staging):
        (rendezvous / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(rendezvous.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        target = staging / "data.txt" if folder else staging
        with open(target, "w") as handle:
            handle.write("first half,")
            handle.flush()
            if crash == "kill":
                os.kill(os.getpid(), 9)
            if crash == "raise":
                raise RuntimeError("the build failed midway")
            handle.write("second half")
        return str(os.getpid())

    def read(path):
        return (path / "data.txt" if folder else path).read_text()

    print(cache.fetch("ab" * 32, read, write))
""")


def _builder(root: Path, layout: str, rendezvous: Path, crash: str = "none") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(root), layout, str(rendezvous), crash],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cache(root: Path, layout: str) -> ContentCache:
    return ContentCache(root, folder=layout == "folder", suffix="" if layout == "folder" else ".txt")


def _read(layout: str) -> Callable[[Path], str]:
    return lambda path: (path / "data.txt" if layout == "folder" else path).read_text()


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_two_processes_building_one_key_both_use_one_whole_entry(tmp_path: Path, layout: str) -> None:
    rendezvous = tmp_path / "started"
    rendezvous.mkdir()
    builders = [_builder(tmp_path / "cache", layout, rendezvous) for _ in range(2)]
    outputs = [b.communicate(timeout=120) for b in builders]
    assert [b.returncode for b in builders] == [0, 0], outputs
    assert len(list(rendezvous.iterdir())) == 2  # both builds ran, overlapping
    cache = _cache(tmp_path / "cache", layout)
    assert cache.load("ab" * 32, _read(layout)) == "first half,second half"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.path("ab" * 32).name]


@pytest.mark.parametrize("crash", ["raise", "kill"])
@pytest.mark.parametrize("layout", ["file", "folder"])
def test_a_build_that_dies_midway_publishes_nothing(tmp_path: Path, layout: str, crash: str) -> None:
    rendezvous = tmp_path / "started"
    rendezvous.mkdir()
    (rendezvous / "other").touch()  # no one to wait for
    builder = _builder(tmp_path / "cache", layout, rendezvous, crash)
    builder.communicate(timeout=120)
    assert builder.returncode == (-signal.SIGKILL if crash == "kill" else 1)
    cache = _cache(tmp_path / "cache", layout)
    assert not cache.path("ab" * 32).exists()
    assert cache.load("ab" * 32, _read(layout)) is None
    leftovers = list((tmp_path / "cache").iterdir())
    assert all(p.name.startswith(".") for p in leftovers)  # hidden staging, killed only
    assert (leftovers == []) == (crash == "raise")

    def write(path: Path) -> str:
        (path / "data.txt" if layout == "folder" else path).write_text("rebuilt")
        return "rebuilt"

    assert cache.fetch("ab" * 32, _read(layout), write) == "rebuilt"
    assert cache.load("ab" * 32, _read(layout)) == "rebuilt"
    # the rebuild swept the killed builder's staging (its process is dead on this host)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.path("ab" * 32).name]


def test_a_live_builders_staging_and_the_resumable_scratch_are_not_swept(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, folder=True)
    entry = cache.path("cd" * 32)
    live = entry.with_name(f".{entry.name}.{owner_tag()}.0123abcd")  # this process: alive
    live.mkdir(parents=True)
    scratch = cache.scratch("cd" * 32)
    cache.publish("cd" * 32, lambda path: (path / "data.txt").write_text("x"))
    assert live.is_dir() and scratch.is_dir()


def test_entries_follow_the_umask_whatever_mode_the_writer_used(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, folder=True)

    def write(staging: Path) -> None:
        (staging / "inner").mkdir(mode=0o700)
        descriptor = os.open(staging / "inner" / "weights.bin", os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(descriptor)

    previous = os.umask(0o027)
    try:
        cache.publish("cd" * 32, write)
    finally:
        os.umask(previous)
    entry = cache.path("cd" * 32)
    assert entry.stat().st_mode & 0o777 == 0o750
    assert (entry / "inner").stat().st_mode & 0o777 == 0o750
    assert (entry / "inner" / "weights.bin").stat().st_mode & 0o777 == 0o640


def test_a_damaged_entry_is_detected_and_rebuilt(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, suffix=".json", fan_out=True, damage=(ValueError,))
    key = content_key({"question": 1})
    builds: list[int] = []

    def write(path: Path) -> dict[str, int]:
        builds.append(1)
        path.write_text(json.dumps({"answer": 42}))
        return {"answer": 42}

    def read(path: Path) -> dict[str, int]:
        return json.loads(path.read_text())

    assert cache.fetch(key, read, write) == {"answer": 42}
    assert cache.path(key).parent.name == key[:2]
    assert cache.fetch(key, read, write) == {"answer": 42} and len(builds) == 1
    cache.path(key).write_text('{"answ')  # truncated
    assert cache.load(key, read) is None
    assert cache.fetch(key, read, write) == {"answer": 42} and len(builds) == 2
    assert read(cache.path(key)) == {"answer": 42}


def test_a_folder_entry_without_what_read_needs_is_rebuilt(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, folder=True)

    def read(path: Path) -> Path:
        if not (path / "config.json").is_file():
            raise DamagedEntry(str(path))
        return path

    def write(staging: Path) -> Path:
        (staging / "config.json").write_text("{}")
        return cache.path("ef" * 32)

    cache.path("ef" * 32).mkdir(parents=True)  # an entry someone left empty
    assert cache.load("ef" * 32, read) is None
    assert (cache.fetch("ef" * 32, read, write) / "config.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == [cache.path("ef" * 32).name]


def test_scratch_survives_until_discarded(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path, folder=True, key_chars=24)
    scratch = cache.scratch("12" * 32, "lora-")
    (scratch / "checkpoint.pt").write_text("step 4")
    assert cache.scratch("12" * 32, "lora-") == scratch and (scratch / "checkpoint.pt").exists()
    cache.discard_scratch("12" * 32, "lora-")
    assert not scratch.exists()


def test_content_key_reads_content_not_spelling() -> None:
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})
    assert content_key({"path": Path("x")}) == content_key({"path": "x"})
