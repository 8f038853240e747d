"""Contain the current process so that the user's code cannot change the user's files.

`contain()` is called in a freshly forked, single-threaded child before any
user code runs. It stacks what the kernel allows, strongest first:

- a user and a mount namespace with an overlay filesystem over each project
  directory: every write, from Python, C code, mmap or a grandchild alike,
  lands in an upper directory under `scratch`; the real files stay
  byte-identical and the code reads back what it wrote (copy-on-write);
- a PID namespace, whose PID 1 this process becomes (the caller goes on in a
  forked child, see `_enter_pid_namespace`), so nothing the code starts
  outlives it; a private `/dev/shm`;
- every other mount read-only (`mount_setattr`, recursively from `/`), so
  what Landlock has no right for cannot change files outside the overlays
  either: their mode, owner, times and extended attributes (`chmod`, `chown`,
  `utime`, `setxattr` fail with EROFS);
- Landlock: writes outside the overlays, `scratch` and a few devices fail with
  EACCES, and mounts are refused, so the overlays cannot be taken away.

A layer the kernel refuses (no user namespaces, threads already running, an
old kernel) is left out; `Protection` says which layers hold. Only the
standard library and ctypes are used, and nothing here imports torch or nnlint.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import re
import resource
import signal
from collections.abc import Iterable
from dataclasses import dataclass

from nnlint.setup.sandbox import cache_dirs

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 1, 2, 4, 32, 4096
MS_REC, MS_PRIVATE = 1 << 14, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_SCOPE_SIGNAL = 1 << 1
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (a 5.12 syscall)
MOUNT_ATTR_RDONLY, AT_RECURSIVE, AT_FDCWD = 0x1, 0x8000, -100

# Landlock filesystem rights that change something: write, remove, make (bits 1, 4-12).
_WRITE_FILE = 1 << 1
_CHANGES = _WRITE_FILE | sum(1 << bit for bit in range(4, 13))
_REFER, _TRUNCATE = 1 << 13, 1 << 14  # ABI 2 and 3
# Capabilities kept inside the user namespace: the file-permission ones, so root
# still reads and writes as root; CAP_SYS_ADMIN goes, so nothing is unmounted.
_KEPT_CAPS = (0, 1, 2, 3, 4)  # CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "dri")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


_held: Protection | None = None  # what contained this process (or the one it was forked from)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clear", "propagation", "userns")]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Protection:
    """The layers `contain()` set up, what they cover, and why any is missing."""

    layers: tuple[
        str, ...
    ] = ()  # "overlay", "read-only", "pid-namespace", "landlock", "memory-limit"
    overlaid: tuple[str, ...] = ()  # directories whose writes land in scratch
    readonly: tuple[str, ...] = ()  # mounts under them that could only be made read-only
    missing: tuple[str, ...] = ()  # one reason per layer left out
    landlock_abi: int = 0

    @property
    def description(self) -> str:
        """One line for the user: "overlay + landlock", "landlock only", "audit hooks only"."""
        main = [name for name in ("overlay", "landlock") if name in self.layers]
        if not main:
            return "audit hooks only"
        return " + ".join(main) if len(main) > 1 else f"{main[0]} only"

    @property
    def copy_on_write(self) -> bool:
        """Writes to the project land in scratch (rather than being refused)."""
        return "overlay" in self.layers

    def __str__(self) -> str:
        return "; ".join((self.description, *self.missing))


class _Failed(OSError):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise _Failed(errno, f"{what}: {os.strerror(errno)}")
    return result


def _apply_landlock(allowed: list, threads: int, layers: list, missing: list) -> int:
    """Landlock over writes outside `allowed`; the ABI found (0 when there is none)."""
    abi = _landlock_abi()
    if abi <= 0:
        missing.append("no landlock: the kernel does not offer it")
        return abi
    try:
        _restrict(abi, allowed)
        layers.append("landlock")
    except OSError as exc:
        missing.append(f"no landlock: {exc.strerror or exc}")
    if "landlock" in layers and threads > 1:
        missing.append(f"landlock covers this thread only: {threads - 1} more were running")
    return abi


def contain(
    project_dirs: Iterable[str | os.PathLike],
    scratch: str | os.PathLike,
    *,
    memory_limit: int | None = None,
    writable: Iterable[str | os.PathLike] = (),
) -> Protection:
    """Contain this process and everything it starts; see the module docstring.

    `project_dirs` are overlaid (nested ones once), `scratch` (an existing,
    empty directory outside them) receives the writes, `writable` are further
    directories Landlock lets the code change in place, `memory_limit` bounds
    the address space in bytes. Never raises for what the kernel refuses.
    A process forked from a contained one holds every layer already (and
    could not mount again): it only becomes a process group of its own.
    """
    global _held
    if _held is not None:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        return _held
    scratch = os.path.realpath(scratch)
    layers: list[str] = []
    missing: list[str] = []
    overlaid: list[str] = []
    readonly: list[str] = []
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    dirs = _outermost(project_dirs)
    threads = len(os.listdir("/proc/self/task"))
    privileged = False
    try:
        if threads > 1:
            raise _Failed(0, f"{threads} threads are running (namespaces need a single thread)")
        privileged = _enter_mount_namespace()
    except OSError as exc:
        missing.append(f"no overlay: {exc.strerror or exc}")
    else:
        writable = [os.path.realpath(w) for w in writable if os.path.isdir(w)]
        keep = _own_mounts([scratch, *writable])  # before the overlays, whose layers it holds
        overlaid, readonly, failed, mounted = _overlay(dirs, scratch, privileged)
        if overlaid:
            layers.append("overlay")
        missing.extend(failed)
        try:
            _read_only_elsewhere([*mounted, *keep, "/proc"])
            layers.append("read-only")
        except OSError as exc:
            missing.append(f"the rest not read-only: {exc.strerror or exc}")
        with contextlib.suppress(OSError):
            _check(_libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, None), "")
        if privileged:
            try:
                _enter_user_namespace()
            except OSError as exc:
                missing.append(f"capabilities kept: {exc.strerror or exc}")
        try:
            _enter_pid_namespace()
            layers.append("pid-namespace")
        except OSError as exc:
            missing.append(f"no pid namespace: {exc.strerror or exc}")
        _drop_capabilities()
    allowed = [scratch, *overlaid, *map(os.fspath, writable), *_devices(), "/proc/self"]
    abi = _apply_landlock(allowed if overlaid else allowed + cache_dirs(), threads, layers, missing)
    if memory_limit is not None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        layers.append("memory-limit")
    _held = Protection(tuple(layers), tuple(overlaid), tuple(readonly), tuple(missing), abi)
    return _held


def _outermost(dirs: Iterable[str | os.PathLike]) -> list[str]:
    """Existing directories, resolved, without those inside another one; never `/`."""
    found = sorted({os.path.realpath(d) for d in dirs if os.path.isdir(d)})
    kept: list[str] = []
    for path in found:
        if path != "/" and not any(path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def _enter_mount_namespace() -> bool:
    """A private mount namespace; True when it belongs to the initial user namespace.

    Root unshares it directly: its mounts are not locked, so a project with
    mounts inside it can still be overlaid, and the user namespace entered
    afterwards cannot unmount anything. Others need a user namespace first.
    """
    try:
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        privileged = True
    except OSError:
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "user namespaces are unavailable")
        _map_own_ids()
        privileged = False
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    return privileged


def _enter_user_namespace() -> None:
    """Give up the initial namespace's capabilities; a helper outside maps every id to itself."""
    helper, ready = _id_mapper()
    try:
        _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
        os.write(ready, b"x")
    finally:
        os.close(ready)
        status = os.waitpid(helper, 0)[1]
    if os.waitstatus_to_exitcode(status) != 0:
        _map_own_ids()


