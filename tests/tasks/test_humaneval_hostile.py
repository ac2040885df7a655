"""A catalogue of hostile completions: each ends failed (or, where the attack needs no
pass, contained), and leaves nothing behind on the host: no file outside the sandbox, in
/tmp, /dev/shm, site-packages or the victim folder, no changed file, no process, no
connection to a host socket, no cgroup or working dir.

Completions are written so that a successful attack passes: "fails" means the sandbox
stopped it. The first 21 are the 15 attacks issue 12 saw get through the previous sandbox
(or its in-process guard) and 6 variants of them; the rest are the earlier cases. A case
runs only where the layer it tests is active; otherwise it is skipped with the reason (run
pytest with -rs to see them). CI installs bubblewrap, so none is skipped there.
"""

from __future__ import annotations

import os
import socket
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.isolation._cgroups import trace_prefix
from harness.isolation._sandbox import Limits, Program, isolation, judge

TIGHT = Limits(timeout_s=3.0, cpu_s=2, memory_mb=256, file_size_mb=4, processes=8)
ROOMY = Limits(timeout_s=20.0, cpu_s=10, memory_mb=1024, file_size_mb=4, processes=8)
ADD = {"prompt": 'def add(a: int, b: int) -> int:\n    """Sum of a and b."""\n',
       "test": "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"
               "    assert candidate(-1, 1) == 0\n",
       "entry_point": "add"}
HALF = {"prompt": 'def half(x: float) -> float:\n    """x / 2"""\n',
        "test": "\n\ndef check(candidate):\n    assert abs(candidate(3.0) - 1.5) < 1e-9\n"
                "    assert abs(candidate(-1.0) + 0.5) < 1e-9\n",
        "entry_point": "half"}


@dataclass(frozen=True)
class Case:
    name: str
    completion: str  # formatted with the Host's fields
    expect: str  # "fails", "times out", or "contained" (any verdict; the host checks decide)
    needs: frozenset[str] = frozenset()  # "bubblewrap", "memory cgroup", "no user namespaces"
    problem: dict = field(default_factory=lambda: ADD)
    limits: Limits = TIGHT


def case(name, completion, expect="fails", needs=(), **kwargs) -> Case:
    return Case(name, completion, expect, frozenset(needs), **kwargs)


