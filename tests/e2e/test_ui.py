"""The browser UI at `/`, in a real browser (Debian's chromium, driven by Playwright) against every service running.

Screenshots go to test-artifacts/ (ui-desktop.png, ui-phone.png, ui-error.png, ui-canceled.png, ui-repaint.png).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import httpx
import pytest

from tunereel.launch import LocalStack
from tunereel.presets import music_preset, video_preset

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BLOCKER = {"genre": "pop", "duration": 2, "video_prompt": "a queue filler", "width": 64, "height": 64}

# Records every change of the job panel, so the test sees the live progress the user saw, not only the end.
RECORD_TIMELINE = """() => {
  window.__timeline = [];
  const job = document.getElementById("job");
  const record = () => window.__timeline.push({
    state: job.dataset.state,
    progress: Number(document.getElementById("job-progress").value),
    percent: document.getElementById("job-progress-label").textContent,
    queue: document.getElementById("job-queue").textContent,
    eta: document.getElementById("job-eta").textContent,
  });
  new MutationObserver(record).observe(job, {subtree: true, attributes: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt when missing (`make browser` does the same)."""
    if not os.path.exists(CHROMIUM):
        subprocess.run("apt-get update && apt-get install -y chromium", shell=True, check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
def stack(models_dir, tmp_path_factory):
    with LocalStack(models_dir=models_dir, log_dir=tmp_path_factory.mktemp("ui-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.gateway_url, timeout=60.0) as http:
        yield http


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page):
        self.errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))


@pytest.fixture
def page(browser, stack):
    # Playwright's string predicates (wait_for_function) are evaluated with eval, which the gateway's CSP forbids;
    # test_the_page_runs_under_its_content_security_policy checks the page with the policy enforced.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.console = Console(page)
    yield page
    context.close()


def test_the_page_runs_under_its_content_security_policy(browser, stack):
    """Issue 13, item 10: the UI sends a CSP (own files only, no framing) and works under it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console = Console(page)
    try:
        reply = page.goto(stack.gateway_url + "/")
        assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]
        page.wait_for_selector("html[data-ready=true]")  # the module script ran
        page.get_by_role("button", name="Sunset pop").click()
        assert page.input_value("#genre") == "pop"
        page.wait_for_timeout(500)
        assert console.errors == [], console.errors  # a CSP violation is a console error
    finally:
        context.close()


def open_ui(page, stack) -> None:
    page.goto(stack.gateway_url + "/")
    page.wait_for_selector("html[data-ready=true]")


def fill_small_request(page, *, duration: float = 2, seed: int | None = None) -> None:
    page.fill("#duration", str(duration))
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.fill("#fps", "24")
    page.fill("#seed", "" if seed is None else str(seed))


def queue_blockers(client, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        reply = client.post("/v1/jobs", json=BLOCKER)
        assert reply.status_code == 201, reply.text
        ids.append(reply.json()["id"])
    return ids


def test_ui_makes_a_video_shows_live_progress_and_plays_it(page, stack, client, artifacts):
    started = time.monotonic()
    hosts = set()  # every request of the page goes to the gateway: no CDN, no other host
    page.on("request", lambda request: hosts.add(re.sub(r"^(\w+://[^/]+).*$", r"\1", request.url)))
    open_ui(page, stack)
    assert page.title() == "tunereel"

    page.get_by_role("button", name="Sunset pop").click()  # an example fills the musical fields
    assert page.input_value("#genre") == "pop" and page.input_value("#tempo_bpm") == "118"
    assert page.input_value("#instruments") == "synth, drums"
    fill_small_request(page, duration=2, seed=1234)
    page.evaluate(RECORD_TIMELINE)

    # Two jobs ahead of ours, so the page has a queue position to show before the progress starts.
    queue_blockers(client, 2)
    page.focus("#submit")
    page.keyboard.press("Enter")  # keyboard only

    page.wait_for_function("/job(s)? ahead|next in line/.test(document.getElementById('job-queue').textContent)")
    page.wait_for_selector("#job[data-state=succeeded]", timeout=120_000)
    job_id = page.get_attribute("#job", "data-job-id")

    timeline = page.evaluate("window.__timeline")
    states = [entry["state"] for entry in timeline]
    progress = [entry["progress"] for entry in timeline if entry["state"] in ("queued", "running", "succeeded")]
    assert "queued" in states and states[-1] == "succeeded", states
    assert states.index("queued") < states.index("succeeded")
    assert progress[0] < 1.0 and progress[-1] == 1.0 and progress == sorted(progress), progress
    assert any(re.search(r"\d+ jobs? ahead", entry["queue"]) for entry in timeline), timeline
    assert page.text_content("#job-progress-label") == "100%"
    assert page.is_hidden("#cancel")

    # The video plays in the page: its duration is the request's, and time moves when played.
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=30_000)
    duration = page.eval_on_selector("#video", "video => video.duration")
    assert abs(duration - 2.0) <= 1 / 24 + 1e-3, duration
    page.eval_on_selector("#video", "video => video.play()")
    page.wait_for_function("document.getElementById('video').currentTime > 0.25", timeout=15_000)
    page.eval_on_selector("#video", "video => video.pause()")

    # The effective seed and the models are shown; the download link is the job's video.
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert page.text_content("#prov-seed") == "1234" == str(job["provenance"]["seed"])
    assert page.text_content("#prov-music") == job["provenance"]["music_model_id"] == "tiny-musicgen"
    assert page.text_content("#prov-video") == job["provenance"]["video_model_id"]
    href = page.get_attribute("#download", "href")
    assert href == f"/v1/jobs/{job_id}/video" and page.get_attribute("#download", "download") == "tunereel-1234.mp4"
    assert client.get(href, headers={"Range": "bytes=0-9"}).status_code == 206

    # History: our job, finished, with its first frame as the poster.
    item = f"#history li[data-job-id='{job_id}']"
    page.wait_for_selector(f"{item}[data-state=succeeded]")
    page.wait_for_function(f'document.querySelector("{item} video").readyState >= 1')
    page.wait_for_function("document.querySelectorAll('#history video').length >= 3")  # the blockers too

    # "Same again" makes a new job with the same seed; "New seed" one with another seed.
    page.click("#same-again")
    page.wait_for_function(f"document.getElementById('job').dataset.jobId !== '{job_id}'")
    page.wait_for_selector("#job[data-state=succeeded]", timeout=60_000)
    again = client.get(f"/v1/jobs/{page.get_attribute('#job', 'data-job-id')}").json()
    assert again["request"] == job["request"] and page.text_content("#prov-seed") == "1234"
    page.click("#new-seed")
    page.wait_for_function(f"document.getElementById('job').dataset.jobId !== '{again['id']}'")
    page.wait_for_selector("#job[data-state=succeeded]", timeout=60_000)
    fresh = client.get(f"/v1/jobs/{page.get_attribute('#job', 'data-job-id')}").json()
    assert fresh["request"]["seed"] != 1234 and page.text_content("#prov-seed") == str(fresh["request"]["seed"])
    page.wait_for_function("document.querySelector('#video').readyState === 4")  # all loaded: no spinner

    page.wait_for_timeout(1500)  # the player's loading spinner fades out; the history's posters paint
    page.screenshot(path=str(artifacts / "ui-desktop.png"), full_page=True)

    # Phone width: nothing wider than the screen, and the form still works from the top.
    page.set_viewport_size({"width": 390, "height": 844})
    page.evaluate("window.scrollTo(0, 0)")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(artifacts / "ui-phone.png"), full_page=True)

    assert hosts == {stack.gateway_url}, hosts
    assert page.console.errors == []
    print(f"UI job test took {time.monotonic() - started:.1f} s")


def served_models(music: str, video: str) -> dict:
    """GET /v1/models as a stack serving these presets answers it (tests/contract/test_models.py checks the endpoint)."""
    m, v = music_preset(music), video_preset(video)
    return {
        "music": {"preset": m.name, "family": m.family, "license": m.license, "sings": m.sings,
                  "follows_melody": m.follows_melody, "repaints": m.repaints},
        "video": {"preset": v.name, "family": v.family, "license": v.license, "hears_audio": v.hears_audio,
                  "takes_image": v.takes_image, "max_frames_per_pass": v.max_frames},
    }  # fmt: skip


def test_ui_shows_the_served_models_offers_lyrics_when_the_model_sings_and_greys_the_rest(page, stack, client):
    """Issue 16, Interfaces: the page shows what the services serve with its licence (GET /v1/models), a lyrics box
    only for a music model that sings, and greys out an upload the served model cannot take, saying why."""
    served = client.get("/v1/models")
    assert served.status_code == 200, served.text
    assert served.json() == served_models("tiny", "tiny")  # the tiny stack: MusicGen + LTX-Video
    open_ui(page, stack)
    assert page.is_hidden("#song-fields") and page.is_disabled("#lyrics")  # MusicGen does not sing
    assert page.is_disabled("#melody")  # tiny MusicGen is no melody checkpoint
    assert "does not follow a melody" in page.get_attribute('[data-field="melody"]', "title")
    assert page.is_enabled("#image") and not page.get_attribute('[data-field="image"]', "title")
    assert "Licence: " + music_preset("tiny").license in page.text_content("#music-served")
    assert "Licence: " + video_preset("tiny").license in page.text_content("#video-served")
    assert page.get_attribute("#music_model", "placeholder") == "tiny"
    assert page.eval_on_selector_all("#music-presets option", "options => options.map(o => o.value)") == ["tiny"]
    assert page.console.errors == [], page.console.errors

    # The same page in front of a singing music model and a video model that hears the music.
    page.route("**/v1/models", lambda route: route.fulfill(json=served_models("tiny-ace-step", "tiny-ltx2")))
    posts = []

    def record_job(route):
        if route.request.method != "POST":
            return route.continue_()
        posts.append(route.request.post_data_json)
        return route.abort()  # the tiny stack's MusicGen cannot sing; only what the page sends is checked here

    page.route("**/v1/jobs", record_job)
    open_ui(page, stack)
    assert page.is_visible("#song-fields") and page.is_enabled("#lyrics")
    assert page.is_visible("#vocal_language") and page.is_visible("#key") and page.is_visible("#time_signature")
    assert page.is_disabled("#melody")  # ACE-Step's cover task is not wired: no melody either
    assert page.is_enabled("#image") and not page.get_attribute('[data-field="image"]', "title")  # LTX-2 takes one
    assert "Licence: " + music_preset("tiny-ace-step").license in page.text_content("#music-served")
    assert "sings lyrics" in page.text_content("#music-served")
    assert "Licence: " + video_preset("tiny-ltx2").license in page.text_content("#video-served")
    assert "hears the music" in page.text_content("#video-served")

    fill_small_request(page)
    page.fill("#lyrics", "[verse]\nla la la")
    page.fill("#vocal_language", "en")
    page.fill("#time_signature", "4")
    page.click("#submit")
    for _ in range(200):  # the page posts at once; a loaded machine may take a while to hand it to the route
        if posts:
            break
        page.wait_for_timeout(50)
    page.wait_for_timeout(300)  # and only once
    assert len(posts) == 1, posts
    assert posts[0]["lyrics"] == "[verse]\nla la la" and posts[0]["vocal_language"] == "en"
    assert posts[0]["time_signature"] == "4" and "key" not in posts[0]  # empty: the model chooses

    # A video model that could not start from an image: the upload is greyed out, saying why.
    blind = served_models("tiny", "tiny")
    blind["video"]["takes_image"] = False
    page.route("**/v1/models", lambda route: route.fulfill(json=blind))
    open_ui(page, stack)
    assert page.is_disabled("#image")
    assert "does not start from an image" in page.get_attribute('[data-field="image"]', "title")


def test_ui_shows_the_servers_error_next_to_the_field(page, stack, client, artifacts):
    real = client.get("/v1/limits").json()
    # A page with stale limits (the server's were lowered after it loaded): the client lets it through, the
    # server refuses, and its own message appears next to the field it names.
    stale = {**real, "max_duration_seconds": real["max_duration_seconds"] * 10}
    page.route("**/v1/limits", lambda route: route.fulfill(json=stale))
    posts = []
    page.on("request", lambda request: request.method == "POST" and posts.append(request.url))
    open_ui(page, stack)

    too_long = real["max_duration_seconds"] + 1
    fill_small_request(page, duration=too_long)
    body = {"genre": "pop", "duration": too_long, "video_prompt": page.input_value("#video_prompt"),
            "width": 64, "height": 64, "fps": 24}  # fmt: skip
    expected = client.post("/v1/jobs", json=body)
    assert expected.status_code == 422 and expected.json()["field"] == "duration"
    message = expected.json()["error"].removeprefix("duration: ")

    page.click("#submit")
    page.wait_for_selector("#duration-error:not(:empty)")
    assert page.text_content("#duration-error") == message
    assert page.get_attribute("#duration", "aria-invalid") == "true"
    assert "duration-error" in page.get_attribute("#duration", "aria-describedby")
    assert page.evaluate("document.activeElement.id") == "duration"
    assert "server" in page.text_content("#form-error")
    assert page.get_attribute("#job", "data-state") == "none"  # no job was made
    assert len(posts) == 1
    page.screenshot(path=str(artifacts / "ui-error.png"), full_page=True)

    # The client-side checks catch what they can without asking the server.
    page.fill("#duration", "1")
    assert page.text_content("#duration-error") == ""  # typing clears the mark
    page.fill("#width", "65")
    page.fill("#tempo_bpm", str(real["max_tempo_bpm"] + 1))
    page.click("#submit")
    assert page.text_content("#width-error") == f"must be a multiple of {real['size_multiple']} (got 65)"
    assert page.text_content("#tempo_bpm-error").startswith(f"must be between {real['min_tempo_bpm']} and")
    assert page.evaluate("document.activeElement.id") == "tempo_bpm"  # the first marked field, in form order
    assert len(posts) == 1

    # The one console error is the browser's own note about the 422 response.
    assert len(page.console.errors) == 1 and "422" in page.console.errors[0], page.console.errors


def test_ui_cancels_a_queued_job(page, stack, client, artifacts):
    open_ui(page, stack)
    fill_small_request(page, duration=1)
    queue_blockers(client, 2)
    page.click("#submit")
    page.wait_for_selector("#job[data-state=queued]")
    job_id = page.get_attribute("#job", "data-job-id")
    page.click("#cancel")
    page.wait_for_selector("#job[data-state=canceled]")
    assert page.is_hidden("#result") and page.is_hidden("#cancel")
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
    page.wait_for_selector(f"#history li[data-job-id='{job_id}'][data-state=canceled]")
    page.screenshot(path=str(artifacts / "ui-canceled.png"), full_page=True)
    assert page.console.errors == []


def test_ui_drops_a_song_and_an_image_and_makes_the_video_for_them(page, stack, client, tmp_path):
    """Bring your own in the page: the song uploads when chosen (its duration and waveform shown), genre and duration
    may stay empty, the image shows as a thumbnail; the job names both uploads and lasts the song's length."""
    from tests.songs import song_pcm, write_image, write_song

    song = write_song(tmp_path / "my song.flac", song_pcm(1.5, seed=3))
    face = write_image(tmp_path / "face.png", 120, 90)
    open_ui(page, stack)
    page.fill("#genre", "")
    page.fill("#duration", "")
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.set_input_files("#song", str(song))
    page.wait_for_function("/1\\.5 s, 44100 Hz, 2 channel/.test(document.getElementById('song-hint').textContent)")
    page.wait_for_selector("#song-wave:not([hidden])")
    # the composer's analysis of the song, shown before any job (GET /v1/uploads/{id}/analysis)
    page.wait_for_function("/bpm, \\d+ bars, [1-9]\\d* section/.test(document.getElementById('song-analysis').textContent)",
                           timeout=60_000)  # fmt: skip
    page.set_input_files("#image", str(face))
    page.wait_for_function("/120×90 px/.test(document.getElementById('image-hint').textContent)")
    assert page.is_visible("#image-preview")
    page.click("#submit")
    page.wait_for_selector("#job[data-state=succeeded]", timeout=120_000)
    job = client.get(f"/v1/jobs/{page.get_attribute('#job', 'data-job-id')}").json()
    assert job["request"]["song"] and job["request"]["image"] and job["request"]["genre"] is None
    assert job["request"]["duration"] == pytest.approx(1.5, abs=0.01)
    assert [use["field"] for use in job["provenance"]["uploads"]] == ["song", "image"]


def test_ui_scenes_and_the_timeline_strip_seek_to_a_shot(page, stack, client, artifacts, tmp_path):
    """Scenes are added, reordered and removed in the form, one with its own image; the job cuts with its music;
    under the player the timeline strip shows sections, shots and beats, and a click on a shot seeks the video there."""
    from tests.songs import write_image

    open_ui(page, stack)
    fill_small_request(page, duration=6, seed=99)
    for prompt in ("a blue sea", "a red room", "a green field"):
        page.click("#scene-add")
        page.locator("#scenes .scene-prompt").last.fill(prompt)
    page.locator("#scenes .scene").first.locator(".scene-image").set_input_files(str(write_image(tmp_path / "sea.png", 64, 64)))
    page.wait_for_function("/sea\\.png: 64×64 px/.test(document.querySelector('#scenes .scene-image-hint').textContent)")
    page.locator("#scenes .scene").nth(1).locator(".up").click()  # "a red room" first
    page.locator("#scenes .scene").nth(2).locator(".remove").click()  # no green field
    page.select_option("#cuts", "bar")
    page.click("#submit")
    page.wait_for_selector("#job[data-state=succeeded]", timeout=180_000)
    job = client.get(f"/v1/jobs/{page.get_attribute('#job', 'data-job-id')}").json()
    assert [s["prompt"] for s in job["request"]["scenes"]] == ["a red room", "a blue sea"]
    assert [bool(s.get("image")) for s in job["request"]["scenes"]] == [False, True]  # the sea's image moved with it
    assert [use["field"] for use in job["provenance"]["uploads"]] == ["scenes.1.image"]
    assert job["request"]["cuts"] == "bar"

    page.wait_for_selector("#timeline:not([hidden]) #timeline-shots .block")
    timeline = client.get(f"/v1/jobs/{job['id']}/timeline").json()
    shots = page.locator("#timeline-shots .block")
    assert shots.count() == len(timeline["shots"]) >= 2
    assert page.locator("#timeline-sections .block").count() == len(timeline["sections"])
    assert page.locator("#timeline-beats .tick").count() == len([t for t in timeline["beats"] if t < 6])
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=30_000)
    last = timeline["shots"][-1]
    shots.last.click()
    page.eval_on_selector("#video", "video => video.pause()")
    at = page.eval_on_selector("#video", "video => video.currentTime")
    assert last["start_s"] - 0.05 <= at <= last["end_s"], (at, last)
    page.screenshot(path=str(artifacts / "ui-timeline.png"), full_page=True)
    assert page.console.errors == []