def _map_own_ids() -> None:
    """Map this process's ids to themselves: the one mapping an unprivileged user may write."""
    # a process that changed its uid is not dumpable, and then its /proc files are root's
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    _write("/proc/self/uid_map", f"{os.geteuid()} {os.geteuid()} 1")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/gid_map", f"{os.getegid()} {os.getegid()} 1")


def _id_mapper() -> tuple[int, int]:
    """A forked helper that, once told, maps every id of this process's new user namespace."""
    pid = os.getpid()
    read, write = os.pipe()
    helper = os.fork()
    if helper == 0:  # pragma: no cover - the helper
        code = 1
        try:
            os.close(write)
            if os.read(read, 1) == b"x":
                _write(f"/proc/{pid}/uid_map", "0 0 4294967295")
                _write(f"/proc/{pid}/gid_map", "0 0 4294967295")
                code = 0
        finally:
            os._exit(code)
    os.close(read)
    return helper, write


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _mounts_under(path: str) -> list[str]:
    """Mount points strictly inside `path`, outermost first."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
            if point.startswith(path.rstrip("/") + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"))


def _own_mounts(paths: list[str]) -> list[str]:
    """Bind each directory onto itself, so it stays writable when the rest is made
    read-only; those that could be."""
    done = []
    for path in paths:
        flags = MS_BIND | MS_REC
        if _libc.mount(path.encode(), path.encode(), None, flags, None) == 0:
            done.append(path)
    return done


def _mount_setattr(path: str, attr: _MountAttr, flags: int) -> None:
    size = ctypes.sizeof(attr)
    result = _syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), size)
    _check(result, f"mount_setattr {path}")


def _read_only_elsewhere(writable: list[str]) -> None:
    """Every mount read-only except the topmost mount at each of `writable`."""
    _mount_setattr("/", _MountAttr(set=MOUNT_ATTR_RDONLY), AT_RECURSIVE)
    for path in writable:
        _mount_setattr(path, _MountAttr(clear=MOUNT_ATTR_RDONLY), 0)


def _overlay(
    dirs: list[str], scratch: str, privileged: bool
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Overlay each directory and the mounts inside it; (overlaid, read-only, failures,
    every overlay mounted)."""
    # Open every lower layer first: once a directory is overlaid, the mounts
    # inside it are hidden, and each gets its own overlay on top.
    targets = [(d, mount) for d in dirs for mount in (d, *_mounts_under(d))]
    lowers = {}
    for _, mount in targets:
        with contextlib.suppress(OSError):
            lowers[mount] = os.open(mount, os.O_PATH | os.O_CLOEXEC)
    overlaid, readonly, failed, mounted = [], [], [], []
    layers = os.path.join(scratch, "overlay")
    os.makedirs(layers, exist_ok=True)
    in_memory = False
    for index, (top, mount) in enumerate(targets):
        if mount not in lowers:
            continue
        lower = f"/proc/self/fd/{lowers[mount]}"
        layer = os.path.join(layers, str(index))
        try:
            if not os.path.isdir(mount):
                raise _Failed(0, "not a directory")
            try:
                _mount_overlay(mount, lower, layer, privileged)
            except OSError:
                if in_memory:
                    raise
                # scratch's filesystem cannot hold an upper layer (an overlay
                # itself, as in a container): keep the layers in memory instead
                flags = MS_NOSUID | MS_NODEV
                _check(_libc.mount(b"tmpfs", layers.encode(), b"tmpfs", flags, b"mode=700"), "")
                in_memory = True
                _mount_overlay(mount, lower, layer, privileged)
            mounted.append(mount)
            if mount == top:
                overlaid.append(top)
        except OSError as exc:
            try:  # what cannot be a lower layer is at least kept from changing
                _check(_libc.mount(lower.encode(), mount.encode(), None, MS_BIND, None), "bind")
                flags = MS_REMOUNT | MS_BIND | MS_RDONLY
                _check(_libc.mount(None, mount.encode(), None, flags, None), "read-only")
                readonly.append(mount)
            except OSError:
                failed.append(f"{mount} not overlaid: {exc.strerror or exc}")
    for fd in lowers.values():
        os.close(fd)
    return overlaid, readonly, failed, mounted


