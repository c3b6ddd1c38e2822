"""Drop TensorFlow's C++ start-up notes from the command line's standard error.

TF_CPP_MIN_LOG_LEVEL=2 silences TensorFlow's own INFO logging, but on CPUs where oneDNN is on by default
(AVX-512 / AMX Xeons) TensorFlow 2.21 writes its "oneDNN custom operations are on" note through absl before
absl's logging is initialised, which no environment variable reaches. Those lines would precede our one-line
errors, so standard error (file descriptor 2, which the C++ code writes to) is read through a pipe and those
exact notes are dropped; every other line is passed on as it comes.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

STARTUP_NOTES = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\..*"
    rb"|I\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] .*"
    rb"|To enable the following instructions: .*in other operations, rebuild TensorFlow .*)\r?\n?$"
)


def drop_tensorflow_startup_notes() -> None:
    """Filter file descriptor 2 for the rest of this process (once; not when standard error is unusable)."""
    if getattr(drop_tensorflow_startup_notes, "installed", False):
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return
    drop_tensorflow_startup_notes.installed = True

    def forward():
        with os.fdopen(read_end, "rb", buffering=0) as source:
            for line in iter(source.readline, b""):
                if not STARTUP_NOTES.match(line):
                    os.write(original, line)

    reader = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    reader.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end: the reader drains what is left and stops
        reader.join(timeout=5)

    atexit.register(restore)
