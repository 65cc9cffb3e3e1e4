"""`make demo`: start the daemon with its embedded default models and show it answer.

Starts `agentd serve` as a real process on a private Unix socket, waits for
the standard gRPC health check, then runs the CLI clients a user would run,
and stops the daemon with SIGTERM (graceful drain).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
AGENTD = str(BIN / "agentd")


def wait_until_serving(socket: Path, daemon: subprocess.Popen, timeout: float = 120.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            sys.exit(f"demo: the daemon exited with code {daemon.returncode}")
        if socket.exists():
            with grpc.insecure_channel(f"unix://{socket}") as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
        time.sleep(0.2)
    sys.exit("demo: the daemon did not become healthy in time")


def run(title: str, *args: str) -> None:
    print(f"\n# {title}\n$ agentd {' '.join(repr(a) if ' ' in a else a for a in args)}", flush=True)
    subprocess.run([AGENTD, *args], check=True)
    print(flush=True)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="agentd-demo-"))
    socket = workdir / "agentd.sock"
    # A fresh home: the agent's journal, credentials and sandbox world start clean every demo.
    env = {**os.environ, "AGENTD_SOCKET": str(socket), "AGENTD_HOME": str(workdir / "home")}
    os.environ.update(AGENTD_SOCKET=str(socket), AGENTD_HOME=str(workdir / "home"))
    print(f"$ agentd serve --socket {socket}", flush=True)
    log_path = workdir / "daemon.log"
    log = log_path.open("w")
    daemon = subprocess.Popen([AGENTD, "serve", "--socket", str(socket)], env=env, stderr=log, stdout=log)
    try:
        wait_until_serving(socket, daemon)
        # The daemon's banner: where it listens and what it serves. Its request log stays in the file.
        for line in log_path.read_text().splitlines():
            if line.startswith("agentd:"):  # the banner; structured log records stay in the file
                print(line)
        run("what the daemon serves", "models", "list")
        run("stream a completion", "generate", "The three primary colours are", "--max-tokens", "24", "--temperature", "0")
        # SmolLM2's model card samples at temperature 0.2, top-p 0.9; greedy decoding of a
        # 135M model tends to loop, which a light repetition penalty prevents.
        run(
            "one chat turn with SmolLM2-135M-Instruct, rendered with its chat template",
            "chat", "Give me three tips for packing for a trip to Hawaii.", "--max-tokens", "200",
            "--temperature", "0.2", "--top-p", "0.9", "--repetition-penalty", "1.15", "--seed", "1",
        )
        run("real all-MiniLM-L6-v2 embeddings: 384 floats per text", "embed", "pay my landlord", "--format", "dims")
        run(
            "cosine similarity of real all-MiniLM-L6-v2 embeddings",
            "embed", "pay my landlord", "send the rent to my landlord", "book me a trip to Hawaii",
            "--format", "similarity",
        )
        # The agent: tool credentials first (read from stdin, stored encrypted), then requests on the
        # sandbox world, planned by the trained planner (the agentd-planner MiniLM adapter tags the
        # request; code builds the plan), then what it remembered.
        for provider in ("bank", "airline", "hotel", "restaurant"):
            subprocess.run([AGENTD, "credentials", "add", provider], input=f"demo-{provider}-token\n", text=True, check=True,
                           stdout=subprocess.DEVNULL)
        print("\n# stored sandbox credentials for bank, airline, hotel, restaurant (agentd credentials add PROVIDER)")
        run(
            "the agent: plan, approval (given by --yes here; at a terminal it asks), steps, answer",
            "run", "send Maria 45 bucks for the concert tickets", "--yes",
        )
        run("two things in one request: the message carries the booking's confirmation code",
            "run", "book a flight to Austin on March 8 and text Sam the confirmation", "--yes")
        run("the agent learns a fact about you", "run", "I live in Los Angeles now", "--yes")
        run("... and uses it where the request leaves it out (the flight's origin)",
            "run", "find flights to Denver tomorrow", "--yes")
        run("what it remembers (agentd memory forget ID | --all)", "memory", "list")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nagentd serve stopped (exit {code}). Run `.venv/bin/agentd serve` to keep it running.")
    sys.exit(code)


if __name__ == "__main__":
    main()
