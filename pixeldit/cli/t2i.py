"""`pixeldit-bench t2i ...`: generate text-to-image benchmark images (thin: parse, call, print)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pixeldit.cli.console import console, exits_on
from pixeldit.infra.shards import parse_shard_ids
from pixeldit.samplers import get_sampler
from pixeldit.t2i_generate import check_prompt_set, finish_prompt_set, generate_prompt_set, load_prompt_set

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
                  help="Text-to-image PixelDiT: generate GenEval / DPG / digit images and finish a prompt set "
                       "(import the release with `weights import t2i`).")


@app.command("generate")
def generate(
    network: Annotated[Path, typer.Argument(help="A T2I run directory (latest snapshot) or network .safetensors.")],
    out: Annotated[Path, typer.Option(help="Output folder, in the prompt set's layout.")],
    prompts: Annotated[str, typer.Option(help="geneval | dpg | a caption set (digits).", rich_help_panel="Sampling")] = "geneval",
    sampler: Annotated[str, typer.Option(help="Preset (paper-t2i-1024, paper-t2i-512, ...) or a sampler key.",
                                         rich_help_panel="Sampling")] = "paper-t2i-1024",
    seed: Annotated[int, typer.Option(help="Sample j of prompt p depends only on (seed, p, j).",
                                      rich_help_panel="Sampling")] = 0,
    samples_per_prompt: Annotated[Optional[int], typer.Option(help="Images per prompt (GenEval / DPG: 4).",
                                                              rich_help_panel="Sampling")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Square image size (default: recorded in the network).",
                                                      rich_help_panel="Sampling")] = None,
    text_encoder: Annotated[Optional[str], typer.Option(help="Override the recorded encoder (gemma-2-2b-it, "
                                                             "all-minilm-l6-v2, tiny-gemma2).",
                                                        rich_help_panel="Sampling")] = None,
    negative_prompt: Annotated[str, typer.Option(help="The CFG branch's prompt ('' = unconditional).",
                                                 rich_help_panel="Sampling")] = "",
    quantization: Annotated[str, typer.Option(help="uint8 rounding: 'round' or 'floor'.", rich_help_panel="Sampling")] = "round",
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast around the model.", rich_help_panel="Compute")] = False,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (CFG doubles it).", rich_help_panel="Compute")] = 8,
    device: Annotated[Optional[str], typer.Option(help="torch device (default: cuda:$LOCAL_RANK if present, else cpu).",
                                                  rich_help_panel="Compute")] = None,
    shard_size: Annotated[int, typer.Option(help="Prompts per shard.", rich_help_panel="Shards")] = 50,
    shards: Annotated[Optional[str], typer.Option(help="Shard ids to fill, e.g. '0,3,5-7' (default: all).",
                                                  rich_help_panel="Shards")] = None,
    finish: Annotated[bool, typer.Option("--finish/--no-finish", help="Without --shards, check the whole set and "
                                                                     "write samples.json (+ samples.npz) when done.",
                                         rich_help_panel="Shards")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved settings and exit.")] = False,
) -> None:
    """Generate images for a prompt set, resumably: rerunning skips finished shards (checked by sha256).

    Independent jobs may fill different --shards of one --out; then `t2i finish OUT` checks and merges.

    [b]Examples[/b]
      pixeldit-bench t2i generate results/imported/pixeldit-t2i-1024.safetensors --prompts geneval --bf16 --out results/t2i/geneval
      pixeldit-bench t2i generate results/imported/pixeldit-t2i-1024.safetensors --prompts dpg --bf16 --out results/t2i/dpg
      pixeldit-bench t2i generate results/runs/digits32-t2i-s4-0 --prompts digits --samples-per-prompt 50 \\
          --sampler flow-dpm-20-cfg --out results/t2i/digits
    """
    with exits_on(ValueError):
        chosen = get_sampler(sampler)
        shard_ids = parse_shard_ids(shards)
        prompt_set = load_prompt_set(prompts)
    if dry_run:
        console.print_json(json.dumps({"network": str(network), "prompts": prompts, "count": len(prompt_set.items),
                                       "layout": prompt_set.layout, "sampler": chosen.key, "seed": seed,
                                       "samples_per_prompt": samples_per_prompt, "shard_size": shard_size,
                                       "shards": shard_ids, "out": str(out), "bf16": bf16}))
        return
    with exits_on(ValueError, FileNotFoundError, OSError, FloatingPointError):
        result = generate_prompt_set(network, out, prompts, chosen, seed, samples_per_prompt=samples_per_prompt,
                                     shard_size=shard_size, shard_ids=shard_ids, batch_size=batch_size,
                                     resolution=resolution, text_encoder=text_encoder, negative_prompt=negative_prompt,
                                     device=device, autocast_bf16=bf16, quantization=quantization)
    console.print(f"{len(result['written'])} shards written, {len(result['skipped'])} already complete in {out}")
    if finish and shard_ids is None:
        try:
            console.print(f"complete: {finish_prompt_set(out)}")
        except (ValueError, FileNotFoundError) as error:   # e.g. other ranks still at work
            console.print(f"not finished yet ({error}); afterwards run: pixeldit-bench t2i finish {out}")


@app.command("finish")
def finish_command(
    out: Annotated[Path, typer.Argument(help="A folder written by `t2i generate`.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the shards and print the card; write nothing.")] = False,
) -> None:
    """Check that every shard of the prompt set is there and intact, merge a caption set into samples.npz, and
    write samples.json (loads no model: run it once after independent jobs filled the shards).

    [b]Examples[/b]
      pixeldit-bench t2i finish results/t2i/geneval
    """
    with exits_on(ValueError, FileNotFoundError, OSError):
        if dry_run:
            console.print_json(json.dumps(check_prompt_set(out)))
            return
        console.print(f"complete: {finish_prompt_set(out)}")