def test_ui_cut_every_n_beats_is_offered_with_beat_cuts_only(page, stack, client):
    """The "cut every N beats" box appears (enabled) only with cuts "beat"; the client checks its range, the server's
    refusal lands next to it, and the job and "Reuse settings" carry it."""
    real = client.get("/v1/limits").json()
    stale = {**real, "max_cut_every_beats": real["max_cut_every_beats"] * 2}  # a page with stale limits
    page.route("**/v1/limits", lambda route: route.fulfill(json=stale))
    posts = []
    page.on("request", lambda request: request.method == "POST" and posts.append(request.url))
    open_ui(page, stack)
    fill_small_request(page, duration=2, seed=5)
    box = "#cut_every_beats"
    assert not page.is_visible(box) and page.is_disabled(box)
    page.select_option("#cuts", "beat")
    assert page.is_visible(box) and page.is_enabled(box)
    page.select_option("#cuts", "bar")
    assert not page.is_visible(box) and page.is_disabled(box)

    page.select_option("#cuts", "beat")
    page.fill(box, "2.5")
    page.click("#submit")
    assert page.text_content("#cut_every_beats-error") == "must be a whole number (got 2.5)"
    too_many = real["max_cut_every_beats"] + 1  # the stale page lets it through; the server names the field
    page.fill(box, str(too_many))
    page.click("#submit")
    page.wait_for_selector("#cut_every_beats-error:not(:empty)")
    assert page.text_content("#cut_every_beats-error") == f"Input should be less than or equal to {real['max_cut_every_beats']}"
    assert page.evaluate("document.activeElement.id") == "cut_every_beats" and len(posts) == 1

    page.fill(box, "2")
    page.click("#submit")
    page.wait_for_selector("#job[data-state=succeeded]", timeout=120_000)
    job = client.get(f"/v1/jobs/{page.get_attribute('#job', 'data-job-id')}").json()
    assert (job["request"]["cuts"], job["request"]["cut_every_beats"]) == ("beat", 2)
    page.select_option("#cuts", "")  # back to auto: the box goes away…
    assert not page.is_visible(box)
    page.locator(f"#history [data-job-id='{job['id']}'] .reuse").click()  # …and comes back with the job's settings
    assert page.input_value("#cuts") == "beat" and page.input_value(box) == "2" and page.is_visible(box)
    assert [e for e in page.console.errors if "422" not in e] == []  # the browser's own note about the 422 only


