"""The operator's side of real-robot RL: a page that collects 0/1 rewards, served by the policy app itself.

    GET  /operator                      the page (HTML + a little JavaScript; holds no data, needs no key)
    GET  /operator/api/episodes         episodes awaiting a label, newest first; labels in the last hour
    GET  /operator/api/frame            ?episode=&step=&camera=: one camera frame of a served step (PNG/JPEG)
    POST /operator/api/label            {"episode_id", "reward": 0 | 1}
    POST /operator/api/undo             {"episode_id"}: withdraw its label within the undo window

The API routes take the robot API's key (the page asks for it once and keeps it in the tab's
sessionStorage). Everything comes from the replay buffer, so several robots and several replicas
share one queue: `OperatorIndex` follows the buffer incrementally and keeps, per episode, only
where its step records are, never their images. A label is an ordinary reward record (`source`
"operator", with `undo_until`); an undo appends a null reward (the latest record wins), so the
buffer stays append-only and RL takes an episode only once its label is past the undo window.
The page and its JSON show an episode by `protocol.episode_label` and never a policy version or
checkpoint (on a blind server the episode ids carry none either). Keys: docs/operator.md.
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from syvla.serving import protocol
from syvla.serving import replay_buffer as rb
from syvla.serving.protocol import ProtocolError

SOURCE = "operator"
RUNNING_S = 5.0  # an episode whose last step is younger than this is shown as still running
MAX_LISTED = 50


class OperatorIndex:
    """What the page lists, folded in from the replay buffer as it grows (by `replay_buffer.Episode.add`, the
    one place episodes are assembled; a step keeps its cameras and location, not its images). Thread-safe."""

    def __init__(self, replay_dir: str | Path):
        self.reader = rb.ReplayReader(replay_dir)
        self._cursor: dict = {}
        self._episodes: dict[str, rb.Episode] = {}
        self._labels: list[float] = []  # times of every operator label
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            records, self._cursor = self.reader.follow(self._cursor)
            for record, location in records:
                eid = record.get("episode_id")
                if not isinstance(eid, str):
                    continue
                if record.get("kind") == rb.KIND_STEP:
                    images = record.pop("images", None) or {}
                    record = {**record, "cameras": sorted(images), "location": location}
                elif (record.get("kind") == rb.KIND_REWARD and record.get("source") == SOURCE
                      and record.get("reward") is not None):
                    self._labels.append(float(record.get("time") or 0.0))
                self._episodes.setdefault(eid, rb.Episode(eid)).add(record)

    def awaiting(self, now: float | None = None, limit: int = MAX_LISTED) -> list[dict]:
        """Episodes with steps and no label, newest first, with frame references (first, middle, last step)."""
        now = time.time() if now is None else now
        with self._lock:
            todo = [e for e in self._episodes.values() if e.steps and e.reward is None]
            todo.sort(key=lambda e: (e.start_time or 0.0, e.episode_id), reverse=True)
            out = []
            for e in todo[:limit]:
                picks = [e.steps[i] for i in sorted({0, len(e.steps) // 2, len(e.steps) - 1})]
                out.append({"episode_id": e.episode_id, "label": protocol.episode_label(e.episode_id),
                            "instruction": e.instruction, "embodiment": e.embodiment, "steps": len(e.steps),
                            "frames": [s["step"] for s in picks],
                            "cameras": sorted({c for s in picks for c in s["cameras"]}),
                            "age_s": round(now - (e.start_time or now), 1),
                            "running": now - max(s.get("time", 0.0) for s in e.steps) < RUNNING_S})
            return out

    def labels_last_hour(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            return sum(1 for t in self._labels if now - t <= 3600.0)

    def last_label(self, episode_id: str) -> tuple[int | None, str | None, float | None]:
        """(reward, source, undo_until) of the episode's latest reward record."""
        with self._lock:
            e = self._episodes.get(episode_id)
            return (None, None, None) if e is None else (e.reward, e.reward_source, e.reward_settles)

    def frame(self, episode_id: str, step: int, camera: str) -> tuple[bytes, str]:
        """(image bytes, media type) of one camera at one served step, as the robot sent it (arrays as PNG).
        Reads the buffer again only for a step it has not seen yet."""
        where = self._step(episode_id, step)
        if where is None:
            self.refresh()
            where = self._step(episode_id, step)
        if where is None:
            raise ProtocolError(404, "step", f"no step {step} of episode {episode_id[:80]!r} in the replay buffer")
        record = self.reader.read_at(where["location"], decode=False)
        value = (record.get("images") or {}).get(camera)
        if value is None:
            raise ProtocolError(404, "camera", f"no camera {camera[:40]!r} in that step; it has {where['cameras']}")
        if isinstance(value, (bytes, bytearray)):
            return bytes(value), "image/jpeg" if value[:2] == b"\xff\xd8" else "image/png"
        image = protocol.decode_image(value, f"images.{camera}", max_side=1 << 16)
        return protocol.encode_png(np.ascontiguousarray(image)), "image/png"

    def _step(self, episode_id: str, step: int) -> dict | None:
        with self._lock:
            e = self._episodes.get(episode_id)
            return next((s for s in e.steps if s.get("step") == step), None) if e is not None else None


