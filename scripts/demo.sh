#!/usr/bin/env bash
# The four stages end to end on one machine, offline: a local FMA-format mirror of
# openly licensed music (Debian's hyperrogue-music, CC BY-SA 3.0) is crawled, transformed
# on Spark's embedded local mode, a small WaveNet is trained, and audio is generated.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${DEMO_OUT:-demo-out}
CONFIG=${DEMO_CONFIG:-local/demo.toml}
export SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$PWD/$PY" TF_CPP_MIN_LOG_LEVEL=3
mkdir -p "$OUT"
rm -f "$OUT/mirror.url"

echo "== starting the local FMA-format mirror"
$PY -m waveforms.demo.music --music-dir /usr/share/hyperrogue/music --cache "$OUT/mirror-cache" \
    --port 0 --url-file "$OUT/mirror.url" > "$OUT/mirror.log" 2>&1 &
MIRROR=$!
trap 'kill $MIRROR 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do [ -s "$OUT/mirror.url" ] && break; kill -0 $MIRROR 2>/dev/null || { cat "$OUT/mirror.log"; exit 1; }; sleep 0.2; done
[ -s "$OUT/mirror.url" ] || { echo "mirror did not start"; cat "$OUT/mirror.log"; exit 1; }
URL=$(cat "$OUT/mirror.url")
echo "   $URL"

start=$(date +%s)
echo "== 1/4 scrape"
$PY run_webscraper.py --config "$CONFIG" --base-url "$URL" --out "$OUT/raw" "$@"
echo "== 2/4 transform (Spark local mode)"
$PY run_transformation_scripts.py --config "$CONFIG" --input "$OUT/raw" --output "$OUT/dataset"
echo "== 3/4 train"
$PY run_model_training.py --config "$CONFIG" --data "$OUT/dataset" --model-dir "$OUT/model"
echo "== 4/4 generate"
$PY run_model_predictions.py --config "$CONFIG" --model "$OUT/model" --output "$OUT/generated.wav"
echo "== index the training audio (Spark local mode) and evaluate the model"
$PY -m waveforms index --config "$CONFIG" --data "$OUT/dataset" --master "local[2]"
$PY -m waveforms evaluate --config "$CONFIG" --model "$OUT/model" --data "$OUT/dataset" --clips 2 --seconds 5
end=$(date +%s)

cat <<MSG

Done in $((end - start)) s.
  generated audio : $OUT/generated.wav
  trained model   : $OUT/model (model.keras, model.json)
  loss curve      : $OUT/model/loss.png (values in $OUT/model/metrics.jsonl)
  previews        : $OUT/model/previews/step_*.wav (what the model made at each validation)
  evaluation      : $OUT/model/evaluation.json, evaluation.png (bits per sample, fd_mel, memorisation)
  dataset         : $OUT/dataset (manifest.jsonl, shards/)
  scraped MP3s    : $OUT/raw (manifest.jsonl)
MSG

echo "Hear, watch and compare them in the studio (then open http://127.0.0.1:8000/):"
echo "  .venv/bin/waveforms serve --root $OUT"
