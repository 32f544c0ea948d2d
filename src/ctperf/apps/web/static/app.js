/* ctperf web app (research use only).  Plain JavaScript; the viewer is NiiVue (bundled, window.niivue). */
"use strict";

const $ = (id) => document.getElementById(id);
const state = { result: null, nv: null, mapNames: [], tuneTimer: null, tuneSeq: 0, nz: 1 };

const MAP_STYLE = {  // colour map and display range per map (units come from the server)
  cbf: { cmap: "inferno", min: 0, max: 80, label: "CBF" },
  cbv: { cmap: "inferno", min: 0, max: 8, label: "CBV" },
  mtt: { cmap: "viridis", min: 0, max: 16, label: "MTT" },
  tmax: { cmap: "jet", min: 0, max: 14, label: "Tmax" },
  rcbf: { cmap: "plasma", min: 0, max: 1.5, label: "rCBF" },
};

async function api(path, opts = {}) {
  const headers = { "X-CTPerf": "1", ...(opts.headers || {}) };
  const r = await fetch(path, { credentials: "same-origin", ...opts, headers });
  const isJson = (r.headers.get("content-type") || "").includes("json");
  const body = isJson ? await r.json() : await r.text();
  if (!r.ok) throw new Error((body && body.detail) || r.statusText);
  return body;
}

function fmt(v, digits = 1) {
  if (v === null || v === undefined) return "n/a";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  return String(v);
}

function showError(el, err) { el.textContent = String(err.message || err); el.classList.add("error"); }

// ------------------------------------------------------------------------------------------------ run panel
async function browse(path) {
  const box = $("browser");
  box.hidden = false;
  const data = await api("/api/browse" + (path ? "?path=" + encodeURIComponent(path) : ""));
  box.innerHTML = "";
  const add = (text, target) => {
    const d = document.createElement("div");
    d.textContent = text;
    d.onclick = () => { $("study-path").value = target; browse(target).catch((e) => showError($("progress-text"), e)); };
    box.appendChild(d);
  };
  if (data.path === null) { data.dirs.forEach((p) => add("📁 " + p, p)); return; }
  if (data.parent) add("⬆ ..", data.parent);
  data.dirs.forEach((name) => add("📁 " + name, data.path + "/" + name));
  const info = document.createElement("div");
  info.textContent = `${data.n_files} files in this folder`;
  box.appendChild(info);
}

async function loadDemo() {
  $("progress-text").classList.remove("error");
  $("progress-text").textContent = "writing the demo phantom study…";
  const r = await api("/api/demo-study", { method: "POST" });
  $("study-path").value = r.path;
  state.upload = null;
  $("progress-text").textContent = "demo study ready: press Run Mode A";
}

async function uploadZip(file) {
  $("upload-status").textContent = `uploading ${(file.size / 1e6).toFixed(1)} MB…`;
  const r = await api("/api/uploads", { method: "PUT", body: file, headers: { "Content-Type": "application/zip" } });
  state.upload = r.upload;
  $("study-path").value = "";
  $("upload-status").textContent = `uploaded (${r.n_files} files): press Run Mode A`;
}

function followJob(job) {
  return new Promise((resolve, reject) => {
    const prog = $("progress"), text = $("progress-text"), logEl = $("progress-log");
    prog.hidden = false; prog.removeAttribute("value"); logEl.innerHTML = ""; text.classList.remove("error");
    const es = new EventSource(`/api/jobs/${job.id}/events`);
    let lastStage = null;
    es.onmessage = (m) => {
      const ev = JSON.parse(m.data);
      if (ev.total) { prog.max = ev.total; prog.value = ev.done; } else if (ev.stage !== lastStage) { prog.removeAttribute("value"); }
      text.textContent = ev.total ? `${ev.stage} ${ev.done}/${ev.total}` : `${ev.stage} (${ev.t} s)`;
      if (ev.stage !== lastStage) {
        const li = document.createElement("li"); li.textContent = `${ev.t.toFixed(1)} s  ${ev.stage}`; logEl.appendChild(li);
        lastStage = ev.stage;
      }
      if (ev.status === "done" && ev.result) { es.close(); prog.max = 1; prog.value = 1; resolve(ev.result); }
      if (ev.status === "error") { es.close(); prog.hidden = true; showError(text, ev.error); reject(new Error(ev.error)); }
    };
    es.onerror = () => { /* the browser reconnects; the server replays the whole event log */ };
  });
}

async function runModeA() {
  const body = state.upload ? { upload: state.upload } : { path: $("study-path").value.trim() };
  $("run-btn").disabled = true;
  try {
    const job = await api("/api/jobs/mode-a", { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });
    const res = await followJob(job);
    $("progress-text").textContent = `done: hypoperfusion ${fmt(res.hypoperfusion_ml)} mL, core ${fmt(res.core_ml)} mL`;
    await refreshResults();
    await openResult(res.result_id);
  } catch (e) { showError($("progress-text"), e); } finally { $("run-btn").disabled = false; }
}

