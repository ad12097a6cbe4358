"""The notebook kernel the runner starts: an IPython kernel with the network guard installed first.

``python -m radpriv.kernel -f CONNECTION_FILE`` is the ``argv`` of the ``radpriv`` kernel spec that
:func:`radpriv.run.ensure_kernel` installs (``make setup``, and every ``radpriv.run`` execution), so
every notebook executed by ``make reports`` / ``make lab`` runs with
:func:`radpriv.netguard.install_process_guard` in force before any notebook code: opted-in hosts
come from ``$RADPRIV_ALLOW_HOSTS`` (the runner sets it from the notebook's ``allow_hosts`` parameter).


At exit the kernel writes its peak resident memory (its own high-water mark and its children's) as JSON to
``$RADPRIV_PEAK_FILE`` when the runner sets it, so every run record states the notebook's peak memory.
"""

from __future__ import annotations

import os

PEAK_ENV = "RADPRIV_PEAK_FILE"


def peak_rss_bytes() -> int:
    """The largest resident set of this process or any child it waited for, in bytes.

    On Linux this process's own peak is ``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``: a process started
    by fork + exec inherits its parent's high-water mark into ``ru_maxrss`` (the kernel keeps the old memory
    map's peak across exec), so a kernel started by a 4 GB test process would report 4 GB before running a cell.
    Children's ``ru_maxrss`` carries at most this process's own peak at their fork, so their max is fair.
    Elsewhere (macOS: bytes) ``ru_maxrss`` is the best there is."""
    import resource
    import sys

    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if sys.platform == "darwin":
        return int(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, children))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            own = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        pass
    return int(max(own, children) * 1024)


def _write_peak(path: str) -> None:
    import json

    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"peak_rss_bytes": peak_rss_bytes()}, fh)
    except OSError:  # the run record then simply has no peak
        pass


def main() -> None:
    from radpriv.netguard import install_process_guard

    install_process_guard()
    if os.environ.get(PEAK_ENV):
        import atexit

        atexit.register(_write_peak, os.environ[PEAK_ENV])
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
