"""Streaming request limits: how soon a body over a limit is refused, and /health meanwhile.

One ``distilrank serve`` (default limits: 1000 documents, 20,000 characters per text, a byte limit of about
121 MB) receives bodies over a limit, each sent as fast as the socket takes it. For each, the bench reports when
the byte that crosses the limit was sent and how long after it the answer came (target: within 100 ms; at once
for a Content-Length over the byte limit), while a separate process polls ``GET /health`` (target: under 50 ms),
and the server's peak RSS at the end.

    python -m bench body_limits [--model EXPORT_DIR]

Model: the bench stand-in of ``bench.load_shedding`` unless ``--model``; it is never called (every body is
refused before scoring). Writes OUT/body_limits.{json,md}; current figures: docs/results.md, "Streaming limits".
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import command, write_results

REPO = Path(__file__).resolve().parent.parent
logger = logging.getLogger("bench.body_limits")

ANSWER_TARGET_MS = 100.0
HEALTH_TARGET_MS = 50.0

# a separate process, so that the client's own work does not show up as the server's latency
_POLLER = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
lat, end = [], time.monotonic() + seconds
s = socket.create_connection(("127.0.0.1", port))
while time.monotonic() < end:
    t0 = time.monotonic()
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b'{"status":"ok"}'):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(1)
        data += chunk
    lat.append(time.monotonic() - t0)
    time.sleep(0.005)
print(len(lat), 1000 * max(lat), 1000 * sorted(lat)[len(lat) // 2])
"""


def cases(max_docs: int, max_text_bytes: int) -> list[tuple[str, bytes, dict[str, str], int]]:
    """(name, body, extra headers, index of the byte that crosses the limit). The bodies' Content-Length is within
    the byte limit except the last one's, which the headers alone put over it (crossing at 0)."""
    head = b'{"query": "q", "documents": ['
    element = b'{"text":"x"}'
    tiny = head + b",".join([element] * 2_000_000) + b"]}"
    query_head = b'{"query": '
    return [
        ("2,000,000 one-character documents (26 MB)", tiny, {}, len(head) + max_docs * (len(element) + 1)),
        ("one document of 5,000,000 characters", head + b'"' + b"x" * 5_000_000 + b'"]}', {},
         len(head) + max_text_bytes),
        ("a query of 1,000,000 escaped newlines", query_head + b'"' + b"\\n" * 1_000_000 + b'", "documents": ["x"]}',
         {}, len(query_head) + max_text_bytes),
        ("Content-Length of 300 MB (over the byte limit)", b"", {"Content-Length": "300000000"}, 0),
    ]


def send(port: int, body: bytes, headers: dict[str, str], crossing: int) -> dict[str, Any]:
    """Send the request as fast as the socket takes it; stop when the answer arrives."""
    hdrs = {"Host": "127.0.0.1", "Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
    head = ("POST /v1/rerank HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head)
    sock.setblocking(False)
    t_head = time.monotonic()
    t_cross = t_head if crossing == 0 else None
    sent, answer = 0, b""
    while not answer:
        readable, writable, _ = select.select([sock], [sock] if sent < len(body) else [], [], 10)
        if readable:
            answer = sock.recv(65536)
            break
        if writable:
            try:
                sent += sock.send(body[sent:sent + 65536])
            except BlockingIOError:
                continue
            if t_cross is None and sent > crossing:
                t_cross = time.monotonic()
    t_answer = time.monotonic()
    answer = _rest_of_answer(sock, answer)
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    etype = json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}").get("error", {}).get("type") if answer else None
    return {"status": status, "type": etype, "bytes": len(body), "crossing_byte": crossing, "sent_bytes": sent,
            "ms_after_crossing": 1000 * (t_answer - (t_cross or t_answer))}


def _rest_of_answer(sock: socket.socket, data: bytes) -> bytes:
    """Read until the response's body is complete (or the server closes)."""
    sock.setblocking(True)
    sock.settimeout(5)
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if sep and length is not None and len(body) >= length:
            return data
        try:
            chunk = sock.recv(65536)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk


@command(__doc__)
@click.option("--model", "model_dir", default=None, type=click.Path(file_okay=False),
              help="Exported model dir [default: the bench stand-in, built in --work].")
@click.option("--work", default="/tmp/distilrank_load_shedding", type=click.Path(file_okay=False),
              help="Where the stand-in model is built (shared with bench load_shedding).")
@click.option("--out", "out_dir", default=str(REPO / "bench" / "results"))
def main(model_dir: str | None, work: str, out_dir: str) -> None:
    from bench.load_shedding import build_model
    from ranker.config import ServerConfig
    from ranker.process import start_serve, stop_serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    Path(work).mkdir(parents=True, exist_ok=True)
    model = Path(model_dir) if model_dir else build_model(Path(work))
    config = ServerConfig()
    proc, url = start_serve(model, "--no-spin", quiet=True)
    port = int(url.rsplit(":", 1)[1])
    rows = []
    try:
        for name, body, headers, crossing in cases(config.max_docs, config.max_text_bytes()):
            poller = subprocess.Popen([sys.executable, "-c", _POLLER, str(port), "1.5"], stdout=subprocess.PIPE,
                                      text=True)
            time.sleep(0.3)
            row = {"case": name, **send(port, body, headers, crossing)}
            n, worst, median = poller.communicate(timeout=30)[0].split()
            rows.append(row | {"health_n": int(n), "health_max_ms": float(worst), "health_p50_ms": float(median)})
            logger.info("%s: %s", name, rows[-1])
        peak_kb = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmHWM:"))
    finally:
        stop_serve(proc)
    result = {"rows": rows, "server_peak_rss_mb": peak_kb / 1024, "targets": {
        "answer_within_ms_of_crossing": ANSWER_TARGET_MS, "health_under_ms": HEALTH_TARGET_MS},
        "met": all(r["ms_after_crossing"] <= ANSWER_TARGET_MS and r["health_max_ms"] <= HEALTH_TARGET_MS
                   for r in rows)}
    path = write_results(Path(out_dir) / "body_limits", result, markdown(result))
    click.echo(markdown(result))
    click.echo(f"wrote {path} and its .md")


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Streaming request limits", "",
             "| body | answer | crossing byte | bytes sent before the answer | ms after the crossing byte | "
             "/health max ms (p50) |", "|---|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {r['status']} {r['type']} | {r['crossing_byte']:,} | {r['sent_bytes']:,} | "
                     f"{r['ms_after_crossing']:.1f} | {r['health_max_ms']:.1f} ({r['health_p50_ms']:.1f}) |")
    lines += ["", f"Server peak RSS: {result['server_peak_rss_mb']:.0f} MB. Targets: the answer within "
              f"{ANSWER_TARGET_MS:g} ms of the crossing byte, /health under {HEALTH_TARGET_MS:g} ms."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from bench import run

    run(main)