async function runModeB(ev) {
  ev.preventDefault();
  $("run-b-btn").disabled = true;
  try {
    const job = await api("/api/jobs/mode-b", { method: "POST", body: new FormData($("modeb-form")) });
    const res = await followJob(job);
    $("progress-text").textContent = `Mode B done: hypoperfusion ${fmt(res.hypoperfusion_ml)} mL, core ${fmt(res.core_ml)} mL`;
    await refreshResults();
    await openResult(res.result_id);
  } catch (e) { showError($("progress-text"), e); } finally { $("run-b-btn").disabled = false; }
}

// ---------------------------------------------------------------------------------------------- results list
async function refreshResults() {
  const rows = await api("/api/results");
  const tb = $("results-table").querySelector("tbody");
  tb.innerHTML = "";
  for (const r of rows) {
    const tr = document.createElement("tr");
    const cells = [r.name, r.mode, `${fmt(r.hypoperfusion_ml)} mL`, `${fmt(r.core_ml)} mL`, r.qa_flags.length ? "⚠ " + r.qa_flags.join(", ") : "ok"];
    cells.forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    const td = document.createElement("td");
    const b = document.createElement("button"); b.textContent = "Open"; b.onclick = () => openResult(r.id);
    td.appendChild(b); tr.appendChild(td);
    tb.appendChild(tr);
  }
}

// -------------------------------------------------------------------------------------------------- viewer
async function ensureViewer() {
  if (state.nv) return state.nv;
  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1], isColorbar: true, isRadiologicalConvention: true, isOrientationTextVisible: false,
    show3Dcrosshair: false, crosshairColor: [1, 1, 0, 0.35], crosshairWidth: 1, dragAndDropEnabled: false,
  });
  await nv.attachToCanvas($("gl"));
  nv.setSliceType(nv.sliceTypeAxial);
  nv.setRadiologicalConvention(true);  // patient left on the image right, as on the scanner console
  nv.setCrosshairWidth(1);
  nv.setInterpolation(true);  // nearest neighbour: masks stay binary, map voxels are shown as computed
  nv.setCrosshairColor([1, 1, 0, 0.45]);
  nv.onLocationChange = (loc) => {
    if (loc && loc.vox) { $("slice").value = loc.vox[2]; $("slice-text").textContent = `${loc.vox[2] + 1} / ${state.nz}`; }
  };
  state.nv = nv;
  return nv;
}

function volumeUrl(name) { return `/api/results/${encodeURIComponent(state.result.id)}/volume/${name}.nii.gz`; }

function tuneQuery() { return `tmax_s=${$("tmax-slider").value}&rcbf=${$("rcbf-slider").value}`; }

function maskVolumes(tuned) {
  const rid = encodeURIComponent(state.result.id);
  const url = (m) => tuned ? `/api/results/${rid}/tune/${m}.nii.gz?${tuneQuery()}` : volumeUrl(m);
  return [
    { url: url("penumbra"), name: "penumbra.nii.gz", colormap: "green", opacity: 0.55, cal_min: 0.5, cal_max: 1, colorbarVisible: false },
    { url: url("core"), name: "core.nii.gz", colormap: "red", opacity: 0.7, cal_min: 0.5, cal_max: 1, colorbarVisible: false },
  ];
}

async function showVolumes() {
  const nv = await ensureViewer();
  const sel = document.querySelector("input[name=map]:checked").value;
  const vols = [{ url: volumeUrl("baseline"), name: "baseline.nii.gz", colormap: "gray", cal_min: 0, cal_max: 80, colorbarVisible: false }];
  if (sel !== "lesions") {
    const st = MAP_STYLE[sel];
    vols.push({ url: volumeUrl(sel), name: sel + ".nii.gz", colormap: st.cmap, cal_min: st.min, cal_max: st.max, opacity: 1, colorbarVisible: true });
    $("map-label").textContent = `${st.label} [${state.result.maps[sel].unit}] (colour bar below the image)`;
    $("legend").innerHTML = "";
  } else {
    vols.push(...maskVolumes(state.tuned));
    $("map-label").textContent = "Baseline CT with lesion overlays";
    $("legend").innerHTML = '<span><i class="sw" style="background:#f00"></i>core</span><span><i class="sw" style="background:#0c0"></i>penumbra</span>';
  }
  if ($("curve-voxels-box").checked) {
    vols.push({ url: `/api/results/${encodeURIComponent(state.result.id)}/curve-voxels.nii.gz`, name: "curves.nii.gz",
                colormap: "warm", cal_min: 0.5, cal_max: 2, opacity: 1, colorbarVisible: false });
  }
  const keep = nv.scene.crosshairPos ? [...nv.scene.crosshairPos] : null;
  await nv.loadVolumes(vols);
  nv.opts.isColorbar = sel !== "lesions";
  const dims = nv.volumes[0].dims;  // [ndim, x, y, z]
  state.nz = dims[3];
  $("slice").max = state.nz - 1;
  if (keep && state.keepCrosshair) nv.scene.crosshairPos = keep;
  state.keepCrosshair = true;
  nv.drawScene();
  const z = Math.round(nv.frac2vox(nv.scene.crosshairPos)[2]);
  $("slice").value = z; $("slice-text").textContent = `${z + 1} / ${state.nz}`;
  document.body.dataset.viewer = "ready";
}

