"""Base defaults shared by every family. Family nodes (criteria, matchers, Mask2Former,
...) are added by the ``add_*_config`` functions in this package; see ``get_cfg``."""

from .cfg_node import CfgNode as CN

__all__ = ["_C"]

_C = CN()
_C.VERSION = 1
# Python modules (dotted names or .py paths) imported before the build so that their
# @X_REGISTRY.register() decorators run; also settable with --module on the command line.
_C.MODULES = []

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = CN()
# META_ARCH registry name, e.g. "MaskFormer", "VideoTracker", "Sam3Image"
_C.MODEL.META_ARCHITECTURE = ""
# "auto": cuda when available, else cpu
_C.MODEL.DEVICE = "auto"
# Initial weights (model only; the schedule starts fresh). Use --resume to continue a run.
# Loaded strictly: a model tensor the file does not fill (missing, or of another shape) or a
# file tensor the model does not have stops the start-up, except under the prefixes below.
_C.MODEL.WEIGHTS = ""
# Model tensor-name prefixes that may keep their initialization when MODEL.WEIGHTS is loaded,
# e.g. ["sem_seg_head.predictor.class_embed.", "criterion."] for a new class head
_C.MODEL.WEIGHTS_NEW_PREFIXES = []
# MODEL.WEIGHTS tensor-name prefixes to drop (parts of the released model this one lacks)
_C.MODEL.WEIGHTS_IGNORE_PREFIXES = []
# RGB mean / std in the 0-255 range (ImageNet)
_C.MODEL.PIXEL_MEAN = [123.675, 116.280, 103.530]
_C.MODEL.PIXEL_STD = [58.395, 57.120, 57.375]
# Module-name prefixes to freeze (requires_grad False), e.g. ["backbone.res2"]
_C.MODEL.FROZEN_MODULES = []
# torch.compile the backbone and the pixel decoder in place (parameter names unchanged).
# Off by default: on a 2-core CPU it did not pay for its compile time (docs/benchmarks.md)
_C.MODEL.COMPILE = False

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# Freeze the first N stages: 0 none, 1 stem, 2 stem+res2, ...
_C.MODEL.BACKBONE.FREEZE_AT = 0

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.RESNETS.NUM_GROUPS = 1
# "BN", "FrozenBN", "GN", "SyncBN"
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False
_C.MODEL.RESNETS.RES5_DILATION = 1
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# "basic" (7x7 conv) or "deeplab" (three 3x3 convs)
_C.MODEL.RESNETS.STEM_TYPE = "basic"

