// The studio's browser app: datasets, runs and models (live curves), and generation.
"use strict";

const $ = id => document.getElementById(id);
const api = async path => {
  const r = await fetch(path);
  if (!r.ok) throw new Error((await r.json().catch(() => ({}))).detail || r.statusText);
  return r.json();
};
const fmt = (v, d = 3) => (v === null || v === undefined) ? "–" : (typeof v === "number" ? v.toFixed(d) : v);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) (k in e) ? (e[k] = v) : e.setAttribute(k, v);
  e.append(...kids);
  return e;
};
window.studio = { charts: {}, streams: {} };

// --- pages ------------------------------------------------------------------------------------------------
function show() {
  const page = (location.hash || "#datasets").slice(1);
  for (const p of document.querySelectorAll(".page")) p.classList.toggle("active", p.id === "page-" + page);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.id === "nav-" + page);
}
window.addEventListener("hashchange", show);

// --- datasets ---------------------------------------------------------------------------------------------
async function playSpan(datasetId, trackId, start, seconds, label) {
  const url = `/api/datasets/${datasetId}/tracks/${encodeURIComponent(trackId)}/audio.wav?start=${start}&seconds=${seconds}`;
  const audio = $("ds-audio");
  audio.src = url;
  $("ds-now").textContent = label;
  audio.play().catch(() => {});
  const buf = await (await fetch(url)).arrayBuffer();
  window.studio.spectrogramColumns = drawSpectrogram($("ds-spectrogram"), wavSamples(buf));
}

async function loadDataset(id) {
  const d = await api(`/api/datasets/${id}`);
  $("ds-summary").textContent = `${d.tracks.length} tracks, ${fmt(d.seconds, 1)} s at ${d.sample_rate} Hz, ` +
    `${d.set_aside.length} set aside`;
  const body = $("ds-tracks").querySelector("tbody");
  body.replaceChildren(...d.tracks.map(t => el("tr", {},
    el("td", {}, t.id), el("td", {}, t.title || ""), el("td", {}, t.artist || ""), el("td", {}, t.genre || ""),
    el("td", {}, t.licence || ""), el("td", {}, fmt(t.duration_s, 1)), el("td", {}, t.split || ""),
    el("td", {}, el("button", { className: "play", onclick: () =>
      playSpan(id, t.id, 0, Math.min(t.duration_s || 10, 30), `${t.title || t.id} — ${t.artist || ""}`) }, "play")))));
  $("ds-errors").replaceChildren(...d.set_aside.map(e => el("li", {}, `${e.file || e.id}: ${e.reason}`,
    e.detail ? ` (${e.detail})` : "")));
}

async function initDatasets() {
  const list = await api("/api/datasets");
  $("ds-select").replaceChildren(...list.map(d => el("option", { value: d.id }, d.name)));
  $("ds-select").onchange = () => loadDataset($("ds-select").value);
  if (list.length) await loadDataset(list[0].id);
}

// --- runs and models --------------------------------------------------------------------------------------
function chart(slot, target, rows) {
  const data = [[], [], []];
  const push = r => { data[0].push(r.step); data[1].push(r.loss ?? null); data[2].push(r.val_loss ?? null); };
  rows.forEach(push);
  const plot = new uPlot({
    width: 520, height: 260, title: "loss (nats per sample)",
    scales: { x: { time: false } },
    series: [{ label: "step" }, { label: "loss", stroke: "#1f77b4" },
             { label: "val_loss", stroke: "#d62728", spanGaps: true, points: { show: true } }],
  }, data, target);
  window.studio.charts[slot] = { plot, data };
  return row => { push(row); plot.setData(data); };
}

