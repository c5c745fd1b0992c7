// Live identification from the camera, shared by the admin page and the door page: one frame at a time to
// the server (never two requests in flight), at most maxFps frames a second and never faster than the server
// answers, each answer's face boxes and labels drawn on a canvas laid over the video. Stops when the camera is
// turned off, the page is hidden or a key is refused; resumes when a hidden page is shown again.
"use strict";

// A face's box in an answer: {x, y, w, h} under "box" (door answers) or in its face report (identify answers).
function liveBox(face) {
  const b = face.box !== undefined ? face.box : face.face && face.face.box;
  return b && b.w !== undefined ? b : null;
}

// The request failed: a fetch error with the server's status and its Retry-After (seconds), if any.
async function httpError(res) {
  const body = await res.json().catch(() => ({ detail: `${res.status} ${res.statusText}` }));
  const e = new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
  Object.assign(e, { kind: body.error || "", status: res.status, retryAfter: Number(res.headers.get("Retry-After")) || 0 });
  return e;
}

class LiveCamera {
  // video, overlay: the <video> and the <canvas> over it, in one box (shown while the camera is on).
  // send(blob, filename, signal) -> the server's answer; show(answer, frame) shows one (null: no face in view);
  // onError(error) reports a failed frame; onState(on) follows the camera.
  constructor({ video, overlay, send, show, onError, onState, maxFps = 3, maxSide = 1280 }) {
    Object.assign(this, { video, overlay, send, show, onError, onState, maxSide });
    this.minInterval = 1000 / maxFps;
    this.run = 0; // the current run's number; 0 when stopped (a stopped run's answers are dropped)
    this.runs = 0;
    this.frame = 0;
    this.resumeOnShow = false;
    document.addEventListener("visibilitychange", () => this.visibility());
    window.addEventListener("pagehide", () => this.stop());
  }

  get running() { return this.run !== 0; }

  async start() {
    if (this.running) return;
    const run = this.run = ++this.runs;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (e) {
      this.run = 0;
      this.onError(new Error(`Camera unavailable: ${e.message || e.name}`));
      this.onState(false);
      return;
    }
    if (this.run !== run) { stream.getTracks().forEach((t) => t.stop()); return; } // stopped while asking
    this.video.srcObject = stream;
    this.video.parentElement.hidden = false; // the box that holds the video and its overlay
    await this.video.play().catch(() => {}); // rejected only when stop() came first
    if (this.run !== run) return;
    this.onState(true);
    this.loop(run);
  }

  stop() {
    if (!this.running) return;
    this.run = 0;
    if (this.abort) this.abort.abort();
    if (this.wake) this.wake();
    const stream = this.video.srcObject;
    if (stream) stream.getTracks().forEach((t) => t.stop());
    this.video.srcObject = null;
    this.video.parentElement.hidden = true;
    this.overlay.getContext("2d").clearRect(0, 0, this.overlay.width, this.overlay.height);
    this.onState(false);
  }

  visibility() {
    if (document.visibilityState === "hidden" && this.running) {
      this.resumeOnShow = true;
      this.stop();
    } else if (document.visibilityState === "visible" && this.resumeOnShow) {
      this.resumeOnShow = false;
      this.start();
    }
  }

  // Sleep up to ms, cut short by stop().
  pause(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => { clearTimeout(t); resolve(); };
    });
  }

  // The current video frame as a JPEG (its longer side at most maxSide) and the scale from it to the video.
  grab() {
    const w = this.video.videoWidth, h = this.video.videoHeight;
    const s = Math.min(1, this.maxSide / Math.max(w, h));
    const c = document.createElement("canvas");
    c.width = Math.round(w * s);
    c.height = Math.round(h * s);
    c.getContext("2d").drawImage(this.video, 0, 0, c.width, c.height);
    return new Promise((resolve) => c.toBlob((blob) => resolve({ blob, scale: 1 / s }), "image/jpeg", 0.85));
  }

  async loop(run) {
    let backoff = 0;
    while (this.run === run) {
      if (!this.video.videoWidth) { await this.pause(100); continue; }
      const t0 = performance.now(), frame = ++this.frame;
      const { blob, scale } = await this.grab();
      if (this.run !== run) return;
      this.abort = new AbortController();
      let wait;
      try {
        const answer = await this.send(blob, `live-${frame}.jpg`, this.abort.signal);
        if (this.run !== run) return;
        this.draw(answer.faces, scale);
        this.show(answer, frame);
        backoff = 0;
        const took = performance.now() - t0;
        wait = Math.max(this.minInterval - took, took / 4); // a slow server gets a breath between frames
      } catch (e) {
        if (this.run !== run) return;
        if (e.kind === "NoFaceError") { // nobody in view: an answer, not a failure
          this.draw([], scale);
          this.show(null, frame);
          wait = this.minInterval;
        } else {
          this.onError(e);
          if (e.status === 401 || e.status === 403) { this.stop(); return; } // retrying a refused key only locks it out
          backoff = Math.min(5000, Math.max(500, backoff * 2));
          wait = Math.max(backoff, 1000 * (e.retryAfter || 0));
        }
      }
      await this.pause(wait);
    }
  }

  // Boxes and labels on the overlay, in the video's pixels (the canvas is laid over the video at its size).
  draw(faces, scale) {
    const c = this.overlay, ctx = c.getContext("2d");
    c.width = this.video.videoWidth;
    c.height = this.video.videoHeight;
    const lw = Math.max(2, c.width / 200), size = Math.max(14, c.width / 30);
    ctx.lineWidth = lw;
    ctx.font = `600 ${size}px system-ui, sans-serif`;
    ctx.textBaseline = "bottom";
    for (const f of faces) {
      const b = liveBox(f);
      if (!b) continue;
      const [x, y, w, h] = [b.x, b.y, b.w, b.h].map((v) => v * scale);
      const label = f.match || "unknown", color = f.match ? "#067647" : "#b42318";
      ctx.strokeStyle = ctx.fillStyle = color;
      ctx.strokeRect(x, y, w, h);
      const top = Math.max(size + 4, y);
      ctx.fillRect(x - lw / 2, top - size - 4, ctx.measureText(label).width + 8, size + 4);
      ctx.fillStyle = "#fff";
      ctx.fillText(label, x + 4, top - 2);
    }
  }
}
