"""The web demo as a real client, driven in Debian's headless Chromium (playwright-core).

One Node run (tests/browser/run_demo.mjs) plays every scenario against a real server
and reports what the page itself measured; each test below asserts on one part of it.
The mid-stream screenshot is kept in test-artifacts/browser/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from streamvox.bench.harness import free_port, wait_healthy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "tests" / "browser" / "run_demo.mjs"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
FRAME_48K = 960  # one 20 ms Opus frame


@pytest.fixture(scope="module")
def demo_run() -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is required (scripts/setup.sh test installs it)"
    assert (ROOT / "tests" / "browser" / "node_modules" / "playwright-core").is_dir(), "run scripts/setup.sh test"
    assert Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists(), "Debian chromium is required"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamvox.stream_server.cli", "--log-level", "WARNING", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_healthy(server, port, timeout_s=60)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        completed = subprocess.run(
            [node, str(DRIVER), f"http://127.0.0.1:{port}/", str(ARTIFACTS)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=DRIVER.parent,
        )
    finally:
        server.terminate()
        server.wait(30)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    (ARTIFACTS / "result.json").write_text(json.dumps(result, indent=2))
    assert "failure" not in result, result.get("failure")
    return result


def test_browser_has_webcodecs_opus_and_audioworklet(demo_run: dict[str, Any]) -> None:
    assert demo_run["capabilities"] == {"audioDecoder": True, "audioWorklet": True}
    assert not [line for line in demo_run["console"] if line.startswith(("pageerror", "error"))]


@pytest.mark.parametrize(("scenario", "codec"), [("opus", "opus"), ("pcm", "pcm_s16le"), ("llm", "opus")])
def test_decoded_audio_matches_done_and_never_underruns(demo_run: dict[str, Any], scenario: str, codec: str) -> None:
    run = demo_run["scenarios"][scenario]
    assert run["format"] == codec
    done = run["done"]
    assert done is not None and done["samples"] > 48000 * 5
    assert abs(run["decodedSamples"] - done["samples"]) <= FRAME_48K
    assert run["playedSamples"] == run["decodedSamples"]
    assert run["underrunsAfterStart"] == 0, run.get("underrunLog")
    assert run["ttfaMs"] is not None and run["ttfaMs"] > 0
    assert not run["errorText"]


def test_llm_paced_mode_streams_several_segments(demo_run: dict[str, Any]) -> None:
    run = demo_run["scenarios"]["llm"]
    assert run["mode"] == "llm" and run["done"]["segments"] >= 3


def test_captions_follow_the_words_as_they_sound(demo_run: dict[str, Any]) -> None:
    """The highlighted word, sampled as the page played, was the one whose timestamps hold the
    playback position, in text order, through the whole utterance."""
    run = demo_run["scenarios"]["opus"]
    log = run["captionLog"]
    assert len(log) >= 0.6 * len(run["words"]) > 10
    assert [c["char_start"] for c in log] == sorted(c["char_start"] for c in log)
    assert all(c["start_s"] <= c["at_s"] < c["end_s"] for c in log)
    assert log[-1]["char_start"] >= run["words"][-2]["char_start"]


def test_a_second_context_plays_right_after_the_first(demo_run: dict[str, Any]) -> None:
    pair = demo_run["scenarios"]["second"]
    first, second = pair["first"], pair["second"]
    for run in (first, second):
        assert run["done"] is not None and abs(run["decodedSamples"] - run["done"]["samples"]) <= FRAME_48K
        assert run["playedSamples"] == run["decodedSamples"] and run["underrunsAfterStart"] == 0
    assert first["id"] != second["id"]
    assert second["ttfaMs"] is not None and second["ttfaMs"] < 1000  # generated while the first played
    assert second["startedAt"] >= first["drainedAt"] - 5  # then queued behind it


def test_stop_reports_what_was_heard(demo_run: dict[str, Any]) -> None:
    run = demo_run["scenarios"]["stop"]
    heard, cancelled, text = run["heard"], run["cancelled"], run["sentText"]
    assert abs(heard["played_s"] - run["playedAfter"] / 48000) < 1e-3
    assert heard["text"] and text.startswith(heard["text"]) and heard["words"]
    assert run["heardShown"].startswith("Heard: “") and heard["text"] in run["heardShown"]
    # the server's account, from the played_ms the Stop sent: the same words, give or take one
    assert abs(cancelled["played_s"] - heard["played_s"]) < 0.1
    assert text.startswith(cancelled["heard_text"])
    assert abs(len(cancelled["heard_words"]) - len(heard["words"])) <= 1


def test_stop_silences_within_100_ms_and_server_cancels(demo_run: dict[str, Any]) -> None:
    run = demo_run["scenarios"]["stop"]
    assert run["cancelled"]["type"] == "cancelled" and run["cancelled"]["reason"] == "client"
    assert run["stopped"]["latencyMs"] < 100
    assert run["playedAfter"] == run["playedAtStop"]
    assert run["levelAfter"] < 1e-4
    assert run["done"] is None


def test_unknown_voice_is_shown_to_the_person(demo_run: dict[str, Any]) -> None:
    run = demo_run["scenarios"]["unknownVoice"]
    assert run["errorVisible"] is True
    assert "unknown_voice" in run["errorText"]


def test_layout_fits_a_phone_and_screenshots_are_saved(demo_run: dict[str, Any]) -> None:
    assert demo_run["phoneOverflow"] is False
    assert (ARTIFACTS / "demo-mid-stream.png").stat().st_size > 10_000
    assert (ARTIFACTS / "demo-phone.png").stat().st_size > 10_000


def test_the_demo_speaks_with_a_browser_token_when_keys_are_on(tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "node is required (scripts/setup.sh test installs it)"
    keys = tmp_path / "keys"
    cli = [sys.executable, "-m", "streamvox.stream_server.cli"]
    key = subprocess.run([*cli, "keys", "add", "page", "--keys", str(keys)], capture_output=True, text=True,
                         check=True).stdout.strip()  # fmt: skip
    port = free_port()
    server = subprocess.Popen([*cli, "--log-level", "WARNING", "serve", "--port", str(port), "--keys", str(keys)],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_healthy(server, port, timeout_s=60)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/tokens", data=b'{"dialects": ["native"]}',
                                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            token = json.loads(response.read())["token"]
        completed = subprocess.run([node, str(DRIVER.with_name("run_token.mjs")), f"http://127.0.0.1:{port}/", token],
                                   capture_output=True, text=True, timeout=180, cwd=DRIVER.parent)  # fmt: skip
    finally:
        server.terminate()
        server.wait(30)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert "failure" not in result, result.get("failure")
    assert not result["withoutToken"]["voicesLoaded"] and "needs a key" in result["withoutToken"]["errorText"]
    spoken = result["withToken"]
    assert spoken["voices"] >= 1 and spoken["done"] is not None and spoken["done"]["samples"] > 48000
    assert abs(spoken["decodedSamples"] - spoken["done"]["samples"]) <= FRAME_48K
    assert token not in " ".join(result["console"])