async function loadModel(slot, id) {
  const card = $("card-" + slot);
  if (window.studio.streams[slot]) { window.studio.streams[slot].close(); delete window.studio.streams[slot]; }
  delete window.studio.charts[slot];
  if (!id) { card.replaceChildren(); return; }
  const m = await api(`/api/models/${id}`);
  const rows = await api(`/api/models/${id}/metrics`);
  const t = m.training, ev = m.evaluation;
  const numbers = el("table", { className: "numbers" },
    el("tr", {}, el("td", {}, "status"), el("td", {}, m.status)),
    el("tr", {}, el("td", {}, "preset"), el("td", {}, m.preset || "–")),
    el("tr", {}, el("td", {}, "fine-tuned from"), el("td", { className: "parent" }, m.parent
      ? `${m.parent.path} (${fmt(m.parent.steps, 0)} steps on ${m.parent.dataset})` : "–")),
    el("tr", {}, el("td", {}, "steps"), el("td", { className: "steps" }, fmt(t.step, 0))),
    el("tr", {}, el("td", {}, "last loss"), el("td", {}, fmt(t.loss))),
    el("tr", {}, el("td", {}, "best val loss"), el("td", {}, fmt(t.best_val_loss))),
    el("tr", {}, el("td", {}, "val bits/sample (probe batches)"),
      el("td", { className: "val-probe-bits" }, fmt(t.best_val_probe_bits_per_sample))));
  const plotBox = el("div", { className: "chart" });
  const kids = [el("h3", {}, m.name), numbers, plotBox];
  if (ev) {
    kids.push(el("h4", {}, "Evaluation"), el("table", { className: "numbers evaluation" },
      el("tr", {}, el("td", {}, "val split bits/sample"),
        el("td", { className: "val-split-bits" }, fmt(ev.val_split_bits_per_sample))),
      el("tr", {}, el("td", {}, "FD mel: generated / halves / noise"),
        el("td", {}, `${fmt(ev.fd_mel?.generated, 2)} / ${fmt(ev.fd_mel?.halves, 2)} / ${fmt(ev.fd_mel?.noise, 2)}`)),
      el("tr", {}, el("td", {}, "memorised seconds"), el("td", {}, fmt(ev.memorisation?.match_fraction, 2)))));
    const secs = ev.memorisation?.seconds || [];
    kids.push(el("table", { className: "memorisation" },
      el("tr", {}, ...["clip", "second", "nearest training track", "licence", "offset s", "similarity", ""]
        .map(h => el("th", {}, h))),
      ...secs.map(s => el("tr", { className: s.match ? "match" : "" }, el("td", {}, s.clip), el("td", {}, s.second),
        el("td", {}, `${s.title || s.track_id} — ${s.artist || ""}`), el("td", {}, s.licence || ""),
        el("td", {}, fmt(s.offset_s, 2)), el("td", {}, fmt(s.similarity, 3)),
        el("td", {}, m.dataset ? el("button", { className: "play-training", onclick: () => {
          const a = card.querySelector("audio.training");
          a.src = `/api/datasets/${m.dataset}/tracks/${encodeURIComponent(s.track_id)}/audio.wav?start=${s.offset_s}&seconds=1`;
          a.play().catch(() => {});
        } }, "play training span") : "")))),
      el("audio", { className: "training", controls: true }));
  }
  if (m.previews.length) {
    kids.push(el("h4", {}, "Previews"), ...m.previews.map(p => el("div", {}, p,
      el("audio", { controls: true, preload: "none", src: `/api/models/${id}/previews/${encodeURIComponent(p)}` }))));
  }
  card.replaceChildren(...kids);
  const add = chart(slot, plotBox, rows);
  const es = new EventSource(`/api/models/${id}/metrics/stream?after=${rows.length}`);
  es.onmessage = e => { const row = JSON.parse(e.data); add(row);
    card.querySelector(".steps").textContent = fmt(row.step, 0); };
  window.studio.streams[slot] = es;
}

async function initModels(models) {
  const opts = () => models.map(m => el("option", { value: m.id }, `${m.name} (${m.status})`));
  $("m-select-a").replaceChildren(...opts());
  $("m-select-b").replaceChildren(el("option", { value: "" }, "(none)"), ...opts());
  $("m-select-a").onchange = () => loadModel("a", $("m-select-a").value);
  $("m-select-b").onchange = () => loadModel("b", $("m-select-b").value);
  if (models.length) await loadModel("a", models[0].id);
}

// --- generate ---------------------------------------------------------------------------------------------
let primeId = "", live = null;

