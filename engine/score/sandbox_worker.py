"""Sandbox worker: a warm, single-threaded process that runs each program in a forked child under limits.

Started by engine/score/sandbox.py as `python -I sandbox_worker.py CONFIG_JSON` with a minimal environment; it uses
the standard library only and is never imported by the engine. Protocol, one JSON object per line: the worker
first writes {"ready": true, "layers": {...}}; then for each job read on stdin ({"program", "timeout",
"memory_mb"}) it writes {"status": "passed"|"failed"|"timeout"|"error", "reason", "seconds"}.

Per program (docs/scorers.md, "Code execution sandbox" says what each layer enforces):
  fork from this warm worker -> setsid (own session and process group) -> chdir to a fresh temp dir, stdin from
  /dev/null, stdout/stderr to a file there -> (root) drop to user `nobody` keeping only CAP_DAC_READ_SEARCH ->
  Landlock: read only the Python installation and system dirs, write only the temp dir, no TCP bind/connect, no
  signals or abstract sockets outside -> rlimits CPU, AS (memory), NPROC 0 (no new processes or threads), FSIZE,
  NOFILE, CORE -> a Python audit hook refusing process creation, sockets, ctypes, signals and file writes outside
  the temp dir -> exec. The worker itself lives in a fresh network namespace (no interfaces but a down loopback).
The worker kills the child's process group with SIGKILL on timeout, and after every program.
"""

import ctypes
import json
import math
import os
import resource
import select
import shutil
import signal
import sys
import sysconfig
import tempfile
import time
import traceback
import types

