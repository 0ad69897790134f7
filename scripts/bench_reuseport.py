"""How the kernel splits new connections over SO_REUSEPORT listeners (no server: accept counts only).

Opens 2 listeners with SO_REUSEPORT on one loopback port, connects 8 (then 32) clients at once
as ``hey`` does, and counts what each listener accepted; repeated ``--trials`` times. This is
the split one-listener-per-worker would give (serving/balance.py explains the choice).

    python scripts/bench_reuseport.py [--trials 300]
"""

from __future__ import annotations

import argparse
import collections
import socket


def trial(port: int, conns: int, listeners: int = 2) -> tuple[int, ...]:
    """Connections each listener accepted, largest first."""
    ls = []
    for _ in range(listeners):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        s.setblocking(False)
        ls.append(s)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    counts = []
    for s in ls:
        n = 0
        while True:
            try:
                a, _ = s.accept()
            except BlockingIOError:
                break
            a.close()
            n += 1
        counts.append(n)
    for c in clients + ls:
        c.close()
    return tuple(sorted(counts, reverse=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=300)
    args = ap.parse_args()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    for conns in (8, 32):
        dist = collections.Counter(trial(port, conns) for _ in range(args.trials))
        even = sum(n for split, n in dist.items() if split[0] - split[-1] <= 1)
        print(f"{conns} connections over 2 listeners, {args.trials} trials: even (within 1) {even / args.trials:.0%}; "
              + ", ".join(f"{'/'.join(map(str, k))}: {v}" for k, v in sorted(dist.items(), key=lambda kv: -kv[1])))  # fmt: skip


if __name__ == "__main__":
    main()
