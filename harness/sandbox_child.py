"""The first code that runs inside a sandbox process, before the untrusted program.

The parent passes this file's text to `python -I -S -c`, so it uses the standard library
only and never imports `harness`. It reads its request (program, limits, result pipe,
nonce) from stdin, lowers its resource limits, disables destructive functions (the
reliability guard: an extra layer over the kernel-enforced limits, not a sandbox on its
own), runs the program and reports `<nonce> passed` on the result pipe only when the
program returned normally in this very process. Exiting early (`sys.exit`, `os._exit`),
raising, or a forked child finishing the program never produces that line.
"""

import builtins
import faulthandler
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

# Functions a model-written program has no business calling, on `os` and on `posix`
# (the module `os` re-exports them from; nulling only `os` would leave them reachable).
OS_FUNCTIONS_DISABLED = (
    "kill", "killpg", "system", "fork", "forkpty", "execv", "execve", "execvp", "execvpe",
    "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe",
    "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn", "posix_spawnp", "popen",
    "putenv", "unsetenv", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
    "replace", "truncate", "ftruncate", "chmod", "fchmod", "lchmod", "chown", "fchown",
    "lchown", "chdir", "fchdir", "chroot", "link", "symlink", "mkfifo", "mknod", "setsid",
    "setpgid", "setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid",
    "setregid", "setresgid", "setgroups", "pidfd_open", "plock",
)
SHUTIL_FUNCTIONS_DISABLED = ("rmtree", "move", "chown", "copytree")
SUBPROCESS_FUNCTIONS_DISABLED = ("Popen", "run", "call", "check_call", "check_output",
                                 "getoutput", "getstatusoutput")
MODULES_BLOCKED = ("ctypes", "_ctypes", "resource", "psutil", "multiprocessing",
                   "_posixsubprocess", "joblib", "tkinter", "pty")


def apply_limits(limits: dict) -> None:
    megabyte = 1024 * 1024
    for name, value in (("RLIMIT_AS", limits["memory_mb"] * megabyte),
                        ("RLIMIT_DATA", limits["memory_mb"] * megabyte),
                        ("RLIMIT_FSIZE", limits["file_size_mb"] * megabyte),
                        ("RLIMIT_NOFILE", limits["open_files"]),
                        ("RLIMIT_CORE", 0),
                        ("RLIMIT_NPROC", limits["process_limit"])):
        resource.setrlimit(getattr(resource, name), (value, value))
    # A soft CPU limit below the hard one lets the SIGXCPU handler report the cause.
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))


def reliability_guard() -> None:
    import posix

    faulthandler.disable()
    os.environ["OMP_NUM_THREADS"] = "1"
    builtins.exit = None
    builtins.quit = None
    for module, names in ((os, OS_FUNCTIONS_DISABLED), (posix, OS_FUNCTIONS_DISABLED),
                          (shutil, SHUTIL_FUNCTIONS_DISABLED),
                          (subprocess, SUBPROCESS_FUNCTIONS_DISABLED)):
        for name in names:
            if hasattr(module, name):
                setattr(module, name, None)
    for name in MODULES_BLOCKED:
        sys.modules[name] = None


def main() -> None:
    request = json.loads(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    # Bound before the program runs: it may replace any of these names.
    report, own_pid, getpid, exit_now = os.write, os.getpid(), os.getpid, os._exit
    result_fd, nonce = request["result_fd"], request["nonce"]

    def report_cpu_limit(*_: object) -> None:
        report(result_fd, f"{nonce} timed out\n".encode())
        exit_now(1)

    signal.signal(signal.SIGXCPU, report_cpu_limit)
    apply_limits(request["limits"])
    if request["guard"]:
        reliability_guard()
    try:
        exec(compile(request["program"], "<candidate>", "exec"), {"__name__": "__main__"})
        outcome = "passed"
    except BaseException as exc:  # the program's own failure, whatever it raised
        outcome = f"failed {type(exc).__name__}"
    if getpid() == own_pid:
        try:
            report(result_fd, f"{nonce} {outcome}\n".encode())
        except OSError:
            pass
    exit_now(0)


if __name__ == "__main__":  # run by `python -c`; importing it does nothing
    main()
