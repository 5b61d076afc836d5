"""The upload page (``GET /`` of ``serve``) in a real headless Chromium, against the controller and rclone serve s3.

Everything runs over HTTP on loopback: the controller as a process (uvicorn), rclone serve s3 behind the
counting proxy (every part PUT the page makes is seen there), and the machine's Chromium driven by
Playwright. The store is set up as docs/controller.md tells operators to set up a bucket for the page:
rclone's --allow-origin (only the controller's origin) and ``Access-Control-Expose-Headers: ETag`` on
its answers; the preflight requests are answered by the proxy with the documented rule (PUT,
Content-MD5), since rclone answers them with a fixed header list that lacks Content-MD5.

Without Chromium (or Playwright) the tests are skipped; with S3MU_REQUIRE_BROWSER=1 (CI) they fail.
With S3MU_PAGE_SCREENSHOTS=FOLDER, the 64 MiB test saves the screenshots of docs/controller.md there (and
tests/test_page_many.py its picture of many files).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3_multipart_upload.plan import MiB
from tests.conftest import ACCESS_KEY, SECRET_KEY, S3Server, _rclone_server, run_cli, write_random
from tests.s3proxy import CorsRule, Fault, S3Proxy, Seen
from tests.service_fixtures import ServiceProcess, free_port, run_service
from tests.test_service_api import send_parts

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REQUIRE_ENV = "S3MU_REQUIRE_BROWSER"
PART = 5 * MiB
URL_EXPIRY = 3  # seconds: long enough for any PUT here, short enough to outwait in one test
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(f"{reason} (apt-get install chromium, and pip install -e '.[dev]' for playwright)")


def chromium_path() -> str | None:
    for candidate in (os.environ.get("S3MU_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    return None


@dataclass
class Stack:
    svc: ServiceProcess
    proxy: S3Proxy
    store: S3Server  # rclone, straight (not through the proxy)

    def object_sha256(self, file_id: str) -> str:
        body = self.store.client().get_object(Bucket=self.svc.bucket, Key=f"files/{file_id}")["Body"]
        return hashlib.sha256(body.read()).hexdigest()

    def pending(self, file_id: str, status: str = "pending", principal: str = "alice") -> Any:
        with self.svc.client(principal) as c:
            r = c.get(f"/files/{file_id}/multipart_uploads", params={"status": status})
            assert r.status_code == 200, r.text
            return r.json()

    def finished(self, file_id: str, principal: str = "alice") -> Any:
        """The file's completed upload: uploaded, or accepted already (the page declares each file's SHA-256, and
        the controller's verifier accepts a matching object within moments)."""
        for status in ("uploaded", "accepted", "uploaded"):  # the verifier may move it between the two asks
            found = self.pending(file_id, status, principal)
            if found is not None:
                return found
        return None

    def held(self, upload_id: str) -> set[int]:
        with self.svc.client() as c:
            r = c.get(f"/multipart_uploads/{upload_id}/parts")
            assert r.status_code == 200, r.text
            return {p["PartNumber"] for p in r.json()["parts"]}

    def s3_uploads(self) -> set[str]:
        listed = self.store.client().list_multipart_uploads(Bucket=self.svc.bucket)
        return {u["UploadId"] for u in listed.get("Uploads", [])}


