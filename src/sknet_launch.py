"""The `sknet` command's first instructions, before the seconds of importing torch.

A module of its own, outside the sknet package (importing any sknet module runs sknet/__init__, which
imports torch): from here on SIGINT and SIGTERM end the process with sknet's one line and status 130
(nothing had started), instead of a KeyboardInterrupt traceback or a silent 143. Once the command runs,
sknet.cli.main keeps the same rule, and training installs its own handlers (checkpoint, then 75).
"""

import signal
import sys


def _terminated(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)  # SIGINT raises KeyboardInterrupt already
    # Held back while torch and sknet are imported, delivered the moment the imports are done: a broad
    # `except` in some library's import code could otherwise swallow the KeyboardInterrupt (a Ctrl-C lost,
    # the command running on; seen once on a loaded machine). Costs at most the import's seconds of delay.
    held = {signal.SIGINT, signal.SIGTERM}
    hold = getattr(signal, "pthread_sigmask", None)  # POSIX; elsewhere the signals are not held
    try:
        if hold:
            hold(signal.SIG_BLOCK, held)
        try:
            from sknet.cli.main import main as run_command
        finally:
            if hold:
                hold(signal.SIG_UNBLOCK, held)
    except KeyboardInterrupt as stop:
        print(f"sknet: interrupted by {stop.args[0] if stop.args else 'SIGINT'} while starting", file=sys.stderr)
        return 130
    return run_command()


if __name__ == "__main__":
    sys.exit(main())
