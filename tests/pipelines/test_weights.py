"""Specification of ``ugains weights``: fetch (resume, verify, unpack, lock) and list.

Every download comes from a small HTTP server on 127.0.0.1 started by the test; nothing
touches the real network.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pipelines import weights
from pipelines.cli import main
from pipelines.config import parse_config
from pipelines.weights import WEIGHTS, ChecksumError, DownloadError, WeightsError, fetch

PAYLOAD = bytes(range(256)) * 40  # 10 KiB, every byte value, so splices show


@dataclass
class Served:
    """What the local server serves for one path, and how it misbehaves."""

    body: bytes
    etag: str = '"v1"'
    break_first: int = 0  # this many responses stop halfway through and close
    ignore_range: bool = False  # always answer 200 with the whole body
    delay_s: float = 0.0  # before answering (lets concurrent fetches overlap)


@dataclass
class FileServer:
    """A plain HTTP/1.0 file server that honours Range and If-Range, and logs requests."""

    files: dict[str, Served] = field(default_factory=dict)
    requests: list[dict[str, str | None]] = field(default_factory=list)
    base: str = ""

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture
def server() -> Iterator[FileServer]:
    state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(
                {
                    "path": self.path,
                    "range": self.headers.get("Range"),
                    "if_range": self.headers.get("If-Range"),
                }
            )
            served = state.files.get(self.path)
            if served is None:
                self.send_error(404)
                return
            time.sleep(served.delay_s)
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if_range = self.headers.get("If-Range")
            if match and not served.ignore_range and if_range in (None, served.etag):
                start = int(match.group(1))
                if start >= len(served.body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(served.body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                end = len(served.body) - 1
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(served.body)}")
            else:
                self.send_response(200)
            chunk = served.body[start:]
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("ETag", served.etag)
            self.end_headers()
            if served.break_first > 0:
                served.break_first -= 1
                chunk = chunk[: len(chunk) // 2]  # then HTTP/1.0 closes the connection
            self.wfile.write(chunk)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registry(cache: Path) -> dict:
    return json.loads((cache / "registry.json").read_text())["weights"]


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------------- fetching


def test_fetch_downloads_verifies_and_records_the_sha256(server: FileServer, tmp_path: Path):
    server.files["/rude0fhk.ckpt"] = Served(PAYLOAD)

    path = fetch("ugains", tmp_path, url=server.url("/rude0fhk.ckpt"), progress=False)

    assert path == tmp_path / "ugains" / "rude0fhk.ckpt"
    assert path.read_bytes() == PAYLOAD
    entry = registry(tmp_path)["ugains"]
    assert entry["download"]["sha256"] == sha(PAYLOAD)
    assert entry["file"] == {"path": "ugains/rude0fhk.ckpt", "sha256": sha(PAYLOAD), "size": 10240}
    assert entry["url"] == server.url("/rude0fhk.ckpt")
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "rude0fhk.ckpt"]


def test_second_fetch_uses_the_verified_cache_without_a_request(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD)
    first = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    second = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert second == first
    assert len(server.requests) == 1


def test_broken_connection_is_resumed_with_a_range_request(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD, break_first=1)

    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert path.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert [r["if_range"] for r in server.requests] == [None, '"v1"']
    assert registry(tmp_path)["ugains"]["download"]["sha256"] == sha(PAYLOAD)


def test_transfer_that_keeps_breaking_fails_and_the_next_call_resumes(
    server: FileServer, tmp_path: Path
):
    server.files["/m.ckpt"] = Served(PAYLOAD, break_first=100)
    part = tmp_path / "ugains" / "rude0fhk.ckpt.part"

    with pytest.raises(DownloadError, match=r"broke off at .*run the same command again"):
        fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    # One request plus RESUME_ATTEMPTS resumes, each of which halves what is left.
    assert len(server.requests) == 1 + weights.RESUME_ATTEMPTS
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)
    assert part.read_bytes() == PAYLOAD[:kept]
    assert not (tmp_path / "ugains" / "rude0fhk.ckpt").exists()
    assert not (tmp_path / "registry.json").exists()

    server.files["/m.ckpt"].break_first = 0
    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()


def test_partial_file_of_an_earlier_run_is_resumed(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD)
    part = tmp_path / "ugains" / "rude0fhk.ckpt.part"
    part.parent.mkdir()
    part.write_bytes(PAYLOAD[:3000])  # as left by a killed process, without its .json

    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert server.requests == [{"path": "/m.ckpt", "range": "bytes=3000-", "if_range": None}]
    assert path.read_bytes() == PAYLOAD


def test_complete_partial_file_is_not_downloaded_again(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD)
    part = tmp_path / "ugains" / "rude0fhk.ckpt.part"
    part.parent.mkdir()
    part.write_bytes(PAYLOAD)  # every byte arrived; the run stopped before verifying it

    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    # The server answers 416 (nothing left to send): one request, no second full download.
    assert server.requests == [{"path": "/m.ckpt", "range": "bytes=10240-", "if_range": None}]
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD, ignore_range=True)
    part = tmp_path / "ugains" / "rude0fhk.ckpt.part"
    part.parent.mkdir()
    part.write_bytes(b"\xff" * 3000)  # would corrupt the file if appended to

    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert server.requests[0]["range"] == "bytes=3000-"
    assert path.read_bytes() == PAYLOAD


def test_file_changed_on_the_server_is_not_spliced_onto_old_bytes(
    server: FileServer, tmp_path: Path
):
    old, new = PAYLOAD, PAYLOAD[::-1]
    server.files["/m.ckpt"] = Served(old, etag='"old"', break_first=100)
    with pytest.raises(DownloadError):
        fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)
    server.files["/m.ckpt"] = Served(new, etag='"new"')

    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert server.requests[-1]["if_range"] == '"old"'
    assert path.read_bytes() == new


def test_partial_file_longer_than_the_served_file_starts_over(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD[:1000])
    part = tmp_path / "ugains" / "rude0fhk.ckpt.part"
    part.parent.mkdir()
    part.write_bytes(PAYLOAD[:2000])

    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert [r["range"] for r in server.requests] == ["bytes=2000-", None]
    assert path.read_bytes() == PAYLOAD[:1000]


def test_published_sha256_mismatch_rejects_the_file(server: FileServer, tmp_path: Path):
    server.files["/sam.pth"] = Served(PAYLOAD)  # not the real SAM ViT-B

    with pytest.raises(ChecksumError) as caught:
        fetch("sam_vit_b", tmp_path, url=server.url("/sam.pth"), progress=False)

    message = str(caught.value)
    assert sha(PAYLOAD) in message
    assert WEIGHTS["sam_vit_b"].sha256 in message
    assert server.url("/sam.pth") in message
    folder = tmp_path / "sam_vit_b"
    assert not (folder / "sam_vit_b_01ec64.pth").exists()
    assert not (folder / "sam_vit_b_01ec64.pth.part").exists()
    assert (folder / "sam_vit_b_01ec64.pth.rejected").read_bytes() == PAYLOAD
    assert not (tmp_path / "registry.json").exists()


def test_later_download_is_verified_against_the_recorded_sha256(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD)
    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)
    path.unlink()
    server.files["/m.ckpt"] = Served(b"tampered" + PAYLOAD)

    with pytest.raises(ChecksumError, match="recorded at its first download"):
        fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert not path.exists()
    assert registry(tmp_path)["ugains"]["download"]["sha256"] == sha(PAYLOAD)


def test_corrupted_cached_file_is_downloaded_again(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD)
    path = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)
    path.write_bytes(b"bit rot")

    again = fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert again.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_hand_placed_file_is_verified_without_network(tmp_path: Path):
    real_sha = WEIGHTS["sam_vit_b"].sha256
    wrong = tmp_path / "sam_vit_b" / "sam_vit_b_01ec64.pth"
    wrong.parent.mkdir()
    wrong.write_bytes(PAYLOAD)

    # The URL is never contacted: the file in place is checked first (and is wrong).
    with pytest.raises(ChecksumError, match=real_sha):
        fetch("sam_vit_b", tmp_path, url="http://127.0.0.1:9/unused", progress=False)
    assert not wrong.exists()

    mask = tmp_path / "ugains_ignore_mask" / "ignore_mask.pth"
    mask.parent.mkdir()
    mask.write_bytes(PAYLOAD)
    assert fetch("ugains_ignore_mask", tmp_path, url="http://127.0.0.1:9/x") == mask
    assert registry(tmp_path)["ugains_ignore_mask"]["file"]["sha256"] == sha(PAYLOAD)


def test_rba_zip_is_unpacked_to_model_final(server: FileServer, tmp_path: Path):
    archive = zip_of(
        {"swin_b_1dl/config.yaml": b"MODEL: {}", "swin_b_1dl/model_final.pth": PAYLOAD}
    )
    server.files["/swin_b_1dl.zip"] = Served(archive)

    path = fetch("swin_b_1dl", tmp_path, url=server.url("/swin_b_1dl.zip"), progress=False)

    assert path == tmp_path / "swin_b_1dl" / "model_final.pth"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "swin_b_1dl" / "swin_b_1dl.zip").exists()
    entry = registry(tmp_path)["swin_b_1dl"]
    assert entry["download"]["sha256"] == sha(archive)
    assert entry["file"]["sha256"] == sha(PAYLOAD)
    assert fetch("swin_b_1dl", tmp_path, url=server.url("/swin_b_1dl.zip")) == path
    assert len(server.requests) == 1


def test_zip_without_model_final_is_an_error_naming_its_entries(server: FileServer, tmp_path: Path):
    server.files["/z.zip"] = Served(zip_of({"swin_l_1dl/config.yaml": b"x"}))

    with pytest.raises(WeightsError, match=r"model_final\.pth.*swin_l_1dl/config\.yaml"):
        fetch("swin_l_1dl", tmp_path, url=server.url("/z.zip"), progress=False)

    assert not (tmp_path / "swin_l_1dl" / "model_final.pth").exists()
    assert not (tmp_path / "swin_l_1dl" / "swin_l_1dl.zip").exists()
    assert not (tmp_path / "registry.json").exists()


def test_download_that_is_not_a_zip_is_rejected(server: FileServer, tmp_path: Path):
    server.files["/z.zip"] = Served(b"<html>not found</html>")

    with pytest.raises(WeightsError, match="not a valid zip"):
        fetch("swin_l_1dl", tmp_path, url=server.url("/z.zip"), progress=False)

    assert (tmp_path / "swin_l_1dl" / "swin_l_1dl.zip.rejected").exists()
    assert not (tmp_path / "swin_l_1dl" / "model_final.pth").exists()


def test_offline_fails_at_once_naming_the_url_and_the_place_for_the_file(tmp_path: Path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/swin_b_1dl_rba_ood_coco.zip"

    started = time.monotonic()
    with pytest.raises(DownloadError) as caught:
        fetch("swin_b_1dl_rba_ood_coco", tmp_path, url=url, progress=False)

    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert url in message
    assert str(tmp_path / "swin_b_1dl_rba_ood_coco" / "swin_b_1dl_rba_ood_coco.zip") in message
    assert "ugains weights fetch swin_b_1dl_rba_ood_coco" in message


def test_http_error_names_the_url(server: FileServer, tmp_path: Path):
    with pytest.raises(DownloadError, match=re.escape(server.url("/missing")) + ".*404"):
        fetch("ugains", tmp_path, url=server.url("/missing"), progress=False)


def test_concurrent_fetches_of_one_name_download_once(server: FileServer, tmp_path: Path):
    server.files["/m.ckpt"] = Served(PAYLOAD, delay_s=0.3)
    results: list[Path | BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False))
        except BaseException as error:  # reported by the assertion below
            results.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [tmp_path / "ugains" / "rude0fhk.ckpt"] * 3
    assert len(server.requests) == 1
    assert results[0].read_bytes() == PAYLOAD


def test_unknown_name_suggests_the_closest(tmp_path: Path):
    with pytest.raises(WeightsError, match=r"unknown weights name 'sam_vit_x'.*'sam_vit_"):
        fetch("sam_vit_x", tmp_path)


def test_cache_dir_defaults_to_ugains_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("UGAINS_CACHE", str(tmp_path / "c"))
    assert weights.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("UGAINS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.default_cache_dir() == tmp_path / ".cache" / "ugains" / "weights"


# --------------------------------------------------------------------------- registry


def test_registry_holds_the_issue_names_and_reference_locations():
    assert set(WEIGHTS) == {
        "sam_vit_h",
        "sam_vit_l",
        "sam_vit_b",
        "swin_b_1dl",
        "swin_l_1dl",
        "swin_b_1dl_rba_ood_coco",
        "swin_b_1dl_rba_ood_map_coco",
        "swin_l_1dl_rba_ood_map_coco",
        "ugains",
        "ugains_ignore_mask",
    }
    assert WEIGHTS["sam_vit_h"].url == (
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
    )
    for spec in WEIGHTS.values():
        assert spec.url.endswith("/" + spec.filename)
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert (spec.member == "model_final.pth") == (spec.kind == "rba")


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_config_snippet_is_a_valid_mining_config_using_the_path(name: str):
    spec = WEIGHTS[name]
    path = Path("/data/my weights: v1") / spec.artifact  # a path YAML must quote

    config = parse_config(yaml.safe_load(spec.snippet(path))).models

    if spec.kind == "sam":
        assert config.sam.checkpoint == str(path)
        assert f"sam_{config.sam.model_type}" == name
    elif spec.kind == "ignore_mask":
        assert config.method.ignore_mask == str(path)
    else:
        assert config.mask2former.checkpoint == str(path)
        assert config.mask2former.format == spec.kind
        # Swin-L zoo entries are swin_l_1dl; the rest (UGainS included) are Swin-B.
        expected = "swin_l_1dl" if name.startswith("swin_l") else "swin_b_1dl"
        assert config.mask2former.architecture == expected


# --------------------------------------------------------------------------- command line


def test_cli_fetch_prints_the_path_and_config(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    server.files["/a.zip"] = Served(zip_of({"model_final.pth": PAYLOAD}))
    argv = ["weights", "fetch", "swin_l_1dl_rba_ood_map_coco", "--url", server.url("/a.zip")]

    assert main([*argv, "--cache-dir", str(tmp_path)]) == 0

    out, err = capsys.readouterr()
    path = tmp_path / "swin_l_1dl_rba_ood_map_coco" / "model_final.pth"
    assert out.splitlines()[0] == f"swin_l_1dl_rba_ood_map_coco: {path}"
    snippet = yaml.safe_load(out.split("# in the mining config:\n", 1)[1])
    assert snippet == {
        "models": {
            "mask2former": {
                "format": "rba",
                "checkpoint": str(path),
                "architecture": "swin_l_1dl",
            }
        }
    }
    assert "swin_l_1dl_rba_ood_map_coco" in err  # the progress bar's label


def test_cli_list_shows_cached_and_known(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    server.files["/m.ckpt"] = Served(PAYLOAD)
    fetch("ugains", tmp_path, url=server.url("/m.ckpt"), progress=False)

    assert main(["weights", "list", "--cache-dir", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    cached = next(line for line in out.splitlines() if line.strip().startswith("ugains "))
    assert cached.split() == [
        "ugains",
        "10.0",
        "KiB",
        f"sha256:{sha(PAYLOAD)[:12]}",
        str(tmp_path / "ugains" / "rude0fhk.ckpt"),
    ]
    for spec in WEIGHTS.values():
        assert f"{spec.name} " in out
        assert spec.url in out


def test_cli_list_marks_a_recorded_file_that_was_deleted(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    server.files["/m.pth"] = Served(PAYLOAD)
    fetch("ugains_ignore_mask", tmp_path, url=server.url("/m.pth"), progress=False).unlink()

    assert main(["weights", "list", "--cache-dir", str(tmp_path)]) == 0

    path = tmp_path / "ugains_ignore_mask" / "ignore_mask.pth"
    assert f"{path} (missing)" in capsys.readouterr().out


def test_cli_errors_are_one_line_with_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["weights", "fetch", "sam_vit_b", "nope", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "unknown weights name 'nope'" in err
    assert not (tmp_path / "sam_vit_b").exists()  # names are checked before any download


def test_fetch_help_explains_resume_checksum_and_the_offline_way(capsys):
    with pytest.raises(SystemExit):
        main(["weights", "fetch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for what in ("resumes", "SHA-256", "model_final.pth", "by hand"):
        assert what in text
