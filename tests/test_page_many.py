"""The upload page with many files, in a real headless Chromium (the stack of tests/test_page.py: the controller,
the counting proxy, rclone serve s3): several files chosen or a folder, two files in flight, the principal's
uploads listed with their statuses, a reload mid-way resumed by choosing the files again, keyboard only, and
the SHA-256 the page declares (computed in a worker) against hashlib.

With S3MU_PAGE_SCREENSHOTS=FOLDER, the three-files test saves docs/controller.md's page-many.png there."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from s3_multipart_upload.plan import MiB
from tests.conftest import write_random
from tests.test_page import (
    PART,
    Stack,
    assert_focus_visible,
    browser,
    contrast,
    message,
    page,
    sha256,
    sign_in,
    sign_in_by_keyboard,
    stack,
    wait_parts_held,
    wait_state,
)
from tests.test_service_api import send_parts

__all__ = ["browser", "page", "stack"]


def listed_status(tab: Any, file_id: str) -> str | None:
    """The status the page's list of uploads shows for ``file_id`` (None: not listed)."""
    return tab.evaluate("id => { const tr = [...document.querySelectorAll('#uploads-body tr')]"
                        ".find((r) => r.dataset.fileId === id); return tr ? tr.dataset.status : null; }", file_id)


def wait_listed(tab: Any, file_ids: list[str], status: str, timeout: float = 90) -> None:
    """Until the page's list shows every one of ``file_ids`` in ``status`` (it asks the controller again by itself
    while a declared upload is unchecked)."""
    tab.wait_for_function("""([ids, status]) => ids.every((id) => [...document.querySelectorAll('#uploads-body tr')]
        .some((r) => r.dataset.fileId === id && r.dataset.status === status))""", arg=[file_ids, status],
                          timeout=timeout * 1000)


def row_states(tab: Any) -> list[str]:
    return list(tab.evaluate("() => [...document.querySelectorAll('#queue li')].map((li) => li.dataset.state)"))


def watch_rows(tab: Any) -> None:
    """Record, in window.mostInFlight, the most rows that were ever being sent at once."""
    tab.evaluate("""() => {
        window.mostInFlight = 0;
        const busy = ["checking", "uploading", "waiting", "pausing", "completing"];
        new MutationObserver(() => {
            const n = [...document.querySelectorAll('#queue li')].filter((li) => busy.includes(li.dataset.state))
                .length;
            window.mostInFlight = Math.max(window.mostInFlight, n);
        }).observe(document.getElementById("queue"), {attributes: true, subtree: true, childList: true});
    }""")


