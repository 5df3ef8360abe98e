"""
The one place where an error becomes what a user sees: one line that names the problem and the fix, never a
traceback. Every script calls one_line_errors() first; the errors the code foresees are SystemExit(message), raised
where the bad value is read (check() for config values). Kept free of torch so that prepare.py starts fast.
"""
import errno
import os
import signal
import sys
import traceback


def one_line_errors():
    """Every script's first call: an exception nobody caught prints as one line (type, message, and where to get the
    traceback) instead of a traceback; a full disk names the path; a second Ctrl-C says what was left as it was.
    The messages of SystemExit (raised for every error the code foresees) print as they are. Set NANOSTORIES_DEBUG=1
    (or pass --debug) for Python's traceback."""
    if os.environ.get("NANOSTORIES_DEBUG") or "--debug" in sys.argv:
        if "--debug" in sys.argv:
            sys.argv.remove("--debug")
        return

    def hook(kind, err, tb):
        if issubclass(kind, KeyboardInterrupt):
            print("\ninterrupted: files being written were removed; checkpoints already saved are as they were",
                  file=sys.stderr)
        elif issubclass(kind, OSError) and err.errno == errno.ENOSPC:
            print(f"error: disk full{f' writing {err.filename}' if err.filename else ''}: free some space (or write "
                  f"elsewhere) and run again; nothing half-written was kept", file=sys.stderr)
        else:
            where = traceback.extract_tb(tb)[-1] if tb else None
            at = f" (at {os.path.basename(where.filename)}:{where.lineno})" if where else ""
            print(f"error: {kind.__name__}: {err}{at}; run again with --debug for the traceback", file=sys.stderr)
    sys.excepthook = hook


def check(ok: bool, message: str):
    """Raise SystemExit(message) unless ok: a config value that has the right type but not a usable value."""
    if not ok:
        raise SystemExit(f"config error: {message}")


def stop_on_signal(announce):
    """The first SIGINT (Ctrl-C) or SIGTERM asks the program to stop at its next safe point: the returned list becomes
    non-empty and announce(the signal's name) is called. A second one aborts at once (KeyboardInterrupt: a file being
    written is removed by its writer, and one_line_errors says so)."""
    stop = []

    def on_signal(signum, frame):
        if stop:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt
        stop.append(signum)
        announce(signal.Signals(signum).name)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop
