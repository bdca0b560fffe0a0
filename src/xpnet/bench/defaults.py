"""What a sweep is made of by default, and the thresholds its report and gate apply."""

PRESETS = {
    "small": [64, 128, 128, 10],
    "mnist": [784, 1024, 1024, 10],
    "wide": [4096, 4096, 4096, 4096, 4096],
    "large": [1024, 4096, 4096, 4096, 1024],
}
IMPLEMENTATIONS = ("xpnet", "reference", "torch")
DEFAULT_BATCH_SIZES = tuple(2**k for k in range(5, 14))  # 32 ... 8192
GATED_RATIOS = ("efficiency", "speedup_vs_torch", "speedup_vs_reference")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
MIN_ROUNDS = 3  # fewer rounds give no meaningful quartiles
DEFAULT_MIN_TIME = 0.2  # seconds per round per implementation: long enough for a timer and a scheduler
MAX_STEPS_PER_ROUND = 1_000_000  # caps calibration (and a probe) for implausibly fast steps
# A point is "noisy" when an implementation's IQR over rounds exceeds this fraction of its median:
# its ratios then move by about as much between runs, which is close to a CI gate's tolerance.
NOISY_RELATIVE_IQR = 0.10
OUTPUT_FILES = ("results.json", "results.csv", "throughput.png", "efficiency.png")
CSV_EXTRA = ("noisy", "floor_iqr_ms", "torch_ms", "torch_iqr_ms", "reference_ms", "reference_iqr_ms")
