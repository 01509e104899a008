"""Prompt → z0 plumbing for the text-to-image sampling tools: interpolation and latent arithmetic.

Both act on the VE latents ``z0`` of prompts *before* the ODE (as the official ``demo_t2i_arith.py``),
then integrate and decode. The math lives in :mod:`crossflow.latent_ops`; this mixin only encodes
prompts, runs the flow and decodes. It expects the host task to provide ``encode_prompts``,
``decode`` and ``config.sample`` (as :class:`~tasks.t2i.task.TextToImageTask` does).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from crossflow.latent_ops import interpolate_latents, latent_arithmetic


def _require_z0(model: Any) -> None:
    if not hasattr(model, "initial_latent"):
        raise ValueError(f"{type(model).__name__} has no source latent z0 (the cross-attention baseline starts "
                         f"from noise); interpolation and latent arithmetic need a CrossFlow model")


class PromptLatentTools:
    """Mixin: ``prompt_latents``, ``images_from_latents``, ``interpolate_images``, ``arithmetic_images``."""

    def _sample_options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        s = self.config.sample
        opts = {"solver": s.solver, "steps": s.steps, "guidance": s.guidance, "z0": s.z0,
                "temperature": s.temperature, "time_grid": getattr(s, "time_grid", "uniform"), "seed": s.seed}
        unknown = set(overrides) - set(opts)
        if unknown:
            raise ValueError(f"unknown sampling option(s) {sorted(unknown)}; valid: {sorted(opts)}")
        return opts | overrides

    @torch.no_grad()
    def prompt_latents(self, model: Any, prompts: list[str], **overrides: Any) -> Tensor:
        """VE latents ``z0`` of ``prompts``: ``(B, C, H, W)``, the mean or a posterior sample (``z0``, ``temperature``).

        The posterior noise comes from a generator seeded with ``seed``, drawn for the whole list at once.
        """
        _require_z0(model)
        opts = self._sample_options(overrides)
        device = next(model.parameters()).device
        src, mask = self.encode_prompts(prompts, device)
        gen = torch.Generator(device=device).manual_seed(int(opts["seed"]))
        return model.initial_latent(src, mask, z0=opts["z0"], temperature=opts["temperature"], generator=gen)

    @torch.no_grad()
    def images_from_latents(self, model: Any, z0: Tensor, **overrides: Any) -> Tensor:
        """Integrate ``z0`` ``(B, C, H, W)`` with guidance and decode: images in [-1, 1] ``(B, 3, H', W')`` on the CPU."""
        _require_z0(model)
        opts = self._sample_options(overrides)
        grid = {} if opts["time_grid"] == "uniform" else {"grid": opts["time_grid"]}
        out = []
        for i in range(0, z0.shape[0], self.config.sample.batch_size):
            z1 = model.integrate(z0[i:i + self.config.sample.batch_size], guidance=opts["guidance"],
                                 solver=opts["solver"], steps=opts["steps"], **grid)
            out.append(self.decode(z1).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def interpolate_images(self, model: Any, prompt_a: str, prompt_b: str, frames: int,
                           **overrides: Any) -> tuple[Tensor, Tensor]:
        """Images along the straight line between the two prompts' ``z0``.

        Returns:
            ``(images, latents)``: ``(frames, 3, H, W)`` in [-1, 1] and the ``(frames, C, h, w)`` start latents
            (the first and last are the prompts' own ``z0``).
        """
        z = self.prompt_latents(model, [prompt_a, prompt_b], **overrides)
        latents = interpolate_latents(z[0], z[1], frames)
        return self.images_from_latents(model, latents, **overrides), latents

    @torch.no_grad()
    def arithmetic_images(self, model: Any, ori: str, add: Optional[str] = None, sub: Optional[str] = None, *,
                          add_scale: float = 1.0, sub_scale: float = 1.0, renormalize: bool = True,
                          **overrides: Any) -> dict[str, Tensor]:
        """Images of ``ori``, ``add``, ``sub`` and of the combined latent ``ori + add_scale·add − sub_scale·sub``.

        Returns:
            ``{"ori": (1, 3, H, W), "add": ..., "sub": ..., "result": ...}`` in [-1, 1] (absent terms left out),
            plus ``"result_z0"``, the combined start latent ``(1, C, h, w)``.
        """
        if add is None and sub is None:
            raise ValueError("latent arithmetic needs --add or --sub (or both)")
        named = {"ori": ori} | ({"add": add} if add is not None else {}) | ({"sub": sub} if sub is not None else {})
        z = dict(zip(named, self.prompt_latents(model, list(named.values()), **overrides).split(1)))
        result = latent_arithmetic(z["ori"], z.get("add"), z.get("sub"), add_scale=add_scale, sub_scale=sub_scale,
                                   renormalize=renormalize)
        images = self.images_from_latents(model, torch.cat(list(z.values()) + [result]), **overrides)
        out = dict(zip(list(named) + ["result"], images.split(1)))
        out["result_z0"] = result.cpu()
        return out
