# Config validation and the helpers that turn the experiment matrix into file names.
import math
from pathlib import Path

from snakemake.utils import validate

from evaluators.registry import EVALUATOR_PACKAGES, load_task
from pixeldit.infra.shards import shard_sidecars, sidecar_template


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config.get("results", "results")
RUNS = config.get("runs", {})  # a text-to-image config may have none (its runs are under `t2i`)
AUTOENCODERS = config.get("autoencoders", {})
SAMPLING = config.get("sampling", {})


# Benchmarks with a rule of their own (options beyond inputs and --out); every other registered evaluator is run
# on a sample set by the generic rule `eval_registered`.
DEDICATED_EVALUATORS = ("imagenet", "geneval", "dpg", "digits")
REGISTERED_EVALUATORS = [name for name in EVALUATOR_PACKAGES if name not in DEDICATED_EVALUATORS]
_unknown = sorted(set(config.get("evaluators", [])) - {"imagenet", *REGISTERED_EVALUATORS})
if _unknown:
    raise ValueError(f"config evaluators {_unknown} cannot score class-conditional samples; use imagenet or one of "
                     f"the registered evaluators {REGISTERED_EVALUATORS} (evaluators/registry.py)")


wildcard_constraints:
    run="[A-Za-z0-9_.-]+",
    ae="[A-Za-z0-9_.-]+",
    kimg="[0-9]{7}",
    sampler="[A-Za-z0-9_.-]+",


def run_kind(run):
    """'train' runs are trained here; 'import' runs convert a released checkpoint."""
    return "import" if "checkpoint" in RUNS[run] else "train"


def eval_kimgs(run):
    spec = RUNS[run]
    if run_kind(run) == "import":
        return [spec.get("kimg", 0)]
    return spec.get("eval_kimg", [spec["kimg"]])


def check_names():
    """Preset and sampler names must resolve when the DAG is built: a typo would otherwise pass `snakemake -n`
    and fail in a sampling job after hours of training."""
    from pixeldit.presets import get_preset
    from pixeldit.samplers import get_sampler
    from pixeldit.train_autoencoder import AUTOENCODER_PRESETS

    t2i = config.get("t2i", {})
    problems = []
    for where, spec in [*((f"runs.{r}", s) for r, s in RUNS.items()),
                        *((f"t2i.runs.{r}", s) for r, s in t2i.get("runs", {}).items())]:
        if "preset" in spec:
            try:
                get_preset(spec["preset"])
            except KeyError as error:
                problems.append(f"{where}.preset: {error.args[0]}")
    for name, spec in AUTOENCODERS.items():
        if spec["preset"] not in AUTOENCODER_PRESETS:
            problems.append(f"autoencoders.{name}.preset: unknown autoencoder preset {spec['preset']!r}; "
                            f"known: {', '.join(AUTOENCODER_PRESETS)}")
    samplers = [("sampling.samplers", s) for s in SAMPLING.get("samplers", [])]
    samplers += [(f"runs.{r}.samplers", s) for r, spec in RUNS.items() for s in spec.get("samplers", [])]
    samplers += [("t2i.sampler", t2i["sampler"])] if "sampler" in t2i else []
    for where, name in samplers:
        try:
            get_sampler(name)
        except ValueError as error:
            problems.append(f"{where}: {error}")
    if "features" in config:
        from evaluators.imagenet.errors import ImageNetEvalError
        from evaluators.imagenet.extractors import normalise_features

        try:
            normalise_features(config["features"])
        except ImageNetEvalError as error:
            problems.append(f"features: {error}")
    if problems:
        raise ValueError("workflow config: " + "\n  ".join(problems))


check_names()


def check_eval_kimgs():
    """Curve points must be snapshots the trainer writes (every snapshot_kimg, and the final kimg)."""
    from pixeldit.presets import get_preset

    for run, spec in RUNS.items():
        if run_kind(run) == "import":
            continue
        every = {**get_preset(spec["preset"]), **spec.get("set", {})}["snapshot_kimg"]
        bad = [kimg for kimg in eval_kimgs(run) if kimg != spec["kimg"] and (kimg % every or kimg > spec["kimg"])]
        if bad:
            raise ValueError(f"runs.{run}.eval_kimg {bad}: training writes snapshots every {every} kimg "
                             f"(preset {spec['preset']}) up to kimg={spec['kimg']}; use multiples of {every} "
                             f"up to {spec['kimg']}, or set snapshot_kimg under runs.{run}.set")


check_eval_kimgs()



def network_file(run, kimg):
    if run_kind(run) == "import":
        return f"{RESULTS}/imported/{run}.safetensors"
    return f"{RESULTS}/runs/{run}/network-snapshot-{int(kimg):07d}.safetensors"


def final_network(run):
    """What a sampling job waits for: the run's last snapshot (intermediate ones exist by then)."""
    return network_file(run, RUNS[run].get("kimg", 0))


def features_args():
    """`--features ...` for `eval imagenet` and `ref build` when the config names extractors beyond inception;
    nothing otherwise (so a config without extras runs today's command)."""
    features = config.get("features") or ["inception"]
    return "" if list(features) == ["inception"] else "--features " + ",".join(features)


def samplers_of(run):
    return RUNS[run].get("samplers", SAMPLING["samplers"])


def sample_dir(run, kimg, sampler):
    return f"{RESULTS}/samples/{run}/{int(kimg):07d}/{sampler}"


def shard_files(wildcards):
    """The sidecars of every shard (each written after its .npz): what the merge waits for."""
    directory = sample_dir(wildcards.run, wildcards.kimg, wildcards.sampler)
    return shard_sidecars(directory, SAMPLING["n"], SAMPLING["shard_size"])


def shard_id(wildcards):
    return int(wildcards.first) // SAMPLING["shard_size"]


def metric_files():
    files = []
    for run in RUNS:
        for kimg in eval_kimgs(run):
            for sampler in samplers_of(run):
                for evaluator in config["evaluators"]:
                    files.append(f"{RESULTS}/metrics/{run}/{int(kimg):07d}/{sampler}/{evaluator}.json")
    return files


def rfid_files():
    return [f"{RESULTS}/metrics/{ae}/reconstruction/rfid/imagenet.json" for ae in AUTOENCODERS]


def train_inputs(wildcards):
    """The dataset, plus the autoencoder and latent cache of a latent run."""
    inputs = [f"{RESULTS}/data/{config['dataset']['name']}/dataset.json"]
    ae = RUNS[wildcards.run].get("autoencoder")
    if ae:
        inputs += [f"{RESULTS}/latent/{ae}/autoencoder.safetensors", f"{RESULTS}/latent/{ae}-train/latents.json"]
    return inputs


def latent_override(run):
    """--set latent={...} pointing a latent run at this workflow's autoencoder and cache."""
    ae = RUNS[run].get("autoencoder")
    if not ae:
        return ""
    return (f"--set 'latent={{\"cache\": \"{RESULTS}/latent/{ae}-train\", "
            f"\"autoencoder\": \"{RESULTS}/latent/{ae}\"}}'")


def report_outputs():
    return [f"{RESULTS}/report/report.md"]


def launcher(gpus):
    """The CLI, under torchrun when a rule gets more than one GPU (one process per GPU). The `--` keeps torchrun's
    parser off the CLI's options: it would read `sample --n` as an ambiguous abbreviation of its own `--nnodes`."""
    if int(gpus) > 1:
        return f"torchrun --standalone --nproc_per_node {int(gpus)} -m pixeldit.cli --"
    return "pixeldit-bench"


def threads_per_process(threads, gpus):
    """CPU threads for each of the rule's processes (torchrun starts one per GPU)."""
    return max(1, int(threads) // max(1, int(gpus)))


def labels(run):
    spec = RUNS[run]
    pairs = {"group": spec.get("group"), "variant": spec.get("variant", run), "dataset": config["dataset"]["name"]}
    return " ".join(f"--label {key}={value}" for key, value in pairs.items() if value is not None)
