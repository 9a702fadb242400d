"""A pre-warmed starter of command-line processes for the tests (``tests.conftest.run_cli``).

Every ``python -m cxrsyn.<command>`` a test runs spends about 9 CPU seconds importing torch, torchvision,
lightning, torchmetrics, timm and the scientific stack before it does anything, and the suite runs about a
hundred of them. This server imports those libraries once (importing only: no tensor work, so no thread pool
exists yet), then starts each command as a forked child process: its own process id, working directory,
environment, ``sys.argv`` and standard streams (files), running the command module as ``__main__`` exactly as
``python -m`` does, exiting with its exit code. The cxrsyn modules themselves are imported by each child,
fresh, so nothing of one command's state reaches the next.

Protocol, one JSON object per line: the test sends ``{module, args, env, cwd, stdout, stderr, timeout}`` on
the server's stdin; the server answers ``{returncode, timed_out}`` on its stdout. One request at a time (one
server per pytest worker). ``CXRSYN_TEST_SUBPROCESS=1`` makes ``run_cli`` start plain subprocesses instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

PRELOADED = (
    "numpy",
    "scipy.stats",
    "scipy.ndimage",
    "pandas",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.linear_model",
    "PIL.Image",
    "matplotlib.figure",
    "omegaconf",
    "hydra",
    "torch",
    "torchvision",
    "torchmetrics",
    "lightning.pytorch",
    "timm",
)


def _child(request: dict) -> None:
    """In the forked child: become ``python -m module args`` and never return (SystemExit or an exception
    ends the interpreter as it would end that command)."""
    import random
    import runpy
    import tempfile

    os.setsid()  # its own process group: a timeout kills it and whatever it started
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for stream, path in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
        flags = os.O_RDONLY if stream == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        descriptor = os.open(path, flags, 0o600)
        os.dup2(descriptor, stream)
        os.close(descriptor)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams, open for its lifetime
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    random.seed()  # a fresh process draws its own seeds; a forked one would share the server's
    tempfile.tempdir = None  # and reads TMPDIR afresh
    sys.modules.get("numpy").random.seed()
    sys.path[0] = request["cwd"]  # python -m puts the working directory first
    sys.argv = [request["module"], *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    sys.exit(0)


class _Refuse:
    """A meta-path finder that makes ``import wandb`` fail while the server preloads: timm imports it when
    it can, and its module state (a media temporary folder deleted when a process exits, a service
    connection) must belong to each command, not be shared by every forked child."""

    NAMES = ("wandb",)

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib's protocol
        if name.split(".")[0] in self.NAMES:
            raise ImportError(f"{name} is not preloaded by tests/forkserver.py")
        return None


def _serve() -> int:
    refuse = _Refuse()
    sys.meta_path.insert(0, refuse)
    for name in PRELOADED:
        __import__(name)
    sys.meta_path.remove(refuse)
    leaked = [name for name in sys.modules if name.split(".")[0] in _Refuse.NAMES]
    if leaked:
        raise SystemExit(f"tests/forkserver.py: preloading imported {leaked[:3]}")
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline = time.monotonic() + float(request["timeout"])
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        code = os.waitstatus_to_exitcode(status)
        print(json.dumps({"returncode": code, "timed_out": timed_out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
