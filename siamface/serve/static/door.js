// siamface door view: the camera identified continuously over POST /door/identify, which answers each face's
// box and the gallery's decision only (a name, or null: unknown). The page shows that decision and nothing
// else; it never asks for candidates, probabilities or the list of people.
// A kiosk can be set up by URL: /door#key=KEY&start=1 keeps the key in this browser and starts the camera;
// &fps=N sends at most N frames a second (0.2 to 4; default 3), for a slow server or a slow network.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("door-key"), banner = $("door-banner"), button = $("door-start"), errorLine = $("door-error");
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("key")) localStorage.setItem("siamface-door-key", params.get("key"));
if (location.hash) history.replaceState(null, "", location.pathname); // the key leaves the address bar
keyInput.value = localStorage.getItem("siamface-door-key") || "";
keyInput.addEventListener("input", () => localStorage.setItem("siamface-door-key", keyInput.value));

async function ask(blob, name, signal) {
  const form = new FormData();
  form.append("image", blob, name);
  const headers = keyInput.value ? { "X-API-Key": keyInput.value } : {};
  const res = await fetch("/door/identify", { method: "POST", body: form, headers, signal });
  if (!res.ok) throw await httpError(res);
  return res.json();
}

// The banner: every face's decision, green when everyone is known, red when someone is not. It is rewritten
// only when the decisions change, so that a screen reader announces each change once.
function decide(answer, frame) {
  errorLine.textContent = "";
  const faces = answer ? answer.faces : [];
  const key = JSON.stringify(faces.map((f) => f.match));
  banner.dataset.frame = frame;
  if (banner.dataset.decisions === key) return;
  banner.dataset.decisions = key;
  banner.className = "banner " + (!faces.length ? "none" : faces.every((f) => f.match) ? "known" : "unknown");
  banner.replaceChildren(...(faces.length ? faces.map(decision) : [document.createTextNode("No one at the door")]));
}

function decision(face) {
  const span = document.createElement("span");
  span.className = "decision " + (face.match ? "match" : "unknown");
  span.textContent = face.match || "unknown";
  return span;
}

const fps = Math.min(4, Math.max(0.2, Number(params.get("fps")) || 3));
const live = new LiveCamera({
  video: $("door-video"),
  overlay: $("door-overlay"),
  send: ask,
  maxFps: fps,
  show: decide,
  onError: (e) => { errorLine.textContent = e.message; },
  onState: (on) => {
    button.textContent = on ? "Stop camera" : "Start camera";
    banner.className = "banner " + (on ? "none" : "off");
    banner.textContent = on ? "Starting…" : "Camera off";
    delete banner.dataset.frame;
    delete banner.dataset.decisions;
  },
});
button.addEventListener("click", () => (live.running ? live.stop() : live.start()));
if (params.get("start")) live.start();