PRELOAD = ("abc", "array", "bisect", "cmath", "collections", "copy", "dataclasses", "datetime", "decimal", "enum",
           "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math", "numbers", "operator", "random",
           "re", "statistics", "string", "struct", "textwrap", "typing", "unicodedata")

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
CAP_DAC_READ_SEARCH = 2
SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same number on every architecture)
LL_READ = 1 | 4 | 8  # EXECUTE | READ_FILE | READ_DIR
LL_FILE_RW = 2 | 4  # WRITE_FILE | READ_FILE
REPORT_FD = 3
FILE_LIMIT = 16 * 1024 * 1024
SYSTEM_READ = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/sys", "/dev")
PROC_READ = ("/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


# ---------------------------------------------------------------------------------------------------- worker set-up


def _landlock_abi():
    abi = _libc.syscall(ctypes.c_long(SYS_LANDLOCK[0]), None, ctypes.c_long(0), ctypes.c_long(1))
    return abi if abi > 0 else 0


def _fs_rights(abi):
    rights = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        rights |= 1 << 13  # refer
    if abi >= 3:
        rights |= 1 << 14  # truncate
    if abi >= 5:
        rights |= 1 << 15  # ioctl_dev
    return rights


def _read_roots():
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(p for p in sysconfig.get_paths().values() if p)
    roots.update(SYSTEM_READ)
    return sorted(r for r in roots if os.path.exists(r))


def _unshare_network(is_root):
    flags = CLONE_NEWNET if is_root else CLONE_NEWUSER | CLONE_NEWNET
    if _libc.unshare(ctypes.c_int(flags)) == 0:
        return "network namespace (no interfaces)" + ("" if is_root else " in a user namespace")
    return f"none (unshare failed: {os.strerror(ctypes.get_errno())})"


def setup(config):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # no threads may start (RLIMIT_NPROC 0); OpenBLAS raises SIGINT otherwise
    for name in PRELOAD:
        __import__(name)
    is_root = os.geteuid() == 0
    abi = _landlock_abi()
    state = {"root": is_root, "landlock": abi, "read_roots": _read_roots(), "scratch": config["scratch"],
             "uid": config.get("uid", 65534), "gid": config.get("gid", 65534)}
    layers = {
        "process": "own session and process group; SIGKILL to the group on timeout and after each program",
        "network": _unshare_network(is_root) if config.get("network_namespace", True) else "not isolated",
        "filesystem": (f"Landlock ABI {abi}: write only the program's temp dir; read the Python installation "
                       f"and system dirs") if abi else "audit hook only (no Landlock)",
        "user": "nobody, keeping only CAP_DAC_READ_SEARCH" if is_root else "unchanged (not root)",
        "limits": "RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC=0, RLIMIT_FSIZE=16MiB, RLIMIT_NOFILE=256, RLIMIT_CORE=0",
        "python": "audit hook: no processes, sockets, ctypes, signals, or writes outside the temp dir",
    }
    if abi >= 4:
        layers["network"] += "; Landlock: no TCP bind/connect"
    return state, layers


# ---------------------------------------------------------------------------------------------------- the child


def _drop_root(uid, gid):
    _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    keep = 1 << CAP_DAC_READ_SEARCH
    data = (ctypes.c_uint32 * 6)(keep, keep, 0, 0, 0, 0)  # {effective, permitted, inheritable} x 2
    if _libc.capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _landlock(abi, jobdir, read_roots):
    fs = _fs_rights(abi)
    attr = _RulesetAttr(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # net: bind|connect; scoped: unix|signal
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _libc.syscall(ctypes.c_long(SYS_LANDLOCK[0]), ctypes.byref(attr), ctypes.c_long(size), ctypes.c_long(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    file_rights = 1 | 2 | 4 | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    rules = [(p, LL_READ) for p in (*read_roots, *PROC_READ)]
    rules += [(jobdir, fs), (os.devnull, LL_FILE_RW | (file_rights & ~1))]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        if not os.path.isdir(path):
            rights &= file_rights
        rule = _PathBeneath(rights, fd)
        done = _libc.syscall(ctypes.c_long(SYS_LANDLOCK[1]), ctypes.c_long(ruleset), ctypes.c_long(1),
                             ctypes.byref(rule), ctypes.c_long(0))
        os.close(fd)
        if done != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if _libc.syscall(ctypes.c_long(SYS_LANDLOCK[2]), ctypes.c_long(ruleset), ctypes.c_long(0)) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    os.close(ruleset)


def _limits(timeout, memory_mb):
    cpu = int(math.ceil(timeout)) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    memory = int(memory_mb) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


_BLOCKED = ("os.fork", "os.forkpty", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "subprocess.",
            "os.kill", "os.killpg", "signal.pthread_kill", "socket.", "ctypes.", "resource.setrlimit",
            "resource.prlimit", "os.setuid", "os.setgid", "sys.remote_exec", "pty.")
_ALLOWED = ("ctypes.dlopen",)  # `import ctypes` (numpy imports it) opens the running process; nothing else of ctypes
_BLOCKED_IMPORTS = {"_posixsubprocess"}
_PATH_EVENTS = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
                "os.truncate", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile", "shutil.copytree",
                "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit_hook(jobdir):
    inside = jobdir.rstrip("/") + "/"
    busy = [False]

    def outside(path):
        if isinstance(path, int) or path is None:
            return False
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        full = os.path.realpath(os.path.join(os.getcwd(), os.fspath(path)))
        return not (full + "/").startswith(inside)

    def hook(event, args):
        if busy[0]:
            return
        if (event.startswith(_BLOCKED) and event not in _ALLOWED) or (event == "import" and args and args[0] in _BLOCKED_IMPORTS):
            raise PermissionError(f"blocked by the sandbox: {event}" + (f" {args[0]}" if event == "import" else ""))
        if event == "open" or event in _PATH_EVENTS:
            busy[0] = True
            try:
                if event == "open":
                    path, mode, flags = (tuple(args) + (None, None, None))[:3]
                    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                        (isinstance(flags, int) and flags & _WRITE_FLAGS)
                    paths = [path] if writing else []
                else:
                    paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
                bad = next((p for p in paths if outside(p)), None)
            finally:
                busy[0] = False
            if bad is not None:
                raise PermissionError(f"blocked by the sandbox: {event} outside the working directory: {bad!r}")

    sys.addaudithook(hook)


def _describe(exc, program):
    try:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except Exception:  # noqa: BLE001 - a hostile __str__
        text = type(exc).__name__
    text = text[:300]
    lineno = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<program>":
            lineno = frame.lineno
    if lineno is None and isinstance(exc, SyntaxError) and exc.filename == "<program>":
        lineno = exc.lineno
    if lineno:
        lines = program.splitlines()
        source = lines[lineno - 1].strip()[:160] if 0 < lineno <= len(lines) else ""
        text += f" (line {lineno}: {source})" if source else f" (line {lineno})"
    return text


def _report(status, reason):
    data = json.dumps({"status": status, "reason": reason}).encode()
    try:
        os.write(REPORT_FD, data)
    except OSError:
        pass


def _child(job, jobdir, report_w, state):
    os.setsid()
    os.chdir(jobdir)
    out = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.dup2(report_w, REPORT_FD)
    os.closerange(REPORT_FD + 1, 1 << 16)
    if state["root"]:
        _drop_root(state["uid"], state["gid"])
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if state["landlock"]:
        _landlock(state["landlock"], jobdir, state["read_roots"])
    _limits(job["timeout"], job["memory_mb"])
    for name in _BLOCKED_IMPORTS:
        sys.modules.pop(name, None)
    if job.get("python_guard", True):
        _audit_hook(jobdir)
    program = job["program"]
    module = types.ModuleType("__sandbox__")
    sys.modules["__sandbox__"] = module
    try:
        exec(compile(program, "<program>", "exec"), module.__dict__)  # noqa: S102 - this is the sandbox
    except SystemExit as exc:
        _report("failed", f"exited (SystemExit({exc.code!r})) before the tests finished")
    except BaseException as exc:  # noqa: BLE001 - every failure of the program is reported
        _report("failed", _describe(exc, program))
    else:
        _report("passed", None)


# ---------------------------------------------------------------------------------------------------- one job


def _wait(pid, timeout):
    """Wait for the child to exit, at most `timeout` seconds; True when it did."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.002)
        return False
    try:
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def _kill_group(pid):
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


def run_job(job, state):
    started = time.monotonic()
    jobdir = tempfile.mkdtemp(dir=state["scratch"])
    try:
        if state["root"]:
            os.chown(jobdir, state["uid"], state["gid"])
        report_r, report_w = os.pipe()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(report_r)
                _child(job, jobdir, report_w, state)
            except BaseException as exc:  # noqa: BLE001 - a set-up failure is reported, never raised
                try:
                    _report("error", f"sandbox set-up failed: {type(exc).__name__}: {exc}")
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                os._exit(0)
        os.close(report_w)
        exited = _wait(pid, job["timeout"])
        _kill_group(pid)  # stragglers (the child is not reaped yet, so its pid still names its group)
        _, status = os.waitpid(pid, 0)
        os.set_blocking(report_r, False)
        try:
            raw = os.read(report_r, 65536)
        except BlockingIOError:
            raw = b""
        os.close(report_r)
        return _result(job, raw, exited, status, jobdir, time.monotonic() - started)
    finally:
        shutil.rmtree(jobdir, ignore_errors=True)


def _output_tail(jobdir):
    try:
        with open(os.path.join(jobdir, "output.txt"), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 300))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _result(job, raw, exited, status, jobdir, seconds):
    out = {"status": "failed", "reason": None, "seconds": round(seconds, 4)}
    if not exited:
        out.update(status="timeout", reason=f"timed out after {job['timeout']:g} s (killed)")
        return out
    if raw:
        try:
            report = json.loads(raw.decode("utf-8"))
            out.update(status=report["status"], reason=report.get("reason"))
            if out["status"] not in ("passed", "failed", "error"):
                raise ValueError(out["status"])
            return out
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            out.update(status="failed", reason="malformed report from the program's process")
            return out
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig in (signal.SIGXCPU, signal.SIGKILL) and seconds >= job["timeout"]:
            out.update(status="timeout", reason=f"CPU time limit exceeded ({signal.Signals(sig).name})")
        else:
            out["reason"] = f"killed by {signal.Signals(sig).name}"
    else:
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
        out["reason"] = f"exited with status {code} before the tests finished"
    tail = _output_tail(jobdir)
    if tail:
        out["reason"] += f"; output: {tail[-200:]}"
    return out


def main():
    config = json.loads(sys.argv[1])
    state, layers = setup(config)
    sys.stdout.write(json.dumps({"ready": True, "layers": layers, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            result = run_job(json.loads(line), state)
        except Exception as exc:  # noqa: BLE001 - the worker survives any job
            result = {"status": "error", "reason": f"sandbox worker error: {type(exc).__name__}: {exc}", "seconds": 0}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    try:  # end of input (the engine closed the pool or died): the last worker out removes the empty scratch dir
        os.rmdir(state["scratch"])
    except OSError:
        pass


if __name__ == "__main__":
    main()
