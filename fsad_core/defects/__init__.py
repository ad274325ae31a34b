"""Defect-type classification (Liu et al. 2024, "Anomaly Multi-classification in Industrial Scenarios:
Transferring Few-shot Learning to a New Task"): residual features against a PatchCore memory, a
few-shot classifier pretrained on synthetic pseudo-classes and fine-tuned on the painted shots.
See docs/defect-types.md."""
