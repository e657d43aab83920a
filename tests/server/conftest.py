"""A real `kvslim serve` on 127.0.0.1 for the tests (tests/test_server.sh runs them).

KVS_BIN: the kvslim binary; KVS_MODEL: the GGUF (default: the SmolLM2 model).
Every wait here is bounded in time; every server listens on loopback only.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

BIN = os.environ.get("KVS_BIN", "build/kvslim")
MODEL = os.environ.get("KVS_MODEL", "models/smollm2-135m-instruct-q4_1.gguf")
HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, tmpdir):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = os.path.join(tmpdir, f"serve-{self.port}.log")
        self.log = open(self.log_path, "w")
        cmd = [BIN, "serve", "-m", MODEL, "--host", HOST, "--port", str(self.port), "-t", "2", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvslim serve exited with {self.proc.returncode}:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"kvslim serve did not answer /health in 120 s:\n{self.read_log()}")
            time.sleep(0.1)

    def read_log(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def kill9(self):
        """SIGKILL, as a crash or the OOM killer would (the teardown then checks nothing)."""
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()
        self.killed = True

    def stop(self, timeout=60):
        """SIGTERM; returns the exit status (the process is killed past timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def tmpdir_session(tmp_path_factory):
    return str(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="session")
def server(tmpdir_session):
    """The main server: 4 running requests, a 2K context, prompts up to 1500 tokens."""
    s = Server("-c", "2048", "--parallel", "4", "--max-prompt", "1500", "--max-body", "256K", tmpdir=tmpdir_session)
    yield s
    rc = s.stop()
    log = s.read_log() if not s.log.closed else open(s.log_path).read()
    assert rc == 0, f"kvslim serve exited with {rc} after SIGTERM:\n{log[-4000:]}"
    assert "stopped" in log


@pytest.fixture(scope="session")
def client(server):
    import openai
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
def make_server(tmpdir_session):
    """Servers of a test's own, stopped (and their exit checked) at its end."""
    started = []

    def make(*args):
        s = Server(*args, tmpdir=tmpdir_session)
        started.append(s)
        return s

    yield make
    for s in started:
        if getattr(s, "killed", False):
            continue
        rc = s.stop()
        assert rc == 0, f"kvslim serve exited with {rc}:\n{open(s.log_path).read()[-4000:]}"
