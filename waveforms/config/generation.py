"""Audio from a trained model and its judging: ``[generate]``, ``[index]`` and ``[evaluate]``."""
from __future__ import annotations

from dataclasses import dataclass

from waveforms.config.metadata import opt, s3_outage

# The sampling defaults of every place that samples (generate, evaluate's clips, training previews, the studio),
# chosen by bench/bench_sampling.py's sweep (docs/generation.md).
TEMPERATURE = 1.0
TOP_P = 1.0
TOP_P_HELP = "nucleus sampling: draw only from the most probable codes holding this share of the mass; 1 = off"


@dataclass
class GenerateConfig:
    """The generate stage: sample new audio from a trained model."""

    model: str = opt("data/model", flag="--model", help="model folder or s3:// prefix")
    seconds: float = opt(2.0, gt=0, unit="s", flag="--seconds", help="seconds of audio per stream")
    output: str = opt("generated.wav", flag="--output", help="output WAV (stream k > 0 gets a _k suffix)")
    temperature: float = opt(TEMPERATURE, min=0, flag="--temperature", help="sampling temperature; 0 = greedy")
    top_p: float = opt(TOP_P, gt=0, max=1, flag="--top-p", help=TOP_P_HELP)
    prime: str = opt("", flag="--prime", help="audio file whose samples start the sequence")
    seed: int = opt(0, min=0, flag="--seed", help="random seed")
    streams: int = opt(1, min=1, flag="--streams", help="independent streams generated together")
    genre: str = opt("", flag="--genre", help="genre for a genre-conditioned model")
    save_every: float = opt(0.0, min=0, unit="s", flag="--save-every",
                            help="write the partial WAV every S seconds of audio; 0 = only at the end")
    evaluate: bool = opt(False, flag="--evaluate",
                         help="add the nearest training audio of every second (the index) to the sidecar JSON")
    s3_outage_s: float = s3_outage()


@dataclass
class IndexConfig:
    """The index stage: log-mel patch embeddings of the training windows in a nearest-neighbour index."""

    data: str = opt("data/dataset", flag="--data", help="dataset folder or s3:// prefix")
    output: str = opt("", flag="--output", help="index folder or s3:// prefix; empty = DATA/index")
    master: str = opt("local[*]", flag="--master", help="Spark master URL")
    window_s: float = opt(1.0, gt=0, unit="s", help="embedding window (a log-mel patch)")
    hop_s: float = opt(0.5, gt=0, unit="s", help="hop between indexed windows")
    n_mels: int = opt(64, min=8, max=256, help="mel bands of the embedding's patches")
    dims: int = opt(64, min=2, max=128, help="embedding dimensions kept by the PCA (whitened)")
    sample_windows: int = opt(50000, min=100, unit="windows", help="windows sampled to fit the PCA and IVF lists")
    calibration_windows: int = opt(2000, min=10, unit="windows",
                                   help="sampled windows whose cross-track similarities set the match threshold")
    copy_tracks: int = opt(8, min=0, help="training tracks whose re-encoded excerpts calibrate the threshold")
    factory: str = opt("auto", help="FAISS index factory string; auto = Flat up to 200k vectors, else IVF,SQ8")
    nprobe: int = opt(32, min=1, help="IVF lists searched per query")
    ef_search: int = opt(64, min=1, help="HNSW search breadth (factory HNSW...)")
    partitions: int = opt(0, min=0, help="Spark partitions; 0 = up to 4 per core")
    spark_conf: dict[str, str] = opt({}, help="extra Spark settings")
    s3_outage_s: float = s3_outage()


@dataclass
class EvaluateConfig:
    """The evaluate stage: bits per sample, Fréchet mel distance and memorisation of a model."""

    model: str = opt("data/model", flag="--model", help="model folder or s3:// prefix")
    data: str = opt("", flag="--data", help="dataset; empty = the one in model.json")
    audio: list[str] = opt([], flag="--audio", help="WAV files to judge instead of generated clips (flag repeatable)")
    clips: int = opt(2, min=1, flag="--clips", help="clips generated when no --audio is given")
    seconds: float = opt(5.0, gt=0, unit="s", flag="--seconds", help="seconds per generated clip")
    temperature: float = opt(TEMPERATURE, min=0, help="sampling temperature of the generated clips")
    top_p: float = opt(TOP_P, gt=0, max=1, help=TOP_P_HELP)
    seed: int = opt(0, min=0, help="random seed of the generated clips and the noise yardstick")
    output: str = opt("", flag="--output", help="folder for evaluation.json and .png; empty = the model folder")
    index: str = opt("", flag="--index", help="index folder; empty = DATA/index")
    window: int = opt(16000, min=2, unit="samples", help="validation window (the same cut for every model)")
    batch_size: int = opt(4, min=1, unit="windows", help="validation windows per forward pass")
    heldout_seconds: float = opt(0.0, min=0, unit="s", help="cap on held-out audio read for fd_mel; 0 = all")
    s3_outage_s: float = s3_outage()
