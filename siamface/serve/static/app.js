// siamface web page: plain JavaScript, no build step. Talks to the same server's JSON API.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = sessionStorage.getItem("siamface-key") || "";
keyInput.addEventListener("input", () => sessionStorage.setItem("siamface-key", keyInput.value));

// Every call sends the key when one is typed: with a key configured, the server wants it for the gallery.
// A failed call throws the server's one-line detail with its status and kind (httpError, live.js).
async function call(method, path, form, signal) {
  const headers = keyInput.value ? { "X-API-Key": keyInput.value } : {};
  const res = await fetch(path, { method, body: form, headers, signal });
  if (!res.ok) throw await httpError(res);
  return res.json();
}

function say(el, html, cls) {
  el.className = "result" + (cls ? " " + cls : "");
  el.innerHTML = html;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pct = (p) => (100 * p).toFixed(1) + "%";

function decisionLine(r) {
  const op = r.operating_point ? ` at ${esc(r.operating_point)}` : "";
  return `<div class="detail">threshold ${r.threshold.toFixed(3)}${op} · ${r.elapsed_ms} ms<br>` +
    `${esc(r.threshold_source)}<br>model ${esc(r.model)}</div>`;
}

// ---- photos on canvases, with face boxes -------------------------------------------------------------

// Show the photo that will be sent. A file the browser cannot decode (TIFF, PGM, not an image) still goes
// to the server, which may read it: the canvas then says so, instead of keeping the previous picture.
async function showPhoto(canvas, blob, name) {
  canvas.dataset.source = name || blob.name || "";
  try {
    canvas.bitmap = await createImageBitmap(blob);
    canvas.dataset.preview = "yes";
    canvas.width = canvas.bitmap.width;
    canvas.height = canvas.bitmap.height;
    drawFaces(canvas, []);
  } catch (e) {
    canvas.bitmap = null;
    canvas.dataset.preview = "none";
    noPreview(canvas, canvas.dataset.source, blob.type);
  }
  canvas.hidden = false;
}

function noPreview(canvas, name, type) {
  canvas.width = 480;
  canvas.height = 240;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#eef0f4";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#1d2330";
  ctx.font = "20px system-ui, sans-serif";
  ctx.textAlign = "center";
  const short = name.length > 40 ? name.slice(0, 37) + "…" : name;
  ctx.fillText("This browser cannot show", 240, 90);
  ctx.fillText(short || "this file", 240, 120);
  ctx.font = "16px system-ui, sans-serif";
  ctx.fillText(`(${type || "unknown type"}); it is sent as it is`, 240, 155);
}

// A face box: {x, y, w, h} directly, or a face report's "box" (the face used).
const boxOf = (f) => (f && f.w !== undefined ? f : f && f.box) || null;

function drawFaces(canvas, faces) {
  if (!canvas.bitmap) return; // no preview: nothing to draw the boxes on
  const ctx = canvas.getContext("2d");
  ctx.drawImage(canvas.bitmap, 0, 0);
  const lw = Math.max(2, canvas.width / 150);
  ctx.lineWidth = lw;
  ctx.font = `${Math.max(12, canvas.width / 25)}px system-ui, sans-serif`;
  for (const f of faces) {
    const b = boxOf(f.face);
    if (!b) continue;
    ctx.strokeStyle = f.color || "#2e5bff";
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    const eyes = f.face.eyes;
    ctx.fillStyle = "#ffd400";
    for (const [x, y] of eyes || []) { ctx.beginPath(); ctx.arc(x, y, lw * 1.5, 0, 2 * Math.PI); ctx.fill(); }
    if (f.label) {
      ctx.fillStyle = f.color || "#2e5bff";
      ctx.fillText(f.label, b.x, Math.max(ctx.measureText("M").width, b.y - lw * 2));
    }
  }
}

// Every detected face in a face report: the used one in blue with its eyes, the others grey.
function reportFaces(report) {
  if (!report) return [];
  const used = report.box;
  const others = (report.faces || []).filter((b) => !used || b.x !== used.x || b.y !== used.y)
    .map((b) => ({ face: b, color: "#98a2b3" }));
  return used ? [...others, { face: report }] : others;
}

function dropTarget(el, onFile) {
  el.addEventListener("dragover", (e) => { e.preventDefault(); el.classList.add("over"); });
  el.addEventListener("dragleave", () => el.classList.remove("over"));
  el.addEventListener("drop", (e) => {
    e.preventDefault();
    el.classList.remove("over");
    if (e.dataTransfer.files.length) onFile(e.dataTransfer.files[0]);
  });
}

function camera(prefix, onBlob, result) {
  const video = $(prefix + "-video"), snap = $(prefix + "-snap");
  $(prefix + "-camera").addEventListener("click", async () => {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (e) {
      say(result, `Camera unavailable: ${esc(e.message || e.name)}`, "error");
      return;
    }
    video.hidden = false;
    await video.play();
    snap.hidden = false;
  });
  snap.addEventListener("click", () => {
    $(prefix + "-button").disabled = true; // until the snapshot replaces the previous photo
    const c = document.createElement("canvas");
    c.width = video.videoWidth;
    c.height = video.videoHeight;
    c.getContext("2d").drawImage(video, 0, 0);
    video.srcObject.getTracks().forEach((t) => t.stop());
    video.hidden = snap.hidden = true;
    c.toBlob((blob) => onBlob(blob, "camera.jpg"), "image/jpeg", 0.95);
  });
}

// ---- verify ----------------------------------------------------------------------------------------

const pair = { a: null, b: null };
for (const slot of ["a", "b"]) {
  const input = $(`verify-${slot}-input`), canvas = $(`verify-${slot}-canvas`);
  const take = async (file) => {
    pair[slot] = file;
    await showPhoto(canvas, file);
    $("verify-button").disabled = !(pair.a && pair.b);
  };
  input.addEventListener("change", () => input.files.length && take(input.files[0]));
  dropTarget(input.parentElement, take);
}

$("verify-button").addEventListener("click", async () => {
  const out = $("verify-result");
  const form = new FormData();
  form.append("image_a", pair.a, pair.a.name || "a.jpg");
  form.append("image_b", pair.b, pair.b.name || "b.jpg");
  say(out, "Comparing…");
  try {
    const r = await call("POST", "/verify", form);
    out.dataset.same = r.same;
    say(out, `<div class="verdict ${r.same ? "same" : "different"}">` +
      `${r.same ? "Same person" : "Different people"}</div>` +
      `<div>probability <b class="probability">${pct(r.probability)}</b></div>` + decisionLine(r));
    r.faces.forEach((f, i) => drawFaces($(`verify-${"ab"[i]}-canvas`), reportFaces(f)));
  } catch (e) {
    delete out.dataset.same;
    say(out, esc(e.message), "error");
  }
});

// ---- enroll ----------------------------------------------------------------------------------------

const enrollPhoto = { blob: null, name: null };
const enrollReady = () => {
  $("enroll-button").disabled = !(enrollPhoto.blob && $("enroll-name").value.trim());
};
async function takeEnroll(blob, name) {
  Object.assign(enrollPhoto, { blob, name: name || blob.name || "photo.jpg" });
  await showPhoto($("enroll-canvas"), blob, enrollPhoto.name);
  enrollReady();
}
$("enroll-name").addEventListener("input", enrollReady);
$("enroll-file").addEventListener("change", (e) => e.target.files.length && takeEnroll(e.target.files[0]));
camera("enroll", takeEnroll, $("enroll-result"));

$("enroll-button").addEventListener("click", async () => {
  const out = $("enroll-result");
  const form = new FormData();
  form.append("name", $("enroll-name").value.trim());
  form.append("image", enrollPhoto.blob, enrollPhoto.name);
  if ($("enroll-select").value) form.append("select", $("enroll-select").value);
  say(out, "Enrolling…");
  try {
    const r = await call("POST", "/enroll", form);
    say(out, `Enrolled <b class="enrolled-name">${esc(r.name)}</b> (${r.photos} photo${r.photos === 1 ? "" : "s"})`);
    drawFaces($("enroll-canvas"), r.enrolled.map((e) => ({ face: e.face, label: r.name })));
    loadPeople();
  } catch (e) {
    const hint = e.kind === "MultipleFacesError" ? "<br>Choose which face to enroll under <b>Face</b> above." : "";
    say(out, esc(e.message) + hint, "error");
  }
});

// ---- identify --------------------------------------------------------------------------------------

const probe = { blob: null, name: null };
async function takeProbe(blob, name) {
  Object.assign(probe, { blob, name: name || blob.name || "photo.jpg" });
  await showPhoto($("identify-canvas"), blob, probe.name);
  $("identify-button").disabled = false;
}
$("identify-file").addEventListener("change", (e) => e.target.files.length && takeProbe(e.target.files[0]));
camera("identify", takeProbe, $("identify-result"));

$("identify-button").addEventListener("click", async () => {
  const out = $("identify-result");
  const form = new FormData();
  form.append("image", probe.blob, probe.name);
  say(out, "Searching…");
  try {
    const r = await call("POST", "/identify", form);
    say(out, `<ul>${r.faces.map(faceRow).join("")}</ul>` + decisionLine(r));
    drawFaces($("identify-canvas"), r.faces.map((f) => ({
      face: f.face, label: f.match || "unknown", color: f.match ? "#067647" : "#b42318" })));
  } catch (e) {
    say(out, esc(e.message), "error");
  }
});

// One identified face: the decision (a name or unknown) and the candidates with their probabilities.
function faceRow(f) {
  const who = f.match ? `<b class="match">${esc(f.match)}</b>` : `<b class="unknown">unknown</b>`;
  const cands = f.candidates.map((c) => `${esc(c.name)} ${pct(c.probability)}`).join(", ");
  return `<li>${who} <span class="detail">${cands || "no one enrolled"}</span></li>`;
}

// Live: the camera identified continuously (live.js), names over the faces and the answer's rows below.
const liveOut = $("identify-live-result"), liveButton = $("identify-live");
const live = new LiveCamera({
  video: $("identify-live-video"),
  overlay: $("identify-live-overlay"),
  send: (blob, name, signal) => {
    const form = new FormData();
    form.append("image", blob, name);
    return call("POST", "/identify", form, signal);
  },
  show: (r, frame) => {
    liveOut.className = "result live-result";
    liveOut.dataset.frame = frame;
    liveOut.innerHTML = r ? r.faces.map(faceRow).join("") : `<li class="none">no face in view</li>`;
  },
  onError: (e) => {
    liveOut.className = "result live-result error";
    liveOut.innerHTML = `<li>${esc(e.message)}</li>`;
  },
  onState: (on) => {
    liveButton.textContent = on ? "Stop live" : "Live";
    liveButton.setAttribute("aria-pressed", String(on));
    if (on) {
      liveOut.className = "result live-result";
      liveOut.innerHTML = "<li>Starting…</li>";
      delete liveOut.dataset.frame;
    }
    liveOut.hidden = !on && !liveOut.classList.contains("error");
  },
});
liveButton.addEventListener("click", () => (live.running ? live.stop() : live.start()));

// ---- people and status -----------------------------------------------------------------------------

async function loadPeople() {
  const list = $("people-list"), out = $("people-result");
  try {
    const people = await call("GET", "/people");
    list.innerHTML = "";
    for (const p of people) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="person"><b>${esc(p.name)}</b> <span class="detail">${p.photos} photo(s)</span></span>`;
      const del = document.createElement("button");
      del.textContent = "Delete";
      del.addEventListener("click", () => removePerson(p.name));
      li.append(del);
      list.append(li);
    }
    say(out, people.length ? "" : "No one is enrolled yet.");
  } catch (e) {
    list.innerHTML = "";
    const hint = e.status === 401 ? "<br>Type the API key above to see the gallery." : "";
    say(out, esc(e.message) + hint, "error");
  }
  loadStatus();
}

async function removePerson(name) {
  if (!confirm(`Delete ${name} and every photo and face stored for them?`)) return;
  try {
    await call("DELETE", `/people/${encodeURIComponent(name)}`);
    say($("people-result"), `Deleted ${esc(name)}.`);
    await loadPeople();
    say($("people-result"), `Deleted ${esc(name)}.`);
  } catch (e) {
    say($("people-result"), esc(e.message), "error");
  }
}

async function loadStatus() {
  try {
    const h = await call("GET", "/health");
    const model = h.model.split("/").filter(Boolean).pop();
    const people = h.people === null ? "no gallery" : `${h.people} enrolled`;
    const mode = h.read_only ? " · read-only (no API key set)" : h.key_required ? " · the gallery needs the API key" : "";
    $("status").textContent = `model ${model} · ${people}${mode}`;
  } catch (e) {
    $("status").textContent = `server unreachable: ${e.message}`;
  }
}

$("people-refresh").addEventListener("click", loadPeople);
keyInput.addEventListener("change", loadPeople);
loadPeople();
