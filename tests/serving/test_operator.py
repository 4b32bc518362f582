"""The operator page: labels and undo land in the replay buffer as RL reads them, in the API and in a real browser."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_testlib import make_obs, uvicorn_server

from syvla.client import PolicyClient
from syvla.rl.rollouts import RolloutCollector
from syvla.serving import replay_buffer as rb
from syvla.serving.app import create_app
from syvla.serving.config import ServeConfig
from syvla.serving.host import PolicyHost

KEY = "operator-key"
ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "test_artifacts"  # kept after the run (git-ignored)


@pytest.fixture()
def live(tmp_path, debug_ckpts, request):
    """The app over real sockets (uvicorn in a thread), API key on; `undo_window_s` from the test's marker."""
    window = getattr(request, "param", 30.0)
    cfg = ServeConfig(checkpoint=str(debug_ckpts[0]), version=0, replay_dir=str(tmp_path / "replay"), api_key=KEY,
                      undo_window_s=window)
    host = PolicyHost(cfg, replay=rb.ReplayWriter(cfg.replay_dir, writer_id="operator"))
    host.load_version(0, cfg.checkpoint)
    with uvicorn_server(create_app(host)) as (url, _):
        yield host, url


def run_episode(url: str, seed: int, steps: int = 3) -> tuple[str, list[dict]]:
    """A robot that acts `steps` times and posts no reward (the operator judges); returns its id and observations."""
    obs = [make_obs(100 * seed + k) for k in range(steps)]
    with PolicyClient(url, api_key=KEY) as c:
        eid = c.start_episode(instruction=f"push the puck, robot {seed}")
        for o in obs:
            c.act(o["images"], o["state"], o["instruction"], seed=seed)
    return eid, obs


def rewards(host) -> list[tuple[str, object, str]]:
    return [(r["episode_id"], r["reward"], r.get("source")) for r in
            rb.ReplayReader(host.config.replay_dir).records(kinds=["reward"], decode=False)]


def test_listing_frames_label_and_undo_through_the_api(live):
    host, url = live
    a, obs_a = run_episode(url, 1)
    b, _ = run_episode(url, 2)
    api = httpx.Client(base_url=url, headers={"x-api-key": KEY})
    assert httpx.get(url + "/operator/api/episodes").status_code == 401  # same key as the robot API
    assert httpx.get(url + "/operator").status_code == 200  # the page shell holds no data
    listed = api.get("/operator/api/episodes").json()
    assert [e["episode_id"] for e in listed["episodes"]] == [b, a]  # newest first
    ep_a = listed["episodes"][1]
    assert ep_a["frames"] == [0, 1, 2] and ep_a["cameras"] == sorted(obs_a[0]["images"]) and ep_a["steps"] == 3
    from PIL import Image

    for step in ep_a["frames"]:  # each frame is the image the robot sent at that step
        for cam in ep_a["cameras"]:
            r = api.get("/operator/api/frame", params={"episode": a, "step": step, "camera": cam})
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")),
                                          obs_a[step]["images"][cam])
    assert api.get("/operator/api/frame", params={"episode": a, "step": 9, "camera": "topview"}).status_code == 404

    assert api.post("/operator/api/label", json={"episode_id": a, "reward": 1}).status_code == 200
    assert api.post("/operator/api/label", json={"episode_id": a, "reward": 2}).json()["error"]["field"] == "reward"
    assert api.post("/operator/api/label", json={"episode_id": "ep-" + "0" * 32 + "-v0-" + "0" * 32,
                                                 "reward": 1}).status_code == 404
    assert [e["episode_id"] for e in api.get("/operator/api/episodes").json()["episodes"]] == [b]
    collector = RolloutCollector(host.config.replay_dir)
    collector.poll()
    assert collector.ready() == 0  # inside the undo window RL does not take the label
    assert api.post("/operator/api/undo", json={"episode_id": a}).json()["reward"] is None
    assert api.post("/operator/api/undo", json={"episode_id": a}).status_code == 409  # nothing left to withdraw
    assert [e["episode_id"] for e in api.get("/operator/api/episodes").json()["episodes"]] == [b, a]
    assert api.post("/operator/api/label", json={"episode_id": a, "reward": 0}).status_code == 200
    assert api.get("/operator/api/episodes").json()["labels_last_hour"] == 2
    assert rewards(host) == [(a, 1, "operator"), (a, None, "operator-undo"), (a, 0, "operator")]
    # A robot's own reward (the API) cannot be withdrawn by the page.
    assert api.post(f"/v1/episodes/{b}/reward", json={"reward": 1}).status_code == 200
    assert api.post("/operator/api/undo", json={"episode_id": b}).status_code == 409


