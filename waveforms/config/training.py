"""The train stage: ``[train]`` and its ``[train.elephas]`` sub-table."""
from __future__ import annotations

from dataclasses import dataclass

from waveforms.config.metadata import opt, s3_outage


@dataclass
class ElephasConfig:
    """``[train.elephas]``: keys only the elephas engine reads (``--set elephas.KEY=VALUE``)."""

    mode: str = opt("synchronous", choices=("synchronous", "asynchronous", "hogwild"), flag="--mode",
                    help="elephas training mode")
    frequency: str = opt("epoch", choices=("epoch", "batch"), flag="--frequency",
                         help="how often workers exchange weights with the parameter server")
    parameter_server: str = opt("http", choices=("http", "socket"), flag="--parameter-server",
                                help="parameter server protocol (asynchronous, hogwild)")
    port: int = opt(0, min=0, max=65535, flag="--port", help="parameter server port; 0 = a free one")
    epochs: int = opt(2, min=1, flag="--epochs", help="epochs; each worker reads windows_per_worker fresh windows")
    windows_per_worker: int = opt(64, min=1, unit="windows", help="windows per worker and epoch (> batch_size)")


@dataclass
class AllreduceConfig:
    """``[train.allreduce]``: keys only the allreduce engine reads (``--set allreduce.KEY=VALUE``).

    The Spark master and the number of ranks are ``[train]`` keys (``master``,
    ``workers``), shared by both Spark engines.
    """

    timeout_s: float = opt(180.0, gt=0, unit="s",
                           help="a collective (all-reduce) that waits longer fails: a dead or cut-off peer fails the "
                                "step within this (the first step's tracing must fit in it)")
    slots_wait_s: float = opt(1200.0, gt=0, unit="s",
                              help="how long a (re)run of the stage waits for one task slot per rank (a host lost "
                                   "and not yet back, or an EMR node being replaced) before it stops with an error "
                                   "naming the missing slots")
    pack_kb: int = opt(0, min=0, unit="kB",
                       help="split the gradient all-reduce into packs of about this size, so that the first packs "
                            "travel while the backward pass computes the rest; 0 = one pack")
    retries: int = opt(2, min=0, help="times the driver reruns a failed barrier stage (each resumes from the "
                                      "last checkpoint)")
    threads: int = opt(0, min=0, help="CPU threads per rank; 0 = the host's cores split among its ranks")