function gotoVoxel(xyz) {
  const nv = state.nv;
  nv.scene.crosshairPos = nv.vox2frac(xyz);
  nv.drawScene();
  $("slice").value = xyz[2]; $("slice-text").textContent = `${xyz[2] + 1} / ${state.nz}`;
}

function setSlice(z) {
  const nv = state.nv;
  const vox = nv.frac2vox(nv.scene.crosshairPos);
  gotoVoxel([vox[0], vox[1], Number(z)]);
}

function drawCurves(curves) {
  const c = $("curves"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const series = [["AIF", curves.aif, "#d62728"], ["VOF", curves.vof, "#1f5fbf"]].filter((s) => s[1]);
  if (!series.length) return;
  const pad = { l: 44, r: 10, t: 10, b: 30 };
  const xs = series.flatMap((s) => s[1].time_s), ys = series.flatMap((s) => s[1].delta_hu);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...ys), y1 = Math.max(...ys) * 1.05;
  const X = (x) => pad.l + (x - x0) / (x1 - x0 || 1) * (c.width - pad.l - pad.r);
  const Y = (y) => c.height - pad.b - (y - y0) / (y1 - y0 || 1) * (c.height - pad.t - pad.b);
  g.strokeStyle = "#888"; g.fillStyle = "#333"; g.font = "11px sans-serif"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(pad.l, pad.t); g.lineTo(pad.l, c.height - pad.b); g.lineTo(c.width - pad.r, c.height - pad.b); g.stroke();
  for (let i = 0; i <= 4; i++) {
    const yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
    g.fillText(yv.toFixed(0), 4, Y(yv) + 4); g.fillText(xv.toFixed(0), X(xv) - 6, c.height - pad.b + 14);
  }
  g.fillText("time (s)", c.width / 2 - 20, c.height - 3); g.fillText("ΔHU", pad.l + 4, pad.t + 4);
  series.forEach(([name, s, col], k) => {
    g.strokeStyle = col; g.lineWidth = 2; g.beginPath();
    s.time_s.forEach((t, i) => { const px = X(t), py = Y(s.delta_hu[i]); i ? g.lineTo(px, py) : g.moveTo(px, py); });
    g.stroke(); g.fillStyle = col; g.fillText(name, c.width - 50, 20 + 14 * k);
  });
  const tb = $("voxels").querySelector("tbody");
  tb.innerHTML = "";
  series.forEach(([name, s]) => (s.voxels_zyx || []).forEach((zyx) => {
    const xyz = [zyx[2], zyx[1], zyx[0]];
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${name}</td><td>${xyz.join(", ")}</td>`;
    const td = document.createElement("td"), b = document.createElement("button");
    b.textContent = "show"; b.onclick = () => gotoVoxel(xyz); td.appendChild(b); tr.appendChild(td); tb.appendChild(tr);
  }));
}

function fillMetrics(rows) {
  const tb = $("metrics-table").querySelector("tbody");
  tb.innerHTML = "";
  for (const r of rows) {
    const tr = document.createElement("tr");
    [r.key, r.value === null ? `n/a (${r.reason || "undefined"})` : fmt(r.value, 2), r.unit === "1" ? "" : r.unit]
      .forEach((c) => { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); });
    tb.appendChild(tr);
  }
}

function setVolumes(v) {
  $("vol-hypo").textContent = fmt(v.hypoperfusion_ml); $("vol-core").textContent = fmt(v.core_ml); $("vol-pen").textContent = fmt(v.penumbra_ml);
}

function fillDownloads(r) {
  const ul = $("downloads"); ul.innerHTML = "";
  const rid = encodeURIComponent(r.id);
  const add = (href, text) => { const li = document.createElement("li"), a = document.createElement("a"); a.href = href; a.textContent = text; a.download = ""; li.appendChild(a); ul.appendChild(li); };
  add(`/api/results/${rid}/archive.zip`, "everything (zip)");
  const order = (f) => (f.endsWith(".pdf") ? 0 : f.startsWith("metrics") ? 1 : f.endsWith(".nii.gz") && !f.includes("/") ? 2 : f.startsWith("dicom") ? 3 : 4);
  [...r.files].sort((a, b) => order(a) - order(b) || a.localeCompare(b))
    .filter((f) => !f.startsWith("aux/")).forEach((f) => add(`/api/results/${rid}/files/${f.split("/").map(encodeURIComponent).join("/")}`, f));
}

async function openResult(rid) {
  const r = await api(`/api/results/${encodeURIComponent(rid)}`);
  state.result = r; state.tuned = false; state.keepCrosshair = false;
  $("viewer-panel").hidden = false;
  $("viewer-title").textContent = `Result ${r.name} (Mode ${r.mode})`;
  const qa = $("qa-banner");
  qa.className = "qa " + (r.qa_flags.length ? "bad" : "ok");
  qa.textContent = r.qa_flags.length ? "⚠ QA flags: " + r.qa_flags.join(", ") + " - check the images before using these numbers"
                                     : "No QA flags raised";
  fillMetrics(r.table);
  fillDownloads(r);
  setVolumes(r.metrics);
  const t = r.thresholds || {};
  if (t.tmax_hypoperfusion_s !== undefined) $("tmax-slider").value = t.tmax_hypoperfusion_s;
  if (t.rcbf_core !== undefined) $("rcbf-slider").value = t.rcbf_core;
  sliderLabels();
  const isA = r.mode === "A";
  document.querySelectorAll(".viewer-grid, #map-select").forEach((el) => (el.hidden = !isA));
  if (isA) { drawCurves(r.curves); await showVolumes(); }
  $("viewer-panel").scrollIntoView({ behavior: "instant", block: "start" });
}

function sliderLabels() {
  $("tmax-value").textContent = `${Number($("tmax-slider").value).toFixed(1)} s`;
  $("rcbf-value").textContent = `${Math.round(Number($("rcbf-slider").value) * 100)} %`;
}

function onThresholdInput() {
  sliderLabels();
  clearTimeout(state.tuneTimer);
  state.tuneTimer = setTimeout(retune, 150);
}

async function retune() {
  const seq = ++state.tuneSeq;
  const rid = encodeURIComponent(state.result.id);
  const t = await api(`/api/results/${rid}/tune?${tuneQuery()}`);
  if (seq !== state.tuneSeq) return;  // a newer slider position is on its way
  state.tuned = true;
  setVolumes(t); fillMetrics(t.table);
  document.body.dataset.tuned = `${t.tmax_s}/${t.rcbf}`;
  if (document.querySelector("input[name=map]:checked").value === "lesions" && state.nv) await showVolumes();
}

async function applyThresholds() {
  $("apply-status").textContent = "recomputing…";
  try {
    const r = await api(`/api/results/${encodeURIComponent(state.result.id)}/apply`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ tmax_s: Number($("tmax-slider").value), rcbf: Number($("rcbf-slider").value) }) });
    state.result = r; state.tuned = false;
    fillMetrics(r.table); setVolumes(r.metrics); fillDownloads(r);
    $("apply-status").textContent = "saved: masks, metrics, figures and PDF rewritten";
    refreshResults();
  } catch (e) { showError($("apply-status"), e); }
}

// --------------------------------------------------------------------------------------------------- start
async function main() {
  const cfg = await api("/api/config");
  $("version").textContent = cfg.version;
  $("disclaimer").textContent = cfg.disclaimer;
  $("browse-btn").onclick = () => browse($("study-path").value.trim() || null).catch((e) => showError($("progress-text"), e));
  $("demo-btn").onclick = () => loadDemo().catch((e) => showError($("progress-text"), e));
  $("zip-input").onchange = (e) => e.target.files[0] && uploadZip(e.target.files[0]).catch((err) => showError($("upload-status"), err));
  $("study-path").oninput = () => { state.upload = null; };
  $("run-btn").onclick = runModeA;
  $("modeb-form").onsubmit = runModeB;
  $("refresh-btn").onclick = refreshResults;
  $("open-btn").onclick = async () => {
    try { const r = await api("/api/results/open", { method: "POST", body: JSON.stringify({ path: $("open-path").value.trim() }), headers: { "Content-Type": "application/json" } });
      await refreshResults(); await openResult(r.id); } catch (e) { alert(e.message); }
  };
  document.querySelectorAll("input[name=map]").forEach((el) => (el.onchange = showVolumes));
  $("curve-voxels-box").onchange = showVolumes;
  $("slice").oninput = (e) => setSlice(e.target.value);
  $("tmax-slider").oninput = onThresholdInput;
  $("rcbf-slider").oninput = onThresholdInput;
  $("apply-btn").onclick = applyThresholds;
  await refreshResults();
  if (location.search.includes("token=")) history.replaceState(null, "", "/");  // keep the token out of the address bar
}

main().catch((e) => { document.body.dataset.error = e.message; console.error(e); });
