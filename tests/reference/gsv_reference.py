"""Runs GPT-SoVITS's own torch modules (from ``gpt-sovits-cpufast``) for the parity tests.

Executed as a separate process with the reference installation on
``PYTHONPATH`` (its top-level ``AR``, ``module``, ``tools`` and ``config``
never enter the test process).  Usage: ``python gsv_reference.py JOB.json``;
the job names an operation, its inputs, and an ``.npz`` file for the outputs.

Operations:
- ``make_t2s``: build a ``Text2SemanticDecoder`` from ``config`` with ``seed`` and write a
  real-format s1 checkpoint (``{"weight": {"model." + name: tensor}, "config": config}``);
  ``eos_scale`` multiplies the end-of-speech row of the output head (so generation ends early).
- ``teacher``: logits for every step when the tokens ``forced`` are fed, the way
  ``infer_panel`` runs (prompt processing, then one token per step).
- ``generate``: ``infer_panel`` with the given sampling settings (tokens after the prompt).
- ``sample``: ``logits_to_probs`` and the draw ``argmax(probs / q)`` on given logits, tokens and noise.
- ``phonemes``: upstream's English front end (``clean_text`` then ``cleaned_text_to_sequence``, v2) for
  each of ``texts``, and the v2 symbol table.
- ``make_hubert``: a tiny random HuBERT in the Hugging Face layout (``config.json``,
  ``preprocessor_config.json``, ``pytorch_model.bin``) from ``config``, built with the reference's
  own ``cnhubert`` module.
- ``hubert``: upstream's prompt extraction: the 16 kHz ``audio`` plus its trailing zeros through
  ``CNHubert``'s model, then the s2 ``checkpoint``'s ``extract_latent``; features and tokens, and
  the tokens ``extract_latent`` gives for ``varied_features`` (random, so every frame differs).
- ``make_s2``: build a v2 ``SynthesizerTrn`` from ``hps`` with ``seed`` (every weight random, including
  the ones upstream initialises to zero, so no block is an identity) and write a real-format s2
  checkpoint: fp16 weights without ``enc_q``, header bytes replaced by ``04``.
- ``sovits``: load that checkpoint as upstream does and decode ``codes`` for ``text`` with the
  reference ``audio``: the speaker vector, the prior statistics, ``decode`` with the noise off, and
  the flow and generator run on the given ``noise``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch


def _model(path: str) -> torch.nn.Module:
    from AR.models.t2s_model import Text2SemanticDecoder

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = Text2SemanticDecoder(checkpoint["config"])
    model.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["weight"].items()})
    model.rebuild_t2s_transformer()
    return model.eval()


def make_t2s(job: dict) -> dict:
    from AR.models.t2s_model import Text2SemanticDecoder

    torch.manual_seed(job["seed"])
    model = Text2SemanticDecoder(job["config"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(torch.rand(()) + 0.5)  # learnt in real voices; not 1.0, so the test sees it
        model.ar_predict_layer.weight[-1] *= job.get("eos_scale", 1.0)
    weights = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"weight": weights, "config": job["config"]}, job["checkpoint"])
    return {}


def teacher(job: dict) -> dict:
    model = _model(job["checkpoint"])
    x = torch.tensor([job["phonemes"]])
    bert = torch.zeros(1, 1024, x.shape[1])
    prompt = torch.tensor([job["prompt"]])
    with torch.no_grad():
        text = model.ar_text_position(model.ar_text_embedding(x) + model.bert_proj(bert.transpose(1, 2)))
        audio = model.ar_audio_position(model.ar_audio_embedding(prompt))
        xy = torch.cat([text, audio], dim=1)
        n_text, n_audio = x.shape[1], prompt.shape[1]
        masked = torch.zeros(n_text + n_audio, n_text + n_audio, dtype=torch.bool)
        masked[:n_text, n_text:] = True
        masked[n_text:, n_text:] = torch.triu(torch.ones(n_audio, n_audio, dtype=torch.bool), diagonal=1)
        mask = masked.view(1, 1, n_text + n_audio, n_text + n_audio).expand(1, model.num_head, -1, -1)
        out, k_cache, v_cache, cache_len = model.t2s_transformer.process_prompt(xy, mask, 64, None, True)
        logits = [model.ar_predict_layer(out[:, -1])]
        position = model.ar_audio_position
        for i, token in enumerate(job["forced"]):
            emb = model.ar_audio_embedding(torch.tensor([[token]]))
            step_in = emb * position.x_scale + position.alpha * position.pe[:, n_audio + i].to(emb.dtype)
            out, k_cache, v_cache, cache_len = model.t2s_transformer.decode_next_token(
                step_in, k_cache, v_cache, cache_len, None, True
            )
            logits.append(model.ar_predict_layer(out[:, -1]))
    return {"logits": torch.cat(logits).numpy()}


def generate(job: dict) -> dict:
    model = _model(job["checkpoint"])
    x = torch.tensor([job["phonemes"]])
    prompt = torch.tensor([job["prompt"]])
    with torch.no_grad():
        y, _ = model.infer_panel(
            x,
            torch.tensor([x.shape[1]]),
            prompt,
            torch.zeros(1, 1024, x.shape[1]),
            top_k=job["top_k"],
            top_p=job["top_p"],
            temperature=job["temperature"],
            repetition_penalty=job["repetition_penalty"],
            early_stop_num=job["early_stop_num"],
        )
    return {"tokens": y[0, prompt.shape[1] :].numpy()}


def sample(job: dict) -> dict:
    from AR.models.utils import logits_to_probs

    logits = torch.tensor(np.array(job["logits"], dtype=np.float32))
    previous = torch.tensor(job["previous"])
    noise = torch.tensor(np.array(job["noise"], dtype=np.float32))
    probs = logits_to_probs(
        logits.clone(),
        previous,
        temperature=job["temperature"],
        top_k=job["top_k"],
        top_p=job["top_p"],
        repetition_penalty=job["repetition_penalty"],
    )
    return {"probs": probs.numpy(), "tokens": torch.argmax(probs / noise, dim=-1).numpy()}


def phonemes(job: dict) -> dict:
    from text import cleaned_text_to_sequence, symbols2
    from text.cleaner import clean_text

    ids = [cleaned_text_to_sequence(clean_text(text, "en", "v2")[0], "v2") for text in job["texts"]]
    width = max(len(row) for row in ids)
    return {
        "ids": np.array([row + [-1] * (width - len(row)) for row in ids]),
        "symbols": np.array(symbols2.symbols),
    }


def make_hubert(job: dict) -> dict:
    import os
    from types import SimpleNamespace

    from feature_extractor.cnhubert import HubertInferenceModel

    torch.manual_seed(job["seed"])
    model = HubertInferenceModel(SimpleNamespace(**job["config"]))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("layer_norm.weight", "layer_norm.bias")):
                tensor.add_(0.1 * torch.randn_like(tensor))
    directory = job["directory"]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(job["config"], f)
    with open(os.path.join(directory, "preprocessor_config.json"), "w") as f:
        json.dump({"sampling_rate": 16000, "do_normalize": True, "feature_size": 1, "padding_value": 0.0}, f)
    torch.save(model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
    return {}


def hubert(job: dict) -> dict:
    import io

    from feature_extractor.cnhubert import CNHubert

    with open(job["checkpoint"], "rb") as f:
        data = f.read()
    checkpoint = torch.load(io.BytesIO(b"PK" + data[2:]), map_location="cpu", weights_only=True)
    synthesizer = _synthesizer(checkpoint["config"]).eval()
    synthesizer.load_state_dict(checkpoint["weight"], strict=False)
    model = CNHubert(job["directory"]).eval()
    wav = torch.tensor(np.array(job["audio"], dtype=np.float32))
    wav = torch.cat([wav, torch.zeros(int(32000 * 0.3))])  # what TTS._set_prompt_semantic appends
    with torch.no_grad():
        features = model.model(wav.unsqueeze(0))["last_hidden_state"].transpose(1, 2)
        codes = synthesizer.extract_latent(features)
        varied = torch.tensor(np.array(job["varied_features"], dtype=np.float32))
        varied_codes = synthesizer.extract_latent(varied)
    return {"features": features.numpy(), "tokens": codes[0, 0].numpy(), "varied_tokens": varied_codes[0, 0].numpy()}


def _synthesizer(hps: dict) -> torch.nn.Module:
    from module.models import SynthesizerTrn

    data = hps["data"]
    return SynthesizerTrn(
        data["filter_length"] // 2 + 1,
        hps["train"]["segment_size"] // data["hop_length"],
        n_speakers=data["n_speakers"],
        **hps["model"],
    )


def make_s2(job: dict) -> dict:
    import io

    torch.manual_seed(job["seed"])
    model = _synthesizer(job["hps"])
    with torch.no_grad():
        state = model.state_dict()
        for name, tensor in state.items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("_codebook.embed"):
                # Small, like a trained codebook next to ssl_proj's outputs: nearest-vector picks vary.
                tensor.copy_(0.1 * torch.randn_like(tensor))
            elif name.endswith("_codebook.inited"):
                tensor.fill_(1.0)  # a trained codebook: no k-means initialisation on first use
            elif name.endswith("weight_g"):
                tensor.mul_(2.0)  # upstream's N(0, 0.01) init leaves HiFi-GAN almost silent
            elif name.endswith(("gamma", "beta")) or ".post." in name or "emb_rel" in name:
                tensor.add_(0.1 * torch.randn_like(tensor))
        model.load_state_dict(state)
    weights = {k: v.half() for k, v in model.state_dict().items() if not k.startswith("enc_q")}
    buffer = io.BytesIO()
    torch.save({"weight": weights, "config": job["hps"], "info": "tiny test voice"}, buffer)
    with open(job["checkpoint"], "wb") as f:
        f.write(b"04" + buffer.getvalue()[2:])
    return {}


def sovits(job: dict) -> dict:
    import io

    from module.mel_processing import spectrogram_torch

    with open(job["checkpoint"], "rb") as f:
        data = f.read()
    checkpoint = torch.load(io.BytesIO(b"PK" + data[2:]), map_location="cpu", weights_only=True)
    hps = checkpoint["config"]
    model = _synthesizer(hps).eval()
    model.load_state_dict(checkpoint["weight"], strict=False)
    d = hps["data"]
    audio = torch.tensor(np.array(job["audio"], dtype=np.float32)).unsqueeze(0)
    refer = spectrogram_torch(audio, d["filter_length"], d["sampling_rate"], d["hop_length"], d["win_length"])
    codes = torch.tensor([[job["codes"]]])
    text = torch.tensor([job["text"]])
    noise = torch.tensor(np.array(job["noise"], dtype=np.float32)).unsqueeze(0)
    with torch.no_grad():
        ge, _ = model.build_decode_condition(refer)
        silent = model.decode(codes, text, refer, noise_scale=0.0)
        quantized = model.quantizer.decode(codes)
        quantized = torch.nn.functional.interpolate(quantized, size=quantized.shape[-1] * 2, mode="nearest")
        lengths = torch.tensor([quantized.shape[-1]])
        _, m_p, logs_p, y_mask, _, _ = model.enc_p(quantized, lengths, text, torch.tensor([text.shape[1]]), ge)
        z_p = m_p + noise * torch.exp(logs_p) * job["noise_scale"]
        noisy = model.dec(model.flow(z_p, y_mask, g=ge, reverse=True) * y_mask, g=ge)
    return {
        "spectrogram": refer.numpy(),
        "speaker": ge.numpy(),
        "mean": m_p.numpy(),
        "log_scale": logs_p.numpy(),
        "silent": silent[0, 0].numpy(),
        "noisy": noisy[0, 0].numpy(),
    }


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    result = {
        "make_t2s": make_t2s,
        "teacher": teacher,
        "generate": generate,
        "sample": sample,
        "phonemes": phonemes,
        "make_s2": make_s2,
        "make_hubert": make_hubert,
        "hubert": hubert,
        "sovits": sovits,
    }[job["op"]](job)
    np.savez(job["output"], **result)