def test_ui_re_make_a_range_needs_a_song_and_a_music_model_that_repaints(page, stack, client, artifacts, tmp_path):
    """Issue 16 (repaint) in the page: the "Re-make a range" inputs stay greyed out, saying why, until a song is given
    and the served music model repaints; then the page checks the range, sends it as repaint_start / repaint_end, shows
    the server's refusal next to the field, and "Reuse settings" brings the range back."""
    from tests.songs import song_pcm, write_song

    song = write_song(tmp_path / "take1.wav", song_pcm(1.5, seed=7))
    ends = ("#repaint_start", "#repaint_end")
    open_ui(page, stack)  # the tiny stack's MusicGen cannot repaint: greyed out, with or without a song
    assert all(page.is_disabled(box) for box in ends)
    page.set_input_files("#song", str(song))
    page.wait_for_function("/1\\.5 s, 44100 Hz/.test(document.getElementById('song-hint').textContent)")
    assert all(page.is_disabled(box) for box in ends)
    assert page.text_content("#repaint-hint") == "The music model (tiny) cannot re-make a range of a song."
    assert "cannot re-make" in page.get_attribute('[data-field="repaint_end"]', "title")

    # The same page in front of a music model that repaints (what the tiny stack's music service then answers to the
    # job is checked below): without a song greyed out, saying so; with one, offered.
    page.route("**/v1/models", lambda route: route.fulfill(json=served_models("tiny-ace-step", "tiny")))
    posts = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/v1/jobs") and posts.append(r.post_data_json))
    open_ui(page, stack)
    assert all(page.is_disabled(box) for box in ends) and "Needs your song" in page.text_content("#repaint-hint")
    page.fill("#duration", "")  # the song's length
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.set_input_files("#song", str(song))
    page.wait_for_selector("#repaint_start:enabled")
    assert page.is_enabled("#repaint_end") and not page.get_attribute('[data-field="repaint_start"]', "title")

    # What the page checks itself: both ends, the end after the start, a genre to describe the new music.
    page.fill("#repaint_start", "1")
    page.click("#submit")
    assert page.text_content("#repaint_end-error") == "required with a start (or leave both empty)"
    page.fill("#repaint_end", "0.5")
    page.click("#submit")
    assert page.text_content("#repaint_end-error") == "must be after the start (1 s; got 0.5)"
    page.fill("#repaint_end", "1.25")
    page.fill("#genre", "")
    page.click("#submit")
    assert page.text_content("#genre-error") == "required to re-make a range (it describes the new music)"
    assert posts == []
    # Past the song's end: the song's window is the server's to know, and its refusal lands next to the field.
    page.fill("#genre", "pop")
    page.fill("#repaint_end", "2.5")
    page.click("#submit")
    page.wait_for_selector("#repaint_end-error:not(:empty)")
    assert page.text_content("#repaint_end-error") == "must be within the video's music (duration 1.5 s; got 2.5)"
    assert page.evaluate("document.activeElement.id") == "repaint_end"
    assert len(posts) == 1 and posts[0]["song"] and (posts[0]["repaint_start"], posts[0]["repaint_end"]) == (1, 2.5)

    # A range in the song: the job is made with it; the tiny stack's MusicGen then refuses to repaint.
    page.fill("#repaint_end", "1.25")
    page.click("#submit")
    page.wait_for_selector("#job[data-state=failed]", timeout=60_000)
    assert "cannot repaint" in page.text_content("#job-error")
    job = client.get(f"/v1/jobs/{page.get_attribute('#job', 'data-job-id')}").json()
    assert (job["request"]["repaint_start"], job["request"]["repaint_end"]) == (1, 1.25) == (
        posts[-1]["repaint_start"], posts[-1]["repaint_end"])  # fmt: skip

    page.click("#reset")  # a fresh form (no song: greyed out again)…
    page.wait_for_function("document.getElementById('repaint_start').disabled")
    assert page.input_value("#repaint_start") == ""
    page.locator(f"#history [data-job-id='{job['id']}'] .reuse").click()  # …and the job's range comes back
    assert (page.input_value("#repaint_start"), page.input_value("#repaint_end")) == ("1", "1.25")
    assert all(page.is_enabled(box) for box in ends)  # the job's song is named by its id
    page.screenshot(path=str(artifacts / "ui-repaint.png"), full_page=True)
    assert [e for e in page.console.errors if not re.search(r"\b4\d\d\b", e)] == [], page.console.errors