def test_sha256_in_the_browser_is_hashlibs(page: Any) -> None:
    """The page's SHA-256 against the standard's vectors and Python's, at block edges (55, 56, 64 bytes), fed in
    pieces of odd sizes; and in the worker over a Blob read in many slices of an odd size."""
    vectors = {"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
               "abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
               "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq":
                   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"}
    got = page.evaluate("""async (texts) => {
        const m = await import("/static/sha256.js");
        const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
        const out = texts.map((t) => hex(new m.SHA256().update(new TextEncoder().encode(t)).digest()));
        const million = new m.SHA256();
        const a = new Uint8Array(1000).fill(97);
        for (let i = 0; i < 1000; i++) million.update(a);
        out.push(hex(million.digest()));
        return out;
    }""", list(vectors))
    # FIPS 180-2's one million "a"s
    assert got == [*vectors.values(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"]
    sizes = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 1 * MiB + 3, 3 * MiB + 7]
    data = hashlib.shake_256(b"sha256 test").digest(max(sizes))
    got = page.evaluate("""async ([b64, sizes]) => {
        const m = await import("/static/sha256.js");
        const hex = (b) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
        const all = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const out = [];
        for (const size of sizes) {
            const bytes = all.subarray(0, size);
            const pieces = new m.SHA256();
            for (let i = 0; i < size; i += 100003) pieces.update(bytes.subarray(i, i + 100003));
            const small = new m.SHA256();
            for (let i = 0; i < Math.min(size, 4096); i += 7) small.update(bytes.subarray(i, Math.min(i + 7, 4096)));
            out.push([hex(new m.SHA256().update(bytes).digest()), hex(pieces.digest()), hex(small.digest())]);
        }
        return out;
    }""", [base64.b64encode(data).decode(), sizes])
    for size, (whole, pieces, small) in zip(sizes, got, strict=True):
        assert whole == pieces == hashlib.sha256(data[:size]).hexdigest(), size
        assert small == hashlib.sha256(data[:min(size, 4096)]).hexdigest(), size
    # In the worker, as the page runs it: 21 copies of 1 MiB + 13 random bytes, read 1 MiB + 1 at a time (21
    # slices and a short one); the File is made of the block's copies, so no 21 MiB crosses from Python.
    block = hashlib.shake_256(b"worker").digest(MiB + 13)
    result = page.evaluate("""async (b64) => {
        const m = await import("/static/sha256.js");
        const block = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const file = new File(Array(21).fill(block), "big.bin");
        const progress = [];
        const t0 = performance.now();
        const sha = await m.sha256InWorker(file, { slice: 1024 * 1024 + 1, onProgress: (d) => progress.push(d) });
        return { sha, progress, size: file.size, mibPerS: file.size / 1048576 / ((performance.now() - t0) / 1000) };
    }""", base64.b64encode(block).decode())
    size = 21 * len(block)
    assert result["size"] == size
    assert result["sha"] == hashlib.sha256(block * 21).hexdigest()
    assert len(result["progress"]) == 22 and result["progress"][-1] == size
    print(f"SHA-256 in Chromium's worker: {result['mibPerS']:.0f} MiB/s")


def test_three_files_one_reloaded_midway_resumed_and_all_accepted(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Three files chosen at once go two at a time, each declaring its SHA-256; a reload while they are sent; the
    same three chosen again: the finished ones are not sent again, the unfinished one resumes (its held parts
    kept), and the list shows all three accepted by the controller's verifier."""
    folder = tmp_path / "trio"
    folder.mkdir()
    files = [write_random(folder / f"trio-{i}.bin", (9 if i == 0 else 2) * PART + 1000 * i, seed=60 + i)
             for i in range(3)]
    ids = [f.name for f in files]
    sign_in(page, stack)
    page.set_input_files("#file", [str(f) for f in files])
    page.wait_for_selector("#queue:not([hidden])")
    assert [page.input_value(f"#item-id-{i}") for i in range(3)] == ids  # suggested from the names
    assert page.is_hidden("#file-id")
    watch_rows(page)
    stack.proxy.delay = 0.4
    page.click("#upload")
    upload_id = wait_parts_held(stack, ids[0], 2)
    assert page.evaluate("window.mostInFlight") <= 2
    page.once("dialog", lambda d: d.accept())  # the browser asks before leaving mid-upload
    page.reload()
    stack.proxy.wait_idle()
    held = stack.held(upload_id)
    assert 2 <= len(held) < 9, held
    stack.proxy.delay = 0.0
    stack.proxy.reset()

    # Signed in still: the list shows the unfinished upload, and says how to resume it.
    page.wait_for_selector("#work:not([hidden])")
    page.wait_for_function("id => [...document.querySelectorAll('#uploads-body tr')].some((r) => "
                           "r.dataset.fileId === id)", arg=ids[0], timeout=10_000)
    assert listed_status(page, ids[0]) == "pending"
    assert "choose its file again to resume it" in page.text_content("#uploads-body")
    page.set_input_files("#file", [str(f) for f in files])
    page.wait_for_selector("#queue:not([hidden])")
    assert [page.input_value(f"#item-id-{i}") for i in range(3)] == ids
    page.click("#upload")
    assert wait_state(page, "done", timeout=120) == "done", message(page)
    assert message(page).startswith("Uploaded 3 files."), message(page)
    assert row_states(page) == ["done"] * 3
    puts = stack.proxy.part_puts()
    assert puts[1] <= 2, puts  # trio-0's held parts were kept: part 1 went again for at most one other file
    for f in files:
        assert stack.object_sha256(f.name) == sha256(f)
        done = stack.finished(f.name)
        assert done is not None and done["sha256"] == sha256(f)
    assert stack.finished(ids[0])["upload_id"] == upload_id
    wait_listed(page, ids, "accepted")
    for i, file_id in enumerate(ids):  # each row follows the controller's decision
        assert page.text_content(f"#queue li:nth-child({i + 1}) .item-status") == (
            f"Done: uploaded as file id {file_id}, and accepted: the object matches the declared SHA-256 (the "
            "controller's check).")
    shots = os.environ.get("S3MU_PAGE_SCREENSHOTS")
    if shots:  # docs/controller.md's picture of many files (tests/test_page.py says how)
        page.locator("main").screenshot(path=f"{shots}/page-many.png")


def test_a_folder_is_uploaded_with_paths_as_file_ids(page: Any, stack: Stack, tmp_path: Path) -> None:
    """A folder chosen with "choose a folder" (webkitdirectory): every file of its subfolders, one row each, file
    ids from their paths; all uploaded and accepted. A dropped folder is walked the same way (webkitGetAsEntry:
    here with entries made in the page, since a test cannot drag from the desktop)."""
    top = tmp_path / "runfolder"
    (top / "sub").mkdir(parents=True)
    made = [write_random(top / "a.bin", PART + 17, seed=70), write_random(top / "sub" / "b.bin", 1000, seed=71),
            write_random(top / "sub" / "c d.bin", 2 * PART, seed=72)]
    sign_in(page, stack)
    page.set_input_files("#folder", str(top))
    page.wait_for_selector("#queue:not([hidden])")
    names = page.evaluate("() => [...document.querySelectorAll('#queue .item-name')].map((e) => e.textContent)")
    assert sorted(names) == ["runfolder/a.bin", "runfolder/sub/b.bin", "runfolder/sub/c d.bin"]
    ids = sorted(page.input_value(f"#item-id-{i}") for i in range(3))
    assert ids == ["runfolder-a.bin", "runfolder-sub-b.bin", "runfolder-sub-c-d.bin"]
    page.click("#upload")
    assert wait_state(page, "done", timeout=120) == "done", message(page)
    by_id = {"runfolder-a.bin": made[0], "runfolder-sub-b.bin": made[1], "runfolder-sub-c-d.bin": made[2]}
    for file_id, f in by_id.items():
        assert stack.object_sha256(file_id) == sha256(f)
    wait_listed(page, ids, "accepted")

    walked = page.evaluate("""async () => {
        const m = await import("/static/files.js");
        const file = (name) => ({ isFile: true, isDirectory: false, name,
            file: (ok) => ok(new File([name], name)) });
        const dir = (name, children) => ({ isFile: false, isDirectory: true, name, createReader: () => {
            let given = false;  // readEntries gives the children once, then an empty list
            return { readEntries: (ok) => { ok(given ? [] : children); given = true; } };
        } });
        const dropped = dir("top", [file("z.bin"), dir("inner", [file("y.bin"), dir("empty", [])]), file("a.bin")]);
        const dt = { items: [{ kind: "file", webkitGetAsEntry: () => dropped },
                             { kind: "file", webkitGetAsEntry: () => file("loose.bin") }], files: [] };
        const got = await m.filesOfDrop(dt);
        return { paths: got.files.map((f) => f.path), folders: got.folders, more: got.more };
    }""")
    assert walked == {"paths": ["top/a.bin", "top/inner/y.bin", "top/z.bin", "loose.bin"], "folders": 1, "more": 0}


def test_keyboard_only_many_files_from_sign_in_to_done(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Tab, type and Enter only, with two files: the focus moves through each row's file id to Upload, to Pause
    while they go, to Resume once paused, and to the file chooser when done, with a ring of at least 2 px at every
    step; each row's field and bar have their own names, and each finished file is announced."""
    files = [write_random(tmp_path / f"kb-many-{i}.bin", 10 * PART + i, seed=80 + i) for i in range(2)]
    sign_in_by_keyboard(page, stack)

    page.set_input_files("#file", [str(f) for f in files])  # what the chooser that Enter opens gives
    page.wait_for_selector("#queue:not([hidden])")
    for expected in ("folder", "item-id-0", "item-id-1", "upload"):
        page.keyboard.press("Tab")
        assert_focus_visible(page, expected)
    names = page.evaluate("() => [...document.querySelectorAll('#queue progress')]"
                          ".map((b) => b.getAttribute('aria-label'))")
    assert names == ["Upload of kb-many-0.bin", "Upload of kb-many-1.bin"]
    page.evaluate("""() => { window.announced = [];
        new MutationObserver(() => window.announced.push(document.getElementById("announce").textContent))
            .observe(document.getElementById("announce"), {childList: true, characterData: true, subtree: true}); }""")
    assert page.get_by_label("File id of kb-many-1.bin").get_attribute("id") == "item-id-1"  # each its own name
    stack.proxy.delay = 0.5
    page.keyboard.press("Enter")
    assert_focus_visible(page, "pause")
    wait_parts_held(stack, "kb-many-0.bin", 1)
    page.keyboard.press("Enter")  # Pause: the parts in flight finish, no file is started
    assert wait_state(page, "paused", timeout=60) == "paused", message(page)
    assert_focus_visible(page, "resume")
    assert message(page).startswith("Paused: "), message(page)
    assert "paused" in row_states(page)
    stack.proxy.delay = 0.0
    page.keyboard.press("Enter")
    assert wait_state(page, "done", timeout=120) == "done", message(page)
    assert message(page).startswith("Uploaded 2 files."), message(page)
    assert_focus_visible(page, "file")
    assert page.get_attribute("#message", "role") == "status"
    announced = page.evaluate("window.announced")
    assert "kb-many-0.bin: uploaded." in announced and "kb-many-1.bin: uploaded." in announced, announced
    page.keyboard.press("Shift+Tab")
    assert_focus_visible(page, "sign-out")
    page.keyboard.press("Enter")
    page.wait_for_selector("#signin:not([hidden])")
    assert_focus_visible(page, "token")


def test_a_refused_file_among_many_says_why_in_its_row(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Of two files, one whose file id has a pending upload of another size is refused in its row (the single
    file's identity checks), the other is uploaded; the page sums up; the refused row's upload is cancelled from
    the row, and Upload sends the file again; a reviewer's rejection then shows in the list with its reason."""
    files = [write_random(tmp_path / f"mixed-{i}.bin", 1000 + i, seed=90 + i) for i in range(2)]
    with stack.svc.client() as c:
        assert c.post("/files/mixed-0.bin/multipart_uploads", json={"size": 5}).status_code == 201
    sign_in(page, stack)
    page.set_input_files("#file", [str(f) for f in files])
    page.wait_for_selector("#queue:not([hidden])")
    page.click("#upload")
    assert wait_state(page, "done", timeout=60) == "done"
    assert row_states(page) == ["refused", "done"]
    row = page.text_content("#queue li:nth-child(1) .item-status")
    assert row == ("Failed: The unfinished upload of file id mixed-0.bin is for a file of 5 bytes; mixed-0.bin has "
                   "1000 bytes. Choose that file to resume, or cancel the upload to start again.")
    assert message(page) == ("1 of 2 files uploaded; 1 failed: each failed file's row says why. Press Upload to try "
                             "those again.")
    assert page.get_attribute("#message", "role") == "alert"
    # The refused row's upload (the other one's, of 5 bytes) is cancelled from the row, after a question.
    assert page.is_hidden("#item-cancel-1") and page.is_enabled("#item-cancel-0")
    asked: list[str] = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    page.click("#item-cancel-0")
    page.wait_for_function("() => document.querySelector('#queue li').dataset.state === 'cancelled'",
                           timeout=10_000)
    assert asked == ["Cancel the upload of file id mixed-0.bin? It cannot be resumed, and the parts sent so far are "
                     "deleted."]
    assert stack.pending("mixed-0.bin") is None
    wait_listed(page, ["mixed-0.bin"], "cancelled", timeout=10)
    # Upload starts it again, now as this file's.
    page.click("#upload")
    assert wait_state(page, "done", timeout=60) == "done"
    assert row_states(page) == ["done", "done"]
    assert stack.object_sha256("mixed-0.bin") == sha256(files[0])
    # A reviewer's rejection, with its reason, shows in the list once it is refreshed.
    wait_listed(page, ["mixed-0.bin"], "accepted")
    with stack.svc.client("carol") as carol:
        upload_id = stack.finished("mixed-0.bin")["upload_id"]
        r = carol.post(f"/multipart_uploads/{upload_id}/review",
                       json={"status": "rejected", "reason": "the run's log is missing"})
        assert r.status_code == 200, r.text
    page.click("#refresh")
    wait_listed(page, ["mixed-0.bin"], "rejected", timeout=10)
    row = page.evaluate("() => [...document.querySelectorAll('#uploads-body tr')].find((r) => "
                        "r.dataset.fileId === 'mixed-0.bin' && r.dataset.status === 'rejected')"
                        ".querySelector('.details').textContent")
    assert row == "the run's log is missing (carol)"
    # The rows' texts and borders are as legible as the rest of the page (4.5:1 and 3:1 against white).
    colours = page.evaluate("""() => {
        const bg = getComputedStyle(document.querySelector("main")).backgroundColor;
        const li = document.querySelector("#queue li");
        const of = (el) => getComputedStyle(el);
        return {status: [of(li.querySelector(".item-status")).color, bg], border: [of(li).borderTopColor, bg],
                cell: [of(document.querySelector("#uploads-body td")).color, bg]};
    }""")
    assert contrast(*colours["status"]) >= 4.5 and contrast(*colours["cell"]) >= 4.5
    assert contrast(*colours["border"]) >= 3


def test_pending_uploads_started_elsewhere_are_found_by_their_bytes(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Uploads started by another client (here the API, as the CLI does, with no checksum declared) under file ids
    the page would not suggest: choosing their files, alone or among others, finds them (a pending upload of
    the file's size whose first held part is the file's slice), fills in their file ids and resumes them; the
    page declares the SHA-256 with the completion, and the controller accepts them."""
    started = {}
    files = {}
    for file_id, name, seed in (("elsewhere-7", "resume-me.bin", 100), ("elsewhere-8", "resume-too.bin", 101)):
        f = write_random(tmp_path / name, 2 * PART + 77, seed=seed)
        with stack.svc.client() as c:
            r = c.post(f"/files/{file_id}/multipart_uploads", json={"size": f.stat().st_size})
            assert r.status_code == 201, r.text
            started[file_id] = r.json()["upload_id"]
            send_parts(c, started[file_id], [f.read_bytes()[:PART]])
        files[file_id] = f
    sign_in(page, stack)
    page.wait_for_function("() => document.querySelectorAll('#uploads-body tr').length > 0", timeout=10_000)
    page.set_input_files("#file", str(files["elsewhere-7"]))
    page.wait_for_function("() => document.getElementById('message').textContent.startsWith('This file')",
                           timeout=10_000)
    assert message(page) == ("This file has an unfinished upload, started elsewhere (file id elsewhere-7): press "
                             "Upload to resume it; its parts the storage holds are checked, and kept where they match.")
    assert page.input_value("#file-id") == "elsewhere-7"
    page.click("#upload")
    assert wait_state(page, "done", "refused", "failed") == "done", message(page)
    assert message(page).endswith("1 of 3 parts were already there and were kept.")

    other = write_random(tmp_path / "fresh.bin", 1000, seed=102)
    page.set_input_files("#file", [str(files["elsewhere-8"]), str(other)])
    page.wait_for_function("() => document.getElementById('item-id-0').value === 'elsewhere-8'", timeout=10_000)
    assert "resumes the unfinished upload of file id elsewhere-8" in page.text_content("#queue li:nth-child(1)")
    assert page.input_value("#item-id-1") == "fresh.bin"
    page.click("#upload")
    assert wait_state(page, "done", timeout=60) == "done", message(page)
    for file_id, f in files.items():
        done = stack.finished(file_id)
        assert done["upload_id"] == started[file_id] and done["sha256"] == sha256(f)  # declared at completion
        assert stack.object_sha256(file_id) == sha256(f)
    wait_listed(page, ["elsewhere-7", "elsewhere-8", "fresh.bin"], "accepted")


def test_docs_render_offline_in_chromium(browser: Any, stack: Stack) -> None:
    """/docs in Chromium with every request off loopback refused: Swagger UI renders the API (its assets come
    from the controller), and its Content-Security-Policy refuses nothing it needs."""
    context = browser.new_context()
    tab = context.new_page()
    outside: list[str] = []
    refused: list[str] = []

    def route(r: Any) -> None:
        if r.request.url.startswith(stack.svc.base_url):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    tab.route("**/*", route)
    tab.on("console", lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        response = tab.goto(stack.svc.base_url + "/docs")
        assert response is not None and "script-src 'self' 'sha256-" in response.headers["content-security-policy"]
        # Swagger UI 4 drew "Unable to render this definition" for FastAPI's OpenAPI 3.1: each operation shows.
        tab.wait_for_function("() => document.querySelectorAll('.swagger-ui .opblock').length >= 20",
                              timeout=30_000)
        assert "GET/multipart_uploads" in tab.text_content(".swagger-ui").replace("\u200b", "")
        assert outside == [] and refused == []
    finally:
        context.close()


def test_hidden_files_of_a_folder_are_skipped_and_counted(page: Any, stack: Stack, tmp_path: Path) -> None:
    """A folder's hidden files (.DS_Store, anything under .git/, a dot-file in a subfolder) are not queued; the
    message that says how many files were left out past the first 1000 says how many hidden ones were skipped.
    A dropped folder is walked the same way (webkitGetAsEntry, with entries made in the page), and a folder of
    hidden files only has nothing to upload."""
    top = tmp_path / "lots"
    (top / ".git" / "objects").mkdir(parents=True)
    (top / "sub").mkdir()
    for name in (".DS_Store", ".git/config", ".git/objects/ab12", "sub/.hidden"):
        (top / name).write_bytes(b"x")
    for i in range(1001):
        (top / f"f{i:04}.txt").write_bytes(b"%d" % i)
    (top / "sub" / "seen.txt").write_bytes(b"seen")
    sign_in(page, stack)
    page.set_input_files("#folder", str(top))
    page.wait_for_selector("#queue:not([hidden])", timeout=30_000)
    names = page.evaluate("() => [...document.querySelectorAll('#queue .item-name')].map((e) => e.textContent)")
    assert len(names) == 1000 and not [n for n in names if "/." in n], names[:5]
    assert message(page).endswith(
        "2 files past the first 1000 were left out. 4 hidden files (their names start with '.', or they are in a "
        "folder whose name does, such as .DS_Store or .git/) were skipped."), message(page)

    only_hidden = tmp_path / "only-hidden"
    only_hidden.mkdir()
    (only_hidden / ".DS_Store").write_bytes(b"x")
    page.set_input_files("#folder", str(only_hidden))
    page.wait_for_function("() => document.getElementById('message').dataset.kind === 'error'", timeout=10_000)
    assert message(page) == ("That folder has no files to upload: 1 hidden file (its name starts with '.', or it "
                             "is in a folder whose name does, such as .DS_Store or .git/) was skipped.")

    walked = page.evaluate("""async () => {
        const m = await import("/static/files.js");
        const file = (name) => ({ isFile: true, isDirectory: false, name,
            file: (ok) => ok(new File([name], name)) });
        const dir = (name, children) => ({ isFile: false, isDirectory: true, name, createReader: () => {
            let given = false;
            return { readEntries: (ok) => { ok(given ? [] : children); given = true; } };
        } });
        const dropped = dir(".run", [file(".DS_Store"), file("a.bin"),
            dir(".git", [file("HEAD"), dir("objects", [file("x"), file("y")])]),
            dir("sub", [file(".env"), file("b")])]);
        const dt = { items: [{ kind: "file", webkitGetAsEntry: () => dropped },
                             { kind: "file", webkitGetAsEntry: () => file(".loose") }], files: [] };
        const got = await m.filesOfDrop(dt);
        return { paths: got.files.map((f) => f.path), hidden: got.hidden, note: m.leftOutNote(got) };
    }""")
    # The dropped folder and a loose file are the user's choice, whatever their names: only what is in it is judged.
    assert walked["paths"] == [".run/a.bin", ".run/sub/b", ".loose"]
    assert walked["hidden"] == 5
    assert walked["note"].startswith(" 5 hidden files (their names start with '.'")


def test_a_row_is_cancelled_while_it_is_sent_and_the_queue_goes_on(page: Any, stack: Stack, tmp_path: Path) -> None:
    """Keyboard only: "Cancel its upload" of a row being sent asks as the single file's Cancel does, aborts that
    file's PUTs in flight (not waiting for them), cancels its upload on the controller (its parts deleted), and
    the other files go on to done; the focus stays in the row, on its status, with a ring; the live region says
    it; the summary counts it."""
    files = [write_random(tmp_path / "cancel-me.bin", 8 * PART, seed=110),
             *(write_random(tmp_path / f"keep-{i}.bin", PART + i, seed=111 + i) for i in range(2))]
    sign_in(page, stack)
    page.set_input_files("#file", [str(f) for f in files])
    page.wait_for_selector("#queue:not([hidden])")
    page.evaluate("""() => { window.announced = []; window.aborted = 0;
        new MutationObserver(() => window.announced.push(document.getElementById("announce").textContent))
            .observe(document.getElementById("announce"), {childList: true, characterData: true, subtree: true});
        const abort = XMLHttpRequest.prototype.abort;
        XMLHttpRequest.prototype.abort = function () { window.aborted++; return abort.call(this); }; }""")
    asked: list[str] = []
    page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
    stack.proxy.delay = 2.0  # each part PUT is held 2 s: the cancel comes while four are on their way
    page.click("#upload")
    upload_id = wait_parts_held(stack, "cancel-me.bin", 1)
    page.wait_for_function("() => document.querySelector('#queue li').dataset.state === 'uploading'")
    cancel = page.get_by_role("button", name="Cancel its upload of cancel-me.bin", exact=True)  # its own name
    assert cancel.is_enabled() and cancel.get_attribute("id") == "item-cancel-0"
    cancel.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#queue li').dataset.state === 'cancelled'",
                           timeout=10_000)
    assert asked == ["Cancel the upload of file id cancel-me.bin? It cannot be resumed, and the parts sent so far "
                     "are deleted."]
    assert page.evaluate("window.aborted") >= 1  # its parts in flight were aborted, not waited for
    assert_focus_visible(page, "item-status-0")  # the pressed button is hidden: the focus is on the row's status
    assert page.text_content("#item-status-0") == ("Cancelled: the upload of file id cancel-me.bin is cancelled, and "
                                                   "its parts are deleted; Upload starts it again.")
    assert page.is_hidden("#item-cancel-0")
    assert stack.pending("cancel-me.bin") is None
    assert stack.pending("cancel-me.bin", "cancelled")["upload_id"] == upload_id
    stack.proxy.delay = 0.0
    assert wait_state(page, "done", timeout=120) == "done", message(page)
    assert row_states(page) == ["cancelled", "done", "done"]
    assert message(page).startswith("Uploaded 2 files. 1 cancelled."), message(page)
    assert_focus_visible(page, "item-status-0")  # the queue's end does not take it away
    assert "cancel-me.bin: its upload is cancelled." in page.evaluate("window.announced")
    for f in files[1:]:
        assert stack.object_sha256(f.name) == sha256(f)
    stack.proxy.wait_idle()
    assert upload_id not in stack.s3_uploads()  # the PUTs that still arrived did not bring it back
    assert "cancel-me.bin" not in page.evaluate("localStorage.getItem('s3mu.uploads.v1')")
    wait_listed(page, ["cancel-me.bin"], "cancelled", timeout=10)


def test_a_row_cancelled_while_hashed_stops_its_worker(page: Any, stack: Stack, tmp_path: Path) -> None:
    """A row whose SHA-256 is being computed (it has no upload yet) can be cancelled: its worker ends at once and
    no upload is created for it; signing out mid-hash with many files ends the worker too."""
    big = tmp_path / "huge.bin"
    with big.open("wb") as out:
        out.truncate(3 * 1024 * MiB)
    small = write_random(tmp_path / "tiny.bin", 1000, seed=120)
    sign_in(page, stack)
    page.set_input_files("#file", [str(big), str(small)])
    page.wait_for_selector("#queue:not([hidden])")
    page.on("dialog", lambda d: d.accept())
    page.click("#upload")
    page.wait_for_function("() => /Computing the SHA-256: [1-9]/.test(document.querySelector('#queue li .progress')"
                           ".textContent)", timeout=30_000)
    page.click("#item-cancel-0")
    page.wait_for_function("() => document.querySelector('#queue li').dataset.state === 'cancelled'",
                           timeout=10_000)
    assert page.text_content("#item-status-0") == "Cancelled: nothing of it was sent; Upload starts it again."
    assert wait_state(page, "done", timeout=60) == "done", message(page)
    deadline = time.monotonic() + 3
    while page.workers:
        assert time.monotonic() < deadline, "the SHA-256 worker still runs"
        page.wait_for_timeout(50)
    assert stack.pending("huge.bin") is None
    assert stack.object_sha256("tiny.bin") == sha256(small)

    page.click("#upload")  # sent again: hashed again, and signed out meanwhile (the page asks first)
    page.wait_for_function("() => /Computing the SHA-256: [1-9]/.test(document.querySelector('#queue li .progress')"
                           ".textContent)", timeout=30_000)
    page.click("#sign-out")
    page.wait_for_selector("#signin:not([hidden])")
    deadline = time.monotonic() + 2
    while page.workers:
        assert time.monotonic() < deadline, "the SHA-256 worker still runs after signing out"
        page.wait_for_timeout(50)
    assert stack.pending("huge.bin") is None