def _store(data: Path, port: int, origin: str) -> contextlib.AbstractContextManager[S3Server]:
    """rclone serve s3 on ``port``, with the CORS headers a bucket set up for the page gives to ``origin``."""
    return _rclone_server(data, (ACCESS_KEY, SECRET_KEY), port=port,
                          extra=("--allow-origin", origin, "--response-header", "Access-Control-Expose-Headers: ETag"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The controller (SQLite, 5 MiB parts) -> proxy -> rclone; rclone starts last, once the page's origin is known."""
    folder = tmp_path_factory.mktemp("page")
    data = folder / "s3data"
    bucket = "page-uploads"
    (data / bucket).mkdir(parents=True)
    port = free_port()
    proxy = S3Proxy(f"http://127.0.0.1:{port}")
    unstarted = S3Server(f"http://127.0.0.1:{port}", data)
    try:
        with run_service(unstarted, bucket, f"sqlite:///{folder / 'controller.db'}", folder / "service",
                         "--part-size", "5M", "--url-expiry", f"{URL_EXPIRY}s", endpoint=proxy.endpoint) as svc, \
                _store(data, port, svc.base_url) as store:
            proxy.cors = CorsRule(origins=(svc.base_url,))
            yield Stack(svc, proxy, store)
    finally:
        proxy.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        _unavailable("no Chromium on this machine")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage and localStorage) on the page; the proxy forgets earlier requests."""
    stack.proxy.reset()
    stack.proxy.rule = None
    stack.proxy.delay = 0.0
    stack.proxy.hide_headers = ()
    context = browser.new_context(viewport={"width": 900, "height": 760})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: print("console:", msg.text))  # shown when a test fails
    tab.goto(stack.svc.base_url + "/")
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# -- what a user does ---------------------------------------------------------------------------------------

def sign_in(tab: Any, stack: Stack, principal: str = "alice") -> None:
    tab.fill("#token", stack.svc.tokens[principal])
    tab.click("#sign-in")
    tab.wait_for_selector("#work:not([hidden])")
    assert tab.text_content("#who") == principal


def upload(tab: Any, path: Path, file_id: str | None) -> None:
    tab.set_input_files("#file", str(path))
    if file_id is not None:
        tab.fill("#file-id", file_id)
    tab.click("#upload")


def wait_state(tab: Any, *states: str, timeout: float = 60) -> str:
    tab.wait_for_function("states => states.includes(document.body.dataset.state)", arg=list(states),
                          timeout=timeout * 1000)
    return str(tab.evaluate("document.body.dataset.state"))


def message(tab: Any) -> str:
    return str(tab.text_content("#message"))


def wait_parts_held(stack: Stack, file_id: str, at_least: int, timeout: float = 60) -> str:
    """Until the storage holds ``at_least`` parts of the file's pending upload; returns the upload id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = stack.pending(file_id)
        if pending is not None and len(stack.held(pending["upload_id"])) >= at_least:
            return str(pending["upload_id"])
        time.sleep(0.05)
    raise AssertionError(f"the storage never held {at_least} parts of {file_id}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the service side of the page ---------------------------------------------------------------------------

def test_page_and_assets_are_served_without_a_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.svc.base_url) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        policy = r.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert f"connect-src 'self' {stack.proxy.endpoint};" in policy  # the controller and the storage only
        assert r.headers["referrer-policy"] == "no-referrer"
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text):
            a = c.get(asset)
            assert a.status_code == 200, asset
        js = c.get("/static/page.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert c.get("/static/md5.js").status_code == 200
        # No third-party code: every module the page and its SHA-256 worker import is one of these files.
        for name in ("page.js", "md5.js", "sha256.js", "sha256-worker.js", "files.js"):
            js = c.get(f"/static/{name}")
            assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript"), name
            for imported in re.findall(r'(?:from|import\()\s*"([^"]+)"', js.text):
                assert re.fullmatch(r"\./[a-z0-9-]+\.js", imported), (name, imported)
            assert "http://" not in js.text and "https://" not in js.text, name
        assert c.get("/static/nope.js").status_code == 404
        assert c.get("/me").status_code == 401
        assert "/me" in c.get("/openapi.json").json()["paths"] and "/" not in c.get("/openapi.json").json()["paths"]
    with stack.svc.client("bob") as c:
        assert c.get("/me").json() == {"principal": "bob", "roles": []}


# -- MD5 in the browser -------------------------------------------------------------------------------------

def test_md5_in_the_browser_is_hashlibs(page: Any) -> None:
    """The page's own MD5 against Python's, at block edges (55, 56, 64 bytes) and across md5OfBlob's 4 MiB reads,
    fed whole, in pieces of odd sizes, and 7 bytes at a time."""
    sizes = [0, 1, 55, 56, 57, 63, 64, 65, 127, 128, 1000, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 9 * MiB + 7]
    data = hashlib.shake_256(b"md5 test").digest(max(sizes))
    got = page.evaluate("""async ([b64, sizes]) => {
        const m = await import("/static/md5.js");
        const all = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const out = [];
        for (const size of sizes) {
            const bytes = all.subarray(0, size);
            const pieces = new m.MD5();
            for (let i = 0; i < size; i += 1000003) pieces.update(bytes.subarray(i, i + 1000003));
            const small = new m.MD5();
            for (let i = 0; i < Math.min(size, 4096); i += 7) small.update(bytes.subarray(i, Math.min(i + 7, 4096)));
            const whole = new m.MD5().update(bytes).digest();
            out.push([m.toHex(whole), m.toHex(pieces.digest()), m.toHex(await m.md5OfBlob(new Blob([bytes]))),
                      m.toBase64(whole), m.toHex(small.digest())]);
        }
        return out;
    }""", [base64.b64encode(data).decode(), sizes])
    for size, (whole, pieces, blob, b64, small) in zip(sizes, got, strict=True):
        want = hashlib.md5(data[:size])
        assert whole == pieces == blob == want.hexdigest(), size
        assert b64 == base64.b64encode(want.digest()).decode(), size
        assert small == hashlib.md5(data[:min(size, 4096)]).hexdigest(), size
    mib_per_s = page.evaluate("""async () => {
        const m = await import("/static/md5.js");
        const bytes = new Uint8Array(64 * 1024 * 1024);
        for (let i = 0; i < bytes.length; i += 4096) bytes[i] = i & 255;
        const t0 = performance.now();
        new m.MD5().update(bytes).digest();
        return 64 / ((performance.now() - t0) / 1000);
    }""")
    print(f"MD5 in Chromium: {mib_per_s:.0f} MiB/s")
    assert mib_per_s > 20  # an upload link this page serves is rarely faster; far below, hashing would be the limit


# -- uploads ------------------------------------------------------------------------------------------------

def test_64_mib_in_5_mib_parts(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Sign in, choose, upload: every part once, the object is the file, status uploaded, and the page says so."""
    shots = os.environ.get("S3MU_PAGE_SCREENSHOTS")
    f = write_random(tmp_path / "run-64.bin", 64 * MiB, seed=1)
    sign_in(page, stack)
    assert "s3mu.token" in page.evaluate("Object.keys(sessionStorage)")
    assert stack.svc.tokens["alice"] not in page.url + page.evaluate("JSON.stringify(localStorage)")
    if shots:
        page.set_input_files("#file", str(f))
        page.fill("#file-id", "run-64")
        page.locator("main").screenshot(path=f"{shots}/page-idle.png")
        stack.proxy.delay = 0.5  # slow enough to catch the page mid-upload
        page.click("#upload")
        page.wait_for_function("() => document.body.dataset.state === 'uploading' && "
                               "/parts [4-9] of/.test(document.getElementById('progress').textContent)")
        page.locator("main").screenshot(path=f"{shots}/page-uploading.png")
    else:
        upload(page, f, "run-64")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    if shots:
        page.locator("main").screenshot(path=f"{shots}/page-done.png")

    assert message(page) == "Uploaded run-64.bin as file id run-64: 64.0 MiB, status uploaded."
    puts = stack.proxy.part_puts()
    assert sorted(puts) == list(range(1, 14)) and set(puts.values()) == {1}  # 13 parts of 5 MiB, each sent once
    sizes = {s.part_number: s.size for s in stack.proxy.seen if s.part_number}
    assert all(sizes[n] == PART for n in range(1, 13)) and sizes[13] == 64 * MiB - 12 * PART
    assert stack.object_sha256("run-64") == sha256(f)
    done = stack.finished("run-64")
    assert done["object_size"] == 64 * MiB and done["status"] in ("uploaded", "accepted")
    assert done["sha256"] == sha256(f)  # declared at init: the controller checks the object against it
    assert page.evaluate("localStorage.getItem('s3mu.uploads.v1')") == '{"alice":{}}'  # nothing left to resume


def test_reload_mid_upload_sends_only_the_missing_parts(page: Any, stack: Stack, tmp_path: Path) -> None:
    """A reload mid-upload; then a different file of the same name and size is refused (two ways), and the same
    file resumes: the parts the storage held are checked and kept, only the others are sent."""
    f = write_random(tmp_path / "reload.bin", 9 * PART + 12345, seed=2)
    sign_in(page, stack)
    stack.proxy.delay = 0.3
    upload(page, f, "reload-1")
    upload_id = wait_parts_held(stack, "reload-1", 3)
    page.once("dialog", lambda d: d.accept())  # the browser asks before leaving mid-upload
    page.reload()  # the in-flight PUTs die with the page
    stack.proxy.wait_idle()
    held = stack.held(upload_id)
    assert 3 <= len(held) < 10
    stack.proxy.delay = 0.0
    stack.proxy.reset()

    # Signed in still (sessionStorage); before any file is chosen, the page says what is unfinished.
    page.wait_for_selector("#work:not([hidden])")
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('An upload')",
                           timeout=10_000)
    assert message(page).startswith("An upload from this browser is unfinished: file id reload-1 (reload.bin, "
                                    "45.0 MiB, modified ")
    assert message(page).endswith("Choose that file to resume it.")
    # The page remembers the upload, but not a file of another mtime: the message shows both times.
    (tmp_path / "newer").mkdir()
    newer = write_random(tmp_path / "newer" / "reload.bin", f.stat().st_size, seed=3)
    os.utime(newer, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    upload(page, newer, "reload-1")
    assert wait_state(page, "refused", "done", "failed") == "refused"
    assert "reload.bin is not the file the unfinished upload of file id reload-1 was started with: it was " \
           "modified " in message(page)
    picked, expected = re.findall(r"modified (.+?), that file (.+?)\. Choose", message(page))[0]
    assert picked != expected
    # ... nor one with the same name, size and mtime but other bytes: when chosen, a held part's MD5 says so at
    # once (no "press Upload to resume"), and Upload refuses it.
    (tmp_path / "same-mtime").mkdir()
    same_mtime = write_random(tmp_path / "same-mtime" / "reload.bin", f.stat().st_size, seed=3)
    os.utime(same_mtime, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    page.set_input_files("#file", str(same_mtime))
    page.wait_for_function("() => /but not its bytes|press Upload/.test(document.getElementById('message')"
                           ".textContent)", timeout=10_000)
    assert "but not its bytes: the parts already sent do not match it" in message(page)
    assert "press Upload" not in message(page)
    assert page.get_attribute("#message", "role") == "alert"
    page.click("#upload")
    assert wait_state(page, "refused", "done", "failed") == "refused"
    assert f"None of the {len(held)} parts the storage holds for file id reload-1 matches reload.bin" in message(page)
    assert stack.proxy.part_puts() == {}, "a refused file sent parts"
    assert stack.held(upload_id) == held

    # The same file: recognised (its file id filled in), checked, resumed.
    page.set_input_files("#file", str(f))
    assert page.input_value("#file-id") == "reload-1"
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('This file')",
                           timeout=10_000)
    assert message(page) == ("This file has an unfinished upload (file id reload-1): press Upload to resume it; its "
                             "parts the storage holds are checked, and kept where they match.")
    page.click("#upload")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert message(page).endswith(f"{len(held)} of 10 parts were already there and were kept.")
    puts = stack.proxy.part_puts()
    assert set(puts) == set(range(1, 11)) - held and set(puts.values()) == {1}
    assert stack.object_sha256("reload-1") == sha256(f)
    assert stack.finished("reload-1")["upload_id"] == upload_id


def test_cli_upload_finished_from_the_page(page: Any, stack: Stack, tmp_path: Path) -> None:
    """The CLI sends parts 1-3 of a version of the file whose part 2 differs, and stops. The page, given the file,
    keeps parts 1 and 3, sends part 2 again and the parts not sent, and says so."""
    f = write_random(tmp_path / "cli-first.bin", 6 * PART + 99, seed=4)
    (tmp_path / "earlier").mkdir()
    earlier = tmp_path / "earlier" / "cli-first.bin"
    earlier.write_bytes(f.read_bytes()[:PART] + bytes(PART) + f.read_bytes()[2 * PART:])
    env = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true"}
    stack.proxy.rule = lambda seen, i: Fault(500, "InternalError") if seen.part_number == 4 else None
    r = run_cli(["upload", "--controller", stack.svc.base_url, "--file-id", "cli-first", "--token-file",
                 str(stack.svc.token_file()), "-f", str(earlier), "-m", str(tmp_path / "m.json"), "-a",
                 str(tmp_path / "p.jsonl"), "-t", "1", "--retries", "1"], env)
    assert r.returncode == 75, r.stderr  # parts 1-3 sent, then part 4 failed twice
    upload_id = stack.pending("cli-first")["upload_id"]
    assert stack.held(upload_id) == {1, 2, 3}
    stack.proxy.rule = None
    stack.proxy.reset()

    sign_in(page, stack)
    upload(page, f, "cli-first")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert message(page).endswith("2 of 7 parts were already there and were kept. 1 held part did not match this "
                                  "file and was sent again.")
    assert stack.proxy.part_puts() == {2: 1, 4: 1, 5: 1, 6: 1, 7: 1}
    assert stack.object_sha256("cli-first") == sha256(f)
    assert stack.finished("cli-first")["upload_id"] == upload_id


def test_page_upload_finished_by_the_cli(page: Any, stack: Stack, tmp_path: Path) -> None:
    f = write_random(tmp_path / "page-first.bin", 10 * PART + 1, seed=5)  # parts left after Pause: 11 > 2 x 4
    sign_in(page, stack)
    stack.proxy.delay = 0.5
    upload(page, f, "page-first")
    upload_id = wait_parts_held(stack, "page-first", 2)
    page.click("#pause")
    assert wait_state(page, "paused") == "paused"
    assert message(page).startswith("Paused: ")
    stack.proxy.wait_idle()
    held = stack.held(upload_id)
    stack.proxy.delay = 0.0
    stack.proxy.reset()

    env = {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
           "AWS_EC2_METADATA_DISABLED": "true"}
    r = run_cli(["upload", "--controller", stack.svc.base_url, "--file-id", "page-first", "--token-file",
                 str(stack.svc.token_file()), "-f", str(f), "-m", str(tmp_path / "m.json"), "-a",
                 str(tmp_path / "p.jsonl")], env)
    assert r.returncode == 0, r.stderr
    assert f"Adopted {len(held)} parts" in r.stderr
    assert set(stack.proxy.part_puts()) == set(range(1, 12)) - held
    assert stack.object_sha256("page-first") == sha256(f)
    assert stack.finished("page-first")["upload_id"] == upload_id


def test_a_dropped_file_is_chosen(page: Any, stack: Stack) -> None:
    sign_in(page, stack)
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(3 * 1024 * 1024)], "dropped.bin", {lastModified: 0}));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""")
    assert page.text_content("#file-info").startswith("dropped.bin · 3.0 MiB · modified ")
    assert page.is_enabled("#upload")


def test_bad_token_and_another_principals_file(page: Any, stack: Stack, tmp_path: Path) -> None:
    before = stack.s3_uploads()
    page.fill("#token", "not-a-token-of-this-controller")
    page.click("#sign-in")
    page.wait_for_function("() => document.getElementById('signin-message').textContent !== ''")
    assert page.text_content("#signin-message") == "The controller refused this token: check it and try again."
    assert page.is_hidden("#work")
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    assert page.is_visible("#signin") and page.evaluate("sessionStorage.length") == 0

    with stack.svc.client("bob") as c:
        assert c.post("/files/bobs-run/multipart_uploads", json={"size": 1000}).status_code == 201
    bobs = stack.s3_uploads() - before
    f = write_random(tmp_path / "mine.bin", 1000, seed=6)
    sign_in(page, stack)
    upload(page, f, "bobs-run")
    assert wait_state(page, "refused", "done", "failed") == "refused"
    assert message(page) == "File id bobs-run belongs to someone else: choose another file id."
    assert stack.s3_uploads() == before | bobs, "an upload was created"
    assert stack.proxy.part_puts() == {}


def test_cancel_deletes_the_upload_and_its_parts(page: Any, stack: Stack, tmp_path: Path) -> None:
    f = write_random(tmp_path / "cancel.bin", 8 * PART, seed=7)
    sign_in(page, stack)
    stack.proxy.delay = 0.3
    upload(page, f, "cancel-1")
    upload_id = wait_parts_held(stack, "cancel-1", 2)
    page.once("dialog", lambda d: d.accept())
    page.click("#cancel")
    assert wait_state(page, "cancelled", "failed", "refused") == "cancelled", message(page)
    assert message(page) == ("Cancelled: the upload of file id cancel-1 is cancelled, and the parts sent are "
                             "deleted.")
    with stack.svc.client() as c:
        assert c.get(f"/multipart_uploads/{upload_id}").json()["status"] == "cancelled"
    stack.proxy.wait_idle()
    assert upload_id not in stack.s3_uploads()
    with pytest.raises(Exception, match="NoSuchUpload"):
        stack.store.client().list_parts(Bucket=stack.svc.bucket, Key="files/cancel-1", UploadId=upload_id)
    assert "cancel-1" not in page.evaluate("localStorage.getItem('s3mu.uploads.v1')")


def test_network_drop_then_continue(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Offline: the page waits and says so, then continues by itself; offline again and paused: it stays paused
    until Resume."""
    f = write_random(tmp_path / "drop.bin", 10 * PART, seed=8)
    sign_in(page, stack)
    stack.proxy.delay = 0.3
    upload(page, f, "drop-1")
    upload_id = wait_parts_held(stack, "drop-1", 2)
    page.context.set_offline(True)
    assert wait_state(page, "waiting") == "waiting"
    assert message(page).startswith("The network connection is lost: waiting for it to come back")
    time.sleep(1)
    assert page.evaluate("document.body.dataset.state") == "waiting"
    page.context.set_offline(False)
    assert wait_state(page, "uploading", "done") == "uploading"
    assert message(page) == "Back online: continuing."

    wait_parts_held(stack, "drop-1", 4)
    page.context.set_offline(True)
    assert wait_state(page, "waiting") == "waiting"
    page.click("#pause")
    assert wait_state(page, "paused") == "paused"
    page.context.set_offline(False)
    time.sleep(1)
    assert page.evaluate("document.body.dataset.state") == "paused"
    stack.proxy.wait_idle()
    held = stack.held(upload_id)
    assert len(held) < 10
    stack.proxy.delay = 0.0
    page.click("#resume")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert stack.object_sha256("drop-1") == sha256(f)


def test_expired_url_gets_a_fresh_one(page: Any, stack: Stack, tmp_path: Path) -> None:
    f = write_random(tmp_path / "expiry.bin", 3 * PART, seed=9)
    held_once: list[int] = []

    def hold_part_2_once(seen: Seen, index: int) -> Fault | None:
        if seen.part_number == 2 and not held_once:
            held_once.append(index)
            return Fault(hold=URL_EXPIRY + 1.5)  # past the URL's expiry: the store refuses it
        return None

    stack.proxy.rule = hold_part_2_once
    sign_in(page, stack)
    log_before = stack.svc.log().count("/part/2/presigned_post")
    upload(page, f, "expiry-1")
    assert wait_state(page, "done", "refused", "failed", timeout=90) == "done", message(page)
    puts = stack.proxy.part_puts()
    # The store refuses the expired URL and drops the connection; Chromium itself resends such a PUT on a fresh
    # connection (the same URL: refused again) before the page sees the failure and asks for one new URL.
    assert puts[1] == puts[3] == 1 and puts[2] >= 2
    assert stack.svc.log().count("/part/2/presigned_post") - log_before == 2
    assert stack.object_sha256("expiry-1") == sha256(f)


def test_a_part_corrupted_on_the_way_is_sent_again(page: Any, stack: Stack, tmp_path: Path) -> None:
    """One byte of part 1 flipped between the page and the store: the store refuses it (Content-MD5), the page
    sends it again, and the object is the file."""
    f = write_random(tmp_path / "corrupt.bin", 2 * PART + 5, seed=10)
    flipped: list[int] = []

    def corrupt_part_1_once(seen: Seen, index: int) -> Fault | None:
        if seen.part_number == 1 and not flipped:
            flipped.append(index)
            return Fault(corrupt=True)
        return None

    stack.proxy.rule = corrupt_part_1_once
    sign_in(page, stack)
    upload(page, f, "corrupt-1")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert flipped and stack.proxy.part_puts() == {1: 2, 2: 1, 3: 1}
    assert stack.object_sha256("corrupt-1") == sha256(f)


def test_a_bucket_that_hides_the_etag_is_named(page: Any, stack: Stack, tmp_path: Path) -> None:
    """The CORS trap of browser uploaders: without ExposeHeaders ETag the browser hides it. The page stops and
    says which rule is missing; it does not complete the upload."""
    f = write_random(tmp_path / "hidden.bin", PART + 1, seed=11)
    stack.proxy.hide_headers = ("Access-Control-Expose-Headers",)
    sign_in(page, stack)
    upload(page, f, "hidden-etag")
    assert wait_state(page, "refused", "done", "failed") == "refused"
    assert "does not let this page read its ETag: the bucket's CORS rule must expose the ETag header" in message(page)
    assert stack.pending("hidden-etag") is not None and stack.pending("hidden-etag", "uploaded") is None


def test_a_stalled_part_is_sent_again(page: Any, stack: Stack, tmp_path: Path) -> None:
    """A PUT that hangs without an error (no progress, no answer) is given up after the page's stall time (120 s;
    2 s here) and sent again with a new URL."""
    f = write_random(tmp_path / "stall.bin", 2 * PART, seed=12)
    held_once: list[int] = []

    def hang_part_1_once(seen: Seen, index: int) -> Fault | None:
        if seen.part_number == 1 and not held_once:
            held_once.append(index)
            return Fault(hold=12)  # the body stays unread: the browser sees no progress
        return None

    stack.proxy.rule = hang_part_1_once
    sign_in(page, stack)
    page.evaluate("document.body.dataset.stallSeconds = '2'")
    started = time.monotonic()
    upload(page, f, "stall-1")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert time.monotonic() - started < 9, "the page waited for the hung PUT instead of sending it again"
    assert stack.proxy.part_puts()[1] >= 2
    assert stack.object_sha256("stall-1") == sha256(f)


# -- what a browser walk of the page found (issue 25, item 7) ----------------------------------------------------

def _rgb(css: str) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in re.findall(r"[\d.]+", css)[:3])
    return r, g, b


def contrast(fg: str, bg: str) -> float:
    """WCAG 2 contrast ratio of two computed CSS colours (``rgb(r, g, b)``)."""
    def luminance(css: str) -> float:
        lin = [c / 255 / 12.92 if c / 255 <= 0.03928 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in _rgb(css)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def focused(tab: Any) -> dict[str, Any]:
    """The element with the keyboard focus: its id, and the outline drawn for it (around the drop zone for the
    hidden file input)."""
    return dict(tab.evaluate("""() => {
        const el = document.activeElement;
        const ring = el && (el.id === "file" || el.id === "folder") ? document.getElementById("drop") : el;
        const style = ring ? getComputedStyle(ring) : null;
        return {id: el ? (el.id || el.tagName) : null, style: style ? style.outlineStyle : "none",
                width: style ? parseFloat(style.outlineWidth) : 0};
    }"""))


def assert_focus_visible(tab: Any, element_id: str) -> None:
    tab.wait_for_function("id => document.activeElement && document.activeElement.id === id", arg=element_id,
                          timeout=15_000)
    now = focused(tab)
    assert now["style"] != "none" and now["width"] >= 2, f"no focus ring on {element_id}: {now}"


def sign_in_by_keyboard(page: Any, stack: Stack) -> None:
    """Tab to the token field, type alice's token, Enter: signed in, the focus (ringed) on the file input, not the
    body (the drop zone rings the hidden input)."""
    page.wait_for_selector("#signin:not([hidden])")
    for _ in range(5):
        page.keyboard.press("Tab")
        if focused(page)["id"] == "token":
            break
    assert_focus_visible(page, "token")
    page.keyboard.type(stack.svc.tokens["alice"])
    page.keyboard.press("Enter")
    page.wait_for_selector("#work:not([hidden])")
    assert_focus_visible(page, "file")


def test_keyboard_only_from_sign_in_to_done(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Tab, type and Enter only: after each step the focus is on the next step's control, never on the page body,
    with a ring of at least 2 px around it (the drop zone's for the hidden file input)."""
    f = write_random(tmp_path / "Keyboard run 7.bin", 10 * PART, seed=20)
    sign_in_by_keyboard(page, stack)

    page.set_input_files("#file", str(f))  # what the file chooser that Enter opens gives
    page.keyboard.press("Tab")
    assert_focus_visible(page, "folder")  # "choose a folder", ringed by the drop zone too
    page.keyboard.press("Tab")
    assert_focus_visible(page, "file-id")
    assert page.input_value("#file-id") == "Keyboard-run-7.bin"  # suggested from the file's name
    page.keyboard.press("Tab")
    assert_focus_visible(page, "upload")
    stack.proxy.delay = 0.5
    page.keyboard.press("Enter")
    assert_focus_visible(page, "pause")
    wait_parts_held(stack, "Keyboard-run-7.bin", 1)
    page.keyboard.press("Enter")
    assert wait_state(page, "paused") == "paused"
    assert_focus_visible(page, "resume")
    stack.proxy.delay = 0.0
    page.keyboard.press("Enter")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert_focus_visible(page, "file")
    page.keyboard.press("Shift+Tab")
    assert_focus_visible(page, "sign-out")
    page.keyboard.press("Enter")  # nothing running: no question
    page.wait_for_selector("#signin:not([hidden])")
    assert_focus_visible(page, "token")


def test_accessible_names_live_regions_and_contrast(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Chromium's own accessibility tree names every control; errors are alerts and progress is read out by
    tenths; input and button borders have 3:1 against the page, and texts 4.5:1."""
    sign_in(page, stack)
    cdp = page.context.new_cdp_session(page)
    nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    named: dict[str, list[str]] = {}
    for node in nodes:
        role = node.get("role", {}).get("value")
        if node.get("ignored") or role not in {"button", "textbox", "progressbar"}:
            continue
        named.setdefault(role, []).append(node.get("name", {}).get("value", ""))
    assert named["progressbar"] == ["Upload progress"]
    assert "File id" in named["textbox"] and all(named["textbox"])
    assert {"Sign out", "choose files", "choose a folder", "Upload", "Pause", "Resume", "Cancel upload",
            "Refresh the list"} <= set(named["button"])
    assert all(named["button"])
    help_ids = page.get_attribute("#file-id", "aria-describedby")
    assert help_ids and "file-id-help" in help_ids

    colours = page.evaluate("""() => {
        const bg = getComputedStyle(document.querySelector("main")).backgroundColor;
        const out = [];
        for (const el of document.querySelectorAll("input[type=text], button:not(.link), #drop")) {
            out.push([el.id, getComputedStyle(el).borderTopColor, bg]);
        }
        return out;
    }""")
    assert len(colours) >= 6
    for element_id, border, bg in colours:
        assert contrast(border, bg) >= 3, f"{element_id} border {border} on {bg}"
    for selector in (".note", ".who", ".file-info", ".progress", "label"):
        fg, bg = page.evaluate("s => [getComputedStyle(document.querySelector(s)).color, "
                               "getComputedStyle(document.querySelector('main')).backgroundColor]", selector)
        assert contrast(fg, bg) >= 4.5, selector

    assert page.get_attribute("#message", "aria-live") == "polite"
    page.set_input_files("#file", str(write_random(tmp_path / "small.bin", 10, seed=27)))
    page.fill("#file-id", "-x")
    page.click("#upload")  # a bad file id: an error, read out at once
    assert message(page).startswith("A file id is 1 to 255 letters")
    assert page.get_attribute("#message", "role") == "alert"
    assert page.get_attribute("#message", "aria-live") == "assertive"
    fg, bg = page.evaluate("() => [getComputedStyle(document.getElementById('message')).color, "
                           "getComputedStyle(document.getElementById('message')).backgroundColor]")
    assert contrast(fg, bg) >= 4.5

    f = write_random(tmp_path / "announce.bin", 10 * PART, seed=21)
    page.evaluate("""() => { window.announced = [];
        new MutationObserver(() => window.announced.push(document.getElementById("announce").textContent))
            .observe(document.getElementById("announce"), {childList: true, characterData: true, subtree: true}); }""")
    stack.proxy.delay = 0.5
    upload(page, f, "announce-1")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    announced = page.evaluate("window.announced")
    assert page.get_attribute("#announce", "aria-live") == "polite"
    tenths = [int(re.match(r"(\d+)% uploaded", a).group(1)) for a in announced]  # type: ignore[union-attr]
    assert len(tenths) >= 2 and tenths == sorted(set(tenths)), announced  # each once, in order
    assert page.get_attribute("#message", "role") == "status"  # the success is not an alert


def test_an_unreadable_folder_is_refused_and_many_dropped_files_are_queued(page: Any, stack: Stack,
                                                                           tmp_path: Path) -> None:
    """A folder handed to the file input as one file (Chromium gives it as an unreadable File) is refused on the
    spot: no upload is created, and the page names the way to upload a folder. Several dropped files are all
    taken, one row each (no longer the first alone: the page uploads many files)."""
    before = stack.s3_uploads()
    sign_in(page, stack)
    folder = tmp_path / "multi"
    folder.mkdir()
    for i in range(3):
        write_random(folder / f"f{i}.bin", 1000, seed=30 + i)
    cdp = page.context.new_cdp_session(page)
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "#file"})["nodeId"]
    cdp.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(folder)]})
    page.wait_for_function("() => document.getElementById('message').dataset.kind === 'error'", timeout=10_000)
    assert message(page) == ("multi is a folder, or a file this browser cannot read: choose or drop a file, or for "
                             'a folder, drop it or use "choose a folder".')
    assert page.text_content("#file-info") == "No file chosen."
    assert page.is_disabled("#upload")
    assert stack.s3_uploads() == before

    page.evaluate("""() => {
        const dt = new DataTransfer();
        for (const name of ["one.bin", "two.bin", "three.bin"]) {
            dt.items.add(new File([new Uint8Array(1024)], name, {lastModified: 0}));
        }
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true}));
    }""")
    page.wait_for_selector("#queue:not([hidden])", timeout=10_000)
    assert page.text_content("#file-info") == "3 files chosen, 3.0 KiB."
    assert [page.input_value(f"#item-id-{i}") for i in range(3)] == ["one.bin", "two.bin", "three.bin"]
    assert page.is_hidden("#file-id") and page.is_enabled("#upload")


def test_pause_lets_the_parts_in_flight_finish(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Pause mid-upload: the bar never goes back, the parts being sent finish, and after Resume every part has
    been sent exactly once."""
    f = write_random(tmp_path / "pause.bin", 12 * PART, seed=22)
    sign_in(page, stack)
    stack.proxy.delay = 0.6
    upload(page, f, "pause-1")
    wait_parts_held(stack, "pause-1", 1)
    page.evaluate("""() => { window.bar = [];
        window.barTimer = setInterval(() => window.bar.push(document.getElementById("bar").value), 20); }""")
    page.click("#pause")
    assert wait_state(page, "pausing", "paused") in {"pausing", "paused"}
    assert wait_state(page, "paused") == "paused"
    values = page.evaluate("() => { clearInterval(window.barTimer); return window.bar; }")
    assert values and all(b >= a for a, b in itertools.pairwise(values)), "the bar went back"
    assert 0 < values[-1] < 1
    stack.proxy.wait_idle()
    stack.proxy.delay = 0.0
    page.click("#resume")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    puts = stack.proxy.part_puts()
    assert sorted(puts) == list(range(1, 13)) and set(puts.values()) == {1}, puts
    assert stack.object_sha256("pause-1") == sha256(f)


