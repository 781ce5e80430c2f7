"""Runs transformers' own Dia and DAC for the Dia parity tests.

Executed as a separate process with the reference installation
(``.ref/transformers``, put there by ``scripts/setup.sh test``) on
``PYTHONPATH``; transformers never enters the test process or the package.
Usage: ``python dia_reference.py JOB.pt``: the job (a ``torch.save``\\d dict)
names an operation, its inputs, and an ``output`` path for a dict of tensors.

Operations:
- ``make``: a seeded random ``DiaForConditionalGeneration`` from ``model`` (its config dict) and
  a ``DacModel`` from ``dac`` (weight-normalised, Snake alphas random), saved with
  ``save_pretrained`` into ``directory`` and ``directory/dac``; ``std`` scales the weights and
  ``eos_scale`` multiplies the head row of channel 0's EOS.
- ``encode``: the encoder's output for ``ids`` under ``mask``.
- ``teacher``: the logits ``(B, T, channels, vocab)`` for decoder rows ``tokens`` (no cache).
- ``generate``: ``generate`` for ``ids`` (one request), with ``prompt`` frames if given, as the
  processor prepares its decoder inputs; returns the rows with the delay mask applied.
- ``process``: transformers' own logits processors for Dia on ``cond``/``uncond`` ``(steps,
  channels, vocab)``, one step after another (so the EOS countdown runs), and the resulting
  probabilities; ``clamp: false`` keeps a temperature below 1 that ``generate`` would clamp.
- ``dac_decode`` / ``dac_encode``: ``DacModel.decode(audio_codes=codes)`` and the codes of
  ``audio`` padded to whole frames, as ``DiaProcessor`` encodes a prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch


def _dia(directory: str) -> Any:
    from transformers import DiaForConditionalGeneration

    return DiaForConditionalGeneration.from_pretrained(directory, local_files_only=True).eval()


def _dac(directory: str) -> Any:
    from safetensors.torch import load_file
    from transformers import DacConfig, DacModel

    model = DacModel(DacConfig.from_pretrained(directory, local_files_only=True))
    weights = load_file(str(Path(directory) / "model.safetensors"))
    if any(".parametrizations." in name for name in weights):
        model.apply_weight_norm()
    model.load_state_dict(weights)
    return model.eval()


def make(job: dict[str, Any]) -> dict[str, torch.Tensor]:
    from transformers import (
        DacConfig,
        DacModel,
        DiaConfig,
        DiaDecoderConfig,
        DiaEncoderConfig,
        DiaForConditionalGeneration,
    )

    torch.manual_seed(job["seed"])
    spec = job["model"]
    config = DiaConfig(
        encoder_config=DiaEncoderConfig(**spec["encoder"]),
        decoder_config=DiaDecoderConfig(**spec["decoder"]),
        delay_pattern=spec["delay_pattern"],
    )
    model = DiaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not name.endswith("norm.weight"):
                parameter.normal_(0.0, job["std"])
        model.logits_dense.weight[config.decoder_config.eos_token_id] *= job["eos_scale"]
    model.save_pretrained(job["directory"])
    dac = DacModel(DacConfig(**job["dac"])).eval()
    with torch.no_grad():
        for name, parameter in dac.named_parameters():
            if name.endswith("alpha"):
                parameter.uniform_(0.5, 1.5)
    dac.apply_weight_norm()
    dac.save_pretrained(str(Path(job["directory"]) / "dac"))
    return {}


def encode(job: dict[str, Any]) -> dict[str, torch.Tensor]:
    model = _dia(job["directory"])
    with torch.no_grad():
        out = model.model.encoder(input_ids=job["ids"], attention_mask=job["mask"].long()).last_hidden_state
    return {"encoded": out}


def teacher(job: dict[str, Any]) -> dict[str, torch.Tensor]:
    model = _dia(job["directory"])
    tokens = job["tokens"]
    batch, steps, channels = tokens.shape
    with torch.no_grad():
        logits = model(
            input_ids=job["ids"], attention_mask=job["mask"].long(), decoder_input_ids=tokens, use_cache=False
        ).logits
    return {"logits": logits.view(batch, channels, steps, -1).transpose(1, 2)}


def _decoder_inputs(model: Any, prompt: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers.models.dia.processing_dia import DiaProcessor

    decoder = model.config.decoder_config
    delays = model.config.delay_pattern
    frames = 0 if prompt is None else len(prompt)
    length = 1 + frames + max(delays)
    undelayed = torch.full((1, length, decoder.num_channels), decoder.pad_token_id, dtype=torch.int)
    undelayed[:, 0] = decoder.bos_token_id
    if prompt is not None:
        undelayed[0, 1 : 1 + frames] = prompt.int()
    index = DiaProcessor.build_indices(
        bsz=1, seq_len=length, num_channels=decoder.num_channels, delay_pattern=delays, revert=False
    )
    delayed = DiaProcessor.apply_audio_delay(
        audio=undelayed, pad_token_id=decoder.pad_token_id, bos_token_id=decoder.bos_token_id, precomputed_idx=index
    )
    return delayed, torch.ones(1, length, dtype=torch.long)


def generate(job: dict[str, Any]) -> dict[str, torch.Tensor]:
    model = _dia(job["directory"])
    decoder_ids, decoder_mask = _decoder_inputs(model, job.get("prompt"))
    with torch.no_grad():
        rows = model.generate(
            input_ids=job["ids"],
            attention_mask=torch.ones_like(job["ids"]),
            decoder_input_ids=decoder_ids,
            decoder_attention_mask=decoder_mask,
            max_new_tokens=job["max_new_tokens"],
            do_sample=False,
            guidance_scale=job["guidance_scale"],
            top_k=job["guidance_top_k"],
        )
    return {"rows": rows[0]}


def process(job: dict[str, Any]) -> dict[str, torch.Tensor]:
    from transformers import GenerationConfig

    model = _dia(job["directory"])
    decoder = model.config.decoder_config
    config = GenerationConfig(
        do_sample=True,
        temperature=job["temperature"],
        top_p=job["top_p"],
        top_k=job["top_k"],
        guidance_scale=job["guidance_scale"],
        max_length=job["max_length"],
        pad_token_id=decoder.pad_token_id,
        eos_token_id=decoder.eos_token_id,
        bos_token_id=decoder.bos_token_id,
    )
    model._uses_cfg = True
    config, _ = model._prepare_generation_config(config)  # clamps a temperature below 1 to 1
    config.max_length = job["max_length"]
    if not job["clamp"]:
        config.temperature = job["temperature"]
    processors = model._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=1,
        encoder_input_ids=job["cond"][:1, 0],
        device="cpu",
        model_kwargs={},
    )
    cond, uncond = job["cond"], job["uncond"]
    steps, channels, vocab = cond.shape
    input_ids = torch.full((channels, job["rows_before"]), decoder.bos_token_id, dtype=torch.long)
    probs = []
    for step in range(steps):
        scores = torch.cat([cond[step], uncond[step]]).float()
        scores = processors(input_ids, scores)
        probs.append(torch.softmax(scores, dim=-1))
        input_ids = torch.cat([input_ids, torch.zeros(channels, 1, dtype=torch.long)], dim=1)
    return {"probs": torch.stack(probs)}


def dac_decode(job: dict[str, Any]) -> dict[str, torch.Tensor]:
    model = _dac(job["directory"])
    with torch.no_grad():
        return {"audio": model.decode(audio_codes=job["codes"]).audio_values}


def dac_encode(job: dict[str, Any]) -> dict[str, torch.Tensor]:
    model = _dac(job["directory"])
    audio = job["audio"]
    audio = torch.nn.functional.pad(audio, (0, -audio.shape[-1] % model.config.hop_length))
    with torch.no_grad():
        return {"codes": model.encode(audio[:, None]).audio_codes}


OPERATIONS = {
    "make": make,
    "encode": encode,
    "teacher": teacher,
    "generate": generate,
    "process": process,
    "dac_decode": dac_decode,
    "dac_encode": dac_encode,
}

if __name__ == "__main__":
    job = torch.load(sys.argv[1], weights_only=True)
    torch.save(OPERATIONS[job["op"]](job), job["output"])
