"""The notebook kernel the runner starts: an IPython kernel with the network guard installed first.

``python -m radpriv.kernel -f CONNECTION_FILE`` is the ``argv`` of the ``radpriv`` kernel spec that
:func:`radpriv.run.ensure_kernel` installs (``make setup``, and every ``radpriv.run`` execution), so
every notebook executed by ``make reports`` / ``make lab`` runs with
:func:`radpriv.llm.netguard.install_process_guard` in force before any notebook code: opted-in hosts
come from ``$RADPRIV_ALLOW_HOSTS`` (the runner sets it from the notebook's ``allow_hosts`` parameter).
"""

from __future__ import annotations


def main() -> None:
    from radpriv.llm.netguard import install_process_guard

    install_process_guard()
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
