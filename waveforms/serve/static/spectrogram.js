// Spectrograms and waveforms drawn on a canvas from PCM samples (no library).
"use strict";

function fftMagnitudes(frame) {
  // In-place radix-2 FFT of a real frame (length a power of two); returns |X[k]| for k < n/2.
  const n = frame.length, re = Float32Array.from(frame), im = new Float32Array(n);
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = -2 * Math.PI / len, wr = Math.cos(ang), wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) {
      let cr = 1, ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const a = i + k, b = a + len / 2;
        const tr = re[b] * cr - im[b] * ci, ti = re[b] * ci + im[b] * cr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
        const t = cr * wr - ci * wi; ci = cr * wi + ci * wr; cr = t;
      }
    }
  }
  const mags = new Float32Array(n / 2);
  for (let k = 0; k < n / 2; k++) mags[k] = Math.hypot(re[k], im[k]);
  return mags;
}

function drawSpectrogram(canvas, samples, size = 512) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.fillStyle = "#0c1020"; ctx.fillRect(0, 0, w, h);
  if (!samples || samples.length < size) return 0;
  const hop = Math.max(1, Math.floor((samples.length - size) / w)), win = new Float32Array(size);
  for (let i = 0; i < size; i++) win[i] = 0.5 - 0.5 * Math.cos(2 * Math.PI * i / (size - 1));
  const img = ctx.createImageData(w, h);
  let columns = 0;
  for (let x = 0; x < w; x++) {
    const start = x * hop;
    if (start + size > samples.length) break;
    const frame = new Float32Array(size);
    for (let i = 0; i < size; i++) frame[i] = samples[start + i] * win[i];
    const mags = fftMagnitudes(frame);
    for (let y = 0; y < h; y++) {
      const k = Math.floor((h - 1 - y) / h * mags.length);
      const db = 20 * Math.log10(mags[k] + 1e-6);
      const v = Math.max(0, Math.min(1, (db + 60) / 80));
      const p = 4 * (y * w + x);
      img.data[p] = 255 * Math.min(1, 2 * v); img.data[p + 1] = 255 * Math.max(0, 2 * v - 1);
      img.data[p + 2] = 255 * (0.3 + 0.7 * (1 - v)) * v; img.data[p + 3] = 255;
    }
    columns++;
  }
  ctx.putImageData(img, 0, 0);
  return columns;
}

function drawWaveform(canvas, samples) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.fillStyle = "#0c1020"; ctx.fillRect(0, 0, w, h);
  if (!samples || !samples.length) return;
  ctx.strokeStyle = "#7fb2ff"; ctx.beginPath();
  const per = Math.max(1, Math.floor(samples.length / w));
  for (let x = 0; x < w && x * per < samples.length; x++) {
    let lo = 1, hi = -1;
    for (let i = x * per; i < Math.min(samples.length, (x + 1) * per); i++) {
      lo = Math.min(lo, samples[i]); hi = Math.max(hi, samples[i]);
    }
    ctx.moveTo(x + 0.5, (1 - hi) * h / 2); ctx.lineTo(x + 0.5, (1 - lo) * h / 2);
  }
  ctx.stroke();
}

function wavSamples(buffer) {
  // 16-bit mono PCM after the 44-byte header (what the studio serves) as floats.
  const pcm = new Int16Array(buffer, 44, Math.floor((buffer.byteLength - 44) / 2));
  return Float32Array.from(pcm, v => v / 32768);
}