@pytest.mark.parametrize("live", [0.5], indirect=True)
def test_undo_closes_with_its_window_and_rl_then_takes_the_label(live):
    host, url = live
    a, _ = run_episode(url, 3)
    api = httpx.Client(base_url=url, headers={"x-api-key": KEY})
    api.post("/operator/api/label", json={"episode_id": a, "reward": 1})
    time.sleep(0.6)
    r = api.post("/operator/api/undo", json={"episode_id": a})
    assert r.status_code == 409 and "undo window" in r.json()["error"]["message"]
    collector = RolloutCollector(host.config.replay_dir)
    collector.poll()
    got = collector.take(5)
    assert [t.episode_id for t in got.trajectories] == [a] and got.trajectories[0].reward == 1


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium and chromium-driver are not installed (cluster/install_system_deps.sh "
                           "installs them where apt can)")
def test_the_page_in_a_real_browser_labels_by_keyboard_and_undoes(live, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    host, url = live
    a, _ = run_episode(url, 4)
    b, _ = run_episode(url, 5)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,900", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    wait = WebDriverWait(driver, 30)

    def cards() -> list[str]:
        # one script call: the page re-renders every refresh, so element handles go stale
        return driver.execute_script("return [...document.querySelectorAll('section.ep')].map(e => e.dataset.episode)")

    def press(key: str) -> None:
        driver.find_element(By.TAG_NAME, "body").send_keys(key)

    try:
        driver.get(url + "/operator")
        wait.until(lambda d: d.find_element(By.ID, "key").is_displayed())  # 401: the page asks for the key
        driver.find_element(By.ID, "keyin").send_keys(KEY)
        driver.find_element(By.CSS_SELECTOR, "#key button").click()
        wait.until(lambda d: cards() == [b, a])  # newest first
        # 2 episodes x 3 cameras x first/middle/last frames, fetched with the key and shown
        wait.until(lambda d: d.execute_script(
            "const im = [...document.images]; return im.length === 18 && im.every(i => i.complete && i.naturalWidth > 0)"))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "operator_page.png"))
        press("s")  # the selected (newest) episode: success
        wait.until(lambda d: cards() == [a])
        press("f")  # then the other: failure
        wait.until(lambda d: cards() == [])
        press("u")  # undo the last label (a's failure)
        wait.until(lambda d: cards() == [a])
        wait.until(lambda d: d.execute_script("return document.getElementById('rate').textContent") == "2")
        driver.save_screenshot(str(ARTIFACTS / "operator_page_after_undo.png"))
    finally:
        driver.quit()
    assert rewards(host) == [(b, 1, "operator"), (a, 0, "operator"), (a, None, "operator-undo")]
    episodes = rb.ReplayReader(host.config.replay_dir).episodes(decode=False)
    assert (episodes[b].reward, episodes[a].reward) == (1, None)
    assert (ARTIFACTS / "operator_page.png").stat().st_size > 10_000


def test_simulated_operator_labels_what_the_page_lists_with_its_error_rate(live):
    from syvla.sim.operator import SimulatedOperator

    host, url = live
    ids = [run_episode(url, 10 + k, steps=1)[0] for k in range(4)]
    truth = [True, False, True, False]
    exact, wrong = SimulatedOperator(url, api_key=KEY), SimulatedOperator(url, error_rate=1.0, api_key=KEY)
    for eid, t in zip(ids[:2], truth[:2]):
        exact.tell(eid, t)
    for eid, t in zip(ids[2:], truth[2:]):
        wrong.tell(eid, t)
    exact.tell("ep-not-listed", True)  # an outcome the page does not list stays waiting
    assert exact.label_ready() == 2 and wrong.label_ready() == 2 and exact.waiting == 1
    assert {(e, r) for e, r, _ in rewards(host)} == {(ids[0], 1), (ids[1], 0), (ids[2], 0), (ids[3], 1)}
    assert all(source == "operator" for _, _, source in rewards(host))
    with pytest.raises(ValueError, match="error_rate"):
        SimulatedOperator(url, error_rate=1.5)


def test_rl_sim_robots_hand_their_outcomes_to_a_simulated_operator(live, monkeypatch):
    """`pipelines/rl.py --run.operator sim`: the robots post nothing; the operator labels through the page's API."""
    from syvla.rl.launch import RLRunConfig, SimRobots

    host, url = live
    monkeypatch.setenv("SYVLA_API_KEY", KEY)  # rl.py's server takes the key from there, its robots too
    ids = [run_episode(url, 20 + k, steps=1)[0] for k in range(3)]
    lines = []
    robots = SimRobots(RLRunConfig(operator="sim"), url, log=lines.append)
    robots._operator_labels([{"episode_id": ids[0], "success": True, "aborted": None},
                             {"episode_id": ids[1], "success": False, "aborted": None},
                             {"episode_id": ids[2], "success": True, "aborted": "version retired"}])
    assert {(e, r) for e, r, _ in rewards(host)} == {(ids[0], 1), (ids[1], 0)}  # no label for an aborted episode
    assert lines == ["[rl] simulated operator labelled 2 episodes (0 wrong)"]
    with pytest.raises(ValueError, match="needs --run.operator sim"):
        RLRunConfig(operator_error_rate=0.1)
