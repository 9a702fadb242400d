"""RoentGen-v2 (Stanford, arXiv 2508.16783) through diffusers: a chest-X-ray text-to-image diffusion model.

The weights are gated on the Hugging Face hub: accept the licence at https://huggingface.co/stanfordmimi/RoentGen-v2,
log in (``huggingface-cli login`` or ``HF_TOKEN``), or download once and set ``generator.model_id`` to the local
folder. Real use needs a GPU (reference: 512 px, 75 PNDM steps, guidance 3, bf16). Install with the
``roentgen`` extra. Each image has its own seed (its own ``torch.Generator``), so an image does not depend on
the batch it was drawn in, and a resumed run makes the same images.

Prompts follow RoentGen-v2's published format, ``"<age> year old <race> <sex>. <finding>"`` (e.g. "50 year old
White female. Normal chest radiograph."): the format of its demo prompts (``demo_data/demo_inference_prompts.csv``
in github.com/StanfordMIMI/RoentGen-v2, column ``prompt_variation``), whose race values are ``RACES``. The demo
file writes them in capitals (``WHITE``); CLIP's tokenizer lowercases every prompt, so the model sees the same
tokens either way. Race is a grid attribute of this generator (``grid_attributes``), recorded per image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.generate.base import Counts
from cxrsyn.generate.cost import Billing
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore

DTYPES = ("float32", "float16", "bfloat16")
# The race categories of RoentGen-v2's demo prompts (demo_data/demo_inference_prompts.csv)
RACES = ("White", "Black", "Asian", "Hispanic")
TEMPLATE = "{age} year old {race} {sex}. {finding}."


@dataclass
class RoentGen:
    """``generator=roentgen``."""

    n_per_class: int = 150
    prompt_template: str = TEMPLATE
    model_id: str = "stanfordmimi/RoentGen-v2"
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "bfloat16"  # float32 on CPU whatever is set here: CPU half precision is slow or unsupported
    steps: int = 75
    guidance_scale: float = 3.0
    resolution: int = 512
    batch_size: int = 4
    local_files_only: bool = False
    show_progress: bool = True
    grid_attributes: Mapping[str, Sequence[str]] = field(default_factory=lambda: {"race": list(RACES)})

    name = "roentgen"

    @property
    def model(self) -> str:
        return self.model_id

    def image_settings(self) -> dict[str, Any]:
        """The settings that change the images (a folder holds images of one set of them)."""
        return {
            "model_id": self.model_id,
            "prompt_template": self.prompt_template,
            "steps": self.steps,
            "guidance_scale": self.guidance_scale,
            "resolution": self.resolution,
            "dtype": self.dtype,
        }

    def billing(self) -> Billing | None:
        return None

    def paid_calls(self, n: int) -> str:
        return f"none; {n} images x {self.steps} denoising steps on {self.device}"

    def check_ready(self) -> None:
        pass

    def generate(self, requests: Sequence[ImageRequest], store: OutputStore) -> Counts:
        import torch

        if self.dtype not in DTYPES:
            raise CxrsynError(f"generator.dtype={self.dtype!r}; use one of {', '.join(DTYPES)}")
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        dtype = getattr(torch, self.dtype) if device != "cpu" else torch.float32
        pipeline = self._load(dtype).to(device)
        pipeline.set_progress_bar_config(disable=True)
        counts = Counts()
        batches = [
            requests[i : i + self.batch_size] for i in range(0, len(requests), max(1, self.batch_size))
        ]
        with tqdm(total=len(requests), desc="roentgen", unit="img", disable=not self.show_progress) as bar:
            for batch in batches:
                generators = [torch.Generator(device="cpu").manual_seed(request.seed) for request in batch]
                images = pipeline(
                    prompt=[request.prompt for request in batch],
                    num_inference_steps=self.steps,
                    guidance_scale=self.guidance_scale,
                    height=self.resolution,
                    width=self.resolution,
                    generator=generators,
                    output_type="pil",
                ).images
                for request, image in zip(batch, images, strict=True):
                    # CLIP reads at most model_max_length (77) tokens: record what the model actually saw
                    tokens = len(pipeline.tokenizer(request.prompt).input_ids)
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                    extra = {
                        "model_version": self.model_id,
                        "steps": self.steps,
                        "guidance_scale": self.guidance_scale,
                        "resolution": self.resolution,
                        "dtype": str(dtype).removeprefix("torch."),
                        "device": device,
                        "prompt_tokens": tokens,
                        "prompt_truncated": tokens > pipeline.tokenizer.model_max_length,
                    }
                    store.save(request, buffer.getvalue(), extra)
                    counts.ok += 1
                bar.update(len(batch))
        return counts

    def _load(self, dtype):  # noqa: ANN001, ANN202 - torch dtype in, diffusers pipeline out
        try:
            from diffusers import DiffusionPipeline
        except ImportError:
            raise CxrsynError("generator=roentgen needs diffusers: pip install -e '.[roentgen]'") from None
        try:
            # dtype=, not torch_dtype= (deprecated in diffusers 0.40, removed in 1.0); 0.40 is the floor
            return DiffusionPipeline.from_pretrained(
                self.model_id, dtype=dtype, local_files_only=self.local_files_only
            )
        except (OSError, ValueError) as error:
            detail = " ".join(str(error).split())[:160]
            raise CxrsynError(
                f"cannot load generator.model_id={self.model_id!r} ({detail}); RoentGen-v2 is gated: accept its "
                "licence on huggingface.co, log in (huggingface-cli login or HF_TOKEN), or set generator.model_id "
                "to a local copy"
            ) from None
