// Radsight viewer: DICOM frames on <canvas> with window/level, zoom, pan and the AI marks.
// Plain JavaScript, no libraries. Text from DICOM is only ever set with textContent.
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const viewportsEl = document.getElementById("viewports");
  const seriesList = document.getElementById("series-list");
  const slider = document.getElementById("slice-slider");
  const presetSel = document.getElementById("wl-preset");
  const marksBtn = document.getElementById("toggle-marks");
  const layoutBtn = document.getElementById("layout");
  const wlReadout = document.getElementById("wl-readout");
  const sliceReadout = document.getElementById("slice-readout");

  // every (instance, frame) of the study, in series order
  const series = data.series.map(function (s) {
    const items = [];
    s.images.forEach(function (img) {
      for (let f = 0; f < img.frames; f++) {
        items.push({ id: img.id, frame: f, frames: img.frames, sop: img.sop_instance_uid, label: img.label });
      }
    });
    return { info: s, items: items };
  });
  const allItems = [].concat.apply([], series.map(function (s) { return s.items; }));
  const cache = new Map();
  let showMarks = true;
  let currentSeries = 0;
  let viewports = [];
  let active = null;

  function loadFrame(item) {
    const key = item.id + "/" + item.frame;
    if (!cache.has(key)) {
      cache.set(key, fetch("/web/frames/" + item.id + "/" + item.frame, { credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) { throw new Error("frame " + key + ": HTTP " + r.status); }
          const h = r.headers;
          return r.arrayBuffer().then(function (buf) {
            const rows = parseInt(h.get("X-Rows"), 10), cols = parseInt(h.get("X-Columns"), 10);
            const slope = parseFloat(h.get("X-Slope")), intercept = parseFloat(h.get("X-Intercept"));
            const pixels = new Uint16Array(buf);
            let max = 0;
            for (let i = 0; i < pixels.length; i += 7) { if (pixels[i] > max) { max = pixels[i]; } }
            return {
              rows: rows, cols: cols, slope: slope, intercept: intercept, pixels: pixels,
              wc: parseFloat(h.get("X-Window-Center")), ww: parseFloat(h.get("X-Window-Width")),
              lo: intercept, hi: intercept + max * slope,
            };
          });
        }));
    }
    return cache.get(key);
  }

  function marksFor(item) {
    return data.marks.filter(function (m) {
      return m.sop_instance_uid === item.sop &&
        (m.frame_number === null || m.frame_number === undefined || m.frame_number === item.frame + 1);
    });
  }

  function Viewport(index) {
    this.el = document.createElement("div");
    this.el.className = "viewport";
    this.canvas = document.createElement("canvas");
    this.label = document.createElement("div");
    this.label.className = "vp-label";
    this.info = document.createElement("div");
    this.info.className = "vp-info";
    this.el.appendChild(this.canvas);
    this.el.appendChild(this.label);
    this.el.appendChild(this.info);
    this.el.dataset.index = String(index);
    this.item = null;
    this.frame = null;
    this.wc = 0; this.ww = 1;
    this.zoom = 1; this.panX = 0; this.panY = 0;
    this.offscreen = document.createElement("canvas");
    this.pending = false;
    this.bind();
  }

  Viewport.prototype.show = function (item, keepView) {
    const vp = this;
    vp.item = item;
    vp.el.dataset.loaded = "false";
    vp.label.textContent = describe(item);
    return loadFrame(item).then(function (frame) {
      if (vp.item !== item) { return; }
      const first = vp.frame === null;
      vp.frame = frame;
      if (first || !keepView) { vp.wc = frame.wc; vp.ww = frame.ww; }
      vp.windowImage();
      vp.el.dataset.loaded = "true";
      vp.draw();
    }).catch(function (err) {
      vp.label.textContent = describe(item) + " — " + err.message;
      vp.el.dataset.loaded = "error";
    });
  };

  Viewport.prototype.windowImage = function () {
    const f = this.frame;
    const lut = new Uint8ClampedArray(65536);
    const lo = this.wc - 0.5 - (this.ww - 1) / 2, span = Math.max(this.ww - 1, 1);
    for (let s = 0; s < 65536; s++) {
      lut[s] = ((s * f.slope + f.intercept - lo) / span) * 255;
    }
    this.offscreen.width = f.cols;
    this.offscreen.height = f.rows;
    const octx = this.offscreen.getContext("2d");
    const img = octx.createImageData(f.cols, f.rows);
    const out = img.data, px = f.pixels;
    for (let i = 0, j = 0; i < px.length; i++, j += 4) {
      const v = lut[px[i]];
      out[j] = v; out[j + 1] = v; out[j + 2] = v; out[j + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
    this.el.dataset.window = Math.round(this.wc) + "/" + Math.round(this.ww);
  };

  Viewport.prototype.geometry = function () {
    const f = this.frame;
    const cw = this.canvas.width, ch = this.canvas.height;
    const scale = Math.min(cw / f.cols, ch / f.rows) * this.zoom;
    return {
      scale: scale,
      ox: (cw - f.cols * scale) / 2 + this.panX * devicePixelRatio,
      oy: (ch - f.rows * scale) / 2 + this.panY * devicePixelRatio,
    };
  };

  Viewport.prototype.draw = function () {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, w, h);
    if (!this.frame) { return; }
    const g = this.geometry();
    ctx.imageSmoothingEnabled = g.scale < 2;
    ctx.drawImage(this.offscreen, g.ox, g.oy, this.frame.cols * g.scale, this.frame.rows * g.scale);
    let drawn = 0;
    if (showMarks) {
      marksFor(this.item).forEach(function (m) { drawMark(ctx, m, g, dpr); drawn++; });
    }
    this.el.dataset.marksDrawn = String(drawn);
    this.info.textContent = "W " + Math.round(this.ww) + "  L " + Math.round(this.wc) +
      "  ·  " + (this.zoom * 100).toFixed(0) + "%";
    if (this === active) { updateReadouts(); }
  };

  function drawMark(ctx, m, g, dpr) {
    const pts = m.points.map(function (p) { return [p[0] * g.scale + g.ox, p[1] * g.scale + g.oy]; });
    ctx.save();
    ctx.lineWidth = 2 * dpr;
    ctx.strokeStyle = m.positive ? "#ffd23f" : "rgba(120, 200, 255, 0.9)";
    if (!m.positive) { ctx.setLineDash([6 * dpr, 4 * dpr]); }
    ctx.shadowColor = "rgba(0,0,0,0.8)";
    ctx.shadowBlur = 3 * dpr;
    ctx.beginPath();
    if (m.graphic_type === "CIRCLE" && pts.length >= 2) {
      const r = Math.hypot(pts[1][0] - pts[0][0], pts[1][1] - pts[0][1]);
      ctx.arc(pts[0][0], pts[0][1], r, 0, 2 * Math.PI);
    } else if (m.graphic_type === "ELLIPSE" && pts.length >= 4) {
      const cx = (pts[0][0] + pts[1][0]) / 2, cy = (pts[0][1] + pts[1][1]) / 2;
      const a = Math.hypot(pts[1][0] - pts[0][0], pts[1][1] - pts[0][1]) / 2;
      const b = Math.hypot(pts[3][0] - pts[2][0], pts[3][1] - pts[2][1]) / 2;
      ctx.ellipse(cx, cy, a, b, Math.atan2(pts[1][1] - pts[0][1], pts[1][0] - pts[0][0]), 0, 2 * Math.PI);
    } else if (m.graphic_type === "POINT" || m.graphic_type === "MULTIPOINT") {
      pts.forEach(function (p) { ctx.moveTo(p[0] + 6 * dpr, p[1]); ctx.arc(p[0], p[1], 6 * dpr, 0, 2 * Math.PI); });
    } else {
      pts.forEach(function (p, i) { if (i === 0) { ctx.moveTo(p[0], p[1]); } else { ctx.lineTo(p[0], p[1]); } });
      ctx.closePath();
    }
    ctx.stroke();
    const top = pts.reduce(function (a, p) { return p[1] < a[1] ? p : a; }, pts[0]);
    ctx.setLineDash([]);
    ctx.font = (12 * dpr) + "px system-ui, sans-serif";
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(m.label, top[0], Math.max(top[1] - 6 * dpr, 14 * dpr));
    ctx.restore();
  }

  Viewport.prototype.bind = function () {
    const vp = this;
    let drag = null;
    vp.canvas.addEventListener("pointerdown", function (e) {
      setActive(vp);
      drag = { x: e.clientX, y: e.clientY, pan: e.shiftKey || e.button === 1 || e.button === 2, wc: vp.wc, ww: vp.ww, px: vp.panX, py: vp.panY };
      vp.canvas.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    vp.canvas.addEventListener("pointermove", function (e) {
      if (!drag || !vp.frame) { return; }
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      if (drag.pan) {
        vp.panX = drag.px + dx; vp.panY = drag.py + dy;
        vp.schedule(false);
      } else {
        const range = Math.max(vp.frame.hi - vp.frame.lo, 1);
        const step = range / 600;
        vp.ww = Math.max(1, drag.ww + dx * step * 2);
        vp.wc = drag.wc - dy * step;
        presetSel.value = "default";
        vp.schedule(true);
      }
    });
    function end(e) { if (drag) { drag = null; try { vp.canvas.releasePointerCapture(e.pointerId); } catch (_) { /* already released */ } } }
    vp.canvas.addEventListener("pointerup", end);
    vp.canvas.addEventListener("pointercancel", end);
    vp.canvas.addEventListener("contextmenu", function (e) { e.preventDefault(); });
    vp.canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      setActive(vp);
      if (e.ctrlKey || e.metaKey || viewports.length > 1) {
        vp.setZoom(vp.zoom * (e.deltaY < 0 ? 1.15 : 1 / 1.15));
      } else {
        stepSlice(e.deltaY > 0 ? 1 : -1);
      }
    }, { passive: false });
    vp.canvas.addEventListener("dblclick", function () {
      if (viewports.length > 1) { setLayout(false, allItems.indexOf(vp.item)); }
    });
  };

  Viewport.prototype.setZoom = function (z) {
    this.zoom = Math.min(20, Math.max(0.2, z));
    this.draw();
  };

  Viewport.prototype.schedule = function (rewindow) {
    const vp = this;
    vp.rewindow = vp.rewindow || rewindow;
    if (vp.pending) { return; }
    vp.pending = true;
    requestAnimationFrame(function () {
      vp.pending = false;
      if (vp.rewindow) { vp.windowImage(); vp.rewindow = false; }
      vp.draw();
    });
  };

  function describe(item) {
    const s = series.find(function (x) { return x.items.indexOf(item) >= 0; });
    const parts = [];
    if (s) { parts.push(s.info.modality, s.info.description); }
    if (item.label && !(s && (s.info.description || "").indexOf(item.label) >= 0)) { parts.push(item.label); }
    if (item.frames > 1) { parts.push("frame " + (item.frame + 1)); }
    return parts.filter(Boolean).join(" · ");
  }

  function setActive(vp) {
    active = vp;
    viewports.forEach(function (v) { v.el.classList.toggle("is-active", v === vp); });
    updateReadouts();
  }

  function updateReadouts() {
    if (!active) { return; }
    wlReadout.textContent = active.frame ? "W " + Math.round(active.ww) + " / L " + Math.round(active.wc) : "";
    const s = series[currentSeries];
    if (viewports.length === 1 && s) {
      const i = s.items.indexOf(active.item);
      sliceReadout.textContent = s.items.length > 1 ? "Image " + (i + 1) + " / " + s.items.length : "";
      slider.max = String(s.items.length);
      slider.value = String(i + 1);
      slider.classList.toggle("is-hidden", s.items.length < 2);
    } else {
      sliceReadout.textContent = "";
      slider.classList.add("is-hidden");
    }
  }

  function stepSlice(delta) {
    const s = series[currentSeries];
    if (!s || viewports.length !== 1) { return; }
    const i = s.items.indexOf(viewports[0].item);
    const next = Math.min(s.items.length - 1, Math.max(0, i + delta));
    if (next !== i) { showSlice(next); }
  }

  function showSlice(i) {
    const vp = viewports[0];
    vp.show(series[currentSeries].items[i], true);
    updateReadouts();
    // fetch the neighbours ahead of the scroll
    [i + 1, i + 2, i - 1].forEach(function (j) {
      const it = series[currentSeries].items[j];
      if (it) { loadFrame(it); }
    });
  }

  // mammography reads right breast on the left of the screen: R CC | L CC over R MLO | L MLO
  function hangingOrder(items) {
    if (data.study_type !== "mmg") { return items; }
    function key(it) {
      const label = it.label || "";
      return (label.indexOf("MLO") >= 0 ? 2 : 0) + (label.charAt(0) === "L" ? 1 : 0);
    }
    return items.slice().sort(function (a, b) { return key(a) - key(b); });
  }

  function setLayout(grid, focus) {
    viewportsEl.textContent = "";
    const n = grid ? Math.min(4, allItems.length) : 1;
    viewports = [];
    for (let i = 0; i < n; i++) {
      const vp = new Viewport(i);
      viewportsEl.appendChild(vp.el);
      viewports.push(vp);
    }
    viewportsEl.className = "viewports " + (grid ? "grid-2" : "grid-1");
    layoutBtn.setAttribute("aria-pressed", grid ? "true" : "false");
    layoutBtn.textContent = grid ? "Single image" : "Grid 2×2";
    if (grid) {
      const hung = hangingOrder(allItems);
      viewports.forEach(function (vp, i) { vp.show(hung[i]); });
    } else {
      const item = allItems[focus || 0];
      currentSeries = Math.max(0, series.findIndex(function (s) { return s.items.indexOf(item) >= 0; }));
      if (item) { viewports[0].show(item); }
    }
    setActive(viewports[0]);
    renderSeriesList();
  }

  function renderSeriesList() {
    seriesList.textContent = "";
    series.forEach(function (s, i) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.className = i === currentSeries && viewports.length === 1 ? "is-current" : "";
      const title = document.createElement("span");
      title.textContent = (s.info.series_number !== null ? s.info.series_number + " · " : "") +
        (s.info.description || s.info.modality || "Series");
      const n = document.createElement("span");
      n.className = "n";
      n.textContent = s.items.length + (s.items.length === 1 ? " image" : " images");
      b.appendChild(title);
      b.appendChild(n);
      b.addEventListener("click", function () {
        currentSeries = i;
        if (viewports.length !== 1) { setLayout(false, allItems.indexOf(s.items[0])); return; }
        const mid = s.items.length > 2 ? Math.floor(s.items.length / 2) : 0;
        showSlice(mid);
        renderSeriesList();
      });
      li.appendChild(b);
      seriesList.appendChild(li);
    });
  }

  presetSel.addEventListener("change", function () {
    viewports.forEach(function (vp) {
      if (!vp.frame) { return; }
      const v = presetSel.value;
      if (v === "default") { vp.wc = vp.frame.wc; vp.ww = vp.frame.ww; }
      else if (v === "auto") { vp.wc = (vp.frame.lo + vp.frame.hi) / 2; vp.ww = Math.max(1, vp.frame.hi - vp.frame.lo); }
      else { const p = v.split(","); vp.wc = parseFloat(p[0]); vp.ww = parseFloat(p[1]); }
      vp.schedule(true);
    });
  });
  marksBtn.addEventListener("click", function () {
    showMarks = !showMarks;
    marksBtn.setAttribute("aria-pressed", showMarks ? "true" : "false");
    marksBtn.textContent = showMarks ? "AI marks: on" : "AI marks: off";
    marksBtn.classList.toggle("is-on", showMarks);
    viewports.forEach(function (vp) { vp.draw(); });
  });
  document.getElementById("zoom-in").addEventListener("click", function () { if (active) { active.setZoom(active.zoom * 1.25); } });
  document.getElementById("zoom-out").addEventListener("click", function () { if (active) { active.setZoom(active.zoom / 1.25); } });
  document.getElementById("reset-view").addEventListener("click", function () {
    viewports.forEach(function (vp) { vp.zoom = 1; vp.panX = 0; vp.panY = 0; vp.draw(); });
  });
  layoutBtn.addEventListener("click", function () {
    setLayout(viewports.length === 1 && allItems.length > 1, active ? allItems.indexOf(active.item) : 0);
  });
  slider.addEventListener("input", function () { showSlice(parseInt(slider.value, 10) - 1); });
  document.addEventListener("keydown", function (e) {
    const tag = (e.target && e.target.tagName) || "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") { return; }
    if (e.key === "ArrowDown" || e.key === "ArrowRight" || e.key === "PageDown") { stepSlice(1); e.preventDefault(); }
    if (e.key === "ArrowUp" || e.key === "ArrowLeft" || e.key === "PageUp") { stepSlice(-1); e.preventDefault(); }
    if (e.key === "m") { marksBtn.click(); }
  });
  window.addEventListener("resize", function () { viewports.forEach(function (vp) { vp.draw(); }); });

  if (!allItems.length) {
    viewportsEl.className = "viewports grid-1";
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "This study has no images.";
    viewportsEl.appendChild(p);
    return;
  }
  // mammography opens as the four views side by side; everything else one image at a time
  setLayout(data.study_type === "mmg" && allItems.length > 1, 0);
  if (viewports.length === 1 && series[0].items.length > 2) {
    showSlice(Math.floor(series[0].items.length / 2));
  }
})();
