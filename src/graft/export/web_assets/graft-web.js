// graft's web export: the model runs in this page with onnxruntime-web (vendored in ort/),
// no server. Works from file:// too: the model and the runtime's wasm come from <script> files.
// Prediction display mirrors graft serve's page (top-k bars, "unknown" over the OOD threshold).
"use strict";
const CFG = window.GRAFT_CONFIG;
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const b64bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const BITMAP_OPTIONS = { colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image" };
let session = null;

async function load() {
  ort.env.wasm.numThreads = 1;  // file:// pages are not cross-origin isolated: no wasm threads
  ort.env.wasm.wasmBinary = b64bytes(window.ORT_WASM_B64);
  const glue = new Blob([window.ORT_MJS_TEXT], { type: "text/javascript" });
  ort.env.wasm.wasmPaths = { mjs: URL.createObjectURL(glue) };
  session = await ort.InferenceSession.create(b64bytes(window.GRAFT_MODEL_B64), { executionProviders: ["wasm"] });
  const m = CFG.metrics && typeof CFG.metrics.accuracy === "number" ? ` · val accuracy ${(CFG.metrics.accuracy * 100).toFixed(1)}%` : "";
  $("meta").textContent = `${CFG.classes.length} classes (${CFG.classes.slice(0, 8).join(", ")}${CFG.classes.length > 8 ? ", …" : ""}) · ${CFG.backbone} · onnxruntime-web ${CFG.ort_version}${m}`;
  $("topk").max = CFG.classes.length;
  $("topk").value = Math.min(3, CFG.classes.length);
  document.body.dataset.ready = "1";
}

// Python's round(): halves go to the even neighbour (Math.round would move the crop one pixel).
const roundHalfEven = (x) => (Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x));

// graft's crop geometry (Preprocessing.crop): shorter side to resize_size, centre crop, one resample of the crop box.
function pixels(bitmap) {
  const [h, w] = CFG.input_size;
  const W = bitmap.width, H = bitmap.height;
  let box = [0, 0, W, H];
  if (CFG.crop_mode === "center") {
    const s = CFG.resize_size;
    const [nw, nh] = W <= H ? [s, Math.floor((s * H) / W)] : [Math.floor((s * W) / H), s];
    const top = roundHalfEven((nh - h) / 2), left = roundHalfEven((nw - w) / 2);
    if (top >= 0 && left >= 0) box = [left * (W / nw), top * (H / nh), w * (W / nw), h * (H / nh)];
  }
  const c = document.createElement("canvas");
  c.width = w; c.height = h;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, box[0], box[1], box[2], box[3], 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const x = new Float32Array(3 * h * w);
  for (let i = 0; i < h * w; i++) { x[i] = rgba[4 * i]; x[h * w + i] = rgba[4 * i + 1]; x[2 * h * w + i] = rgba[4 * i + 2]; }
  return new ort.Tensor("float32", x, [1, 3, h, w]);
}

// The same rows as graft.predict.results.prediction_rows: label, top_k, and "unknown" over the OOD threshold.
function toPrediction(probs, ood, k) {
  const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a]);
  const p = { label: CFG.classes[order[0]], top_k: order.slice(0, k).map((i) => ({ label: CFG.classes[i], probability: probs[i] })) };
  if (CFG.thresholds.length) p.labels = order.filter((i) => probs[i] >= CFG.thresholds[i]).map((i) => ({ label: CFG.classes[i], probability: probs[i] }));
  if (ood !== null && CFG.ood_threshold !== null) {
    p.ood_score = ood; p.known = ood <= CFG.ood_threshold;
    if (!p.known) { p.best_label = p.label; p.label = "unknown"; if (p.labels) p.labels = []; }
  }
  return p;
}

function showPrediction(body, p) {
  const top = el("div", "top-label", p.label);
  top.dataset.label = p.label;
  body.appendChild(top);
  if (p.known === false) {
    top.classList.add("unknown");
    body.closest(".card").classList.add("unknown");
    body.appendChild(el("div", "unknown-note", `unlike the training images (best guess: ${p.best_label})`));
  }
  if (Array.isArray(p.labels)) {
    if (p.known !== false) top.textContent = p.labels.map((t) => t.label).join(" + ") || "no label";
    const set = el("div", "label-set");
    for (const t of p.labels) set.appendChild(el("span", "chip", `${t.label} ${(t.probability * 100).toFixed(1)}%`));
    body.appendChild(set);
  }
  for (const t of p.top_k) {
    const row = el("div", "row"), bar = el("div", "bar"), fill = el("span");
    fill.style.width = (t.probability * 100).toFixed(1) + "%";
    bar.append(fill, el("em", "", t.label));
    row.append(bar, el("div", "pct", (t.probability * 100).toFixed(1) + "%"));
    body.appendChild(row);
  }
}

async function classify(source, name) {
  const card = el("article", "card result"), img = el("img"), body = el("div", "body");
  img.alt = name;
  card.dataset.name = name;
  card.append(img, body);
  $("results").prepend(card);
  try {
    // colorSpaceConversion "none": the raw decoded values, as Pillow reads them (it ignores ICC profiles)
    const bitmap = source instanceof Blob ? await createImageBitmap(source, BITMAP_OPTIONS) : source;
    if (source instanceof Blob) img.src = URL.createObjectURL(source);
    const out = await session.run({ input: pixels(bitmap) });
    const ood = out.ood_score ? out.ood_score.data[0] : null;
    showPrediction(body, toPrediction(Array.from(out.probabilities.data), ood, Number($("topk").value) || 3));
  } catch (e) {
    body.appendChild(el("div", "top-label", "error")).dataset.label = "error";
    body.appendChild(el("div", "unknown-note", String(e)));
  }
  card.dataset.done = "1";
}

async function classifyFiles(files) { for (const f of files) await classify(f, f.name); }

$("files").addEventListener("change", (e) => classifyFiles([...e.target.files]));
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => { e.preventDefault(); $("drop").classList.remove("over"); classifyFiles([...e.dataTransfer.files]); });
$("camera").addEventListener("click", async () => {
  const v = $("video");
  v.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  v.style.display = "block";
  $("snap").hidden = false;
});
$("snap").addEventListener("click", async () => classify(await createImageBitmap($("video")), `camera ${new Date().toLocaleTimeString()}`));
load().catch((e) => { $("meta").textContent = "could not load the model: " + e; document.body.dataset.ready = "error"; });
