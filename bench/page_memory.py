"""Memory of the upload page's tab for a large file: headless Chromium uploads one file through the controller.

The same set-up as tests/test_page.py (controller -> proxy -> rclone serve s3 on loopback), with the
controller's default part size. Every 0.25 s it reads the resident memory (VmRSS) of each Chromium
process of this run and the page's JavaScript heap; at the end it prints the peaks (VmHWM too) per
kind of process, the time taken, and checks that the object is the file (SHA-256).

    .venv/bin/python bench/page_memory.py --size 2G      # about 2 minutes and 2 x size of disk on 2 cores
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import S3Server, write_random
from tests.s3proxy import CorsRule, S3Proxy
from tests.service_fixtures import free_port, run_service
from tests.test_page import CHROMIUM_ARGS, _store, chromium_path


def chromium_processes(root: int) -> dict[int, str]:
    """pid -> kind (browser, renderer, gpu, network service, other) of the Chromium processes under ``root``. A
    page runs in a renderer; Chromium keeps a spare one or two besides."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdlines[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: dict[int, str] = {}
    for pid, cmd in cmdlines.items():
        if "chromium" not in cmd.split(" ", 1)[0]:
            continue
        up = pid
        while up > 1 and up != root:
            up = parents.get(up, 1)
        if up != root:
            continue
        kind = "browser"
        for marker, name in (("--type=renderer", "renderer"), ("--type=gpu", "gpu"),
                             ("network.mojom", "network service"), ("--type=", "other")):
            if marker in cmd:
                kind = name
                break
        found[pid] = kind
    return found


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="with a K, M or G suffix (powers of 1024)")
    parser.add_argument("--tmp", default=os.environ.get("TMPDIR", "/tmp"))
    args = parser.parse_args()
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    size = int(args.size[:-1]) * units[args.size[-1].upper()] if args.size[-1].upper() in units else int(args.size)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="page-memory-") as tmp:
        folder = Path(tmp)
        data = folder / "s3data"
        (data / "bucket").mkdir(parents=True)
        f = write_random(folder / "big.bin", size, seed=42)
        port = free_port()
        proxy = S3Proxy(f"http://127.0.0.1:{port}")
        unstarted = S3Server(f"http://127.0.0.1:{port}", data)
        try:
            with run_service(unstarted, "bucket", f"sqlite:///{folder / 'c.db'}", folder / "svc",
                             endpoint=proxy.endpoint) as svc, _store(data, port, svc.base_url) as store, \
                    sync_playwright() as p:
                proxy.cors = CorsRule(origins=(svc.base_url,))
                browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(svc.base_url + "/")
                page.fill("#token", svc.tokens["alice"])
                page.click("#sign-in")
                page.wait_for_selector("#work:not([hidden])")
                page.set_input_files("#file", str(f))
                page.fill("#file-id", "big")
                peak_rss: dict[int, int] = defaultdict(int)  # pid -> KiB
                kinds: dict[int, str] = {}
                peak_total = peak_heap = 0
                started = time.monotonic()
                page.click("#upload")
                while page.evaluate("document.body.dataset.state") not in ("done", "refused", "failed"):
                    total = 0
                    for pid, kind in chromium_processes(os.getpid()).items():
                        kib = status_kib(pid, "VmRSS")
                        kinds[pid] = kind
                        peak_rss[pid] = max(peak_rss[pid], kib)
                        total += kib
                    peak_total = max(peak_total, total)
                    peak_heap = max(peak_heap, int(page.evaluate("performance.memory.usedJSHeapSize")))
                    time.sleep(0.25)
                took = time.monotonic() - started
                hwm = {pid: status_kib(pid, "VmHWM") for pid in kinds}
                state = page.evaluate("document.body.dataset.state")
                text = page.text_content("#message")
                browser.close()
                obj = store.client().get_object(Bucket="bucket", Key="files/big")["Body"]
                digest = hashlib.sha256()
                for chunk in iter(lambda: obj.read(8 << 20), b""):
                    digest.update(chunk)
                with open(f, "rb") as fh:
                    local = hashlib.file_digest(fh, "sha256").hexdigest()
        finally:
            proxy.close()
    print(f"file {size / 2**30:.2f} GiB, {state}: {text}")
    print(f"took {took:.1f} s ({size / 2**20 / took:.0f} MiB/s), object SHA-256 "
          f"{'matches' if digest.hexdigest() == local else 'DIFFERS from'} the file")
    print(f"peak JS heap of the page: {peak_heap / 2**20:.0f} MiB")
    print(f"peak RSS of all Chromium processes together: {peak_total / 1024:.0f} MiB (shared pages counted in each)")
    for pid in sorted(kinds, key=lambda pid: kinds[pid]):
        print(f"  {kinds[pid]} (pid {pid}): peak RSS {peak_rss[pid] / 1024:.0f} MiB sampled, "
              f"VmHWM {hwm[pid] / 1024:.0f} MiB")

if __name__ == "__main__":
    main()
