"""Build the tiny Llama the real-vLLM tests and `make demo ENGINE=vllm` serve: nothing comes from a model hub.

A randomly initialised LlamaConfig (hidden 128, intermediate 256, 2 layers, 4 heads, vocab 2048, 4096
positions, bf16: 0.85 M parameters) saved as safetensors, and a byte-level BPE tokenizer trained on this
repository's own text, saved as a PreTrainedTokenizerFast. Seeded: the same files on every machine.

Runs under the vLLM environment's python (it needs torch, transformers and tokenizers):
    <vllm python> scripts/build-tiny-model.py OUT_DIR
Idempotent: an OUT_DIR holding a complete model (its ``.complete`` marker) is left as it is.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

VOCAB = 2048
REPO = Path(__file__).resolve().parents[1]


def corpus() -> list[str]:
    """Local text to train the tokenizer on: the repository's docs and Python sources, in a fixed order."""
    files = sorted([*REPO.glob("*.md"), *REPO.glob("autoscaler/**/*.py")])
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=4096)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         torch_dtype="bfloat16", tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.bfloat16)

    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(scratch, safe_serialization=True)
        fast.save_pretrained(scratch)
        (scratch / ".complete").write_text("tiny-llama\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(scratch, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"built the tiny Llama ({params / 1e6:.2f} M parameters) in {out}")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-3].strip(), file=sys.stderr)
        return 2
    out = Path(sys.argv[1]).resolve()
    if (out / ".complete").is_file():
        print(f"tiny Llama ready in {out}")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    build(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
