"""The model's part of a bundle manifest, written alike for the live bundle (`pocketrank publish`,
server/bundle/publish.py) and for a canary variant (server/bundle/variants.py): its artifact files, their manifest
entries, the "model" section from export.json, and the signing key.

    from pocketrank.server.bundle.model_artifacts import manifest_artifacts, model_artifacts
    arts = model_artifacts("var/models/m-next")      # {"ranker": b"...", "encoder": b"..."}
    manifest_artifacts(arts)["ranker"]["file"]       # 'ranker.int8.onnx'
"""

from __future__ import annotations

from pathlib import Path

from pocketrank.exporter.signing import init_keys, load_private
from pocketrank.shared import wire

# Manifest name -> file, in the model directory and in the bundle (or variant) directory alike. The ranker
# int8; the user tower as a graph (fp32: it has no weights to quantize), for devices that fold their own
# state without pocketrank.shared.features.
MODEL_FILES = {"ranker": "ranker.int8.onnx", "encoder": "encoder.onnx"}


def model_artifacts(model_dir: Path) -> dict[str, bytes]:
    """Each model artifact's bytes, by manifest name."""
    return {name: (Path(model_dir) / f).read_bytes() for name, f in MODEL_FILES.items()}


def manifest_artifacts(artifacts: dict[str, bytes]) -> dict[str, dict]:
    """The manifest's `artifacts` section for `model_artifacts`' bytes."""
    return {name: {"file": MODEL_FILES[name], "sha256": wire.sha256_hex(d), "length": len(d)}
            for name, d in artifacts.items()}


def save_artifacts(out: Path, artifacts: dict[str, bytes]) -> None:
    """Write the artifacts into a bundle (or variant) directory, where /v1/artifacts serves them."""
    for name, d in artifacts.items():
        (Path(out) / MODEL_FILES[name]).write_bytes(d)


def write_bundle_dir(out: Path, entries: dict, artifacts: dict[str, bytes], manifest: bytes, signature: bytes
                     ) -> None:
    """Write a bundle (publish) or a canary variant directory atomically: everything goes into a hidden
    sibling first, then one rename puts it in place, so a server never serves half a directory (and a
    crash leaves only a `.building-*` folder behind). A rebuild replaces the old directory."""
    import base64
    import os
    import shutil

    from .item_entries import ITEMS_FILE, save

    out = Path(out)
    tmp = out.parent / f".building-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save(tmp / ITEMS_FILE, entries)
    save_artifacts(tmp, artifacts)
    (tmp / "manifest.sig").write_text(base64.b64encode(signature).decode() + "\n")
    (tmp / "manifest.json").write_bytes(manifest)
    if out.exists():  # a directory cannot be renamed over a non-empty one
        old = out.parent / f".old-{out.name}-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def model_section(export: dict) -> dict:
    """The manifest's `model` section from the model's export.json (the exporter's gates and formats)."""
    section = {"opset": export["opset"], "exporter": export["exporter"],
               "quantization": export["quantization"]["method"], "parity": export["parity"],  # gates within
               "encoder": {k: export["encoder"][k] for k in ("inputs", "outputs", "precision", "parity")}}
    if export.get("kind") == "sequence":  # what the device runs: the encoder over its history, and which ranker
        section.update(kind="sequence", ranker_kind=export["ranker_kind"])
        section["encoder"]["max_len"] = export["encoder"]["max_len"]
    return section


def load_signer(home):
    """The home's ed25519 signing key (created on first use)."""
    init_keys(home.keys)
    return load_private(home.keys)
