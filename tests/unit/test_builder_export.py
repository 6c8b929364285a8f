"""The tiny-base builder's export writes configs without the builder's local paths."""

from __future__ import annotations

import json

from diffusers import AutoencoderKL

from tools.build_tiny_base.export import scrub_local_paths


def test_resaved_parent_configs_carry_no_local_path(tmp_path):
    # A network loaded from a folder remembers that folder and writes it back on save.
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4).save_pretrained(
        tmp_path / "parent" / "vae"
    )
    reloaded = AutoencoderKL.from_pretrained(tmp_path / "parent" / "vae")
    reloaded.save_pretrained(tmp_path / "out" / "vae")
    written = tmp_path / "out" / "vae" / "config.json"
    assert "_name_or_path" in json.loads(written.read_text())

    scrub_local_paths(tmp_path / "out")

    assert "_name_or_path" not in json.loads(written.read_text())
    # Same bytes as a fresh save of the same network: a rebuild with unchanged weights leaves
    # the committed configs unchanged.
    assert written.read_text() == (tmp_path / "parent" / "vae" / "config.json").read_text()


def test_resaved_parent_tokenizer_config_is_unchanged(tmp_path):
    # transformers writes its load-time arguments (is_local, local_files_only, padding_side,
    # ...) back into tokenizer_config.json: a rebuild from --parent must not change the file.
    from transformers import CLIPTokenizer

    from tools.build_tiny_base.training import build_text_model

    tokenizer, _ = build_text_model(["a street at night", "a tube"], seed=0)
    tokenizer.save_pretrained(tmp_path / "parent" / "tokenizer")
    reloaded = CLIPTokenizer.from_pretrained(tmp_path / "parent" / "tokenizer")
    reloaded.save_pretrained(tmp_path / "out" / "tokenizer")
    original = (tmp_path / "parent" / "tokenizer" / "tokenizer_config.json").read_text()
    written = tmp_path / "out" / "tokenizer" / "tokenizer_config.json"
    assert written.read_text() != original

    scrub_local_paths(tmp_path / "out")

    assert written.read_text() == original
    again = CLIPTokenizer.from_pretrained(tmp_path / "out" / "tokenizer")
    assert again("a street").input_ids == tokenizer("a street").input_ids