def test_pause_with_every_part_on_its_way_completes(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Paused when the last parts are already being sent: nothing is left to pause, and the upload completes
    instead of showing "Paused: 4 of 4 parts are sent"."""
    f = write_random(tmp_path / "pause-all.bin", 4 * PART, seed=28)
    sign_in(page, stack)
    stack.proxy.delay = 1.5
    upload(page, f, "pause-all")
    deadline = time.monotonic() + 30
    while len(stack.proxy.part_puts()) < 4:
        assert time.monotonic() < deadline, "the four parts never reached the store"
        time.sleep(0.02)
    page.click("#pause")
    assert wait_state(page, "done", "paused", "refused", "failed") == "done", message(page)
    assert message(page) == "Uploaded pause-all.bin as file id pause-all: 20.0 MiB, status uploaded."
    assert stack.proxy.part_puts() == {1: 1, 2: 1, 3: 1, 4: 1}


def test_leaving_cancelling_or_signing_out_mid_upload_asks_first(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Closing the tab, Cancel and Sign out mid-upload each ask; refused, the upload goes on. Signed out and in
    again, the page says which upload is unfinished (no "Resume continues" beside a disabled Resume), and the
    same file resumes it."""
    f = write_random(tmp_path / "ask.bin", 10 * PART, seed=23)
    answers: list[bool] = []
    asked: list[tuple[str, str]] = []

    def on_dialog(dialog: Any) -> None:
        asked.append((dialog.type, dialog.message))
        if answers.pop(0):
            dialog.accept()
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)
    sign_in(page, stack)
    stack.proxy.delay = 1.0  # 10 parts take 3 s: the questions below come long before the end
    upload(page, f, "ask-1")
    upload_id = wait_parts_held(stack, "ask-1", 1)

    answers.append(False)
    page.close(run_before_unload=True)
    deadline = time.monotonic() + 10
    while not asked and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert asked and asked[-1][0] == "beforeunload"
    assert not page.is_closed()

    answers.append(False)
    page.click("#cancel")
    assert asked[-1] == ("confirm", asked[-1][1]) and asked[-1][1].startswith("Cancel the upload of file id ask-1?")
    assert page.evaluate("document.body.dataset.state") in {"uploading", "checking"}
    assert stack.pending("ask-1")["upload_id"] == upload_id

    answers.append(False)
    page.click("#sign-out")
    assert asked[-1][1].startswith("Sign out while file id ask-1 is being uploaded?")
    assert page.is_visible("#work")
    answers.append(True)
    page.click("#sign-out")
    page.wait_for_selector("#signin:not([hidden])")
    assert focused(page)["id"] == "token"
    stack.proxy.wait_idle()
    page.wait_for_timeout(500)  # whatever the stopped upload would still say, it would say it by now
    assert len(asked) == 4 and not answers

    sign_in(page, stack)
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('An upload')",
                           timeout=10_000)
    assert message(page).startswith("An upload from this browser is unfinished: file id ask-1 (ask.bin, 50.0 MiB")
    assert "Resume continues" not in message(page) and page.is_disabled("#resume")
    assert page.text_content("#file-info") == "No file chosen."
    stack.proxy.delay = 0.0
    upload(page, f, None)
    assert page.input_value("#file-id") == "ask-1"
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert stack.object_sha256("ask-1") == sha256(f)
    assert len(asked) == 4  # finishing asks nothing


