"""APRIL-GAN adapters (Chen et al. 2023): per-stage linear maps from CLIP patch tokens into the text
space (zero-shot map), per-stage memories of normal shots (few-shot map), their training, and
One-to-Normal's S_text branch (Li et al. 2024, eq. 6) on the same heads. See docs/adapters.md.

Modules: stages (frozen backbone, 4 stages), head (eq. 2/3/4/6 as pure functions), losses
(focal + dice), mosaic, train (data sources, resumable loop), checkpoint (file format). The engine
component lives in `fsad_core.scorers.adapter`.
"""