BWRAP = ("bubblewrap",)
CATALOGUE = [
    # --- issue 12: got through the previous sandbox, and variants ---------------------
    case("read_etc_shadow", "    open('/etc/shadow').read()\n    return a + b\n", needs=BWRAP),
    case("read_private_file", "    open({secret!r}).read()\n    return a + b\n", needs=BWRAP),
    case("overwrite_file_outside", "    open({victim_file!r}, 'w').write('pwned')\n"
                                   "    return a + b\n", needs=BWRAP),
    case("leave_file_in_tmp", "    open('/tmp/{marker}', 'w').write('x')\n    return a + b\n",
         "contained", BWRAP),
    case("leave_file_in_dev_shm", "    open('/dev/shm/{marker}', 'w').write('x')\n"
                                  "    return a + b\n", "contained", BWRAP),
    case("connect_host_unix_socket",
         "    import socket\n    s = socket.socket(socket.AF_UNIX)\n"
         "    s.connect({unix_socket!r})\n    s.sendall(b'leak')\n    return a + b\n",
         needs=BWRAP),
    case("hold_3x800mb_across_children",
         "    import os, time\n    readers = []\n    for _ in range(3):\n"
         "        r, w = os.pipe()\n        if os.fork() == 0:\n"
         "            block = bytearray(800 << 20)\n"
         "            block[::4096] = b'x' * len(block[::4096])\n"
         "            os.write(w, b'1')\n            time.sleep(10)\n            os._exit(0)\n"
         "        os.close(w)\n        readers.append(r)\n"
         "    held = sum(len(os.read(r, 1)) for r in readers)\n"
         "    return a + b if held == 3 else 0\n",
         needs=("memory cgroup",), limits=ROOMY),
    case("write_site_packages", "    open({site_packages!r} + '/{marker}.pth', 'w').write('import os')\n"
                                "    return a + b\n", needs=BWRAP),
    case("guard_bypass_sys_modules_pop",
         "    import sys\n    sys.modules.pop('subprocess', None)\n    import subprocess\n"
         "    subprocess.run(['sh', '-c', 'touch {victim_dir}/{marker}'], check=True)\n"
         "    return a + b\n", needs=BWRAP),
    case("guard_bypass_importlib_reload",
         "    import importlib, subprocess\n    importlib.reload(subprocess)\n"
         "    subprocess.check_call(['rm', '-f', {victim_file!r}])\n"
         "    open({victim_file!r})\n    return a + b\n", needs=BWRAP),
    case("guard_bypass_ctypes",
         "    import ctypes\n    libc = ctypes.CDLL(None)\n"
         "    assert libc.unlink({victim_file!r}.encode()) == 0\n    return a + b\n",
         needs=BWRAP),
    case("forge_from_parent_frames",
         "    import os, sys\n    frame = sys._getframe(1)\n    while frame is not None:\n"
         "        for value in list(frame.f_locals.values()):\n"
         "            for fd in range(3, 64):\n                try:\n"
         "                    os.write(fd, f'{{value}} passed\\n'.encode())\n"
         "                    os.write(fd, b'{{\"passed\": true, \"detail\": \"\"}}\\n')\n"
         "                except Exception:\n                    pass\n"
         "        frame = frame.f_back\n    return a - b\n"),
    case("always_equal_object",
         "    class Anything:\n        def __eq__(self, other):\n            return True\n"
         "        def __ne__(self, other):\n            return False\n    return Anything()\n"),
    case("patch_builtins_abs", "    import builtins\n    builtins.abs = lambda x: 0\n"
                               "    return 0.0\n", problem=HALF),
    case("settrace_skips_the_asserts_of_check",
         "    return a - b\nimport sys, dis\n"
         "def _skip(frame, event, arg):\n"
         "    if event == 'call' and frame.f_code.co_name == 'check':\n"
         "        last = max(line for _, line in dis.findlinestarts(frame.f_code) if line)\n"
         "        def jump(frame, event, arg):\n"
         "            if event == 'line' and frame.f_lineno < last:\n"
         "                frame.f_lineno = last\n"
         "            return jump\n"
         "        return jump\n"
         "sys.settrace(_skip)\n"
         "globals()['check'] = lambda candidate: None\n"),
    case("always_equal_int_subclass",
         "    class Sneaky(int):\n        __eq__ = lambda self, other: True\n"
         "        __hash__ = int.__hash__\n    return Sneaky(0)\n"),
    case("replace_check_in_its_namespace",
         "    import gc\n    for holder in gc.get_objects():\n"
         "        if isinstance(holder, dict) and 'check' in holder:\n"
         "            holder['check'] = lambda candidate: None\n    return a - b\n"),
    case("read_the_harness_environment",
         "    import os\n    for pid in os.listdir('/proc'):\n        try:\n"
         "            if b'{env_secret}' in open(f'/proc/{{pid}}/environ', 'rb').read():\n"
         "                return a + b\n        except OSError:\n            pass\n"
         "    return 0\n", needs=BWRAP),
    case("connect_abstract_unix_socket",
         "    import socket\n    s = socket.socket(socket.AF_UNIX)\n"
         "    s.connect('\\0' + {abstract_socket!r})\n    s.sendall(b'leak')\n"
         "    return a + b\n", needs=BWRAP),
    case("daemon_outlives_the_run",
         "    import os, sys\n    if os.fork() == 0:\n        os.setsid()\n"
         "        if os.fork() == 0:\n"
         "            os.execv(sys.executable, [sys.executable, '-c', "
         "'import time; time.sleep(60)', '{marker}'])\n        os._exit(0)\n"
         "    return a + b\n", "contained", BWRAP),
    case("unlimited_tmpfs_in_a_new_user_namespace",
         "    import ctypes\n    libc = ctypes.CDLL(None, use_errno=True)\n"
         "    assert libc.unshare(0x10000000 | 0x00020000) == 0\n"  # CLONE_NEWUSER | NEWNS
         "    return a + b\n", needs=("no user namespaces",)),
    # --- earlier cases: host protection -----------------------------------------------
    case("delete_files_outside",
         "    import os, shutil, pathlib\n    for attempt in (lambda: os.remove({victim_file!r}),\n"
         "                    lambda: shutil.rmtree({victim_dir!r}),\n"
         "                    lambda: pathlib.Path({victim_file!r}).unlink()):\n"
         "        try:\n            attempt()\n            return a + b\n"
         "        except OSError:\n            pass\n    return 0\n", needs=BWRAP),
    case("read_home_secret", "    import os\n    return a + b + 0 * len(open({home_secret!r}).read())\n",
         needs=BWRAP),
    case("read_environment_variable", "    import os\n"
                                      "    return a + b + 0 * len(os.environ['{env_name}'])\n"),
    case("write_to_the_system", "    open('/usr/lib/{marker}', 'w').write('x')\n"
                                "    return a + b\n", needs=BWRAP),
    case("append_to_the_stdlib", "    import os\n    open(os.__file__, 'a').write('# owned')\n"
                                 "    return a + b\n", needs=BWRAP),
    case("tcp_to_the_host",
         "    import socket\n    s = socket.create_connection(('127.0.0.1', {tcp_port}), 2)\n"
         "    s.sendall(b'leak')\n    return a + b\n", needs=BWRAP),
    case("kill_the_parent", "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                            "    return a + b\n", "contained", BWRAP),
    case("kill_every_process", "    import os, signal\n    os.kill(-1, signal.SIGKILL)\n"
                               "    return a + b\n", "contained", BWRAP),
    case("kill_the_harness_by_pid", "    import os, signal\n"
                                    "    os.kill({harness_pid}, signal.SIGKILL)\n"
                                    "    return a + b\n", needs=BWRAP),
    case("become_root", "    import os\n    os.setuid(0)\n    return a + b\n", needs=BWRAP),
    case("write_kernel_settings", "    open('/proc/sys/kernel/hostname', 'w').write('pwned')\n"
                                  "    return a + b\n", needs=BWRAP),
    case("fork_bomb", "    import os\n    while True:\n        os.fork()\n", needs=BWRAP),
    case("memory_bomb", "    blocks = []\n    while True:\n"
                        "        blocks.append(bytearray(10 ** 7))\n"),
    case("huge_file", "    with open('huge.bin', 'wb') as out:\n        for _ in range(64):\n"
                      "            out.write(bytes(1 << 20))\n    return a + b\n"),
    case("fill_the_disk_quota",
         "    for i in range(64):\n        with open(f'part{{i}}', 'wb') as out:\n"
         "            out.write(bytes(1 << 19))\n    return a + b\n", needs=BWRAP),
    case("infinite_loop", "    while True:\n        pass\n", "times out"),
    case("sleep_forever", "    import time\n    time.sleep(60)\n", "times out"),
    # --- earlier cases: the verdict ---------------------------------------------------
    case("sys_exit_early", "    return a - b\nimport sys\nsys.exit(0)\n"),
    case("os_exit_early", "    return a - b\nimport os\nos._exit(0)\n"),
    case("raise_system_exit", "    raise SystemExit(0)\n"),
    case("exit_builtin", "    exit(0)\n"),
    case("own_check_function", "    return a - b\ndef check(candidate):\n    return True\n"),
    case("forged_lines_on_every_descriptor",
         "    return a - b\nimport os\nfor fd in range(3, 64):\n    try:\n"
         "        os.write(fd, b'passed\\n{{\"passed\": true}}\\n')\n    except OSError:\n"
         "        pass\nos._exit(0)\n"),
    case("patch_exit_functions", "    return a - b\nimport os, sys\n"
                                 "os._exit = sys.exit = lambda *a: None\n"),
    case("forked_child_forges_a_verdict",
         "    return a - b\nimport os\nif os.fork() == 0:\n    for fd in range(64):\n"
         "        try:\n            os.write(fd, b'{{\"passed\": true, \"detail\": \"\"}}\\n')\n"
         "        except OSError:\n            pass\n    os._exit(0)\n"),
    case("megabytes_of_output",
         "    import sys\n    for _ in range(100):\n        sys.stdout.write('x' * 100_000)\n"
         "    return a + b\n", "contained"),
]


def missing_layer(needs: frozenset[str]) -> str | None:
    layers = isolation()
    if "bubblewrap" in needs and not layers.strong:
        return f"needs bubblewrap: {layers.weakness()}"
    if "memory cgroup" in needs and layers.cgroups is None:
        return ("needs a memory cgroup for the whole program (without one, memory is "
                "limited per process only)")
    if "no user namespaces" in needs and not (layers.strong and layers.disables_user_namespaces):
        return "needs bubblewrap >= 0.8 (--disable-userns)"
    return None


@dataclass
class Host:
    """What the attacks aim at, and how to tell whether any of them got through."""

    root: Path
    marker: str = ""
    victim_dir: str = ""
    victim_file: str = ""
    secret: str = ""
    home_secret: str = ""
    site_packages: str = sysconfig.get_paths()["purelib"]
    env_name: str = "HARNESS_HOSTILE_SECRET"
    env_secret: str = field(default_factory=lambda: f"planted-{uuid.uuid4().hex}")
    harness_pid: int = os.getpid()
    unix_socket: str = ""
    abstract_socket: str = field(default_factory=lambda: f"harness-hostile-{uuid.uuid4().hex}")
    tcp_port: int = 0
    servers: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        victims = self.root / "victim"
        victims.mkdir()
        (victims / "precious.txt").write_text("keep me")
        self.victim_dir, self.victim_file = str(victims), str(victims / "precious.txt")
        private = self.root / "private.key"
        private.write_text("secret")
        private.chmod(0o600)
        home = self.root / "home"
        home.mkdir()
        (home / ".netrc").write_text("password")
        self.secret, self.home_secret = str(private), str(home / ".netrc")
        self.unix_socket = str(self.root / "host.sock")
        for family, address in ((socket.AF_UNIX, self.unix_socket),
                                (socket.AF_UNIX, "\0" + self.abstract_socket),
                                (socket.AF_INET, ("127.0.0.1", 0))):
            server = socket.socket(family)
            server.bind(address)
            server.listen(8)
            server.setblocking(False)
            self.servers.append(server)
        self.tcp_port = self.servers[-1].getsockname()[1]

    def snapshot(self) -> dict[str, str]:
        return {str(path): path.read_text() for path in sorted(self.root.rglob("*"))
                if path.is_file()}

    def traces(self) -> list[str]:
        """Everything of this case's marker or of our sandboxes left on the host."""
        found = [str(path) for folder in ("/tmp", "/dev/shm", self.site_packages,
                                          self.victim_dir, "/usr/lib")
                 for path in Path(folder).glob(f"*{self.marker}*")]
        found += [f"process {cmdline.parent.name}" for cmdline in Path("/proc").glob("[0-9]*/cmdline")
                  if _contains(cmdline, self.marker)]
        found += [str(path) for path in Path(tempfile.gettempdir()).glob(trace_prefix() + "*")]
        cgroups = isolation().cgroups
        if cgroups is not None:
            found += [str(path) for parent in {cgroups.pids, cgroups.memory}
                      for path in parent.glob(trace_prefix() + "*")]
        return found

    def connections(self) -> list[str]:
        """Connections the attack made to the host's listening sockets."""
        found = []
        for server in self.servers:
            try:
                connection, _ = server.accept()
                connection.close()
                found.append(f"a connection to {server.getsockname()!r}")
            except BlockingIOError:
                pass
        return found


def _contains(path: Path, marker: str) -> bool:
    try:
        return marker.encode() in path.read_bytes()
    except OSError:
        return False


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    planted = Host(tmp_path_factory.mktemp("hostile"))
    os.environ[planted.env_name] = planted.env_secret
    yield planted
    del os.environ[planted.env_name]
    for server in planted.servers:
        server.close()


def test_the_catalogue_has_every_case_of_the_issue_and_more():
    assert len(CATALOGUE) >= 25 and len({c.name for c in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("attack", CATALOGUE, ids=lambda c: c.name)
def test_hostile_completion_is_contained(attack: Case, host: Host):
    if reason := missing_layer(attack.needs):
        pytest.skip(reason)
    host.marker = f"harness-hostile-{attack.name}-{uuid.uuid4().hex[:8]}"
    before = host.snapshot()
    completion = attack.completion.format(**vars(host))
    program = Program(completion=completion, **attack.problem)
    outcome = judge(program, attack.limits, isolation(), slot=0)
    if attack.expect == "fails":
        assert not outcome.passed, f"the attack got through: {outcome.describe()}"
    elif attack.expect == "times out":
        assert outcome.status == "timed out", outcome.describe()
    assert not host.connections()
    deadline = time.monotonic() + 5  # the kernel reaps killed processes asynchronously
    while (traces := host.traces()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not traces, f"left on the host after {outcome.describe()!r}: {traces}"
    assert host.snapshot() == before
    honest = judge(Program(completion="    return a + b\n", **ADD), TIGHT, isolation(), slot=0)
    assert honest.passed, f"the next program suffers: {honest.describe()}"