def parse_label(obj: Any, undo: bool = False) -> tuple[str, int | None]:
    """`{"episode_id", "reward": 0 | 1}` (label) or `{"episode_id"}` (undo)."""
    obj = protocol._require_map(obj)
    protocol._unknown_keys(obj, {"episode_id"} if undo else {"episode_id", "reward"})
    if not isinstance(obj.get("episode_id"), str):
        raise ProtocolError(422, "episode_id", "missing or not a string")
    return obj["episode_id"], None if undo else protocol.parse_reward_request({"reward": obj.get("reward")})


def page(title: str = "syvla operator") -> str:
    """The operator page: server-rendered shell, data fetched from /operator/api with the robot API's key."""
    return _PAGE.replace("{{title}}", html.escape(title))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{title}}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:15px system-ui,sans-serif;margin:0;background:#f4f4f2;color:#222}
 header{display:flex;gap:1.5em;align-items:center;padding:.6em 1em;background:#222;color:#eee}
 header b{font-size:1.1em} #status{margin-left:auto}
 main{padding:1em;display:grid;gap:1em}
 .ep{background:#fff;border:2px solid #ddd;border-radius:8px;padding:.7em 1em}
 .ep.sel{border-color:#1565c0} .ep h3{margin:.1em 0 .4em;font-size:1em}
 .frames{display:flex;gap:.4em;flex-wrap:wrap;margin-bottom:.3em} .frames figure{margin:0;text-align:center;font-size:.75em;color:#666}
 .frames img{width:128px;height:128px;image-rendering:pixelated;background:#ccc;display:block}
 .btns{margin-top:.5em;display:flex;gap:.5em} button{font-size:1em;padding:.35em .9em;cursor:pointer}
 .ok{background:#2e7d32;color:#fff;border:0} .bad{background:#c62828;color:#fff;border:0}
 .run{color:#e65100;font-weight:bold} #toast{position:fixed;bottom:1em;left:1em;background:#333;color:#fff;
 padding:.5em 1em;border-radius:6px;display:none} #key{display:none;padding:1em}
 kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3em;background:#fafafa;color:#222}
</style></head><body>
<header><b>{{title}}</b><span><kbd>S</kbd>/<kbd>1</kbd> success · <kbd>F</kbd>/<kbd>0</kbd> failure ·
<kbd>K</kbd> skip · <kbd>U</kbd> undo · <kbd>&uarr;</kbd><kbd>&darr;</kbd> select</span>
<span id="status">labels in the last hour: <b id="rate">0</b> · awaiting: <b id="count">0</b></span></header>
<form id="key">API key: <input id="keyin" type="password" autocomplete="off"> <button>use</button></form>
<main id="list"></main><div id="toast"></div>
<script>
"use strict";
let key = sessionStorage.getItem("syvla-key") || "", episodes = [], sel = 0, last = null, undoS = 30;
const skipped = new Set(JSON.parse(sessionStorage.getItem("syvla-skipped") || "[]"));
const $ = (id) => document.getElementById(id);
function toast(msg) { const t = $("toast"); t.textContent = msg; t.style.display = "block";
  clearTimeout(toast.h); toast.h = setTimeout(() => t.style.display = "none", 4000); }
async function api(path, body) {
  const opts = {headers: {"accept": "application/json"}};
  if (key) opts.headers["x-api-key"] = key;
  if (body) { opts.method = "POST"; opts.body = JSON.stringify(body); opts.headers["content-type"] = "application/json"; }
  const r = await fetch(path, opts);
  if (r.status === 401) { $("key").style.display = "block"; throw new Error("API key needed"); }
  return r;
}
async function frame(img, src) {
  try { const r = await api(src); if (r.ok) img.src = URL.createObjectURL(await r.blob()); } catch (e) {}
}
function render() {
  const shown = episodes.filter((e) => !skipped.has(e.episode_id));
  $("count").textContent = shown.length;
  sel = Math.max(0, Math.min(sel, shown.length - 1));
  const list = $("list"); list.replaceChildren();
  shown.forEach((e, i) => {
    const d = document.createElement("section"); d.className = "ep" + (i === sel ? " sel" : "");
    d.dataset.episode = e.episode_id; d.dataset.label = e.label;
    const h = document.createElement("h3");
    h.textContent = `episode ${e.label} · ${e.instruction || "(no instruction)"} · ${e.steps} steps · ${Math.round(e.age_s)} s ago`;
    if (e.running) { const s = document.createElement("span"); s.className = "run"; s.textContent = " · running"; h.append(s); }
    d.append(h);
    for (const cam of e.cameras) {  // one row per camera: first, middle, last served step
      const f = document.createElement("div"); f.className = "frames";
      for (const [j, step] of e.frames.entries()) {
        const fig = document.createElement("figure"), img = document.createElement("img"), cap = document.createElement("figcaption");
        img.alt = `${cam} ${["first", "middle", "last"][j] || ""}`; cap.textContent = `${cam} · step ${step}`;
        fig.append(img, cap); f.append(fig);
        frame(img, `/operator/api/frame?episode=${encodeURIComponent(e.episode_id)}&step=${step}&camera=${encodeURIComponent(cam)}`);
      }
      d.append(f);
    }
    const b = document.createElement("div"); b.className = "btns";
    for (const [txt, cls, fn] of [["success", "ok", () => label(e, 1)], ["failure", "bad", () => label(e, 0)], ["skip", "", () => skip(e)]]) {
      const btn = document.createElement("button"); btn.textContent = txt; btn.className = cls; btn.onclick = fn; b.append(btn);
    }
    d.append(b); d.onclick = () => { sel = i; mark(); }; list.append(d);
  });
}
function mark() { document.querySelectorAll(".ep").forEach((d, i) => d.classList.toggle("sel", i === sel)); }
function current() { return episodes.filter((e) => !skipped.has(e.episode_id))[sel]; }
async function refresh() {
  try {
    const r = await api("/operator/api/episodes"); if (!r.ok) { toast(`refresh: HTTP ${r.status}`); return; }
    const data = await r.json(); undoS = data.undo_window_s; $("rate").textContent = data.labels_last_hour;
    const before = JSON.stringify(episodes.map((e) => [e.episode_id, e.steps, e.running]));
    episodes = data.episodes;
    if (JSON.stringify(episodes.map((e) => [e.episode_id, e.steps, e.running])) !== before) render();
    document.body.dataset.ready = "1";
  } catch (e) { toast(String(e.message || e)); }
}
async function label(e, reward) {
  const r = await api("/operator/api/label", {episode_id: e.episode_id, reward});
  if (!r.ok) { toast(`label refused: ${(await r.json()).error.message}`); return; }
  last = {episode: e.episode_id, label: e.label, at: Date.now()};
  toast(`episode ${e.label}: ${reward ? "success" : "failure"} (U to undo)`);
  episodes = episodes.filter((x) => x.episode_id !== e.episode_id); render(); refresh();
}
function skip(e) { skipped.add(e.episode_id); sessionStorage.setItem("syvla-skipped", JSON.stringify([...skipped]));
  toast(`episode ${e.label} skipped`); render(); }
async function undo() {
  if (!last || Date.now() - last.at > undoS * 1000) { toast("nothing to undo"); return; }
  const r = await api("/operator/api/undo", {episode_id: last.episode});
  toast(r.ok ? `episode ${last.label}: label withdrawn` : `undo refused: ${(await r.json()).error.message}`);
  last = null; refresh();
}
document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const e = current(), k = ev.key.toLowerCase();
  if ((k === "s" || k === "1") && e) label(e, 1);
  else if ((k === "f" || k === "0") && e) label(e, 0);
  else if (k === "k" && e) skip(e);
  else if (k === "u" || k === "z") undo();
  else if (k === "arrowdown" || k === "j") { sel++; render(); }
  else if (k === "arrowup") { sel = Math.max(0, sel - 1); render(); }
  else return;
  ev.preventDefault();
});
$("key").onsubmit = (ev) => { ev.preventDefault(); key = $("keyin").value; sessionStorage.setItem("syvla-key", key);
  $("key").style.display = "none"; $("toast").style.display = "none"; refresh(); };
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""