def test_messages_a_newcomer_reads(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Where a token comes from and what a file id is, said before they are asked for; a token of spaces is
    answered; a file id suggested from the file's name (never over one the user typed); "1 part", not "1 parts";
    a file id already used is refused in words, without the controller's internal upload id."""
    assert "operator of this upload controller gives each person a token" in page.text_content("#token-help")
    page.fill("#token", "   ")
    page.click("#sign-in")
    assert page.text_content("#signin-message") == "Paste your API token first: the field is empty, or only spaces."
    assert page.get_attribute("#token", "aria-invalid") == "true"
    sign_in(page, stack)
    assert "The name the controller keeps this file under" in page.text_content("#file-id-help")

    f = write_random(tmp_path / "Run 42 (final).bin", 1000, seed=24)
    page.set_input_files("#file", str(f))
    assert page.input_value("#file-id") == "Run-42-final.bin"
    stack.proxy.delay = 1.0
    page.click("#upload")
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('Uploading')",
                           timeout=10_000)
    assert message(page) == "Uploading Run 42 (final).bin in 1 part."
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    stack.proxy.delay = 0.0
    done = stack.finished("Run-42-final.bin")

    other = write_random(tmp_path / "other.bin", 1000, seed=25)
    page.fill("#file-id", "Run-42-final.bin")  # typed: the next file's name does not replace it
    page.set_input_files("#file", str(other))
    page.wait_for_function("() => document.getElementById('file-info').textContent.startsWith('other.bin')",
                           timeout=10_000)
    page.fill("#file-id", "Run-42-final.bin ")
    page.set_input_files("#file", str(f))
    assert page.input_value("#file-id") == "Run-42-final.bin "
    page.set_input_files("#file", str(other))
    page.click("#upload")
    assert wait_state(page, "refused", "done", "failed") == "refused"
    assert re.fullmatch(r"File id Run-42-final\.bin already has a finished upload \((uploaded|accepted)\): choose "
                        r"another file id for this file\.", message(page)), message(page)
    assert done["upload_id"] not in message(page)


