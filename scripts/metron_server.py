"""The `metron` binary on a loopback port with its own data directory, for the Python
test scripts (`python_sdk_test.py`, `api_fuzz.py`), and the workspace's fake Stripe server
(`api_fuzz.py` points Metron's Stripe app at it)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.request

START_SECONDS = 60


class MetronServer:
    """`metron serve` on 127.0.0.1:0 with `config` (YAML text) and data under `root`;
    returns once `/readyz` answers 200."""

    def __init__(self, binary: str, root: pathlib.Path, config: str, rust_log: str = "warn"):
        self.log_path = root / "server.log"
        config_path = root / "config.yaml"
        config_path.write_text(config)
        port_file = root / "addr"
        env = dict(os.environ)
        env.setdefault("RUST_LOG", rust_log)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(root / "data"),
             "--port-file", str(port_file), "--config", str(config_path)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + START_SECONDS
        self.addr = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"metron exited with {self.proc.returncode}:\n{self.log_tail()}")
            if port_file.exists():
                text = port_file.read_text().strip()
                if ":" in text:
                    self.addr = text
                    break
            time.sleep(0.05)
        if self.addr is None:
            self.stop()
            raise RuntimeError(f"no port file after {START_SECONDS}s:\n{self.log_tail()}")
        self.url = f"http://{self.addr}"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"metron exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"/readyz not 200 after {START_SECONDS}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class FakeStripeServer:
    """The workspace's `fake-stripe` binary (testing/fake-stripe) on 127.0.0.1:0 with `api_key`;
    `url` is its base URL once it printed its listening line."""

    def __init__(self, binary: str, root: pathlib.Path, api_key: str):
        self.api_key = api_key
        self.log_path = root / "fake-stripe.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--port", "0", "--api-key", api_key],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log,
        )
        # The first line is "fake-stripe listening on URL with api key KEY".
        line = self.proc.stdout.readline().decode(errors="replace").split()
        if len(line) < 4 or line[:3] != ["fake-stripe", "listening", "on"]:
            self.stop()
            raise RuntimeError(f"fake-stripe did not start: {' '.join(line)!r}")
        self.url = line[3]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()