function genQuery() {
  const q = new URLSearchParams({ seconds: $("g-seconds").value, temperature: $("g-temperature").value,
                                  top_p: $("g-top-p").value, seed: $("g-seed").value });
  if ($("g-genre").value) q.set("genre", $("g-genre").value);
  if (primeId) q.set("prime", primeId);
  return q.toString();
}

function liveSpectrogram(audio, canvas) {
  // A scrolling spectrogram of what the <audio> element plays, from an AnalyserNode.
  if (!live) {
    const ctx = new AudioContext();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    ctx.createMediaElementSource(audio).connect(analyser);
    analyser.connect(ctx.destination);
    live = { ctx, analyser, bins: new Float32Array(analyser.frequencyBinCount) };
  }
  live.ctx.resume();
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const step = () => {
    if (audio.paused || audio.ended) return;
    live.analyser.getFloatFrequencyData(live.bins);
    g.drawImage(canvas, -1, 0);
    for (let y = 0; y < h; y++) {
      const v = Math.max(0, Math.min(1, (live.bins[Math.floor((h - 1 - y) / h * live.bins.length)] + 100) / 80));
      g.fillStyle = `rgb(${255 * Math.min(1, 2 * v)},${255 * Math.max(0, 2 * v - 1)},${80 * v})`;
      g.fillRect(w - 1, y, 1, 1);
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

async function generate(ev) {
  ev.preventDefault();
  const model = $("g-model").value, q = genQuery(), url = `/api/models/${model}/generate.wav?${q}`;
  const audio = $("g-audio"), status = $("g-status");
  status.className = "status"; status.textContent = "generating…";
  const started = performance.now();
  audio.src = url;
  audio.onplaying = () => { status.textContent = `playing while generating (first sound after ` +
    `${((performance.now() - started) / 1000).toFixed(2)} s)`; liveSpectrogram(audio, $("g-spectrogram")); };
  audio.onerror = async () => {
    const r = await fetch(url); status.className = "status error";
    status.textContent = (await r.json().catch(() => ({}))).detail || `error ${r.status}`;
  };
  audio.onended = async () => {
    status.textContent = "done";
    const buf = await (await fetch(url)).arrayBuffer();  // served from the server's cache of finished runs
    const samples = wavSamples(buf);
    drawWaveform($("g-waveform"), samples);
    drawSpectrogram($("g-spectrogram"), samples);
  };
  audio.play().catch(() => {});
  for (const [id, href] of [["g-download-wav", url + "&download=1"], ["g-download-json", `/api/models/${model}/generate.json?${q}`]]) {
    $(id).href = href; $(id).download = ""; $(id).classList.remove("hidden");
  }
}

async function uploadPrime() {
  const file = $("g-prime-file").files[0], box = $("g-prime-status");
  primeId = "";
  if (!file) { box.textContent = ""; return; }
  box.className = "status"; box.textContent = `uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file);
  const r = await fetch(`/api/primes?model=${$("g-model").value}`, { method: "POST", body: form });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { box.className = "status error"; box.textContent = `prime refused: ${body.detail || r.statusText}`; return; }
  primeId = body.id;
  box.textContent = `prime: ${body.filename}, ${body.seconds} s`;
}

function initGenerate(models, sampling) {
  $("g-temperature").value = sampling.temperature;
  $("g-top-p").value = sampling.top_p;
  const trained = models.filter(m => m.status === "trained");
  $("g-model").replaceChildren(...trained.map(m => el("option", { value: m.id }, m.name)));
  const genres = () => {
    const m = trained.find(x => x.id === $("g-model").value);
    $("g-genre").replaceChildren(el("option", { value: "" }, "(none)"),
      ...(m?.genres || []).map(g => el("option", { value: g }, g)));
  };
  $("g-model").onchange = () => { genres(); primeId = ""; $("g-prime-status").textContent = ""; };
  genres();
  $("g-prime-file").onchange = uploadPrime;
  $("gen-form").onsubmit = generate;
}

(async () => {
  show();
  const [models, sampling] = await Promise.all([api("/api/models"), api("/api/sampling")]);
  initGenerate(models, sampling);
  await Promise.all([initDatasets(), initModels(models)]);
  document.body.dataset.ready = "1";
})();