def test_time_left_is_not_optimistic(page: Any, stack: Stack, tmp_path: Path) -> None:
    """The storage takes each part 2 s after it arrives: the time left shown is never under half the time the
    upload then really took (the bytes a PUT hands out early sit in buffers, they are not yet sent)."""
    f = write_random(tmp_path / "eta.bin", 16 * PART, seed=26)
    sign_in(page, stack)
    page.evaluate("""() => { window.shown = [];
        new MutationObserver(() => window.shown.push([performance.now(),
                document.getElementById("progress").textContent]))
            .observe(document.getElementById("progress"), {childList: true, characterData: true, subtree: true}); }""")
    stack.proxy.delay = 2.0
    upload(page, f, "eta-1")
    assert wait_state(page, "done", "refused", "failed", timeout=90) == "done", message(page)
    shown = page.evaluate("window.shown")
    finished = max(t for t, _ in shown)  # the last progress shown: every part acknowledged
    estimates = []
    for t, text in shown:
        m = re.search(r"· (?:(\d+) min )?(\d+) s left", text)
        if m:
            estimates.append(((finished - t) / 1000, int(m.group(1) or 0) * 60 + int(m.group(2))))
    print("time left shown, and the real one:", [(est, round(actual, 1)) for actual, est in estimates])
    assert len(estimates) >= 5, shown[-5:]
    early = [(actual, est) for actual, est in estimates if actual > 3]
    assert early, estimates
    for actual, est in early:
        assert est >= actual / 2 - 1, f"{est} s left shown with {actual:.1f} s to go"