# ---------------------------------------------------------------------------- #
# Input / augmentation
# ---------------------------------------------------------------------------- #
_C.INPUT = CN()
# Mapper (MAPPER registry name) used by the training and test loaders
_C.INPUT.DATASET_MAPPER_NAME = "InstanceDatasetMapper"
# Image channel order handed to the model
_C.INPUT.FORMAT = "RGB"
# "polygon" keeps polygons until the mapper rasterizes them; "bitmask" decodes at load
_C.INPUT.MASK_FORMAT = "polygon"
# Resize the shortest edge to one of MIN_SIZE_TRAIN (chosen at random), capped by MAX_SIZE_TRAIN
_C.INPUT.MIN_SIZE_TRAIN = (256,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 256
_C.INPUT.MAX_SIZE_TEST = 1333
# "horizontal", "vertical" or "none"
_C.INPUT.RANDOM_FLIP = "horizontal"
# Large-scale jitter: resize to IMAGE_SIZE * U(MIN_SCALE, MAX_SCALE), crop / pad to IMAGE_SIZE
_C.INPUT.LSJ = CN()
_C.INPUT.LSJ.ENABLED = False
_C.INPUT.LSJ.IMAGE_SIZE = 1024
_C.INPUT.LSJ.MIN_SCALE = 0.1
_C.INPUT.LSJ.MAX_SCALE = 2.0
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = False
# "relative_range" / "absolute"
_C.INPUT.CROP.TYPE = "relative_range"
_C.INPUT.CROP.SIZE = [0.9, 0.9]
# SAM 3's fine-tuning resize: a random square size (aspect ratio not kept) from the multiples
# of STEP in [MIN_SIZE, MAX_SIZE], then padding to PAD_SIZE x PAD_SIZE (0: none) with the image
# at a random place; at test time a square resize to MAX_SIZE. Replaces MIN_SIZE_* resizing.
_C.INPUT.SQUARE_RESIZE = CN()
_C.INPUT.SQUARE_RESIZE.ENABLED = False
_C.INPUT.SQUARE_RESIZE.MIN_SIZE = 480
_C.INPUT.SQUARE_RESIZE.MAX_SIZE = 1008
_C.INPUT.SQUARE_RESIZE.STEP = 32
_C.INPUT.SQUARE_RESIZE.PAD_SIZE = 1008
_C.INPUT.SQUARE_RESIZE.PAD_VALUE = 0.0
_C.INPUT.COLOR_JITTER = CN()
_C.INPUT.COLOR_JITTER.ENABLED = False
_C.INPUT.COLOR_JITTER.BRIGHTNESS = 0.2
_C.INPUT.COLOR_JITTER.CONTRAST = 0.2
_C.INPUT.COLOR_JITTER.SATURATION = 0.2
# Pad images to a multiple of this (0 = no padding) in the model's batching
_C.INPUT.SIZE_DIVISIBILITY = 32

# ---------------------------------------------------------------------------- #
# Datasets
# ---------------------------------------------------------------------------- #
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ("shapes_train",)
_C.DATASETS.TEST = ("shapes_val",)
# Built-in shapes sizes (images generated on first use under $SEGTRAIN_DATASETS)
# A Roboflow COCO export (train/ valid/ test/ with _annotations.coco.json) registered at
# start-up as <NAME>_train, <NAME>_valid, <NAME>_test (register_roboflow_coco); "" = none
_C.DATASETS.ROBOFLOW = CN()
_C.DATASETS.ROBOFLOW.ROOT = ""
_C.DATASETS.ROBOFLOW.NAME = "roboflow"
# > 0: train on that many images of train/, SAM 3's few-shot subset (limit_ids); 0 = all
_C.DATASETS.ROBOFLOW.NUM_TRAIN_IMAGES = 0
_C.DATASETS.SHAPES = CN()
_C.DATASETS.SHAPES.NUM_TRAIN = 2000
_C.DATASETS.SHAPES.NUM_VAL = 200
_C.DATASETS.SHAPES.IMAGE_SIZE = 256
# What to do with bad annotations / images: "error" (stop, naming file and id) or "skip"
_C.DATASETS.ON_BAD_ANNOTATION = "error"

# ---------------------------------------------------------------------------- #
# Data loader
# ---------------------------------------------------------------------------- #
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
# "TrainingSampler" (infinite, seeded, sharded by rank)
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
_C.DATALOADER.ASPECT_RATIO_GROUPING = False

# ---------------------------------------------------------------------------- #
# CPU threads (segtrain/utils/cpu_share.py; docs/benchmarks.md, "Busy machines")
# ---------------------------------------------------------------------------- #
_C.CPU = CN()
# torch compute threads of each process; 0: the environment's SEGTRAIN_NUM_THREADS or
# OMP_NUM_THREADS when set, else the cores free at start-up divided among this machine's
# processes (a fixed value makes runs on a shared machine bit-reproducible)
_C.CPU.NUM_THREADS = 0
# with NUM_THREADS 0 and no thread count in the environment: seconds between re-measurements of
# the free cores during training, the thread count following them (0: the start-up count throughout)
_C.CPU.REMEASURE_PERIOD = 15.0

# ---------------------------------------------------------------------------- #
# Solver
# ---------------------------------------------------------------------------- #
_C.SOLVER = CN()
# "AdamW", "Adam" or "SGD"
_C.SOLVER.OPTIMIZER = "AdamW"
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.BETAS = (0.9, 0.999)
_C.SOLVER.WEIGHT_DECAY = 0.05
# No weight decay on normalization layers and on embeddings (query / position tables)
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.WEIGHT_DECAY_EMBED = 0.0
# Norm-layer class names whose parameters take WEIGHT_DECAY_NORM; empty: every norm layer.
# SAM 2.1 / SAM 3 recipes: ["LayerNorm"] (their `module_cls_names: ['torch.nn.LayerNorm']`)
_C.SOLVER.WEIGHT_DECAY_NORM_TYPES = []
# Parameter-name patterns (fnmatch, full names) that take no weight decay, e.g. ["*bias*"]
_C.SOLVER.NO_WEIGHT_DECAY_NAMES = []
# Learning-rate multiplier of every parameter under "backbone." (unless LR_MULTIPLIERS match)
_C.SOLVER.BACKBONE_MULTIPLIER = 0.1
# [name_pattern, multiplier] pairs (fnmatch on full parameter names, first match wins), e.g.
# [["image_encoder.*", 0.6]]: those parameters learn at BASE_LR * 0.6
_C.SOLVER.LR_MULTIPLIERS = []
# Layer-wise LR decay over the blocks of one module (ViT / Hiera trunk): block i of n learns at
# VALUE ** (n - i) times its rate, the embeddings at VALUE ** (n + 1); 1.0 = off
_C.SOLVER.LAYER_DECAY = CN()
_C.SOLVER.LAYER_DECAY.VALUE = 1.0
# module path, e.g. "image_encoder.trunk"
_C.SOLVER.LAYER_DECAY.APPLY_TO = ""
# [name_pattern, factor] pairs that replace the decay factor, e.g. [["*pos_embed*", 1.0]]
_C.SOLVER.LAYER_DECAY.OVERRIDES = []
# "WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepLR", "WarmupPolyLR", "InverseSquareRootLR"
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.MAX_ITER = 1000
# > 0: the run length in passes over the training images; sets MAX_ITER to MAX_EPOCHS x
# (training images // IMS_PER_BATCH) at start-up (SAM 3's recipes count epochs)
_C.SOLVER.MAX_EPOCHS = 0
_C.SOLVER.STEPS = (800,)
_C.SOLVER.GAMMA = 0.1
# WarmupStepLR: decay by GAMMA every STEP_SIZE iterations
_C.SOLVER.STEP_SIZE = 1000
_C.SOLVER.POLY_POWER = 0.9
# Cosine / poly schedules end at BASE_LR * BASE_LR_END_FACTOR
_C.SOLVER.BASE_LR_END_FACTOR = 0.0
# InverseSquareRootLR (SAM 3): after warm-up the rate falls as 1 / sqrt((it + TIMESCALE -
# WARMUP_ITERS) / TIMESCALE), and over the last COOLDOWN_ITERS linearly to 0
_C.SOLVER.INVERSE_SQRT_TIMESCALE = 20
_C.SOLVER.COOLDOWN_ITERS = 0
_C.SOLVER.WARMUP_FACTOR = 1.0
_C.SOLVER.WARMUP_ITERS = 0
# "linear" or "constant"
_C.SOLVER.WARMUP_METHOD = "linear"
# Images per batch across all processes
_C.SOLVER.IMS_PER_BATCH = 4
# Gradient accumulation: optimizer step every ACCUM_ITER iterations
_C.SOLVER.ACCUM_ITER = 1
_C.SOLVER.CHECKPOINT_PERIOD = 500
# Keep at most this many periodic checkpoints (0 = keep all)
_C.SOLVER.MAX_TO_KEEP = 3
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
# "value", "norm" (per parameter) or "full_model" (norm over all parameters)
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.01
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False
# "auto" (bf16 on CPU, fp16 + GradScaler on CUDA), "float16", "bfloat16"
_C.SOLVER.AMP.DTYPE = "auto"

# ---------------------------------------------------------------------------- #
# Test / evaluation
# ---------------------------------------------------------------------------- #
_C.TEST = CN()
# Evaluate every EVAL_PERIOD iterations (0 = only at the end)
_C.TEST.EVAL_PERIOD = 0
# Evaluators (EVALUATOR registry names, run together; one name is taken as a 1-tuple);
# () = the one that the dataset's metadata evaluator_type names
_C.TEST.EVALUATOR = ()
_C.TEST.DETECTIONS_PER_IMAGE = 100
# Best checkpoint: metric to watch ("" disables), e.g. "segm/AP"; mode "max" or "min"
_C.TEST.BEST_CHECKPOINT = CN()
_C.TEST.BEST_CHECKPOINT.METRIC = ""
_C.TEST.BEST_CHECKPOINT.MODE = "max"
# Early stopping on the same metric after PATIENCE evaluations without improvement (0 = off)
_C.TEST.EARLY_STOP = CN()
_C.TEST.EARLY_STOP.METRIC = ""
_C.TEST.EARLY_STOP.MODE = "max"
_C.TEST.EARLY_STOP.PATIENCE = 0
# Validation loss on the test loader at EVAL_PERIOD, logged as val/<key>
_C.TEST.VAL_LOSS = CN()
_C.TEST.VAL_LOSS.ENABLED = False
# Batches per process; the images are the first NUM_BATCHES x IMS_PER_BATCH x processes of
# DATASETS.TEST[0] (the same images for any number of processes); <= 0: the whole dataset
_C.TEST.VAL_LOSS.NUM_BATCHES = 10
# Images per batch, per process (0 = SOLVER.IMS_PER_BATCH / processes, as in training)
_C.TEST.VAL_LOSS.IMS_PER_BATCH = 0
# PNG of predictions on a few fixed validation images every PERIOD iterations (0 = off)
_C.TEST.VIS = CN()
_C.TEST.VIS.PERIOD = 0
_C.TEST.VIS.NUM_IMAGES = 4
_C.TEST.VIS.SCORE_THRESHOLD = 0.5

# ---------------------------------------------------------------------------- #
# Logging and misc
# ---------------------------------------------------------------------------- #
_C.OUTPUT_DIR = "./output"
# < 0: a different random seed each run (logged); >= 0: fixed
_C.SEED = -1
# Fully deterministic CPU/cuDNN kernels (slower)
_C.DETERMINISTIC = False
_C.CUDNN_BENCHMARK = False
_C.LOG_PERIOD = 20
_C.WRITERS = CN()
# Prefix of the training loss keys in every writer: "" keeps the model's keys (core_loss,
# loss_ce, ...); e.g. "train/" logs train/core_loss, train/loss_ce, ... and train/total_loss
_C.WRITERS.TRAIN_PREFIX = ""
_C.WRITERS.TENSORBOARD = True
_C.WRITERS.WANDB = CN()
_C.WRITERS.WANDB.ENABLED = False
_C.WRITERS.WANDB.PROJECT = "segtrain"
# "online", "offline" or "disabled"
_C.WRITERS.WANDB.MODE = "offline"
