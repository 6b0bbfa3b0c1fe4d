"""libbpf (the system's libbpf.so.1) through cffi in ABI mode: the few calls the XDP loader needs.

ABI mode (dlopen, no compiler) keeps libbpf out of the ejlb._native build, so a machine without
libbpf builds and runs every other backend; only `open_libbpf()` fails, with a message naming the
missing library. libbpf >= 1.0 semantics: int calls return -errno, pointer calls NULL with errno.
Structures passed by pointer carry their own size (`sz`), so declaring only the leading fields we
use is what libbpf's forward/backward compatibility scheme is for.
"""
from __future__ import annotations

import ctypes.util
import errno as _errno
import logging
import os

from cffi import FFI

from ejlb.errors import EjlbError

log = logging.getLogger(__name__)

CDEF = """
struct bpf_object;
struct bpf_program;
struct bpf_link;
struct bpf_test_run_opts {
    size_t sz;
    const void *data_in;
    void *data_out;
    uint32_t data_size_in;
    uint32_t data_size_out;
    const void *ctx_in;
    void *ctx_out;
    uint32_t ctx_size_in;
    uint32_t ctx_size_out;
    uint32_t retval;
    int repeat;
    uint32_t duration;
    uint32_t flags;
    uint32_t cpu;
    uint32_t batch_size;
};
struct bpf_object *bpf_object__open_file(const char *path, const void *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
int bpf_program__set_log_level(struct bpf_program *prog, uint32_t log_level);
int bpf_object__find_map_fd_by_name(const struct bpf_object *obj, const char *name);
struct bpf_link *bpf_program__attach_xdp(const struct bpf_program *prog, int ifindex);
int bpf_link__destroy(struct bpf_link *link);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);
int libbpf_num_possible_cpus(void);
typedef int (*libbpf_print_fn_t)(int level, const char *fmt, void *args);
libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
int vsnprintf(char *str, size_t size, const char *format, void *ap);
"""

ffi = FFI()
ffi.cdef(CDEF)

_lib = None
_libc = None
_messages: list[str] = []  # libbpf's own messages of the current call (the verifier log is separate)


class LibbpfError(EjlbError, OSError):
    """A libbpf call refused; the message names the call, the errno and what libbpf printed."""


LIBBPF_DEBUG = 2  # print levels: 0 warn, 1 info, 2 debug


@ffi.callback("int(int, const char *, void *)")
def _print(level, fmt, args):
    if level >= LIBBPF_DEBUG:
        return 0
    # va_list reaches us as a pointer (x86-64 and aarch64 pass it by reference): libc formats it
    buf = ffi.new("char[]", 1 << 16)  # a whole verifier log arrives as one message
    _libc.vsnprintf(buf, 1 << 16, fmt, args)
    text = ffi.string(buf).decode(errors="replace").rstrip()
    if text:
        _messages.append(text)
        log.debug("libbpf: %s", text)
    return 0


def open_libbpf():
    """The loaded library; raises LibbpfError naming what is missing."""
    global _lib, _libc
    if _lib is None:
        name = os.environ.get("EJLB_LIBBPF") or ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ffi.dlopen(name)
            lib.bpf_prog_test_run_opts  # noqa: B018 -- libbpf >= 0.7; the first symbol an old one lacks
        except (OSError, AttributeError) as e:
            raise LibbpfError(_errno.ENOENT, f"libbpf: cannot load {name} ({e}); install libbpf1 "
                                             "(Debian: apt-get install libbpf1 libbpf-dev)") from None
        _libc = ffi.dlopen(None)
        lib.libbpf_set_print(_print)
        _lib = lib
    return _lib


def take_messages() -> str:
    """libbpf's messages since the last call, joined (and forgotten)."""
    text = "\n".join(_messages)
    _messages.clear()
    return text


def check(rc: int, what: str) -> int:
    """rc of an int libbpf call: negative = -errno."""
    if rc < 0:
        raise LibbpfError(-rc, f"{what}: {os.strerror(-rc)}{_tail()}")
    return rc


def check_ptr(ptr, what: str):
    if ptr == ffi.NULL:
        err = ffi.errno or _errno.EINVAL
        raise LibbpfError(err, f"{what}: {os.strerror(err)}{_tail()}")
    return ptr


def _tail() -> str:
    msgs = take_messages()
    return f" (libbpf: {msgs.splitlines()[-1]})" if msgs else ""