@dataclass
class TrainConfig:
    """The train stage; ``engine`` picks local Keras, all-reduce on Spark or elephas on Spark.

    A *step* is one optimizer update on one batch of ``batch_size`` windows, for
    every engine: ``steps`` counts them for the local and allreduce engines, and an elephas
    epoch makes ``workers * ceil(windows_per_worker / batch_size)`` of them.
    ``log_every``, ``val_every``, ``checkpoint_every`` and the cosine schedule
    count steps too. The seven architecture keys follow ``preset``: 0 takes the preset's
    value (:data:`waveforms.model.presets.ARCHITECTURE_KEYS`).
    """

    data: str = opt("data/dataset", flag="--data", help="dataset folder or s3:// prefix")
    model_dir: str = opt("data/model", flag="--model-dir", help="where the model, checkpoints and metrics go")
    # the names of waveforms.model.presets.PRESETS (config sits below the model; test_architecture compares them)
    preset: str = opt("small", choices=("tiny", "small", "default", "large"), flag="--preset",
                      help="model size: a named set of the architecture keys below")
    stacks: int = opt(0, min=0, max=16, help="stacks of dilated layers; 0 = from the preset")
    layers_per_stack: int = opt(0, min=0, max=14, unit="layers",
                                help="layers per stack, dilations 1, 2, 4, ... 2^(n-1); 0 = from the preset")
    kernel_size: int = opt(0, min=0, max=8, unit="taps", help="taps of each dilated convolution; 0 = from the preset")
    residual_channels: int = opt(0, min=0, max=1024, unit="channels",
                                 help="channels of the residual stream; 0 = from the preset")
    dilation_channels: int = opt(0, min=0, max=1024, unit="channels",
                                 help="channels out of each gated unit; 0 = from the preset")
    skip_channels: int = opt(0, min=0, max=2048, unit="channels",
                             help="channels of the skip sum and the output head; 0 = from the preset")
    genre_channels: int = opt(0, min=0, max=256, unit="channels",
                              help="genre embedding size (condition_on_genre); 0 = from the preset")
    init_from: str = opt("", flag="--init-from",
                         help="fine-tune: start from this model's architecture and weights (a model folder or "
                              "s3:// prefix), with a fresh optimizer and schedule; empty = a new model")
    steps: int = opt(1000, min=1, unit="steps", flag="--steps", help="training steps (local and allreduce engines)")
    batch_size: int = opt(8, min=1, unit="windows", flag="--batch-size",
                          help="windows per optimizer step (the global batch), split evenly among the ranks")
    batch_per_worker: int = opt(0, min=0, unit="windows",
                                help="allreduce: windows per rank and step, the global batch growing with the ranks "
                                     "(batch_size stays the batch learning_rate is for); 0 = off")
    lr_scaling: str = opt("linear", choices=("none", "sqrt", "linear"),
                          help="learning rate for a global batch other than batch_size: × (batch / batch_size), "
                               "its square root, or unchanged")
    window: int = opt(2000, min=1, unit="samples", flag="--window",
                      help="predicted samples per window; the input is receptive field + window")
    learning_rate: float = opt(8e-3, gt=0, help="Adam learning rate (the peak, reached after the warmup)")
    lr_schedule: str = opt("cosine", choices=("constant", "cosine", "step"),
                           help="after the warmup: constant, cosine decay to min_lr_ratio × lr at `steps`, "
                                "or step decay (× lr_decay_factor every lr_decay_every steps)")
    warmup_steps: int = opt(100, min=0, unit="steps", help="linear learning-rate warmup from lr / warmup_steps")
    min_lr_ratio: float = opt(0.05, min=0, max=1, help="floor of the cosine and step decays, as a share of lr")
    lr_decay_every: int = opt(500, min=1, unit="steps", help="lr_schedule = step: steps between decays")
    lr_decay_factor: float = opt(0.5, gt=0, max=1, help="lr_schedule = step: learning-rate factor per decay")
    clip_norm: float = opt(10.0, min=0, help="global gradient-norm clip; 0 = off (1.0 throttles early training)")
    ema_decay: float = opt(0.999, min=0, lt=1,
                           help="moving average of the weights for validation, previews and the saved model; 0 = off "
                                "(not elephas)")
    init: str = opt("data", choices=("data", "keras"),
                    help="data: residual/skip 1x1s scaled by 1/sqrt(layers), logits bias = code log-frequencies "
                         "(not elephas)")
    preview_every: int = opt(0, min=-1, unit="steps",
                             help="steps between audio previews (MODEL_DIR/previews/); 0 = at each validation, -1 = off "
                                  "(not elephas)")
    preview_seconds: float = opt(2.0, gt=0, unit="s", help="seconds of audio per preview")
    seed: int = opt(0, min=0, flag="--seed", help="random seed")
    log_every: int = opt(20, min=1, unit="steps", help="steps between metrics.jsonl lines (not elephas)")
    val_every: int = opt(100, min=1, unit="steps", help="steps between validation checks (not elephas)")
    val_batches: int = opt(4, min=1, unit="batches", help="batches per validation check")
    checkpoint_every: int = opt(100, min=1, unit="steps", help="steps between checkpoints (not elephas)")
    early_stopping_patience: int = opt(0, min=0, unit="checks",
                                       help="validation checks without improvement before stopping; 0 = off")
    max_minutes: float = opt(0.0, min=0, unit="min", flag="--max-minutes",
                             help="training wall-time budget, resumes included; 0 = none; "
                                  "the local and allreduce engines fit a cosine schedule to it")
    fresh: bool = opt(False, flag="--fresh", help="start over, ignoring checkpoints")
    condition_on_genre: bool = opt(False, help="add a genre embedding to every layer (not elephas)")
    evaluate_at_end: bool = opt(False, help="run the evaluate stage on the final model (bits per sample, fd_mel)")
    precision: str = opt("float32", choices=("float32", "bfloat16", "float16", "auto"),
                         help="compute type of the training step; variables, logits, loss and the saved model stay "
                              "float32. bfloat16: native on CPUs with avx512_bf16/amx_bf16, Arm bf16, GPUs of "
                              "compute capability >= 8.0; float16: loss-scaled, for GPUs; auto: bfloat16 where "
                              "native, else float32 (the old mixed_precision = true means float16)")
    reads_in_flight: int = opt(32, min=1, max=1024, unit="requests",
                               help="ranged reads of training windows in flight at once (a round trip to S3 "
                                    "takes tens of ms); the feed prepares ceil(this / batch_size) batches ahead")
    shard_cache_gb: float = opt(0.0, min=0, unit="GB",
                                help="s3:// data: keep up to this much of the dataset's shards on local disk, "
                                     "filled on first read and reused by later runs; 0 = off. An EMR train step "
                                     "that does not set it caches on each core node's data volume (half of "
                                     "[aws] core_volume_gb)")
    shard_cache_dir: str = opt("", help="folder of the shard cache; empty = $XDG_CACHE_HOME/waveforms/shards "
                                        "(~/.cache/waveforms/shards)")
    engine: str = opt("local", choices=("local", "allreduce", "elephas"), flag="--engine",
                      help="local: Keras in this process; allreduce: N processes in a Spark barrier stage, "
                           "gradients all-reduced every step; elephas: parameter averaging on Spark")
    master: str = opt("local[2]", flag="--master", help="Spark master URL (the allreduce and elephas engines)")
    workers: int = opt(2, min=1, flag="--workers",
                       help="training processes (allreduce), Spark partitions per epoch (elephas)")
    s3_outage_s: float = s3_outage()
    elephas: ElephasConfig = opt(ElephasConfig(), help="[train.elephas]: the elephas engine's keys")
    allreduce: AllreduceConfig = opt(AllreduceConfig(), help="[train.allreduce]: the allreduce engine's keys")