def _wait_no_workers(tab: Any, timeout: float = 5) -> float:
    """Seconds until the page has no worker left (the SHA-256 worker is terminated); fails after ``timeout``."""
    start = time.monotonic()
    while tab.workers:
        assert time.monotonic() - start < timeout, f"the SHA-256 worker still runs: {[w.url for w in tab.workers]}"
        tab.wait_for_timeout(50)
    return time.monotonic() - start


def test_signing_out_mid_hash_stops_the_sha256_worker(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Signed out while the page computes a big file's SHA-256 (before its upload is created): the worker is
    terminated at once (it would read the 3 GiB on for seconds), no upload is created, and the progress stops."""
    big = tmp_path / "hash-me.bin"
    with big.open("wb") as out:
        out.truncate(3 * 1024 * MiB)  # sparse: read back fast, hashed at the worker's pace
    sign_in(page, stack)
    upload(page, big, "hash-1")
    page.wait_for_function("() => /Computing the SHA-256: [1-9]/.test(document.getElementById('progress')"
                           ".textContent)", timeout=30_000)
    assert len(page.workers) == 1 and page.workers[0].url.endswith("/static/sha256-worker.js")
    page.click("#sign-out")  # no upload yet: nothing to ask
    page.wait_for_selector("#signin:not([hidden])")
    took = _wait_no_workers(page, timeout=2)
    print(f"the worker ended {took:.2f} s after signing out")
    shown = page.text_content("#progress")
    page.wait_for_timeout(1000)
    assert page.text_content("#progress") == shown  # nothing hashes on behind the sign-in form
    assert stack.pending("hash-1") is None


def test_cancel_mid_hash_or_mid_upload_stops_the_sha256_worker(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Cancel while the file's SHA-256 is computed (no upload yet): asked first, the worker ends, no upload is
    created, the focus goes to the file chooser. Cancel while a pending upload started without a declared
    SHA-256 is sent (the page computes it beside the parts, to declare it with the completion): that worker
    ends too."""
    big = tmp_path / "hash-cancel.bin"
    with big.open("wb") as out:
        out.truncate(3 * 1024 * MiB)  # sparse: zeros
    asked: list[str] = []
    page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
    sign_in(page, stack)
    upload(page, big, "hash-cancel")
    page.wait_for_function("() => /Computing the SHA-256: [1-9]/.test(document.getElementById('progress')"
                           ".textContent)", timeout=30_000)
    assert page.is_enabled("#cancel")
    page.focus("#cancel")
    page.keyboard.press("Enter")
    assert wait_state(page, "cancelled", "failed", "refused") == "cancelled", message(page)
    assert asked == ["Cancel the upload of hash-cancel.bin? Nothing of it has been sent yet."]
    assert message(page) == ("Cancelled: nothing of hash-cancel.bin was sent, and no upload was kept for file id "
                             "hash-cancel.")
    _wait_no_workers(page, timeout=2)
    assert_focus_visible(page, "file")
    assert stack.pending("hash-cancel") is None

    # A pending upload with no declared SHA-256 and its first part held (as the CLI leaves one): resumed here,
    # its SHA-256 is computed while its parts go; Cancel ends that worker with the upload.
    with stack.svc.client() as c:
        r = c.post("/files/hash-cancel-2/multipart_uploads", json={"size": big.stat().st_size})
        assert r.status_code == 201, r.text
        upload_id = r.json()["upload_id"]
        send_parts(c, upload_id, [bytes(PART)])
    stack.proxy.delay = 1.0
    upload(page, big, "hash-cancel-2")
    wait_parts_held(stack, "hash-cancel-2", 2)
    assert page.evaluate("document.body.dataset.state") == "uploading"
    assert len(page.workers) == 1
    page.click("#cancel")
    assert wait_state(page, "cancelled", "failed", "refused") == "cancelled", message(page)
    _wait_no_workers(page, timeout=2)
    assert stack.pending("hash-cancel-2", "cancelled")["upload_id"] == upload_id