def _mount_overlay(mount: str, lower: str, layer: str, privileged: bool) -> None:
    os.makedirs(os.path.join(layer, "upper"), exist_ok=True)
    os.makedirs(os.path.join(layer, "work"), exist_ok=True)
    base = f"lowerdir={lower},upperdir={layer}/upper,workdir={layer}/work"
    # inside a user namespace only user.* extended attributes may be written
    for options in (base, base + ",userxattr") if privileged else (base + ",userxattr",):
        if _libc.mount(b"overlay", mount.encode(), b"overlay", 0, options.encode()) == 0:
            return
    _check(-1, f"overlay on {mount}")


def _enter_pid_namespace() -> None:
    """Go on as PID 1 of a new PID namespace: whatever we start dies with us.

    A process cannot start threads once it has unshared a PID namespace, so
    the namespace's first child, forked here, carries on as the contained
    process; this one only waits for it and exits with its status, and its
    death (the caller's kill) kills the child (PR_SET_PDEATHSIG). When PID 1
    ends, the kernel kills everything left in the namespace, also what called
    setsid().
    """
    _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
    child = os.fork()
    if child != 0:  # pragma: no cover - the waiter
        code = 1
        try:
            code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
        finally:
            os._exit(code if code >= 0 else 128 - code)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32)]
    _fields_ += [("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """Keep only the file-permission capabilities, here and in anything executed."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in _KEPT_CAPS:
            _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    kept = sum(1 << cap for cap in _KEPT_CAPS)
    data = (_CapData * 2)(_CapData(kept, kept, 0), _CapData(0, 0, 0))
    _libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data)


def _syscall(number: int, *args: object) -> int:
    """A raw system call; integers travel as C longs (the kernel reads whole registers)."""
    wrapped = [ctypes.c_long(a) if isinstance(a, int) else a for a in (number, *args)]
    return _libc.syscall(*wrapped)


def _landlock_abi() -> int:
    return max(0, _syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION))


def _devices() -> list[str]:
    found = [f"/dev/{name}" for name in _DEVICES]
    return found + glob.glob("/dev/nvidia*")


def _restrict(abi: int, allowed: list[str]) -> None:
    """Refuse every change outside `allowed`; reads stay allowed everywhere."""
    handled = _CHANGES | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(handled, 0, LANDLOCK_SCOPE_SIGNAL if abi >= 6 else 0)
    size = ctypes.sizeof(attr) if abi >= 6 else 16
    ruleset = _check(_syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0), "ruleset")
    try:
        for path in dict.fromkeys(allowed):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
                rights = handled if is_dir else handled & (_WRITE_FILE | _TRUNCATE)
                rule = _PathBeneath(rights, fd)
                kind = LANDLOCK_RULE_PATH_BENEATH
                added = _syscall(SYS_LANDLOCK_ADD_RULE, ruleset, kind, ctypes.byref(rule), 0)
                _check(added, f"landlock rule for {path}")
            finally:
                os.close(fd)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
